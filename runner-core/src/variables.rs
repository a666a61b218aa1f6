//! Job variables: the list GitLab sends, the runner's own additions, and `$VAR` expansion.

use serde::{Deserialize, Serialize};

use crate::job::nullable;

/// One variable as GitLab sends it (`[{key, value, public, file, masked, raw}]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobVariable {
    /// The variable's name.
    #[serde(default, deserialize_with = "nullable")]
    pub key: String,
    /// Its value as sent; for a file variable, the file's content.
    #[serde(default, deserialize_with = "nullable")]
    pub value: String,
    /// Not secret: services get it too.
    #[serde(default, deserialize_with = "nullable")]
    pub public: bool,
    /// A file variable: the value is written to a file, and the variable holds its path.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub file: bool,
    /// The value is masked in the job log.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub masked: bool,
    /// The value is used as it is, without `$VAR` expansion.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub raw: bool,
    /// Set for variables the runner adds itself (not serialized to GitLab).
    #[serde(skip)]
    pub internal: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl JobVariable {
    /// A public variable `key` = `value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            public: true,
            ..Self::default()
        }
    }

    /// A public variable the runner adds itself (`CI_BUILDS_DIR`, ...).
    pub fn internal(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            internal: true,
            ..Self::new(key, value)
        }
    }

    /// The same variable as a file variable.
    pub fn file(mut self) -> Self {
        self.file = true;
        self
    }

    /// The same variable, masked in the log.
    pub fn masked(mut self) -> Self {
        self.masked = true;
        self
    }

    /// The same variable, exempt from expansion.
    pub fn raw(mut self) -> Self {
        self.raw = true;
        self
    }
}

/// An ordered variable list; on lookup the last definition of a key wins.
///
/// Once the build knows its temporary directory (`<project dir>.tmp`), references to a file variable
/// expand to the file's path there, as upstream does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables(Vec<JobVariable>, Option<String>);

impl Variables {
    /// A list in definition order; file variables expand to their content until
    /// [`Self::with_file_dir`] is called.
    pub fn new(list: Vec<JobVariable>) -> Self {
        Self(list, None)
    }

    /// Makes file variables expand to `<dir>/<KEY>`.
    pub fn with_file_dir(mut self, dir: impl Into<String>) -> Self {
        self.1 = Some(dir.into());
        self
    }

    /// The directory file variables are written to, once set.
    pub fn file_dir(&self) -> Option<&str> {
        self.1.as_deref()
    }

    /// Adds a definition after the others, so it wins on lookup.
    pub fn push(&mut self, variable: JobVariable) {
        self.0.push(variable);
    }

    /// Adds definitions after the others, in order.
    pub fn extend(&mut self, other: impl IntoIterator<Item = JobVariable>) {
        self.0.extend(other);
    }

    /// Every definition in order, duplicates included.
    pub fn iter(&self) -> std::slice::Iter<'_, JobVariable> {
        self.0.iter()
    }

    /// How many definitions there are, duplicates included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no definitions.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last definition of `key`.
    pub fn find(&self, key: &str) -> Option<&JobVariable> {
        self.0.iter().rev().find(|variable| variable.key == key)
    }

    /// The raw (unexpanded) value of `key`, or "" when undefined.
    pub fn get(&self, key: &str) -> &str {
        self.find(key)
            .map(|variable| variable.value.as_str())
            .unwrap_or("")
    }

    /// The value of `key` expanded against this list.
    pub fn value(&self, key: &str) -> String {
        match self.find(key) {
            Some(variable) if variable.raw => variable.value.clone(),
            Some(variable) => self.expand(&variable.value),
            None => String::new(),
        }
    }

    /// Parses `key` as a boolean like Go's `strconv.ParseBool`; `None` when unset or not a bool.
    pub fn bool(&self, key: &str) -> Option<bool> {
        parse_bool(&self.value(key))
    }

    /// Expands `$VAR`, `${VAR}` and `$$` in `text` like upstream (`os.Expand` semantics): unknown
    /// names and the shell specials expand to nothing; a `$` not followed by a name stays.
    pub fn expand(&self, text: &str) -> String {
        expand_with(text, |name| match name {
            "$" => Some("$".to_string()),
            _ => self
                .find(name)
                .map(|variable| match (&self.1, variable.file) {
                    (Some(dir), true) => format!("{dir}/{}", variable.key),
                    _ => variable.value.clone(),
                }),
        })
    }

    /// Expands every non-raw value against the whole list (one pass, as upstream).
    pub fn expanded(&self) -> Variables {
        Variables(
            self.0
                .iter()
                .map(|variable| {
                    if variable.raw {
                        variable.clone()
                    } else {
                        JobVariable {
                            value: self.expand(&variable.value),
                            ..variable.clone()
                        }
                    }
                })
                .collect(),
            self.1.clone(),
        )
    }

    /// The values to mask in the log: each masked variable's value as the job sees it, expanded
    /// against the whole list unless it is raw (upstream masks `Expand().Masked()`), and also as
    /// written, since a script can print it unexpanded; trimmed, deduplicated, empty ones
    /// dropped, longest first.
    pub fn masked_values(&self) -> Vec<String> {
        let expanded = self.expanded();
        let mut values: Vec<String> = self
            .0
            .iter()
            .chain(expanded.0.iter())
            .filter(|variable| variable.masked)
            .map(|variable| variable.value.trim().to_string())
            .filter(|value| !value.is_empty())
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        values
    }

    /// The definitions, in order.
    pub fn into_vec(self) -> Vec<JobVariable> {
        self.0
    }
}

