//! The SSH executor: one SSH connection per job to `[runners.ssh]`, and one session per stage
//! that runs the build shell's command line (`bash -l`) with the stage script on stdin, as
//! upstream's `executors/ssh` does.
//!
//! Beyond upstream: host keys are checked with a `known_hosts` reader that takes everything
//! OpenSSH writes ([`known_hosts`]); a refused host key or refused credentials fail the connect
//! at once instead of being retried; on cancel or timeout the whole remote process group of the
//! stage gets SIGTERM, then SIGKILL after `graceful_kill_timeout`, through the stage runner
//! ([`stage`]; upstream kills only the shell at once, and its children live on).
//!
//! Main types: [`SshProvider`] (the `ExecutorProvider`), [`SshExecutor`], [`SshConfig`] (and
//! [`RawSshConfig`], the `[runners.ssh]` section as written).
//!
//! Depends on `runner-core`, `runner-steps` (the Step Runner's client, for `run:` jobs: `steps
//! serve` on the remote host, `steps proxy` over a new session per dial), serde and russh; it must
//! not depend on `shells`, `network`, other
//! executors or `commands`.

pub mod known_hosts;
mod raw_config;
pub mod stage;

pub use raw_config::RawSshConfig;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner_core::build::BuildContext;
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ExecutorProvider, FeaturesInfo,
    ScriptExit, ShellType, StepsRequest, Unlimited,
};
use runner_core::log::JobLog;
use runner_core::process::KillTimeouts;
use runner_core::secret::Secret;
use runner_core::stage_runner::{supervise, LogSink, Started};
use russh::client::{self, Handle};
use russh::keys::{load_secret_key, PrivateKeyWithHashAlg, PublicKey};
use russh::Disconnect;
use tokio_util::sync::CancellationToken;

use known_hosts::{fingerprint, KnownHosts};

/// `[runners.ssh]`, with upstream's defaults filled in.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// Default `localhost`.
    pub host: String,
    /// Default 22.
    pub port: u16,
    /// Default `root`.
    pub user: String,
    /// `[runners.ssh] password`; empty: password authentication is not tried.
    pub password: Secret<String>,
    /// `[runners.ssh] identity_file`, a private key without passphrase for public-key
    /// authentication; `None`: no key is offered.
    pub identity_file: Option<PathBuf>,
    /// `[runners.ssh] disable_strict_host_key_checking`: accept any host key, without reading
    /// `known_hosts_file`.
    pub disable_strict_host_key_checking: bool,
    /// Default `~/.ssh/known_hosts` of the user the runner runs as.
    pub known_hosts_file: Option<PathBuf>,
    /// Connection attempts per prepare (upstream: 3).
    pub connect_retries: u32,
    /// Pause after a failed attempt (upstream: 3 s).
    pub retry_interval: Duration,
    /// How long one attempt may take to reach the server and finish the handshake.
    pub connect_timeout: Duration,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 22,
            user: "root".into(),
            password: Secret::default(),
            identity_file: None,
            disable_strict_host_key_checking: false,
            known_hosts_file: None,
            connect_retries: 3,
            retry_interval: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl SshConfig {
    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `known_hosts_file`, else `~/.ssh/known_hosts`; `None` when neither is there to name
    /// (no `$HOME`).
    fn known_hosts_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.known_hosts_file {
            return Some(path.clone());
        }
        std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(|home| PathBuf::from(home).join(".ssh").join("known_hosts"))
    }
}

/// Creates SSH executors. `None` is a runner without `[runners.ssh]`: its jobs fail in prepare
/// with upstream's "missing SSH configuration".
#[derive(Debug, Clone)]
pub struct SshProvider {
    config: Option<SshConfig>,
    kill_timeouts: KillTimeouts,
}

impl SshProvider {
    /// The provider for a runner with `executor = "ssh"`; `None` when config.toml has no
    /// `[runners.ssh]` section.
    pub fn new(config: Option<SshConfig>) -> Self {
        Self {
            config,
            kill_timeouts: KillTimeouts::default(),
        }
    }

    /// The stop of a canceled stage (`graceful_kill_timeout`, `force_kill_timeout`).
    pub fn with_kill_timeouts(mut self, kill_timeouts: KillTimeouts) -> Self {
        self.kill_timeouts = kill_timeouts;
        self
    }
}

impl ExecutorProvider for SshProvider {
    type Capacity = Unlimited;
    type Executor = SshExecutor;

