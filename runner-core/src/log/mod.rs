//! The job log: every byte a job shows in GitLab passes through here.
//!
//! Pipeline per stream: [`Masker`] (secrets, across write borders) → [`LineFramer`] (timestamps and
//! stream ids) → the shared [`TraceBuffer`] (UTF-8 repair, output limit, checksum, on disk). The
//! trace uploader reads the buffer by offset. The job log never goes through `tracing`.

mod buffer;
mod framer;
mod masker;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use buffer::TraceBuffer;
pub use framer::{
    civil_from_days, days_from_civil, format_timestamp, utc_date_time, LineFramer, StreamId,
    StreamKind,
};
pub use masker::{token_prefixes, MaskRules, Masker, DEFAULT_TOKEN_PREFIXES, MASK};

/// Bold red, for `ERROR:` lines.
pub const ANSI_BOLD_RED: &str = "\x1b[31;1m";
/// Bold green, for runner notices such as `Job succeeded`.
pub const ANSI_BOLD_GREEN: &str = "\x1b[32;1m";
/// Bold yellow, for the output-limit notice.
pub const ANSI_BOLD_YELLOW: &str = "\x1b[33;1m";
/// Bold cyan, for stage headers.
pub const ANSI_BOLD_CYAN: &str = "\x1b[36;1m";
/// Bold white, for the runner's own `debug` lines (upstream's runner log format).
pub const ANSI_BOLD_WHITE: &str = "\x1b[37;1m";
/// Yellow, for `WARNING:` lines.
pub const ANSI_YELLOW: &str = "\x1b[0;33m";
/// Resets the colour; ends every runner line.
pub const ANSI_RESET: &str = "\x1b[0;m";
/// Erases to the end of the line; after a section marker it hides the marker.
pub const ANSI_CLEAR: &str = "\x1b[0K";

/// The default `output_limit`: 4096 KiB.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 4096 * 1024;

/// How one job's log is written: framing, sections, size limit and masking.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// `FF_TIMESTAMPS`.
    pub timestamps: bool,
    /// `features.trace_sections` from the payload.
    pub trace_sections: bool,
    /// Bytes.
    pub output_limit: u64,
    /// What to mask in every stream.
    pub mask: MaskRules,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            timestamps: true,
            trace_sections: false,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            mask: MaskRules::default(),
        }
    }
}

struct Shared {
    options: LogOptions,
    buffer: Mutex<TraceBuffer>,
    runner: Mutex<StreamState>,
    /// Wakes the uploader when output arrives.
    written: tokio::sync::Notify,
}

struct StreamState {
    masker: Masker,
    framer: LineFramer,
    scratch: Vec<u8>,
    framed: Vec<u8>,
}

impl StreamState {
    fn new(options: &LogOptions, stream: StreamId, kind: StreamKind) -> Self {
        Self {
            masker: Masker::new(&options.mask),
            framer: LineFramer::new(stream, kind, options.timestamps),
            scratch: Vec::new(),
            framed: Vec::new(),
        }
    }

    fn write(&mut self, data: &[u8], buffer: &Mutex<TraceBuffer>) {
        self.scratch.clear();
        self.framed.clear();
        self.masker.write(data, &mut self.scratch);
        if self.scratch.is_empty() {
            return;
        }
        self.framer.write(&self.scratch, &mut self.framed);
        store(buffer, &self.framed);
    }

