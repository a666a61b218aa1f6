//! Extracting zip and gzip archives that other jobs produced, as hostile input: no entry lands
//! outside the target directory or is written through a symbolic link (not even a directory
//! entry's mode or time), only the 0777 permission bits are kept (as upstream), and the output
//! is bounded in entries, bytes and expansion ratio.
//!
//! The bounds come from the job's environment (the stage scripts export every job variable):
//! `ARCHIVE_EXTRACT_MAX_ENTRIES`, `ARCHIVE_EXTRACT_MAX_SIZE` (bytes) and
//! `ARCHIVE_EXTRACT_MAX_RATIO`; `0` turns a bound off.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use zip::ZipArchive;

use crate::archive::{detect, io_error, system_time, ArchiveError, Format};

/// Entries an archive may hold by default: a large `node_modules` cache has a few hundred
/// thousand; the zip reader keeps every entry's header in memory.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// Bytes one extraction may write by default (off: caches of tens of GiB are real).
pub const DEFAULT_MAX_SIZE: u64 = 0;
/// How many times its own size an archive may expand to by default. Deflate reaches about
/// 1000:1 on zeros; real caches and artifacts stay far below 100:1.
pub const DEFAULT_MAX_RATIO: u64 = 200;
/// The ratio bound applies only once this much was written, so a small archive of very
/// compressible files is never refused.
pub const RATIO_FLOOR: u64 = 64 * 1024 * 1024;

/// Bounds on one extraction; `0` in a field means no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Entries a zip archive may list (`ARCHIVE_EXTRACT_MAX_ENTRIES`); checked before anything is
    /// written.
    pub max_entries: u64,
    /// Bytes one extraction may write in all (`ARCHIVE_EXTRACT_MAX_SIZE`).
    pub max_size: u64,
    /// How many times the archive file's size the output may reach (`ARCHIVE_EXTRACT_MAX_RATIO`);
    /// never enforced below [`RATIO_FLOOR`].
    pub max_ratio: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_size: DEFAULT_MAX_SIZE,
            max_ratio: DEFAULT_MAX_RATIO,
        }
    }
}

impl ExtractLimits {
    /// The defaults, overridden by the `ARCHIVE_EXTRACT_MAX_*` variables; a value that is not
    /// a whole number is an error naming the variable.
    pub fn from_env() -> Result<Self, ArchiveError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`ExtractLimits::from_env`], with `lookup` answering for the environment (an empty or
    /// missing value keeps the default).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ArchiveError> {
        let read = |name: &'static str, default: u64| -> Result<u64, ArchiveError> {
            match lookup(name).map(|value| value.trim().to_string()) {
                None => Ok(default),
                Some(value) if value.is_empty() => Ok(default),
                Some(value) => value
                    .parse()
                    .map_err(|_| ArchiveError::InvalidLimit { name, value }),
            }
        };
        Ok(Self {
            max_entries: read("ARCHIVE_EXTRACT_MAX_ENTRIES", DEFAULT_MAX_ENTRIES)?,
            max_size: read("ARCHIVE_EXTRACT_MAX_SIZE", DEFAULT_MAX_SIZE)?,
            max_ratio: read("ARCHIVE_EXTRACT_MAX_RATIO", DEFAULT_MAX_RATIO)?,
        })
    }
}

/// Counts what an extraction wrote against its limits.
struct Budget {
    limits: ExtractLimits,
    archive_size: u64,
    written: u64,
}

