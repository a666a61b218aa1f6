//! `read-logs`: follows a job's log file for the Kubernetes executor's attach strategy, where
//! each stage appends its output to a shared file and a long-lived exec in the helper
//! container streams it back. Each piece it prints is prefixed with the file offset after
//! it, so a client whose stream dropped asks again from the offset it reached and gets
//! neither a gap nor a repeat.
//!
//! As upstream's helper: the file is waited for (checked once a second for
//! `--wait-file-timeout`); reads go through a 16 KiB buffer, and a piece is a line, or a
//! buffer's worth of a longer line, or what there is of a last line, each printed as
//! `<offset> <piece>` with a newline added when the piece has none; at the end of the file it
//! looks again, forever. A file that disappears ends it with exit code 100.
//!
//! One difference: upstream looks again every 500 ms, so each stage's exit marker reaches the
//! runner up to half a second late. Here the first look after new data comes after 10 ms, each
//! next one waits twice as long, up to upstream's 500 ms while the file stays quiet.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The exit code when the log file was deleted under the reader.
pub const FILE_DELETED_EXIT_CODE: i32 = 100;
/// Upstream's `common.DefaultReaderBufferSize`.
pub const READER_BUFFER_SIZE: usize = 16 * 1024;
const CHECK_FILE_EXISTS_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between two looks at a quiet file (upstream's only interval).
const POLL_FILE_CONTENTS_INTERVAL: Duration = Duration::from_millis(500);
/// The first wait after new data.
const POLL_AFTER_DATA: Duration = Duration::from_millis(10);

/// What `read-logs` was asked to follow.
#[derive(Debug, Clone)]
pub struct ReadLogsOptions {
    /// `--path`: the log file.
    pub path: PathBuf,
    /// `--offset`: where to start, in bytes.
    pub offset: u64,
    /// `--wait-file-timeout`: how long to wait for the file to appear (upstream's default 1 s).
    pub wait_file_timeout: Duration,
}

/// Why following stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadLogsError {
    /// The file was there and is gone: exit code 100, nothing printed.
    #[error("output log file deleted")]
    Deleted,
    /// The file did not appear within the wait.
    #[error("timeout waiting for file to be created")]
    WaitTimeout,
    /// A wait shorter than one check.
    #[error("no attempts to open log file configured")]
    NoAttempts,
    /// Opening, seeking, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ReadLogsError {
    /// Upstream's exit code: 100 for a deleted file, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Deleted => FILE_DELETED_EXIT_CODE,
            _ => 1,
        }
    }
}

fn open(options: &ReadLogsOptions) -> Result<File, ReadLogsError> {
    let attempts = options.wait_file_timeout.as_secs();
    if attempts < 1 {
        return Err(ReadLogsError::NoAttempts);
    }
    for _ in 0..attempts {
        match File::open(&options.path) {
            Ok(file) => return Ok(file),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(CHECK_FILE_EXISTS_INTERVAL);
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(ReadLogsError::WaitTimeout)
}

/// Follows the file into `out` until it is deleted, an error happens, or `stop` says so
/// (checked at the end of the file; the command line never stops).
pub fn follow(
    options: &ReadLogsOptions,
    out: &mut impl Write,
    stop: impl Fn() -> bool,
) -> Result<(), ReadLogsError> {
    let mut file = open(options)?;
    file.seek(SeekFrom::Start(options.offset))?;
    let mut reader = BufReader::with_capacity(READER_BUFFER_SIZE, file);
    let mut offset = options.offset;
    let mut pause = POLL_AFTER_DATA;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            if !file_exists(&options.path)? {
                return Err(ReadLogsError::Deleted);
            }
            if stop() {
                return Ok(());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL_FILE_CONTENTS_INTERVAL);
            continue;
        }
        pause = POLL_AFTER_DATA;
        // A line, or all the buffer holds of a longer (or unfinished) one.
        let length = memchr::memchr(b'\n', available).map_or(available.len(), |end| end + 1);
        let piece = &available[..length];
        offset += length as u64;
        out.write_all(format!("{offset} ").as_bytes())?;
        out.write_all(piece)?;
        if piece.last() != Some(&b'\n') {
            out.write_all(b"\n")?;
        }
        out.flush()?;
        reader.consume(length);
    }
}

fn file_exists(path: &Path) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

