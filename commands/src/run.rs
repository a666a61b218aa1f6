//! `run` and `run-single`: poll GitLab for jobs and run them (the multi-runner loop).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use network::{GitlabClient, JobRequestResult, TlsOptions};
use runner_core::job::JobResponse;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, RunnerConfig, UnavailableRunner};
use crate::job::{version_info, ConcurrencyIds, JobEnvironment, JobResult, Provider};
use runner_core::feature_flags::FeatureFlag;

/// One `[[runners]]` entry at work.
struct Worker {
    runner: Arc<RunnerConfig>,
    environment: Arc<JobEnvironment>,
    /// `limit`: jobs of this runner at once (0 = unlimited).
    jobs: Arc<Semaphore>,
    /// `request_concurrency`: job requests in flight at once, adaptive by default.
    requests: Arc<RequestSlots>,
    unhealthy_count: AtomicU32,
    unhealthy_until: Mutex<Option<Instant>>,
}

impl Worker {
    fn new(
        runner: RunnerConfig,
        system_id: &str,
        user: Option<String>,
        ids: Arc<ConcurrencyIds>,
        connection_max_age: Duration,
    ) -> anyhow::Result<Self> {
        let runner = Arc::new(runner);
        let provider = Provider::for_runner(&runner);
        let client = GitlabClient::new(
            &runner.url,
            &network::tls::with_certificate_directory(
                &runner.url,
                TlsOptions {
                    ca_file: runner.tls_ca_file.clone(),
                    cert_file: runner.tls_cert_file.clone(),
                    key_file: runner.tls_key_file.clone(),
                },
                network::tls::default_certificate_directory().as_deref(),
            ),
            &user_agent(),
        )
        .with_context(|| format!("configuring the client of runner {:?}", runner.name))?
        .with_connection_max_age(connection_max_age);
        let limit = if runner.limit == 0 {
            Semaphore::MAX_PERMITS
        } else {
            runner.limit
        };
        Ok(Self {
            environment: Arc::new(JobEnvironment {
                runner: runner.clone(),
                provider,
                client: Arc::new(client),
                system_id: system_id.to_string(),
                user,
                ids,
            }),
            jobs: Arc::new(Semaphore::new(limit)),
            requests: Arc::new(RequestSlots::new(
                runner.request_concurrency,
                runner
                    .feature_flags
                    .get(&FeatureFlag::UseAdaptiveRequestConcurrency)
                    .copied()
                    .unwrap_or(FeatureFlag::UseAdaptiveRequestConcurrency.default_value()),
            )),
            runner,
            unhealthy_count: AtomicU32::new(0),
            unhealthy_until: Mutex::new(None),
        })
    }

    fn skipped_for_health(&self) -> bool {
        let mut until = self
            .unhealthy_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *until {
            Some(deadline) if Instant::now() < deadline => true,
            Some(_) => {
                // The back-off is over: try once more.
                *until = None;
                false
            }
            None => false,
        }
    }

    fn record_health(&self, healthy: bool) {
        if healthy {
            self.unhealthy_count.store(0, Ordering::Relaxed);
            return;
        }
        let count = self.unhealthy_count.fetch_add(1, Ordering::Relaxed) + 1;
        if count >= self.runner.unhealthy_requests_limit {
            tracing::warn!(
                runner = %self.runner.short_token(),
                "runner is unhealthy and will be skipped for {:?}",
                self.runner.unhealthy_interval
            );
            // A back-off past the clock's range is as good as forever.
            let until = Instant::now()
                .checked_add(self.runner.unhealthy_interval)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
            *self
                .unhealthy_until
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(until);
            self.unhealthy_count.store(0, Ordering::Relaxed);
        }
    }
}

