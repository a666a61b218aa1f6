//! A real OpenSSH server on 127.0.0.1 for the SSH executor tests: Debian's `sshd` started in the
//! foreground with its own configuration, an ed25519 and an ECDSA host key, and a throwaway
//! local user that the test logs in as. Dropping it kills the server, every process of that
//! user, and removes the user and its files.
//!
//! Needs root (to add the user) and `/usr/sbin/sshd` (`scripts/setup.sh` installs
//! openssh-server). Either missing is a test failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// How the server authenticates its user.
#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// Sets this password on the user and turns password authentication on.
    pub password: Option<String>,
}

/// A running sshd with its throwaway user, keys and config in a temporary directory.
pub struct SshServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    uid: u32,
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

impl SshServer {
    /// Adds a new user, makes host and client keys, and starts sshd on a free 127.0.0.1 port,
    /// waiting until it listens; panics unless run as root with sshd installed.
    pub fn start(options: SshdOptions) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/setup.sh (installs openssh-server)"
        );
        // SAFETY: geteuid(2) has no preconditions.
        #[expect(unsafe_code, reason = "std does not expose geteuid(2)")]
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "the sshd tests run as root");
        let dir = tempfile::Builder::new()
            .prefix("glrs-sshd-")
            .tempdir()
            .expect("temp dir");
        // The user must reach its home inside.
        set_mode(dir.path(), 0o755);
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");

        let user = format!("glrs{:08x}", rand_suffix());
        let home = dir.path().join("home");
        let home_text = home.to_string_lossy().to_string();
        // `*` is a password that matches nothing, without locking the account (a locked
        // account may not log in with a key either).
        run(
            "useradd",
            &["-M", "-d", &home_text, "-s", "/bin/bash", "-p", "*", &user],
        );
        let uid = user_id(&user);
        std::fs::create_dir_all(home.join("bin")).expect("create the test user's ~/bin");
        std::fs::write(
            home.join(".profile"),
            "# written by the test harness\nPATH=\"$HOME/bin:$PATH\"\nexport PATH\n",
        )
        .expect("write the test user's ~/.profile");
        run("chown", &["-R", &format!("{user}:{user}"), &home_text]);
        if let Some(password) = &options.password {
            let mut child = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .spawn()
                .expect("run chpasswd");
            use std::io::Write;
            writeln!(
                child
                    .stdin
                    .take()
                    .expect("chpasswd was started with a piped stdin"),
                "{user}:{password}"
            )
            .expect("write the test user's password to chpasswd");
            assert!(
                child.wait().expect("wait for chpasswd to exit").success(),
                "chpasswd failed"
            );
        }

        let key_dir = dir.path().join("keys");
        std::fs::create_dir_all(&key_dir).expect("create the sshd key directory");
        for (name, kind) in [
            ("host_ed25519", "ed25519"),
            ("host_ecdsa", "ecdsa"),
            ("client", "ed25519"),
            ("wrong_client", "ed25519"),
            ("other_host", "ed25519"),
        ] {
            let path = key_dir.join(name);
            run(
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    kind,
                    "-N",
                    "",
                    "-C",
                    name,
                    "-f",
                    path.to_str().expect("the temporary key path is UTF-8"),
                ],
            );
        }
        std::fs::copy(key_dir.join("client.pub"), key_dir.join("authorized_keys"))
            .expect("copy the client's public key to authorized_keys");
        set_mode(&key_dir, 0o755);
        set_mode(&key_dir.join("authorized_keys"), 0o644);

        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {keys}/host_ed25519\nHostKey {keys}/host_ecdsa\n\
             PidFile none\nAuthorizedKeysFile {keys}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication {password}\nKbdInteractiveAuthentication no\nPermitRootLogin no\n\
             AllowUsers {user}\nLogLevel VERBOSE\nMaxStartups 50\n",
            keys = key_dir.display(),
            password = if options.password.is_some() { "yes" } else { "no" },
        );
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).expect("write sshd_config");
        let log = std::fs::File::create(dir.path().join("sshd.log")).expect("create sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let server = Self {
            child: Some(child),
            dir,
            port,
            user,
            uid,
        };
        server.wait_listening();
        server
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not listen on {}: {}", self.port, self.log());
    }

    /// The loopback port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The name of the throwaway user to log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user's home directory; `~/bin` is on the PATH its `.profile` sets.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The private key the server accepts for the user.
    pub fn identity_file(&self) -> PathBuf {
        self.dir.path().join("keys/client")
    }

    /// A private key the server does not accept.
    pub fn wrong_identity_file(&self) -> PathBuf {
        self.dir.path().join("keys/wrong_client")
    }

    fn public_key(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("keys/{name}.pub")))
            .expect("read a public key that `start` generated")
            .trim()
            .to_string()
    }

    /// `ssh-keygen -lf` of the server's ed25519 host key: `SHA256:…`.
    pub fn host_key_fingerprint(&self) -> String {
        let output = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("keys/host_ed25519.pub"))
            .output()
            .expect("run ssh-keygen -lf on the host key");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .nth(1)
            .expect("ssh-keygen -lf printed the host key's fingerprint")
            .to_string()
    }

    /// Writes a `known_hosts` file with the server's host keys as `ssh-keyscan` would, hashed
    /// with `ssh-keygen -H` when asked; returns its path.
    pub fn known_hosts(&self, hashed: bool) -> PathBuf {
        let path = self.dir.path().join(if hashed {
            "known_hosts_hashed"
        } else {
            "known_hosts"
        });
        let name = format!("[127.0.0.1]:{}", self.port);
        let text = format!(
            "# test known_hosts\n{name} {}\n{name}\t{}\n",
            self.public_key("host_ed25519"),
            self.public_key("host_ecdsa")
        );
        std::fs::write(&path, text).expect("write the known_hosts file");
        if hashed {
            run(
                "ssh-keygen",
                &[
                    "-q",
                    "-H",
                    "-f",
                    path.to_str()
                        .expect("the temporary known_hosts path is UTF-8"),
                ],
            );
        }
        path
    }

    /// A `known_hosts` file that names this server with another key.
    pub fn wrong_known_hosts(&self) -> PathBuf {
        let path = self.dir.path().join("known_hosts_wrong");
        std::fs::write(
            &path,
            format!(
                "[127.0.0.1]:{} {}\n",
                self.port,
                self.public_key("other_host")
            ),
        )
        .expect("write the wrong known_hosts file");
        path
    }

    /// The command lines of the user's processes that are not sshd's own.
    pub fn user_processes(&self) -> Vec<String> {
        processes()
            .into_iter()
            .filter(|process| process.uid == self.uid && !process.command.starts_with("sshd"))
            .map(|process| process.command)
            .collect()
    }

    /// Kills sshd, the listener and every connection process it forked, as a crashed host
    /// would; the user's job processes are left to `Drop`.
    pub fn kill_sshd(&mut self) {
        if let Some(mut child) = self.child.take() {
            let listener = child.id();
            let all = processes();
            for process in &all {
                if process.command.starts_with("sshd") && descends_from(&all, process.pid, listener)
                {
                    // SAFETY: kill(2) touches no memory; the pid is our own server's child.
                    #[expect(unsafe_code, reason = "std can only kill its own Child")]
                    unsafe {
                        libc::kill(process.pid as i32, libc::SIGKILL)
                    };
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill_sshd();
        // Whatever of the user's is left (a job that outlived its session, say).
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.uid.to_string()])
            .status();
        for _ in 0..50 {
            if processes().iter().all(|process| process.uid != self.uid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("userdel").arg(&self.user).output();
    }
}

struct Process {
    pid: u32,
    ppid: u32,
    uid: u32,
    command: String,
}

fn processes() -> Vec<Process> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<u32>().ok())
        };
        let command = std::fs::read(entry.path().join("cmdline"))
            .map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        if command.is_empty() {
            continue;
        }
        if let (Some(ppid), Some(uid)) = (field("PPid:"), field("Uid:")) {
            out.push(Process {
                pid,
                ppid,
                uid,
                command,
            });
        }
    }
    out
}

fn descends_from(all: &[Process], pid: u32, ancestor: u32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        if current == ancestor {
            return true;
        }
        match all.iter().find(|process| process.pid == current) {
            Some(process) if process.ppid != 0 => current = process.ppid,
            _ => return false,
        }
    }
    false
}

fn user_id(user: &str) -> u32 {
    let output = Command::new("id")
        .args(["-u", user])
        .output()
        .expect("run id -u for the test user");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("uid of the test user")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .expect("set the mode of an sshd test file");
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    nanos ^ (std::process::id().rotate_left(16))
}
