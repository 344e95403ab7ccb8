//! Test support: a `kube::Client` to the shared local control plane (started once per test
//! run by `make test`, or here on first use when tests run on their own) and a fresh
//! namespace per test, deleted when the test ends.
#![allow(dead_code)]

pub mod agents;
pub mod helm;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use nodeops::keys::PART_OF_LABEL;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path a build script prints, `hack/<script>` run once per test binary, under
/// `flock target/.<script>.lock` so parallel test binaries build it once; panics with the
/// script's output when it fails (the tests that need the tool fail, never skip).
pub fn built_by(script: &str) -> PathBuf {
    let root = repo_root();
    std::fs::create_dir_all(root.join("target")).expect("target/");
    let out = std::process::Command::new("flock")
        .arg(root.join(format!("target/.{script}.lock")))
        .arg(root.join("hack").join(script))
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("run hack/{script} (needs flock from util-linux): {e}"));
    assert!(
        out.status.success(),
        "hack/{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "hack/{script} printed {path:?}, not a file");
    path
}

/// The kubectl that hack/k8s-binaries.sh built (the control plane's own version).
pub fn kubectl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = std::process::Command::new(repo_root().join("hack/k8s-binaries.sh"))
            .arg("dir")
            .output()
            .expect("hack/k8s-binaries.sh dir");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("kubectl")
    })
}

/// Runs kubectl against the local control plane as its admin, which must succeed; returns
/// its standard output, trimmed.
pub fn kubectl(args: &[&str]) -> String {
    let out = std::process::Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The admin kubeconfig of the local control plane: `$NODEOPS_TEST_KUBECONFIG`, else
/// `.local-cluster/kubeconfig`, bringing the cluster up (under a lock, so parallel test
/// binaries start it once) when it is not there.
pub fn kubeconfig_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("NODEOPS_TEST_KUBECONFIG") {
            return PathBuf::from(p);
        }
        let root = repo_root();
        let path = root.join(".local-cluster/kubeconfig");
        // cluster-up is idempotent and quick when the cluster is already running.
        let status = std::process::Command::new("flock")
            .arg(root.join("target/.cluster-up.lock"))
            .arg(root.join("hack/cluster-up.sh"))
            .current_dir(&root)
            .status()
            .expect("run hack/cluster-up.sh (needs flock from util-linux)");
        assert!(
            status.success(),
            "hack/cluster-up.sh failed: the local control plane is required"
        );
        path
    })
}

/// The real node's name (hack/real-node.sh, `REAL_NODE_NAME`, default `real-0001`).
pub fn real_node_name() -> String {
    std::env::var("REAL_NODE_NAME").unwrap_or_else(|_| "real-0001".into())
}

/// The real node's name, after checking it exists and is Ready: the real-node tests are
/// never skipped.
pub async fn ready_real_node(client: &Client) -> String {
    let name = real_node_name();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = nodes.get_opt(&name).await.expect("get node").unwrap_or_else(|| {
        panic!("the real node {name} does not exist: start the cluster with REAL_NODES=1 (the default)")
    });
    assert!(node_ready(&node), "the real node {name} is not Ready");
    name
}

/// A hold on the real node's pod capacity (16 pods), released when dropped. Tests that run
/// pods there hold it shared, several at once; a test that needs the node to itself (one
/// that fills its capacity) holds it alone. A file lock (`target/.real-node.lock`), so it
/// also holds between test binaries that run at the same time.
pub struct RealNodeHold {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Waits for a shared hold on the real node.
pub async fn real_node_shared() -> RealNodeHold {
    real_node_hold(nix::fcntl::FlockArg::LockShared).await
}

/// Waits until no other test holds the real node, and holds it alone.
pub async fn real_node_alone() -> RealNodeHold {
    real_node_hold(nix::fcntl::FlockArg::LockExclusive).await
}

async fn real_node_hold(arg: nix::fcntl::FlockArg) -> RealNodeHold {
    let path = repo_root().join("target/.real-node.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // flock blocks: off the runtime's threads. Each open file is a lock of its own, so the
    // tests of one binary exclude each other too.
    let lock = tokio::task::spawn_blocking(move || nix::fcntl::Flock::lock(file, arg))
        .await
        .expect("lock task")
        .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()));
    RealNodeHold { _lock: lock }
}

