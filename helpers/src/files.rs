//! Which files an artifact or cache contains: `--path` patterns, `--exclude` patterns and
//! `--untracked` (git's untracked files), relative to the working directory, with upstream's
//! messages (`fileArchiver`). Paths outside the working directory are refused.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::path::{Component, Path, PathBuf};

use crate::glob;
use crate::log;

/// The selected files: relative `/`-separated path → its `lstat` metadata.
pub type FileSet = BTreeMap<String, Metadata>;

/// A `--path` or `--exclude` pattern that points outside the working directory.
#[derive(Debug, thiserror::Error)]
#[error("artifact path is not a subpath of project directory: {path}")]
pub struct OutsideProject {
    /// The pattern as given.
    pub path: String,
}

/// What goes into an artifacts or cache archive: the helper's `--path`, `--exclude` and
/// `--untracked` flags.
#[derive(Debug, Clone, Default)]
pub struct FileSelection {
    /// `--path` values: paths or doublestar globs relative to the working directory (`$VAR`s
    /// already expanded); a directory brings everything under it. Ones outside it are skipped.
    pub paths: Vec<String>,
    /// `--exclude` values: doublestar globs relative to the working directory; matching files are
    /// left out, and the log counts them per pattern.
    pub exclude: Vec<String>,
    /// `--untracked`: also take what `git ls-files -o` lists in the working directory (untracked
    /// files, ignored ones included).
    pub untracked: bool,
}

/// Lexically cleans a path: drops `.`, resolves `..` against earlier components.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() && path.is_absolute() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `base` when it lies inside it (both absolute and clean).
fn relative_inside(base: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(base).ok()?;
    let text = rest.to_string_lossy().replace('\\', "/");
    Some(if text.is_empty() { ".".into() } else { text })
}

struct Collector<'a> {
    wd: &'a Path,
    selection: &'a FileSelection,
    files: FileSet,
    excluded: BTreeMap<String, u64>,
    /// Directories already checked by [`Collector::through_symlink`].
    symlinked: std::collections::HashMap<String, bool>,
}

impl Collector<'_> {
    /// The pattern or path relative to the working directory, refusing anything outside it.
    fn relative_in_project(&self, path: &str) -> Result<String, OutsideProject> {
        let slash = path.replace('\\', "/");
        if clean(Path::new(&slash)) == clean(self.wd) {
            return Ok(".".into());
        }
        let (base, pattern) = if glob::has_meta(&slash) {
            glob::split_pattern(&slash)
        } else {
            (slash.clone(), String::new())
        };
        let absolute = clean(&self.wd.join(&base));
        let relative = relative_inside(self.wd, &absolute).ok_or_else(|| OutsideProject {
            path: path.to_string(),
        })?;
        Ok(match (relative.as_str(), pattern.is_empty()) {
            (_, true) => relative,
            (".", false) => pattern,
            (_, false) => format!("{relative}/{pattern}"),
        })
    }

    fn is_excluded(&self, relative: &str) -> Option<String> {
        for pattern in &self.selection.exclude {
            match self.relative_in_project(pattern) {
                Ok(relative_pattern) => {
                    if glob::matches(&relative_pattern, relative) {
                        return Some(pattern.clone());
                    }
                }
                Err(error) => {
                    log::warning(&format!("isExcluded: {error}"));
                    return None;
                }
            }
        }
        None
    }

    /// Adds one path found by a pattern or by git; false when skipped.
    fn process(&mut self, found: &str) -> bool {
        let absolute = clean(&self.wd.join(found));
        let Some(relative) = relative_inside(self.wd, &absolute) else {
            log::warning(&format!("{found}: not supported: outside build directory"));
            return false;
        };
        if let Some(rule) = self.is_excluded(&relative) {
            *self.excluded.entry(rule).or_default() += 1;
            return false;
        }
        if self.through_symlink(&relative) {
            // The extractor refuses such an entry, and its content is not the project's.
            log::warning(&format!(
                "{found}: not supported: the path goes through a symbolic link"
            ));
            return false;
        }
        match self.wd.join(&relative).symlink_metadata() {
            Ok(metadata) => {
                self.files.insert(relative, metadata);
                true
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => {
                log::warning(&format!("{found}: {error}"));
                false
            }
        }
    }

    /// Whether a directory on the way to `relative` (not `relative` itself) is a symlink that
    /// leads outside the working directory (one that stays inside, `dist -> build/dist`, is
    /// fine); answers are remembered per directory, as a walk asks about the same ones again.
    fn through_symlink(&mut self, relative: &str) -> bool {
        let mut parent = String::new();
        let mut components = relative.split('/').peekable();
        while let Some(component) = components.next() {
            if components.peek().is_none() {
                return false;
            }
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            let wd = self.wd;
            let is_link = *self.symlinked.entry(parent.clone()).or_insert_with(|| {
                let path = wd.join(&parent);
                let is_symlink = path
                    .symlink_metadata()
                    .is_ok_and(|metadata| metadata.file_type().is_symlink());
                is_symlink
                    && match (path.canonicalize(), wd.canonicalize()) {
                        (Ok(target), Ok(root)) => !target.starts_with(root),
                        _ => true,
                    }
            });
            if is_link {
                return true;
            }
        }
        false
    }

    fn process_path(&mut self, path: &str) {
        if path.is_empty() {
            log::warning("No matching files. Path is empty.");
            return;
        }
        let relative = match self.relative_in_project(path) {
            Ok(relative) => relative,
            Err(error) => {
                log::warning(&format!("processPath: {error}"));
                return;
            }
        };
        let mut found = 0;
        for matched in glob::glob(self.wd, &relative) {
            let mut visited = Vec::new();
            if matched == "." {
                glob::walk(self.wd, "", &mut |path| visited.push(path.to_string()));
            } else {
                glob::walk(self.wd, &matched, &mut |path| {
                    visited.push(path.to_string())
                });
            }
            for path in visited {
                if self.process(&path) {
                    found += 1;
                }
            }
        }
        if found == 0 {
            log::warning(&format!(
                "{path}: no matching files. Ensure that the artifact path is relative to the working directory ({})",
                self.wd.display()
            ));
        } else {
            log::info(&format!(
                "{path}: found {found} matching artifact files and directories"
            ));
        }
    }

    fn process_untracked(&mut self) {
        let output = std::process::Command::new("git")
            .args(["ls-files", "-o", "-z"])
            .current_dir(self.wd)
            .stderr(std::process::Stdio::inherit())
            .output();
        let output = match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => {
                log::warning(&format!("untracked: {}", output.status));
                return;
            }
            Err(error) => {
                log::warning(&format!("untracked: {error}"));
                return;
            }
        };
        let mut found = 0;
        for name in output.stdout.split(|byte| *byte == 0) {
            if name.is_empty() {
                continue;
            }
            if self.process(&String::from_utf8_lossy(name)) {
                found += 1;
            }
        }
        if found == 0 {
            log::warning("untracked: no files");
        } else {
            log::info(&format!("untracked: found {found} files"));
        }
    }
}

