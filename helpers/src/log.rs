//! Helper output in upstream's runner log format (`log.RunnerTextFormatter`): a level prefix
//! (`WARNING: `, `ERROR: `, `FATAL: `) and colour, the message padded to 50 columns, then the
//! fields sorted by name. Written to stderr, which the job log captures.

use runner_core::log::{ANSI_BOLD_RED as BOLD_RED, ANSI_RESET as RESET, ANSI_YELLOW as YELLOW};

/// How serious a helper message is; it picks the line's prefix and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Progress and results: no prefix, no colour.
    Info,
    /// `WARNING: ` in yellow: something was skipped or will be retried; the command goes on.
    Warning,
    /// `ERROR: ` in bold red: a step failed.
    Error,
    /// `FATAL: ` in bold red: the command is about to exit with a failure (see [`fatal`]).
    Fatal,
}

/// One formatted line, without its newline.
pub fn format(level: Level, message: &str, fields: &[(&str, String)]) -> String {
    let (color, prefix) = match level {
        Level::Info => ("", ""),
        Level::Warning => (YELLOW, "WARNING: "),
        Level::Error => (BOLD_RED, "ERROR: "),
        Level::Fatal => (BOLD_RED, "FATAL: "),
    };
    let width = 50 - prefix.len();
    let padding = width.saturating_sub(message.chars().count());
    let mut line = format!("{color}{prefix}{message}{}{RESET} ", " ".repeat(padding));
    let mut sorted: Vec<&(&str, String)> = fields.iter().collect();
    sorted.sort_by_key(|(key, _)| *key);
    for (key, value) in sorted {
        line.push_str(&format!(" {color}{key}{RESET}={value}"));
    }
    line
}

/// Writes one line at `level` to stderr, `fields` after the message as `key=value` sorted by
/// key.
pub fn log(level: Level, message: &str, fields: &[(&str, String)]) {
    eprintln!("{}", format(level, message, fields));
}

/// Writes `message` to stderr with no prefix and no fields.
pub fn info(message: &str) {
    log(Level::Info, message, &[]);
}

/// Writes `message` to stderr as a `WARNING: ` line.
pub fn warning(message: &str) {
    log(Level::Warning, message, &[]);
}

/// Writes `message` to stderr as an `ERROR: ` line; unlike [`fatal`] it does not exit.
pub fn error(message: &str) {
    log(Level::Error, message, &[]);
}

/// Logs at fatal level and exits 1, as logrus' `Fatalln`.
pub fn fatal(message: &str) -> ! {
    log(Level::Fatal, message, &[]);
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_upstreams() {
        assert_eq!(
            format(Level::Warning, "No files to cache.", &[]),
            format!(
                "{YELLOW}WARNING: No files to cache.{}{RESET} ",
                " ".repeat(23)
            )
        );
        let line = format(
            Level::Info,
            "Uploading artifacts to coordinator... 201 Created",
            &[("token", "glcbt-ab".into()), ("id", "7".into())],
        );
        assert_eq!(
            line,
            format!("Uploading artifacts to coordinator... 201 Created {RESET}  id{RESET}=7 token{RESET}=glcbt-ab")
        );
    }
}
