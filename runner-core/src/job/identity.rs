//! Finding a job's `id` and `token` in a payload that does not parse, so the job can still be
//! failed instead of staying `running` in GitLab.
//!
//! The scan reads only the top-level object and skips every nested value with a counter, not
//! with recursion: a payload nested deeper than serde_json's limit (GitLab's `inputs`,
//! `executor_opts` or `features.tracing` can be) is still identified, and no input can exhaust
//! the stack.

/// What could be recovered of a job's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredIdentity {
    /// The job's `id`; `None` when missing or not an integer.
    pub id: Option<i64>,
    /// The job's `token`; `None` when missing or not a string.
    pub token: Option<String>,
}

/// Scans the top-level object of `bytes` for `id` (an integer, or an integer written as a
/// string) and `token` (a string). A later duplicate key wins, as in Go's decoder.
pub fn recover_identity(bytes: &[u8]) -> RecoveredIdentity {
    let mut identity = RecoveredIdentity::default();
    let mut scanner = Scanner { bytes, at: 0 };
    scanner.skip_whitespace();
    if !scanner.eat(b'{') {
        return identity;
    }
    loop {
        scanner.skip_whitespace();
        let Some(key) = scanner.string() else {
            return identity;
        };
        scanner.skip_whitespace();
        if !scanner.eat(b':') {
            return identity;
        }
        scanner.skip_whitespace();
        let start = scanner.at;
        if !scanner.skip_value() {
            return identity;
        }
        let raw = &bytes[start..scanner.at];
        match key.as_str() {
            "id" => identity.id = parse_id(raw),
            "token" => identity.token = serde_json::from_slice::<String>(raw).ok(),
            _ => {}
        }
        scanner.skip_whitespace();
        if !scanner.eat(b',') {
            return identity;
        }
    }
}

fn parse_id(raw: &[u8]) -> Option<i64> {
    if let Ok(id) = serde_json::from_slice::<i64>(raw) {
        return Some(id);
    }
    let text = serde_json::from_slice::<String>(raw).ok()?;
    text.trim().parse().ok()
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips a string starting at the current `"`; returns false when it never ends.
    fn skip_string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'"' => return true,
                b'\\' => self.at += 1,
                _ => {}
            }
        }
        false
    }

    fn string(&mut self) -> Option<String> {
        let start = self.at;
        if !self.skip_string() {
            return None;
        }
        serde_json::from_slice(&self.bytes[start..self.at]).ok()
    }

    /// Skips one value of any depth; returns false when the input ends inside it.
    fn skip_value(&mut self) -> bool {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while let Some(byte) = self.peek() {
                    match byte {
                        b'"' => {
                            if !self.skip_string() {
                                return false;
                            }
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return true;
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
                false
            }
            Some(_) => {
                // A number, true, false or null: up to the next delimiter.
                let start = self.at;
                while let Some(byte) = self.peek() {
                    if matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
                self.at > start
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(levels: usize) -> String {
        format!(
            "{}{}",
            "{\"x\":".repeat(levels),
            "1".to_string() + &"}".repeat(levels)
        )
    }

    #[test]
    fn finds_id_and_token_past_any_nesting() {
        let payload = format!(
            r#"{{"features": {{"tracing": {}}}, "id": 1001, "token": "glcbt-abc\"d", "x": [1, "]", {{}}]}}"#,
            deep(50_000)
        );
        assert!(crate::job::JobResponse::from_json(payload.as_bytes()).is_err());
        let identity = recover_identity(payload.as_bytes());
        assert_eq!(identity.id, Some(1001));
        assert_eq!(identity.token.as_deref(), Some("glcbt-abc\"d"));
    }

    #[test]
    fn an_id_written_as_a_string_is_recovered_and_a_fraction_is_not() {
        let identity = recover_identity(br#"{"id": "1001", "token": "t"}"#);
        assert_eq!(identity.id, Some(1001));
        assert_eq!(recover_identity(br#"{"id": 1.5, "token": "t"}"#).id, None);
        assert_eq!(recover_identity(br#"{"id": "x1", "token": "t"}"#).id, None);
    }

    #[test]
    fn broken_input_recovers_what_came_before_the_break() {
        let identity = recover_identity(br#"{"id": 7, "token": "t", "steps": [{"#);
        assert_eq!(identity.id, Some(7));
        assert_eq!(identity.token.as_deref(), Some("t"));
        assert_eq!(recover_identity(b"[1, 2]"), RecoveredIdentity::default());
        assert_eq!(recover_identity(b""), RecoveredIdentity::default());
        assert_eq!(recover_identity(br#"{"id": "#).id, None);
    }
}
