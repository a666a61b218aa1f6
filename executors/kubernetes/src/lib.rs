//! The Kubernetes executor of gitlab-runner-rs (partly there; the README's "Kubernetes:
//! partly there" says what is not yet): each job in a pod, with upstream's
//! `[runners.kubernetes]` keys and the attach strategy over the stage runner.
//! - [`executor`]: [`KubernetesProvider`] and [`KubernetesExecutor`] (prepare, stages,
//!   cleanup);
//! - [`legacy`]: the legacy exec strategy (`FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY`);
//! - [`session`]: the running pod's streams: script writes, attached stdins, the
//!   `read-logs` stream, each stage as a stage-runner process;
//! - [`config`]: the `[runners.kubernetes]` section with upstream's defaults;
//! - [`connect`]: the API client's configuration in upstream's order (explicit host,
//!   in-cluster, kubeconfig);
//! - [`overwrites`] and [`quantity`]: the `KUBERNETES_*` job-variable overwrites with
//!   upstream's rules and messages, quantities compared by value;
//! - [`names`] and [`metadata`]: labels, annotations, generated names, service containers
//!   and their host aliases;
//! - [`pull`]: each container's pull policies;
//! - [`containers`]: the build and service containers' environment, image and commands;
//! - [`credentials`]: the per-job registry credentials Secret;
//! - [`event_stream`]: `FF_PRINT_POD_EVENTS`, the pod's events as a table from its creation;
//! - [`events`]: the pod's Warning events in the job log after a failed stage;
//! - [`volumes`]: the user volumes of `[runners.kubernetes.volumes]`;
//! - [`pod`]: the attach strategy's pod (containers, init container, shared volumes);
//! - [`pod_status`]: reading the pod's status (waiting lines once per change, terminal
//!   container states, OOM kills named);
//! - [`stage_commands`]: writing a script by its length and the line typed to start a stage;
//! - [`sweep`]: the start-up sweep of this runner's left-over pods, Secrets and namespaces;
//! - [`retry`]: which failed API requests are tried again, how often and after how long;
//! - [`log_processor`]: reading the attach strategy's log stream, with nonce-checked stage
//!   markers.
//!
//! Depends on `runner-core` (and kube-rs) only; it must not depend on `network`, `shells`,
//! the other executors or `commands`.

pub mod config;
pub mod connect;
pub mod containers;
pub mod credentials;
pub mod event_stream;
pub mod events;
pub mod executor;
pub mod legacy;
pub mod log_processor;
pub mod metadata;
pub mod names;
pub mod overwrites;
pub mod pod;
pub mod pod_status;
pub mod pull;
pub mod quantity;
pub mod retry;
pub mod session;
pub mod stage_commands;
pub mod sweep;
pub mod throttle;
pub mod volumes;

pub use executor::{KubernetesExecutor, KubernetesProvider};