impl Budget {
    /// The most the next write may add before a bound is crossed, `None` when unbounded.
    fn remaining(&self) -> Option<u64> {
        let by_size =
            (self.limits.max_size > 0).then(|| self.limits.max_size.saturating_sub(self.written));
        let by_ratio = (self.limits.max_ratio > 0).then(|| {
            let allowed = self
                .archive_size
                .saturating_mul(self.limits.max_ratio)
                .max(RATIO_FLOOR);
            allowed.saturating_sub(self.written)
        });
        match (by_size, by_ratio) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn exceeded(&self) -> ArchiveError {
        let by_size = self.limits.max_size > 0 && self.written >= self.limits.max_size;
        if by_size {
            ArchiveError::TooLarge {
                limit: self.limits.max_size,
            }
        } else {
            ArchiveError::Ratio {
                ratio: self.limits.max_ratio,
                size: self.archive_size,
            }
        }
    }

    /// Copies `from` into `to`, at most the remaining budget and at most `declared + 1` bytes
    /// (one more than the entry claims, so a lying entry is caught).
    fn copy(
        &mut self,
        name: &str,
        from: &mut impl Read,
        to: &mut impl Write,
        declared: Option<u64>,
    ) -> Result<(), ArchiveError> {
        let budget = self.remaining();
        let cap = match (budget, declared) {
            (Some(budget), Some(declared)) => budget.min(declared.saturating_add(1)),
            (Some(budget), None) => budget,
            (None, Some(declared)) => declared.saturating_add(1),
            (None, None) => u64::MAX,
        };
        let copied = io::copy(&mut from.take(cap.saturating_add(1)), to).map_err(io_error(name))?;
        self.written = self.written.saturating_add(copied);
        if declared.is_some_and(|declared| copied > declared) {
            return Err(ArchiveError::LargerThanDeclared(name.to_string()));
        }
        if budget.is_some_and(|budget| copied > budget) {
            return Err(self.exceeded());
        }
        Ok(())
    }
}

/// The destination of an entry inside `root`, refusing absolute names, `..` and any existing
/// symlink on the way (which could redirect the write elsewhere). With `whole_path` the last
/// component is checked too: a directory entry must not name an existing symlink, as its
/// mode and time would be set on the link's target.
fn destination(root: &Path, name: &str, whole_path: bool) -> Result<PathBuf, ArchiveError> {
    let mut path = root.to_path_buf();
    let components: Vec<Component> = Path::new(name).components().collect();
    for (index, component) in components.iter().enumerate() {
        match component {
            Component::Normal(part) => {
                path.push(part);
                let last = index + 1 == components.len();
                if !last || whole_path {
                    if let Ok(metadata) = path.symlink_metadata() {
                        if metadata.file_type().is_symlink() {
                            return Err(ArchiveError::ThroughSymlink(name.to_string()));
                        }
                    }
                }
            }
            Component::CurDir => {}
            _ => return Err(ArchiveError::Escapes(name.to_string())),
        }
    }
    if path == root {
        return Err(ArchiveError::Escapes(name.to_string()));
    }
    Ok(path)
}

/// Upstream's check (`isPathAGitDirectory`): the entry's first component is `.git`.
fn is_git_path(name: &str) -> bool {
    Path::new(name)
        .components()
        .find(|component| !matches!(component, Component::CurDir))
        .is_some_and(|component| component.as_os_str() == ".git")
}

/// Removes a file or symlink in the way of an entry (never a directory, never followed).
fn remove_existing(path: &Path) {
    if let Ok(metadata) = path.symlink_metadata() {
        if !metadata.is_dir() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Creates `path` as a new regular file, refusing to follow a symlink a concurrent writer
/// might have put there since [`remove_existing`].
fn create_new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a directory for `fchmod` / `futimens`, refusing a symlink in its place.
fn open_directory(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// Opens `archive` and starts a budget sized by it.
fn open_archive(archive: &Path, limits: ExtractLimits) -> Result<(File, Budget), ArchiveError> {
    let name = archive.display().to_string();
    let file = File::open(archive).map_err(io_error(name.clone()))?;
    let archive_size = file.metadata().map_err(io_error(name))?.len();
    let budget = Budget {
        limits,
        archive_size,
        written: 0,
    };
    Ok((file, budget))
}

/// Writes `from` as the new file `target` within `budget`; what was cut short is removed, so
/// it is not left behind as if it were the archive's file.
fn write_new_file(
    budget: &mut Budget,
    name: &str,
    target: &Path,
    from: &mut impl Read,
    declared: Option<u64>,
) -> Result<File, ArchiveError> {
    let mut out = create_new_file(target).map_err(io_error(name))?;
    match budget.copy(name, from, &mut out, declared) {
        Ok(()) => Ok(out),
        Err(error) => {
            drop(out);
            let _ = std::fs::remove_file(target);
            Err(error)
        }
    }
}

/// Extracts a zip archive into `root` under `limits`; returns the number of entries written.
pub fn extract_zip(
    archive: &Path,
    root: &Path,
    limits: ExtractLimits,
) -> Result<usize, ArchiveError> {
    let (file, mut budget) = open_archive(archive, limits)?;
    let mut zip = ZipArchive::new(BufReader::new(file))?;
    if limits.max_entries > 0 && zip.len() as u64 > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            entries: zip.len() as u64,
            limit: limits.max_entries,
        });
    }
    let mut warned_git = false;
    let mut directories: Vec<(PathBuf, Option<u32>, Option<SystemTime>)> = Vec::new();
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index)?;
        let name = entry.name().to_string();
        if !warned_git && is_git_path(&name) {
            warned_git = true;
            crate::log::warning("Part of .git directory is on the list of files to extract");
            crate::log::warning("This may introduce unexpected problems");
        }
        let mode = entry.unix_mode();
        let modified = entry.last_modified().and_then(system_time);
        if entry.is_dir() {
            let target = destination(root, name.trim_end_matches('/'), true)?;
            std::fs::create_dir_all(&target).map_err(io_error(name.clone()))?;
            directories.push((target, mode, modified));
            continue;
        }
        let target = destination(root, &name, false)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(name.clone()))?;
        }
        remove_existing(&target);
        if entry.is_symlink() {
            let mut link = String::new();
            (&mut entry)
                .take(64 * 1024)
                .read_to_string(&mut link)
                .map_err(io_error(name.clone()))?;
            std::os::unix::fs::symlink(&link, &target).map_err(io_error(name.clone()))?;
            continue;
        }
        let declared = Some(entry.size());
        let out = write_new_file(&mut budget, &name, &target, &mut entry, declared)?;
        // The entry's time, as upstream restores it: a restored cache is then not newer than
        // its archive and is not archived again.
        if let Some(modified) = modified {
            let _ = out.set_modified(modified);
        }
        if let Some(mode) = mode {
            out.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
                .map_err(io_error(name.clone()))?;
        }
    }
    // Directory modes last, so a read-only directory does not block its own entries.
    // Directory times last too: writing their entries changed them. Both through a handle
    // that refuses a symlink, so a link swapped in since cannot redirect them.
    for (directory, mode, modified) in directories.iter().rev() {
        let Ok(handle) = open_directory(directory) else {
            continue;
        };
        if let Some(modified) = modified {
            let _ = handle.set_modified(*modified);
        }
        if let Some(mode) = mode {
            let _ = handle.set_permissions(std::fs::Permissions::from_mode((mode & 0o777) | 0o700));
        }
    }
    Ok(zip.len())
}

