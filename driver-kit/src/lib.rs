//! The driver kit: what every custom executor driver for a VM-like backend needs (seed 003),
//! done once, so a driver is a small [`Backend`] adapter plus `run_main`:
//!
//! - per-job state as JSON under a file lock keyed by runner and job ([`StateStore`]);
//! - per-image pull de-duplication across processes: one pulls, the others wait ([`PullGate`]);
//! - deterministic resource names, so an attempt that crashed after creating its resource is
//!   reclaimed by the next one instead of leaking ([`resource_name`]);
//! - capacity slots with a back-off wait bounded by a deadline ([`Slots`]);
//! - readiness waits ([`wait_until`]);
//! - the custom executor's exit-code contract ([`Failure`], [`exit_for_script`]);
//! - an idempotent cleanup that removes local state whatever the backend says ([`run_main`]).
//!
//! It knows the custom executor's environment (`CUSTOM_ENV_*`, `BUILD_EXIT_CODE_FILE`, ...) but
//! must not depend on any gitlab-runner-rs crate: drivers are separate programs.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failure the runner must see as a system failure (`SYSTEM_FAILURE_EXIT_CODE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure(error.to_string())
    }
}

fn env_code(name: &str, default: i32) -> i32 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// `SYSTEM_FAILURE_EXIT_CODE` from the runner (2 by default).
pub fn system_failure_exit_code() -> i32 {
    env_code("SYSTEM_FAILURE_EXIT_CODE", 2)
}

/// The driver's exit for a stage script that exited `code`: 0, or `BUILD_FAILURE_EXIT_CODE`
/// with the script's code written to `BUILD_EXIT_CODE_FILE` first.
pub fn exit_for_script(code: i32) -> i32 {
    if code == 0 {
        return 0;
    }
    if let Some(file) = std::env::var_os("BUILD_EXIT_CODE_FILE") {
        let _ = std::fs::write(file, format!("{code}\n"));
    }
    env_code("BUILD_FAILURE_EXIT_CODE", 1)
}

/// Which job a driver call belongs to: runner short token and job id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobKey {
    /// The runner's short token (`CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN`); `runner` when it is unset.
    pub runner: String,
    /// The job's id (`CUSTOM_ENV_CI_JOB_ID`).
    pub job: String,
}

impl JobKey {
    /// From `CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN` and `CUSTOM_ENV_CI_JOB_ID`.
    pub fn from_env() -> Result<Self, Failure> {
        let get = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.is_empty())
                .ok_or_else(|| Failure(format!("{name} is not set: not called by a runner?")))
        };
        Ok(Self {
            runner: get("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN").unwrap_or_else(|_| "runner".into()),
            job: get("CUSTOM_ENV_CI_JOB_ID")?,
        })
    }

    fn file_stem(&self) -> String {
        sanitize(&format!("{}-{}", self.runner, self.job))
    }
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// The backend resource name of a job: the same for every attempt, so a resource an attempt
/// created before crashing is found again.
pub fn resource_name(prefix: &str, key: &JobKey) -> String {
    format!("{}-{}", sanitize(prefix), key.file_stem())
}

/// An exclusive `flock` on a file, released when dropped (or when the process dies).
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    fn open(path: &Path) -> std::io::Result<File> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    }

    /// Waits for the lock.
    pub fn acquire(path: &Path) -> std::io::Result<Self> {
        let file = Self::open(path)?;
        file.lock()?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Takes the lock only if it is free.
    pub fn try_acquire(path: &Path) -> std::io::Result<Option<Self>> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(error)) => return Err(error),
        }
        Ok(Some(Self {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the descriptor would release the lock too; unlocking says so at once.
        let _ = self.file.unlock();
    }
}

/// Writes `data` to `path` atomically (a temp file in the same directory, then rename).
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    {
        let mut file = File::create(&temp)?;
        file.write_all(data)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)
}

/// Per-job state files under one directory, each guarded by its job's lock.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

/// The locked state of one job; the lock is held until this is dropped.
pub struct JobState {
    _lock: FileLock,
    state: PathBuf,
    lock_path: PathBuf,
}

