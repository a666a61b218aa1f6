//! The `read-logs` stream format, shared by the helper that writes it and the Kubernetes
//! executor that reads it: each piece of the followed file is printed as `<offset after it>
//! <piece>`, with a newline added when the piece has none (a long line's part, or a last line
//! not finished yet).

/// One piece of `read-logs` output as its client reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPiece<'a> {
    /// The offset after the piece, when the line had one.
    pub offset: Option<u64>,
    /// The bytes of the file, without a newline `read-logs` added itself.
    pub data: &'a [u8],
}

/// Reads one output line of `read-logs` (its trailing `\n` included), given the offset the
/// client had reached: `<offset> <data>`, where a newline that is not in the file (the data
/// is longer than the offset advanced) is dropped. A line without a numeric prefix is kept
/// whole, as upstream's client keeps it.
pub fn parse_piece(line: &[u8], reached: u64) -> LogPiece<'_> {
    let digits = line.iter().take_while(|byte| byte.is_ascii_digit()).count();
    let parsed = (digits > 0 && line.get(digits) == Some(&b' '))
        .then(|| {
            std::str::from_utf8(&line[..digits])
                .ok()?
                .parse::<u64>()
                .ok()
        })
        .flatten();
    let Some(offset) = parsed else {
        return LogPiece {
            offset: None,
            data: line,
        };
    };
    let mut data = &line[digits + 1..];
    let advance = offset.saturating_sub(reached);
    if data.len() as u64 > advance && data.last() == Some(&b'\n') {
        data = &data[..data.len() - 1];
    }
    LogPiece {
        offset: Some(offset),
        data,
    }
}
