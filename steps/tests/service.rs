//! The service through its gRPC surface on a real Unix socket: every call and its semantics.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on setup errors on purpose"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runner_steps::client;
use runner_steps::proto::{
    self, status_error::ErrorKind, step_result::Status as StepStatus,
    step_runner_client::StepRunnerClient,
};
use runner_steps::serve;
use runner_steps::service::{Settings, StepService};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

struct Server {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start() -> Self {
        Self::with(Settings::default()).await
    }

    async fn with(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("step-runner.sock");
        let stop = CancellationToken::new();
        let env: BTreeMap<String, String> =
            [("PATH", "/usr/local/bin:/usr/bin:/bin"), ("HOME", "/root")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let service = StepService::new(settings, env);
        let task = {
            let socket = socket.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                serve::serve(&socket, service, stop.cancelled_owned())
                    .await
                    .unwrap();
            })
        };
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            dir,
            socket,
            stop,
            task: Some(task),
        }
    }

    fn client(&self) -> StepRunnerClient<Channel> {
        client::connect_lazy(client::unix(&self.socket))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        assert!(!self.socket.exists(), "the socket file is removed on exit");
    }
}

fn request(id: &str, work_dir: &Path, steps: &str) -> proto::RunRequest {
    proto::RunRequest {
        id: id.into(),
        work_dir: work_dir.display().to_string(),
        steps: steps.into(),
        ..proto::RunRequest::default()
    }
}

fn script_steps(items: &[(&str, &str)]) -> String {
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|(name, script)| serde_json::json!({"name": name, "script": script}))
        .collect();
    serde_json::to_string(&items).unwrap()
}

async fn follow(client: &mut StepRunnerClient<Channel>, id: &str, offset: i64) -> Vec<u8> {
    let mut stream = client
        .follow_logs(proto::FollowLogsRequest {
            id: id.into(),
            offset,
        })
        .await
        .unwrap()
        .into_inner();
    let mut log = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        log.extend(message.data);
    }
    log
}

async fn status(client: &mut StepRunnerClient<Channel>, id: &str) -> proto::Status {
    let mut jobs = client
        .status(proto::StatusRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);
    jobs.remove(0)
}

