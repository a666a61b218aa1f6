//! Unit tests of the stage writers' helpers.

use super::cache::relative_path;
use super::*;

#[test]
fn cache_keys_are_sanitized_like_upstream() {
    assert_eq!(sanitize_cache_key("a%2Fb").unwrap(), "a/b");
    assert_eq!(sanitize_cache_key("a\\b ").unwrap(), "a/b");
    assert_eq!(sanitize_cache_key("job/main").unwrap(), "job/main");
    assert!(sanitize_cache_key("..").is_err());
    assert!(sanitize_cache_key("").is_err());
}

#[test]
fn relative_archive_paths() {
    assert_eq!(
        relative_path(
            "/builds/group/project",
            "/cache/group/project/key/cache.zip"
        ),
        "../../../cache/group/project/key/cache.zip"
    );
}

#[test]
fn userinfo_is_stripped() {
    assert_eq!(
        strip_userinfo("https://gitlab-ci-token:abc@host:8080/g/p.git"),
        "https://host:8080/g/p.git"
    );
}
