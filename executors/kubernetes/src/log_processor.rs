//! The runner's side of the attach strategy's log stream: `read-logs` output (see
//! `runner_helpers::read_logs`) in, job-log bytes and stage events out. It keeps the offset
//! the stream reached, so a reconnect asks from there and neither repeats nor loses a line,
//! and it takes the stage scripts' JSON markers out of the log.
//!
//! Upstream takes any JSON object with `command_exit_code` or `script` as a marker, so a job
//! that prints such a line (a test fixture, another runner's log) ends its stage. Here a line
//! is a marker only when it carries the nonce of the stage that is running; any other line,
//! however it looks, is job output.

use runner_core::executor::STAGE_NONCE_VARIABLE;
use runner_core::read_logs::parse_piece;

/// What the stream said about the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageEvent {
    /// The stage's script started (its start line): the script's file name.
    Started {
        /// The script path's last component (`step_script`).
        script: String,
    },
    /// The stage's script ended with this exit status (upstream normalises to 32 bits).
    Exited {
        /// The status.
        code: i32,
        /// The script's file name, when the marker named it.
        script: Option<String>,
    },
}

/// What one piece of stream produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Processed {
    /// Bytes for the job log.
    pub output: Vec<u8>,
    /// Markers of the running stage, in order.
    pub events: Vec<StageEvent>,
}

/// Follows one job's `read-logs` stream across reconnects.
#[derive(Debug, Default)]
pub struct LogProcessor {
    /// The file offset the stream has reached: where a reconnect starts.
    offset: u64,
    /// A stream line that has not ended yet.
    partial: Vec<u8>,
    /// File bytes of a log line that has not ended yet (a long line comes in pieces).
    line: Vec<u8>,
    /// The running stage's nonce; markers with another (or none) are output.
    nonce: String,
    /// The nonces of the stages before, newest last: their late markers (a killed stage's
    /// fallback marker) are dropped, not shown in the next stage's output.
    past: Vec<String>,
}

/// How many earlier stages' nonces are remembered.
const PAST_NONCES: usize = 32;

/// The command-line assignment that gives a stage its nonce (for the typed command).
pub fn nonce_assignment(nonce: &str) -> String {
    format!("{STAGE_NONCE_VARIABLE}={nonce}")
}

