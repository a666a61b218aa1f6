//! Support for the end-to-end tests: a stateful fake GitLab ([`FakeGitlab`]) and a git
//! smart-HTTP server ([`GitServer`]), both real HTTP servers on 127.0.0.1, a real OpenSSH server
//! with a throwaway user ([`SshServer`]), a real S3 server ([`S3Server`], s3s-fs), the first
//! layer of a Kubernetes API double ([`kube_api::KubeApi`]), and helpers to run the
//! `gitlab-runner-rs` binary.
//!
//! This crate is test-only; nothing in the product depends on it, and it depends on no product
//! crate: it talks to the runner only over HTTP and the command line, as GitLab and users do.

pub mod bench_support;
pub mod binary;
pub mod certs;
pub mod cluster;
pub mod docker_objects;
pub mod docker_tls;
pub mod fake_gitlab;
pub mod git_server;
mod http;
pub mod images;
pub mod kube_api;
pub mod kube_exec;
pub mod kube_jobs;
pub mod kubelet;
pub mod registry;
pub mod runner_process;
pub mod s3;
pub mod shell_runner;
pub mod sshd;
pub mod steps_jobs;

pub use binary::{docker_vm_driver_binary, release_runner_binary, runner_binary};
pub use certs::TestCertificates;
pub use docker_tls::DockerTlsProxy;
pub use fake_gitlab::{
    declare_failure_reasons, job_payload, FakeGitlab, JobControl, JobStatus, JobTiming,
    RecordedUpdate, UploadedArtifact,
};
pub use git_server::GitServer;
pub use images::{debian_image, run, HelperImage, DEBIAN_IMAGE};
pub use registry::FakeRegistry;
pub use runner_process::RunnerProcess;
pub use s3::S3Server;
pub use shell_runner::{ShellRunner, SHELL_RUNNER_TOKEN};
pub use sshd::{SshServer, SshdOptions};
