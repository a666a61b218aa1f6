//! The stored job log: a temporary file with UTF-8 repair, the output limit and a CRC-32.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use super::{ANSI_BOLD_YELLOW as BOLD_YELLOW, ANSI_RESET as RESET};

/// Where the job log lives until GitLab has it. Memory use does not grow with the log.
#[derive(Debug)]
pub struct TraceBuffer {
    file: File,
    len: u64,
    limit: u64,
    limit_reached: bool,
    crc: crc32fast::Hasher,
    /// An incomplete UTF-8 sequence at the end of the last write.
    utf8_tail: Vec<u8>,
}

impl TraceBuffer {
    /// A buffer storing at most `limit` bytes of output, plus the limit notice.
    pub fn new(limit: u64) -> io::Result<Self> {
        Ok(Self {
            file: tempfile::tempfile()?,
            len: 0,
            limit,
            limit_reached: false,
            crc: crc32fast::Hasher::new(),
            utf8_tail: Vec::new(),
        })
    }

    /// Bytes stored so far, the limit notice included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether output was cut at the limit; everything written since is dropped.
    pub fn limit_reached(&self) -> bool {
        self.limit_reached
    }

    /// `crc32:` and eight lowercase hex digits over the stored bytes.
    pub fn checksum(&self) -> String {
        format!("crc32:{:08x}", self.crc.clone().finalize())
    }

    /// Appends bytes: invalid UTF-8 becomes U+FFFD; past the limit output is dropped after a notice.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let combined: Vec<u8>;
        let input: &[u8] = if self.utf8_tail.is_empty() {
            data
        } else {
            let mut joined = std::mem::take(&mut self.utf8_tail);
            joined.extend_from_slice(data);
            combined = joined;
            &combined
        };
        let mut clean = Vec::with_capacity(input.len());
        let mut rest = input;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    clean.extend_from_slice(valid.as_bytes());
                    break;
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    clean.extend_from_slice(&rest[..valid]);
                    match error.error_len() {
                        Some(bad) => {
                            clean.extend_from_slice("\u{FFFD}".as_bytes());
                            rest = &rest[valid + bad..];
                        }
                        None => {
                            // Incomplete at the end: wait for the rest of the character.
                            self.utf8_tail = rest[valid..].to_vec();
                            break;
                        }
                    }
                }
            }
        }
        self.store(&clean)
    }

    /// Flushes an incomplete trailing character as U+FFFD.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.utf8_tail.is_empty() {
            return Ok(());
        }
        self.utf8_tail.clear();
        self.store("\u{FFFD}".as_bytes())
    }

    fn store(&mut self, data: &[u8]) -> io::Result<()> {
        if self.limit_reached || data.is_empty() {
            return Ok(());
        }
        let room = self.limit.saturating_sub(self.len) as usize;
        if data.len() <= room {
            return self.append(data);
        }
        let mut cut = room;
        while cut > 0 && (data[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        self.append(&data[..cut])?;
        self.limit_reached = true;
        let notice = format!(
            "\n{BOLD_YELLOW}Job's log exceeded limit of {} bytes.\nJob execution will continue but no more output will be collected.{RESET}\n",
            self.limit
        );
        self.append(notice.as_bytes())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.crc.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Up to `max` bytes from `offset`.
    pub fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(max as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut data = vec![0; (end - offset) as usize];
        self.file.read_exact_at(&mut data, offset)?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_utf8_across_writes() {
        let mut buffer = TraceBuffer::new(1024).unwrap();
        let euro = "€".as_bytes();
        buffer.write(&euro[..1]).unwrap();
        buffer.write(&euro[1..]).unwrap();
        buffer.write(b"\xffok").unwrap();
        buffer.write(&euro[..2]).unwrap();
        buffer.finish().unwrap();
        let stored = buffer.read_at(0, 1024).unwrap();
        assert_eq!(String::from_utf8(stored).unwrap(), "€\u{FFFD}ok\u{FFFD}");
    }

    #[test]
    fn truncates_at_the_limit_on_a_character_boundary() {
        let mut buffer = TraceBuffer::new(5).unwrap();
        buffer.write("abcd€".as_bytes()).unwrap();
        buffer.write(b"more").unwrap();
        let text = String::from_utf8(buffer.read_at(0, 4096).unwrap()).unwrap();
        assert!(text.starts_with("abcd\n\x1b[33;1mJob's log exceeded limit of 5 bytes.\n"));
        assert!(text.ends_with("no more output will be collected.\x1b[0;m\n"));
        assert!(!text.contains("more\n") || text.contains("no more"));
        assert!(buffer.limit_reached());
        let expected = format!("crc32:{:08x}", crc32fast::hash(text.as_bytes()));
        assert_eq!(buffer.checksum(), expected);
        assert_eq!(buffer.len(), text.len() as u64);
    }
}
