//! Host key verification against an OpenSSH `known_hosts` file, with the semantics of Go's
//! `x/crypto/ssh/knownhosts` that upstream uses: the host is looked up as `host` (port 22) or
//! `[host]:port`; revoked keys are refused first; among the matching lines the first key of each
//! type counts; no matching line means "key is unknown", a matching line of another key or
//! another type means "key mismatch".
//!
//! Unlike russh's own parser this one takes what OpenSSH writes: fields separated by any run of
//! blanks, `@revoked` / `@cert-authority` markers, hashed names (`|1|salt|hash`), wildcard and
//! negated patterns. Lines it cannot read are skipped with a warning naming the file and line,
//! as OpenSSH does.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{HashAlg, PublicKey};

/// Why a host key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyRefusal {
    /// No line names the host: the host has never been added to the file.
    Unknown,
    /// Lines name the host, but none of them holds the offered key.
    Mismatch,
    /// An `@revoked` line holds the offered key, whichever host it names.
    Revoked,
}

impl HostKeyRefusal {
    /// Go's `knownhosts` wording.
    pub fn as_str(&self) -> &'static str {
        match self {
            HostKeyRefusal::Unknown => "knownhosts: key is unknown",
            HostKeyRefusal::Mismatch => "knownhosts: key mismatch",
            HostKeyRefusal::Revoked => "knownhosts: key is revoked",
        }
    }
}

#[derive(Debug, Clone)]
enum HostPatterns {
    /// `pattern[,pattern…]`, each possibly `!negated`, `*`/`?` wildcards, `[host]:port`.
    Plain(Vec<String>),
    /// `|1|<salt>|<hmac-sha1(salt, name)>`, both base64.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Line {
    revoked: bool,
    hosts: HostPatterns,
    key: PublicKey,
}

/// A parsed `known_hosts` file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    lines: Vec<Line>,
}

impl KnownHosts {
    /// Reads `path`. A missing or unreadable file is an error, as in upstream.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::parse(path, &text))
    }

    /// Parses the text of a `known_hosts` file; `path` only names the file in warnings about
    /// lines that are skipped. Never fails.
    pub fn parse(path: &Path, text: &str) -> Self {
        let mut lines = Vec::new();
        for (number, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_line(trimmed) {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => {}
                Err(problem) => tracing::warn!(
                    file = %path.display(),
                    line = number + 1,
                    problem,
                    "skipping a known_hosts line"
                ),
            }
        }
        Self {
            path: path.to_path_buf(),
            lines,
        }
    }

    /// The file that was read, for refusal messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the key `host:port` offered.
    pub fn check(&self, host: &str, port: u16, offered: &PublicKey) -> Result<(), HostKeyRefusal> {
        if self
            .lines
            .iter()
            .any(|line| line.revoked && same_key(&line.key, offered))
        {
            return Err(HostKeyRefusal::Revoked);
        }
        let name = normalize(host, port);
        // The first key of each algorithm among the lines naming this host.
        let mut known: Vec<&PublicKey> = Vec::new();
        for line in self.lines.iter().filter(|line| !line.revoked) {
            if matches_host(&line.hosts, &name, host, port)
                && !known
                    .iter()
                    .any(|key| key.algorithm() == line.key.algorithm())
            {
                known.push(&line.key);
            }
        }
        if known.is_empty() {
            return Err(HostKeyRefusal::Unknown);
        }
        match known
            .iter()
            .find(|key| key.algorithm() == offered.algorithm())
        {
            Some(key) if same_key(key, offered) => Ok(()),
            _ => Err(HostKeyRefusal::Mismatch),
        }
    }

    /// The key algorithms recorded for `host:port`, to offer the server in that order.
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
        let name = normalize(host, port);
        let mut out = Vec::new();
        for line in self.lines.iter().filter(|line| !line.revoked) {
            let algorithm = line.key.algorithm();
            if matches_host(&line.hosts, &name, host, port) && !out.contains(&algorithm) {
                out.push(algorithm);
            }
        }
        out
    }
}

fn same_key(left: &PublicKey, right: &PublicKey) -> bool {
    left.key_data() == right.key_data()
}

/// `SHA256:<base64>` as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// How OpenSSH names a host in `known_hosts`: `host`, or `[host]:port` off port 22.
pub fn normalize(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn parse_line(line: &str) -> Result<Option<Line>, &'static str> {
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next().ok_or("empty line")?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            // CA lines vouch for host certificates, never for a plain host key.
            "cert-authority" => return Ok(None),
            _ => return Err("unknown marker"),
        }
        first = fields.next().ok_or("no host names after the marker")?;
    }
    let _algorithm = fields.next().ok_or("no key type")?;
    let encoded = fields.next().ok_or("no key")?;
    let key = russh::keys::parse_public_key_base64(encoded).map_err(|_| "unreadable key")?;
    let hosts = if let Some(hashed) = first.strip_prefix("|1|") {
        let (salt, hash) = hashed.split_once('|').ok_or("malformed hashed host name")?;
        let decode = |text: &str| data_encoding::BASE64.decode(text.as_bytes());
        HostPatterns::Hashed {
            salt: decode(salt).map_err(|_| "malformed hashed host name")?,
            hash: decode(hash).map_err(|_| "malformed hashed host name")?,
        }
    } else {
        HostPatterns::Plain(first.split(',').map(str::to_string).collect())
    };
    Ok(Some(Line {
        revoked,
        hosts,
        key,
    }))
}

