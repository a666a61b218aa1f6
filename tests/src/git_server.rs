//! A git smart-HTTP server on loopback: `git http-backend` behind a tiny CGI bridge, with basic
//! authentication like GitLab's (`gitlab-ci-token:<job token>`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::http::{reply, serve, Received, Reply};

/// Which requests the server answers.
#[derive(Clone)]
enum Auth {
    /// Every request.
    None,
    /// Requests with any `Authorization` header.
    AnyCredentials,
    /// Requests authenticated as `gitlab-ci-token:<token>`, the token starting with this.
    JobToken(String),
}

/// A running git server with one repository in a temporary directory; it stops when dropped.
pub struct GitServer {
    address: SocketAddr,
    root: tempfile::TempDir,
    /// Authorization headers seen, for assertions.
    seen_auth: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn cgi(root: &Path, received: &Received) -> Reply {
    let mut child = match Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &received.path)
        .env("REQUEST_METHOD", received.method.as_str())
        .env("QUERY_STRING", &received.query)
        .env(
            "CONTENT_TYPE",
            received
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .env("CONTENT_LENGTH", received.body.len().to_string())
        .env(
            "GIT_PROTOCOL",
            received
                .headers
                .get("git-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .env("REMOTE_USER", "gitlab-ci-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => return reply(500, format!("git http-backend: {error}")),
    };
    {
        use std::io::Write;
        let mut stdin = child
            .stdin
            .take()
            .expect("git http-backend was started with a piped stdin");
        let _ = stdin.write_all(&received.body);
    }
    let output = child
        .wait_with_output()
        .expect("read the output of git http-backend");
    let data = output.stdout;
    let split = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| data.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let Some((end, separator)) = split else {
        return reply(500, "bad CGI output");
    };
    let head = String::from_utf8_lossy(&data[..end]).to_string();
    let body = data[end + separator..].to_vec();
    let mut status = 200;
    let mut response = hyper::Response::builder();
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("Status") {
                status = value
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(200);
            } else {
                response = response.header(name.trim(), value);
            }
        }
    }
    response
        .status(status)
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .expect("git http-backend's CGI headers make a valid HTTP response")
}

impl GitServer {
    /// Starts a server holding one repository, `group/project.git`, with `files` committed on
    /// `main`. Requests must carry basic auth with user `gitlab-ci-token` when `require_auth`.
    pub async fn start(files: &[(&str, &str)], require_auth: bool) -> Self {
        let auth = if require_auth {
            Auth::AnyCredentials
        } else {
            Auth::None
        };
        Self::start_inner(files, auth, false).await
    }

    /// Starts a server whose `group/project.git` has `files` and a submodule `library` at
    /// `../library.git` (relative, as GitLab projects on one instance name each other), and
    /// answers only requests authenticated as `gitlab-ci-token:<job token>`, the token starting
    /// with `token_prefix` (the fake GitLab's job tokens are `glcbt-jobtoken<id>`), for both
    /// repositories.
    pub async fn start_with_submodule(files: &[(&str, &str)], token_prefix: &str) -> Self {
        Self::start_inner(files, Auth::JobToken(token_prefix.to_string()), true).await
    }

