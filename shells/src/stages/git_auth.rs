//! How git reaches the repository and its submodules with the job token, as upstream's
//! `GitAuthHelper`: the remote URL, and the `url.<with token>.insteadOf <without>` rules of the
//! external git config. Authenticated (the default), the rules rewrite the project URL, the
//! instance's base URL (`clone_url`, else the runner `url`) and the host of the payload's
//! `repo_url`, so a private submodule on the same GitLab (`../other.git` or
//! `https://host/group/other.git`) is fetched with the token. With
//! `FF_GIT_URLS_WITHOUT_TOKENS` no URL and no rule carries the token (the credential helper
//! supplies it). `GIT_SUBMODULE_FORCE_HTTPS` adds rules that turn `git@host:` and
//! `ssh://git@host[:port]` into the HTTPS base.

use runner_core::url::{parse, strip_userinfo};

/// What the URLs are built from.
#[derive(Debug, Clone, Default)]
pub struct GitAuth<'a> {
    /// `[[runners]] clone_url`; empty when unset.
    pub clone_url: &'a str,
    /// `[[runners]] url`: the instance's base when there is no `clone_url`.
    pub credentials_url: &'a str,
    /// The payload's `repo_url` (it carries the token already).
    pub repo_url: &'a str,
    /// `GIT_SUBMODULE_FORCE_HTTPS`.
    pub force_https: bool,
    /// The job token.
    pub token: &'a str,
    /// `CI_PROJECT_PATH`.
    pub project_path: String,
    /// `CI_SERVER_HOST`.
    pub server_host: String,
    /// `CI_SERVER_SHELL_SSH_HOST` (falls back to `server_host`).
    pub ssh_host: String,
    /// `CI_SERVER_SHELL_SSH_PORT`.
    pub ssh_port: String,
    /// Not `FF_GIT_URLS_WITHOUT_TOKENS`: URLs carry the token.
    pub authenticated: bool,
}

/// `scheme://[userinfo@]host[:port]rest` with the userinfo this mode wants: the job token when
/// authenticated, `git` for an SSH URL without a user, none otherwise.
fn with_auth(
    auth: &GitAuth<'_>,
    scheme: &str,
    userinfo: Option<&str>,
    host: &str,
    rest: &str,
) -> String {
    let userinfo = if scheme == "ssh" {
        Some(userinfo.unwrap_or("git").to_string())
    } else if auth.authenticated {
        Some(format!("gitlab-ci-token:{}", auth.token))
    } else {
        None
    };
    match userinfo {
        Some(userinfo) => format!("{scheme}://{userinfo}@{host}{rest}"),
        None => format!("{scheme}://{host}{rest}"),
    }
}

fn is_http(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

impl GitAuth<'_> {
    /// The URL git fetches from, with the token when authenticated: `clone_url` plus the
    /// project path, else the payload's `repo_url` (its credentials removed when not
    /// authenticated).
    pub fn remote_url(&self) -> String {
        match parse(self.clone_url) {
            Some(parts) if !parts.scheme.is_empty() => {
                let path = format!(
                    "{}/{}.git",
                    parts.rest.trim_end_matches('/'),
                    self.project_path.trim_matches('/')
                );
                with_auth(self, parts.scheme, parts.userinfo, parts.host, &path)
            }
            _ if self.authenticated => self.repo_url.to_string(),
            _ => match parse(self.repo_url) {
                Some(parts) if parts.scheme == "ssh" => self.repo_url.to_string(),
                _ => strip_userinfo(self.repo_url),
            },
        }
    }

    /// Every `(with credentials, without)` rewrite, in upstream's order, without duplicates:
    /// the project URL's, the instance base's, the SSH ones, and the `repo_url` host's.
    pub fn instead_ofs(&self) -> Vec<(String, String)> {
        let mut rules = Vec::new();
        let with = self.remote_url();
        let without = strip_userinfo(&with);
        if with != without {
            rules.push((with, without));
        }
        let base = match parse(self.clone_url) {
            Some(parts) if !parts.scheme.is_empty() => Some(parts),
            _ => parse(self.credentials_url),
        };
        if let Some(base) = base.filter(|base| is_http(base.scheme)) {
            let plain = trimmed(&format!("{}://{}{}", base.scheme, base.host, base.rest));
            if self.authenticated {
                let authed = trimmed(&with_auth(self, base.scheme, None, base.host, base.rest));
                rules.push((authed.clone(), plain));
                rules.extend(self.ssh_instead_ofs(&authed));
                if let Some(repo) = parse(self.repo_url).filter(|repo| is_http(repo.scheme)) {
                    let repo_plain = format!("{}://{}", repo.scheme, repo.host);
                    let repo_authed = with_auth(self, repo.scheme, None, repo.host, "");
                    rules.push((repo_authed, repo_plain));
                }
            } else {
                rules.extend(self.ssh_instead_ofs(&plain));
            }
        }
        let mut unique: Vec<(String, String)> = Vec::new();
        for rule in rules {
            if !unique.contains(&rule) {
                unique.push(rule);
            }
        }
        unique
    }

    /// `GIT_SUBMODULE_FORCE_HTTPS`: SSH remotes of the instance rewritten to `base`.
    fn ssh_instead_ofs(&self, base: &str) -> Vec<(String, String)> {
        if !self.force_https {
            return Vec::new();
        }
        let host = if self.ssh_host.is_empty() {
            &self.server_host
        } else {
            &self.ssh_host
        };
        if self.ssh_port.is_empty() || self.ssh_port == "22" {
            vec![
                (format!("{base}/"), format!("git@{host}:")),
                (base.to_string(), format!("ssh://git@{host}")),
            ]
        } else {
            vec![(
                base.to_string(),
                format!("ssh://git@{host}:{}", self.ssh_port),
            )]
        }
    }
}

