//! Path patterns on the filesystem: the paths under a directory matching a doublestar pattern
//! (the matching itself is `runner_core::glob`).

use std::path::Path;

pub use runner_core::glob::{has_meta, matches, split_pattern};

/// The paths under `root` matching the relative `pattern`, without following symlinks,
/// `/`-separated and relative to `root`, sorted.
pub fn glob(root: &Path, pattern: &str) -> Vec<String> {
    if !has_meta(pattern) {
        let clean = pattern.trim_start_matches("./");
        return if root.join(clean).symlink_metadata().is_ok() {
            vec![clean.to_string()]
        } else {
            Vec::new()
        };
    }
    let (base, _) = split_pattern(pattern);
    let mut found = Vec::new();
    let start = if base == "." { String::new() } else { base };
    walk(root, &start, &mut |relative| {
        if matches(pattern, relative) {
            found.push(relative.to_string());
        }
    });
    found.sort();
    found
}

/// Calls `visit` for `relative` (when it is not empty) and everything beneath it, without
/// following symlinks.
pub fn walk(root: &Path, relative: &str, visit: &mut dyn FnMut(&str)) {
    let path = if relative.is_empty() {
        root.to_path_buf()
    } else {
        root.join(relative)
    };
    let Ok(metadata) = path.symlink_metadata() else {
        return;
    };
    if !relative.is_empty() {
        visit(relative);
    }
    if !metadata.is_dir() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(&path) else {
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let child = if relative.is_empty() {
            name
        } else {
            format!("{relative}/{name}")
        };
        walk(root, &child, visit);
    }
}
