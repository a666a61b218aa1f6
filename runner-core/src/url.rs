//! The few URL operations the runner needs, in one place: `scheme://[userinfo@]host[:port]`
//! followed by the path, query and fragment. Only what is before the first `/`, `?` or `#`
//! after the scheme is the authority, so an `@` in a path is never taken for credentials.

/// A URL split at its authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// The scheme, without `://` (`https`).
    pub scheme: &'a str,
    /// `user[:password]`, without the `@`.
    pub userinfo: Option<&'a str>,
    /// `host[:port]`.
    pub host: &'a str,
    /// Path, query and fragment, as they were.
    pub rest: &'a str,
}

/// Splits `url`; `None` without a `scheme://`.
pub fn parse(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    Some(UrlParts {
        scheme,
        userinfo,
        host,
        rest,
    })
}

/// `url` without its credentials; a string that is not a URL is returned as it is.
pub fn strip_userinfo(url: &str) -> String {
    match parse(url) {
        Some(parts) if parts.userinfo.is_some() => {
            format!("{}://{}{}", parts.scheme, parts.host, parts.rest)
        }
        _ => url.to_string(),
    }
}

/// `scheme://host[:port]`, without credentials.
pub fn origin(url: &str) -> Option<String> {
    let parts = parse(url)?;
    (!parts.host.is_empty()).then(|| format!("{}://{}", parts.scheme, parts.host))
}

/// The host name, without credentials or port.
pub fn host_name(url: &str) -> Option<&str> {
    let host = parse(url)?.host;
    let name = match host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        Some(bracketed) => bracketed.split(']').next()?,
        None => host.split(':').next()?,
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_only_taken_from_the_authority() {
        assert_eq!(
            strip_userinfo("https://gitlab-ci-token:secret@gitlab.example:8443/g/p.git"),
            "https://gitlab.example:8443/g/p.git"
        );
        assert_eq!(
            strip_userinfo("https://gitlab.example/g/p@v1.git?ref=a@b"),
            "https://gitlab.example/g/p@v1.git?ref=a@b"
        );
        assert_eq!(
            strip_userinfo("git@gitlab.example:g/p.git"),
            "git@gitlab.example:g/p.git"
        );
        assert_eq!(
            strip_userinfo("https://a:b@c@gitlab.example/x"),
            "https://gitlab.example/x"
        );
    }

    #[test]
    fn origins_and_host_names() {
        assert_eq!(
            origin("https://u:p@gitlab.example:8443/api?x#y").as_deref(),
            Some("https://gitlab.example:8443")
        );
        assert_eq!(origin("https:///path"), None);
        assert_eq!(
            host_name("https://u@gitlab.example:8443/x"),
            Some("gitlab.example")
        );
        assert_eq!(host_name("http://[::1]:8080/"), Some("::1"));
        assert_eq!(host_name("gitlab.example"), None);
        let parts = parse("http://h?q=1").unwrap();
        assert_eq!((parts.host, parts.rest), ("h", "?q=1"));
    }
}
