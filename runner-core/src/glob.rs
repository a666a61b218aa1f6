//! Path patterns with upstream's (doublestar) semantics on `/`-separated paths: `*` and `?`
//! within a segment, `[...]` classes, `{a,b}` alternatives and `**` for any number of whole
//! segments. Pure matching, shared by the artifact and cache file choosers and the Docker
//! executor's `allowed_images` / `allowed_services`.

/// Whether `text` has glob syntax.
pub fn has_meta(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

/// Splits a pattern into the directory part before its first segment with glob syntax and the
/// rest: `a/b/*.txt` → (`a/b`, `*.txt`); `*.txt` → (`.`, `*.txt`).
pub fn split_pattern(pattern: &str) -> (String, String) {
    let segments: Vec<&str> = pattern.split('/').collect();
    match segments.iter().position(|segment| has_meta(segment)) {
        None => (pattern.to_string(), String::new()),
        Some(0) => (".".into(), pattern.to_string()),
        Some(index) => (segments[..index].join("/"), segments[index..].join("/")),
    }
}

/// Expands `{a,b}` alternatives into plain patterns.
fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let mut depth = 0;
    let mut close = None;
    let mut splits = Vec::new();
    for (index, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + index);
                    break;
                }
            }
            ',' if depth == 1 => splits.push(open + index),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![pattern.to_string()];
    };
    let mut bounds = vec![open];
    bounds.extend(splits);
    bounds.push(close);
    let suffix = &pattern[close + 1..];
    let mut out = Vec::new();
    for pair in bounds.windows(2) {
        let alternative = &pattern[pair[0] + 1..pair[1]];
        for expanded in expand_braces(&format!("{}{alternative}{suffix}", &pattern[..open])) {
            out.push(expanded);
        }
    }
    out
}

fn match_class(class: &str, c: char) -> Option<bool> {
    let (negated, body) = match class.strip_prefix(['!', '^']) {
        Some(rest) => (true, rest),
        None => (false, class),
    };
    let chars: Vec<char> = body.chars().collect();
    let mut index = 0;
    let mut found = false;
    while index < chars.len() {
        if index + 2 < chars.len() && chars[index + 1] == '-' {
            if chars[index] <= c && c <= chars[index + 2] {
                found = true;
            }
            index += 3;
        } else {
            if chars[index] == c {
                found = true;
            }
            index += 1;
        }
    }
    Some(found != negated)
}

/// Matches one segment against one pattern segment (no `/` in either).
fn match_segment(pattern: &[char], text: &[char]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some('*') => (0..=text.len()).any(|skip| match_segment(&pattern[1..], &text[skip..])),
        Some('?') => !text.is_empty() && match_segment(&pattern[1..], &text[1..]),
        Some('[') => {
            let Some(end) = pattern.iter().skip(1).position(|c| *c == ']') else {
                return text.first() == Some(&'[') && match_segment(&pattern[1..], &text[1..]);
            };
            let class: String = pattern[1..end + 1].iter().collect();
            match text.first() {
                Some(c) if match_class(&class, *c) == Some(true) => {
                    match_segment(&pattern[end + 2..], &text[1..])
                }
                _ => false,
            }
        }
        Some('\\') if pattern.len() > 1 => {
            text.first() == Some(&pattern[1]) && match_segment(&pattern[2..], &text[1..])
        }
        Some(c) => text.first() == Some(c) && match_segment(&pattern[1..], &text[1..]),
    }
}

fn match_segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.first() {
        None => path.is_empty(),
        Some(&"**") => (0..=path.len()).any(|skip| match_segments(&pattern[1..], &path[skip..])),
        Some(segment) => {
            let Some(first) = path.first() else {
                return false;
            };
            let pattern_chars: Vec<char> = segment.chars().collect();
            let text_chars: Vec<char> = first.chars().collect();
            match_segment(&pattern_chars, &text_chars) && match_segments(&pattern[1..], &path[1..])
        }
    }
}

/// Whether the relative `path` matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let path = path.trim_start_matches("./");
    expand_braces(pattern).iter().any(|pattern| {
        let pattern = pattern.trim_start_matches("./");
        let pattern_segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
        let path_segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match_segments(&pattern_segments, &path_segments)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doublestar_semantics() {
        assert!(matches("*.txt", "a.txt"));
        assert!(!matches("*.txt", "dir/a.txt"));
        assert!(matches("**/*.txt", "a.txt"));
        assert!(matches("**/*.txt", "dir/sub/a.txt"));
        assert!(matches("dist/**", "dist/a/b"));
        assert!(matches("dist/**", "dist"));
        assert!(matches("build/{bin,lib}/*", "build/lib/x.so"));
        assert!(!matches("build/{bin,lib}/*", "build/doc/x"));
        assert!(matches("file?.[a-c]", "file1.b"));
        assert!(!matches("file?.[!a-c]", "file1.b"));
        assert!(matches("./out/*.log", "out/x.log"));
    }

    #[test]
    fn splits_patterns_at_the_first_glob_segment() {
        assert_eq!(split_pattern("a/b/*.txt"), ("a/b".into(), "*.txt".into()));
        assert_eq!(split_pattern("**/x"), (".".into(), "**/x".into()));
        assert_eq!(
            split_pattern("plain/path"),
            ("plain/path".into(), String::new())
        );
    }
}
