//! `install`, `uninstall`, `start`, `stop`, `restart` and `status`: the runner as a systemd
//! service, with the unit upstream's `gitlab-runner install` writes (through kardianos/service)
//! and the same `run` command line, so an operator's unit, drop-ins and scripts keep working.
//!
//! Only systemd is supported (upstream also writes SysV and Upstart scripts). On a machine
//! where systemd is not running (an image being built, a container), `install` still writes
//! the unit and says that enabling it is left to the machine that boots it.
//!
//! Stopping: systemd sends SIGTERM by default, which aborts running jobs (they end as
//! `runner_interrupted`). For a graceful stop that lets running jobs finish, add a drop-in with
//! `KillSignal=SIGQUIT` and a `TimeoutStopSec` as long as the longest job, as upstream documents
//! (`install --graceful-stop` writes that drop-in).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// upstream's default service name.
pub const DEFAULT_SERVICE_NAME: &str = "gitlab-runner";

/// What `install` puts into the unit.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// `--service` / `-n`: the unit is `<name>.service`.
    pub service: String,
    /// `--config` / `-c`, passed to `run`.
    pub config: PathBuf,
    /// `--working-directory` / `-d`, passed to `run` when set.
    pub working_directory: Option<PathBuf>,
    /// `--user` / `-u`: passed to `run` as `--user` (jobs run as this user; the runner as root).
    pub user: Option<String>,
    /// `--init-user` / `-i`: the unit's `User=` (the whole runner runs as this user).
    pub init_user: Option<String>,
    /// `--syslog`: passed to `run`. Upstream leaves it off for systemd (journald has the log).
    pub syslog: bool,
    /// The binary the unit starts (this one).
    pub executable: PathBuf,
    /// Where units go: `/etc/systemd/system` (`--systemd-unit-dir` changes it).
    pub unit_dir: PathBuf,
    /// `--graceful-stop SECONDS`: also write a drop-in with `KillSignal=SIGQUIT` and this
    /// `TimeoutStopSec`, so stopping the service lets running jobs finish.
    pub graceful_stop: Option<u64>,
}

/// kardianos/service's `cmd` template function: a double-quoted word for `ExecStart=`.
fn quoted(word: &str) -> String {
    format!("\"{}\"", word.replace('"', "\\\""))
}

/// kardianos/service's `cmdEscape`: a path with its spaces escaped.
fn escaped(path: &Path) -> String {
    path.display().to_string().replace(' ', "\\x20")
}

/// The `run` arguments the unit passes, in upstream's order: `--config`,
/// `--working-directory`, `--service`, `--syslog`, then `--user`.
pub fn run_arguments(options: &InstallOptions) -> Vec<String> {
    let mut arguments = vec![
        "run".to_string(),
        "--config".to_string(),
        options.config.display().to_string(),
    ];
    if let Some(directory) = &options.working_directory {
        arguments.push("--working-directory".into());
        arguments.push(directory.display().to_string());
    }
    arguments.push("--service".into());
    arguments.push(options.service.clone());
    if options.syslog {
        arguments.push("--syslog".into());
    }
    if let Some(user) = &options.user {
        arguments.push("--user".into());
        arguments.push(user.clone());
    }
    arguments
}

/// The unit file upstream's `install` writes on a systemd machine.
pub fn unit(options: &InstallOptions) -> String {
    let executable = escaped(&options.executable);
    let mut exec_start = format!("ExecStart={executable}");
    for argument in run_arguments(options) {
        exec_start.push(' ');
        exec_start.push_str(&quoted(&argument));
    }
    let mut text = format!(
        "[Unit]\n\
         Description=GitLab Runner\n\
         ConditionFileIsExecutable={executable}\n\
         After=network.target\n\
         \n\
         [Service]\n\
         StartLimitInterval=5\n\
         StartLimitBurst=10\n\
         {exec_start}\n"
    );
    if let Some(user) = &options.init_user {
        text.push_str(&format!("User={user}\n"));
    }
    text.push_str(&format!(
        "Restart=always\n\
         RestartSec=120\n\
         EnvironmentFile=-/etc/sysconfig/{}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        options.service
    ));
    text
}

/// The drop-in for a graceful stop: SIGQUIT lets running jobs finish, for at most `seconds`.
pub fn graceful_stop_drop_in(seconds: u64) -> String {
    format!(
        "# Written by gitlab-runner-rs install --graceful-stop: SIGQUIT stops taking jobs and\n\
         # waits for the running ones; systemd sends SIGKILL after TimeoutStopSec.\n\
         [Service]\n\
         TimeoutStopSec={seconds}\n\
         KillSignal=SIGQUIT\n"
    )
}

/// Whether systemd manages this machine (kardianos/service's test).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").exists()
        || std::fs::read_to_string("/proc/1/comm").is_ok_and(|name| name.trim() == "systemd")
}

fn unit_path(unit_dir: &Path, service: &str) -> PathBuf {
    unit_dir.join(format!("{service}.service"))
}

fn systemctl(arguments: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .args(arguments)
        .status()
        .with_context(|| format!("running systemctl {}", arguments.join(" ")))?;
    if !status.success() {
        bail!("systemctl {} failed: {status}", arguments.join(" "));
    }
    Ok(())
}