/// `KEY=VALUE` lines of a file the real node's script wrote under the cluster directory;
/// empty when the cluster has no real node.
pub fn real_node_env(file: &str) -> std::collections::BTreeMap<String, String> {
    let dir = kubeconfig_path()
        .parent()
        .map(|d| d.join("real-node"))
        .unwrap_or_default();
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The images built and imported for the real node (`RUNNER_IMAGE`, `OPERATOR_IMAGE`,
/// `TOOLBOX_IMAGE`, `PAUSE_IMAGE`, ...: hack/images.sh's lines).
pub fn real_node_images() -> std::collections::BTreeMap<String, String> {
    let images = real_node_env("images.env");
    assert!(
        images.contains_key("PAUSE_IMAGE"),
        "no images.env of the real node: start the cluster with REAL_NODES=1 (the default)"
    );
    images
}

/// A process of this machine (the real node's host), as `/proc` shows it.
pub struct HostProcess {
    pub pid: u32,
    pub argv: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
}

/// Every process of this machine with its command line and environment; processes that
/// exit while it is read are left out.
pub fn host_processes() -> Vec<HostProcess> {
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect()
    };
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let argv = split(std::fs::read(format!("/proc/{pid}/cmdline")).ok()?);
            let env = split(std::fs::read(format!("/proc/{pid}/environ")).ok()?)
                .into_iter()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect();
            Some(HostProcess { pid, argv, env })
        })
        .collect()
}

/// A client to the local control plane, for the calling test's runtime.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// A namespace for one test, deleted (with everything in it) when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`.
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let suffix: u32 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(7))
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        let name = format!("{prefix}-{:08x}", suffix);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {PART_OF_LABEL: "nodeops-tests"}}
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        // Pods (and so Jobs) cannot be created before the namespace's default
        // ServiceAccount exists; after an API server restart the controller manager can be
        // minutes late with it, and the Job controller backs off meanwhile.
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_for(
            &accounts,
            "default",
            Duration::from_secs(120),
            "the namespace's default ServiceAccount",
            |_| true,
        )
        .await;
        Self { name, client }
    }

    /// What most end-to-end tests start with: a fresh namespace (`<prefix>-<random>`), the
    /// CRDs installed, and the operator watching the namespace with no other argument.
    /// Bind both (`let (ns, _op) = ...`): the operator is killed before the namespace is
    /// deleted, as when each has a `let` of its own.
    pub async fn with_operator(prefix: &str) -> (Self, Operator) {
        let ns = Self::new(prefix).await;
        install_crds(&ns.client).await;
        let op = Operator::start(&ns.name, &[]);
        (ns, op)
    }

    /// An Api for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await; delete from a thread of its own so it also runs after a panic.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = client().await;
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            });
        })
        .join();
    }
}

/// Waits until `cond` holds for the named object, watching it (no polling sleeps); panics
/// after `timeout` with the object's last state.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let fut = kube::runtime::wait::await_condition(api.clone(), name, move |obj: Option<&K>| {
        obj.is_some_and(&cond)
    });
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting for {what}"),
        Ok(Err(e)) => panic!("watching {name} for {what}: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!(
                "timed out after {timeout:?} waiting for {what}; last state of {name}: {last:#?}"
            )
        }
    }
}

/// A kind the watch helpers can watch: a static Kubernetes type whose objects move between
/// tasks.
pub trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Waits until no object of `K` matches `selector`, from a reflector of them (the list
/// that starts it, then its watch): the positive evidence is the watch's own view of the
/// set becoming empty. A watch that breaks fails the wait.
pub async fn wait_until_none<K>(api: &Api<K>, selector: &str, timeout: Duration)
where
    K: Watched,
{
    let config = kube::runtime::watcher::Config::default().labels(selector);
    wait_until_empty(api, config, selector, timeout).await;
}

/// Waits until the object `name` of `K` is gone, as [`wait_until_none`] does (its watch
/// selects the name).
pub async fn wait_until_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Watched,
{
    let selector = format!("metadata.name={name}");
    let config = kube::runtime::watcher::Config::default().fields(&selector);
    wait_until_empty(api, config, &selector, timeout).await;
}

async fn wait_until_empty<K>(
    api: &Api<K>,
    config: kube::runtime::watcher::Config,
    selector: &str,
    timeout: Duration,
) where
    K: Watched,
{
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher};
    let (store, writer) = reflector::store::<K>();
    let stream = reflector(writer, watcher(api.clone(), config));
    futures::pin_mut!(stream);
    let wait = async {
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone | watcher::Event::Delete(_)) if store.is_empty() => {
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("the watch of {selector} broke: {e}"),
            }
        }
        panic!("the watch of {selector} ended");
    };
    if tokio::time::timeout(timeout, wait).await.is_err() {
        panic!(
            "timed out after {timeout:?}: still there ({selector}): {:?}",
            store
                .state()
                .iter()
                .map(|o| o.name_any())
                .collect::<Vec<_>>()
        );
    }
}

