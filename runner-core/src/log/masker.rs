//! Streaming masking of secrets, in upstream's order: masked variable values, then sensitive URL
//! query parameters, then token prefixes. Each filter keeps at most a pattern's length of
//! look-ahead, so memory stays bounded and matches that straddle write boundaries are still caught.

/// What a masked secret is replaced with in the log.
pub const MASK: &[u8] = b"[MASKED]";

/// Token prefixes masked by default (`FF_MASK_ALL_DEFAULT_TOKENS` adds all but `glpat-`).
pub const DEFAULT_TOKEN_PREFIXES: &[&str] = &[
    "gloas-",
    "gldt-",
    "glrt-",
    "glcbt-",
    "glrtr-",
    "glptt-",
    "glft-",
    "glimt-",
    "glagent-",
    "glsoat-",
    "glffct-",
    "_gitlab_session=",
    "gltok-",
];

/// At most this many token prefixes are honoured (the shortest ones).
pub const MAX_TOKEN_PREFIXES: usize = 15;

const URL_PARAMS: &[&str] = &[
    "private_token",
    "authenticity_token",
    "rss_token",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// The token prefix set: the job's prefixes, `glpat-`, and the defaults when enabled; trimmed,
/// deduplicated, sorted by length and cut to the first 15.
pub fn token_prefixes(job_prefixes: &[String], mask_all_default_tokens: bool) -> Vec<String> {
    let mut prefixes: Vec<String> = job_prefixes
        .iter()
        .map(|prefix| prefix.trim().to_string())
        .filter(|prefix| !prefix.is_empty())
        .collect();
    prefixes.push("glpat-".into());
    if mask_all_default_tokens {
        prefixes.extend(
            DEFAULT_TOKEN_PREFIXES
                .iter()
                .map(|prefix| prefix.to_string()),
        );
    }
    prefixes.sort();
    prefixes.dedup();
    prefixes.sort_by_key(String::len);
    prefixes.truncate(MAX_TOKEN_PREFIXES);
    prefixes
}

/// What to mask; shared by every stream of a job.
#[derive(Debug, Clone, Default)]
pub struct MaskRules {
    /// Masked values, longest first.
    pub phrases: Vec<Vec<u8>>,
    /// Prefixes whose following token characters are masked; the prefix itself stays.
    pub token_prefixes: Vec<Vec<u8>>,
}

impl MaskRules {
    /// Rules masking every one of `phrases` and the tokens after `token_prefixes`.
    pub fn new(mut phrases: Vec<String>, token_prefixes: Vec<String>) -> Self {
        phrases.sort_by_key(|phrase| std::cmp::Reverse(phrase.len()));
        Self {
            phrases: phrases.into_iter().map(String::into_bytes).collect(),
            token_prefixes: token_prefixes.into_iter().map(String::into_bytes).collect(),
        }
    }
}

/// The three filters chained; one per stream.
#[derive(Debug)]
pub struct Masker {
    phrases: PhraseFilter,
    url: UrlFilter,
    tokens: TokenFilter,
    scratch_a: Vec<u8>,
    scratch_b: Vec<u8>,
}

impl Masker {
    /// A masker for one stream, applying `rules`.
    pub fn new(rules: &MaskRules) -> Self {
        Self {
            phrases: PhraseFilter::new(&rules.phrases),
            url: UrlFilter::default(),
            tokens: TokenFilter::new(&rules.token_prefixes),
            scratch_a: Vec::new(),
            scratch_b: Vec::new(),
        }
    }

    /// Masks `input`, appending what is safe to emit to `out`.
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.scratch_a.clear();
        self.scratch_b.clear();
        self.phrases.write(input, &mut self.scratch_a, false);
        self.url.write(&self.scratch_a, &mut self.scratch_b);
        self.tokens.write(&self.scratch_b, out, false);
    }

    /// Flushes everything held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.scratch_a.clear();
        self.scratch_b.clear();
        self.phrases.write(&[], &mut self.scratch_a, true);
        self.url.write(&self.scratch_a, &mut self.scratch_b);
        self.url.finish(&mut self.scratch_b);
        self.tokens.write(&self.scratch_b, out, true);
    }
}