fn trimmed(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> GitAuth<'static> {
        GitAuth {
            credentials_url: "https://gitlab.example.com/",
            repo_url: "https://gitlab-ci-token:tok@gitlab.example.com/group/project.git",
            token: "tok",
            project_path: "group/project".into(),
            server_host: "gitlab.example.com".into(),
            authenticated: true,
            ..GitAuth::default()
        }
    }

    #[test]
    fn authenticated_rules_cover_the_project_the_instance_and_the_repo_host() {
        let auth = auth();
        assert_eq!(auth.remote_url(), auth.repo_url);
        assert_eq!(
            auth.instead_ofs(),
            [
                (
                    "https://gitlab-ci-token:tok@gitlab.example.com/group/project.git".to_string(),
                    "https://gitlab.example.com/group/project.git".to_string()
                ),
                (
                    "https://gitlab-ci-token:tok@gitlab.example.com".to_string(),
                    "https://gitlab.example.com".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_repo_url_on_another_host_than_the_runner_url_gets_its_own_rule() {
        let auth = GitAuth {
            credentials_url: "https://gitlab.internal:8443",
            ..auth()
        };
        let rules = auth.instead_ofs();
        assert!(rules.contains(&(
            "https://gitlab-ci-token:tok@gitlab.internal:8443".into(),
            "https://gitlab.internal:8443".into()
        )));
        assert!(rules.contains(&(
            "https://gitlab-ci-token:tok@gitlab.example.com".into(),
            "https://gitlab.example.com".into()
        )));
    }

    #[test]
    fn without_tokens_no_url_or_rule_carries_the_token() {
        let auth = GitAuth {
            authenticated: false,
            force_https: true,
            ..auth()
        };
        assert_eq!(
            auth.remote_url(),
            "https://gitlab.example.com/group/project.git"
        );
        let rules = auth.instead_ofs();
        assert!(
            rules.iter().all(|(with, _)| !with.contains("tok")),
            "{rules:?}"
        );
        assert_eq!(
            rules,
            [
                (
                    "https://gitlab.example.com/".to_string(),
                    "git@gitlab.example.com:".to_string()
                ),
                (
                    "https://gitlab.example.com".to_string(),
                    "ssh://git@gitlab.example.com".to_string()
                ),
            ]
        );
    }

    #[test]
    fn force_https_rewrites_ssh_remotes_with_the_token_and_a_custom_port() {
        let auth = GitAuth {
            force_https: true,
            ssh_host: "ssh.gitlab.example.com".into(),
            ssh_port: "2222".into(),
            ..auth()
        };
        assert!(auth.instead_ofs().contains(&(
            "https://gitlab-ci-token:tok@gitlab.example.com".into(),
            "ssh://git@ssh.gitlab.example.com:2222".into()
        )));
    }

    #[test]
    fn clone_url_replaces_the_repo_url_and_is_the_base() {
        let auth = GitAuth {
            clone_url: "http://mirror.local/git/",
            ..auth()
        };
        assert_eq!(
            auth.remote_url(),
            "http://gitlab-ci-token:tok@mirror.local/git/group/project.git"
        );
        assert!(auth.instead_ofs().contains(&(
            "http://gitlab-ci-token:tok@mirror.local/git".into(),
            "http://mirror.local/git".into()
        )));
    }
}