/// Waits until an Event about `kind` `name` with `type_` (`Normal` or `Warning`) and
/// `reason` has been recorded in the namespace, watching Events (the ones already there
/// included; no polling sleeps); panics after `timeout` with the object's Events so far.
pub async fn wait_for_event(
    ns: &TestNamespace,
    kind: &str,
    name: &str,
    type_: &str,
    reason: &str,
    timeout: Duration,
) -> k8s_openapi::api::events::v1::Event {
    use futures::StreamExt;
    use k8s_openapi::api::events::v1::Event;
    use kube::runtime::{WatchStreamExt, watcher};
    let about = |e: &Event| {
        let regarding = e.regarding.as_ref();
        regarding.and_then(|r| r.kind.as_deref()) == Some(kind)
            && regarding.and_then(|r| r.name.as_deref()) == Some(name)
    };
    let api: Api<Event> = ns.api();
    let found = async {
        // A broken watch re-lists (with backoff), so an error loses no Event: skip it.
        let stream = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(e) = event
                && about(&e)
                && e.type_.as_deref() == Some(type_)
                && e.reason.as_deref() == Some(reason)
            {
                return e;
            }
        }
        panic!("the watch of Events for {kind} {name} ended")
    };
    match tokio::time::timeout(timeout, found).await {
        Ok(e) => e,
        Err(_) => {
            let seen: Vec<(Option<String>, Option<String>, Option<String>)> = api
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .filter(|e| about(e))
                .map(|e| (e.type_, e.reason, e.note))
                .collect();
            panic!(
                "timed out after {timeout:?} waiting for a {type_} Event {reason} about {kind} {name}; its Events: {seen:#?}"
            )
        }
    }
}

/// `node-<first>` to `node-<last>`: names of the local cluster's simulated nodes.
pub fn node_names(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("node-{i:04}")).collect()
}

/// An AsyncCommand whose every node is final.
pub fn finished(c: &nodeops::api::AsyncCommand) -> bool {
    c.status
        .as_ref()
        .is_some_and(|s| s.completion_time.is_some())
}

/// A Node whose Ready condition is True.
pub fn node_ready(n: &k8s_openapi::api::core::v1::Node) -> bool {
    nodeops::plan::node_ready(n)
}

/// The name of any object, for messages.
pub fn name_of<K: kube::Resource>(obj: &K) -> String {
    obj.name_any()
}

/// Installs the committed CRDs (`crds/`, what users apply) once per test process and waits
/// until they are Established.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::{conditions, wait::await_condition};
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let dir = repo_root().join("crds");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("crds/") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read CRD");
            let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("parse CRD");
            let name = crd.metadata.name.clone().expect("CRD name");
            api.patch(
                &name,
                &PatchParams::apply("nodeops-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e}", path.display()));
            names.push(name);
        }
        for name in names {
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(Duration::from_secs(30), established)
                .await
                .expect("CRD Established in time")
                .expect("watch CRD");
        }
    })
    .await;
}

/// The operator binary running against the local control plane, watching one namespace;
/// SIGKILLed when dropped (or by `kill`), as a crash would end it.
pub struct Operator {
    child: Option<std::process::Child>,
    namespace: String,
    /// Its log is `target/operator-<log_name>.log`.
    log_name: String,
    args: Vec<String>,
    kubeconfig: PathBuf,
}

impl Operator {
    /// Starts `nodeops --namespace <ns> <args>`, logging to `target/operator-<ns>.log`.
    pub fn start(namespace: &str, args: &[&str]) -> Self {
        Self::start_as(namespace, args, kubeconfig_path())
    }

    /// Starts it with the credentials of `kubeconfig` (for example a ServiceAccount's).
    pub fn start_as(namespace: &str, args: &[&str], kubeconfig: &Path) -> Self {
        let mut op = Self {
            child: None,
            namespace: namespace.to_string(),
            log_name: namespace.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            kubeconfig: kubeconfig.to_path_buf(),
        };
        op.spawn();
        op
    }

