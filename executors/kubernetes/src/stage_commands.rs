//! The commands of the attach strategy, as text: the exec that writes a stage script into
//! the shared `scripts` volume, and the line typed into a container's stdin to start a stage.
//! (The program that signals a canceled stage is `session::signal_program`.)
//!
//! Differences from upstream, on purpose:
//! - A script is written by `head -c <length>`, which stops after exactly the script's bytes,
//!   so the exec does not wait for the end of stdin (kube-rs closes the whole WebSocket to end
//!   stdin on `v4.channel.k8s.io`, losing the exit status).
//! - The typed line gives the stage its marker nonce (`RUNNER_STAGE_NONCE`), and the fallback
//!   marker (printed when the shell itself cannot run the script) carries it too.
//! - Helper stages start the same way as build stages (in the background, through the shell
//!   detection, with the fallback marker), with `umask 0000` first unless
//!   `FF_DISABLE_UMASK_FOR_KUBERNETES_EXECUTOR`; upstream runs them in the foreground through
//!   a `gitlab-runner-build` script of its helper image.

use runner_core::executor::STAGE_NONCE_VARIABLE;

/// The shell detection script's file name in the scripts directory.
pub const DETECT_SHELL_FILE: &str = "detect_shell_script";

/// Single-quotes `text` for `sh`.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The exec command that writes exactly `length` bytes of stdin to `path` (through a
/// temporary file, made executable, renamed into place).
pub fn write_file_command(path: &str, length: usize) -> Vec<String> {
    let temporary = quote(&format!("{path}.tmp"));
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "head -c {length} > {temporary} && chmod 777 {temporary} && mv {temporary} {}",
            quote(path)
        ),
    ]
}

/// The directory whose creation claims a stage: the first copy of a typed line that makes it
/// runs the stage, any later copy (a line typed again because its start marker did not show)
/// does nothing. Where it cannot be made at all, the line runs unguarded.
pub fn stage_guard(scripts_dir: &str, nonce: &str) -> String {
    format!("{scripts_dir}/.stage-{nonce}")
}

/// The line typed into a container's stdin to run `stage`: once per nonce
/// ([`stage_guard`]), in the background, through the shell detection, its output appended to
/// the shared log file; when the shell cannot run the script at all, a fallback exit marker
/// with the nonce.
pub fn start_stage_line(
    scripts_dir: &str,
    log_file: &str,
    stage: &str,
    nonce: &str,
    umask: bool,
) -> String {
    let script = format!("{scripts_dir}/{stage}");
    let detect = format!("{scripts_dir}/{DETECT_SHELL_FILE}");
    let fallback = format!(
        r#"{{\"command_exit_code\": $ec, \"script\": \"{script}\", \"nonce\": \"{nonce}\"}}"#
    );
    let umask = if umask { "umask 0000; " } else { "" };
    let guard = stage_guard(scripts_dir, nonce);
    let inner = format!(
        "if ! mkdir {guard} 2>/dev/null && [ -d {guard} ]; then exit 0; fi; (({umask}{STAGE_NONCE_VARIABLE}={nonce} {detect} {script}; ec=$?; if [ $ec -ne 0 ]; then echo; echo \"{fallback}\"; fi) 2>&1 | tee -a {log_file}) &"
    );
    format!("sh -c {}\n", quote(&inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::DETECT_SHELL_SCRIPT;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn wait_for(path: &std::path::Path, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a typed line as the container's idle shell would, its output (what the container
    /// log would get) discarded so no test pipe is held by what the stage leaves behind.
    fn typed(line: &str) -> bool {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(line)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// A directory pair standing for the pod's `scripts` and `logs` volumes, with the shell
    /// detection written the way the executor writes it.
    fn volumes() -> (tempfile::TempDir, String, String) {
        let root = tempfile::tempdir().unwrap();
        let scripts = root.path().join("scripts");
        let logs = root.path().join("logs");
        std::fs::create_dir_all(&scripts).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        let detect = format!("{}/{DETECT_SHELL_FILE}", scripts.display());
        write_through_exec(&detect, DETECT_SHELL_SCRIPT.as_bytes());
        (
            root,
            scripts.display().to_string(),
            format!("{}/output.log", logs.display()),
        )
    }

    /// Runs the write command with `data` and more on stdin, as an exec whose stdin never
    /// ends would see it: exactly `data` lands in the file.
    fn write_through_exec(path: &str, data: &[u8]) {
        let command = write_file_command(path, data.len());
        let mut child = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(data).unwrap();
        stdin
            .write_all(b"trailing bytes that are not the script")
            .unwrap();
        stdin.flush().unwrap();
        assert!(child.wait().unwrap().success());
        drop(stdin);
        assert_eq!(std::fs::read(path).unwrap(), data);
    }

    #[test]
    fn a_script_is_written_by_its_length_and_a_typed_line_runs_it_into_the_log() {
        let (_root, scripts, log) = volumes();
        // A stage script with the generator's markers (the parts that matter here).
        let script = format!("{scripts}/step_script");
        write_through_exec(
            &script,
            b"runner_stage_nonce=\"${RUNNER_STAGE_NONCE:-}\"\nunset RUNNER_STAGE_NONCE\n\
              echo \"{\\\"script\\\": \\\"$0\\\", \\\"nonce\\\": \\\"$runner_stage_nonce\\\"}\"\n\
              trap 'ec=$?; echo; echo \"{\\\"command_exit_code\\\": $ec, \\\"script\\\": \\\"$0\\\", \\\"nonce\\\": \\\"$runner_stage_nonce\\\"}\"; exit 0' EXIT\n\
              echo \"it's me, with nonce in env: ${RUNNER_STAGE_NONCE:-none}\"\nexit 3\n",
        );
        let line = start_stage_line(&scripts, &log, "step_script", "n0nce", true);
        assert!(typed(&line), "the typed line returns at once");
        let text = wait_for(std::path::Path::new(&log), "command_exit_code");
        assert_eq!(
            text,
            format!(
                "{{\"script\": \"{script}\", \"nonce\": \"n0nce\"}}\nit's me, with nonce in env: none\n\n{{\"command_exit_code\": 3, \"script\": \"{script}\", \"nonce\": \"n0nce\"}}\n"
            )
        );
    }

    #[test]
    fn a_line_typed_twice_runs_its_stage_once() {
        let (_root, scripts, log) = volumes();
        write_through_exec(&format!("{scripts}/step_script"), b"echo ran\nexit 0\n");
        let line = start_stage_line(&scripts, &log, "step_script", "twice", false);
        assert!(typed(&line));
        assert!(typed(&line));
        wait_for(std::path::Path::new(&log), "ran");
        // Time for a second copy to have written, had it run.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");
        assert!(std::path::Path::new(&stage_guard(&scripts, "twice")).is_dir());
    }

    #[test]
    fn a_script_the_shell_cannot_run_still_ends_with_a_marker() {
        let (_root, scripts, log) = volumes();
        let line = start_stage_line(&scripts, &log, "missing_stage", "n1", false);
        typed(&line);
        let text = wait_for(std::path::Path::new(&log), "command_exit_code");
        assert!(
            text.ends_with(&format!(
                "\n{{\"command_exit_code\": 127, \"script\": \"{scripts}/missing_stage\", \"nonce\": \"n1\"}}\n"
            )),
            "{text}"
        );
    }
}