fn matches_host(patterns: &HostPatterns, name: &str, host: &str, port: u16) -> bool {
    match patterns {
        HostPatterns::Hashed { salt, hash } => {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Plain(list) => {
            let mut matched = false;
            for pattern in list {
                let (negated, pattern) = match pattern.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, pattern.as_str()),
                };
                let (pattern_host, pattern_port) = split_pattern(pattern);
                if pattern_port == port && wildcard(pattern_host, host) {
                    if negated {
                        return false;
                    }
                    matched = true;
                }
            }
            matched
        }
    }
}

/// `[host]:port` → (host, port); anything else is a host on port 22.
fn split_pattern(pattern: &str) -> (&str, u16) {
    if let Some(rest) = pattern.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once("]:") {
            if let Ok(port) = port.parse() {
                return (host, port);
            }
        }
    }
    (pattern, 22)
}

/// `*` is any run of characters, `?` one character; host names compare case-insensitively.
fn wildcard(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let text: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two throwaway ed25519 host keys, and an ecdsa one.
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFSTky/2iUvYmIVJ4NXtILyeKBJ5sLFoga+MFCxgBnEh";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBnI/qcFY41QbAfBtlXR6uqP9tYIe4ozmauLz7k015Nj";
    const KEY_EC: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJvEjeiHJh0ynFeVpk/HOp5N6BPu6oLa234kZ1YgZV426uE8nQwX0SHkfvYH1mQmhLDxqE4YUApNqA3V3kbB8uQ=";

    fn key(encoded: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(encoded).unwrap()
    }

    fn db(text: &str) -> KnownHosts {
        KnownHosts::parse(Path::new("known_hosts"), text)
    }

    #[test]
    fn a_plain_entry_on_port_22_and_a_bracketed_one_on_another_port() {
        let hosts = db(&format!(
            "example.org ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_B} comment\n"
        ));
        assert_eq!(hosts.check("example.org", 22, &key(KEY_A)), Ok(()));
        assert_eq!(
            hosts.check("example.org", 2222, &key(KEY_A)),
            Err(HostKeyRefusal::Unknown)
        );
        assert_eq!(hosts.check("127.0.0.1", 2222, &key(KEY_B)), Ok(()));
        assert_eq!(
            hosts.check("127.0.0.1", 2222, &key(KEY_A)),
            Err(HostKeyRefusal::Mismatch)
        );
    }

    #[test]
    fn tabs_runs_of_blanks_comments_and_markers_are_read() {
        let hosts = db(&format!(
            "# comment\n\n@cert-authority *.example.org ssh-ed25519 {KEY_B}\n\
             host1,host2\t  ssh-ed25519\t{KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n\
             broken line\n"
        ));
        assert_eq!(hosts.check("host2", 22, &key(KEY_A)), Ok(()));
        // The CA line does not vouch for a plain key, and the revoked key is refused anywhere.
        assert_eq!(
            hosts.check("x.example.org", 22, &key(KEY_A)),
            Err(HostKeyRefusal::Unknown)
        );
        assert_eq!(
            hosts.check("host1", 22, &key(KEY_B)),
            Err(HostKeyRefusal::Revoked)
        );
    }

    #[test]
    fn wildcards_and_negation() {
        let hosts = db(&format!(
            "*.example.org,!bad.example.org ssh-ed25519 {KEY_A}\n"
        ));
        assert_eq!(hosts.check("ci.example.org", 22, &key(KEY_A)), Ok(()));
        assert_eq!(
            hosts.check("bad.example.org", 22, &key(KEY_A)),
            Err(HostKeyRefusal::Unknown)
        );
        assert!(wildcard("h?st*", "HOST-1"));
        assert!(!wildcard("h?st", "hoost"));
    }

    #[test]
    fn hashed_names_match_their_host_only() {
        // salt = 20 zero bytes, hash = HMAC-SHA1(salt, "[127.0.0.1]:2222"), computed here.
        let salt = [0u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}\n",
            data_encoding::BASE64.encode(&salt),
            data_encoding::BASE64.encode(&hash)
        );
        let hosts = db(&line);
        assert_eq!(hosts.check("127.0.0.1", 2222, &key(KEY_A)), Ok(()));
        assert_eq!(
            hosts.check("127.0.0.1", 22, &key(KEY_A)),
            Err(HostKeyRefusal::Unknown)
        );
    }

    #[test]
    fn a_server_offering_a_type_not_on_file_is_a_mismatch_and_the_first_key_per_type_counts() {
        let hosts = db(&format!(
            "h ecdsa-sha2-nistp256 {KEY_EC}\nh ssh-ed25519 {KEY_A}\nh ssh-ed25519 {KEY_B}\n"
        ));
        assert_eq!(hosts.check("h", 22, &key(KEY_A)), Ok(()));
        // Go's knownhosts keeps only the first key of each type for a host.
        assert_eq!(
            hosts.check("h", 22, &key(KEY_B)),
            Err(HostKeyRefusal::Mismatch)
        );
        let only_ec = db(&format!("h ecdsa-sha2-nistp256 {KEY_EC}\n"));
        assert_eq!(
            only_ec.check("h", 22, &key(KEY_A)),
            Err(HostKeyRefusal::Mismatch)
        );
        assert_eq!(hosts.algorithms_for("h", 22).len(), 2);
    }
}