impl FileSelection {
    /// Collects the files under `wd` (an absolute, clean directory).
    pub fn enumerate(&self, wd: &Path) -> FileSet {
        let mut collector = Collector {
            wd,
            selection: self,
            files: FileSet::new(),
            excluded: BTreeMap::new(),
            symlinked: std::collections::HashMap::new(),
        };
        for path in &self.paths {
            collector.process_path(path);
        }
        if self.untracked {
            collector.process_untracked();
        }
        for (rule, count) in &collector.excluded {
            log::info(&format!("{rule}: excluded {count} files"));
        }
        collector.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in ["dist/a.bin", "dist/sub/b.bin", "dist/skip.log", "readme.md"] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        std::os::unix::fs::symlink("../readme.md", dir.path().join("dist/link")).unwrap();
        dir
    }

    #[test]
    fn directories_globs_and_excludes() {
        let dir = tree();
        let wd = clean(dir.path());
        let files = FileSelection {
            paths: vec!["dist".into(), "*.md".into()],
            exclude: vec!["dist/**/*.log".into()],
            untracked: false,
        }
        .enumerate(&wd);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec![
                "dist",
                "dist/a.bin",
                "dist/link",
                "dist/sub",
                "dist/sub/b.bin",
                "readme.md"
            ]
        );
        assert!(files["dist/link"].file_type().is_symlink());
    }

    #[test]
    fn paths_outside_the_project_are_refused() {
        let dir = tree();
        let wd = clean(&dir.path().join("dist"));
        let files = FileSelection {
            paths: vec!["../readme.md".into(), "../**".into(), "/etc/passwd".into()],
            ..FileSelection::default()
        }
        .enumerate(&wd);
        assert!(files.is_empty(), "{files:?}");
    }

    #[test]
    fn paths_through_a_symlinked_directory_are_skipped() {
        // Security probe finding 11: `linkdir/host-secret.txt` with `linkdir` -> a directory
        // outside put the outside file's contents into the archive.
        let outer = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outer.path().join("host")).unwrap();
        std::fs::write(outer.path().join("host/host-secret.txt"), "secret").unwrap();
        let wd = clean(&outer.path().join("project"));
        std::fs::create_dir_all(wd.join("real")).unwrap();
        std::fs::write(wd.join("real/kept.txt"), "kept").unwrap();
        std::os::unix::fs::symlink("../host", wd.join("linkdir")).unwrap();
        // A link that stays inside the project is followed, as upstream does.
        std::os::unix::fs::symlink("real", wd.join("inside")).unwrap();
        let files = FileSelection {
            paths: vec![
                "linkdir/host-secret.txt".into(),
                "linkdir/*".into(),
                "linkdir".into(),
                "real".into(),
                "inside/kept.txt".into(),
            ],
            ..FileSelection::default()
        }
        .enumerate(&wd);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        // The link itself is archived as a link, as upstream does; nothing behind it.
        assert_eq!(
            names,
            vec!["inside/kept.txt", "linkdir", "real", "real/kept.txt"]
        );
        assert!(files["linkdir"].file_type().is_symlink());
    }
}