impl StateStore {
    /// A store whose `<runner>-<job>.json` state and `.lock` files live in `dir` (created when
    /// first needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Locks the job's state: overlapping prepare, run and cleanup calls of one job wait.
    pub fn lock(&self, key: &JobKey) -> Result<JobState, Failure> {
        let stem = key.file_stem();
        let lock_path = self.dir.join(format!("{stem}.lock"));
        let lock = FileLock::acquire(&lock_path)
            .map_err(|error| Failure(format!("locking {}: {error}", lock_path.display())))?;
        Ok(JobState {
            _lock: lock,
            state: self.dir.join(format!("{stem}.json")),
            lock_path,
        })
    }

    /// Whether a job is alive: it has state, or one of its calls holds its lock right now (a
    /// prepare that has not saved its state yet).
    pub fn alive(&self, stem: &str) -> bool {
        if self.dir.join(format!("{stem}.json")).exists() {
            return true;
        }
        let lock = self.dir.join(format!("{stem}.lock"));
        lock.exists() && matches!(FileLock::try_acquire(&lock), Ok(None))
    }
}

impl JobState {
    /// The job's saved state; `None` when nothing was saved yet or it was removed. A file that is
    /// not JSON of `T` is a [`Failure`] naming it.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, Failure> {
        match std::fs::read(&self.state) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| Failure(format!("reading {}: {error}", self.state.display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Failure(format!(
                "reading {}: {error}",
                self.state.display()
            ))),
        }
    }

    /// Saves `value` as the job's state (pretty-printed JSON), replacing the old file atomically.
    pub fn save<T: Serialize>(&self, value: &T) -> Result<(), Failure> {
        let data = serde_json::to_vec_pretty(value).map_err(|error| Failure(error.to_string()))?;
        write_atomic(&self.state, &data)
            .map_err(|error| Failure(format!("writing {}: {error}", self.state.display())))
    }

    /// Removes the state and the lock file (the lock itself is released on drop).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.state);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// One puller per image across every driver process; the others wait for it.
#[derive(Debug, Clone)]
pub struct PullGate {
    dir: PathBuf,
}

impl PullGate {
    /// A gate with its per-image lock files (`pull-<image>.lock`) in `dir`; only processes that
    /// use the same directory wait for each other.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Makes sure `image` is present: under the image's lock, checks `present` and calls `pull`
    /// only when it is not. Returns whether this call pulled.
    pub fn ensure(
        &self,
        image: &str,
        present: impl FnOnce() -> Result<bool, Failure>,
        pull: impl FnOnce() -> Result<(), Failure>,
    ) -> Result<bool, Failure> {
        let path = self.dir.join(format!("pull-{}.lock", sanitize(image)));
        let _lock = FileLock::acquire(&path)
            .map_err(|error| Failure(format!("locking {}: {error}", path.display())))?;
        if present()? {
            return Ok(false);
        }
        pull()?;
        Ok(true)
    }
}

/// At most `max` jobs hold a slot; a slot whose owner's state is gone is free again.
#[derive(Debug, Clone)]
pub struct Slots {
    dir: PathBuf,
    max: usize,
}

impl Slots {
    /// `max` slots (at least 1) with their owner files (`slot-<n>`) in `dir`; only processes that
    /// use the same directory share them.
    pub fn new(dir: impl Into<PathBuf>, max: usize) -> Self {
        Self {
            dir: dir.into(),
            max: max.max(1),
        }
    }