    fn name(&self) -> &'static str {
        "ssh"
    }

    fn features(&self) -> FeaturesInfo {
        FeaturesInfo {
            variables: true,
            shared: true,
            native_steps_integration: true,
            ..FeaturesInfo::default()
        }
    }

    fn default_shell(&self) -> &'static str {
        "bash"
    }

    fn defaults(&self) -> ExecutorDefaults {
        ExecutorDefaults {
            builds_dir: "builds".into(),
            cache_dir: "cache".into(),
            shared_builds_dir: true,
            custom_build_dir_enabled: false,
            safe_directory_checkout: false,
            shell_type: ShellType::Login,
            runner_command: "gitlab-runner".into(),
            show_hostname: true,
            dirs_from_prepare: false,
            private_temporary_dir: false,
            switch_user: false,
            stage_markers: false,
        }
    }

    fn capacity(&self) -> &Unlimited {
        &Unlimited
    }

    fn create(&self, _reservation: ()) -> SshExecutor {
        SshExecutor {
            config: self.config.clone(),
            command_line: String::new(),
            runner_command: "gitlab-runner".into(),
            connection: None,
            kill_timeouts: self.kill_timeouts,
        }
    }
}

/// What the server's host key check found, kept for the error message.
type Refusal = Arc<Mutex<Option<String>>>;

pub(crate) struct ClientHandler {
    known_hosts: Option<KnownHosts>,
    host: String,
    port: u16,
    refusal: Refusal,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let Some(known_hosts) = &self.known_hosts else {
            return Ok(true);
        };
        let key: &PublicKey = match server_public_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some("knownhosts: host certificates are not supported".into());
                return Ok(false);
            }
        };
        match known_hosts.check(&self.host, self.port, key) {
            Ok(()) => Ok(true),
            Err(refusal) => {
                let message = format!(
                    "{} (host {}:{} offered {} {}; known hosts file {})",
                    refusal.as_str(),
                    self.host,
                    self.port,
                    key.algorithm(),
                    fingerprint(key),
                    known_hosts.path().display()
                );
                *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
                Ok(false)
            }
        }
    }
}

/// Why one connection attempt failed, and whether trying again can help.
struct ConnectFailure {
    message: String,
    permanent: bool,
}

/// Runs the stages of one job on a remote host.
pub struct SshExecutor {
    config: Option<SshConfig>,
    /// The build shell's command line (`bash -l`).
    command_line: String,
    /// The runner binary on the remote host, which serves its Step Runner.
    runner_command: String,
    connection: Option<Arc<Handle<ClientHandler>>>,
    kill_timeouts: KillTimeouts,
}

impl std::fmt::Debug for SshExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshExecutor")
            .field("config", &self.config)
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