/// A runner's job requests in flight, bounded by `request_concurrency` and, with
/// `FF_USE_ADAPTIVE_REQUEST_CONCURRENCY` (on by default), by upstream's AIMD limit: it starts
/// at 1, grows by 10 % with each job picked up, shrinks by 5 % with each empty answer and halves
/// when GitLab asked the runner to retry, so a runner polls with more requests only while they
/// bring jobs.
#[derive(Debug)]
pub struct RequestSlots {
    hard_limit: usize,
    adaptive: bool,
    /// Requests in flight, and the adaptive limit.
    state: Mutex<(usize, f64)>,
}

impl RequestSlots {
    /// Slots for `hard_limit` (at least 1) requests; `adaptive` turns the AIMD limit on.
    pub fn new(hard_limit: usize, adaptive: bool) -> Self {
        Self {
            hard_limit: hard_limit.max(1),
            adaptive,
            state: Mutex::new((0, 1.0)),
        }
    }

    /// How many requests may be in flight now.
    pub fn limit(&self) -> usize {
        let (_, adaptive_limit) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.adaptive {
            (adaptive_limit.ceil() as usize).clamp(1, self.hard_limit)
        } else {
            self.hard_limit
        }
    }

    /// A slot, or `None` when the limit is reached (the request is skipped this round).
    pub fn try_acquire(self: &Arc<Self>) -> Option<RequestSlot> {
        let limit = self.limit();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 >= limit {
            return None;
        }
        state.0 += 1;
        Some(RequestSlot {
            slots: self.clone(),
            released: false,
        })
    }

    fn release(&self, has_job: bool, retried: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.saturating_sub(1);
        if self.adaptive {
            let factor = if retried {
                0.5
            } else if has_job {
                1.1
            } else {
                0.95
            };
            state.1 = (state.1 * factor).clamp(1.0, self.hard_limit as f64);
        }
    }
}

/// One job request in flight; it goes back when dropped (as an empty answer) or with
/// [`RequestSlot::release`].
#[derive(Debug)]
pub struct RequestSlot {
    slots: Arc<RequestSlots>,
    released: bool,
}

impl RequestSlot {
    /// Gives the slot back, telling the adaptive limit how the request went.
    pub fn release(mut self, has_job: bool, retried: bool) {
        self.released = true;
        self.slots.release(has_job, retried);
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        if !self.released {
            self.slots.release(false, false);
        }
    }
}

/// The `User-Agent` header of every GitLab request: `gitlab-runner <version> (<name>;
/// <revision>; <platform>)`, as upstream's.
pub fn user_agent() -> String {
    let version = runner_core::build::RunnerVersion::default();
    format!(
        "gitlab-runner {} ({}; {}; {})",
        version.version, version.name, version.revision, version.platform
    )
}

/// What the loop runs.
pub struct LoopOptions {
    /// The loaded config; its `path` is re-read on reload and keeps `.runner_system_id` beside it.
    pub config: Config,
    /// Stop after this many jobs (run-single `--max-builds`).
    pub max_builds: Option<usize>,
    /// Stop when no job has come for this long since the start or the last job's end
    /// (run-single `--wait-timeout`).
    pub wait_timeout: Option<Duration>,
    /// Re-read the config file on SIGHUP or when it changes.
    pub reload: bool,
    /// Where the user jobs run as comes from.
    pub user: UserSource,
}

/// Where the user that shell-executor jobs run as (through `su`) comes from.
#[derive(Debug, Clone)]
pub enum UserSource {
    /// `run --user`: replaces `config.toml`'s `user` on every load, as upstream's `run` does
    /// (`None` runs jobs as the runner's own user, whatever the file says).
    Flag(Option<String>),
    /// `config.toml`'s global `user` (`run-single`).
    Config,
}

impl UserSource {
    fn resolve(&self, config: &Config) -> Option<String> {
        match self {
            UserSource::Flag(user) => {
                if user.is_none() {
                    if let Some(ignored) = &config.user {
                        tracing::warn!(
                            "user = {ignored:?} in {} has no effect on run: as upstream, only \
                             `run --user` sets the user jobs run as",
                            config.path.display()
                        );
                    }
                }
                user.clone()
            }
            UserSource::Config => config.user.clone(),
        }
    }
}