    fn owner_file(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("slot-{slot}"))
    }

    /// Claims a slot for `key`, waiting with back-off (100 ms doubling to 5 s) until `deadline`.
    /// Calling it again for a job that holds a slot returns the same slot. When every slot is
    /// busy it says so once on stderr (the job log, for a custom driver), so a job that waits
    /// shows why.
    pub fn claim(
        &self,
        key: &JobKey,
        states: &StateStore,
        deadline: Instant,
    ) -> Result<usize, Failure> {
        let mut pause = Duration::from_millis(100);
        let mut said = false;
        loop {
            if let Some(slot) = self.try_claim(key, states)? {
                return Ok(slot);
            }
            if !said {
                eprintln!(
                    "All {} slots are busy; waiting for one until the prepare deadline",
                    self.max
                );
                said = true;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure(format!(
                    "no capacity: all {} slots stayed busy until the prepare deadline",
                    self.max
                )));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn try_claim(&self, key: &JobKey, states: &StateStore) -> Result<Option<usize>, Failure> {
        let table = self.dir.join("slots.lock");
        let _lock = FileLock::acquire(&table)
            .map_err(|error| Failure(format!("locking {}: {error}", table.display())))?;
        let me = key.file_stem();
        let mut free = None;
        for slot in 0..self.max {
            match std::fs::read_to_string(self.owner_file(slot)) {
                Ok(owner) if owner == me => return Ok(Some(slot)),
                // An owner without state or a live call crashed, or was cleaned up.
                Ok(owner) if !states.alive(&owner) && free.is_none() => free = Some(slot),
                Ok(_) => {}
                Err(_) if free.is_none() => free = Some(slot),
                Err(_) => {}
            }
        }
        if let Some(slot) = free {
            write_atomic(&self.owner_file(slot), me.as_bytes())?;
        }
        Ok(free)
    }

    /// Gives back `key`'s slot, if it holds one.
    pub fn release(&self, key: &JobKey) {
        let table = self.dir.join("slots.lock");
        let Ok(_lock) = FileLock::acquire(&table) else {
            return;
        };
        let me = key.file_stem();
        for slot in 0..self.max {
            if std::fs::read_to_string(self.owner_file(slot)).is_ok_and(|owner| owner == me) {
                let _ = std::fs::remove_file(self.owner_file(slot));
            }
        }
    }
}

/// `timeout` from now; a timeout too long for the clock (a driver's settings can say anything)
/// is a century, which is as good as never.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Polls `ready` every `interval` until it says yes or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut ready: impl FnMut() -> Result<bool, Failure>,
) -> Result<(), Failure> {
    let deadline = deadline_after(timeout);
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure(format!(
                "{what} not ready after {}s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(interval);
    }
}

/// What a driver implements; the kit does the rest.
pub trait Backend {
    /// What the kit stores per job, to find the resource again in `run` and `cleanup`.
    type Resource: Serialize + DeserializeOwned;

    /// The image the job needs.
    fn image(&self) -> String;
    /// Whether the backend already holds `image`; asked under the image's pull lock.
    fn image_present(&mut self, image: &str) -> Result<bool, Failure>;
    /// Fetches `image`; called only after [`Backend::image_present`] said no, by one process at a
    /// time per image.
    fn pull(&mut self, image: &str) -> Result<(), Failure>;
    /// A resource an earlier attempt created under `name`, if it exists.
    fn find(&mut self, name: &str) -> Result<Option<Self::Resource>, Failure>;
    /// Creates and starts the job's resource `name` from `image`; the kit saves what it returns
    /// as the job's state.
    fn create(&mut self, name: &str, image: &str) -> Result<Self::Resource, Failure>;
    /// Whether the resource can run scripts yet; polled every `ready_interval` until
    /// `ready_timeout` has passed.
    fn ready(&mut self, resource: &Self::Resource) -> Result<bool, Failure>;
    /// Runs a stage script; returns the script's exit code.
    fn run(
        &mut self,
        resource: &Self::Resource,
        script: &Path,
        stage: &str,
    ) -> Result<i32, Failure>;
    /// Removes the resource named `name`; must succeed when it is already gone.
    fn destroy(&mut self, name: &str) -> Result<(), Failure>;
}

/// How `run_main` runs a backend.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Resource names are `<prefix>-<runner>-<job>`.
    pub prefix: String,
    /// Directory of the kit's files (job state and locks, `slots/`, `pulls/`), shared by every
    /// process of the driver on this host.
    pub state_dir: PathBuf,
    /// Jobs at once on this host.
    pub max_jobs: usize,
    /// How long prepare may wait for a slot.
    pub capacity_timeout: Duration,
    /// How long prepare waits for [`Backend::ready`] once the resource exists.
    pub ready_timeout: Duration,
    /// Pause between two [`Backend::ready`] polls.
    pub ready_interval: Duration,
}

#[derive(Serialize, serde::Deserialize)]
struct Saved<R> {
    name: String,
    resource: R,
}