/// Finds positions where one of a set of patterns may start: `memchr` over the distinct first
/// bytes (a byte table past three), then a check of the second byte against a pair table, so
/// common letters such as the `g` of `glpat-` rarely reach a full comparison.
#[derive(Debug)]
struct Starts {
    first: [bool; 256],
    distinct: Vec<u8>,
    /// One bit per (first, second) byte pair that begins a pattern; a one-byte pattern sets
    /// every pair of its byte.
    pairs: Box<[u64; 1024]>,
}

impl Starts {
    fn new(patterns: &[Vec<u8>]) -> Self {
        let mut starts = Self {
            first: [false; 256],
            distinct: Vec::new(),
            pairs: Box::new([0; 1024]),
        };
        for pattern in patterns {
            let first = pattern[0];
            if !starts.first[first as usize] {
                starts.first[first as usize] = true;
                starts.distinct.push(first);
            }
            match pattern.get(1) {
                Some(second) => starts.set_pair(first, *second),
                None => (0..=255).for_each(|second| starts.set_pair(first, second)),
            }
        }
        starts
    }

    fn set_pair(&mut self, first: u8, second: u8) {
        let bit = (first as usize) << 8 | second as usize;
        self.pairs[bit / 64] |= 1 << (bit % 64);
    }

    fn has_pair(&self, first: u8, second: u8) -> bool {
        let bit = (first as usize) << 8 | second as usize;
        self.pairs[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The first position at or after `from` where a pattern may start.
    fn next(&self, buffer: &[u8], from: usize) -> Option<usize> {
        let mut index = from;
        while index < buffer.len() {
            let haystack = &buffer[index..];
            let found = match self.distinct[..] {
                [] => None,
                [a] => memchr::memchr(a, haystack),
                [a, b] => memchr::memchr2(a, b, haystack),
                [a, b, c] => memchr::memchr3(a, b, c, haystack),
                _ => haystack.iter().position(|byte| self.first[*byte as usize]),
            }?;
            let at = index + found;
            match buffer.get(at + 1) {
                Some(second) if !self.has_pair(buffer[at], *second) => index = at + 1,
                _ => return Some(at),
            }
        }
        None
    }
}

/// Whether `pattern` could still match at a position where only `available` bytes are known.
fn partial_match(available: &[u8], pattern: &[u8]) -> bool {
    available.len() < pattern.len() && pattern.starts_with(available)
}

#[derive(Debug)]
struct PhraseFilter {
    phrases: Vec<Vec<u8>>,
    starts: Starts,
    pending: Vec<u8>,
}

impl PhraseFilter {
    fn new(phrases: &[Vec<u8>]) -> Self {
        let phrases: Vec<Vec<u8>> = phrases.iter().filter(|p| !p.is_empty()).cloned().collect();
        Self {
            starts: Starts::new(&phrases),
            phrases,
            pending: Vec::new(),
        }
    }

    fn write(&mut self, input: &[u8], out: &mut Vec<u8>, finish: bool) {
        if self.phrases.is_empty() {
            out.extend_from_slice(&self.pending);
            self.pending.clear();
            out.extend_from_slice(input);
            return;
        }
        let data: Vec<u8>;
        let buffer: &[u8] = if self.pending.is_empty() {
            input
        } else {
            self.pending.extend_from_slice(input);
            data = std::mem::take(&mut self.pending);
            &data
        };
        let mut emitted = 0;
        let mut index = 0;
        'scan: while index < buffer.len() {
            let Some(at) = self.starts.next(buffer, index) else {
                break;
            };
            index = at;
            let rest = &buffer[index..];
            // Longest phrases come first: a longer phrase that may still match wins over a
            // shorter one that already does, so wait for more input in that case.
            for phrase in &self.phrases {
                if rest.starts_with(phrase) {
                    out.extend_from_slice(&buffer[emitted..index]);
                    out.extend_from_slice(MASK);
                    index += phrase.len();
                    emitted = index;
                    continue 'scan;
                }
                if !finish && partial_match(rest, phrase) {
                    out.extend_from_slice(&buffer[emitted..index]);
                    self.pending = rest.to_vec();
                    return;
                }
            }
            index += 1;
        }
        out.extend_from_slice(&buffer[emitted..]);
    }
}

/// Masks the values of sensitive query parameters, like upstream's `urlsanitizer`: bytes pass
/// straight through and only the parameter value is replaced, so nothing is held back.
#[derive(Debug, Default)]
struct UrlFilter {
    /// `?` or `&` followed by the parameter name read so far.
    key: Vec<u8>,
    masking: bool,
}

const URL_KEY_MAX: usize = 21;

fn is_param_end(byte: u8) -> bool {
    matches!(byte, b'?' | b'&') || byte.is_ascii_whitespace() || byte.is_ascii_control()
}

impl UrlFilter {
    fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        // Fast path: outside a parameter, copy up to the next `?` or `&` in one go.
        while !rest.is_empty() {
            if !self.masking && self.key.is_empty() {
                match memchr::memchr2(b'?', b'&', rest) {
                    None => {
                        out.extend_from_slice(rest);
                        return;
                    }
                    Some(index) => {
                        out.extend_from_slice(&rest[..index]);
                        rest = &rest[index..];
                    }
                }
            }
            let byte = rest[0];
            rest = &rest[1..];
            self.step(byte, out);
        }
    }

