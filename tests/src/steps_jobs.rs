//! What the `run:` (CI steps) end-to-end tests share: the payload GitLab sends for `run:`, and
//! the dropped-transport scenario (a step that kills the proxy its own output goes through,
//! twice, and the check that every line arrived exactly once).

use serde_json::{json, Value};

use crate::job_payload;

/// A payload whose `run` holds `steps` (GitLab sends the array as a JSON string and no
/// `steps`), with `variables` and `GIT_STRATEGY: none`.
pub fn run_payload(steps: Value, mut variables: Vec<Value>, timeout: i64) -> Value {
    variables.push(json!({"key": "GIT_STRATEGY", "value": "none", "public": true}));
    let mut payload = job_payload("", "", &[], &[], Value::Array(variables), timeout);
    payload["run"] = Value::String(steps.to_string());
    payload["steps"] = json!([]);
    payload
}

/// How many lines the dropped-transport step prints.
pub const DROPPED_LINES: usize = 300;

/// The dropped-transport step's script: `DROPPED_LINES` numbered lines, and at lines 100 and
/// 200 it kills every process whose command line matches `proxies` (a grep pattern; put it
/// together at run time, e.g. `"pro""xy"`, so the step's own command line does not match),
/// counting the kills as `killed-so-far=N`.
pub fn dropped_transport_script(prelude: &str, proxies: &str) -> String {
    format!(
        "{prelude}killed=0; for i in $(seq 1 {DROPPED_LINES}); do echo line-$i; \
         if [ $i = 100 ] || [ $i = 200 ]; then sleep 0.3; \
         for p in /proc/[0-9]*; do if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q \"{proxies}\"; \
         then kill -9 ${{p#/proc/}} && killed=$((killed+1)); fi; done; \
         echo killed-so-far=$killed; sleep 0.5; fi; done"
    )
}

/// The transport did drop twice (each kill found the proxy of the moment), and every line
/// of the step is in the log exactly once.
pub fn assert_dropped_transport_log(log: &str) {
    for kills in 1..=2 {
        assert!(
            log.lines()
                .any(|line| line.ends_with(&format!(" killed-so-far={kills}"))),
            "no kill {kills}:\n{log}"
        );
    }
    for i in 1..=DROPPED_LINES {
        let wanted = format!(" line-{i}");
        let count = log.lines().filter(|line| line.ends_with(&wanted)).count();
        assert_eq!(count, 1, "line-{i} appears {count} times:\n{log}");
    }
}
