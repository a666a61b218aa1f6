//! The runner's own log (not a job's): upstream's three formats (`runner`, `text`, `json`), its
//! levels, and where they come from: `--log-level` / `-l` / `--debug` / `--log-format` (with
//! their environment variables) win; otherwise `config.toml`'s `log_level` and `log_format`
//! apply, and are applied again when the file is reloaded, as upstream's `reloadConfig` does.
//!
//! Colour only goes to a terminal: a file, a pipe or journald gets plain text. `--syslog` sends
//! each line at `info` and above to the system logger (`/dev/log`) as well. `RUST_LOG`, when
//! set, replaces the level with a tracing filter (a developer's tool, not upstream's).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime};

use runner_core::log::{ANSI_BOLD_RED, ANSI_BOLD_WHITE, ANSI_RESET, ANSI_YELLOW};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// One of upstream's log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Upstream's default: the message padded to 50 columns, then sorted `key=value` fields.
    Runner,
    /// logrus' text formatter: `time=… level=… msg=…` (a short coloured layout on a terminal).
    Text,
    /// One JSON object per line, keys sorted, as logrus' JSON formatter writes them.
    Json,
}

impl LogFormat {
    /// The format named `name` (`runner`, `text` or `json`).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "runner" => Ok(Self::Runner),
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}, expected one of: runner, text, json"
            )),
        }
    }
}

/// Parses a level as logrus does (`panic` and `fatal` are kept as `error`, the most severe
/// level this runner logs at).
pub fn parse_level(name: &str) -> Result<Level, String> {
    match name.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => Ok(Level::ERROR),
        "warn" | "warning" => Ok(Level::WARN),
        "info" => Ok(Level::INFO),
        "debug" => Ok(Level::DEBUG),
        "trace" => Ok(Level::TRACE),
        _ => Err(format!(
            "failed to parse log level: not a valid logrus Level: {name:?}"
        )),
    }
}

/// What the command line said about logging; `None` leaves the choice to `config.toml`.
#[derive(Debug, Clone, Default)]
pub struct CliLogging {
    /// `--log-level` / `-l` (`LOG_LEVEL`).
    pub level: Option<String>,
    /// `--debug` (`RUNNER_DEBUG`): the level is `debug`, whatever else says.
    pub debug: bool,
    /// `--log-format` (`LOG_FORMAT`).
    pub format: Option<String>,
}

struct Settings {
    level: Level,
    format: LogFormat,
    level_from_cli: bool,
    format_from_cli: bool,
    syslog: Option<Syslog>,
}

