//! The `gitlab-runner-rs` binary's library: config.toml loading and validation (`config`), the
//! job poller (`run`), running one received job (`job`), local runs (`exec`), the custom-driver
//! checker (`driver_check`), the helper subcommands the job scripts call (`helper_commands`) and
//! the runner's system id (`system_id`). `main.rs` is only the command line on top of these.
//!
//! This crate is the top of the dependency graph: it wires runner-core, shells, network, helpers
//! and every executor together. Nothing depends on it except its own binary, the fuzz targets and
//! the tests.

pub mod admin;
pub mod config;
pub mod driver_check;
pub mod exec;
pub mod exec_artifacts;
pub mod helper_commands;
pub mod job;
pub mod logging;
pub mod register;
pub mod run;
pub mod service;
pub mod steps_command;
pub mod system_id;
pub mod token_rotation;
