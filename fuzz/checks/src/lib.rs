//! The properties the fuzz targets check, one `check_<target>(data)` per target in
//! `fuzz/fuzz_targets/`, each panicking when its property is violated.
//!
//! The same functions back two drivers: the libFuzzer targets (`fuzz/`, nightly, built with
//! `cargo fuzz`, see `scripts/fuzz.sh`) and `tests/corpus.rs`, which replays every file of the
//! committed corpora in `fuzz/corpus/<target>/` on the stable toolchain in every normal test run.
//! So this crate must not depend on `libfuzzer-sys` (nor on anything nightly-only).
//!
//! | target | input | property |
//! | --- | --- | --- |
//! | `go_duration` | a Go duration string | no panic; within Go's range; formats and re-parses |
//! | `job_payload` | a job payload (JSON) | no panic; identity recovery agrees with the parser |
//! | `config_toml` | a `config.toml` | no panic |
//! | `masker` | phrases + a log stream | chunking changes nothing; no masked phrase survives |
//! | `archive_extract` | a zip or gzip archive | no panic; nothing outside the root changes; no setuid |

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use runner_core::job::{recover_identity, JobResponse};
use runner_core::log::{token_prefixes, MaskRules, Masker, MASK};
use runner_core::settings::{format_go_duration, parse_go_duration, parse_signed_go_duration};

/// Go's `time.Duration` maximum: `1<<63 - 1` nanoseconds (about 292 years).
const GO_MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Go's `time.Duration` minimum is `-1<<63` ns, so a negative magnitude may be one more.
const GO_MAX_NEGATIVE_MAGNITUDE: Duration = Duration::from_nanos(1 << 63);

/// `parse_go_duration` and `parse_signed_go_duration` never panic and stay within Go's
/// `time.Duration` range; a positive value reads the same through both; what
/// `format_go_duration` prints parses back to (nearly) the same duration.
pub fn check_go_duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let signed = parse_signed_go_duration(text);
    if let Some((negative, magnitude)) = signed {
        let limit = if negative {
            GO_MAX_NEGATIVE_MAGNITUDE
        } else {
            GO_MAX_DURATION
        };
        assert!(
            magnitude <= limit,
            "parse_signed_go_duration({text:?}) = {signed:?}, past Go's range"
        );
    }
    let parsed = parse_go_duration(text);
    // Without surrounding whitespace (which only parse_go_duration trims) and without a minus
    // sign, both functions read the same text the same way.
    if text.trim() == text && !text.starts_with('-') {
        assert_eq!(
            signed,
            parsed.map(|duration| (false, duration)),
            "parse_signed_go_duration and parse_go_duration disagree on {text:?}"
        );
    }
    let Some(duration) = parsed else {
        return;
    };
    assert!(
        duration <= GO_MAX_DURATION,
        "parse_go_duration({text:?}) = {duration:?}, past Go's maximum duration {GO_MAX_DURATION:?}"
    );
    let formatted = format_go_duration(duration);
    let Some(again) = parse_go_duration(&formatted) else {
        panic!("{text:?} parsed to {duration:?}, formatted as {formatted:?}, which does not parse");
    };
    // The formatter prints at most nanosecond digits, but goes through f64 for the seconds.
    let tolerance = if duration >= Duration::from_secs(1) {
        Duration::from_millis(1)
    } else {
        Duration::from_micros(1)
    };
    let difference = again.abs_diff(duration);
    assert!(
        difference <= tolerance,
        "{text:?} parsed to {duration:?}, formatted as {formatted:?}, parsed back to {again:?}"
    );
}