/// Extracts a gzip member into `root` under the name in its header, under `limits`.
pub fn extract_gzip(
    archive: &Path,
    root: &Path,
    limits: ExtractLimits,
) -> Result<usize, ArchiveError> {
    let (file, mut budget) = open_archive(archive, limits)?;
    let mut decoder = flate2::read::GzDecoder::new(BufReader::new(file));
    let name = decoder
        .header()
        .and_then(|header| header.filename())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .unwrap_or_else(|| "artifacts".into());
    let target = destination(root, &name, false)?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(name.clone()))?;
    }
    remove_existing(&target);
    write_new_file(&mut budget, &name, &target, &mut decoder, None)?;
    Ok(1)
}

/// Extracts any recognised archive into `root`, bounded by the `ARCHIVE_EXTRACT_MAX_*`
/// variables of the environment (or their defaults).
pub fn extract(archive: &Path, root: &Path) -> Result<usize, ArchiveError> {
    extract_with(archive, root, ExtractLimits::from_env()?)
}

/// Extracts any recognised archive into `root` under `limits`.
pub fn extract_with(
    archive: &Path,
    root: &Path,
    limits: ExtractLimits,
) -> Result<usize, ArchiveError> {
    match detect(archive)? {
        Format::Zip => extract_zip(archive, root, limits),
        Format::Gzip => extract_gzip(archive, root, limits),
        Format::TarZstd => Err(ArchiveError::UnknownFormat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use zip::write::SimpleFileOptions;
    use zip::ZipWriter;

    /// One entry of a hand-built archive: a name, its unix mode (type bits included) and
    /// its content (a symlink's target for a link).
    struct Entry<'a> {
        name: &'a str,
        mode: u32,
        content: &'a [u8],
    }

    const FILE: u32 = 0o100_000;
    const DIR: u32 = 0o040_000;
    const LINK: u32 = 0o120_000;

    fn zip_of(entries: &[Entry<'_>]) -> tempfile::NamedTempFile {
        let archive = tempfile::NamedTempFile::new().unwrap();
        let mut zip = ZipWriter::new(archive.reopen().unwrap());
        for entry in entries {
            let options = SimpleFileOptions::default().unix_permissions(entry.mode & 0o7777);
            match entry.mode & 0o170_000 {
                DIR => zip.add_directory(entry.name, options).unwrap(),
                LINK => zip
                    .add_symlink(
                        entry.name,
                        std::str::from_utf8(entry.content).unwrap(),
                        options,
                    )
                    .unwrap(),
                _ => {
                    zip.start_file(entry.name, options).unwrap();
                    zip.write_all(entry.content).unwrap();
                }
            }
        }
        zip.finish().unwrap();
        archive
    }

    fn file(name: &str) -> Entry<'_> {
        Entry {
            name,
            mode: FILE | 0o644,
            content: b"payload",
        }
    }

    /// A project directory beside an `outside` directory (mode 0700, one file) that no
    /// archive may touch.
    struct Sandbox {
        dir: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("project")).unwrap();
            std::fs::create_dir(dir.path().join("outside")).unwrap();
            std::fs::write(dir.path().join("outside/keep"), b"kept").unwrap();
            std::fs::set_permissions(
                dir.path().join("outside"),
                std::fs::Permissions::from_mode(0o700),
            )
            .unwrap();
            Self { dir }
        }
        fn root(&self) -> PathBuf {
            self.dir.path().join("project")
        }
        fn outside(&self) -> PathBuf {
            self.dir.path().join("outside")
        }
        fn assert_outside_untouched(&self) {
            let metadata = std::fs::symlink_metadata(self.outside()).unwrap();
            assert_eq!(
                metadata.mode() & 0o7777,
                0o700,
                "the outside directory's mode changed"
            );
            let names: Vec<_> = std::fs::read_dir(self.outside())
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
            assert_eq!(std::fs::read(self.outside().join("keep")).unwrap(), b"kept");
            let mut top: Vec<_> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            top.sort();
            assert_eq!(top, vec!["outside", "project"]);
        }
    }

    #[test]
    fn zip_slip_entries_are_refused_and_nothing_lands_outside() {
        let sandbox = Sandbox::new();
        let archive = zip_of(&[file("../outside/escaped.txt")]);
        let error = extract(archive.path(), &sandbox.root()).unwrap_err();
        assert!(matches!(error, ArchiveError::Escapes(_)), "{error}");

        let archive = zip_of(&[file("/abs.txt")]);
        assert!(extract(archive.path(), &sandbox.root()).is_err());

        // A symlink pointing outside, then a file written through it.
        let archive = zip_of(&[
            Entry {
                name: "link",
                mode: LINK | 0o777,
                content: b"../outside",
            },
            file("link/through.txt"),
        ]);
        let error = extract(archive.path(), &sandbox.root()).unwrap_err();
        assert!(matches!(error, ArchiveError::ThroughSymlink(_)), "{error}");
        sandbox.assert_outside_untouched();
    }

    #[test]
    fn a_directory_entry_behind_a_symlink_cannot_change_the_links_target() {
        // Security probe finding 1: `d` -> outside, then `d/` with mode 0777 (and 1777) made
        // the outside directory 0777.
        for (link_target, mode) in [("../outside", 0o777), ("../outside", 0o1777)] {
            let sandbox = Sandbox::new();
            let absolute = sandbox.outside().display().to_string();
            for target in [link_target, absolute.as_str()] {
                let archive = zip_of(&[
                    Entry {
                        name: "d",
                        mode: LINK | 0o777,
                        content: target.as_bytes(),
                    },
                    Entry {
                        name: "d/",
                        mode: DIR | mode,
                        content: b"",
                    },
                ]);
                let error = extract(archive.path(), &sandbox.root()).unwrap_err();
                assert!(matches!(error, ArchiveError::ThroughSymlink(_)), "{error}");
                sandbox.assert_outside_untouched();
                std::fs::remove_file(sandbox.root().join("d")).unwrap();
            }
        }
    }

    #[test]
    fn a_symlink_already_in_the_project_is_not_followed_by_a_directory_entry() {
        let sandbox = Sandbox::new();
        std::os::unix::fs::symlink(sandbox.outside(), sandbox.root().join("vendor")).unwrap();
        let archive = zip_of(&[Entry {
            name: "vendor/",
            mode: DIR | 0o777,
            content: b"",
        }]);
        assert!(extract(archive.path(), &sandbox.root()).is_err());
        sandbox.assert_outside_untouched();
    }

    /// A committed fuzz seed: the zip crate's writer keeps only the 0777 bits of a mode, so
    /// archives with setuid, setgid or sticky bits are built by `fuzz/seeds/make_archive_seeds.py`.
    fn seed(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/archive_extract")
            .join(name)
    }

    #[test]
    fn only_the_permission_bits_survive_extraction() {
        // Security probe finding 3: setuid, setgid and sticky bits were kept.
        let sandbox = Sandbox::new();
        extract(&seed("zip-setuid-file"), &sandbox.root()).unwrap();
        extract(&seed("zip-setgid-sticky-directory"), &sandbox.root()).unwrap();
        let mode = |name: &str| {
            std::fs::symlink_metadata(sandbox.root().join(name))
                .unwrap()
                .mode()
        };
        // The seeds really carry the bits (mode 0104755 and 043777 in the archive).
        assert_eq!(mode("suid") & 0o170_000, 0o100_000);
        assert_eq!(mode("suid") & 0o7777, 0o755);
        assert_eq!(mode("shared") & 0o7777, 0o777);
        assert_eq!(mode("shared/file") & 0o7777, 0o644);
    }

    #[test]
    fn a_file_entry_replaces_a_symlink_instead_of_writing_through_it() {
        let sandbox = Sandbox::new();
        std::os::unix::fs::symlink(sandbox.outside().join("keep"), sandbox.root().join("f"))
            .unwrap();
        let archive = zip_of(&[file("f")]);
        extract(archive.path(), &sandbox.root()).unwrap();
        let metadata = std::fs::symlink_metadata(sandbox.root().join("f")).unwrap();
        assert!(metadata.is_file());
        assert_eq!(std::fs::read(sandbox.root().join("f")).unwrap(), b"payload");
        sandbox.assert_outside_untouched();
    }

    /// A zip of one deflated entry of `size` zeros.
    fn bomb(size: usize) -> tempfile::NamedTempFile {
        let archive = tempfile::NamedTempFile::new().unwrap();
        let mut zip = ZipWriter::new(archive.reopen().unwrap());
        zip.start_file(
            "zeros",
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            zip.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        zip.finish().unwrap();
        archive
    }

    #[test]
    fn an_archive_expanding_past_the_ratio_is_refused_and_its_partial_file_removed() {
        let sandbox = Sandbox::new();
        // 96 MiB of zeros deflate to about 95 KiB: far past 200:1 and past the 64 MiB floor.
        let archive = bomb(96 * 1024 * 1024);
        let size = std::fs::metadata(archive.path()).unwrap().len();
        assert!(size < 1024 * 1024, "{size}");
        let error = extract(archive.path(), &sandbox.root()).unwrap_err();
        assert!(
            matches!(error, ArchiveError::Ratio { ratio: 200, .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("ARCHIVE_EXTRACT_MAX_RATIO"),
            "{error}"
        );
        assert!(!sandbox.root().join("zeros").exists());
        // With the bound turned off the same archive extracts.
        let unbounded = ExtractLimits {
            max_ratio: 0,
            ..ExtractLimits::default()
        };
        extract_with(archive.path(), &sandbox.root(), unbounded).unwrap();
        assert_eq!(
            std::fs::metadata(sandbox.root().join("zeros"))
                .unwrap()
                .len(),
            96 * 1024 * 1024
        );
    }

    #[test]
    fn small_compressible_archives_stay_under_the_ratio_floor() {
        let sandbox = Sandbox::new();
        let archive = bomb(8 * 1024 * 1024);
        extract(archive.path(), &sandbox.root()).unwrap();
    }

    #[test]
    fn the_size_and_entry_bounds_are_enforced_with_their_variables_named() {
        let sandbox = Sandbox::new();
        let archive = zip_of(&[file("a"), file("b"), file("c")]);
        let limits = ExtractLimits {
            max_entries: 2,
            ..ExtractLimits::default()
        };
        let error = extract_with(archive.path(), &sandbox.root(), limits).unwrap_err();
        assert_eq!(
            error.to_string(),
            "archive has 3 entries, more than the limit of 2 (ARCHIVE_EXTRACT_MAX_ENTRIES)"
        );
        assert!(!sandbox.root().join("a").exists());

        let limits = ExtractLimits {
            max_size: 10,
            ..ExtractLimits::default()
        };
        let error = extract_with(archive.path(), &sandbox.root(), limits).unwrap_err();
        assert_eq!(
            error.to_string(),
            "extracting the archive would write more than 10 bytes (ARCHIVE_EXTRACT_MAX_SIZE)"
        );
        assert_eq!(std::fs::read(sandbox.root().join("a")).unwrap(), b"payload");
        assert!(!sandbox.root().join("b").exists());
    }

    #[test]
    fn limits_are_read_from_the_environment_and_bad_values_named() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        assert_eq!(
            ExtractLimits::from_lookup(lookup(&[])).unwrap(),
            ExtractLimits::default()
        );
        let limits = ExtractLimits::from_lookup(lookup(&[
            ("ARCHIVE_EXTRACT_MAX_SIZE", "1048576"),
            ("ARCHIVE_EXTRACT_MAX_RATIO", "0"),
            ("ARCHIVE_EXTRACT_MAX_ENTRIES", " 5 "),
        ]))
        .unwrap();
        assert_eq!(
            limits,
            ExtractLimits {
                max_entries: 5,
                max_size: 1_048_576,
                max_ratio: 0
            }
        );
        let error = ExtractLimits::from_lookup(lookup(&[("ARCHIVE_EXTRACT_MAX_SIZE", "10GB")]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid ARCHIVE_EXTRACT_MAX_SIZE: \"10GB\" (expected a whole number, 0 for no limit)"
        );
    }

    #[test]
    fn git_paths_are_recognised_as_upstream_does() {
        assert!(is_git_path(".git/config"));
        assert!(is_git_path("./.git/hooks/pre-commit"));
        assert!(is_git_path(".git"));
        assert!(!is_git_path("sub/.git/config"));
        assert!(!is_git_path(".gitignore"));
    }

    #[test]
    fn corrupt_archives_fail_clearly() {
        let archive = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(archive.path(), b"PK\x03\x04 definitely not a zip").unwrap();
        let target = tempfile::tempdir().unwrap();
        let error = extract(archive.path(), target.path()).unwrap_err();
        assert!(error.to_string().starts_with("zip: "), "{error}");
    }
}
