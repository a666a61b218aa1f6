//! The core of gitlab-runner-rs: what a GitLab job is and how one is run, independent of where.
//!
//! Every module:
//! - [`job`]: the `JobResponse` payload; [`variables`]: job variables and `$VAR` expansion;
//!   [`inputs`]: job inputs interpolation; [`feature_flags`] and [`settings`]: what a job
//!   controls through its variables; [`secret`]: values kept out of `Debug` and logs.
//! - [`executor`]: the `Executor` / `ExecutorProvider` / `Capacity` traits every backend
//!   implements; [`stage_runner`]: the one stage loop (script in, output out, terminate →
//!   grace → kill) every executor runs its stages through; [`process`]: its local transport (a
//!   child in its own process group).
//! - [`build`]: the build driver (stage order, failure branches, timeouts, cancellation, final
//!   state and failure reason); [`stage`]: the stages; [`cancel`]: who stops a job and why;
//!   [`failure`]: GitLab's failure reasons; [`dirs`]: where builds and caches go;
//!   [`remote_cache`]: the distributed cache's settings and object names; [`glob`]: doublestar
//!   path patterns; [`url`]: URL parts and credentials; [`config_section`]: what the executors'
//!   `config.toml` sections share (the bad-value error, value shapes).
//! - [`log`]: the job log (masking, timestamps, sections, output limit, bounded memory).
//! - [`panic`](mod@panic): containing a panic inside one job, so it still ends with cleanup and a final state.
//! - [`script`]: the small trait through which the driver asks for stage scripts.
//! - [`registry_auth`]: registry credentials for image pulls, resolved as upstream (shared by
//!   the Docker and Kubernetes executors).
//!
//! This crate must not depend on the `shells`, `network`, executor or `commands` crates, nor on
//! any HTTP, container or SSH library: those layers depend on it, never the other way round.

pub mod build;
pub mod cancel;
pub mod config_section;
pub mod dirs;
pub mod executor;
pub mod failure;
pub mod feature_flags;
pub mod glob;
pub mod inputs;
pub mod job;
pub mod log;
pub mod panic;
pub mod process;
pub mod read_logs;
pub mod registry_auth;
pub mod remote_cache;
pub mod script;
pub mod secret;
pub mod service_name;
pub mod settings;
pub mod stage;
pub mod stage_runner;
pub mod url;
pub mod variables;

pub use build::{
    BuildContext, BuildDriver, BuildInput, BuildOutcome, RunnerSettings, RuntimeState,
};
pub use cancel::{CancelReason, JobCancel};
pub use executor::{
    Executor, ExecutorCommand, ExecutorError, ExecutorProvider, FeaturesInfo, ScriptExit,
};
pub use failure::{BuildError, FailureReason};
pub use job::JobResponse;
pub use log::JobLog;
pub use secret::Secret;
pub use stage::Stage;