fn prepare<B: Backend>(backend: &mut B, settings: &Settings, key: &JobKey) -> Result<(), Failure> {
    let states = StateStore::new(&settings.state_dir);
    let state = states.lock(key)?;
    let name = resource_name(&settings.prefix, key);
    Slots::new(settings.state_dir.join("slots"), settings.max_jobs).claim(
        key,
        &states,
        deadline_after(settings.capacity_timeout),
    )?;
    let image = backend.image();
    let resource = match state.load::<Saved<B::Resource>>()? {
        Some(saved) => saved.resource,
        None => match backend.find(&name)? {
            // An attempt that crashed after creating its resource: adopt it.
            Some(resource) => resource,
            None => backend.create(&name, &image)?,
        },
    };
    let saved = Saved { name, resource };
    state.save(&saved)?;
    wait_until(
        &saved.name,
        settings.ready_timeout,
        settings.ready_interval,
        || backend.ready(&saved.resource),
    )
}

/// Makes the job's image present, pulling it under the per-image gate; returns whether this
/// call pulled.
pub fn ensure_image<B: Backend>(backend: &mut B, settings: &Settings) -> Result<bool, Failure> {
    let image = backend.image();
    let gate = PullGate::new(settings.state_dir.join("pulls"));
    let present = std::cell::RefCell::new(backend);
    gate.ensure(
        &image,
        || present.borrow_mut().image_present(&image),
        || present.borrow_mut().pull(&image),
    )
}

fn run_stage<B: Backend>(
    backend: &mut B,
    settings: &Settings,
    key: &JobKey,
    script: &Path,
    stage: &str,
) -> Result<i32, Failure> {
    let state = StateStore::new(&settings.state_dir).lock(key)?;
    let saved: Saved<B::Resource> = state.load()?.ok_or_else(|| {
        Failure(format!(
            "no state for job {}: prepare did not finish",
            key.job
        ))
    })?;
    // Other stages of this job may run while this one does.
    drop(state);
    backend.run(&saved.resource, script, stage)
}

fn cleanup<B: Backend>(backend: &mut B, settings: &Settings, key: &JobKey) {
    let states = StateStore::new(&settings.state_dir);
    let Ok(state) = states.lock(key) else {
        return;
    };
    let name = resource_name(&settings.prefix, key);
    if let Err(error) = backend.destroy(&name) {
        eprintln!("cleanup: destroying {name}: {error} (local state is removed anyway)");
    }
    Slots::new(settings.state_dir.join("slots"), settings.max_jobs).release(key);
    state.remove();
}

/// The whole driver: `prepare`, `run <script> <stage>` or `cleanup` as `args` (without the
/// program name) says, for the job the environment names. Returns the exit code for the runner;
/// cleanup always succeeds.
pub fn run_main<B: Backend>(backend: &mut B, settings: &Settings, args: &[String]) -> i32 {
    match JobKey::from_env() {
        Ok(key) => run_for(backend, settings, &key, args),
        // Nothing to clean for a job we cannot name.
        Err(_) if args.first().map(String::as_str) == Some("cleanup") => 0,
        Err(error) => {
            eprintln!("{error}");
            system_failure_exit_code()
        }
    }
}

/// [`run_main`] for an explicit job.
pub fn run_for<B: Backend>(
    backend: &mut B,
    settings: &Settings,
    key: &JobKey,
    args: &[String],
) -> i32 {
    let system = |error: Failure| {
        eprintln!("{error}");
        system_failure_exit_code()
    };
    match args.first().map(String::as_str) {
        Some("prepare") => {
            if let Err(error) = ensure_image(backend, settings) {
                return system(error);
            }
            match prepare(backend, settings, key) {
                Ok(()) => 0,
                Err(error) => system(error),
            }
        }
        Some("run") if args.len() >= 3 => {
            match run_stage(backend, settings, key, Path::new(&args[1]), &args[2]) {
                Ok(code) => exit_for_script(code),
                Err(error) => system(error),
            }
        }
        Some("cleanup") => {
            cleanup(backend, settings, key);
            0
        }
        _ => system(Failure(format!(
            "usage: prepare | run <script> <stage> | cleanup (got {args:?})"
        ))),
    }
}
