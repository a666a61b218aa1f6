//! The Kubernetes API double checked against the official Python client (PyPI's `kubernetes`,
//! installed by `scripts/setup.sh`), a third client nobody here wrote beside kubectl and
//! kube-rs (`kube_double.rs`). `tests/python/kube_client_contract.py` creates pods on the
//! double with its Docker-backed kubelet, watches them until they run (from a listed
//! `resourceVersion`), lists them by label, reads them, execs with stdin over the client's
//! WebSocket (stdout and stderr apart, exit codes 0 and 7 from the status frame), attaches to a
//! container that echoes its stdin, reads its log, deletes the pods until reads are 404s, and
//! checks the `Status` of a missing pod: once with the double speaking `v5.channel.k8s.io`,
//! once made v4-only. Afterwards the engine has none of the pods' containers left.
#![expect(clippy::unwrap_used, reason = "test setup")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use runner_tests::kube_api::KubeApi;

/// `tests/python/kube_client_contract.py`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kube_client_contract.py")
}

/// Fails (never skips) when python3 has no `kubernetes` module.
fn require_python_client() {
    let output = Command::new("python3")
        .args([
            "-c",
            "import kubernetes, kubernetes.stream, kubernetes.watch; print(kubernetes.__version__)",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the Python `kubernetes` client is missing: run `bash scripts/setup.sh` (it \
         pip-installs `kubernetes`)\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The double with its Docker-backed kubelet, on the debootstrap image.
async fn double_with_kubelet() -> KubeApi {
    let _ = runner_tests::debian_image();
    KubeApi::start_with_kubelet(runner_tests::kubelet::KubeletSettings::default()).await
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

/// Runs the contract script against `api` with pods named `prefix-…`, expecting exec and
/// attach to negotiate `protocol`; then checks that nothing of the pods is left.
async fn run_contract(api: &KubeApi, prefix: &str, protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let mut command = Command::new("python3");
    command
        .arg(script())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--image",
            runner_tests::DEBIAN_IMAGE,
            "--prefix",
            prefix,
            "--expect-protocol",
            protocol,
        ])
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client's contract with the double failed ({protocol}, {}):\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}\n--- requests the double saw\n{:#?}",
        output.status,
        api.requests()
    );
    // Shown with --no-capture (and by nextest for a test failing below).
    println!("{stdout}{stderr}");
    assert!(api.pod_names().is_empty(), "{:?}", api.pod_names());
    assert!(
        eventually(std::time::Duration::from_secs(30), || api
            .leftovers()
            .is_empty())
        .await,
        "the pods' containers are still on the engine: {:?}",
        api.leftovers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_drives_pods_exec_and_attach_on_v5() {
    require_python_client();
    let api = double_with_kubelet().await;
    run_contract(&api, "py-v5", "v5.channel.k8s.io").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_drives_pods_exec_and_attach_on_a_v4_only_double() {
    require_python_client();
    let api = double_with_kubelet().await;
    api.speak_v4_only();
    run_contract(&api, "py-v4", "v4.channel.k8s.io").await;
}