impl FromIterator<JobVariable> for Variables {
    fn from_iter<I: IntoIterator<Item = JobVariable>>(iter: I) -> Self {
        Self(iter.into_iter().collect(), None)
    }
}

impl<'a> IntoIterator for &'a Variables {
    type Item = &'a JobVariable;
    type IntoIter = std::slice::Iter<'a, JobVariable>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`: a name a shell can export and a file variable can be named
/// after (GitLab's own rule also allows a leading digit, which no shell exports).
pub fn is_variable_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The `[[runners]] environment` entries (`KEY=VALUE`) as variables; an entry without `=`
/// is left out.
pub fn environment_variables(entries: &[String]) -> Vec<JobVariable> {
    entries
        .iter()
        .filter_map(|entry| entry.split_once('='))
        .map(|(key, value)| JobVariable::internal(key, value))
        .collect()
}

/// What a job's feature flags, settings and masking are read from: the runner's `environment`
/// entries first and the job's variables after them, so a job variable wins and a masked value
/// that refers to an entry is masked as the job sees it.
pub fn runner_and_job_variables(environment: &[String], job: &[JobVariable]) -> Variables {
    let mut variables = Variables::new(environment_variables(environment));
    variables.extend(job.iter().cloned());
    variables
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn is_special(byte: u8) -> bool {
    matches!(
        byte,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_name_byte(byte: u8) -> bool {
    byte == b'_' || byte.is_ascii_alphanumeric()
}

/// Shell-style expansion with Go `os.Expand` rules; `lookup` returns `None` for undefined names.
pub fn expand_with(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'$' && index + 1 < bytes.len() {
            out.push_str(&text[start..index]);
            let (name, width) = shell_name(&text[index + 1..]);
            if name.is_empty() && width > 0 {
                // Bad syntax such as an unterminated `${`: the characters are dropped.
            } else if name.is_empty() {
                out.push('$');
            } else {
                let special = name.len() == 1 && is_special(name.as_bytes()[0]) && name != "$";
                if !special {
                    if let Some(value) = lookup(name) {
                        out.push_str(&value);
                    }
                } else if name == "$" {
                    out.push('$');
                }
            }
            index += 1 + width;
            start = index;
        } else {
            index += 1;
        }
    }
    out.push_str(&text[start..]);
    out
}

fn shell_name(text: &str) -> (&str, usize) {
    let bytes = text.as_bytes();
    if bytes[0] == b'{' {
        if bytes.len() > 2 && is_special(bytes[1]) && bytes[2] == b'}' {
            return (&text[1..2], 3);
        }
        for (offset, byte) in bytes.iter().enumerate().skip(1) {
            if *byte == b'}' {
                if offset == 1 {
                    return ("", 2);
                }
                return (&text[1..offset], offset + 1);
            }
        }
        return ("", 1);
    }
    if is_special(bytes[0]) {
        return (&text[0..1], 1);
    }
    let width = bytes.iter().take_while(|byte| is_name_byte(**byte)).count();
    (&text[..width], width)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Variables {
        Variables::new(vec![
            JobVariable::new("A", "alpha"),
            JobVariable::new("B", "$A-beta"),
            JobVariable::new("RAW", "$A").raw(),
            JobVariable::new("A", "again"),
        ])
    }

    #[test]
    fn expansion_follows_go_rules() {
        let variables = list();
        assert_eq!(variables.expand("$A"), "again");
        assert_eq!(variables.expand("${A}x"), "againx");
        assert_eq!(variables.expand("$$A"), "$A");
        assert_eq!(variables.expand("$UNDEFINED."), ".");
        assert_eq!(variables.expand("cost: 5$"), "cost: 5$");
        assert_eq!(variables.expand("a $ b"), "a $ b");
        assert_eq!(variables.expand("$1$*$#x"), "x");
        assert_eq!(variables.expand("${}"), "");
        assert_eq!(variables.expand("${A"), "A");
    }

    #[test]
    fn last_definition_wins_and_raw_is_not_expanded() {
        let variables = list();
        assert_eq!(variables.value("B"), "again-beta");
        assert_eq!(variables.value("RAW"), "$A");
        assert_eq!(variables.expanded().get("B"), "again-beta");
    }

    #[test]
    fn file_variables_expand_to_their_path_once_the_directory_is_known() {
        let variables = Variables::new(vec![
            JobVariable::new("CERT", "contents").file(),
            JobVariable::new("USE", "--cert=$CERT"),
        ]);
        assert_eq!(variables.value("USE"), "--cert=contents");
        let variables = variables.with_file_dir("/b/p.tmp");
        assert_eq!(variables.value("USE"), "--cert=/b/p.tmp/CERT");
    }

    #[test]
    fn masked_values_are_trimmed_deduplicated_longest_first() {
        let variables = Variables::new(vec![
            JobVariable::new("X", " abc ").masked(),
            JobVariable::new("Y", "abcdef").masked(),
            JobVariable::new("Z", "abc").masked(),
            JobVariable::new("E", "  ").masked(),
        ]);
        assert_eq!(variables.masked_values(), vec!["abcdef", "abc"]);
    }

    #[test]
    fn masked_values_include_what_the_job_sees_after_expansion() {
        let variables = Variables::new(vec![
            JobVariable::new("BASE", "basevalue123"),
            JobVariable::new("SECRET", "$BASE-suffix").masked(),
            JobVariable::new("QUOTED", "qu'o\"te`x$y").masked(),
            JobVariable::new("RAW", "$BASE-raw").masked().raw(),
        ]);
        assert_eq!(
            variables.masked_values(),
            vec![
                "basevalue123-suffix",
                "$BASE-suffix",
                "qu'o\"te`x$y",
                "$BASE-raw",
                "qu'o\"te`x",
            ]
        );
    }
}
