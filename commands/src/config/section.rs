//! The one unknown-key policy of `config.toml`: every part of the file (the top level and each
//! executor's or the cache's `[runners.*]` section) is deserialized through `serde_ignored`, and
//! each key that nothing read becomes the same warning naming the key; loading goes on.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::{invalid, ConfigError};

/// The warning for a key of `file` that nothing reads (a typo, or a key of upstream's that this
/// runner does not have yet).
pub(super) fn ignored_key(key: &str, file: &Path) -> String {
    format!(
        "{key} in {}: gitlab-runner-rs does not read this key; ignored",
        file.display()
    )
}

/// The warning for an upstream key this runner keeps (so the file round-trips) but does not
/// act on yet: not a typo, so `lint` does not count it as unknown.
pub(super) fn kept_key(key: &str, file: &Path) -> String {
    format!(
        "{key} in {}: gitlab-runner-rs keeps this key but does not act on it yet",
        file.display()
    )
}

/// The key an [`ignored_key`] warning names, spelled as upstream's `lint` does
/// (`runners.frobnicate`: no list indexes); `None` for any other warning.
pub(super) fn unknown_key_of(warning: &str, file: &Path) -> Option<String> {
    let suffix = format!(
        " in {}: gitlab-runner-rs does not read this key; ignored",
        file.display()
    );
    let key = warning.strip_suffix(&suffix)?;
    let mut spelled = String::with_capacity(key.len());
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => spelled.push(c),
            _ => {}
        }
    }
    Some(spelled)
}

/// `serde_ignored`'s path spelled as the file's keys are in messages: `runners[0].frobnicate`.
pub(super) fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        P::Map { parent, key } => match key_of(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_of(parent)
        }
    }
}

/// A `[runners.*]` section (kept as a TOML value by the raw layer) as the section type `T` of
/// its owner; `key` is the section's key (`runners[0].docker`). A value of the wrong type stops
/// loading, naming the section; a key `T` does not have is a warning, but an empty table is not
/// (`register` writes `[runners.cache.gcs]` and `[runners.cache.azure]` into every entry).
pub(super) fn section<T: DeserializeOwned>(
    key: &str,
    value: &toml::Value,
    file: &Path,
    warnings: &mut Vec<String>,
) -> Result<T, ConfigError> {
    let mut value = value.clone();
    drop_empty_tables(&mut value);
    serde_ignored::deserialize(value, |path| {
        warnings.push(ignored_key(&format!("{key}.{}", key_of(&path)), file));
    })
    .map_err(|error: toml::de::Error| invalid(key, "", error.message()))
}

/// Removes every empty table below `value`, recursively (a table left empty by that too).
fn drop_empty_tables(value: &mut toml::Value) {
    if let toml::Value::Table(table) = value {
        for (_, child) in table.iter_mut() {
            drop_empty_tables(child);
        }
        table.retain(|_, child| !matches!(child, toml::Value::Table(inner) if inner.is_empty()));
    }
}
