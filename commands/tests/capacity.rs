//! The poller's capacity gate against a fake GitLab over real HTTP: a provider with no capacity
//! is not asked for a job (no request reaches GitLab), and a reservation goes with the job or
//! back to the provider when no job came.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::sync::atomic::{AtomicUsize, Ordering};

use gitlab_runner_rs::run::{gated_request, Gated};
use network::{GitlabClient, TlsOptions, VersionInfo};
use runner_core::executor::Capacity;
use runner_core::secret::Secret;
use runner_tests::{job_payload, FakeGitlab};
use serde_json::json;

const TOKEN: &str = "glrt-t1_capacitytoken";

/// A provider's capacity of `slots` jobs, counting what it hands out and gets back.
struct Slots {
    free: AtomicUsize,
    released: AtomicUsize,
}

impl Slots {
    fn new(slots: usize) -> Self {
        Self {
            free: AtomicUsize::new(slots),
            released: AtomicUsize::new(0),
        }
    }
}

/// One reserved slot.
#[derive(Debug)]
struct Slot;

impl Capacity for Slots {
    type Reservation = Slot;

    async fn acquire(&self) -> Option<Slot> {
        self.free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |free| {
                free.checked_sub(1)
            })
            .ok()
            .map(|_| Slot)
    }

    fn release(&self, _slot: Slot) {
        self.free.fetch_add(1, Ordering::SeqCst);
        self.released.fetch_add(1, Ordering::SeqCst);
    }
}

fn client(gitlab: &FakeGitlab) -> GitlabClient {
    GitlabClient::new(&gitlab.url(), &TlsOptions::default(), "capacity-test").unwrap()
}

async fn poll(slots: &Slots, client: &GitlabClient) -> Gated<Slot> {
    let info = VersionInfo::default();
    gated_request(
        slots.acquire(),
        |slot| slots.release(slot),
        client.request_job(&Secret::new(TOKEN.to_string()), "s_capacity", &info),
    )
    .await
}

#[tokio::test]
async fn a_provider_with_no_capacity_makes_the_poller_skip_the_request() {
    let gitlab = FakeGitlab::start(TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["true"],
        &[],
        json!([]),
        60,
    ));
    let client = client(&gitlab);
    let empty = Slots::new(0);
    for _ in 0..3 {
        assert!(matches!(poll(&empty, &client).await, Gated::NoCapacity));
    }
    assert_eq!(
        gitlab.job_requests(),
        0,
        "GitLab was asked without capacity"
    );
    assert_eq!(empty.released.load(Ordering::SeqCst), 0);

    // With room for one job, the next poll asks, and the job comes with the reservation.
    let one = Slots::new(1);
    match poll(&one, &client).await {
        Gated::Job { job: received, .. } => assert_eq!(received.id, job.id),
        other => panic!("expected the job, got {other:?}"),
    }
    assert_eq!(gitlab.job_requests(), 1);
    assert_eq!(
        one.released.load(Ordering::SeqCst),
        0,
        "the job's slot was given back"
    );
    // The slot is held by the job: the next poll does not ask.
    assert!(matches!(poll(&one, &client).await, Gated::NoCapacity));
    assert_eq!(gitlab.job_requests(), 1);
}

#[tokio::test]
async fn a_reservation_no_job_used_goes_back_to_the_provider() {
    let gitlab = FakeGitlab::start(TOKEN).await;
    let client = client(&gitlab);
    let one = Slots::new(1);
    for round in 1..=3 {
        assert!(matches!(
            poll(&one, &client).await,
            Gated::Other(network::JobRequestResult::NoJob)
        ));
        assert_eq!(one.released.load(Ordering::SeqCst), round);
        assert_eq!(one.free.load(Ordering::SeqCst), 1);
    }
    assert_eq!(gitlab.job_requests(), 3);

    // A refused request gives the slot back too.
    let refused =
        GitlabClient::new(&gitlab.url(), &TlsOptions::default(), "capacity-test").unwrap();
    let info = VersionInfo::default();
    let gated = gated_request(
        one.acquire(),
        |slot| one.release(slot),
        refused.request_job(&Secret::new("glrt-wrong".to_string()), "s_capacity", &info),
    )
    .await;
    assert!(matches!(
        gated,
        Gated::Other(network::JobRequestResult::Forbidden)
    ));
    assert_eq!(one.free.load(Ordering::SeqCst), 1);
}
