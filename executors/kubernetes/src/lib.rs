//! The Kubernetes executor of gitlab-runner-rs, being built (see the README's "Not yet"): each
//! job in a pod, with upstream's `[runners.kubernetes]` keys and the attach strategy over the
//! stage runner. What is here so far is the part that needs no cluster: the
//! `[runners.kubernetes]` section with upstream's defaults, each container's pull policies, Kubernetes quantities
//! compared by value, the `KUBERNETES_*` job-variable overwrites with upstream's rules and
//! messages, the pod's names (labels, generated names, service containers and host
//! aliases), the attach strategy's pod (containers, init container, shared volumes), the
//! API client's configuration in upstream's order (explicit host, in-cluster,
//! kubeconfig), and the reading of the attach strategy's log stream with nonce-checked stage
//! markers. `executor = "kubernetes"` is not accepted by the config loader yet.
//!
//! Depends on `runner-core` only; it must not depend on `network`, `shells`, the other
//! executors or `commands`.

pub mod config;
pub mod connect;
pub mod log_processor;
pub mod metadata;
pub mod names;
pub mod overwrites;
pub mod pod;
pub mod pull;
pub mod quantity;
