//! Archives: zip creation (files, directories and symlinks with their modes and times) and
//! format detection from the magic bytes; extraction lives in [`crate::extract`] and is
//! re-exported here.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::files::FileSet;

/// Why creating, detecting or extracting an archive failed; the message is what the helper
/// commands print.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file: the archive's path, or an entry's name relative to the working or
        /// extraction directory.
        path: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The zip library refused the archive (corrupt or not a zip) or failed writing one.
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// An entry name (given) is absolute, holds `..` or names the extraction directory itself.
    #[error("archive entry {0:?} would be written outside the extraction directory")]
    Escapes(String),
    /// An entry (name given) would go through a symbolic link already on disk: a parent of it
    /// is one, or, for a directory entry, the entry itself.
    #[error("archive entry {0:?} would be written through a symbolic link")]
    ThroughSymlink(String),
    /// The archive is in a format extraction does not handle (zstd-compressed tar).
    #[error("unsupported archive format")]
    UnknownFormat,
    /// A zip archive lists more entries than `ARCHIVE_EXTRACT_MAX_ENTRIES` allows.
    #[error("archive has {entries} entries, more than the limit of {limit} (ARCHIVE_EXTRACT_MAX_ENTRIES)")]
    TooManyEntries {
        /// Entries in the archive's central directory.
        entries: u64,
        /// The bound in force.
        limit: u64,
    },
    /// Extraction reached `ARCHIVE_EXTRACT_MAX_SIZE`; the file being written is removed.
    #[error(
        "extracting the archive would write more than {limit} bytes (ARCHIVE_EXTRACT_MAX_SIZE)"
    )]
    TooLarge {
        /// The bound in force, in bytes.
        limit: u64,
    },
    /// Extraction wrote more than `ARCHIVE_EXTRACT_MAX_RATIO` times the archive's size (and
    /// more than [`crate::extract::RATIO_FLOOR`]): a likely zip bomb.
    #[error("the archive of {size} bytes expands to more than {ratio} times its size (ARCHIVE_EXTRACT_MAX_RATIO); refusing a possible zip bomb")]
    Ratio {
        /// The bound in force.
        ratio: u64,
        /// The archive file's size in bytes.
        size: u64,
    },
    /// An entry (name given) decompressed to more bytes than its header's size.
    #[error("archive entry {0:?} holds more data than its header declares")]
    LargerThanDeclared(String),
    /// An `ARCHIVE_EXTRACT_MAX_*` variable is set to something other than a whole number.
    #[error("invalid {name}: {value:?} (expected a whole number, 0 for no limit)")]
    InvalidLimit {
        /// The variable's name.
        name: &'static str,
        /// Its value, trimmed.
        value: String,
    },
}

pub use crate::extract::{extract, extract_gzip, extract_with, extract_zip, ExtractLimits};

pub(crate) fn io_error(path: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.into();
    move |source| ArchiveError::Io { path, source }
}

/// Compression levels upstream accepts (`fastest`, `fast`, `default`, `slow`, `slowest`).
pub fn compression_level(name: &str) -> Option<i64> {
    match name {
        "fastest" => Some(1),
        "fast" => Some(3),
        "slow" => Some(7),
        "slowest" => Some(9),
        _ => None,
    }
}

fn zip_time(time: SystemTime) -> DateTime {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (year, month, day) = runner_core::log::civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let year = year.clamp(1980, 2107) as u16;
    DateTime::from_date_and_time(
        year,
        month as u8,
        day as u8,
        (second_of_day / 3600) as u8,
        ((second_of_day / 60) % 60) as u8,
        (second_of_day % 60) as u8,
    )
    .unwrap_or_default()
}