    async fn start_inner(files: &[(&str, &str)], required: Auth, submodule: bool) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        if submodule {
            let library = root.path().join("library-work");
            std::fs::create_dir_all(&library).expect("create the library's work tree");
            git(&library, &["init", "-q", "-b", "main"]);
            std::fs::write(library.join("lib.txt"), "from the private library\n")
                .expect("write the library's file");
            git(&library, &["add", "-A"]);
            git(&library, &["commit", "-q", "-m", "library"]);
            let bare = root.path().join("group").join("library.git");
            std::fs::create_dir_all(root.path().join("group"))
                .expect("create the bare repositories' group directory");
            git(
                root.path(),
                &[
                    "clone",
                    "-q",
                    "--bare",
                    library.to_str().expect("the library's path is UTF-8"),
                    bare.to_str().expect("the library's bare path is UTF-8"),
                ],
            );
        }
        let work = root.path().join("work");
        std::fs::create_dir_all(&work).expect("create the git server's work tree directory");
        git(&work, &["init", "-q", "-b", "main"]);
        for (name, contents) in files {
            let path = work.join(name);
            std::fs::create_dir_all(path.parent().expect("a committed file's path has a parent"))
                .expect("create the directory of a file to commit");
            std::fs::write(path, contents).expect("write a file to commit to the git repository");
        }
        if submodule {
            let library = root.path().join("group").join("library.git");
            git(
                &work,
                &[
                    "-c",
                    "protocol.file.allow=always",
                    "submodule",
                    "add",
                    "-q",
                    library.to_str().expect("the library's bare path is UTF-8"),
                    "library",
                ],
            );
            git(
                &work,
                &[
                    "config",
                    "-f",
                    ".gitmodules",
                    "submodule.library.url",
                    "../library.git",
                ],
            );
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial"]);
        let bare = root.path().join("group").join("project.git");
        std::fs::create_dir_all(
            bare.parent()
                .expect("the bare repository's path has a parent"),
        )
        .expect("create the bare repository's group directory");
        git(
            root.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str()
                    .expect("the temporary work tree's path is UTF-8"),
                bare.to_str()
                    .expect("the temporary bare repository's path is UTF-8"),
            ],
        );
        let seen_auth = Arc::new(Mutex::new(Vec::new()));
        let served_root: PathBuf = root.path().to_path_buf();
        let seen = seen_auth.clone();
        let (address, task) = serve(move |received| {
            let root = served_root.clone();
            let seen = seen.clone();
            let required = required.clone();
            async move {
                let auth = received
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let allowed = match &required {
                    Auth::None => true,
                    Auth::AnyCredentials => !auth.is_empty(),
                    Auth::JobToken(prefix) => {
                        use base64::Engine as _;
                        auth.strip_prefix("Basic ")
                            .and_then(|encoded| {
                                base64::engine::general_purpose::STANDARD
                                    .decode(encoded)
                                    .ok()
                            })
                            .and_then(|decoded| String::from_utf8(decoded).ok())
                            .and_then(|pair| {
                                pair.strip_prefix("gitlab-ci-token:").map(str::to_string)
                            })
                            .is_some_and(|token| token.starts_with(prefix.as_str()))
                    }
                };
                if !allowed {
                    let mut response = reply(401, "");
                    response.headers_mut().insert(
                        "WWW-Authenticate",
                        "Basic realm=\"GitLab\""
                            .parse()
                            .expect("the WWW-Authenticate value is a valid header value"),
                    );
                    return response;
                }
                seen.lock()
                    .expect("a test thread panicked while holding the git server's auth log")
                    .push(auth);
                tokio::task::spawn_blocking(move || cgi(&root, &received))
                    .await
                    .expect("the git http-backend CGI bridge panicked")
            }
        })
        .await;
        Self {
            address,
            root,
            seen_auth,
            task,
        }
    }

    /// The repository URL without credentials.
    pub fn url(&self) -> String {
        format!("http://{}/group/project.git", self.address)
    }

    /// The URL GitLab puts in `git_info.repo_url`: with `gitlab-ci-token:<token>@`.
    pub fn url_with_token(&self, token: &str) -> String {
        format!(
            "http://gitlab-ci-token:{token}@{}/group/project.git",
            self.address
        )
    }

    /// The commit id `main` (HEAD) points to in the served repository.
    pub fn head(&self) -> String {
        git(
            &self.root.path().join("group").join("project.git"),
            &["rev-parse", "HEAD"],
        )
    }

    /// The `Authorization` header of every request passed to git, in order (empty if none).
    pub fn authorizations(&self) -> Vec<String> {
        self.seen_auth
            .lock()
            .expect("a test thread panicked while holding the git server's auth log")
            .clone()
    }
}
