//! What every executor's `[runners.*]` section of `config.toml` shares: the error that names a
//! bad value, and the value shapes upstream's Go structs accept. Each executor crate owns its
//! raw section (a serde struct) and turns it into its typed config; the loader in `commands`
//! deserializes every section the same way and warns about each key it did not use (the one
//! unknown-key policy of the whole file).

use serde::Deserialize;

/// A value that stops loading: the key as the file spells it (`runners[0].ssh.port`), the value
/// and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {key}: {value:?} ({reason})")]
pub struct InvalidValue {
    /// The key as the file spells it (`runners[0].ssh.port`).
    pub key: String,
    /// The refused value, as text.
    pub value: String,
    /// What was expected instead, shown in parentheses after the value.
    pub reason: String,
}

impl InvalidValue {
    /// `key` holding `value` was refused because of `reason`.
    pub fn new(key: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// A key that takes one string or a list of strings (`pull_policy = "always"` and
/// `pull_policy = ["always"]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string (`key = "always"`).
    One(String),
    /// A list of strings (`key = ["always"]`).
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, one or many.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// A key that upstream stores as a string but that a file may also give as a number
/// (`port = "22"` and `port = 22`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TextOrNumber {
    /// Given as a string (`port = "22"`).
    Text(String),
    /// Given as an integer (`port = 22`).
    Number(i64),
}

impl std::fmt::Display for TextOrNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextOrNumber::Text(text) => f.write_str(text),
            TextOrNumber::Number(number) => write!(f, "{number}"),
        }
    }
}