/// The inverse of [`zip_time`]: zip times are written in UTC here, so they are read as UTC.
pub(crate) fn system_time(time: DateTime) -> Option<SystemTime> {
    let days = runner_core::log::days_from_civil(
        i64::from(time.year()),
        u32::from(time.month()),
        u32::from(time.day()),
    );
    let seconds = days * 86_400
        + i64::from(time.hour()) * 3600
        + i64::from(time.minute()) * 60
        + i64::from(time.second());
    u64::try_from(seconds)
        .ok()
        .map(|seconds| UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// Writes `files` (relative to `wd`) as a zip archive to `out`.
pub fn write_zip<W: Write + Seek>(
    out: W,
    wd: &Path,
    files: &FileSet,
    level: Option<i64>,
) -> Result<W, ArchiveError> {
    let mut zip = ZipWriter::new(out);
    for (name, metadata) in files {
        let mode = metadata.mode() & 0o7777;
        let mut options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(level)
            .unix_permissions(mode)
            .large_file(metadata.len() >= 0xFFFF_FFFF);
        if let Ok(modified) = metadata.modified() {
            options = options.last_modified_time(zip_time(modified));
        }
        let path = wd.join(name);
        let kind = metadata.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io_error(name.clone()))?;
            zip.add_symlink(name.clone(), target.to_string_lossy(), options)?;
        } else if kind.is_dir() {
            zip.add_directory(format!("{name}/"), options)?;
        } else if kind.is_file() {
            zip.start_file(name.clone(), options)?;
            let mut file = File::open(&path).map_err(io_error(name.clone()))?;
            io::copy(&mut file, &mut zip).map_err(io_error(name.clone()))?;
        }
    }
    Ok(zip.finish()?)
}

pub use flate2::write::GzEncoder;

/// Starts one gzip member named `name` (several members may follow in one file).
pub fn gzip_member<W: Write>(out: W, name: &str) -> GzEncoder<W> {
    flate2::GzBuilder::new()
        .filename(name.as_bytes())
        .write(out, flate2::Compression::default())
}

/// The archive formats extraction recognises by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Anything without one of the other signatures; a file that is not a zip fails later,
    /// when it is opened as one.
    Zip,
    /// A gzip stream (`1f 8b`), artifacts uploaded with `artifact_format: gzip`.
    Gzip,
    /// A zstd frame (`28 b5 2f fd`), taken as a zstd-compressed tar; extraction refuses it.
    TarZstd,
}

/// The format of the archive at `path`, from its first four bytes; fails only when the file
/// cannot be opened or read.
pub fn detect(path: &Path) -> Result<Format, ArchiveError> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(io_error(path.display().to_string()))?;
    let read = file
        .read(&mut magic)
        .map_err(io_error(path.display().to_string()))?;
    Ok(match &magic[..read] {
        [0x28, 0xB5, 0x2F, 0xFD] => Format::TarZstd,
        [0x1F, 0x8B, ..] => Format::Gzip,
        _ => Format::Zip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn zip_times_read_back_as_written() {
        let when = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(system_time(zip_time(when)), Some(when));
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(system_time(zip_time(leap)), Some(leap));
    }
    use crate::files::{clean, FileSelection};

    #[test]
    fn round_trips_files_modes_directories_and_symlinks() {
        let source = tempfile::tempdir().unwrap();
        let wd = clean(source.path());
        std::fs::create_dir_all(wd.join("bin/sub")).unwrap();
        std::fs::write(wd.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(wd.join("bin/tool"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::fs::write(wd.join("bin/sub/data"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("tool", wd.join("bin/alias")).unwrap();
        let files = FileSelection {
            paths: vec!["bin".into()],
            ..FileSelection::default()
        }
        .enumerate(&wd);
        let archive = tempfile::NamedTempFile::new().unwrap();
        write_zip(archive.reopen().unwrap(), &wd, &files, None).unwrap();

        let target = tempfile::tempdir().unwrap();
        extract(archive.path(), target.path()).unwrap();
        let tool = target.path().join("bin/tool");
        assert_eq!(std::fs::read(&tool).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(tool.metadata().unwrap().mode() & 0o777, 0o750);
        assert_eq!(
            std::fs::read(target.path().join("bin/sub/data")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(
            std::fs::read_link(target.path().join("bin/alias")).unwrap(),
            Path::new("tool")
        );
    }
}
