//! Where the portable Kubernetes scenarios (`tests/tests/kubernetes_scenarios.rs`) run: a real
//! cluster when `RUNNER_TEST_KUBECONFIG` names a kubeconfig, else the API double
//! ([`crate::kube_api::KubeApi`]) with its Docker-backed kubelet, reached the same way, through
//! a kubeconfig of its own. Either way the runner under test finds the cluster through
//! `KUBECONFIG` (no `host` in its `config.toml`), and the test looks at what is left through
//! the Kubernetes API only, so nothing in a scenario knows which of the two it talks to.
//!
//! For a real cluster:
//! - `RUNNER_TEST_KUBECONFIG`: the kubeconfig (its current context, or
//!   `RUNNER_TEST_KUBE_CONTEXT`); the user needs the rights the README's "Pointing the
//!   runner at a real cluster" lists, in the namespace;
//! - `RUNNER_TEST_KUBE_NAMESPACE` (default `default`);
//! - `RUNNER_TEST_KUBE_IMAGE`: a job image the nodes can pull with `bash`, coreutils and the
//!   OpenSSH server (as the tests' debootstrap image `gitlab-runner-rs-test/debian-sshd`);
//! - `RUNNER_TEST_KUBE_HELPER_IMAGE`: the helper image (`Dockerfile.helper` of this repository)
//!   pushed where the nodes can pull it.
//!
//! The pods cannot reach this machine (the double runs them on a bridge network for that
//! reason), so the scenarios neither clone nor upload.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::kube_api::KubeApi;
use crate::kubelet::KubeletSettings;

/// The label upstream (and this runner) puts on a job's pod and Secret: the runner's short
/// token.
const MANAGER_LABEL: &str = "manager.runner.gitlab.com/id-short";

/// How long deletions get to be seen done (a real cluster deletes pods gracefully and
/// collects what they owned in the background).
const LEFTOVER_WAIT: Duration = Duration::from_secs(90);

/// A cluster the scenarios run on.
pub struct Cluster {
    kubeconfig: PathBuf,
    context: Option<String>,
    /// The namespace the jobs' pods are made in.
    pub namespace: String,
    /// The job image (bash, coreutils, sshd).
    pub image: String,
    /// The runner's helper image.
    pub helper_image: String,
    client: kube::Client,
    double: Option<KubeApi>,
    _dir: tempfile::TempDir,
}

fn required(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "RUNNER_TEST_KUBECONFIG is set, so {name} must be too (see tests/src/cluster.rs)"
            )
        })
}

