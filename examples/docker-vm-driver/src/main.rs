//! `docker-vm-driver`: a reference custom executor driver built on `driver-kit`. The Docker
//! engine plays the hypervisor: each job gets a container running sshd (the image of
//! `scripts/build-sshd-image.sh`), the driver waits until SSH answers and the tools a job needs
//! are there, streams every stage script over SSH with the OpenSSH client, and removes the
//! container and its key in cleanup.
//!
//! ```toml
//! [runners.custom]
//!   prepare_exec = "/usr/local/bin/docker-vm-driver"
//!   prepare_args = ["prepare"]
//!   run_exec = "/usr/local/bin/docker-vm-driver"
//!   run_args = ["run"]
//!   cleanup_exec = "/usr/local/bin/docker-vm-driver"
//!   cleanup_args = ["cleanup"]
//! ```
//!
//! Environment (all optional): `DOCKER_VM_IMAGE` (default
//! `gitlab-runner-rs-test/debian-sshd:bookworm-1`, or the job's `image:`), `DOCKER_VM_PULL`
//! (a command that makes the image present, default `docker pull <image>`), `DOCKER_VM_STATE_DIR`
//! (default `/var/lib/docker-vm-driver`), `DOCKER_VM_PREFIX` (container names, default
//! `docker-vm`), `DOCKER_VM_MAX_JOBS` (default 4), `DOCKER_VM_CAPACITY_TIMEOUT` (seconds a
//! prepare waits for a slot, default 300).
//!
//! Depends on `driver-kit` only, like any third-party driver would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use driver_kit::{Backend, Failure, Settings};
use serde::{Deserialize, Serialize};

/// What a job's container is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Vm {
    name: String,
    port: u16,
    key: PathBuf,
}

struct DockerVm {
    state_dir: PathBuf,
    image: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn output(command: &mut Command) -> Result<String, Failure> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| Failure(format!("{command:?}: {error}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(Failure(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl DockerVm {
    fn key_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("keys").join(name)
    }

    /// The host port Docker mapped to the container's sshd.
    fn port(&self, name: &str) -> Result<u16, Failure> {
        let mapping = output(Command::new("docker").args(["port", name, "22/tcp"]))?;
        mapping
            .lines()
            .find_map(|line| line.rsplit(':').next()?.trim().parse().ok())
            .ok_or_else(|| Failure(format!("no port mapped for {name}: {mapping:?}")))
    }

    fn ssh(&self, vm: &Vm) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(["-i"])
            .arg(&vm.key)
            .args(["-p", &vm.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=5",
                "root@127.0.0.1",
            ]);
        command
    }
}

impl Backend for DockerVm {
    type Resource = Vm;

    fn image(&self) -> String {
        self.image.clone()
    }

    fn image_present(&mut self, image: &str) -> Result<bool, Failure> {
        Ok(Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|error| Failure(format!("docker: {error}")))?
            .success())
    }

    fn pull(&mut self, image: &str) -> Result<(), Failure> {
        eprintln!("Pulling {image}...");
        let status = match env("DOCKER_VM_PULL") {
            Some(command) => Command::new("sh")
                .args(["-c", &command, "pull", image])
                .status(),
            None => Command::new("docker").args(["pull", image]).status(),
        }
        .map_err(|error| Failure(format!("pulling {image}: {error}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Failure(format!("pulling {image} failed: {status}")))
        }
    }

    fn find(&mut self, name: &str) -> Result<Option<Vm>, Failure> {
        let exists = Command::new("docker")
            .args(["container", "inspect", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|error| Failure(format!("docker: {error}")))?
            .success();
        if !exists || !self.key_path(name).exists() {
            return Ok(None);
        }
        eprintln!("Adopting {name}, created by an earlier attempt");
        Ok(Some(Vm {
            name: name.into(),
            port: self.port(name)?,
            key: self.key_path(name),
        }))
    }

    fn create(&mut self, name: &str, image: &str) -> Result<Vm, Failure> {
        let key = self.key_path(name);
        std::fs::create_dir_all(key.parent().unwrap_or(Path::new(".")))?;
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        output(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&key),
        )?;
        let public = std::fs::read_to_string(key.with_extension("pub"))?;
        eprintln!("Creating {name} from {image}");
        output(
            Command::new("docker")
                .args(["run", "-d", "--name", name, "--hostname", name])
                .args(["--label", "gitlab-runner-rs.docker-vm-driver=1"])
                .args(["-p", "127.0.0.1::22", "-e"])
                .arg(format!("AUTHORIZED_KEY={}", public.trim()))
                .arg(image),
        )?;
        // A crash here, before the kit saves the state, is what reclaiming is for.
        if env("DOCKER_VM_CRASH_AFTER_CREATE").is_some() {
            eprintln!("crashing after create (DOCKER_VM_CRASH_AFTER_CREATE)");
            std::process::abort();
        }
        Ok(Vm {
            name: name.into(),
            port: self.port(name)?,
            key,
        })
    }

    fn ready(&mut self, vm: &Vm) -> Result<bool, Failure> {
        Ok(self
            .ssh(vm)
            .arg("command -v bash >/dev/null && command -v git >/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|error| Failure(format!("ssh: {error}")))?
            .success())
    }

    fn run(&mut self, vm: &Vm, script: &Path, _stage: &str) -> Result<i32, Failure> {
        let input = std::fs::File::open(script)?;
        let status = self
            .ssh(vm)
            .args(["bash", "-l"])
            .stdin(input)
            .status()
            .map_err(|error| Failure(format!("ssh: {error}")))?;
        match status.code() {
            // ssh's own failure, not the script's.
            Some(255) => Err(Failure(format!("ssh to {} failed", vm.name))),
            Some(code) => Ok(code),
            None => Err(Failure(format!("ssh to {} was killed", vm.name))),
        }
    }

    fn destroy(&mut self, name: &str) -> Result<(), Failure> {
        let removed = Command::new("docker")
            .args(["rm", "-f", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|error| Failure(format!("docker: {error}")));
        let key = self.key_path(name);
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        removed.map(|_| ())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let state_dir = PathBuf::from(
        env("DOCKER_VM_STATE_DIR").unwrap_or_else(|| "/var/lib/docker-vm-driver".into()),
    );
    let seconds = |name: &str, default: u64| {
        env(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let settings = Settings {
        prefix: env("DOCKER_VM_PREFIX").unwrap_or_else(|| "docker-vm".into()),
        state_dir: state_dir.clone(),
        max_jobs: seconds("DOCKER_VM_MAX_JOBS", 4) as usize,
        capacity_timeout: Duration::from_secs(seconds("DOCKER_VM_CAPACITY_TIMEOUT", 300)),
        ready_timeout: Duration::from_secs(60),
        ready_interval: Duration::from_millis(250),
    };
    let image = env("DOCKER_VM_IMAGE")
        .or_else(|| env("CUSTOM_ENV_CI_JOB_IMAGE"))
        .unwrap_or_else(|| "gitlab-runner-rs-test/debian-sshd:bookworm-1".into());
    let mut backend = DockerVm { state_dir, image };
    std::process::exit(driver_kit::run_main(&mut backend, &settings, &args));
}
