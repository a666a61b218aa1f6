//! The kit's primitives under concurrency (threads opening their own descriptors, so `flock`
//! excludes them as it does separate processes) and a whole driver lifecycle on a fake backend.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use driver_kit::{
    resource_name, run_for, Backend, Failure, FileLock, JobKey, PullGate, Settings, Slots,
    StateStore,
};

fn key(job: &str) -> JobKey {
    JobKey {
        runner: "abc123".into(),
        job: job.into(),
    }
}

#[test]
fn a_job_lock_excludes_a_second_holder_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let held = FileLock::acquire(&path).unwrap();
    let other = path.clone();
    let attempt = std::thread::spawn(move || FileLock::try_acquire(&other).unwrap().is_some());
    assert!(!attempt.join().unwrap());
    drop(held);
    assert!(FileLock::try_acquire(&path).unwrap().is_some());
}

#[test]
fn state_round_trips_and_removal_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let state = store.lock(&key("7")).unwrap();
    assert_eq!(state.load::<Vec<u32>>().unwrap(), None);
    state.save(&vec![1u32, 2, 3]).unwrap();
    assert_eq!(state.load::<Vec<u32>>().unwrap(), Some(vec![1, 2, 3]));
    state.remove();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn concurrent_pulls_of_one_image_pull_once() {
    let dir = tempfile::tempdir().unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let gate = PullGate::new(dir.path());
            let pulled = pulled.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                gate.ensure(
                    "registry.local/debian:bookworm",
                    || Ok(pulled.load(Ordering::SeqCst) > 0),
                    || {
                        std::thread::sleep(Duration::from_millis(200));
                        pulled.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    },
                )
                .unwrap()
            })
        })
        .collect();
    let pulled_here: usize = threads
        .into_iter()
        .map(|thread| thread.join().unwrap() as usize)
        .sum();
    assert_eq!(pulled.load(Ordering::SeqCst), 1);
    assert_eq!(pulled_here, 1);
}

#[test]
fn a_full_host_makes_the_next_job_wait_for_a_slot_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let states = StateStore::new(dir.path().join("state"));
    let slots = Slots::new(dir.path().join("slots"), 1);
    // Job 1 holds the only slot, and has state (it is alive).
    let state = states.lock(&key("1")).unwrap();
    state.save(&"alive").unwrap();
    drop(state);
    assert_eq!(slots.claim(&key("1"), &states, Instant::now()).unwrap(), 0);
    // The same job claiming again keeps its slot.
    assert_eq!(slots.claim(&key("1"), &states, Instant::now()).unwrap(), 0);

    let start = Instant::now();
    let error = slots
        .claim(
            &key("2"),
            &states,
            Instant::now() + Duration::from_millis(700),
        )
        .unwrap_err();
    assert!(error.0.contains("no capacity"), "{error}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // Job 1 ends while job 2 waits: job 2 gets the slot.
    let releaser = {
        let slots = slots.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            slots.release(&key("1"));
        })
    };
    assert_eq!(
        slots
            .claim(&key("2"), &states, Instant::now() + Duration::from_secs(5))
            .unwrap(),
        0
    );
    releaser.join().unwrap();
}

#[test]
fn a_slot_whose_owner_left_no_state_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let states = StateStore::new(dir.path().join("state"));
    let slots = Slots::new(dir.path().join("slots"), 1);
    // Job 1 claimed and crashed before saving any state.
    slots.claim(&key("1"), &states, Instant::now()).unwrap();
    assert_eq!(slots.claim(&key("2"), &states, Instant::now()).unwrap(), 0);
}

#[test]
fn a_slot_of_a_prepare_still_running_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let states = StateStore::new(dir.path().join("state"));
    let slots = Slots::new(dir.path().join("slots"), 1);
    // Job 1 is inside prepare: it holds its lock and has no state yet.
    let preparing = states.lock(&key("1")).unwrap();
    slots.claim(&key("1"), &states, Instant::now()).unwrap();
    assert!(slots.claim(&key("2"), &states, Instant::now()).is_err());
    drop(preparing);
    // Its prepare died: the slot is free.
    assert_eq!(slots.claim(&key("2"), &states, Instant::now()).unwrap(), 0);
}

#[test]
fn resource_names_are_deterministic_and_safe() {
    assert_eq!(resource_name("ci VM", &key("42")), "ci-vm-abc123-42");
    assert_eq!(
        resource_name("ci VM", &key("42")),
        resource_name("ci VM", &key("42"))
    );
}

/// An in-memory backend that counts what it was asked to do.
#[derive(Default)]
struct Fake {
    images: Vec<String>,
    resources: BTreeMap<String, u32>,
    next: u32,
    creates: u32,
    pulls: u32,
    fail_destroy: bool,
    exit_code: i32,
}