    fn finish(&mut self, buffer: &Mutex<TraceBuffer>) {
        self.scratch.clear();
        self.framed.clear();
        self.masker.finish(&mut self.scratch);
        self.framer.write(&self.scratch, &mut self.framed);
        self.framer.finish(&mut self.framed);
        store(buffer, &self.framed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn store(buffer: &Mutex<TraceBuffer>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if let Err(error) = lock(buffer).write(data) {
        tracing::error!(%error, "cannot store job log output");
    }
}

/// A cheap, cloneable handle to one job's log.
#[derive(Clone)]
pub struct JobLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JobLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLog").field("len", &self.len()).finish()
    }
}

impl JobLog {
    /// An empty log kept in a temporary file; fails when the file cannot be created.
    pub fn new(options: LogOptions) -> std::io::Result<Self> {
        let buffer = TraceBuffer::new(options.output_limit)?;
        let runner = StreamState::new(&options, StreamId::RUNNER, StreamKind::Stdout);
        Ok(Self {
            shared: Arc::new(Shared {
                options,
                buffer: Mutex::new(buffer),
                runner: Mutex::new(runner),
                written: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The options the log was made with.
    pub fn options(&self) -> &LogOptions {
        &self.shared.options
    }

    /// A writer for one output stream of a process (stdout or stderr of a stage).
    pub fn stream(&self, stream: StreamId, kind: StreamKind) -> LogWriter {
        LogWriter {
            log: self.clone(),
            state: StreamState::new(&self.shared.options, stream, kind),
            finished: false,
        }
    }

    fn runner_write(&self, text: &str) {
        let mut runner = lock(&self.shared.runner);
        runner.write(text.as_bytes(), &self.shared.buffer);
        // Runner messages are complete; release anything the masker held back.
        runner.finish(&self.shared.buffer);
        drop(runner);
        self.shared.written.notify_one();
    }

    /// `Println`: a plain runner line.
    pub fn println(&self, text: &str) {
        self.runner_write(&format!("{ANSI_CLEAR}{text}{ANSI_RESET}\n"));
    }

    /// `Infoln`: a bold green notice.
    pub fn info(&self, text: &str) {
        self.runner_write(&format!("{ANSI_BOLD_GREEN}{text}{ANSI_RESET}\n"));
    }

    /// `Warningln`.
    pub fn warning(&self, text: &str) {
        self.runner_write(&format!("{ANSI_YELLOW}WARNING: {text}{ANSI_RESET}\n"));
    }

    /// `Errorln` / `SoftErrorln`.
    pub fn error(&self, text: &str) {
        self.runner_write(&format!("{ANSI_BOLD_RED}ERROR: {text}{ANSI_RESET}\n"));
    }

    /// An empty line.
    pub fn empty_line(&self) {
        self.runner_write(&format!("{ANSI_CLEAR}{ANSI_RESET}\n"));
    }

    fn section_marker(&self, kind: &str, name: &str) {
        if !self.shared.options.trace_sections {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.runner_write(&format!("{kind}:{now}:{name}\r{ANSI_CLEAR}"));
    }

    /// `section_start:<unix>:<name>` + CR + erase line, only with `trace_sections`.
    pub fn section_start(&self, name: &str) {
        self.section_marker("section_start", name);
    }

    /// `section_end:<unix>:<name>` + CR + erase line, closing a [`Self::section_start`];
    /// only with `trace_sections`.
    pub fn section_end(&self, name: &str) {
        self.section_marker("section_end", name);
    }

    /// Bytes stored so far.
    pub fn len(&self) -> u64 {
        lock(&self.shared.buffer).len()
    }

    /// Whether nothing has been stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `crc32:` and eight hex digits over the stored bytes, for the final job update.
    pub fn checksum(&self) -> String {
        lock(&self.shared.buffer).checksum()
    }

    /// Up to `max` stored bytes from `offset`, for the trace uploader.
    pub fn read_at(&self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        lock(&self.shared.buffer).read_at(offset, max)
    }

    /// The whole stored log (for tests and local mode).
    pub fn contents(&self) -> Vec<u8> {
        let buffer = lock(&self.shared.buffer);
        buffer.read_at(0, buffer.len() as usize).unwrap_or_default()
    }

    /// Flushes held-back partial UTF-8 and closes the stored log to writes of a broken character.
    pub fn finish(&self) {
        if let Err(error) = lock(&self.shared.buffer).finish() {
            tracing::error!(%error, "cannot store job log output");
        }
        self.shared.written.notify_one();
    }

    /// A writer of already framed and masked output (see [`PrestampedWriter`]).
    pub fn prestamped(&self) -> PrestampedWriter {
        PrestampedWriter {
            log: self.clone(),
            partial: Vec::new(),
            streams: Vec::new(),
        }
    }

    /// Resolves when output was written since the last call.
    pub async fn written(&self) {
        self.shared.written.notified().await;
    }
}

/// A writer of output that arrives already framed in this log's line format and masked (a
/// Step Runner's `FollowLogs` data): with timestamps on it is stored as it comes, chunked
/// anyhow; with timestamps off each line's header is cut, `+` continuations are joined to the
/// line they continue, and the bodies go through this log's own masking per stream.
pub struct PrestampedWriter {
    log: JobLog,
    partial: Vec<u8>,
    /// Per stream id and kind: the writer, and whether its last line still waits for its
    /// newline (a `+` line may continue it).
    streams: Vec<((u8, bool), LogWriter, bool)>,
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ 01O ` is 32 bytes.
const PRESTAMPED_HEADER: usize = 32;

/// The stream id, whether stderr, whether a continuation, when `line` starts with a header.
fn prestamped_header(line: &[u8]) -> Option<(u8, bool, bool)> {
    if line.len() < PRESTAMPED_HEADER
        || line[4] != b'-'
        || line[10] != b'T'
        || line[19] != b'.'
        || line[26] != b'Z'
        || line[27] != b' '
    {
        return None;
    }
    let hex = |byte: u8| (byte as char).to_digit(16);
    let id = hex(line[28])? * 16 + hex(line[29])?;
    let stderr = match line[30] {
        b'O' => false,
        b'E' => true,
        _ => return None,
    };
    let continued = match line[31] {
        b' ' => false,
        b'+' => true,
        _ => return None,
    };
    Some((id as u8, stderr, continued))
}

impl PrestampedWriter {
    /// Stores `data`, split anywhere.
    pub fn write(&mut self, data: &[u8]) {
        if self.log.shared.options.timestamps {
            // Whole lines only: a stream cut mid-line leaves no half line for the runner's
            // next line to be glued to.
            self.partial.extend_from_slice(data);
            if let Some(end) = memchr::memrchr(b'\n', &self.partial) {
                let lines: Vec<u8> = self.partial.drain(..=end).collect();
                store(&self.log.shared.buffer, &lines);
                self.log.shared.written.notify_one();
            }
            return;
        }
        self.partial.extend_from_slice(data);
        while let Some(end) = memchr::memchr(b'\n', &self.partial) {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(&line[..line.len() - 1]);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let (key, body, continued) = match prestamped_header(line) {
            Some((id, stderr, continued)) => ((id, stderr), &line[PRESTAMPED_HEADER..], continued),
            None => ((1, false), line, false),
        };
        let index = match self.streams.iter().position(|(known, _, _)| *known == key) {
            Some(index) => index,
            None => {
                let kind = if key.1 {
                    StreamKind::Stderr
                } else {
                    StreamKind::Stdout
                };
                let writer = self.log.stream(StreamId(key.0), kind);
                self.streams.push((key, writer, false));
                self.streams.len() - 1
            }
        };
        if !continued {
            // A new line ends every line still open, in the order they came.
            for (_, writer, open) in &mut self.streams {
                if *open {
                    writer.write(b"\n");
                    *open = false;
                }
            }
        }
        let (_, writer, open) = &mut self.streams[index];
        writer.write(body);
        *open = true;
    }

    /// Ends every stream (the last lines get their newlines).
    pub fn finish(&mut self) {
        if self.log.shared.options.timestamps {
            if !self.partial.is_empty() {
                let mut line = std::mem::take(&mut self.partial);
                line.push(b'\n');
                store(&self.log.shared.buffer, &line);
                self.log.shared.written.notify_one();
            }
            return;
        }
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        for (_, writer, open) in &mut self.streams {
            if *open {
                writer.write(b"\n");
                *open = false;
            }
            writer.finish();
        }
    }
}

impl Drop for PrestampedWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A writer for one stream; finish it (or drop it) when the stream ends.
pub struct LogWriter {
    log: JobLog,
    state: StreamState,
    finished: bool,
}

impl LogWriter {
    /// Masks and frames `data` and stores it; a possible start of a secret or an unfinished
    /// line waits for the next write.
    pub fn write(&mut self, data: &[u8]) {
        self.state.write(data, &self.log.shared.buffer);
        self.log.shared.written.notify_one();
    }

    /// Stores what the masker and framer still hold; later calls do nothing.
    pub fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.state.finish(&self.log.shared.buffer);
            self.log.shared.written.notify_one();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prestamped_output_is_stored_as_is_with_timestamps_and_unframed_and_masked_without() {
        let framed = b"2026-05-05T12:00:00.000000Z 01O hello\n2026-05-05T12:00:00.000001Z 01E oops\n2026-05-05T12:00:00.000002Z 01O part one \n2026-05-05T12:00:00.000003Z 01O+and two s3cret\n";
        let stamped = log(true);
        let mut writer = stamped.prestamped();
        for piece in framed.chunks(7) {
            writer.write(piece);
        }
        writer.finish();
        assert_eq!(stamped.contents(), framed.to_vec());

        let plain = JobLog::new(LogOptions {
            timestamps: false,
            mask: MaskRules::new(vec!["s3cret".into()], vec![]),
            ..LogOptions::default()
        })
        .expect("a log");
        let mut writer = plain.prestamped();
        for piece in framed.chunks(5) {
            writer.write(piece);
        }
        writer.finish();
        assert_eq!(
            String::from_utf8_lossy(&plain.contents()),
            "hello\noops\npart one and two [MASKED]\n"
        );
    }

    fn log(timestamps: bool) -> JobLog {
        JobLog::new(LogOptions {
            timestamps,
            trace_sections: true,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            mask: MaskRules::new(vec!["hunter2".into()], token_prefixes(&[], true)),
        })
        .unwrap()
    }

    #[test]
    fn runner_messages_have_upstream_colors() {
        let log = log(false);
        log.println("plain");
        log.warning("careful");
        log.error("broken");
        log.info("Job succeeded");
        assert_eq!(
            String::from_utf8(log.contents()).unwrap(),
            "\x1b[0Kplain\x1b[0;m\n\x1b[0;33mWARNING: careful\x1b[0;m\n\x1b[31;1mERROR: broken\x1b[0;m\n\x1b[32;1mJob succeeded\x1b[0;m\n"
        );
    }

    #[test]
    fn secrets_split_across_writes_are_masked_on_each_stream() {
        let log = log(true);
        let mut out = log.stream(StreamId::SCRIPT, StreamKind::Stdout);
        out.write(b"pass=hun");
        out.write(b"ter2 glpat-abc\n");
        out.finish();
        let text = String::from_utf8(log.contents()).unwrap();
        assert!(
            text.ends_with(" 01O pass=[MASKED] glpat-[MASKED]\n"),
            "{text:?}"
        );
    }

    #[test]
    fn section_markers_are_flushed_as_their_own_entry() {
        let log = log(true);
        log.section_start("get_sources");
        log.println("header");
        let text = String::from_utf8(log.contents()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0][28..].starts_with("00O section_start:"));
        assert!(lines[0].ends_with(":get_sources\r\x1b[0K"));
        assert_eq!(&lines[1][28..], "00O+\x1b[0Kheader\x1b[0;m");
    }
}
