//! Shell quoting exactly as upstream's `helpers/shell_escape.go` and Go's `%q`.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Literal,
    Quote,
    Hex,
    Escape(&'static str),
}

fn mode(byte: u8) -> Mode {
    match byte {
        0x07 => Mode::Escape("\\a"),
        0x08 => Mode::Escape("\\b"),
        b'\t' => Mode::Escape("\\t"),
        b'\n' => Mode::Escape("\\n"),
        0x0b => Mode::Escape("\\v"),
        0x0c => Mode::Escape("\\f"),
        b'\r' => Mode::Escape("\\r"),
        b'\'' => Mode::Escape("\\'"),
        b'\\' => Mode::Escape("\\\\"),
        b',' | b'-' | b'.' | b'/' | b'@' | b'_' => Mode::Literal,
        b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => Mode::Literal,
        b' ' | b'!' | b'"' | b'#' | b'$' | b'%' | b'&' | b'(' | b')' | b'*' | b'+' | b':'
        | b';' | b'<' | b'=' | b'>' | b'?' | b'[' | b']' | b'^' | b'`' | b'{' | b'|' | b'}'
        | b'~' => Mode::Quote,
        _ => Mode::Hex,
    }
}

/// Bash ANSI-C quoting: bare when only `[A-Za-z0-9,-./@_]`, else `$'...'`.
pub fn shell_escape(input: &str) -> String {
    if input.is_empty() {
        return "''".into();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(input.len() * 2);
    let mut quoted = false;
    for &byte in input.as_bytes() {
        match mode(byte) {
            Mode::Literal => out.push(byte as char),
            Mode::Quote => {
                out.push(byte as char);
                quoted = true;
            }
            Mode::Hex => {
                out.push_str("\\x");
                out.push(HEX[(byte >> 4) as usize] as char);
                out.push(HEX[(byte & 0x0f) as usize] as char);
                quoted = true;
            }
            Mode::Escape(text) => {
                out.push_str(text);
                quoted = true;
            }
        }
    }
    if quoted {
        format!("$'{out}'")
    } else {
        out
    }
}

/// POSIX double-quote escaping (`FF_POSIXLY_CORRECT_ESCAPES`, and always for `sh`).
///
/// Upstream quotes only when a character of its table appears, so a lone `it's` or `a;b` came out
/// bare and broke the script; here any character outside `[A-Za-z0-9,-./@_]` triggers quoting.
pub fn posix_shell_escape(input: &str) -> String {
    if input.is_empty() {
        return "''".into();
    }
    let mut out = String::with_capacity(input.len() + 2);
    let mut quote = false;
    for c in input.chars() {
        match c {
            '`' | '"' | '\\' | '$' => {
                out.push('\\');
                out.push(c);
                quote = true;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, ',' | '-' | '.' | '/' | '@' | '_') => {
                out.push(c);
            }
            other => {
                out.push(other);
                quote = true;
            }
        }
    }
    if quote {
        format!("\"{out}\"")
    } else {
        out
    }
}

/// Go's `%q` (strconv.Quote) for the path arguments upstream formats that way.
pub fn go_quote(input: &str) -> String {
    let mut out = String::with_capacity(input.len() + 2);
    out.push('"');
    for c in input.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

    #[test]
    fn escaping_table() {
        assert_eq!(shell_escape(""), "''");
        assert_eq!(shell_escape("plain/path-1.0@x_y,z"), "plain/path-1.0@x_y,z");
        assert_eq!(shell_escape("a b"), "$'a b'");
        assert_eq!(shell_escape("it's"), "$'it\\'s'");
        assert_eq!(shell_escape("line\nnext"), "$'line\\nnext'");
        assert_eq!(shell_escape("\x1b[0;m"), "$'\\x1b[0;m'");
        assert_eq!(posix_shell_escape("a $b"), "\"a \\$b\"");
        assert_eq!(posix_shell_escape("plain"), "plain");
        assert_eq!(go_quote("/a/\"b\""), "\"/a/\\\"b\\\"\"");
    }

    fn echo_through(shell: &str, quoted: &str) -> Vec<u8> {
        let output = Command::new(shell)
            .arg("-c")
            .arg(format!("printf '%s' {quoted}"))
            .output()
            .expect("run shell");
        assert!(output.status.success(), "{shell} failed on {quoted}");
        output.stdout
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn bash_reads_back_what_was_escaped(input in "[^\\x00]{0,40}") {
            prop_assert_eq!(echo_through("bash", &shell_escape(&input)), input.as_bytes());
        }

        #[test]
        fn posix_shells_read_back_what_was_escaped(input in "[^\\x00]{0,40}") {
            prop_assert_eq!(echo_through("sh", &posix_shell_escape(&input)), input.as_bytes());
        }
    }
}