struct Shared {
    settings: RwLock<Settings>,
    colour: bool,
    started: Instant,
    /// `RUST_LOG` was set: its filter decides what is logged, not `settings.level`.
    env_filtered: bool,
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// Installs the runner's log on stderr. An invalid flag value is an error, as upstream's
/// `Error while setting up logging configuration` is fatal.
pub fn init(cli: &CliLogging) -> Result<(), String> {
    let mut level = Level::INFO;
    let mut level_from_cli = false;
    if let Some(name) = &cli.level {
        level = parse_level(name)?;
        level_from_cli = true;
    }
    if cli.debug {
        level = Level::DEBUG;
        level_from_cli = true;
    }
    let (format, format_from_cli) = match &cli.format {
        Some(name) => (LogFormat::parse(name)?, true),
        None => (LogFormat::Runner, false),
    };
    let env_filter = std::env::var_os("RUST_LOG")
        .is_some()
        .then(tracing_subscriber::EnvFilter::from_default_env);
    let shared = Arc::new(Shared {
        settings: RwLock::new(Settings {
            level,
            format,
            level_from_cli,
            format_from_cli,
            syslog: None,
        }),
        colour: std::io::stderr().is_terminal(),
        started: Instant::now(),
        env_filtered: env_filter.is_some(),
    });
    let _ = SHARED.set(shared.clone());
    let layer = RunnerLog { shared };
    // A second init (a test calling main twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(env_filter)
        .with(layer)
        .try_init();
    Ok(())
}

/// Applies `config.toml`'s `log_level` / `log_format` where the command line did not set them
/// (unset keys mean `info` and `runner`, as upstream). The values were validated at load.
pub fn apply_config(log_level: Option<&str>, log_format: Option<&str>) {
    let Some(shared) = SHARED.get() else {
        return;
    };
    let mut settings = shared
        .settings
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !settings.level_from_cli {
        settings.level = log_level
            .and_then(|name| parse_level(name).ok())
            .unwrap_or(Level::INFO);
    }
    if !settings.format_from_cli {
        settings.format = log_format
            .and_then(|name| LogFormat::parse(name).ok())
            .unwrap_or(LogFormat::Runner);
    }
}

/// `--syslog`: also send each line at `info` and above to the system logger, tagged with the
/// service name. A machine without `/dev/log` gets one warning and the stderr log only.
pub fn enable_syslog(tag: &str) {
    let Some(shared) = SHARED.get() else {
        return;
    };
    match Syslog::connect(tag) {
        Ok(syslog) => {
            shared
                .settings
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .syslog = Some(syslog);
        }
        Err(error) => {
            tracing::warn!("--syslog: cannot reach the system logger at /dev/log: {error}")
        }
    }
}

struct Syslog {
    socket: UnixDatagram,
    tag: String,
}

impl Syslog {
    fn connect(tag: &str) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect("/dev/log")?;
        Ok(Self {
            socket,
            tag: tag.to_string(),
        })
    }

    fn send(&self, level: Level, line: &str) {
        // Facility daemon (3); severities err (3), warning (4), info (6).
        let severity = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            _ => 6,
        };
        let message = format!(
            "<{}>{}[{}]: {line}",
            3 * 8 + severity,
            self.tag,
            std::process::id()
        );
        // A full or gone syslog must never stop the runner; the stderr copy stays.
        let _ = self.socket.send(message.as_bytes());
    }
}

/// The fields of a span, kept in its extensions for the events inside it.
struct SpanFields(Vec<(String, Value)>);

/// A field value as logrus would hold it: JSON keeps numbers and booleans as such.
#[derive(Clone)]
enum Value {
    Text(String),
    Integer(i128),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for Value {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(text) => formatter.write_str(text),
            Value::Integer(number) => write!(formatter, "{number}"),
            Value::Float(number) => write!(formatter, "{number}"),
            Value::Bool(value) => write!(formatter, "{value}"),
        }
    }
}

#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(String, Value)>,
}

impl Collect {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name().to_string(), value));
        }
    }
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::Text(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Text(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Integer(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Integer(value.into()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Float(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Text(value.to_string()));
    }
}

struct RunnerLog {
    shared: Arc<Shared>,
}

impl<S> Layer<S> for RunnerLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        context: Context<'_, S>,
    ) {
        let mut collect = Collect::default();
        attributes.record(&mut collect);
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(SpanFields(collect.fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        context: Context<'_, S>,
    ) {
        let mut collect = Collect::default();
        values.record(&mut collect);
        if let Some(span) = context.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
                fields.0.extend(collect.fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let level = *event.metadata().level();
        let settings = self
            .shared
            .settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !self.shared.env_filtered && level > settings.level {
            return;
        }
        let mut collect = Collect::default();
        event.record(&mut collect);
        let mut fields = Vec::new();
        if let Some(scope) = context.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.0.iter().cloned());
                }
            }
        }
        fields.extend(collect.fields);
        // A field named twice (an event repeating its span's) keeps the innermost value, as a
        // logrus entry's map would.
        let mut sorted: Vec<(String, Value)> = Vec::new();
        for (key, value) in fields {
            match sorted.iter_mut().find(|(existing, _)| *existing == key) {
                Some(slot) => slot.1 = value,
                None => sorted.push((key, value)),
            }
        }
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let entry = Entry {
            level,
            message: &collect.message,
            fields: &sorted,
        };
        let line = match settings.format {
            LogFormat::Runner => entry.runner(self.shared.colour),
            LogFormat::Text if self.shared.colour => entry.text_terminal(self.shared.started),
            LogFormat::Text => entry.text(),
            LogFormat::Json => entry.json(),
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        if let Some(syslog) = &settings.syslog {
            if level <= Level::INFO {
                let plain = match settings.format {
                    LogFormat::Runner => entry.runner(false),
                    LogFormat::Text => entry.text(),
                    LogFormat::Json => entry.json(),
                };
                syslog.send(level, plain.trim_end());
            }
        }
    }
}