impl SshExecutor {
    async fn connect_once(
        config: &SshConfig,
        known_hosts: Option<&KnownHosts>,
        key: Option<&Arc<russh::keys::PrivateKey>>,
    ) -> Result<Handle<ClientHandler>, ConnectFailure> {
        let refusal: Refusal = Arc::default();
        let mut client_config = client::Config {
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            ..client::Config::default()
        };
        // Ask for the key types on file first, as OpenSSH does, so a host with several keys
        // presents one that can be checked.
        if let Some(known_hosts) = known_hosts {
            let on_file = known_hosts.algorithms_for(&config.host, config.port);
            if !on_file.is_empty() {
                let mut preferred: Vec<_> = on_file.clone();
                preferred.extend(
                    client_config
                        .preferred
                        .key
                        .iter()
                        .filter(|algorithm| !on_file.contains(algorithm))
                        .cloned(),
                );
                client_config.preferred.key = preferred.into();
            }
        }
        let handler = ClientHandler {
            known_hosts: known_hosts.cloned(),
            host: config.host.clone(),
            port: config.port,
            refusal: refusal.clone(),
        };
        let address = (config.host.as_str(), config.port);
        let connecting = client::connect(Arc::new(client_config), address, handler);
        let mut handle = match tokio::time::timeout(config.connect_timeout, connecting).await {
            Err(_) => {
                return Err(ConnectFailure {
                    message: format!(
                        "dial tcp {}: i/o timeout after {}s",
                        config.address(),
                        config.connect_timeout.as_secs()
                    ),
                    permanent: false,
                })
            }
            Ok(Err(russh::Error::UnknownKey)) => {
                let reason = refusal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_else(|| "host key refused".into());
                return Err(ConnectFailure {
                    message: format!("ssh: handshake failed: {reason}"),
                    permanent: true,
                });
            }
            Ok(Err(russh::Error::IO(error))) => {
                return Err(ConnectFailure {
                    message: format!("dial tcp {}: {error}", config.address()),
                    permanent: false,
                })
            }
            Ok(Err(error)) => {
                return Err(ConnectFailure {
                    message: format!("ssh: handshake failed: {error}"),
                    permanent: false,
                })
            }
            Ok(Ok(handle)) => handle,
        };

        let transport = |error: russh::Error| ConnectFailure {
            message: format!("ssh: handshake failed: {error}"),
            permanent: false,
        };
        let mut attempted = vec!["none"];
        if !config.password.expose().is_empty() {
            attempted.push("password");
            let result = handle
                .authenticate_password(&config.user, config.password.expose().as_str())
                .await
                .map_err(transport)?;
            if result.success() {
                return Ok(handle);
            }
        }
        if let Some(key) = key {
            attempted.push("publickey");
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(transport)?
                .flatten();
            let result = handle
                .authenticate_publickey(&config.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
                .map_err(transport)?;
            if result.success() {
                return Ok(handle);
            }
        }
        // Go's wording; refused credentials do not get better by retrying.
        Err(ConnectFailure {
            message: format!(
                "ssh: handshake failed: ssh: unable to authenticate, attempted methods [{}], no supported methods remain (user {:?} on {})",
                attempted.join(" "),
                config.user,
                config.address()
            ),
            permanent: true,
        })
    }

    /// Upstream's `Connect`: up to `connect_retries` attempts, `retry_interval` apart.
    async fn connect(
        config: &SshConfig,
        cancel: &CancellationToken,
    ) -> Result<Handle<ClientHandler>, ExecutorError> {
        let connect_error = |message: String| {
            ExecutorError::system(format!("ssh command Connect() error: {message}"))
        };
        let key = match &config.identity_file {
            None => None,
            Some(path) => Some(Arc::new(load_secret_key(path, None).map_err(|error| {
                connect_error(format!(
                    "getting SSH authentication methods: reading {}: {error}",
                    path.display()
                ))
            })?)),
        };
        let known_hosts = if config.disable_strict_host_key_checking {
            None
        } else {
            let path = config.known_hosts_path().ok_or_else(|| {
                connect_error(
                    "getting host key callback: user home directory: $HOME is not defined".into(),
                )
            })?;
            Some(KnownHosts::load(&path).map_err(|error| {
                connect_error(format!(
                    "getting host key callback: open {}: {error}",
                    path.display()
                ))
            })?)
        };
        let attempts = config.connect_retries.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match Self::connect_once(config, known_hosts.as_ref(), key.as_ref()).await {
                Ok(handle) => return Ok(handle),
                Err(failure) => {
                    tracing::debug!(attempt, error = %failure.message, "ssh connect failed");
                    last = failure.message;
                    if failure.permanent {
                        break;
                    }
                    if attempt < attempts {
                        tokio::select! {
                            // Upstream's pause between attempts.
                            _ = tokio::time::sleep(config.retry_interval) => {}
                            // A stopped job does not wait for the next attempt.
                            _ = cancel.cancelled() => break,
                        }
                    }
                }
            }
        }
        Err(connect_error(format!("ssh Dial() error: {last}")))
    }
}

/// A command line word, quoted for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl Executor for SshExecutor {
    async fn prepare(
        &mut self,
        build: &mut BuildContext,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        log.println("Using SSH executor...");
        let Some(config) = self.config.clone() else {
            return Err(ExecutorError::system("missing SSH configuration"));
        };
        if build.shell.program.is_empty() {
            return Err(ExecutorError::with_reason(
                runner_core::FailureReason::RunnerConfigurationError,
                "no shell defined",
            ));
        }
        self.runner_command = build.defaults.runner_command.clone();
        self.command_line = std::iter::once(build.shell.program.as_str())
            .chain(build.shell.args.iter().map(String::as_str))
            .map(shell_word)
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(host = %config.host, port = config.port, user = %config.user, "connecting to SSH server");
        // A retried prepare starts from a fresh connection.
        self.cleanup(log).await;
        self.connection = Some(Arc::new(Self::connect(&config, cancel).await?));
        Ok(())
    }

    async fn run(
        &mut self,
        command: ExecutorCommand<'_>,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let (handle, address) = self.connected()?;
        let handle = &handle;
        let lost = |what: &str, error: russh::Error| lost(&address, what, error);
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|error| lost("opening a session", error))?;
        let remote = format!("echo {}$$; exec {}", stage::PID_MARKER, self.command_line);
        channel
            .exec(true, remote)
            .await
            .map_err(|error| lost("starting the shell", error))?;
        let (reader, writer) = channel.split();
        let writer = Arc::new(writer);
        let (process, output) = stage::stage(handle, reader, writer.clone());
        let stdin = Box::pin(writer.make_writer()) as runner_core::stage_runner::StageStdin;
        let started = Started {
            process,
            output,
            stdin: Some(stdin),
        };
        let ended = supervise(
            started,
            command.script.as_bytes(),
            LogSink::new(log),
            cancel,
            self.kill_timeouts,
        )
        .await?;
        let closed = handle.is_closed();
        stage::session_exit(ended, &address, closed)
    }

    async fn run_steps(
        &mut self,
        request: &StepsRequest,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let (handle, address) = self.connected()?;
        let lost = |what: &str, error: russh::Error| lost(&address, what, error);
        // The service lives as long as this session's stdin: the remote shell starts it in a
        // private directory, then waits for the end of its input and stops it.
        let mut server = handle
            .channel_open_session()
            .await
            .map_err(|error| lost("opening a session", error))?;
        let remote = format!(
            "{} -c {}",
            self.command_line,
            shell_word(&steps_server_script(&self.runner_command))
        );
        server
            .exec(true, remote)
            .await
            .map_err(|error| lost("starting the step runner", error))?;
        let socket = tokio::time::timeout(Duration::from_secs(60), listening(&mut server))
            .await
            .map_err(|_| {
                ExecutorError::system(
                    "the step runner on the remote host did not listen within 60s",
                )
            })??;
        let dialer = proxy_dialer(
            handle.clone(),
            format!(
                "{} -c {}",
                self.command_line,
                shell_word(&format!(
                    "exec {} steps proxy --socket {}",
                    shell_word(&self.runner_command),
                    shell_word(&socket)
                ))
            ),
        );
        let result =
            runner_steps::drive::run(dialer, request, log, cancel, self.kill_timeouts.graceful)
                .await;
        let _ = server.eof().await;
        let _ = tokio::time::timeout(
            runner_steps::drive::MAX_GRACE + Duration::from_secs(5),
            async { while server.wait().await.is_some() {} },
        )
        .await;
        result
    }

    async fn cleanup(&mut self, _log: &JobLog) {
        if let Some(handle) = self.connection.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                handle.disconnect(Disconnect::ByApplication, "", "en"),
            )
            .await;
        }
    }
}