/// `JobResponse::from_json` and `recover_identity` never panic, and when the payload parses
/// as a JSON object, the identity the scanner recovers is the job's: the same `id` (absent or
/// `null` both mean 0 to the parser and `None` to the scanner) and the same `token`.
///
/// A duplicate top-level `id` or `token` never reaches the comparison: serde's derived
/// `Deserialize` refuses duplicate fields, so `from_json` fails on it. A top-level array is
/// skipped: serde reads a struct from a sequence positionally, the scanner only reads objects.
pub fn check_job_payload(data: &[u8]) {
    let identity = recover_identity(data);
    let Ok(job) = JobResponse::from_json(data) else {
        return;
    };
    let first = data
        .iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return;
    }
    match identity.id {
        Some(id) => assert_eq!(
            id, job.id,
            "recover_identity found id {id}, from_json parsed id {}",
            job.id
        ),
        None => assert_eq!(
            job.id, 0,
            "recover_identity found no id, from_json parsed id {}",
            job.id
        ),
    }
    let token = job.token.expose();
    match &identity.token {
        Some(recovered) => assert!(
            recovered == token,
            "recover_identity found a token that differs from the parsed one"
        ),
        None => assert!(
            token.is_empty(),
            "recover_identity found no token, from_json parsed a non-empty one"
        ),
    }
}

/// Where the config seems to live; `Config::parse` only uses it in messages and to anchor
/// relative TLS paths, it reads and writes nothing.
const CONFIG_PATH: &str = "/nonexistent/gitlab-runner-rs-fuzz/config.toml";

/// `Config::parse` never panics on UTF-8 text (any input is a config or an error), nor does
/// building the runner's state from a config it accepts.
pub fn check_config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A config that loads must also become the runner's state (workers, clients,
    // semaphores) without a panic: that is where a huge `concurrent` used to crash a reload.
    if let Ok(config) = gitlab_runner_rs::config::Config::parse(Path::new(CONFIG_PATH), text) {
        let _ = gitlab_runner_rs::run::check_state(&config);
    }
}

/// One masker input: phrases to mask and the log stream.
struct MaskerInput<'a> {
    phrases: Vec<String>,
    stream: &'a [u8],
}

/// First byte: the number of phrases (`% 4`); then that many phrases, each ended by a 0x00
/// byte; the rest is the stream. Phrases shorter than 3 bytes are dropped (the runner does not
/// mask values that short either).
fn split_masker_input(data: &[u8]) -> MaskerInput<'_> {
    let Some((&count, mut rest)) = data.split_first() else {
        return MaskerInput {
            phrases: Vec::new(),
            stream: &[],
        };
    };
    let mut phrases = Vec::new();
    for _ in 0..count % 4 {
        let end = rest
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(rest.len());
        let phrase = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        if phrase.len() >= 3 {
            phrases.push(String::from_utf8_lossy(phrase).into_owned());
        }
    }
    MaskerInput {
        phrases,
        stream: rest,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The masker gives the same output however the stream is cut into writes (it promises to
/// catch matches that straddle write boundaries), and no masked phrase survives in the output.
///
/// The second property is only checked when every phrase is plain ASCII alphanumerics and none
/// occurs inside `[MASKED]` itself: then no phrase can overlap a token prefix, a URL parameter
/// or the brackets of an inserted `[MASKED]`, so any occurrence in the output is a real miss.
pub fn check_masker(data: &[u8]) {
    let input = split_masker_input(data);
    let rules = MaskRules::new(input.phrases.clone(), token_prefixes(&[], true));

    let mut whole = Vec::new();
    let mut masker = Masker::new(&rules);
    masker.write(input.stream, &mut whole);
    masker.finish(&mut whole);

    // Chunk sizes 1..=17 taken from the stream's own bytes, cycling.
    let mut chunked = Vec::new();
    let mut masker = Masker::new(&rules);
    let mut at = 0;
    let mut sizes = input.stream.iter().cycle();
    while at < input.stream.len() {
        let size = usize::from(*sizes.next().unwrap_or(&0) % 17) + 1;
        let end = (at + size).min(input.stream.len());
        masker.write(&input.stream[at..end], &mut chunked);
        at = end;
    }
    masker.finish(&mut chunked);
    assert!(
        whole == chunked,
        "one write gave {:?}, chunked writes gave {:?}",
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&chunked)
    );

    let plain = input.phrases.iter().all(|phrase| {
        phrase.bytes().all(|byte| byte.is_ascii_alphanumeric())
            && !contains(MASK, phrase.as_bytes())
    });
    if plain {
        for phrase in &input.phrases {
            assert!(
                !contains(&whole, phrase.as_bytes()),
                "phrase {phrase:?} survives masking: {:?}",
                String::from_utf8_lossy(&whole)
            );
        }
    }
}

/// Inputs larger than this are skipped, to bound the work of one run.
const MAX_ARCHIVE: usize = 1 << 20;

const KEEP_CONTENT: &[u8] = b"outside the extraction root; must stay as it is\n";

/// The modification time of `outside` and `outside/keep` (2001-09-09).
fn keep_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)
}