    fn step(&mut self, byte: u8, out: &mut Vec<u8>) {
        {
            if self.masking {
                if is_param_end(byte) {
                    self.masking = false;
                    out.extend_from_slice(MASK);
                } else {
                    return;
                }
            }
            out.push(byte);
            match byte {
                b'?' | b'&' => {
                    self.key.clear();
                    self.key.push(byte);
                }
                b'=' if !self.key.is_empty() => {
                    let name = String::from_utf8_lossy(&self.key[1..]).to_ascii_lowercase();
                    if URL_PARAMS.contains(&name.as_str()) {
                        self.masking = true;
                    }
                    self.key.clear();
                }
                _ if !self.key.is_empty() => {
                    if self.key.len() >= URL_KEY_MAX {
                        self.key.clear();
                    } else {
                        self.key.push(byte);
                    }
                }
                _ => {}
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.masking {
            self.masking = false;
            out.extend_from_slice(MASK);
        }
        self.key.clear();
    }
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'=')
}

/// Keeps a token prefix and replaces the run of token characters after it with `[MASKED]`.
#[derive(Debug)]
struct TokenFilter {
    prefixes: Vec<Vec<u8>>,
    starts: Starts,
    pending: Vec<u8>,
    /// Inside the token run after a prefix.
    in_run: bool,
    /// At least one token byte was swallowed in this run.
    swallowed: bool,
}

impl TokenFilter {
    fn new(prefixes: &[Vec<u8>]) -> Self {
        let prefixes: Vec<Vec<u8>> = prefixes.iter().filter(|p| !p.is_empty()).cloned().collect();
        Self {
            starts: Starts::new(&prefixes),
            prefixes,
            pending: Vec::new(),
            in_run: false,
            swallowed: false,
        }
    }

    fn end_run(&mut self, out: &mut Vec<u8>) {
        if self.swallowed {
            out.extend_from_slice(MASK);
        }
        self.in_run = false;
        self.swallowed = false;
    }

