//! Helpers the benchmarks share: stage times read off a job log's timestamps, and statistics.

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
        if line.contains("section_start:") && !line.ends_with("prepare_executor\x1b[0K") {
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
            line.contains("section_start:") && !line.ends_with("prepare_executor\x1b[0K")
        })
        .count()
}
