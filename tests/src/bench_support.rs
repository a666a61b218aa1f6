//! Helpers the benchmarks share: stage times read off a job log's timestamps, statistics, and
//! a run of trivial jobs through a runner.

use std::time::Duration;

/// Seconds of the day of a log line's `YYYY-MM-DDTHH:MM:SS.ffffffZ` timestamp.
pub fn line_seconds(line: &str) -> Option<f64> {
    let time = line.get(11..26)?;
    let hours: f64 = time.get(0..2)?.parse().ok()?;
    let minutes: f64 = time.get(3..5)?.parse().ok()?;
    let seconds: f64 = time.get(6..)?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// Total time between the `section_start` and `section_end` markers of the stages that run a
/// shell (every stage but `prepare_executor`), from the job log's per-line timestamps.
pub fn time_in_stage_shells(log: &str) -> Duration {
    let mut open: Option<f64> = None;
    let mut total = 0.0;
    for line in log.lines() {
        let Some(at) = line_seconds(line) else {
            continue;
        };
        if line.contains("section_start:")
            && marker_name(line, "section_start:") != Some("prepare_executor")
        {
            open = Some(at);
        } else if line.contains("section_end:") {
            if let Some(start) = open.take() {
                let mut elapsed = at - start;
                if elapsed < 0.0 {
                    elapsed += 86_400.0;
                }
                total += elapsed;
            }
        }
    }
    Duration::from_secs_f64(total)
}

/// The arithmetic mean of the measured durations; zero for none.
pub fn mean(values: &[Duration]) -> Duration {
    values.iter().sum::<Duration>() / values.len().max(1) as u32
}

/// The middle duration (the upper of the two middle ones for an even count); panics on none.
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// How many stage sections (every one but `prepare_executor`) a job log has.
pub fn stage_count(log: &str) -> usize {
    log.lines()
        .filter(|line| {
            line.contains("section_start:")
                && marker_name(line, "section_start:") != Some("prepare_executor")
        })
        .count()
}

/// The name of the section a `section_start:` / `section_end:` marker line (`kind`) opens or
/// closes: what follows `<kind><unix time>:`, up to the carriage return or escape after it.
fn marker_name<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    let rest = &line[line.find(kind)? + kind.len()..];
    let (_, name) = rest.split_once(':')?;
    Some(name.split(['\r', '\x1b']).next().unwrap_or(name))
}

/// The time of the section `name` (its `section_start` to its `section_end`), from the job
/// log's per-line timestamps; `None` when the log has no such section.
pub fn section_time(log: &str, name: &str) -> Option<Duration> {
    let mut start = None;
    for line in log.lines() {
        let Some(at) = line_seconds(line) else {
            continue;
        };
        if marker_name(line, "section_start:") == Some(name) {
            start = Some(at);
        } else if marker_name(line, "section_end:") == Some(name) {
            let mut elapsed = at - start?;
            if elapsed < 0.0 {
                elapsed += 86_400.0;
            }
            return Some(Duration::from_secs_f64(elapsed));
        }
    }
    None
}

/// `RUNNER_BENCH_JOBS`, the number of jobs a benchmark runs, else `default`.
pub fn jobs_from_env(default: usize) -> usize {
    std::env::var("RUNNER_BENCH_JOBS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// What [`run_trivial_jobs`] measured, one entry per job.
#[derive(Debug, Default)]
pub struct TrivialRuns {
    /// Handed out → final state.
    pub per_job: Vec<Duration>,
    /// The mean time of the job's stages (every section but `prepare_executor`).
    pub per_stage: Vec<Duration>,
    /// The job logs.
    pub logs: Vec<String>,
}

/// Queues `jobs` jobs of `echo hello` (`GIT_STRATEGY: none`, timestamps on) one after the
/// other on `gitlab`, for the runner already polling it; each must succeed.
pub async fn run_trivial_jobs(gitlab: &crate::FakeGitlab, jobs: usize) -> TrivialRuns {
    let mut runs = TrivialRuns::default();
    for _ in 0..jobs {
        let job = gitlab.enqueue(crate::job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            &["echo hello"],
            &[],
            serde_json::json!([
                {"key": "GIT_STRATEGY", "value": "none", "public": true},
                {"key": "FF_TIMESTAMPS", "value": "true", "public": true}
            ]),
            120,
        ));
        let update = gitlab.wait_final(job, Duration::from_secs(120)).await;
        let log = gitlab.log(job);
        assert_eq!(update.state, "success", "{log}");
        let timing = gitlab.timing(job);
        if let (Some(start), Some(end)) = (timing.picked_up, timing.finished) {
            runs.per_job.push(end - start);
        }
        let stages = stage_count(&log).max(1) as u32;
        runs.per_stage.push(time_in_stage_shells(&log) / stages);
        runs.logs.push(log);
    }
    runs
}

/// `VmRSS` and `VmHWM` of process `pid` (`"self"` for this one) from `/proc/<pid>/status`, in
/// KiB; zero for a field not found.
pub fn memory_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/status: {error}"));
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// KiB as MiB with one decimal, for the benchmarks' tables.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prepare_section_is_found_and_left_out_of_the_stage_shells() {
        let log = "2026-12-03T06:00:00.000000Z 00O section_start:1:prepare_executor\r\x1b[0K\n\
                   2026-12-03T06:00:00.500000Z 00O+Preparing\n\
                   2026-12-03T06:00:01.000000Z 00O section_end:2:prepare_executor\r\x1b[0K\n\
                   2026-12-03T06:00:01.000000Z 00O+section_start:2:step_script\r\x1b[0K\n\
                   2026-12-03T06:00:01.250000Z 00O section_end:2:step_script\r\x1b[0K\n";
        assert_eq!(
            section_time(log, "prepare_executor"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(stage_count(log), 1);
        assert_eq!(time_in_stage_shells(log), Duration::from_millis(250));
    }
}