/// The bodies of the log's lines (the 32-byte `<timestamp> 01O ` header cut).
fn bodies(log: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(log)
        .lines()
        .map(|line| {
            assert!(line.len() >= 32, "a header on {line:?}");
            assert_eq!(&line[26..28], "Z ", "{line:?}");
            assert_eq!(&line[28..30], "01", "{line:?}");
            line[32..].to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_run_is_followed_to_its_end_and_its_status_is_final_when_the_log_ends() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    client
        .run(request(
            "job-1",
            &work,
            &script_steps(&[("hello", "echo hello; echo oops >&2"), ("where", "pwd")]),
        ))
        .await
        .unwrap();
    let log = follow(&mut client, "job-1", 0).await;
    let text = String::from_utf8_lossy(&log).to_string();
    assert!(text.contains(" 01O Running step name=hello\n"), "{text}");
    assert!(text.contains(" 01O hello\n"), "{text}");
    assert!(text.contains(" 01E oops\n"), "{text}");
    assert!(
        text.contains(&format!(" 01O {}\n", work.display())),
        "{text}"
    );
    // The status a client asks for right after the end of the log is the final one.
    let done = status(&mut client, "job-1").await;
    assert_eq!(done.status, StepStatus::Success as i32, "{done:?}");
    assert_eq!(done.exit_code, 0);
    assert!(done.finished);
    assert!(done.start_time.is_some() && done.end_time.is_some());
    assert!(done.error.is_none());
    client
        .close(proto::CloseRequest { id: "job-1".into() })
        .await
        .unwrap();
    let gone = client
        .status(proto::StatusRequest { id: "job-1".into() })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn run_and_close_are_idempotent_and_a_bad_definition_leaves_nothing() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    let marker = server.path("runs");
    let once = script_steps(&[("count", &format!("echo run >> {}", marker.display()))]);
    client.run(request("same", &work, &once)).await.unwrap();
    // Same id, other steps: nothing starts, and it succeeds.
    client
        .run(request(
            "same",
            &work,
            &script_steps(&[("other", "echo other")]),
        ))
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&follow(&mut client, "same", 0).await).to_string();
    assert!(!log.contains("other"), "{log}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
    for _ in 0..2 {
        client
            .close(proto::CloseRequest { id: "same".into() })
            .await
            .unwrap();
        client
            .finish(proto::FinishRequest { id: "same".into() })
            .await
            .unwrap();
    }
    client
        .close(proto::CloseRequest {
            id: "never-known".into(),
        })
        .await
        .unwrap();

    let bad = client
        .run(request(
            "bad",
            &work,
            "{}\n---\nrun:\n  - name: x\n    scrpt: y\n",
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("unknown field `scrpt`"), "{bad:?}");
    let all = client
        .status(proto::StatusRequest { id: String::new() })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(all.is_empty(), "{all:?}");
    server.stop().await;
}

#[tokio::test]
async fn runs_are_concurrent_and_status_lists_every_known_one() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    let flag = server.path("flag");
    // The first waits for a file only the second makes: both end only if both run at once.
    let waiting = script_steps(&[(
        "wait",
        &format!(
            "while [ ! -e {} ]; do sleep 0.02; done; echo saw it",
            flag.display()
        ),
    )]);
    let making = script_steps(&[("make", &format!("touch {}", flag.display()))]);
    client.run(request("waits", &work, &waiting)).await.unwrap();
    client.run(request("makes", &work, &making)).await.unwrap();
    let listed = client
        .status(proto::StatusRequest { id: String::new() })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let ids: Vec<&str> = listed.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, ["waits", "makes"]);
    let log = String::from_utf8_lossy(&follow(&mut client, "waits", 0).await).to_string();
    assert!(log.contains(" 01O saw it\n"), "{log}");
    follow(&mut client, "makes", 0).await;
    for id in ["waits", "makes"] {
        assert_eq!(
            status(&mut client, id).await.status,
            StepStatus::Success as i32
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_follower_that_reconnects_from_its_offset_gets_no_gap_and_no_repeat() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    client
        .run(request(
            "long",
            &work,
            &script_steps(&[(
                "count",
                "for i in $(seq 1 400); do echo line-$i; if [ $((i % 50)) = 0 ]; then sleep 0.05; fi; done",
            )]),
        ))
        .await
        .unwrap();
    // Drop the stream after a varying number of messages, each time on a new connection.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut resumed = Vec::new();
    loop {
        let mut fresh = server.client();
        let mut stream = fresh
            .follow_logs(proto::FollowLogsRequest {
                id: "long".into(),
                offset: resumed.len() as i64,
            })
            .await
            .unwrap()
            .into_inner();
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let take = 1 + (seed >> 60) as usize;
        let mut ended = true;
        for _ in 0..take {
            match stream.message().await.unwrap() {
                Some(message) => {
                    // Cut inside a message too: keep only part of it, ask again from there.
                    let keep = if seed & 1 == 1 {
                        message.data.len() / 2
                    } else {
                        message.data.len()
                    };
                    resumed.extend_from_slice(&message.data[..keep.max(1)]);
                    ended = false;
                    if keep < message.data.len() {
                        break;
                    }
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        drop(stream);
        if ended {
            break;
        }
    }
    let whole = follow(&mut client, "long", 0).await;
    assert_eq!(resumed, whole);
    let lines = bodies(&whole);
    let counted: Vec<&String> = lines.iter().filter(|l| l.starts_with("line-")).collect();
    assert_eq!(counted.len(), 400);
    assert_eq!(counted[399], "line-400");
    server.stop().await;
}

#[tokio::test]
async fn masked_values_never_reach_a_follower_however_the_output_is_split() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    let secret = "s3cr3t-Value-42";
    let mut run = request(
        "masked",
        &work,
        &script_steps(&[
            (
                "split",
                "printf 's3cr'; sleep 0.1; printf '3t-Val'; sleep 0.1; printf 'ue-42 end\\n'",
            ),
            (
                "progress",
                "printf 'step \\rs3cr3t-Val'; sleep 0.1; printf 'ue-42\\r done\\n'",
            ),
            // A line past the framer's 8 KiB line buffer, the value across the continuation.
            (
                "long",
                "head -c 8185 /dev/zero | tr '\\0' a; printf 's3cr3t-Value-42\\n'",
            ),
            ("token", "echo glpat-abcdefghijklmnopqrst and $TOKEN_LIKE"),
        ]),
    );
    run.job = Some(proto::Job {
        variables: vec![proto::Variable {
            key: "SECRET".into(),
            value: secret.into(),
            file: false,
            masked: true,
            raw: false,
        }],
        ..proto::Job::default()
    });
    run.env
        .insert("TOKEN_LIKE".into(), "my-prefix-abc123".into());
    run.masking = Some(proto::Masking {
        phrases: vec![],
        token_prefixes: vec!["my-prefix-".into()],
    });
    client.run(run).await.unwrap();
    let log = String::from_utf8_lossy(&follow(&mut client, "masked", 0).await).to_string();
    assert!(!log.contains(secret), "{log}");
    // Nor across a `+` continuation or a `\r`: the bodies joined as the runner joins them.
    let joined: String = log
        .lines()
        .map(|line| {
            let body = &line[32.min(line.len())..];
            if line.as_bytes().get(31) == Some(&b'+') {
                body.to_string()
            } else {
                format!("\n{body}")
            }
        })
        .collect();
    assert!(!joined.replace('\r', "").contains(secret), "{joined}");
    assert!(!log.contains("abcdefghijklmnopqrst"), "{log}");
    assert!(!log.contains("abc123"), "{log}");
    assert!(log.contains("[MASKED]"), "{log}");
    assert!(log.contains("glpat-[MASKED]"), "{log}");
    assert!(log.contains(" 01O+"), "the long line continues: {log}");
    server.stop().await;
}

#[tokio::test]
async fn job_variables_are_expanded_file_ones_written_and_none_is_an_env_variable() {
    let server = Server::start().await;
    let mut client = server.client();
    let build_dir = server.path("builds/group/project");
    let variables = vec![
        proto::Variable {
            key: "A_FILE_VAR".into(),
            value: "oh this is soo secret".into(),
            file: true,
            masked: false,
            raw: false,
        },
        proto::Variable {
            key: "BASE".into(),
            value: "base".into(),
            ..proto::Variable::default()
        },
        proto::Variable {
            key: "DERIVED".into(),
            value: "${BASE}-derived".into(),
            ..proto::Variable::default()
        },
    ];
    let mut run = request(
        "vars",
        Path::new("/nonexistent-work-dir"),
        &script_steps(&[
            (
                "cat",
                "cat ${{ job.A_FILE_VAR }}; echo; echo ${{ job.A_FILE_VAR }}",
            ),
            ("derived", "echo ${{ vars.DERIVED }} in $PWD"),
        ]),
    );
    run.job = Some(proto::Job {
        variables: variables.clone(),
        build_dir: build_dir.display().to_string(),
        ..proto::Job::default()
    });
    client.run(run).await.unwrap();
    let log = bodies(&follow(&mut client, "vars", 0).await);
    let file = format!("{}.tmp/A_FILE_VAR", build_dir.display());
    assert!(
        log.contains(&"oh this is soo secret".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&file), "{log:?}");
    assert!(
        log.contains(&format!("base-derived in {}", build_dir.display())),
        "{log:?}"
    );
    assert!(Path::new(&file).exists());
    client
        .close(proto::CloseRequest { id: "vars".into() })
        .await
        .unwrap();
    assert!(!Path::new(&file).exists(), "removed on close");

    let mut env_read = request(
        "env",
        &build_dir,
        &script_steps(&[("echo", "echo ${{ env.FLIN_FLAN_FLON }}")]),
    );
    env_read.job = Some(proto::Job {
        variables: vec![proto::Variable {
            key: "FLIN_FLAN_FLON".into(),
            value: "flin, flan, flon".into(),
            ..proto::Variable::default()
        }],
        ..proto::Job::default()
    });
    client.run(env_read).await.unwrap();
    follow(&mut client, "env", 0).await;
    let failed = status(&mut client, "env").await;
    assert_eq!(failed.status, StepStatus::Failure as i32);
    let error = failed.error.unwrap();
    assert_eq!(error.kind, ErrorKind::StepFailure as i32);
    assert!(
        error
            .message
            .contains(r#"evaluating expression failed at ".FLIN_FLAN_FLON": attribute not found"#),
        "{error:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failing_step_stops_the_sequence_with_its_exit_status() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    client
        .run(request(
            "fails",
            &work,
            &script_steps(&[
                ("first", "echo one"),
                ("bad", "exit 42"),
                ("never", "echo never"),
            ]),
        ))
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&follow(&mut client, "fails", 0).await).to_string();
    assert!(!log.contains("name=never"), "{log}");
    let failed = status(&mut client, "fails").await;
    assert_eq!(failed.status, StepStatus::Failure as i32);
    assert_eq!(failed.exit_code, 42);
    assert_eq!(failed.message, "step \"bad\": exit status 42");
    server.stop().await;
}

#[tokio::test]
async fn follow_steps_gives_each_result_as_it_finishes_with_outputs_between_steps() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    let func_dir = server.path("funcs/greet");
    std::fs::create_dir_all(&func_dir).unwrap();
    std::fs::write(
        func_dir.join("func.yml"),
        "spec:\n  inputs:\n    who:\n      type: string\n      default: world\n  outputs:\n    greeting:\n      type: string\n---\nexec:\n  command:\n    - sh\n    - -c\n    - 'g=\"hi ${{ inputs.who }}\"; echo \"$g\"; echo \"{\\\"name\\\":\\\"greeting\\\",\\\"value\\\":\\\"$g\\\"}\" >> \"${{ output_file }}\"'\n",
    )
    .unwrap();
    let steps = serde_json::json!([
        {"name": "prep", "script": "echo '{\"name\":\"STAGE\",\"value\":\"prod\"}' >> \"${{ export_file }}\""},
        {"name": "greet", "func": func_dir.display().to_string(), "inputs": {"who": "${{ env.STAGE }}"}},
        {"name": "show", "script": "echo got ${{ steps.greet.outputs.greeting }} and $STAGE"},
    ]);
    client
        .run(request("outputs", &work, &steps.to_string()))
        .await
        .unwrap();
    let mut results = client
        .follow_steps(proto::FollowStepsRequest {
            id: "outputs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(message) = results.message().await.unwrap() {
        seen.push(message.result.unwrap());
    }
    let names: Vec<&str> = seen.iter().map(|r| r.step.as_str()).collect();
    assert_eq!(names, ["prep", "greet", "show"]);
    assert!(
        seen.iter().all(|r| r.status == StepStatus::Success as i32),
        "{seen:?}"
    );
    assert_eq!(
        seen[0].exports.get("STAGE").map(String::as_str),
        Some("prod")
    );
    let greeting = seen[1].outputs.get("greeting").and_then(|v| v.kind.clone());
    assert_eq!(
        greeting,
        Some(prost_types::value::Kind::StringValue("hi prod".into()))
    );
    assert_eq!(seen[1].exec_result.as_ref().map(|e| e.exit_code), Some(0));
    let log = bodies(&follow(&mut client, "outputs", 0).await);
    assert!(log.contains(&"got hi prod and prod".to_string()), "{log:?}");
    server.stop().await;
}

#[tokio::test]
async fn cancel_terms_the_process_group_then_kills_what_ignores_it() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    let pids = server.path("pids");
    let mut run = request(
        "cancelled",
        &work,
        &script_steps(&[(
            "both",
            &format!(
                "(trap 'echo got-sigterm; exit 0' TERM; echo $BASHPID >> {pids}; while true; do sleep 0.05; done) &\n\
                 (trap '' TERM; echo $BASHPID >> {pids}; while true; do sleep 0.05; done) &\n\
                 echo started; wait",
                pids = pids.display()
            ),
        )]),
    );
    run.graceful_exit_timeout_seconds = 1;
    client.run(run).await.unwrap();
    let mut stream = client
        .follow_logs(proto::FollowLogsRequest {
            id: "cancelled".into(),
            offset: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut log = Vec::new();
    while !String::from_utf8_lossy(&log).contains("started") {
        log.extend(stream.message().await.unwrap().unwrap().data);
    }
    for _ in 0..2 {
        client
            .cancel(proto::CancelRequest {
                id: "cancelled".into(),
            })
            .await
            .unwrap();
    }
    while let Some(message) = stream.message().await.unwrap() {
        log.extend(message.data);
    }
    let text = String::from_utf8_lossy(&log).to_string();
    assert!(text.contains(" 01O got-sigterm\n"), "{text}");
    let done = status(&mut client, "cancelled").await;
    assert_eq!(done.status, StepStatus::Cancelled as i32, "{done:?}");
    assert_eq!(done.error.unwrap().kind, ErrorKind::Cancelled as i32);
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z "),
            "process {pid} is gone"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_service_enforces_the_request_timeout_and_the_call_deadline() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    let mut run = request("slow", &work, &script_steps(&[("sleep", "sleep 60")]));
    run.timeout_seconds = 1;
    client.run(run).await.unwrap();
    follow(&mut client, "slow", 0).await;
    let done = status(&mut client, "slow").await;
    assert_eq!(done.status, StepStatus::Failure as i32);
    assert_eq!(done.error.unwrap().kind, ErrorKind::Timeout as i32);

    // The Run call's own deadline is the request's deadline when it gives none.
    let mut call = tonic::Request::new(request(
        "deadline",
        &work,
        &script_steps(&[("sleep", "sleep 60")]),
    ));
    call.set_timeout(Duration::from_secs(1));
    client.run(call).await.unwrap();
    follow(&mut client, "deadline", 0).await;
    let done = status(&mut client, "deadline").await;
    assert_eq!(done.error.unwrap().kind, ErrorKind::Timeout as i32);
    server.stop().await;
}

#[tokio::test]
async fn close_of_a_running_request_stops_it_and_forgets_it() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    let pid_file = server.path("pid");
    client
        .run(request(
            "closing",
            &work,
            &script_steps(&[(
                "sleep",
                &format!("echo $$ > {}; exec sleep 60", pid_file.display()),
            )]),
        ))
        .await
        .unwrap();
    while std::fs::read_to_string(&pid_file).map_or(true, |pid| pid.trim().is_empty()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
        .close(proto::CloseRequest {
            id: "closing".into(),
        })
        .await
        .unwrap();
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
    let gone = client
        .status(proto::StatusRequest {
            id: "closing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_not_found_for_status_and_the_followers() {
    let server = Server::start().await;
    let mut client = server.client();
    for code in [
        client
            .status(proto::StatusRequest { id: "nope".into() })
            .await
            .unwrap_err()
            .code(),
        client
            .follow_logs(proto::FollowLogsRequest {
                id: "nope".into(),
                offset: 0,
            })
            .await
            .unwrap_err()
            .code(),
        client
            .follow_steps(proto::FollowStepsRequest { id: "nope".into() })
            .await
            .unwrap_err()
            .code(),
    ] {
        assert_eq!(code, tonic::Code::NotFound);
    }
    server.stop().await;
}

#[tokio::test]
async fn stopping_the_service_ends_running_requests_and_their_followers() {
    let server = Server::start().await;
    let mut client = server.client();
    let work = server.path("work");
    let mut run = request(
        "endless",
        &work,
        &script_steps(&[("sleep", "echo up; exec sleep 600")]),
    );
    run.graceful_exit_timeout_seconds = 1;
    client.run(run).await.unwrap();
    let mut stream = client
        .follow_logs(proto::FollowLogsRequest {
            id: "endless".into(),
            offset: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut log = Vec::new();
    while !String::from_utf8_lossy(&log).contains(" up\n") {
        log.extend(stream.message().await.unwrap().unwrap().data);
    }
    // A follower is attached and the step would run ten minutes: the stop still completes
    // (the bound only turns a hang into a failure).
    let stopping = tokio::spawn(server.stop());
    let follower_ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(follower_ended.is_ok(), "the follower's stream never ended");
    tokio::time::timeout(Duration::from_secs(60), stopping)
        .await
        .expect("the service stopped")
        .unwrap();
}