impl SshExecutor {
    /// The job's connection and the address it goes to (for messages).
    fn connected(&self) -> Result<(Arc<Handle<ClientHandler>>, String), ExecutorError> {
        let address = self
            .config
            .as_ref()
            .map(SshConfig::address)
            .unwrap_or_default();
        match &self.connection {
            Some(handle) => Ok((handle.clone(), address)),
            None => Err(ExecutorError::system("not connected")),
        }
    }
}

/// A request on the connection to `address` failed.
fn lost(address: &str, what: &str, error: russh::Error) -> ExecutorError {
    ExecutorError::system(format!("ssh connection to {address}: {what}")).with_source(error)
}

/// The remote shell script of a job's Step Runner: `steps serve` on a socket in a private
/// directory (its output on the session's), stopped and the directory removed when the
/// session's input ends or the session goes.
fn steps_server_script(runner: &str) -> String {
    format!(
        "dir=$(mktemp -d /tmp/step-runner.XXXXXXXX) || exit 1\n\
         trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf \"$dir\"' EXIT\n\
         trap 'exit 1' INT TERM HUP\n\
         {} steps serve --socket \"$dir/step-runner.sock\" 2>&1 &\n\
         pid=$!\n\
         cat >/dev/null\n",
        shell_word(runner)
    )
}

/// Reads a session's output until serve's line: the socket path.
async fn listening(
    channel: &mut russh::Channel<russh::client::Msg>,
) -> Result<String, ExecutorError> {
    let mut printed = Vec::new();
    while let Some(message) = channel.wait().await {
        match message {
            russh::ChannelMsg::Data { data } | russh::ChannelMsg::ExtendedData { data, .. } => {
                printed.extend_from_slice(&data);
                if let Some(path) = runner_steps::serve::advertised_socket(&printed) {
                    return Ok(path);
                }
            }
            russh::ChannelMsg::ExitStatus { .. }
            | russh::ChannelMsg::Eof
            | russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    Err(ExecutorError::system(format!(
        "the step runner on the remote host ended before it listened: {}",
        String::from_utf8_lossy(&printed).trim()
    )))
}

/// Dials the service with a new session running `command` (`steps proxy`) each time.
fn proxy_dialer(
    handle: Arc<Handle<ClientHandler>>,
    command: String,
) -> runner_steps::client::Dialer {
    Arc::new(move || {
        let handle = handle.clone();
        let command = command.clone();
        Box::pin(async move {
            let channel = handle
                .channel_open_session()
                .await
                .map_err(std::io::Error::other)?;
            channel
                .exec(true, command)
                .await
                .map_err(std::io::Error::other)?;
            Ok(Box::new(channel.into_stream()) as Box<dyn runner_steps::client::Transport>)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("bash"), "bash");
        assert_eq!(shell_word("-l"), "-l");
        assert_eq!(shell_word("bash -l"), "'bash -l'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
