//! The runner's `system_id`, persisted in `.runner_system_id` beside `config.toml`.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::Sha256;

const FILE_NAME: &str = ".runner_system_id";

fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

fn valid(id: &str) -> bool {
    (id.starts_with("s_") || id.starts_with("r_"))
        && id.len() == 14
        && id[2..].chars().all(|c| c.is_ascii_alphanumeric())
}

/// `s_` + 12 hex of HMAC-SHA256(key = machine id, "gitlab-runner"), or `r_` + 12 random
/// alphanumerics when the machine has no id.
pub fn generate() -> String {
    match machine_id() {
        Some(machine_id) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(machine_id.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(b"gitlab-runner");
            let digest = mac.finalize().into_bytes();
            let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("s_{}", &hex[..12])
        }
        None => {
            let random: String = rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(12)
                .map(char::from)
                .collect();
            format!("r_{random}")
        }
    }
}

/// Reads the id stored beside `config_path`, creating it on first use.
pub fn load_or_create(config_path: &Path) -> std::io::Result<String> {
    let path = config_path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(FILE_NAME);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if valid(existing) {
            return Ok(existing.to_string());
        }
    }
    let id = generate();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_persisted_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let first = load_or_create(&config).unwrap();
        assert!(valid(&first), "{first}");
        assert_eq!(load_or_create(&config).unwrap(), first);
    }
}
