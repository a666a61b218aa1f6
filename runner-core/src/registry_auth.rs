//! Registry credentials for pulls, resolved as upstream's `helpers/docker/auth`: the
//! `DOCKER_AUTH_CONFIG` variable, then the runner user's `~/.docker/config.json` (or
//! `~/.dockercfg`), then the job payload's `registry` credentials. The first source naming a
//! registry wins; an image takes the credentials of the longest registry path that prefixes it
//! (`registry.example.com/group` before `registry.example.com`). Credential stores and helpers
//! (`credsStore`, `credHelpers`) are asked through their `docker-credential-<name>` programs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::Value;

/// [`RegistryAuth::source`] of credentials read from the job's `DOCKER_AUTH_CONFIG` variable, as
/// the job log's "Authenticating with credentials from ..." line shows it.
pub const SOURCE_VARIABLE: &str = "$DOCKER_AUTH_CONFIG";
/// [`RegistryAuth::source`] of the job payload's `registry` credentials (GitLab's own registry).
pub const SOURCE_PAYLOAD: &str = "job payload (GitLab Registry)";
const DEFAULT_REGISTRY: &str = "docker.io";

/// Why one source of registry credentials could not be read (the source is then skipped with
/// a warning that carries this error and its cause).
#[derive(Debug, thiserror::Error)]
enum CredentialError {
    #[error(transparent)]
    Read(std::io::Error),
    #[error(transparent)]
    Json(serde_json::Error),
    #[error("expected a JSON object")]
    NotAnObject,
    #[error("decoding the auth of {server}")]
    Decode {
        server: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("the auth of {server} is not user:password")]
    NotUserPassword { server: String },
    #[error("path traversal is not allowed")]
    HelperName,
    #[error("running {program} {action}")]
    Spawn {
        program: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {action}: {output}")]
    HelperFailed {
        program: String,
        action: &'static str,
        output: String,
    },
    #[error("docker-credential-{name} {action}")]
    HelperOutput {
        name: String,
        action: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// One registry's credentials and where they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry path they apply to (`host[/path]`, lower-case host).
    pub path: String,
    /// `$DOCKER_AUTH_CONFIG`, a file's path, or the payload.
    pub source: String,
    /// The server key as the source wrote it (such as `https://index.docker.io/v1/`), sent to the
    /// daemon with the pull.
    pub server_address: String,
    /// User name; empty when an identity token is used instead.
    pub username: String,
    /// Password or access token; empty when an identity token is used instead.
    pub password: String,
    /// OAuth identity token (`identitytoken`, or a credential helper's `<token>` user); empty when
    /// there is none.
    pub identity_token: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("path", &self.path)
            .field("source", &self.source)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A user and password, or an identity token, for one server.
#[derive(Clone, Default, PartialEq, Eq)]
struct Login {
    username: String,
    password: String,
    identity_token: String,
}

/// What the credentials are resolved from. Its `Debug` leaves the credentials out.
#[derive(Clone, Default)]
pub struct AuthSources {
    /// The job's `DOCKER_AUTH_CONFIG` value.
    pub docker_auth_config: String,
    /// The runner user's home directory.
    pub home: Option<PathBuf>,
    /// The payload's `registry` credentials: (url, username, password).
    pub payload: Vec<(String, String, String)>,
}

impl AuthSources {
    /// A job's sources: its `DOCKER_AUTH_CONFIG` variable, the runner user's home, its
    /// payload's `registry` credentials.
    pub fn for_build(build: &crate::build::BuildContext) -> Self {
        Self {
            docker_auth_config: build.variables.get("DOCKER_AUTH_CONFIG").to_string(),
            home: home_dir(),
            payload: build
                .job
                .credentials
                .iter()
                .filter(|credential| credential.kind == "registry")
                .map(|credential| {
                    (
                        credential.url.clone(),
                        credential.username.clone(),
                        credential.password.expose().clone(),
                    )
                })
                .collect(),
        }
    }
}

impl std::fmt::Debug for AuthSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSources")
            .field("docker_auth_config", &"[MASKED]")
            .field("home", &self.home)
            .field(
                "payload",
                &self
                    .payload
                    .iter()
                    .map(|(url, username, _)| (url, username))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The credentials for `image`, if a source has some; warnings name sources that could not be
/// read (they are skipped, as upstream does).
pub fn for_image(
    sources: &AuthSources,
    image: &str,
    warnings: &mut Vec<String>,
) -> Option<RegistryAuth> {
    let all = all_configs(sources, warnings);
    let mut path = normalize_image(image);
    loop {
        if let Some(found) = all.iter().find(|auth| auth.path == path) {
            return Some(found.clone());
        }
        match path.rfind('/') {
            Some(index) => path.truncate(index),
            None => return None,
        }
    }
}

/// Every registry's credentials, in the order found (the first source naming a registry wins);
/// warnings name sources that could not be read.
pub fn all_configs(sources: &AuthSources, warnings: &mut Vec<String>) -> Vec<RegistryAuth> {
    let mut found: Vec<RegistryAuth> = Vec::new();
    let mut add = |source: &str, configs: Vec<(String, Login)>| {
        for (server, login) in configs {
            let path = registry_path(&server);
            if found.iter().any(|auth| auth.path == path) {
                continue;
            }
            found.push(RegistryAuth {
                path,
                source: source.to_string(),
                server_address: server,
                username: login.username,
                password: login.password,
                identity_token: login.identity_token,
            });
        }
    };
    if !sources.docker_auth_config.trim().is_empty() {
        match read_config(sources.docker_auth_config.as_bytes()) {
            Ok(configs) => add(SOURCE_VARIABLE, configs),
            Err(error) => warnings.push(unreadable(SOURCE_VARIABLE, &error)),
        }
    }
    if let Some(home) = &sources.home {
        let files = [
            home.join(".docker").join("config.json"),
            home.join(".dockercfg"),
        ];
        if let Some(file) = files.iter().find(|file| file.exists()) {
            let name = file.display().to_string();
            match std::fs::read(file)
                .map_err(CredentialError::Read)
                .and_then(|bytes| read_config(&bytes))
            {
                Ok(configs) => add(&name, configs),
                Err(error) => warnings.push(unreadable(&name, &error)),
            }
        }
    }
    add(
        SOURCE_PAYLOAD,
        sources
            .payload
            .iter()
            .map(|(url, user, password)| {
                (
                    url.clone(),
                    Login {
                        username: user.clone(),
                        password: password.clone(),
                        identity_token: String::new(),
                    },
                )
            })
            .collect(),
    );
    found
}

fn unreadable(source: &str, error: &CredentialError) -> String {
    format!(
        "Failed to resolve credentials from {source}: {}. Credentials from this source will not be used.",
        crate::failure::error_chain(error)
    )
}

/// A docker config (`auths`, `credsStore`, `credHelpers`) as logins by server, sorted by
/// server.
fn read_config(bytes: &[u8]) -> Result<Vec<(String, Login)>, CredentialError> {
    let value: Value = serde_json::from_slice(bytes).map_err(CredentialError::Json)?;
    let object = value.as_object().ok_or(CredentialError::NotAnObject)?;
    let mut out: BTreeMap<String, Login> = BTreeMap::new();
    let auths = object.get("auths").and_then(Value::as_object);
    let store = object
        .get("credsStore")
        .and_then(Value::as_str)
        .unwrap_or("");
    let helpers = object.get("credHelpers").and_then(Value::as_object);
    if let Some(auths) = auths {
        for (server, entry) in auths {
            let text = |key: &str| {
                entry
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let (mut username, mut password) = (text("username"), text("password"));
            let encoded = text("auth");
            if !encoded.is_empty() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|source| CredentialError::Decode {
                        server: server.clone(),
                        source,
                    })?;
                let decoded = String::from_utf8_lossy(&decoded).into_owned();
                let (user, pass) =
                    decoded
                        .split_once(':')
                        .ok_or_else(|| CredentialError::NotUserPassword {
                            server: server.clone(),
                        })?;
                username = user.to_string();
                password = pass.trim_end_matches('\0').to_string();
            }
            out.insert(
                server.clone(),
                Login {
                    username,
                    password,
                    identity_token: text("identitytoken"),
                },
            );
        }
    }
    if !store.is_empty() {
        for (server, login) in store_all(store)? {
            out.insert(server, login);
        }
    }
    if let Some(helpers) = helpers {
        for (server, helper) in helpers {
            let helper = helper.as_str().unwrap_or("");
            out.insert(server.clone(), helper_get(helper, server)?);
        }
    }
    if auths.is_none() && store.is_empty() && helpers.is_none() {
        return Ok(Vec::new());
    }
    Ok(out.into_iter().collect())
}

fn helper_program(name: &str) -> Result<String, CredentialError> {
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(CredentialError::HelperName);
    }
    Ok(format!("docker-credential-{name}"))
}

fn run_helper(name: &str, action: &'static str, input: &str) -> Result<Vec<u8>, CredentialError> {
    let program = helper_program(name)?;
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CredentialError::Spawn {
            program: program.clone(),
            action,
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| CredentialError::Spawn {
            program: program.clone(),
            action,
            source,
        })?;
    if !output.status.success() {
        return Err(CredentialError::HelperFailed {
            program,
            action,
            output: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        });
    }
    Ok(output.stdout)
}

/// `get`: `{"ServerURL", "Username", "Secret"}`; a `<token>` user means an identity token.
fn helper_get(name: &str, server: &str) -> Result<Login, CredentialError> {
    let output = run_helper(name, "get", server)?;
    let value: Value =
        serde_json::from_slice(&output).map_err(|source| CredentialError::HelperOutput {
            name: name.to_string(),
            action: "get",
            source,
        })?;
    let user = value["Username"].as_str().unwrap_or("").to_string();
    let secret = value["Secret"].as_str().unwrap_or("").to_string();
    Ok(if user == "<token>" {
        Login {
            identity_token: secret,
            ..Login::default()
        }
    } else {
        Login {
            username: user,
            password: secret,
            identity_token: String::new(),
        }
    })
}

fn store_all(name: &str) -> Result<Vec<(String, Login)>, CredentialError> {
    let output = run_helper(name, "list", "")?;
    let listed: BTreeMap<String, String> =
        serde_json::from_slice(&output).map_err(|source| CredentialError::HelperOutput {
            name: name.to_string(),
            action: "list",
            source,
        })?;
    listed
        .keys()
        .map(|server| Ok((server.clone(), helper_get(name, server)?)))
        .collect()
}

/// `docker.io/library/alpine` for `alpine:3`; `host/path` for `Host/path:tag`.
pub fn normalize_image(image: &str) -> String {
    let image = image.split('@').next().unwrap_or(image);
    let (dir, last) = match image.rfind('/') {
        Some(index) => (&image[..=index], &image[index + 1..]),
        None => ("", image),
    };
    let name = last.split(':').next().unwrap_or(last);
    let joined = format!("{dir}{name}");
    let first = joined.split('/').next().unwrap_or("");
    let is_docker_io = !joined.contains('/')
        || (!first.contains('.')
            && !first.contains(':')
            && !first.eq_ignore_ascii_case("localhost"));
    let normalized = if is_docker_io {
        format!("{DEFAULT_REGISTRY}/{joined}")
    } else if first.eq_ignore_ascii_case("index.docker.io") {
        joined["index.".len()..].to_string()
    } else {
        joined
    };
    lower_host(&normalized)
}

/// A credential's server address as a registry path: scheme and path dropped for URLs,
/// a trailing tag dropped otherwise.
pub fn registry_path(server: &str) -> String {
    let lower = server.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let rest = &server[server.find("://").map(|index| index + 3).unwrap_or(0)..];
        let host = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
        if host == "index.docker.io" {
            return DEFAULT_REGISTRY.into();
        }
        return host;
    }
    let mut path = server.trim_end_matches('/').to_string();
    if let (Some(colon), Some(slash)) = (path.rfind(':'), path.rfind('/')) {
        if colon > slash {
            path.truncate(colon);
        }
    }
    lower_host(&path)
}

fn lower_host(path: &str) -> String {
    match path.split_once('/') {
        Some((host, rest)) => format!("{}/{rest}", host.to_ascii_lowercase()),
        None => path.to_ascii_lowercase(),
    }
}

/// The runner user's home, for `~/.docker/config.json`.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_credentials_out() {
        let sources = AuthSources {
            docker_auth_config: r#"{"auths":{"r":{"auth":"dXNlcjpzM2NyZXQ="}}}"#.into(),
            home: None,
            payload: vec![("registry.example".into(), "ci".into(), "p4ssw0rd".into())],
        };
        let shown = format!("{sources:?}");
        assert!(
            !shown.contains("dXNlcjpzM2NyZXQ") && !shown.contains("p4ssw0rd"),
            "{shown}"
        );
        assert!(
            shown.contains("registry.example") && shown.contains("ci"),
            "{shown}"
        );
    }

    fn encode(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn image_names_normalize_as_upstreams() {
        assert_eq!(normalize_image("alpine:3"), "docker.io/alpine");
        assert_eq!(normalize_image("group/app"), "docker.io/group/app");
        assert_eq!(
            normalize_image("Registry.Example.com:5000/Group/app:1@sha256:ab"),
            "registry.example.com:5000/Group/app"
        );
        assert_eq!(normalize_image("localhost/app:1"), "localhost/app");
        assert_eq!(normalize_image("index.docker.io/app"), "docker.io/app");
    }

    #[test]
    fn server_addresses_become_registry_paths() {
        assert_eq!(registry_path("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(
            registry_path("HTTPS://Registry.example.com/v2/"),
            "registry.example.com"
        );
        assert_eq!(
            registry_path("registry.example.com:5000/group"),
            "registry.example.com:5000/group"
        );
        assert_eq!(registry_path("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn the_variable_wins_and_the_longest_path_is_taken() {
        let variable = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}, "127.0.0.1:5000/team": {{"username": "team", "password": "t"}}}}}}"#,
            encode("alice:secret:with:colons")
        );
        let sources = AuthSources {
            docker_auth_config: variable,
            home: None,
            payload: vec![(
                "127.0.0.1:5000".into(),
                "gitlab-ci-token".into(),
                "job".into(),
            )],
        };
        let mut warnings = Vec::new();
        let auth = for_image(&sources, "127.0.0.1:5000/app/x:1", &mut warnings).unwrap();
        assert_eq!(auth.source, SOURCE_VARIABLE);
        assert_eq!(auth.username, "alice");
        assert_eq!(auth.password, "secret:with:colons");
        let team = for_image(&sources, "127.0.0.1:5000/team/x:1", &mut warnings).unwrap();
        assert_eq!(team.username, "team");
        assert!(for_image(&sources, "docker.io/library/x", &mut warnings).is_none());
        assert!(warnings.is_empty());
        // Without the variable, the payload's credentials are used.
        let payload_only = AuthSources {
            docker_auth_config: String::new(),
            ..sources
        };
        let auth = for_image(&payload_only, "127.0.0.1:5000/app", &mut warnings).unwrap();
        assert_eq!(auth.source, SOURCE_PAYLOAD);
        assert_eq!(auth.username, "gitlab-ci-token");
    }

    #[test]
    fn an_unreadable_source_is_a_warning_and_is_skipped() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".docker")).unwrap();
        std::fs::write(
            home.path().join(".docker/config.json"),
            format!(
                r#"{{"auths": {{"https://reg.example.com/v1/": {{"auth": "{}"}}}}}}"#,
                encode("bob:pw")
            ),
        )
        .unwrap();
        let sources = AuthSources {
            docker_auth_config: "{not json".into(),
            home: Some(home.path().to_path_buf()),
            payload: Vec::new(),
        };
        let mut warnings = Vec::new();
        let auth = for_image(&sources, "reg.example.com/x", &mut warnings).unwrap();
        assert_eq!(auth.username, "bob");
        assert!(auth.source.ends_with(".docker/config.json"));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("Failed to resolve credentials from $DOCKER_AUTH_CONFIG"));
    }
}