struct Entry<'a> {
    level: Level,
    message: &'a str,
    fields: &'a [(String, Value)],
}

impl Entry<'_> {
    /// logrus' name of the level.
    fn level_name(&self) -> &'static str {
        match self.level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        }
    }

    /// Upstream's `RunnerTextFormatter`.
    fn runner(&self, colour: bool) -> String {
        let (colour_code, prefix) = match self.level {
            Level::DEBUG => (ANSI_BOLD_WHITE, ""),
            Level::WARN => (ANSI_YELLOW, "WARNING: "),
            Level::ERROR => (ANSI_BOLD_RED, "ERROR: "),
            _ => ("", ""),
        };
        let (start, reset) = if colour {
            (colour_code, ANSI_RESET)
        } else {
            ("", "")
        };
        let width = 50 - prefix.len();
        let mut line = format!("{start}{prefix}{:<width$}{reset} ", self.message);
        for (key, value) in self.fields {
            let _ = write!(line, " {start}{key}{reset}={value}");
        }
        line.push('\n');
        line
    }

    /// logrus' `TextFormatter` writing to a file or pipe.
    fn text(&self) -> String {
        let mut line = format!(
            "time={} level={} msg={}",
            quote_if_needed(&rfc3339_nano(SystemTime::now())),
            self.level_name(),
            quote_if_needed(self.message)
        );
        for (key, value) in self.fields {
            let _ = write!(line, " {key}={}", quote_if_needed(&value.to_string()));
        }
        line.push('\n');
        line
    }

    /// logrus' `TextFormatter` on a terminal: a coloured four-letter level and the seconds since
    /// start.
    fn text_terminal(&self, started: Instant) -> String {
        let colour = match self.level {
            Level::ERROR => 31,
            Level::WARN => 33,
            Level::INFO => 36,
            Level::DEBUG | Level::TRACE => 37,
        };
        let name = self.level_name().to_ascii_uppercase();
        let mut line = format!(
            "\x1b[{colour}m{}\x1b[0m[{:04}] {:<44} ",
            &name[..4],
            started.elapsed().as_secs(),
            self.message
        );
        for (key, value) in self.fields {
            let _ = write!(
                line,
                " \x1b[{colour}m{key}\x1b[0m={}",
                quote_if_needed(&value.to_string())
            );
        }
        line.push('\n');
        line
    }

    /// logrus' `JSONFormatter`: the fields, `level`, `msg` and `time`, keys sorted.
    fn json(&self) -> String {
        let mut object = std::collections::BTreeMap::new();
        for (key, value) in self.fields {
            let value = match value {
                Value::Text(text) => serde_json::Value::from(text.as_str()),
                Value::Integer(number) => i64::try_from(*number)
                    .map(serde_json::Value::from)
                    .or_else(|_| u64::try_from(*number).map(serde_json::Value::from))
                    .unwrap_or_else(|_| serde_json::Value::from(number.to_string())),
                Value::Float(number) => serde_json::Value::from(*number),
                Value::Bool(value) => serde_json::Value::from(*value),
            };
            // logrus renames a field that clashes with its own keys.
            let key = match key.as_str() {
                "level" | "msg" | "time" => format!("fields.{key}"),
                _ => key.clone(),
            };
            object.insert(key, value);
        }
        object.insert("level".into(), self.level_name().into());
        object.insert("msg".into(), self.message.into());
        object.insert("time".into(), rfc3339_nano(SystemTime::now()).into());
        let mut line = serde_json::to_string(&object).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Go's `time.RFC3339Nano` in UTC: trailing zeros of the fraction dropped, `Z` for the zone.
fn rfc3339_nano(time: SystemTime) -> String {
    let (mut text, nanos) = runner_core::log::utc_date_time(time, 'T');
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// logrus quotes a text value (Go's `%q`) unless every character is a letter, a digit or one of
/// `-._/@^+`.
fn quote_if_needed(text: &str) -> String {
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '^' | '+'));
    if plain {
        return text.to_string();
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\x{:02x}", c as u32);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(level: Level, message: &'a str, fields: &'a [(String, Value)]) -> Entry<'a> {
        Entry {
            level,
            message,
            fields,
        }
    }

    #[test]
    fn the_runner_format_pads_the_message_and_colours_only_when_asked() {
        let fields = [
            ("job".to_string(), Value::Integer(7)),
            ("runner".to_string(), Value::Text("abc".into())),
        ];
        let warn = entry(Level::WARN, "Checking for jobs... failed", &fields);
        assert_eq!(
            warn.runner(false),
            format!(
                "WARNING: {:<41}  job=7 runner=abc\n",
                "Checking for jobs... failed"
            )
        );
        assert_eq!(
            warn.runner(true),
            format!(
                "\x1b[0;33mWARNING: {:<41}\x1b[0;m  \x1b[0;33mjob\x1b[0;m=7 \x1b[0;33mrunner\x1b[0;m=abc\n",
                "Checking for jobs... failed"
            )
        );
        let info = entry(Level::INFO, "Starting", &[]);
        assert_eq!(info.runner(false), format!("{:<50} \n", "Starting"));
    }

    #[test]
    fn the_text_format_quotes_as_logrus() {
        let fields = [
            ("path".to_string(), Value::Text("/etc/gitlab-runner".into())),
            (
                "reason".to_string(),
                Value::Text("a \"quoted\" word".into()),
            ),
        ];
        let line = entry(Level::ERROR, "failed", &fields).text();
        assert!(
            line.starts_with("time=\"") || line.starts_with("time=2"),
            "{line}"
        );
        assert!(
            line.ends_with(
                " level=error msg=failed path=/etc/gitlab-runner reason=\"a \\\"quoted\\\" word\"\n"
            ),
            "{line}"
        );
    }

    #[test]
    fn the_json_format_sorts_keys_and_keeps_numbers() {
        let fields = [
            ("job".to_string(), Value::Integer(1002)),
            ("msg".to_string(), Value::Text("clash".into())),
        ];
        let line = entry(Level::WARN, "hello", &fields).json();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["job"], 1002);
        assert_eq!(value["level"], "warning");
        assert_eq!(value["msg"], "hello");
        assert_eq!(value["fields.msg"], "clash");
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["fields.msg", "job", "level", "msg", "time"]);
        assert!(line.find("\"fields.msg\"") < line.find("\"job\""));
    }

    #[test]
    fn levels_and_formats_parse_as_upstream() {
        assert_eq!(parse_level("warning"), Ok(Level::WARN));
        assert_eq!(parse_level("FATAL"), Ok(Level::ERROR));
        assert_eq!(
            parse_level("loud"),
            Err("failed to parse log level: not a valid logrus Level: \"loud\"".into())
        );
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert!(LogFormat::parse("xml").is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_nano() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::new(86_400 * 365, 120_000_000);
        assert_eq!(rfc3339_nano(time), "1971-01-01T00:00:00.12Z");
        assert_eq!(rfc3339_nano(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
