//! Upstream's volume manager (`executors/docker/internal/volumes`): what each `volumes` entry
//! and the builds directory become. Pure planning; the executor creates the named volumes.
//!
//! - `source:destination[:mode]` is a bind, as written (a relative destination is joined onto
//!   the project directory).
//! - A lone `destination` is a cache volume: with `disable_cache` a temporary volume removed at
//!   cleanup; with `cache_dir` a host directory `<cache_dir>/<unique>/<md5(destination)>`; else
//!   the named volume `<unique>-cache-<md5(destination)>`, kept for the next job of the same
//!   runner, project and concurrency slot.
//! - The builds directory: for `GIT_STRATEGY=fetch` a cache volume like the above (so the
//!   checkout persists); otherwise a temporary volume. Skipped when an entry already mounts it.
//!
//! Names and host paths get `-protected` for protected refs, so unprotected jobs never see a
//! protected job's files.

/// A `volumes` entry or builds directory that cannot be mounted (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// A `volumes` entry that is neither a lone container path nor `host:container[:mode]` with
    /// a host part (the entry as written).
    #[error("unsupported volume definition {0}")]
    Unsupported(String),
    /// Two `volumes` entries mount the same container path (the path, made absolute).
    #[error("volume for container path {0:?} is already defined")]
    AlreadyDefined(String),
    /// A container path that is `/` (or only slashes), for an entry or the builds directory.
    #[error("build directory needs to be a non-root path")]
    RootPath,
}

/// What the plan is made from.
#[derive(Debug, Clone, Default)]
pub struct VolumeSettings {
    /// `[runners.docker] cache_dir`; empty: named volumes.
    pub cache_dir: String,
    /// The project directory, for relative destinations.
    pub base_path: String,
    /// `ProjectRealUniqueName`: names of volumes kept across jobs.
    pub unique_name: String,
    /// The job's container name prefix: names of temporary volumes.
    pub temporary_name: String,
    /// `[runners.docker] disable_cache`: lone container paths get temporary volumes, removed at
    /// cleanup, instead of cache volumes.
    pub disable_cache: bool,
    /// The job's ref is protected, or one of its cache keys ends in `-protected`: volume names and
    /// `cache_dir` paths get the `-protected` suffix.
    pub protected: bool,
}

/// A named volume the job needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedVolume {
    /// Docker volume name, `<unique or temporary name>-cache-<md5 of destination>[-protected]`.
    pub name: String,
    /// Absolute container path the volume is mounted on.
    pub destination: String,
    /// Kept after the job (a cache); temporary volumes are removed at cleanup.
    pub reusable: bool,
}

/// The binds of every job container and the named volumes behind them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumePlan {
    /// `source:destination[:mode]` binds for the containers' host config, named volumes included.
    pub binds: Vec<String>,
    /// The named volumes to create before the containers, cache and temporary ones alike.
    pub volumes: Vec<NamedVolume>,
    /// Destinations already mounted.
    destinations: Vec<String>,
}

impl VolumePlan {
    /// Temporary volumes, removed at cleanup.
    pub fn temporary(&self) -> impl Iterator<Item = &NamedVolume> {
        self.volumes.iter().filter(|volume| !volume.reusable)
    }
}

/// Plans `volumes` and then the builds directory.
pub fn plan(
    settings: &VolumeSettings,
    volumes: &[String],
    builds_dir: &str,
    git_fetch: bool,
) -> Result<VolumePlan, VolumeError> {
    let mut plan = VolumePlan::default();
    for volume in volumes.iter().filter(|volume| !volume.is_empty()) {
        add(settings, &mut plan, volume)?;
    }
    let mounted = plan
        .destinations
        .iter()
        .any(|destination| contains(destination, builds_dir));
    if !mounted {
        if git_fetch {
            add(settings, &mut plan, builds_dir)?;
        } else {
            let destination = absolute(settings, builds_dir)?;
            named(settings, &mut plan, destination, false)?;
        }
    }
    Ok(plan)
}

fn add(settings: &VolumeSettings, plan: &mut VolumePlan, volume: &str) -> Result<(), VolumeError> {
    let parts: Vec<&str> = volume.split(':').collect();
    match parts.as_slice() {
        [destination] => {
            let destination = absolute(settings, destination)?;
            if settings.disable_cache {
                named(settings, plan, destination, false)
            } else if !settings.cache_dir.is_empty() {
                let host = format!(
                    "{}/{}/{}",
                    settings.cache_dir.trim_end_matches('/'),
                    settings.unique_name,
                    protected(settings, hash(&destination))
                );
                mount(plan, host, destination, None)
            } else {
                named(settings, plan, destination, true)
            }
        }
        [source, destination] | [source, destination, _] if !source.is_empty() => {
            let destination = absolute(settings, destination)?;
            mount(plan, source.to_string(), destination, parts.get(2).copied())
        }
        _ => Err(VolumeError::Unsupported(volume.to_string())),
    }
}

/// A named volume `<unique or temporary name>-cache-<md5(destination)>[-protected]`.
fn named(
    settings: &VolumeSettings,
    plan: &mut VolumePlan,
    destination: String,
    reusable: bool,
) -> Result<(), VolumeError> {
    let base = if reusable {
        &settings.unique_name
    } else {
        &settings.temporary_name
    };
    let name = protected(settings, format!("{base}-cache-{}", hash(&destination)));
    plan.volumes.push(NamedVolume {
        name: name.clone(),
        destination: destination.clone(),
        reusable,
    });
    mount(plan, name, destination, None)
}