    fn write(&mut self, input: &[u8], out: &mut Vec<u8>, finish: bool) {
        let data: Vec<u8>;
        let buffer: &[u8] = if self.pending.is_empty() {
            input
        } else {
            self.pending.extend_from_slice(input);
            data = std::mem::take(&mut self.pending);
            &data
        };
        let mut emitted = 0;
        let mut index = 0;
        'scan: while index < buffer.len() {
            if self.in_run {
                if is_token_byte(buffer[index]) {
                    self.swallowed = true;
                    index += 1;
                    emitted = index;
                    continue;
                }
                self.end_run(out);
            }
            let Some(at) = self.starts.next(buffer, index) else {
                break;
            };
            index = at;
            let rest = &buffer[index..];
            for prefix in &self.prefixes {
                if rest.starts_with(prefix) {
                    index += prefix.len();
                    out.extend_from_slice(&buffer[emitted..index]);
                    emitted = index;
                    self.in_run = true;
                    continue 'scan;
                }
            }
            if !finish
                && self
                    .prefixes
                    .iter()
                    .any(|prefix| partial_match(rest, prefix))
            {
                out.extend_from_slice(&buffer[emitted..index]);
                self.pending = rest.to_vec();
                return;
            }
            index += 1;
        }
        out.extend_from_slice(&buffer[emitted..]);
        if finish && self.in_run {
            self.end_run(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> MaskRules {
        MaskRules::new(
            vec!["secret".into(), "secret-longer".into(), "abc".into()],
            token_prefixes(&["custom-".to_string()], true),
        )
    }

    fn mask_chunks(rules: &MaskRules, chunks: &[&[u8]]) -> Vec<u8> {
        let mut masker = Masker::new(rules);
        let mut out = Vec::new();
        for chunk in chunks {
            masker.write(chunk, &mut out);
        }
        masker.finish(&mut out);
        out
    }

    fn mask(text: &str) -> String {
        String::from_utf8(mask_chunks(&rules(), &[text.as_bytes()])).unwrap()
    }

    #[test]
    fn masks_phrases_longest_first() {
        assert_eq!(
            mask("x secret-longer y secret z"),
            "x [MASKED] y [MASKED] z"
        );
        assert_eq!(mask("secret-long"), "[MASKED]-long");
        assert_eq!(mask("MASKED_KEY=abc"), "MASKED_KEY=[MASKED]");
    }

    #[test]
    fn masks_url_parameters() {
        assert_eq!(
            mask("GET /x?private_token=abc123&a=1 HTTP"),
            "GET /x?private_token=[MASKED]&a=1 HTTP"
        );
        assert_eq!(
            mask("https://s3/x?X-Amz-Credential=AKIA%2F&X-Amz-Signature=ff"),
            "https://s3/x?X-Amz-Credential=[MASKED]&X-Amz-Signature=[MASKED]"
        );
    }

    #[test]
    fn masks_token_prefixes() {
        assert_eq!(
            mask("token glpat-1234_ABC.x=y end"),
            "token glpat-[MASKED] end"
        );
        assert_eq!(mask("glrt-t1_zzz"), "glrt-[MASKED]");
        assert_eq!(mask("custom-xyz!"), "custom-[MASKED]!");
        assert_eq!(mask("glpat- alone"), "glpat- alone");
    }

    #[test]
    fn prefix_set_is_capped_to_the_shortest_fifteen() {
        let many: Vec<String> = (0..20).map(|i| format!("p{i:02}-")).collect();
        let prefixes = token_prefixes(&many, true);
        assert_eq!(prefixes.len(), MAX_TOKEN_PREFIXES);
        assert!(prefixes
            .windows(2)
            .all(|pair| pair[0].len() <= pair[1].len()));
    }

    fn reference(text: &[u8]) -> Vec<u8> {
        mask_chunks(&rules(), &[text])
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_output(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("secret".to_string()),
                    Just("secret-longer".to_string()),
                    Just("glpat-".to_string()),
                    Just("?private_token=".to_string()),
                    Just("&".to_string()),
                    Just(" ".to_string()),
                    "[a-z_=.-]{0,6}",
                ],
                0..20,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let text = parts.concat().into_bytes();
            let expected = reference(&text);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&text[start..cut]);
                start = cut;
            }
            chunks.push(&text[start..]);
            let actual = mask_chunks(&rules(), &chunks);
            prop_assert_eq!(actual, expected);
        }

        #[test]
        fn a_masked_value_never_survives(prefix in "[ -~]{0,20}", suffix in "[ -~]{0,20}", split in 0usize..60) {
            let text = format!("{prefix}secret-longer{suffix}");
            let bytes = text.as_bytes();
            let split = split.min(bytes.len());
            let out = mask_chunks(&rules(), &[&bytes[..split], &bytes[split..]]);
            let out = String::from_utf8(out).unwrap();
            prop_assert!(!out.contains("secret-longer"));
        }
    }
}