/// `install`: writes the unit (refusing to overwrite one, as upstream), creates an empty
/// config file if there is none, then enables the unit where systemd runs.
pub fn install(options: &InstallOptions, running_as_root: bool) -> anyhow::Result<()> {
    if options.user.is_some() && options.init_user.is_some() {
        bail!("Only one of 'user' or 'init-user' can be specified.");
    }
    if running_as_root && options.user.is_none() && options.init_user.is_none() {
        bail!("Please specify user that will run gitlab-runner service");
    }
    let path = unit_path(&options.unit_dir, &options.service);
    if path.exists() {
        bail!("Init already exists: {}", path.display());
    }
    if !options.config.exists() {
        crate::config::Config::save_raw(&options.config, &crate::config::RawConfig::default())
            .with_context(|| format!("creating {}", options.config.display()))?;
    }
    std::fs::create_dir_all(&options.unit_dir)
        .with_context(|| format!("creating {}", options.unit_dir.display()))?;
    std::fs::write(&path, unit(options)).with_context(|| format!("writing {}", path.display()))?;
    if let Some(seconds) = options.graceful_stop {
        let drop_in_dir = options
            .unit_dir
            .join(format!("{}.service.d", options.service));
        std::fs::create_dir_all(&drop_in_dir)
            .with_context(|| format!("creating {}", drop_in_dir.display()))?;
        let drop_in = drop_in_dir.join("kill.conf");
        std::fs::write(&drop_in, graceful_stop_drop_in(seconds))
            .with_context(|| format!("writing {}", drop_in.display()))?;
    }
    if !systemd_running() {
        eprintln!(
            "WARNING: systemd is not running on this machine: wrote {}; enable it where it boots \
             (systemctl enable {}.service)",
            path.display(),
            options.service
        );
        return Ok(());
    }
    systemctl(&["enable", &format!("{}.service", options.service)])?;
    systemctl(&["daemon-reload"])
}

/// `uninstall`: disables the unit and removes it (and the graceful-stop drop-in).
pub fn uninstall(service: &str, unit_dir: &Path) -> anyhow::Result<()> {
    if systemd_running() {
        systemctl(&["disable", &format!("{service}.service")])?;
    }
    let path = unit_path(unit_dir, service);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    let drop_in = unit_dir
        .join(format!("{service}.service.d"))
        .join("kill.conf");
    let _ = std::fs::remove_file(drop_in);
    Ok(())
}

/// `start`, `stop` and `restart`: the same `systemctl` call upstream makes.
pub fn control(action: &str, service: &str) -> anyhow::Result<()> {
    if !systemd_running() {
        bail!("systemd is not running on this machine: cannot {action} {service}.service");
    }
    systemctl(&[action, &format!("{service}.service")])
}

/// `status`: upstream's words and exit code (0 only when running).
pub fn status(service: &str) -> i32 {
    let description = if !systemd_running() {
        "Service status unknown".to_string()
    } else {
        let output = Command::new("systemctl")
            .args(["is-active", service])
            .output();
        match output {
            Ok(output) => {
                let text = String::from_utf8_lossy(&output.stdout);
                if text.starts_with("active") || text.starts_with("activating") {
                    println!("{service}: Service is running");
                    return 0;
                } else if text.starts_with("inactive") {
                    "Service has stopped".to_string()
                } else if text.starts_with("failed") {
                    "service in failed state".to_string()
                } else {
                    "the service is not installed".to_string()
                }
            }
            Err(error) => format!("running systemctl: {error}"),
        }
    };
    eprintln!("{service}: {description}");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> InstallOptions {
        InstallOptions {
            service: DEFAULT_SERVICE_NAME.into(),
            config: "/etc/gitlab-runner/config.toml".into(),
            working_directory: Some("/home/gitlab-runner".into()),
            user: Some("gitlab-runner".into()),
            init_user: None,
            syslog: false,
            executable: "/usr/bin/gitlab-runner".into(),
            unit_dir: "/etc/systemd/system".into(),
            graceful_stop: None,
        }
    }

    #[test]
    fn the_unit_starts_run_with_upstreams_arguments() {
        let unit = unit(&options());
        assert!(unit.contains(
            "\nExecStart=/usr/bin/gitlab-runner \"run\" \"--config\" \
             \"/etc/gitlab-runner/config.toml\" \"--working-directory\" \"/home/gitlab-runner\" \
             \"--service\" \"gitlab-runner\" \"--user\" \"gitlab-runner\"\n"
        ));
        assert!(unit.contains("\nRestart=always\nRestartSec=120\n"));
        assert!(!unit.contains("User="), "{unit}");
        let mut init_user = options();
        init_user.user = None;
        init_user.init_user = Some("runner".into());
        init_user.executable = "/opt/my runner/gitlab-runner".into();
        let unit = super::unit(&init_user);
        assert!(unit.contains("\nUser=runner\n"), "{unit}");
        assert!(unit.contains("ExecStart=/opt/my\\x20runner/gitlab-runner \"run\""));
    }
}