fn mount(
    plan: &mut VolumePlan,
    source: String,
    destination: String,
    mode: Option<&str>,
) -> Result<(), VolumeError> {
    if plan.destinations.contains(&destination) {
        return Err(VolumeError::AlreadyDefined(destination));
    }
    plan.binds.push(match mode {
        Some(mode) => format!("{source}:{destination}:{mode}"),
        None => format!("{source}:{destination}"),
    });
    plan.destinations.push(destination);
    Ok(())
}

fn absolute(settings: &VolumeSettings, path: &str) -> Result<String, VolumeError> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(VolumeError::RootPath);
    }
    if path.starts_with('/') {
        Ok(trimmed.to_string())
    } else {
        Ok(format!(
            "{}/{trimmed}",
            settings.base_path.trim_end_matches('/')
        ))
    }
}

/// `outer` is `inner` or one of its parents.
fn contains(outer: &str, inner: &str) -> bool {
    let outer = outer.trim_end_matches('/');
    let inner = inner.trim_end_matches('/');
    inner == outer || inner.starts_with(&format!("{outer}/"))
}

fn protected(settings: &VolumeSettings, name: String) -> String {
    if settings.protected {
        name + "-protected"
    } else {
        name
    }
}

/// Hex MD5 of the container path, as upstream names cache volumes.
fn hash(path: &str) -> String {
    format!("{:x}", md5::compute(path.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> VolumeSettings {
        VolumeSettings {
            cache_dir: String::new(),
            base_path: "/builds/group/project".into(),
            unique_name: "runner-abc".into(),
            temporary_name: "runner-x-project-1-concurrent-0-0011".into(),
            disable_cache: false,
            protected: false,
        }
    }

    #[test]
    fn a_lone_path_is_a_reusable_cache_volume_named_by_md5() {
        let plan = plan(&settings(), &["/cache".into()], "/builds", false).unwrap();
        // md5("/cache")
        let cache = "runner-abc-cache-3c3f060a0374fc8bc39395164f415a70";
        assert_eq!(
            plan.binds,
            vec![
                format!("{cache}:/cache"),
                // md5("/builds")
                "runner-x-project-1-concurrent-0-0011-cache-c33bcaa1fd2c77edfc3893b41966cea8:/builds"
                    .to_string(),
            ]
        );
        assert_eq!(plan.volumes[0].name, cache);
        assert!(plan.volumes[0].reusable);
        assert!(!plan.volumes[1].reusable);
        assert_eq!(plan.temporary().count(), 1);
    }

    #[test]
    fn fetch_keeps_the_builds_volume_and_protected_refs_get_their_own() {
        let mut settings = settings();
        settings.protected = true;
        let plan = plan(&settings, &[], "/builds", true).unwrap();
        assert_eq!(
            plan.volumes,
            vec![NamedVolume {
                name: format!("runner-abc-cache-{}-protected", hash("/builds")),
                destination: "/builds".into(),
                reusable: true,
            }]
        );
    }

    #[test]
    fn cache_dir_and_disable_cache_change_what_a_cache_volume_is() {
        let mut with_dir = settings();
        with_dir.cache_dir = "/srv/cache/".into();
        let plan_dir = plan(&with_dir, &["data".into()], "/builds", true).unwrap();
        let data = "/builds/group/project/data";
        assert_eq!(
            plan_dir.binds,
            vec![
                format!("/srv/cache/runner-abc/{}:{data}", hash(data)),
                format!("/srv/cache/runner-abc/{}:/builds", hash("/builds")),
            ]
        );
        assert!(plan_dir.volumes.is_empty());

        let mut disabled = settings();
        disabled.disable_cache = true;
        let plan_off = plan(&disabled, &["/cache".into()], "/builds", true).unwrap();
        assert!(plan_off.volumes.iter().all(|volume| !volume.reusable));
        assert_eq!(plan_off.temporary().count(), 2);
    }

    #[test]
    fn binds_keep_their_mode_and_a_mounted_builds_dir_gets_no_volume() {
        let plan = plan(
            &settings(),
            &[
                "/srv/builds:/builds:rw".into(),
                "/etc/hosts:/x/hosts:ro".into(),
            ],
            "/builds",
            false,
        )
        .unwrap();
        assert_eq!(
            plan.binds,
            vec!["/srv/builds:/builds:rw", "/etc/hosts:/x/hosts:ro"]
        );
        assert!(plan.volumes.is_empty());
    }

    #[test]
    fn bad_definitions_are_refused_with_upstreams_words() {
        let error = plan(&settings(), &["/".into()], "/builds", false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "build directory needs to be a non-root path"
        );
        let error = plan(&settings(), &["a:b:c:d".into()], "/builds", false).unwrap_err();
        assert_eq!(error.to_string(), "unsupported volume definition a:b:c:d");
        let error = plan(
            &settings(),
            &["/cache".into(), "/tmp/x:/cache".into()],
            "/builds",
            false,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "volume for container path \"/cache\" is already defined"
        );
    }
}
