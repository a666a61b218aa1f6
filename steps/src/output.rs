//! One request's log as followers read it: every byte masked first (the service is the masking
//! authority for a steps job), then framed in the runner's timestamped line format (stream
//! `01`, `O` or `E`, `+` for a continued line), then appended to the request's [`LogStore`].

use std::sync::{Arc, Mutex, MutexGuard};

use runner_core::log::{LineFramer, MaskRules, Masker, StreamId, StreamKind};

use crate::log_store::LogStore;

/// The stream id step output carries, as upstream's step-runner writes it.
pub const STEPS_STREAM: StreamId = StreamId(1);

struct Stream {
    masker: Masker,
    framer: LineFramer,
    kind: StreamKind,
}

impl Stream {
    fn new(rules: &MaskRules, kind: StreamKind) -> Self {
        Self {
            masker: Masker::new(rules),
            framer: LineFramer::new(STEPS_STREAM, kind, true),
            kind,
        }
    }
}

struct State {
    rules: MaskRules,
    phrases: Vec<String>,
    token_prefixes: Vec<String>,
    stdout: Stream,
    stderr: Stream,
    masked: Vec<u8>,
    framed: Vec<u8>,
}

/// A cheap, cloneable writer of one request's log.
#[derive(Clone)]
pub struct JobOutput {
    store: Arc<LogStore>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for JobOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobOutput").finish_non_exhaustive()
    }
}

impl JobOutput {
    /// Output into `store`, masking `phrases` and every token starting with one of
    /// `token_prefixes`.
    pub fn new(store: Arc<LogStore>, phrases: Vec<String>, token_prefixes: Vec<String>) -> Self {
        let rules = MaskRules::new(phrases.clone(), token_prefixes.clone());
        Self {
            store,
            state: Arc::new(Mutex::new(State {
                stdout: Stream::new(&rules, StreamKind::Stdout),
                stderr: Stream::new(&rules, StreamKind::Stderr),
                rules,
                phrases,
                token_prefixes,
                masked: Vec::new(),
                framed: Vec::new(),
            })),
        }
    }

    /// The store followers read.
    pub fn store(&self) -> &Arc<LogStore> {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes a process's bytes, split anywhere.
    pub fn write(&self, kind: StreamKind, data: &[u8]) {
        let mut state = self.lock();
        let state = &mut *state;
        state.masked.clear();
        state.framed.clear();
        let stream = match kind {
            StreamKind::Stdout => &mut state.stdout,
            StreamKind::Stderr => &mut state.stderr,
        };
        stream.masker.write(data, &mut state.masked);
        if state.masked.is_empty() {
            return;
        }
        stream.framer.write(&state.masked, &mut state.framed);
        self.append(&state.framed);
    }

    fn append(&self, framed: &[u8]) {
        if framed.is_empty() {
            return;
        }
        // A full disk loses the log, never the run: the status still says how it ended.
        let _ = self.store.append(framed);
    }

    /// Ends whatever a process left unfinished on both streams: bytes the maskers held back
    /// and a line without its newline.
    pub fn end_process(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        for stream in [&mut state.stdout, &mut state.stderr] {
            state.masked.clear();
            state.framed.clear();
            stream.masker.finish(&mut state.masked);
            stream.framer.write(&state.masked, &mut state.framed);
            stream.framer.finish(&mut state.framed);
            let kind = stream.kind;
            *stream = Stream::new(&state.rules, kind);
            if !state.framed.is_empty() {
                let _ = self.store.append(&state.framed);
            }
        }
    }

    /// One line of the service's own (`Running step name=…`), on stdout, masked too.
    pub fn line(&self, text: &str) {
        self.end_process();
        self.write(StreamKind::Stdout, format!("{text}\n").as_bytes());
        self.end_process();
    }

    /// Masks `phrase` from now on (a sensitive value found while running).
    pub fn add_phrase(&self, phrase: &str) {
        let phrase = phrase.trim();
        if phrase.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            if state.phrases.iter().any(|known| known == phrase) {
                return;
            }
            state.phrases.push(phrase.to_string());
            state.rules = MaskRules::new(state.phrases.clone(), state.token_prefixes.clone());
        }
        self.end_process();
    }

    /// Ends the log: followers get what is left, then the end.
    pub fn close(&self) {
        self.end_process();
        self.store.close();
    }
}