pub use runner_core::read_logs::{parse_piece, LogPiece};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn options(path: &Path, offset: u64) -> ReadLogsOptions {
        ReadLogsOptions {
            path: path.to_path_buf(),
            offset,
            wait_file_timeout: Duration::from_secs(1),
        }
    }

    /// Follows until the end of what is there now.
    fn read_now(path: &Path, offset: u64) -> Vec<u8> {
        let mut out = Vec::new();
        follow(&options(path, offset), &mut out, || true).unwrap();
        out
    }

    /// What a client rebuilds from `read-logs` output.
    fn rebuild(output: &[u8], mut reached: u64) -> (Vec<u8>, u64) {
        let mut file = Vec::new();
        for line in output.split_inclusive(|byte| *byte == b'\n') {
            let piece = parse_piece(line, reached);
            file.extend_from_slice(piece.data);
            reached = piece.offset.unwrap_or(reached);
        }
        (file, reached)
    }

    #[test]
    fn lines_carry_the_offset_after_them_and_a_resume_neither_repeats_nor_skips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        std::fs::write(&path, "first\nsecond\nunfinish").unwrap();
        let out = read_now(&path, 0);
        assert_eq!(out, b"6 first\n13 second\n21 unfinish\n");
        let (text, reached) = rebuild(&out, 0);
        assert_eq!(text, b"first\nsecond\nunfinish");
        assert_eq!(reached, 21);
        // The rest of the unfinished line, read from the offset reached.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"ed\nthird\n")
            .unwrap();
        let out = read_now(&path, reached);
        assert_eq!(out, b"24 ed\n30 third\n");
        let (rest, _) = rebuild(&out, reached);
        assert_eq!(rest, b"ed\nthird\n");
    }

    #[test]
    fn a_line_longer_than_the_buffer_comes_in_pieces_that_rebuild_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        let long = "x".repeat(READER_BUFFER_SIZE + 100);
        std::fs::write(&path, format!("{long}\nend\n")).unwrap();
        let out = read_now(&path, 0);
        let lines: Vec<&[u8]> = out.split_inclusive(|byte| *byte == b'\n').collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(format!("{READER_BUFFER_SIZE} x").as_bytes()));
        let (text, _) = rebuild(&out, 0);
        assert_eq!(text, format!("{long}\nend\n").as_bytes());
    }

    #[test]
    fn a_deleted_file_ends_with_code_100_and_a_missing_one_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        std::fs::write(&path, "line\n").unwrap();
        let deleted = Arc::new(AtomicBool::new(false));
        let handle = {
            let path = path.clone();
            let deleted = deleted.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let result = follow(&options(&path, 0), &mut out, || false);
                deleted.store(true, Ordering::SeqCst);
                (result, out)
            })
        };
        std::thread::sleep(Duration::from_millis(700));
        assert!(!deleted.load(Ordering::SeqCst), "it follows the file");
        std::fs::remove_file(&path).unwrap();
        let (result, out) = handle.join().unwrap();
        assert_eq!(out, b"5 line\n");
        let error = result.unwrap_err();
        assert!(matches!(error, ReadLogsError::Deleted), "{error}");
        assert_eq!(error.exit_code(), 100);

        let error = read_missing(&dir.path().join("never"));
        assert_eq!(error.to_string(), "timeout waiting for file to be created");
        assert_eq!(error.exit_code(), 1);
    }

    fn read_missing(path: &Path) -> ReadLogsError {
        follow(&options(path, 0), &mut Vec::new(), || true).unwrap_err()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Appends in arbitrary chunks, and a client whose stream drops after an arbitrary
        /// number of lines and resumes from the offset it reached, rebuild the file exactly.
        #[test]
        fn any_chunking_and_any_drop_rebuild_the_file(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::prop_oneof![
                    proptest::strategy::Just(b'\n'), proptest::strategy::Just(b'\r'), proptest::strategy::Just(b'{'), proptest::num::u8::ANY
                ], 0..40),
                1..8,
            ),
            drops in proptest::collection::vec(0usize..4, 8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("output.log");
            std::fs::write(&path, b"").unwrap();
            let mut written = Vec::new();
            let mut rebuilt = Vec::new();
            let mut reached = 0u64;
            for (chunk, keep) in chunks.iter().zip(drops.iter().cycle()) {
                std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(chunk).unwrap();
                written.extend_from_slice(chunk);
                let out = read_now(&path, reached);
                // The stream drops after `keep` lines (0: nothing arrived this time).
                let lines: Vec<&[u8]> = out.split_inclusive(|byte| *byte == b'\n').collect();
                let delivered: Vec<u8> = lines.iter().take(*keep).flat_map(|line| line.iter().copied()).collect();
                let (text, now) = rebuild(&delivered, reached);
                rebuilt.extend_from_slice(&text);
                reached = now;
            }
            let (text, _) = rebuild(&read_now(&path, reached), reached);
            rebuilt.extend_from_slice(&text);
            proptest::prop_assert_eq!(rebuilt, written);
        }
    }

    #[test]
    fn lines_without_an_offset_are_kept_whole() {
        assert_eq!(
            parse_piece(b"error reading logs from /x: boom\n", 7),
            LogPiece {
                offset: None,
                data: b"error reading logs from /x: boom\n"
            }
        );
        assert_eq!(
            parse_piece(b"12abc\n", 0),
            LogPiece {
                offset: None,
                data: b"12abc\n"
            }
        );
    }
}