/// A fresh nonce: 16 random lowercase hex digits.
pub fn new_nonce(rng: &mut impl rand::Rng) -> String {
    (0..16)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

fn script_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

impl LogProcessor {
    /// A processor for a stream that starts at `offset`.
    pub fn new(offset: u64) -> Self {
        Self {
            offset,
            ..Self::default()
        }
    }

    /// The offset to ask `read-logs` for after a dropped stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The stage that runs next has this nonce (empty: none runs).
    pub fn expect_stage(&mut self, nonce: &str) {
        let before = std::mem::replace(&mut self.nonce, nonce.to_string());
        if !before.is_empty() && before != nonce {
            if self.past.len() == PAST_NONCES {
                self.past.remove(0);
            }
            self.past.push(before);
        }
    }

    /// The running stage's nonce (empty when none runs).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// A stream ended: what it had of an unfinished stream line is dropped (the next stream
    /// starts at the offset reached, which that line had not advanced).
    pub fn reconnected(&mut self) {
        self.partial.clear();
    }

    /// The log file is a new one: the next stream starts at `offset` and nothing of the
    /// old file's unfinished line is kept.
    pub fn restart_at(&mut self, offset: u64) {
        self.offset = offset;
        self.partial.clear();
        self.line.clear();
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> Processed {
        let mut processed = Processed::default();
        self.partial.extend_from_slice(data);
        while let Some(end) = newline_at(&self.partial) {
            let stream_line: Vec<u8> = self.partial.drain(..=end).collect();
            let piece = parse_piece(&stream_line, self.offset);
            if let Some(offset) = piece.offset {
                self.offset = offset;
            }
            self.line.extend_from_slice(piece.data);
            if self.line.last() == Some(&b'\n') {
                let line = std::mem::take(&mut self.line);
                self.take_line(line, &mut processed);
            }
        }
        processed
    }

    /// A complete log line (with its `\n`): a marker of the running stage, a late marker
    /// of an earlier one (dropped), or output.
    fn take_line(&mut self, line: Vec<u8>, processed: &mut Processed) {
        match self.marker(&line) {
            Marker::Current(event) => processed.events.push(event),
            Marker::Past => {}
            Marker::None => processed.output.extend_from_slice(&line),
        }
    }

    fn marker(&self, line: &[u8]) -> Marker {
        let Some((nonce, object)) = marker_object(line) else {
            return Marker::None;
        };
        if !self.nonce.is_empty() && nonce == self.nonce {
            return event(&object).map_or(Marker::None, Marker::Current);
        }
        if self.past.contains(&nonce) {
            return Marker::Past;
        }
        Marker::None
    }
}

/// The event a marker object of the running stage stands for.
fn event(object: &serde_json::Map<String, serde_json::Value>) -> Option<StageEvent> {
    let script = object
        .get("script")
        .and_then(serde_json::Value::as_str)
        .map(script_name);
    match object.get("command_exit_code") {
        Some(code) => Some(StageEvent::Exited {
            // Go's int, read as upstream's int32 normalisation: the low 32 bits.
            code: code.as_i64()? as i32,
            script,
        }),
        None => Some(StageEvent::Started { script: script? }),
    }
}

/// What a log line is to the processor.
enum Marker {
    /// A marker of the running stage.
    Current(StageEvent),
    /// A marker of a stage that is over.
    Past,
    /// Output.
    None,
}

/// A line that is a JSON object with a `nonce`: the nonce and the object.
fn marker_object(line: &[u8]) -> Option<(String, serde_json::Map<String, serde_json::Value>)> {
    let text = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\n', '\r']);
    if !text.starts_with('{') {
        return None;
    }
    match serde_json::from_str(text).ok()? {
        serde_json::Value::Object(object) => {
            let nonce = object.get("nonce")?.as_str()?.to_string();
            Some((nonce, object))
        }
        _ => None,
    }
}

fn newline_at(data: &[u8]) -> Option<usize> {
    data.iter().position(|byte| *byte == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read-logs` output for `file[from..]`, in pieces of at most `piece` bytes.
    fn stream(file: &[u8], from: usize, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = from;
        while offset < file.len() {
            let rest = &file[offset..];
            let mut length = rest
                .iter()
                .position(|byte| *byte == b'\n')
                .map_or(rest.len(), |end| end + 1);
            length = length.min(piece);
            offset += length;
            out.extend_from_slice(format!("{offset} ").as_bytes());
            out.extend_from_slice(&rest[..length]);
            if rest[length - 1] != b'\n' {
                out.push(b'\n');
            }
        }
        out
    }

    const NONCE: &str = "0123456789abcdef";

    fn file() -> Vec<u8> {
        format!(
            "{{\"script\": \"/scripts-1-2/step_script\", \"nonce\": \"{NONCE}\"}}\n\
             hello\n\
             {{\"command_exit_code\": 0, \"script\": \"/x/step_script\"}}\n\
             {{\"command_exit_code\": 9, \"nonce\": \"guessed\"}}\n\
             progress 10%\rprogress 100%\n\
             \n\
             {{\"command_exit_code\": 42, \"script\": \"/scripts-1-2/step_script\", \"nonce\": \"{NONCE}\"}}\n"
        )
        .into_bytes()
    }

    #[test]
    fn only_the_running_stages_markers_are_taken_out_of_the_log() {
        let mut processor = LogProcessor::new(0);
        processor.expect_stage(NONCE);
        let processed = processor.feed(&stream(&file(), 0, 16 * 1024));
        assert_eq!(
            processed.events,
            [
                StageEvent::Started {
                    script: "step_script".into()
                },
                StageEvent::Exited {
                    code: 42,
                    script: Some("step_script".into())
                }
            ]
        );
        assert_eq!(
            String::from_utf8(processed.output).unwrap(),
            "hello\n{\"command_exit_code\": 0, \"script\": \"/x/step_script\"}\n{\"command_exit_code\": 9, \"nonce\": \"guessed\"}\nprogress 10%\rprogress 100%\n\n"
        );
        assert_eq!(processor.offset(), file().len() as u64);
    }

    proptest::proptest! {
        /// Pieces of any size, streams that drop after any number of bytes and resume from
        /// the offset reached: the same output and the same events, once.
        #[test]
        fn drops_and_small_pieces_neither_repeat_nor_lose_anything(
            piece in 1usize..40,
            drops in proptest::collection::vec(1usize..60, 0..12),
        ) {
            let file = file();
            let mut processor = LogProcessor::new(0);
            processor.expect_stage(NONCE);
            let mut output = Vec::new();
            let mut events = Vec::new();
            for drop_after in drops {
                let data = stream(&file, processor.offset() as usize, piece);
                let delivered = &data[..drop_after.min(data.len())];
                let processed = processor.feed(delivered);
                output.extend(processed.output);
                events.extend(processed.events);
                processor.reconnected();
            }
            let processed = processor.feed(&stream(&file, processor.offset() as usize, piece));
            output.extend(processed.output);
            events.extend(processed.events);
            let mut whole = LogProcessor::new(0);
            whole.expect_stage(NONCE);
            let expected = whole.feed(&stream(&file, 0, 16 * 1024));
            proptest::prop_assert_eq!(output, expected.output);
            proptest::prop_assert_eq!(events, expected.events);
        }
    }

    #[test]
    fn late_markers_of_earlier_stages_are_dropped_and_a_new_file_starts_at_zero() {
        let mut processor = LogProcessor::new(0);
        processor.expect_stage("first");
        processor.expect_stage("");
        processor.expect_stage("second");
        let file =
            b"{\"command_exit_code\": 137, \"script\": \"/s/step_script\", \"nonce\": \"first\"}\n\
            {\"command_exit_code\": 0, \"nonce\": \"never-used\"}\n\
            after\n";
        let processed = processor.feed(&stream(file, 0, 1024));
        assert!(processed.events.is_empty());
        assert_eq!(
            String::from_utf8(processed.output).unwrap(),
            "{\"command_exit_code\": 0, \"nonce\": \"never-used\"}\nafter\n"
        );
        assert_eq!(processor.nonce(), "second");
        processor.feed(b"5 part");
        processor.restart_at(0);
        assert_eq!(processor.offset(), 0);
        let processed = processor.feed(&stream(b"new\n", 0, 1024));
        assert_eq!(processed.output, b"new\n");
        assert_eq!(processor.offset(), 4);
    }

    #[test]
    fn the_nonce_goes_to_the_script_through_its_variable() {
        assert_eq!(nonce_assignment("ab"), "RUNNER_STAGE_NONCE=ab");
        let mut rng = rand::thread_rng();
        let nonce = new_nonce(&mut rng);
        assert_eq!(nonce.len(), 16);
        assert_ne!(nonce, new_nonce(&mut rng));
    }
}