impl Cluster {
    /// The real cluster of `RUNNER_TEST_KUBECONFIG`, or else a new API double.
    pub async fn from_env() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (kubeconfig, context, namespace, image, helper_image, double) =
            match std::env::var_os("RUNNER_TEST_KUBECONFIG").filter(|path| !path.is_empty()) {
                Some(path) => (
                    PathBuf::from(path),
                    std::env::var("RUNNER_TEST_KUBE_CONTEXT")
                        .ok()
                        .filter(|context| !context.is_empty()),
                    std::env::var("RUNNER_TEST_KUBE_NAMESPACE")
                        .ok()
                        .filter(|namespace| !namespace.is_empty())
                        .unwrap_or_else(|| "default".to_string()),
                    required("RUNNER_TEST_KUBE_IMAGE"),
                    required("RUNNER_TEST_KUBE_HELPER_IMAGE"),
                    None,
                ),
                None => {
                    let image = crate::debian_image().to_string();
                    let helper = crate::HelperImage::build("dev");
                    // A bridge network: like a cluster's pods, they cannot reach this
                    // machine's loopback.
                    let api = KubeApi::start_with_kubelet(KubeletSettings::default()).await;
                    let kubeconfig = api.write_kubeconfig(dir.path());
                    (
                        kubeconfig,
                        None,
                        "default".to_string(),
                        image,
                        helper.0,
                        Some(api),
                    )
                }
            };
        let options = KubeConfigOptions {
            context: context.clone(),
            ..KubeConfigOptions::default()
        };
        let file = Kubeconfig::read_from(&kubeconfig)
            .unwrap_or_else(|error| panic!("reading {}: {error}", kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .unwrap_or_else(|error| panic!("the kubeconfig {}: {error}", kubeconfig.display()));
        let client = kube::Client::try_from(config).expect("a Kubernetes client");
        Self {
            kubeconfig,
            context,
            namespace,
            image,
            helper_image,
            client,
            double,
            _dir: dir,
        }
    }

    /// Whether this is the API double (the scenarios do not depend on it; the extra check of
    /// the engine does).
    pub fn is_double(&self) -> bool {
        self.double.is_some()
    }

    /// The `[runners.kubernetes]` section of a runner on this cluster, `extra` appended (more
    /// keys of the section, or subsections after them).
    pub fn runner_section(&self, extra: &str) -> String {
        let context = self
            .context
            .as_ref()
            .map(|context| format!("    context = \"{context}\"\n"))
            .unwrap_or_default();
        format!(
            "  [runners.kubernetes]\n{context}    namespace = \"{}\"\n    image = \"{}\"\n    helper_image = \"{}\"\n    pull_policy = [\"if-not-present\"]\n    poll_interval = 1\n{extra}",
            self.namespace, self.image, self.helper_image
        )
    }

    /// The environment the runner needs to find the cluster.
    pub fn runner_env(&self) -> Vec<(&'static str, OsString)> {
        vec![("KUBECONFIG", self.kubeconfig.clone().into_os_string())]
    }

    /// A client of the cluster, as the test's own.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The names (`kind/name`) of what a runner with short token `short` left in the
    /// namespace: pods and Secrets with its manager label, Services and pod disruption
    /// budgets owned by one of its pods.
    pub async fn leftovers(&self, short: &str) -> Vec<String> {
        let labelled = ListParams::default().labels(&format!("{MANAGER_LABEL}={short}"));
        let ours = |name: &str| name.starts_with(&format!("runner-{short}-"));
        let mut left = Vec::new();
        let pods: Api<Pod> = Api::namespaced(self.client(), &self.namespace);
        for pod in pods.list(&labelled).await.expect("listing pods").items {
            left.push(format!("pod/{}", pod.metadata.name.unwrap_or_default()));
        }
        let secrets: Api<Secret> = Api::namespaced(self.client(), &self.namespace);
        for secret in secrets
            .list(&labelled)
            .await
            .expect("listing secrets")
            .items
        {
            left.push(format!(
                "secret/{}",
                secret.metadata.name.unwrap_or_default()
            ));
        }
        let owned_by_ours = |meta: &kube::api::ObjectMeta| {
            meta.owner_references
                .iter()
                .flatten()
                .any(|owner| owner.kind == "Pod" && ours(&owner.name))
                || meta.name.as_deref().is_some_and(ours)
        };
        let services: Api<Service> = Api::namespaced(self.client(), &self.namespace);
        for service in services
            .list(&ListParams::default())
            .await
            .expect("listing services")
            .items
        {
            if owned_by_ours(&service.metadata) {
                left.push(format!(
                    "service/{}",
                    service.metadata.name.unwrap_or_default()
                ));
            }
        }
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(self.client(), &self.namespace);
        for budget in budgets
            .list(&ListParams::default())
            .await
            .expect("listing pod disruption budgets")
            .items
        {
            if owned_by_ours(&budget.metadata) {
                left.push(format!(
                    "poddisruptionbudget/{}",
                    budget.metadata.name.unwrap_or_default()
                ));
            }
        }
        left
    }

    /// Waits until the runner with short token `short` left nothing in the cluster (and, on
    /// the double, nothing on the Docker engine); panics with what is left after a while.
    pub async fn assert_nothing_left(&self, short: &str) {
        let deadline = Instant::now() + LEFTOVER_WAIT;
        loop {
            let mut left = self.leftovers(short).await;
            if let Some(api) = &self.double {
                left.extend(api.leftovers());
            }
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