/// `archive::extract` never panics, and whatever the archive holds, it writes only under the
/// extraction root: a directory beside the root keeps its mode and its one file, nothing new
/// appears beside the root, and nothing under the root is setuid, setgid or sticky.
pub fn check_archive_extract(data: &[u8]) {
    if data.len() > MAX_ARCHIVE {
        return;
    }
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let base = scratch.path();
    let archive = base.join("archive");
    let root = base.join("root");
    let outside = base.join("outside");
    std::fs::write(&archive, data).expect("writing the archive");
    std::fs::create_dir(&root).expect("creating the root");
    std::fs::create_dir(&outside).expect("creating the outside directory");
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700))
        .expect("setting the outside directory's mode");
    let keep = outside.join("keep");
    std::fs::write(&keep, KEEP_CONTENT).expect("writing the kept file");
    std::fs::set_permissions(&keep, std::fs::Permissions::from_mode(0o600))
        .expect("setting the kept file's mode");
    // Known times, so a time written through a symlink shows as well.
    for path in [&keep, &outside] {
        std::fs::File::open(path)
            .and_then(|file| file.set_modified(keep_time()))
            .expect("setting a time outside the root");
    }

    let result = runner_helpers::archive::extract(&archive, &root);

    let names = |directory: &Path| -> BTreeSet<String> {
        std::fs::read_dir(directory)
            .unwrap_or_else(|error| panic!("listing {}: {error} ({result:?})", directory.display()))
            .map(|entry| {
                entry
                    .expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let beside: BTreeSet<String> = ["archive", "outside", "root"].map(String::from).into();
    assert_eq!(
        names(base),
        beside,
        "extraction created something beside the root ({result:?})"
    );
    let metadata = outside
        .symlink_metadata()
        .expect("the outside directory's metadata");
    assert!(
        metadata.is_dir(),
        "the outside directory was replaced ({result:?})"
    );
    let mode = metadata.permissions().mode() & 0o7777;
    assert!(
        mode == 0o700,
        "the outside directory's mode changed from 700 to {mode:o} ({result:?})"
    );
    assert_eq!(
        metadata.modified().ok(),
        Some(keep_time()),
        "the outside directory's time changed ({result:?})"
    );
    assert_eq!(
        names(&outside),
        BTreeSet::from(["keep".to_string()]),
        "the outside directory's entries changed ({result:?})"
    );
    let metadata = keep.symlink_metadata().expect("the kept file's metadata");
    assert!(
        metadata.is_file(),
        "the kept file was replaced ({result:?})"
    );
    let mode = metadata.permissions().mode() & 0o7777;
    assert!(
        mode == 0o600,
        "the kept file's mode changed from 600 to {mode:o} ({result:?})"
    );
    assert_eq!(
        metadata.modified().ok(),
        Some(keep_time()),
        "the kept file's time changed ({result:?})"
    );
    assert!(
        std::fs::read(&keep).expect("reading the kept file") == KEEP_CONTENT,
        "the kept file's content changed ({result:?})"
    );
    assert_root_has_no_special_bits(&root, &root, &result);
}

/// Walks `directory` without following symlinks; fails on any setuid, setgid or sticky entry.
fn assert_root_has_no_special_bits(root: &Path, directory: &Path, result: &impl std::fmt::Debug) {
    let entries = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("listing {}: {error}", directory.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let metadata = path.symlink_metadata().expect("an entry's metadata");
        let mode = metadata.permissions().mode();
        assert!(
            metadata.file_type().is_symlink() || mode & 0o7000 == 0,
            "{} was extracted with mode {mode:o} (setuid, setgid or sticky) ({result:?})",
            path.strip_prefix(root).unwrap_or(&path).display()
        );
        if metadata.is_dir() {
            assert_root_has_no_special_bits(root, &path, result);
        }
    }
}