impl Backend for Fake {
    type Resource = u32;

    fn image(&self) -> String {
        "debian:bookworm".into()
    }
    fn image_present(&mut self, image: &str) -> Result<bool, Failure> {
        Ok(self.images.iter().any(|known| known == image))
    }
    fn pull(&mut self, image: &str) -> Result<(), Failure> {
        self.pulls += 1;
        self.images.push(image.into());
        Ok(())
    }
    fn find(&mut self, name: &str) -> Result<Option<u32>, Failure> {
        Ok(self.resources.get(name).copied())
    }
    fn create(&mut self, name: &str, _image: &str) -> Result<u32, Failure> {
        self.creates += 1;
        self.next += 1;
        self.resources.insert(name.into(), self.next);
        Ok(self.next)
    }
    fn ready(&mut self, _resource: &u32) -> Result<bool, Failure> {
        Ok(true)
    }
    fn run(&mut self, _resource: &u32, _script: &Path, _stage: &str) -> Result<i32, Failure> {
        Ok(self.exit_code)
    }
    fn destroy(&mut self, name: &str) -> Result<(), Failure> {
        if self.fail_destroy {
            return Err(Failure("backend unreachable".into()));
        }
        self.resources.remove(name);
        Ok(())
    }
}

fn settings(dir: &Path) -> Settings {
    Settings {
        prefix: "kit".into(),
        state_dir: dir.to_path_buf(),
        max_jobs: 2,
        capacity_timeout: Duration::from_secs(1),
        ready_timeout: Duration::from_secs(1),
        ready_interval: Duration::from_millis(10),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|item| item.to_string()).collect()
}

#[test]
fn a_driver_lifecycle_on_the_kit() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path());
    let mut backend = Fake::default();
    let job = key("100");
    assert_eq!(
        run_for(&mut backend, &settings, &job, &args(&["prepare"])),
        0
    );
    assert_eq!((backend.pulls, backend.creates), (1, 1));
    // A second prepare attempt of the same job reuses the resource.
    assert_eq!(
        run_for(&mut backend, &settings, &job, &args(&["prepare"])),
        0
    );
    assert_eq!((backend.pulls, backend.creates), (1, 1));
    assert_eq!(
        run_for(
            &mut backend,
            &settings,
            &job,
            &args(&["run", "/s", "build_script"])
        ),
        0
    );
    assert_eq!(
        run_for(&mut backend, &settings, &job, &args(&["cleanup"])),
        0
    );
    assert!(backend.resources.is_empty());
    // Cleanup again, and cleanup of a job that never prepared: still fine, nothing left.
    assert_eq!(
        run_for(&mut backend, &settings, &job, &args(&["cleanup"])),
        0
    );
    assert_eq!(
        run_for(&mut backend, &settings, &key("999"), &args(&["cleanup"])),
        0
    );
    let left: Vec<_> = walk(dir.path());
    assert!(
        left.iter()
            .all(|path| path.contains("slots.lock") || path.contains("pull-")),
        "{left:?}"
    );
    // A run without prepare is a system failure (2), not a build failure.
    assert_eq!(
        run_for(
            &mut backend,
            &settings,
            &key("5"),
            &args(&["run", "/s", "build_script"])
        ),
        2
    );
}

#[test]
fn a_resource_created_by_a_crashed_attempt_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path());
    let mut backend = Fake::default();
    let job = key("200");
    // The attempt created the VM and died before writing its state.
    backend
        .create(&resource_name("kit", &job), "debian:bookworm")
        .unwrap();
    assert_eq!(
        run_for(&mut backend, &settings, &job, &args(&["prepare"])),
        0
    );
    assert_eq!(
        backend.creates, 1,
        "the next attempt adopts, it does not create"
    );
    assert_eq!(
        run_for(&mut backend, &settings, &job, &args(&["cleanup"])),
        0
    );
    assert!(backend.resources.is_empty());
}

#[test]
fn cleanup_removes_local_state_even_when_the_backend_fails() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path());
    let backend = Arc::new(Mutex::new(Fake::default()));
    let job = key("300");
    let mut fake = backend.lock().unwrap();
    assert_eq!(run_for(&mut *fake, &settings, &job, &args(&["prepare"])), 0);
    fake.fail_destroy = true;
    assert_eq!(run_for(&mut *fake, &settings, &job, &args(&["cleanup"])), 0);
    assert!(!walk(dir.path()).iter().any(|path| path.ends_with(".json")));
    // The slot is free again for another job.
    assert_eq!(
        run_for(&mut *fake, &settings, &key("301"), &args(&["prepare"])),
        0
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.to_string_lossy().into_owned());
        }
    }
    out
}