    /// Starts one of several replicas in `namespace`, logging to
    /// `target/operator-<namespace>-<replica>.log`.
    pub fn start_replica(namespace: &str, replica: &str, args: &[&str]) -> Self {
        let mut op = Self {
            child: None,
            namespace: namespace.to_string(),
            log_name: format!("{namespace}-{replica}"),
            args: args.iter().map(|s| s.to_string()).collect(),
            kubeconfig: kubeconfig_path().to_path_buf(),
        };
        op.spawn();
        op
    }

    /// The operator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(repo_root().join(format!("target/operator-{}.log", self.log_name)))
            .unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log_path = repo_root().join(format!("target/operator-{}.log", self.log_name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("operator log");
        // Many operators run at once: each serves its metrics on a port of its own.
        let metrics: &[&str] = if self.args.iter().any(|a| a == "--metrics-addr") {
            &[]
        } else {
            &["--metrics-addr", "127.0.0.1:0"]
        };
        // The settings the real node needs (its images, pull policy, how to enter the host),
        // as the cluster scripts wrote them; arguments given by the test win.
        let node_env = real_node_env("operator.env");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_nodeops"))
            .envs(&node_env)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(metrics)
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,nodeops=debug,kube=warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the operator");
        self.child = Some(child);
    }

    /// The address its metrics endpoint bound (from its log), waiting for it up to 30 s.
    pub async fn metrics_addr(&self) -> String {
        for _ in 0..300 {
            let log = self.log();
            if let Some(addr) = log
                .lines()
                .filter(|l| l.contains("serving /metrics"))
                .filter_map(|l| l.split("addr=").nth(1))
                .filter_map(|rest| rest.split_whitespace().next())
                .next_back()
            {
                return addr.to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the operator never logged its metrics address:\n{}",
            self.log()
        );
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no graceful shutdown, as when the node or the pod dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for it to exit; its exit status, if it did.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A manifest of `K` named `name` with `spec`: apiVersion and kind come from the Rust type.
pub fn manifest<K: kube::Resource<DynamicType = ()>>(
    name: &str,
    spec: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Applies a manifest (JSON) to the namespace with server-side apply, as `kubectl apply`.
pub async fn apply<K>(api: &Api<K>, obj: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    use kube::api::{Patch, PatchParams};
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    api.patch(
        &name,
        &PatchParams::apply("nodeops-tests").force(),
        &Patch::Apply(&obj),
    )
    .await
    .expect("apply")
}

/// Jobs in flight (created, not Complete/Failed), counted from a watch of every Job event
/// in a namespace: the highest count seen, and how many Jobs it saw finish. The watch
/// ending or breaking ends the task with an error, so [`InFlight::finish`] fails a test
/// whose count missed transitions instead of passing it.
pub struct InFlight {
    max: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    finished: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    handle: tokio::task::JoinHandle<Result<(), String>>,
}

impl InFlight {
    /// Waits until the watch has seen `jobs` Jobs finish (the whole run, from its own
    /// view), stops it, and returns the highest number in flight. Panics if the watch
    /// broke or did not see them all within `timeout`.
    pub async fn finish(self, jobs: usize, timeout: Duration) -> usize {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.finished.load(Ordering::SeqCst) < jobs {
            if self.handle.is_finished() {
                panic!("the Job watch stopped: {:?}", self.handle.await);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Job watch saw {} of {jobs} Jobs finish",
                self.finished.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !self.handle.is_finished(),
            "the Job watch stopped: {:?}",
            self.handle.await
        );
        self.handle.abort();
        assert_eq!(
            self.finished.load(Ordering::SeqCst),
            jobs,
            "Jobs seen finishing"
        );
        self.max.load(Ordering::SeqCst)
    }
}

/// Starts counting the Jobs in flight in `ns` (see [`InFlight`]).
pub fn track_jobs_in_flight(ns: &TestNamespace) -> InFlight {
    use futures::StreamExt;
    use k8s_openapi::api::batch::v1::Job;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let max = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (seen, count) = (max.clone(), finished.clone());
    let jobs: Api<Job> = ns.api();
    let handle = tokio::spawn(async move {
        let mut in_flight: BTreeSet<String> = BTreeSet::new();
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut stream = watcher(jobs, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(event) = stream.next().await {
            let job = event.map_err(|e| format!("the Job watch broke: {e}"))?;
            let name = job.name_any();
            let finished = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
                });
            if finished {
                in_flight.remove(&name);
                if done.insert(name) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            } else if !done.contains(&name) {
                in_flight.insert(name);
            }
            seen.fetch_max(in_flight.len(), Ordering::SeqCst);
        }
        Err("the Job watch ended".to_string())
    });
    InFlight {
        max,
        finished,
        handle,
    }
}