/// A runner out of service, and when `run` says so again.
struct OutOfService {
    runner: UnavailableRunner,
    next_report: Instant,
}

impl OutOfService {
    /// Upstream logs its line each time the runner comes up again after `unhealthy_interval`.
    fn report_if_due(&mut self, now: Instant) {
        if now < self.next_report {
            return;
        }
        tracing::error!(
            runner = %self.runner.short_token(),
            runner_name = %self.runner.name,
            "{}",
            self.runner.reason
        );
        self.next_report = now
            .checked_add(self.runner.unhealthy_interval)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
    }
}

struct State {
    workers: Vec<Arc<Worker>>,
    out_of_service: Vec<OutOfService>,
    global: Arc<Semaphore>,
    check_interval: Duration,
    shutdown_timeout: Duration,
}

fn build_state(
    config: &Config,
    system_id: &str,
    ids: &Arc<ConcurrencyIds>,
    user: &UserSource,
) -> anyhow::Result<State> {
    crate::logging::apply_config(config.log_level.as_deref(), config.log_format.as_deref());
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let user = user.resolve(config);
    let workers = config
        .runners
        .iter()
        .map(|runner| {
            Worker::new(
                runner.clone(),
                system_id,
                user.clone(),
                ids.clone(),
                config.connection_max_age,
            )
            .map(Arc::new)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let now = Instant::now();
    Ok(State {
        workers,
        out_of_service: config
            .unavailable
            .iter()
            .map(|runner| OutOfService {
                runner: runner.clone(),
                next_report: now,
            })
            .collect(),
        global: Arc::new(Semaphore::new(config.concurrent)),
        check_interval: config.check_interval,
        shutdown_timeout: config.shutdown_timeout,
    })
}

/// Beyond upstream: each Kubernetes runner removes, in the background, the pods, Secrets and
/// job namespaces an earlier run of it left behind past their job's timeout (a crash, a
/// kill -9); what it removes and what fails is logged.
fn sweep_kubernetes_leftovers(workers: &[Arc<Worker>]) {
    for worker in workers {
        let Provider::Kubernetes(provider) = &worker.environment.provider else {
            continue;
        };
        let provider = provider.clone();
        let runner = worker.runner.short_token();
        tokio::spawn(async move {
            match provider.sweep(&runner).await {
                Ok(swept) => {
                    for place in swept.deleted {
                        tracing::info!(runner = %runner, "removed the left-over {place} of an earlier run");
                    }
                    for error in swept.errors {
                        tracing::warn!(runner = %runner, "sweeping left-overs of an earlier run: {error}");
                    }
                }
                Err(error) => {
                    tracing::warn!(runner = %runner, "sweeping left-overs of an earlier run: {error}")
                }
            }
        });
    }
}

/// Builds, and drops, what `run` would build from `config`: its workers, their clients and
/// their semaphores. For checks (the fuzz target) that a loadable config cannot crash the
/// runner when it starts or reloads.
pub fn check_state(config: &Config) -> anyhow::Result<()> {
    build_state(
        config,
        "s_000000000000",
        &Arc::new(ConcurrencyIds::default()),
        &UserSource::Config,
    )
    .map(drop)
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A job request gated by the executor's capacity.
#[derive(Debug)]
pub enum Gated<R> {
    /// Nothing could be reserved, so GitLab was not asked.
    NoCapacity,
    /// GitLab handed out a job (possibly after a retried error); the reservation is for it.
    Job {
        /// An attempt saw a status GitLab uses to ask for a slow-down (the request was retried).
        retried: bool,
        /// The job payload.
        job: Box<JobResponse>,
        /// GitLab's `X-Request-Id` response header for the request, else the one the runner sent.
        correlation_id: String,
        /// The capacity held for the job; the caller releases it if the job does not start.
        reservation: R,
    },
    /// Anything else; the reservation was released.
    Other(JobRequestResult),
}

/// Upstream's order: reserve capacity (`acquire`), then ask GitLab for a job; the reservation
/// goes with the job, or back (`release`) when none came.
pub async fn gated_request<R>(
    acquire: impl std::future::Future<Output = Option<R>>,
    release: impl FnOnce(R),
    request: impl std::future::Future<Output = JobRequestResult>,
) -> Gated<R> {
    let Some(reservation) = acquire.await else {
        return Gated::NoCapacity;
    };
    let (result, retried) = match request.await {
        JobRequestResult::RetriableSeen(inner)
            if matches!(*inner, JobRequestResult::Job { .. }) =>
        {
            (*inner, true)
        }
        other => (other, false),
    };
    match result {
        JobRequestResult::Job {
            job,
            correlation_id,
        } => Gated::Job {
            retried,
            job,
            correlation_id,
            reservation,
        },
        other => {
            release(reservation);
            Gated::Other(other)
        }
    }
}

/// Polls for jobs until told to stop. SIGQUIT stops gracefully (no new jobs, running ones
/// finish); SIGTERM / SIGINT stop forcefully (running jobs are aborted and reported as
/// `runner_interrupted`, then the runner waits at most `shutdown_timeout`); a second signal
/// ends the wait.
pub async fn run_loop(options: LoopOptions) -> anyhow::Result<()> {
    let LoopOptions {
        config,
        max_builds,
        wait_timeout,
        reload,
        user,
    } = options;
    let config_path = config.path.clone();
    let system_id = crate::system_id::load_or_create(&config_path)
        .with_context(|| format!("storing the system id beside {}", config_path.display()))?;
    let ids = Arc::new(ConcurrencyIds::default());
    let mut state = build_state(&config, &system_id, &ids, &user)?;
    tracing::info!(
        builds = 0,
        max_builds = config.concurrent,
        "Configuration loaded"
    );
    if state.workers.is_empty() && state.out_of_service.is_empty() {
        tracing::warn!("no runners are configured in {}", config_path.display());
    }
    tracing::info!(
        concurrent = config.concurrent,
        runners = state.workers.len(),
        "starting the runner"
    );
    sweep_kubernetes_leftovers(&state.workers);
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Tokens that expire are reset before they do (run only: run-single has no file to save).
    // Taken before the token rotation starts: a token it saves at once must count as a change
    // the loop reloads, not as the file it already has.
    let mut config_mtime = modified(&config_path);
    let rotation_stop = CancellationToken::new();
    if reload {
        tokio::spawn(crate::token_rotation::rotate_tokens(
            config_path.clone(),
            system_id.clone(),
            rotation_stop.clone(),
        ));
    }
    let wake = Arc::new(Notify::new());
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut quit = signal(SignalKind::quit())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut last_config_check = Instant::now();
    let mut next = 0usize;
    let mut forceful = false;
    let last_build = Arc::new(std::sync::Mutex::new(Instant::now()));

    loop {
        if let Some(max) = max_builds {
            if started.load(Ordering::SeqCst) >= max {
                tracing::info!("This runner has processed its build limit, so now exiting");
                break;
            }
        }
        if let Some(wait) = wait_timeout {
            let idle = last_build
                .lock()
                .map(|last| last.elapsed())
                .unwrap_or_default();
            // No job running (a job request may be in flight: it is waited for below).
            let busy = started.load(Ordering::SeqCst) != finished.load(Ordering::SeqCst);
            if !busy && idle > wait {
                tracing::info!(
                    "This runner has not received a job in {} seconds, so now exiting",
                    wait.as_secs()
                );
                break;
            }
        }
        let count = state.workers.len().max(1) as u32;
        let pause = (state.check_interval / count).max(Duration::from_millis(50));
        let mut reload_now = false;
        tokio::select! {
            _ = quit.recv() => {
                tracing::info!("SIGQUIT received: stopping gracefully, waiting for running jobs");
                break;
            }
            _ = terminate.recv() => { forceful = true; break; }
            _ = interrupt.recv() => { forceful = true; break; }
            _ = hangup.recv(), if reload => { reload_now = true; }
            // A job was just received: ask again without waiting (unless strict_check_interval).
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        if reload && last_config_check.elapsed() >= Duration::from_secs(3) {
            last_config_check = Instant::now();
            let mtime = modified(&config_path);
            if mtime != config_mtime {
                config_mtime = mtime;
                reload_now = true;
            }
        }
        if reload_now {
            // The new state is built whole before it replaces the old one, and a bug reached
            // by the new file (a panic) is contained too: running jobs keep going, and the
            // runner keeps the configuration it has.
            let reloaded = std::panic::catch_unwind(|| {
                Config::load(&config_path).map(|config| {
                    (
                        config.concurrent,
                        build_state(&config, &system_id, &ids, &user),
                    )
                })
            });
            match reloaded {
                Ok(Ok((concurrent, Ok(new_state)))) => {
                    tracing::info!(
                        builds = tracker.len(),
                        max_builds = concurrent,
                        "Configuration loaded"
                    );
                    state = new_state;
                }
                Ok(Ok((_, Err(error)))) => tracing::error!(
                    "reloading the configuration failed, keeping the previous one: {error:#}"
                ),
                Ok(Err(error)) => tracing::error!(
                    "reloading the configuration failed, keeping the previous one: {error}"
                ),
                Err(payload) => tracing::error!(
                    "reloading the configuration failed, keeping the previous one: internal error: {}",
                    runner_core::panic::panic_message(payload.as_ref())
                ),
            }
        }
        let now = Instant::now();
        for runner in &mut state.out_of_service {
            runner.report_if_due(now);
        }
        if state.workers.is_empty() {
            continue;
        }
        let worker = state.workers[next % state.workers.len()].clone();
        next = next.wrapping_add(1);
        if worker.skipped_for_health() {
            continue;
        }
        let Ok(global) = state.global.clone().try_acquire_owned() else {
            continue;
        };
        let Ok(job_slot) = worker.jobs.clone().try_acquire_owned() else {
            continue;
        };
        let Some(request_slot) = worker.requests.try_acquire() else {
            tracing::debug!(runner = %worker.runner.short_token(), "Failed to request job: 'request_concurrency' already reached");
            continue;
        };
        if let Some(max) = max_builds {
            if started.load(Ordering::SeqCst) >= max {
                break;
            }
        }
        let root = root.clone();
        let wake = wake.clone();
        let started = started.clone();
        let finished = finished.clone();
        let last_build = last_build.clone();
        tracker.spawn(async move {
            let environment = &worker.environment;
            let info = version_info(&worker.runner, &environment.provider);
            let provider = &environment.provider;
            let gated = gated_request(
                provider.acquire(),
                |reservation| provider.release(reservation),
                environment
                    .client
                    .request_job(&worker.runner.token, &environment.system_id, &info),
            )
            .await;
            match &gated {
                // No request was made: the limit learns nothing.
                Gated::NoCapacity => drop(request_slot),
                Gated::Job { retried, .. } => request_slot.release(true, *retried),
                Gated::Other(result) => request_slot.release(
                    false,
                    matches!(result, JobRequestResult::RetriableSeen(_)),
                ),
            }
            let result = match gated {
                Gated::NoCapacity => {
                    tracing::debug!(runner = %worker.runner.short_token(), executor = provider.name(), "no capacity for a job now: not asking GitLab for one");
                    return;
                }
                Gated::Job {
                    job,
                    correlation_id,
                    reservation,
                    ..
                } => {
                    worker.record_health(true);
                    tracing::info!(job = job.id, runner = %worker.runner.short_token(), "Checking for jobs... received");
                    started.fetch_add(1, Ordering::SeqCst);
                    if !worker.runner.strict_check_interval {
                        wake.notify_one();
                    }
                    let outcome = environment
                        .run_job(*job, correlation_id, reservation, &root)
                        .await;
                    if let JobResult::Finished { success, reason } = outcome {
                        tracing::info!(success, ?reason, "job processed");
                    }
                    if let Ok(mut last) = last_build.lock() {
                        *last = Instant::now();
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Gated::Other(result) => result,
            };
            worker.record_health(result.healthy());
            let result = match result {
                JobRequestResult::RetriableSeen(inner) => *inner,
                other => other,
            };
            match result {
                JobRequestResult::Malformed { id, token, error } => {
                    started.fetch_add(1, Ordering::SeqCst);
                    environment.fail_malformed(id, token, &error).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                }
                JobRequestResult::NoJob => {
                    tracing::debug!(runner = %worker.runner.short_token(), "Checking for jobs... nothing");
                }
                JobRequestResult::Forbidden => {
                    tracing::error!(runner = %worker.runner.short_token(), "Checking for jobs... forbidden");
                }
                JobRequestResult::Unavailable => {
                    tracing::warn!(runner = %worker.runner.short_token(), "Checking for jobs... GitLab instance currently unavailable");
                }
                JobRequestResult::Failed(message) => {
                    tracing::warn!(runner = %worker.runner.short_token(), "Checking for jobs... failed: {message}");
                }
                JobRequestResult::ClientError(message) => {
                    tracing::error!(runner = %worker.runner.short_token(), "Checking for jobs... client error: {message}");
                }
                // Jobs came out of gated_request as Gated::Job, and a retry was unwrapped above.
                JobRequestResult::Job { .. } | JobRequestResult::RetriableSeen(_) => {}
            }
            drop(job_slot);
            drop(global);
        });
    }

    rotation_stop.cancel();
    tracker.close();
    if forceful {
        tracing::warn!("forceful shutdown: aborting running jobs");
        root.cancel();
        tokio::select! {
            _ = tracker.wait() => {}
            _ = tokio::time::sleep(state.shutdown_timeout) => {
                tracing::error!("shutdown timed out; exiting with jobs still running");
            }
            _ = terminate.recv() => tracing::error!("second signal: exiting now"),
            _ = interrupt.recv() => tracing::error!("second signal: exiting now"),
        }
    } else {
        tokio::select! {
            _ = tracker.wait() => {}
            _ = terminate.recv() => {
                tracing::warn!("forceful shutdown requested while stopping gracefully");
                root.cancel();
                let _ = tokio::time::timeout(state.shutdown_timeout, tracker.wait()).await;
            }
            _ = interrupt.recv() => {
                root.cancel();
                let _ = tokio::time::timeout(state.shutdown_timeout, tracker.wait()).await;
            }
        }
    }
    tracing::info!(jobs = finished.load(Ordering::SeqCst), "runner stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adaptive_limit_grows_with_jobs_and_backs_off_on_empty_and_retried_answers() {
        let slots = Arc::new(RequestSlots::new(4, true));
        assert_eq!(slots.limit(), 1);
        let first = slots.try_acquire().unwrap();
        assert!(
            slots.try_acquire().is_none(),
            "one request at a time to start with"
        );
        first.release(true, false);
        // 1.1 rounds up to 2.
        assert_eq!(slots.limit(), 2);
        for _ in 0..20 {
            slots.try_acquire().unwrap().release(true, false);
        }
        assert_eq!(slots.limit(), 4, "never above request_concurrency");
        slots.try_acquire().unwrap().release(false, true);
        assert_eq!(slots.limit(), 2, "a retried request halves the limit");
        for _ in 0..30 {
            drop(slots.try_acquire().unwrap());
        }
        assert_eq!(slots.limit(), 1, "empty answers bring it down to one");
    }

    #[test]
    fn without_the_flag_request_concurrency_is_the_limit() {
        let slots = Arc::new(RequestSlots::new(3, false));
        let held: Vec<_> = (0..3).map(|_| slots.try_acquire().unwrap()).collect();
        assert!(slots.try_acquire().is_none());
        drop(held);
        assert_eq!(slots.limit(), 3);
    }
}
