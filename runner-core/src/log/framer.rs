//! Per-line framing of the job log: `<timestamp> <stream id><O|E><' '|'+'><text>` (`FF_TIMESTAMPS`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Partial lines longer than this are flushed and continued with a `+` line flag.
const PARTIAL_LINE_LIMIT: usize = 8 * 1024;

/// The stream of a log line: `00` runner messages, `01` the job script, `0f`+ services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamId(pub u8);

impl StreamId {
    /// The runner's own messages.
    pub const RUNNER: StreamId = StreamId(0x00);
    /// The output of the stage scripts.
    pub const SCRIPT: StreamId = StreamId(0x01);
    /// The first id of service output.
    pub const FIRST_SERVICE: StreamId = StreamId(0x0f);
}

/// Which output of a stream a line comes from: `O` or `E` in the line header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// `time` in UTC as `YYYY-MM-DD`, `T` (or whatever `separator` is), `HH:MM:SS`, and the
/// nanoseconds of the second: the one date formatter the job log, the runner's own log and the
/// helpers' Go-style times are built on. A time before 1970 is 1970.
pub fn utc_date_time(time: SystemTime, separator: char) -> (String, u32) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs() as i64;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    (
        format!(
            "{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}",
            second_of_day / 3600,
            (second_of_day / 60) % 60,
            second_of_day % 60
        ),
        since_epoch.subsec_nanos(),
    )
}

/// Formats a UTC timestamp as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_timestamp(time: SystemTime) -> String {
    let (date_time, nanos) = utc_date_time(time, 'T');
    format!("{date_time}.{:06}Z", nanos / 1000)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A proleptic Gregorian date to days since 1970-01-01, the inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Turns a byte stream into framed log lines.
#[derive(Debug)]
pub struct LineFramer {
    stream: StreamId,
    kind: StreamKind,
    timestamps: bool,
    /// The current partial line, header included.
    partial: Vec<u8>,
    /// The next header continues the previous line.
    continuation: bool,
    /// `YYYY-MM-DDTHH:MM:SS.` of `cached_second`: only the microseconds change within a second.
    cached_second: u64,
    cached_prefix: String,
}

impl LineFramer {
    /// A framer for `kind` output of `stream`; without `timestamps` the text passes unframed.
    pub fn new(stream: StreamId, kind: StreamKind, timestamps: bool) -> Self {
        Self {
            stream,
            kind,
            timestamps,
            partial: Vec::new(),
            continuation: false,
            cached_second: u64::MAX,
            cached_prefix: String::new(),
        }
    }

    fn header(&mut self, out: &mut Vec<u8>) {
        if !self.timestamps {
            self.continuation = false;
            return;
        }
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let second = since_epoch.as_secs();
        if second != self.cached_second {
            let full = format_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(second));
            self.cached_prefix = full[..20].to_string();
            self.cached_second = second;
        }
        out.extend_from_slice(self.cached_prefix.as_bytes());
        let mut micros = since_epoch.subsec_micros();
        let mut digits = [b'0'; 6];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out.extend_from_slice(&digits);
        out.extend_from_slice(b"Z ");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[(self.stream.0 >> 4) as usize]);
        out.push(HEX[(self.stream.0 & 0x0f) as usize]);
        out.push(match self.kind {
            StreamKind::Stdout => b'O',
            StreamKind::Stderr => b'E',
        });
        out.push(if self.continuation { b'+' } else { b' ' });
        self.continuation = false;
    }

    /// Frames one write. Complete lines get a header each; a write with `\r` but no `\n` is
    /// flushed as its own entry so progress bars show live; other partial lines wait.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                self.header(out);
            } else {
                out.append(&mut self.partial);
            }
            out.extend_from_slice(&rest[..=newline]);
            rest = &rest[newline + 1..];
        }
        if rest.is_empty() {
            return;
        }
        if memchr::memchr(b'\r', rest).is_some() {
            if self.partial.is_empty() {
                self.header(out);
            } else {
                out.append(&mut self.partial);
            }
            out.extend_from_slice(rest);
            out.push(b'\n');
            self.continuation = true;
            return;
        }
        if self.partial.len() + rest.len() > PARTIAL_LINE_LIMIT {
            if self.partial.is_empty() {
                self.header(out);
            } else {
                out.append(&mut self.partial);
            }
            out.extend_from_slice(rest);
            out.push(b'\n');
            self.continuation = true;
            return;
        }
        if self.partial.is_empty() {
            let mut header = Vec::new();
            self.header(&mut header);
            self.partial = header;
        }
        self.partial.extend_from_slice(rest);
    }

    /// Ends a pending partial line with a newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            out.append(&mut self.partial);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_dates_round_trip() {
        for days in [-719_468, -1, 0, 59, 60, 11_016, 19_723, 20_000, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    fn strip(framed: &[u8]) -> String {
        // Replace the 27-character timestamp and its space with `T `.
        String::from_utf8(framed.to_vec())
            .unwrap()
            .split_terminator('\n')
            .map(|line| format!("T {}", &line[28..]))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn timestamps_are_rfc3339_micros_utc() {
        let time = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(format_timestamp(time), "2023-11-14T22:13:20.123456Z");
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn frames_lines_partials_and_carriage_returns() {
        let mut framer = LineFramer::new(StreamId::SCRIPT, StreamKind::Stdout, true);
        let mut out = Vec::new();
        framer.write(b"one\ntw", &mut out);
        framer.write(b"o\nprogress\r", &mut out);
        framer.write(b"done\n", &mut out);
        framer.write(b"tail", &mut out);
        framer.finish(&mut out);
        assert_eq!(
            strip(&out),
            "T 01O one\nT 01O two\nT 01O progress\r\nT 01O+done\nT 01O tail"
        );
    }

    #[test]
    fn long_partial_lines_are_continued() {
        let mut framer = LineFramer::new(StreamId::RUNNER, StreamKind::Stderr, true);
        let mut out = Vec::new();
        framer.write(&vec![b'x'; PARTIAL_LINE_LIMIT + 1], &mut out);
        framer.write(b"y\n", &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(&lines[1][28..], "00E+y");
    }

    #[test]
    fn without_timestamps_lines_pass_unchanged() {
        let mut framer = LineFramer::new(StreamId::SCRIPT, StreamKind::Stdout, false);
        let mut out = Vec::new();
        framer.write(b"a\nb", &mut out);
        framer.finish(&mut out);
        assert_eq!(out, b"a\nb\n");
    }
}
