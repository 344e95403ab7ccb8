//! Faults, proven from the cluster: nothing lost, nothing run twice.
//!
//! These scenarios kill the operator at seeded pseudo-random points, restart kube-apiserver
//! and etcd, compact etcd's history so resumed watches get 410 Gone, let other writers fight
//! the operator over a status, and look for secrets everywhere the operator writes. Every
//! outcome is asserted from watches (each Job, child and slot seen by uid, in-flight counts
//! kept from every transition, node label transitions per node) and from lists at the end;
//! sleeps only place the faults.
//!
//! They need a control plane of their own (components are restarted): `make faults`
//! (hack/faults.sh) starts one and sets `NODEOPS_FAULT_CLUSTER_DIR`; without it every
//! scenario fails at once (it never injects faults into a shared cluster, and never passes
//! without having run). Cargo.toml keeps the suite out of a plain `cargo test`.
//! `NODEOPS_FAULT_SEED` replays or varies the operator kill points. See docs/reliability.md.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use nodeops::api::agent_invocation::AgentInvocation;
use nodeops::api::agent_upgrade_job::{AgentUpgradeJob, AgentUpgradeState, UpgradeJobState};
use nodeops::api::async_command::{CommandPhase, NodePhase};
use nodeops::api::{AsyncCommand, Command, Invoker};
use nodeops::keys::{
    INVOKER_UID_LABEL, NODE_ANNOTATION, OWNER_UID_LABEL, ROLE_LABEL, ROLE_UPGRADE,
    SCHEDULED_TIME_ANNOTATION, UPGRADE_JOB_UID_LABEL, sim,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use support::agents::{Agent, invoke, ok, results};
use support::{Operator, TestNamespace, apply, finished, install_crds, repo_root};

/// How long a fan-out may take to finish once its fault is over.
const FINISH: Duration = Duration::from_secs(240);
/// The fewest operator kills the kill scenario makes.
const MIN_KILLS: usize = 20;
const DEFAULT_SEED: u64 = 0x5EED_FA17_C0DE_0001;

// ---------------------------------------------------------------------------------------
// The fault cluster and its components.

/// The control plane hack/faults.sh started for this suite, or None (the scenario then
/// fails): faults are only ever injected into a cluster made for them.
fn fault_cluster() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("NODEOPS_FAULT_CLUSTER_DIR")?);
    let kubeconfig = std::env::var_os("NODEOPS_TEST_KUBECONFIG").map(PathBuf::from);
    assert_eq!(
        kubeconfig.as_deref(),
        Some(dir.join("kubeconfig").as_path()),
        "NODEOPS_TEST_KUBECONFIG must be the kubeconfig of the fault cluster the suite restarts"
    );
    Some(dir)
}

/// The fault cluster, or a failed test: a scenario whose environment is missing proves
/// nothing and must not pass.
macro_rules! required_fault_cluster {
    () => {
        fault_cluster().expect(
            "NODEOPS_FAULT_CLUSTER_DIR is not set: the fault scenarios run only on a control plane of their own, through `make faults` (hack/faults.sh)",
        )
    };
}

/// `hack/restart-component.sh <action> <component>` on the fault cluster.
async fn component(cluster: &Path, action: &str, name: &str) {
    let status = tokio::process::Command::new(repo_root().join("hack/restart-component.sh"))
        .args([action, name])
        .env("CLUSTER_DIR", cluster)
        .status()
        .await
        .expect("run hack/restart-component.sh");
    assert!(status.success(), "{action} {name} failed");
}

/// A stop, `down` without the component, a start (which waits until it serves again).
async fn outage(cluster: &Path, name: &str, down: Duration) -> Duration {
    let t = Instant::now();
    component(cluster, "stop", name).await;
    tokio::time::sleep(down).await;
    component(cluster, "start", name).await;
    let took = t.elapsed();
    println!("{name} was out for {:.1}s", took.as_secs_f64());
    took
}

/// etcd's client URL (its HTTP/JSON gateway serves /v3/kv/*).
fn etcd_url() -> String {
    std::env::var("NODEOPS_FAULT_ETCD_URL").unwrap_or_else(|_| "http://127.0.0.1:24790".into())
}

/// POST `body` to etcd's gateway, with curl (the repository needs no HTTP client crate).
async fn etcd_post(path: &str, body: serde_json::Value) -> serde_json::Value {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-f", "-X", "POST", "-d", &body.to_string()])
        .arg(format!("{}{path}", etcd_url()))
        .output()
        .await
        .expect("run curl");
    assert!(
        out.status.success(),
        "POST {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("etcd answers JSON")
}

/// Compacts etcd's whole history up to its current revision (physically): every watch that
/// resumes from an older resourceVersion can only get 410 Gone. Returns the revision.
async fn compact_etcd() -> u64 {
    let range = etcd_post("/v3/kv/range", json!({"key": "AA=="})).await;
    let revision = range["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse::<u64>().ok())
        .expect("current revision");
    etcd_post(
        "/v3/kv/compaction",
        json!({"revision": revision.to_string(), "physical": true}),
    )
    .await;
    println!("etcd compacted at revision {revision}");
    revision
}

// ---------------------------------------------------------------------------------------
// Seeded pseudo-random kill points.

/// xorshift64: small, seeded, the same sequence on every machine.
struct XorShift64(u64);

impl XorShift64 {
    /// `NODEOPS_FAULT_SEED` (decimal or 0x-hex), else the fixed default.
    fn from_env() -> (u64, Self) {
        let seed = std::env::var("NODEOPS_FAULT_SEED")
            .ok()
            .and_then(|s| match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            })
            .filter(|s| *s != 0)
            .unwrap_or(DEFAULT_SEED);
        (seed, Self(seed))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A duration uniformly in [lo, hi] milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

// ---------------------------------------------------------------------------------------
// Ledgers: what watches saw, by uid.

fn uid_of<K: Resource>(obj: &K) -> String {
    obj.meta().uid.clone().unwrap_or_default()
}

/// Keeps account of one kind from a watch.
trait Ledger<K>: Send + 'static {
    fn seen(&mut self, obj: &K);
    fn deleted(&mut self, _obj: &K) {}
    /// A re-list (after a restart of the watch, for example on 410 Gone) ended; `present`
    /// holds the uids it listed: anything else was deleted while the watch was away.
    fn relisted(&mut self, _present: &BTreeSet<String>) {}
    /// A re-list starts: until it ends, objects arrive in name order, not in the order
    /// they changed, so counts taken in between are not states the cluster was in.
    fn relist_started(&mut self) {}
}

/// A ledger fed by a watch that rides out outages (errors back off, the watch resumes or
/// re-lists).
struct Watched<L> {
    ledger: L,
    /// Lists made: 1 for the first, one more for every re-list.
    lists: usize,
    errors: Vec<String>,
    listing: Option<BTreeSet<String>>,
}

type Shared<L> = Arc<Mutex<Watched<L>>>;

fn watch<K, L>(
    api: Api<K>,
    config: watcher::Config,
    ledger: L,
) -> (Shared<L>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    L: Ledger<K>,
{
    let shared = Arc::new(Mutex::new(Watched {
        ledger,
        lists: 0,
        errors: Vec::new(),
        listing: None,
    }));
    let out = shared.clone();
    let handle = tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            let mut guard = out.lock().expect("ledger");
            let w = &mut *guard;
            match item {
                Ok(watcher::Event::Init) => {
                    w.lists += 1;
                    w.listing = Some(BTreeSet::new());
                    if w.lists > 1 {
                        w.ledger.relist_started();
                    }
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    if let Some(listing) = w.listing.as_mut() {
                        listing.insert(uid_of(&obj));
                    }
                    w.ledger.seen(&obj);
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(listing) = w.listing.take() {
                        w.ledger.relisted(&listing);
                    }
                }
                Ok(watcher::Event::Apply(obj)) => w.ledger.seen(&obj),
                Ok(watcher::Event::Delete(obj)) => w.ledger.deleted(&obj),
                Err(e) => w.errors.push(e.to_string()),
            }
        }
    });
    (shared, handle)
}

/// Waits until each ledger's first list is in.
async fn listed<L>(ledgers: &[&Shared<L>]) {
    for l in ledgers {
        let t = Instant::now();
        loop {
            {
                let w = l.lock().expect("ledger");
                if w.lists > 0 && w.listing.is_none() {
                    break;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "a watch never listed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Every Job of the namespace: the uids seen under each name and for each (owner, node)
/// run, and the runs in flight per owner (created, not Complete or Failed, not deleted)
/// with the highest count seen.
#[derive(Default)]
struct Jobs {
    /// A re-list is in progress: the maximum is taken when it ends.
    relisting: bool,
    uids_by_name: BTreeMap<String, BTreeSet<String>>,
    uids_by_run: BTreeMap<(String, String), BTreeSet<String>>,
    in_flight: BTreeMap<String, BTreeSet<String>>,
    finished: BTreeSet<String>,
    max_in_flight: BTreeMap<String, usize>,
    /// When the watch saw each Job finish (Complete or Failed), in order.
    finished_at: Vec<Instant>,
    /// When the watch first saw each Job, in order.
    created_at: Vec<Instant>,
}

impl Ledger<Job> for Jobs {
    fn seen(&mut self, job: &Job) {
        let uid = uid_of(job);
        let owner = job
            .labels()
            .get(OWNER_UID_LABEL)
            .cloned()
            .unwrap_or_default();
        let node = job
            .annotations()
            .get(NODE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        if self
            .uids_by_name
            .entry(job.name_any())
            .or_default()
            .insert(uid.clone())
        {
            self.created_at.push(Instant::now());
        }
        self.uids_by_run
            .entry((owner.clone(), node))
            .or_default()
            .insert(uid.clone());
        if job_finished(job) {
            if self.finished.insert(uid.clone()) {
                self.finished_at.push(Instant::now());
            }
            if let Some(set) = self.in_flight.get_mut(&owner) {
                set.remove(&uid);
            }
        } else if !self.finished.contains(&uid) {
            let set = self.in_flight.entry(owner.clone()).or_default();
            set.insert(uid);
            let n = set.len();
            if !self.relisting {
                let max = self.max_in_flight.entry(owner).or_default();
                *max = (*max).max(n);
            }
        }
    }

    fn relist_started(&mut self) {
        self.relisting = true;
    }

    fn deleted(&mut self, job: &Job) {
        let owner = job
            .labels()
            .get(OWNER_UID_LABEL)
            .cloned()
            .unwrap_or_default();
        if let Some(set) = self.in_flight.get_mut(&owner) {
            set.remove(&uid_of(job));
        }
    }

    fn relisted(&mut self, present: &BTreeSet<String>) {
        for set in self.in_flight.values_mut() {
            set.retain(|u| present.contains(u));
        }
        if self.relisting {
            self.relisting = false;
            for (owner, set) in &self.in_flight {
                let max = self.max_in_flight.entry(owner.clone()).or_default();
                *max = (*max).max(set.len());
            }
        }
    }
}

impl Jobs {
    /// Job names seen with more than one uid, and runs (owner, node) with more than one Job.
    fn duplicates(&self) -> Vec<String> {
        let names = self
            .uids_by_name
            .iter()
            .filter(|(_, uids)| uids.len() > 1)
            .map(|(name, uids)| format!("Job {name}: {} uids {uids:?}", uids.len()));
        let runs = self
            .uids_by_run
            .iter()
            .filter(|(_, uids)| uids.len() > 1)
            .map(|((owner, node), uids)| {
                format!("owner {owner} node {node}: {} Jobs {uids:?}", uids.len())
            });
        names.chain(runs).collect()
    }

    fn runs_of(&self, owner: &str) -> usize {
        self.uids_by_run.keys().filter(|(o, _)| o == owner).count()
    }

    fn finished_of(&self, owner: &str) -> usize {
        self.uids_by_run
            .iter()
            .filter(|((o, _), uids)| o == owner && uids.iter().all(|u| self.finished.contains(u)))
            .count()
    }
}

/// The child AgentInvocations of upgrade jobs: uids per (role, node), and children in
/// flight (created, instance not final) with the highest count seen.
#[derive(Default)]
struct Children {
    uids_by_node: BTreeMap<(String, String), BTreeSet<String>>,
    in_flight: BTreeSet<String>,
    finished: BTreeSet<String>,
    max_in_flight: usize,
    /// A re-list is in progress: the maximum is taken when it ends.
    relisting: bool,
}

fn child_final(inv: &AgentInvocation) -> bool {
    inv.status
        .as_ref()
        .and_then(|s| s.invocations.first())
        .is_some_and(|e| e.phase.is_final())
}

impl Ledger<AgentInvocation> for Children {
    fn seen(&mut self, inv: &AgentInvocation) {
        let uid = uid_of(inv);
        let role = inv.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
        let node = inv
            .annotations()
            .get(NODE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        self.uids_by_node
            .entry((role, node))
            .or_default()
            .insert(uid.clone());
        if child_final(inv) {
            self.in_flight.remove(&uid);
            self.finished.insert(uid);
        } else if !self.finished.contains(&uid) {
            self.in_flight.insert(uid);
            if !self.relisting {
                self.max_in_flight = self.max_in_flight.max(self.in_flight.len());
            }
        }
    }

    fn deleted(&mut self, inv: &AgentInvocation) {
        self.in_flight.remove(&uid_of(inv));
    }

    fn relist_started(&mut self) {
        self.relisting = true;
    }

    fn relisted(&mut self, present: &BTreeSet<String>) {
        self.in_flight.retain(|u| present.contains(u));
        if self.relisting {
            self.relisting = false;
            self.max_in_flight = self.max_in_flight.max(self.in_flight.len());
        }
    }
}

/// A node label's values per node, in the order they were seen (repeats collapsed;
/// `(removed)` when the label went away).
struct Labels {
    key: String,
    history: BTreeMap<String, Vec<String>>,
}

impl Labels {
    fn new(key: String) -> Self {
        Self {
            key,
            history: BTreeMap::new(),
        }
    }

    fn push(&mut self, node: String, value: &str) {
        let h = self.history.entry(node).or_default();
        if h.last().map(String::as_str) != Some(value) {
            h.push(value.to_string());
        }
    }
}

impl Ledger<Node> for Labels {
    fn seen(&mut self, node: &Node) {
        let value = node
            .labels()
            .get(&self.key)
            .cloned()
            .unwrap_or_else(|| "(removed)".into());
        self.push(node.name_any(), &value);
    }

    fn deleted(&mut self, node: &Node) {
        self.push(node.name_any(), "(removed)");
    }
}

/// An Invoker's children: the uids seen per scheduled slot, and the children's names.
#[derive(Default)]
struct Runs {
    uids_by_slot: BTreeMap<String, BTreeSet<String>>,
    names: BTreeSet<String>,
}

impl Ledger<AsyncCommand> for Runs {
    fn seen(&mut self, child: &AsyncCommand) {
        let slot = child
            .annotations()
            .get(SCHEDULED_TIME_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        self.uids_by_slot
            .entry(slot)
            .or_default()
            .insert(uid_of(child));
        self.names.insert(child.name_any());
    }
}

/// One AsyncCommand's status as the watch saw it go backwards: the succeeded count below
/// the highest seen, node-0001's final result rolled back to Pending.
#[derive(Default)]
struct Regressions {
    max_succeeded: i32,
    count_dropped: usize,
    node_final: bool,
    node_rolled_back: usize,
}

impl Ledger<AsyncCommand> for Regressions {
    fn seen(&mut self, c: &AsyncCommand) {
        let Some(s) = c.status.as_ref() else { return };
        if s.succeeded < self.max_succeeded {
            self.count_dropped += 1;
        }
        self.max_succeeded = self.max_succeeded.max(s.succeeded);
        if let Some(e) = s.cmd_jobs.iter().find(|e| e.node_name == "node-0001") {
            if e.phase.is_final() {
                self.node_final = true;
            } else if self.node_final && e.phase == NodePhase::Pending {
                self.node_rolled_back += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Waiting through outages.

/// Waits until `cond` holds for the named object, from a watch that rides out API outages;
/// panics after `timeout` with the object's last state.
async fn eventually<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let found = async {
        while let Some(item) = stream.next().await {
            if let Ok(obj) = item
                && cond(&obj)
            {
                return obj;
            }
        }
        unreachable!("a watcher stream does not end")
    };
    match tokio::time::timeout(timeout, found).await {
        Ok(obj) => obj,
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!(
                "timed out after {timeout:?} waiting for {what}; last state of {name}: {last:#?}"
            )
        }
    }
}

/// Retries a request through an outage (up to a minute).
async fn retry<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last = None;
    for _ in 0..120 {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{what}: {last:?}")
}

// ---------------------------------------------------------------------------------------
// Workloads and their end states.

fn node_names(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("node-{i:04}")).collect()
}

/// A 100-node AsyncCommand at maxConcurrency 10 whose pods take 500 ms: long enough to be
/// hit mid-way.
fn fan_out(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
        "metadata": {"name": name},
        "spec": {
            "command": "uptime",
            "nodeNames": node_names(1..=100),
            "maxConcurrency": 10,
            "podAnnotations": {sim::DELAY: "500ms"}
        }
    })
}

fn succeeded_at_least(n: i32) -> impl Fn(&AsyncCommand) -> bool {
    move |c| c.status.as_ref().is_some_and(|s| s.succeeded >= n)
}

/// What a fan-out ended with, for the report.
struct FanOutReport {
    jobs: usize,
    max_in_flight: usize,
    lists: usize,
    /// Nodes that ended final but not Succeeded, with their reason.
    not_succeeded: Vec<String>,
}

/// What a fan-out must end with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Every node Succeeded (nothing but the operator was disturbed).
    AllSucceeded,
    /// Every node final, each result the one its Job ended with: under a control-plane
    /// outage a Job can legitimately run out of its deadline before its Pod ran.
    AllFinal,
}

fn job_failed(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

/// Asserts an AsyncCommand's end: every node final (and Succeeded, with
/// [`Expect::AllSucceeded`]), each result the one its Job ended with, the counts right; one
/// Job per node, never a Job name with a second uid, at most one Pod per node (no node ran
/// twice); and no more than `max_concurrency` Jobs in flight at any point the watch saw.
async fn assert_fan_out_complete(
    ns: &TestNamespace,
    done: &AsyncCommand,
    nodes: usize,
    max_concurrency: usize,
    jobs: &Shared<Jobs>,
    expect: Expect,
) -> FanOutReport {
    let status = done.status.clone().expect("status");
    let n = nodes as i32;
    assert_eq!(status.cmd_jobs.len(), nodes, "one entry per node");
    let not_final: Vec<_> = status
        .cmd_jobs
        .iter()
        .filter(|e| !e.phase.is_final())
        .collect();
    assert!(not_final.is_empty(), "every node final: {not_final:#?}");
    let count = |p: NodePhase| status.cmd_jobs.iter().filter(|e| e.phase == p).count() as i32;
    let (succeeded, failed) = (count(NodePhase::Succeeded), count(NodePhase::Failed));
    assert_eq!(
        (
            status.total,
            status.succeeded,
            status.failed,
            status.running,
            status.pending,
            status.cancelled
        ),
        (n, succeeded, failed, 0, 0, count(NodePhase::Cancelled)),
        "the counts"
    );
    assert_eq!(status.progress, Some(format!("{succeeded}/{n}")));
    let all = succeeded == n;
    assert_eq!(
        status.phase,
        if all {
            CommandPhase::Succeeded
        } else {
            CommandPhase::Failed
        }
    );
    assert!(status.completion_time.is_some());

    let uid = done.metadata.uid.clone().expect("uid");
    let selector = format!("{OWNER_UID_LABEL}={uid}");
    let lp = ListParams::default().labels(&selector);
    let (job_api, pod_api) = (ns.api::<Job>(), ns.api::<Pod>());
    let list = retry("list Jobs", || job_api.list(&lp)).await.items;
    assert_eq!(list.len(), nodes, "exactly one Job per node");
    let by_node: BTreeMap<String, &Job> = list
        .iter()
        .filter_map(|j| Some((j.annotations().get(NODE_ANNOTATION)?.clone(), j)))
        .collect();
    assert_eq!(by_node.len(), nodes, "the Jobs cover every node once");
    let pods = retry("list Pods", || pod_api.list(&lp)).await.items;
    let mut pods_per_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &pods {
        pods_per_node
            .entry(
                p.annotations()
                    .get(NODE_ANNOTATION)
                    .cloned()
                    .unwrap_or_default(),
            )
            .or_default()
            .push(p);
    }
    let twice: Vec<_> = pods_per_node
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .map(|(n, p)| (n, p.len()))
        .collect();
    assert!(twice.is_empty(), "a node ran more than once: {twice:?}");

    // Each result is what the cluster says happened to the node's Job.
    let mut not_succeeded = Vec::new();
    for e in &status.cmd_jobs {
        let job = by_node[&e.node_name];
        if e.phase == NodePhase::Succeeded && e.exit_code == Some(0) && job_finished(job) {
            assert_eq!(job_failed(job), None, "{}: {job:?}", e.node_name);
            continue;
        }
        let pods: Vec<String> = pods_per_node
            .get(&e.node_name)
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "Pod {} created {:?} phase {:?}",
                    p.name_any(),
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.status.as_ref().and_then(|s| s.phase.clone())
                )
            })
            .collect();
        let why = format!(
            "{} {:?} {:?} ({:?}); Job {} created {:?}, conditions {:?}; {pods:?}",
            e.node_name,
            e.phase,
            e.reason,
            e.message,
            job.name_any(),
            job.metadata.creation_timestamp.as_ref().map(|t| t.0),
            job.status.as_ref().and_then(|s| s.conditions.clone()),
        );
        println!("not Succeeded: {why}");
        for line in component_log_lines(&job.name_any()) {
            println!("    {line}");
        }
        assert!(
            expect == Expect::AllFinal && e.phase == NodePhase::Failed && job_failed(job).is_some(),
            "every node Succeeded, or failed as its Job did: {why}"
        );
        if job_failed(job).as_deref() == Some("DeadlineExceeded") {
            assert_eq!(e.reason.as_deref(), Some("Timeout"), "{why}");
        }
        not_succeeded.push(format!(
            "{} {} (Job {})",
            e.node_name,
            e.reason.clone().unwrap_or_default(),
            job_failed(job).unwrap_or_default()
        ));
    }
    if expect == Expect::AllSucceeded {
        assert_eq!(pods_per_node.len(), nodes, "one Pod per node");
    }

    let ledger = jobs.lock().expect("ledger");
    let w = &ledger.ledger;
    assert_eq!(w.duplicates(), Vec::<String>::new(), "no duplicate Job");
    for j in &list {
        let seen = w
            .uids_by_name
            .get(&j.name_any())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            seen,
            BTreeSet::from([uid_of(j)]),
            "Job {} is the one the watch saw created",
            j.name_any()
        );
    }
    assert_eq!(w.runs_of(&uid), nodes);
    let max = w.max_in_flight.get(&uid).copied().unwrap_or(0);
    assert!(
        max <= max_concurrency,
        "maxConcurrency {max_concurrency} exceeded: {max} Jobs in flight"
    );
    assert!(max >= 2, "the fan-out ran in parallel ({max})");
    FanOutReport {
        jobs: list.len(),
        max_in_flight: max,
        lists: ledger.lists,
        not_succeeded,
    }
}

/// The fault cluster's component log lines that mention `needle` (the last 20): what
/// kube-controller-manager, the scheduler and kwok did with a Job that did not succeed.
fn component_log_lines(needle: &str) -> Vec<String> {
    let Some(dir) = fault_cluster() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for name in [
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "kube-apiserver",
    ] {
        let text =
            std::fs::read_to_string(dir.join(format!("logs/{name}.log"))).unwrap_or_default();
        lines.extend(
            text.lines()
                .filter(|l| l.contains(needle))
                .map(|l| format!("{name}: {}", l.chars().take(300).collect::<String>())),
        );
    }
    let skip = lines.len().saturating_sub(20);
    lines.split_off(skip)
}

/// A DaemonSet-mode agent at 1.0.0 on `nodes`.
async fn agent_installed(ns: &TestNamespace, nodes: &[String]) -> Agent {
    let spec = json!({
        "mode": "DaemonSet",
        "image": "registry.example.com/telescope",
        "basicVersion": "1.0.0",
        "readyTimeoutSeconds": 90,
    });
    Agent::installed(ns, spec, nodes).await
}

async fn disk_usage_command(ns: &TestNamespace) {
    apply(
        &ns.api::<Command>(),
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Command", "metadata": {"name": "disk-usage"},
               "spec": {"content": "df -h {{path}}", "enableParameters": true, "defaultParameters": {"path": "/"}}}),
    )
    .await;
}

fn upgrade_done(j: &AgentUpgradeJob) -> bool {
    j.status.as_ref().is_some_and(|s| s.completed_at.is_some())
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// a. The operator killed at seeded pseudo-random points.

/// What the kill loop looks at between kills (read from the API; any error counts as "not
/// yet").
struct Progress {
    /// The fan-out or the upgrade is still running: kill often.
    busy: bool,
    /// Everything finished, two slots fired and their runs finished.
    done: bool,
    text: String,
}

async fn workloads_done(ns: &TestNamespace, runs: &Shared<Runs>) -> Progress {
    let acmd = ns
        .api::<AsyncCommand>()
        .get_opt("fanout")
        .await
        .ok()
        .flatten();
    let fan = acmd.as_ref().and_then(|c| c.status.as_ref());
    let upgrade = ns
        .api::<AgentUpgradeJob>()
        .get_opt("upgrade")
        .await
        .ok()
        .flatten();
    let up = upgrade.as_ref().and_then(|j| j.status.as_ref());
    let upgraded = up.map_or(0, |s| {
        s.agents
            .iter()
            .filter(|a| a.status == AgentUpgradeState::Success)
            .count()
    });
    let children: Vec<String> = runs
        .lock()
        .expect("ledger")
        .ledger
        .names
        .iter()
        .cloned()
        .collect();
    let mut runs_done = 0;
    for c in &children {
        if let Ok(Some(c)) = ns.api::<AsyncCommand>().get_opt(c).await
            && finished(&c)
        {
            runs_done += 1;
        }
    }
    let busy = !(acmd.as_ref().is_some_and(finished) && upgrade.as_ref().is_some_and(upgrade_done));
    Progress {
        busy,
        done: !busy && children.len() >= 2 && runs_done == children.len(),
        text: format!(
            "fan-out {}/100, upgrade {upgraded}/50, slots fired {} ({runs_done} finished)",
            fan.map_or(0, |s| s.succeeded),
            children.len()
        ),
    }
}

/// How long until the next minute boundary by the wall clock (when an every-minute slot
/// falls due).
fn to_next_minute() -> Duration {
    let now = jiff::Timestamp::now();
    let into = now.as_millisecond().rem_euclid(60_000) as u64;
    Duration::from_millis(60_000 - into)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_at_seeded_points_runs_nothing_twice_and_loses_nothing() {
    let _cluster = required_fault_cluster!();
    let (seed, mut rng) = XorShift64::from_env();
    println!("seed {seed:#018x} (NODEOPS_FAULT_SEED replays or varies it)");
    let (ns, mut op) = TestNamespace::with_operator("fault-kill").await;
    disk_usage_command(&ns).await;
    let upgrade_nodes = node_names(51..=100);
    let agent = agent_installed(&ns, &upgrade_nodes).await;

    let (jobs, jobs_watch) = watch(ns.api::<Job>(), watcher::Config::default(), Jobs::default());
    let (children, children_watch) = watch(
        ns.api::<AgentInvocation>(),
        watcher::Config::default().labels(UPGRADE_JOB_UID_LABEL),
        Children::default(),
    );
    let (labels, labels_watch) = watch(
        Api::<Node>::all(ns.client.clone()),
        watcher::Config::default().labels(&agent.label()),
        Labels::new(agent.label()),
    );
    let (runs, runs_watch) = watch(
        ns.api::<AsyncCommand>(),
        watcher::Config::default().labels(INVOKER_UID_LABEL),
        Runs::default(),
    );
    listed(&[&jobs]).await;
    listed(&[&children]).await;
    listed(&[&labels]).await;
    listed(&[&runs]).await;
    assert_eq!(
        labels.lock().expect("ledger").ledger.history.len(),
        50,
        "the watch starts from 50 nodes at 1.0.0"
    );

    // The three workloads, at once, under one operator that keeps dying.
    let started = Instant::now();
    let acmds: Api<AsyncCommand> = ns.api();
    apply(&acmds, fan_out("fanout")).await;
    let upgrades: Api<AgentUpgradeJob> = ns.api();
    apply(
        &upgrades,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AgentUpgradeJob", "metadata": {"name": "upgrade"},
               "spec": {"agent": agent.name, "targetVersion": "2.0.0", "maxConcurrency": 5,
                        "nodeSelector": {"matchExpressions": [{"key": agent.label(), "operator": "Exists"}]}}}),
    )
    .await;
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Invoker", "metadata": {"name": "every-minute"},
               "spec": {"commandRef": "disk-usage", "nodeNames": ["node-0001", "node-0002"],
                        "scheduleSettings": {"policy": "Recurrence", "recurrence": "* * * * *"}}}),
    )
    .await;

    // Kill points: a seeded gap before each kill (short while the fan-out and the upgrade
    // run, longer after), a seeded time dead; a gap that would cross a minute boundary is
    // cut to land a seeded 0-400 ms after it, when the slot is being fired.
    let mut kills: Vec<(Duration, Duration, &str)> = Vec::new();
    let (mut busy_kills, mut slot_kills) = (0, 0);
    let give_up = Duration::from_secs(330);
    loop {
        let progress = workloads_done(&ns, &runs).await;
        if progress.done && kills.len() >= MIN_KILLS {
            println!(
                "all workloads finished at +{}: {}",
                secs(started.elapsed()),
                progress.text
            );
            break;
        }
        assert!(
            started.elapsed() < give_up,
            "not finished after {give_up:?} and {} kills: {}",
            kills.len(),
            progress.text
        );
        let (busy_gap, idle_gap, after_slot, down) = (
            rng.millis(300, 2500),
            rng.millis(1500, 5000),
            rng.millis(0, 400),
            rng.millis(0, 1200),
        );
        let mut gap = if progress.busy { busy_gap } else { idle_gap };
        let mut at_slot = "";
        let boundary = to_next_minute();
        if boundary < gap {
            gap = boundary + after_slot;
            at_slot = " just after a minute boundary";
        }
        tokio::time::sleep(gap).await;
        let at = started.elapsed();
        op.kill();
        tokio::time::sleep(down).await;
        op.restart();
        kills.push((at, down, at_slot));
        busy_kills += usize::from(progress.busy);
        slot_kills += usize::from(!at_slot.is_empty());
        println!(
            "kill {:>2} at +{} (down {}){at_slot}: {}",
            kills.len(),
            secs(at),
            secs(down),
            progress.text
        );
    }
    // No new slot from here on; whatever fired before the suspension must finish.
    invokers
        .patch(
            "every-minute",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend");
    let fanout = eventually(&acmds, "fanout", FINISH, "the fan-out final", finished).await;
    let upgrade = eventually(
        &upgrades,
        "upgrade",
        FINISH,
        "the rollout final",
        upgrade_done,
    )
    .await;
    let fired: Vec<String> = runs
        .lock()
        .expect("ledger")
        .ledger
        .names
        .iter()
        .cloned()
        .collect();
    let mut run_results = Vec::new();
    for name in &fired {
        run_results
            .push(eventually(&acmds, name, FINISH, "the scheduled run final", finished).await);
    }
    let elapsed = started.elapsed();

    // The fan-out: each node's Job once, maxConcurrency 10 kept, every result present.
    let report = assert_fan_out_complete(&ns, &fanout, 100, 10, &jobs, Expect::AllSucceeded).await;

    // The upgrade: one child per node, maxConcurrency 5 kept, each node's label changed
    // exactly once, 1.0.0 -> 2.0.0, and every agent reported.
    let s = upgrade.status.clone().expect("status");
    assert_eq!(s.status, UpgradeJobState::Success, "{s:#?}");
    assert_eq!(s.progress.as_deref(), Some("50/50"));
    assert_eq!(s.agents.len(), 50);
    for a in &s.agents {
        assert_eq!(
            (a.status, a.old_version.as_deref(), a.new_version.as_deref()),
            (AgentUpgradeState::Success, Some("1.0.0"), Some("2.0.0")),
            "{a:?}"
        );
    }
    let expected: BTreeMap<String, String> = upgrade_nodes
        .iter()
        .map(|n| (n.clone(), "2.0.0".to_string()))
        .collect();
    assert_eq!(agent.versions().await, expected);
    let (child_max, child_count) = {
        let c = children.lock().expect("ledger");
        let twice: Vec<_> = c
            .ledger
            .uids_by_node
            .iter()
            .filter(|(_, u)| u.len() > 1)
            .collect();
        assert!(
            twice.is_empty(),
            "a node got two upgrade children: {twice:?}"
        );
        let roles: BTreeSet<&str> = c
            .ledger
            .uids_by_node
            .keys()
            .map(|(r, _)| r.as_str())
            .collect();
        assert_eq!(roles, BTreeSet::from([ROLE_UPGRADE]), "no rollback child");
        let nodes: BTreeSet<&String> = c.ledger.uids_by_node.keys().map(|(_, n)| n).collect();
        assert_eq!(nodes.len(), 50, "one child per node");
        (c.ledger.max_in_flight, c.ledger.uids_by_node.len())
    };
    assert!(
        child_max <= 5,
        "maxConcurrency 5 exceeded: {child_max} upgrades in flight"
    );
    assert!(child_max >= 2, "the rollout ran in parallel ({child_max})");
    {
        let l = labels.lock().expect("ledger");
        let wrong: Vec<_> = l
            .ledger
            .history
            .iter()
            .filter(|(_, h)| h.as_slice() != ["1.0.0", "2.0.0"])
            .collect();
        assert!(
            wrong.is_empty(),
            "label transitions other than one 1.0.0 -> 2.0.0: {wrong:#?}"
        );
        assert_eq!(l.ledger.history.len(), 50);
    }

    // The schedule: one child uid per slot, consecutive minutes, every run's results.
    let slots: Vec<(String, usize)> = runs
        .lock()
        .expect("ledger")
        .ledger
        .uids_by_slot
        .iter()
        .map(|(slot, uids)| (slot.clone(), uids.len()))
        .collect();
    assert!(
        slots.len() >= 2,
        "at least two minute boundaries: {slots:?}"
    );
    assert!(
        slots.iter().all(|(_, n)| *n == 1),
        "a slot fired twice: {slots:?}"
    );
    let times: Vec<jiff::Timestamp> = slots
        .iter()
        .map(|(s, _)| s.parse().expect("slot time"))
        .collect();
    for pair in times.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]).as_secs(),
            60,
            "no slot lost: {slots:?}"
        );
    }
    for run in &run_results {
        let st = run.status.as_ref().expect("status");
        assert_eq!(
            (st.succeeded, st.total),
            (2, 2),
            "run {}: {st:?}",
            run.name_any()
        );
    }
    let last = invokers.get("every-minute").await.expect("invoker");
    let last_slot = last
        .status
        .as_ref()
        .and_then(|s| s.last_invoke_time.as_ref())
        .map(|t| t.0);
    assert_eq!(
        last_slot,
        times.last().copied(),
        "lastInvokeTime is the last fired slot"
    );

    for h in [jobs_watch, children_watch, labels_watch, runs_watch] {
        h.abort();
    }
    let at: Vec<String> = kills
        .iter()
        .map(|(at, down, _)| format!("{:.1}s(+{:.1})", at.as_secs_f64(), down.as_secs_f64()))
        .collect();
    println!(
        "RESULT kill: seed {seed:#018x}, {} operator kills ({busy_kills} while the fan-out or the \
         upgrade ran, {slot_kills} just after a minute boundary) at [{}]; fan-out: {} Jobs for 100 nodes, \
         max {} in flight (limit 10); upgrade: {child_count} children for 50 nodes, max {child_max} \
         in flight (limit 5), 50 label changes 1.0.0->2.0.0; schedule: {} slots, one child each; \
         duplicates 0; {} from creation to the last result",
        kills.len(),
        at.join(" "),
        report.jobs,
        report.max_in_flight,
        slots.len(),
        secs(elapsed)
    );
    drop(op);
}

// ---------------------------------------------------------------------------------------
// b. Control-plane restarts mid fan-out, and watches that expire with 410 Gone.

enum ControlPlaneFault {
    RestartApiserver,
    RestartEtcd,
    CompactThenRestartApiserver,
}

async fn fan_out_through(fault: ControlPlaneFault, prefix: &str) {
    let cluster = required_fault_cluster!();
    let ns = TestNamespace::new(prefix).await;
    install_crds(&ns.client).await;
    // kube-runtime's backoff decisions in the log: how long each controller waits before
    // watching again.
    let op = Operator::start(
        &ns.name,
        &[
            "--log-filter",
            "info,nodeops=debug,kube=warn,kube_runtime::utils::stream_backoff=debug",
        ],
    );
    let (jobs, jobs_watch) = watch(ns.api::<Job>(), watcher::Config::default(), Jobs::default());
    listed(&[&jobs]).await;
    let api: Api<AsyncCommand> = ns.api();
    let started = Instant::now();
    apply(&api, fan_out("fanout")).await;
    eventually(
        &api,
        "fanout",
        FINISH,
        "30 nodes done",
        succeeded_at_least(30),
    )
    .await;
    let label = match fault {
        ControlPlaneFault::RestartApiserver => {
            outage(&cluster, "kube-apiserver", Duration::from_secs(3)).await;
            "kube-apiserver restart"
        }
        ControlPlaneFault::RestartEtcd => {
            outage(&cluster, "etcd", Duration::from_secs(3)).await;
            "etcd restart"
        }
        ControlPlaneFault::CompactThenRestartApiserver => {
            // A resourceVersion from before the compaction, as every watch holds one.
            let stale = ns
                .api::<Job>()
                .list_metadata(&ListParams::default().limit(1))
                .await
                .expect("list")
                .metadata
                .resource_version
                .expect("resourceVersion");
            eventually(
                &api,
                "fanout",
                FINISH,
                "40 nodes done",
                succeeded_at_least(40),
            )
            .await;
            let revision = compact_etcd().await;
            assert!(
                revision > stale.parse::<u64>().expect("numeric"),
                "history moved on"
            );
            outage(&cluster, "kube-apiserver", Duration::from_secs(1)).await;
            // Any watch resuming from before the compaction is refused with 410 Gone.
            let code = resume_watch_code(&ns.api::<Job>(), &stale).await;
            assert_eq!(code, 410, "a watch from resourceVersion {stale} expires");
            println!("a watch resumed from resourceVersion {stale}: 410 Gone");
            "etcd compaction + kube-apiserver restart (410 Gone)"
        }
    };
    // The fault is over: how long until the next node finishes.
    let back = Instant::now();
    let before = retry("read the AsyncCommand", || api.get("fanout"))
        .await
        .status
        .map_or(0, |s| s.succeeded);
    eventually(
        &api,
        "fanout",
        FINISH,
        "progress after the fault",
        succeeded_at_least(before + 1),
    )
    .await;
    let resumed = back.elapsed();
    // Who was slow to resume: the Job controller and kwok (Jobs finishing, from the test's
    // own watch), or the operator (its status).
    let (jobs_resumed, operator_resumed) = {
        let l = jobs.lock().expect("ledger");
        let first = |times: &[Instant]| {
            times
                .iter()
                .find(|t| **t >= back)
                .map(|t| secs(t.duration_since(back)))
                .unwrap_or_else(|| "(none seen)".into())
        };
        (first(&l.ledger.finished_at), first(&l.ledger.created_at))
    };
    let done = eventually(&api, "fanout", FINISH, "every node final", finished).await;
    let elapsed = started.elapsed();
    let report = assert_fan_out_complete(&ns, &done, 100, 10, &jobs, Expect::AllFinal).await;
    let errors = jobs.lock().expect("ledger").errors.len();
    jobs_watch.abort();
    let log = op.log();
    let reconcile_errors = log.matches("reconcile failed; retrying").count();
    let expired = log.matches("too old resource version").count();
    let longest_backoff = log
        .lines()
        .filter(|l| l.contains("Error received, backing off"))
        .filter_map(|l| l.split("duration=").nth(1)?.split_whitespace().next())
        .filter_map(debug_duration)
        .max()
        .unwrap_or_default();
    println!(
        "RESULT {label}: at {before}/100 done; after the control plane served again the next Job \
         finished in {jobs_resumed}, the operator created its next Job in {operator_resumed} and \
         recorded its next result in {}; 100/100 nodes final, {} not Succeeded {:?}, {} Jobs (one per node), max {} \
         in flight (limit 10), \
         duplicates 0; the operator's watches hit 410 Gone {expired} times, {reconcile_errors} \
         reconciles were retried, its longest watch backoff was {}; the test's Job watch listed \
         {} times ({errors} errors); {} from creation to the last result",
        secs(resumed),
        report.not_succeeded.len(),
        report.not_succeeded,
        report.jobs,
        report.max_in_flight,
        secs(longest_backoff),
        report.lists,
        secs(elapsed)
    );
    drop(op);
}

/// A `Duration` as `{:?}` prints it (`840.89107ms`, `34.753477096s`).
fn debug_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-9)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| Duration::from_secs_f64(n * scale))
}

/// The status code a watch from `rv` ends with: 410 when its history is gone, 200 when it
/// streams.
async fn resume_watch_code(api: &Api<Job>, rv: &str) -> u16 {
    for _ in 0..60 {
        match api.watch(&WatchParams::default().timeout(5), rv).await {
            Err(kube::Error::Api(e)) if e.code == 410 => return 410,
            Err(_) => {}
            Ok(stream) => {
                futures::pin_mut!(stream);
                match stream.next().await {
                    Some(Ok(WatchEvent::Error(e))) => return e.code,
                    Some(Err(kube::Error::Api(e))) => return e.code,
                    Some(Ok(_)) => return 200,
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("could not open a watch from {rv}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restarted_mid_fan_out_every_node_final_once() {
    fan_out_through(ControlPlaneFault::RestartApiserver, "fault-apiserver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_mid_fan_out_every_node_final_once() {
    fan_out_through(ControlPlaneFault::RestartEtcd, "fault-etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_410_gone_watches_resume_without_loss() {
    fan_out_through(ControlPlaneFault::CompactThenRestartApiserver, "fault-gone").await;
}

// ---------------------------------------------------------------------------------------
// c. Other writers on the same status.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_status_writers_leave_a_complete_and_correct_status() {
    let _cluster = required_fault_cluster!();
    let (ns, op) = TestNamespace::with_operator("fault-writers").await;
    let (jobs, jobs_watch) = watch(ns.api::<Job>(), watcher::Config::default(), Jobs::default());
    listed(&[&jobs]).await;
    let api: Api<AsyncCommand> = ns.api();
    let started = Instant::now();
    let created = apply(&api, fan_out("contested")).await;
    let owner = created.metadata.uid.clone().expect("uid");
    let (regressions, regressions_watch) = watch(
        api.clone(),
        watcher::Config::default().fields("metadata.name=contested"),
        Regressions::default(),
    );
    // A snapshot that goes stale as soon as the operator writes again.
    let stale = eventually(
        &api,
        "contested",
        FINISH,
        "10 nodes done",
        succeeded_at_least(10),
    )
    .await;
    // ... once the operator has written since.
    let snapshot_rv = stale.metadata.resource_version.clone();
    eventually(
        &api,
        "contested",
        FINISH,
        "a write after the snapshot",
        |c: &AsyncCommand| c.metadata.resource_version != snapshot_rv,
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicUsize; 5]> = Arc::new(Default::default());
    const SSA_WRITES: usize = 0;
    const STALE_REFUSED: usize = 1;
    const STALE_ACCEPTED: usize = 2;
    const RMW_WRITTEN: usize = 3;
    const RMW_CONFLICT: usize = 4;

    // Another field manager (a dashboard, say) applies its view of the status, forcing
    // ownership: the counts and phase reset, node-0001's entry rolled back to Pending, and
    // a condition of its own.
    let dashboard = {
        let (api, stop, counts) = (api.clone(), stop.clone(), counts.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let current = api.get("contested").await.ok();
                let job_id = current
                    .as_ref()
                    .and_then(|c| c.status.as_ref())
                    .and_then(|s| s.cmd_jobs.iter().find(|e| e.node_name == "node-0001"))
                    .map(|e| e.job_id.clone());
                let mut status = json!({
                    "succeeded": 0, "running": 0, "pending": 100, "progress": "0/100", "phase": "Pending",
                    "conditions": [{"type": "DashboardSynced", "status": "True", "reason": "Polled",
                                    "message": "seen by the dashboard",
                                    "lastTransitionTime": jiff::Timestamp::now().round(jiff::Unit::Second).expect("round").to_string()}]
                });
                if let Some(id) = job_id {
                    status["cmdJobs"] =
                        json!([{"nodeName": "node-0001", "jobId": id, "phase": "Pending"}]);
                }
                let patch = json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand", "status": status});
                if api
                    .patch_status(
                        "contested",
                        &PatchParams::apply("status-dashboard").force(),
                        &Patch::Apply(&patch),
                    )
                    .await
                    .is_ok()
                {
                    counts[SSA_WRITES].fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    // Plain updates: one replaying the stale snapshot (its resourceVersion long gone), one
    // reading, zeroing the counters and writing back (sometimes between the operator's
    // writes, sometimes refused).
    let updater = {
        let (api, stop, counts) = (api.clone(), stop.clone(), counts.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match api
                    .replace_status("contested", &PostParams::default(), &stale)
                    .await
                {
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        counts[STALE_REFUSED].fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        counts[STALE_ACCEPTED].fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {}
                }
                if let Ok(mut fresh) = api.get("contested").await {
                    if let Some(s) = fresh.status.as_mut() {
                        s.succeeded = 0;
                        s.progress = Some("0/100".into());
                        s.phase = CommandPhase::Pending;
                    }
                    match api
                        .replace_status("contested", &PostParams::default(), &fresh)
                        .await
                    {
                        Ok(_) => {
                            counts[RMW_WRITTEN].fetch_add(1, Ordering::SeqCst);
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            counts[RMW_CONFLICT].fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // The writers keep at it until every node's Job is final, a little beyond.
    let t = Instant::now();
    while jobs.lock().expect("ledger").ledger.finished_of(&owner) < 100 {
        assert!(
            t.elapsed() < FINISH,
            "the fan-out did not finish under the other writers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    dashboard.await.expect("dashboard");
    updater.await.expect("updater");
    let c: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    println!(
        "other writers: {} forced applies by status-dashboard, stale updates {} refused / {} accepted, \
         read-modify-write updates {} written / {} conflicts",
        c[SSA_WRITES], c[STALE_REFUSED], c[STALE_ACCEPTED], c[RMW_WRITTEN], c[RMW_CONFLICT]
    );
    assert_eq!(
        c[STALE_ACCEPTED], 0,
        "an update with a stale resourceVersion was accepted"
    );
    assert!(
        c[STALE_REFUSED] > 0 && c[SSA_WRITES] > 0,
        "the other writers did write"
    );

    // The operator re-derives its status from the cluster: complete and correct.
    let done = eventually(
        &api,
        "contested",
        Duration::from_secs(60),
        "a correct final status",
        |c| {
            c.status.as_ref().is_some_and(|s| {
                s.completion_time.is_some()
                    && s.succeeded == 100
                    && s.phase == CommandPhase::Succeeded
                    && s.progress.as_deref() == Some("100/100")
                    && s.cmd_jobs.iter().all(|e| e.phase == NodePhase::Succeeded)
            })
        },
    )
    .await;
    let elapsed = started.elapsed();
    let report = assert_fan_out_complete(&ns, &done, 100, 10, &jobs, Expect::AllSucceeded).await;
    let managers: BTreeSet<String> = done
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains("status-dashboard"), "{managers:?}");
    jobs_watch.abort();
    regressions_watch.abort();
    let (dropped, rolled_back) = {
        let r = regressions.lock().expect("ledger");
        (r.ledger.count_dropped, r.ledger.node_rolled_back)
    };
    assert!(
        dropped > 0,
        "the other writers did make the status wrong for a while"
    );
    println!(
        "RESULT conflicting writers: {} forced applies + {} stale updates (all refused) + {} \
         read-modify-write updates landed; the watch saw the succeeded count go backwards \
         {dropped} times and node-0001's result rolled back to Pending {rolled_back} times; final \
         status 100/100 Succeeded, counts right, {} Jobs, max {} in flight, duplicates 0; {}",
        c[SSA_WRITES],
        c[STALE_REFUSED],
        c[RMW_WRITTEN],
        report.jobs,
        report.max_in_flight,
        secs(elapsed)
    );
    drop(op);
}

// ---------------------------------------------------------------------------------------
// d. Secrets never reach a status, an Event or the log.

/// `.status` of every object of a kind in the namespace, as JSON.
async fn statuses<K>(api: &Api<K>) -> Vec<(String, String)>
where
    K: Resource + Clone + DeserializeOwned + Debug + serde::Serialize,
    K::DynamicType: Default,
{
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|o| {
            let v = serde_json::to_value(o).expect("json");
            (
                format!("{}/{}", K::kind(&Default::default()), o.name_any()),
                v["status"].to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_status_events_or_logs() {
    let _cluster = required_fault_cluster!();
    let ns = TestNamespace::new("fault-secrets").await;
    install_crds(&ns.client).await;
    // The most a troubleshooter would turn on: every crate at debug, as JSON (the chart's
    // format, with the reconcile's span fields).
    let op = Operator::start(&ns.name, &["--log-format", "json", "--log-filter", "debug"]);
    let suffix = ns.name.rsplit('-').next().expect("suffix").to_string();
    let password = format!("pw-{suffix}-correct-horse-battery-staple");
    let token = format!("tok-{suffix}-9f2c41d07ab3e6");

    // A remote install: the password in a Secret, the host set first.
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "legacy-creds"}, "stringData": {"password": password}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret");
    let commands: Api<Command> = ns.api();
    apply(
        &commands,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Command", "metadata": {"name": "remote-install"},
               "spec": {"content": "curl -fsS https://repo.example.com/telescope-{{version}}.sh | sh", "enableParameters": true}}),
    )
    .await;
    let agent = Agent::create(
        &ns,
        json!({"mode": "DaemonSet", "image": "registry.example.com/telescope", "basicVersion": "3.2.1",
               "remoteInstaller": {"commandRef": "remote-install"}}),
    )
    .await;
    let set = invoke(
        &ns,
        "set-host",
        json!({"invocationType": "SetRemoteInstallHost", "invocationTarget": agent.name, "nodeNames": ["node-0050"]}),
    )
    .await;
    assert!(ok(&results(&set)["node-0050"]));
    let hosts = json!([
        {"instanceName": "legacy-db-01", "remoteIp": "192.0.2.10", "userName": "root", "credentialsSecretRef": {"name": "legacy-creds"}},
    ]);
    let remote = invoke(
        &ns,
        "remote",
        json!({"invocationType": "RemoteInstall", "invocationTarget": agent.name, "remoteInstallMeta": hosts}),
    )
    .await;
    assert!(
        ok(&results(&remote)["legacy-db-01"]),
        "{:?}",
        results(&remote)
    );

    // A Command whose parameter carries a token: one run that partly fails (a NodeFailed
    // Event, per-node messages), and one refused for a parameter it does not know (a
    // Stalled condition and Event that name the parameter).
    apply(
        &commands,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Command", "metadata": {"name": "rotate"},
               "spec": {"content": "rotate-credentials --token {{token}}", "enableParameters": true}}),
    )
    .await;
    let acmds: Api<AsyncCommand> = ns.api();
    apply(
        &acmds,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand", "metadata": {"name": "rotate"},
               "spec": {"commandRef": "rotate", "parameters": {"token": token},
                        "nodeNames": ["node-0011", "node-0012", "node-0013"],
                        "podAnnotations": {format!("{}node-0012", sim::EXIT_CODE_NODE_PREFIX): "3"}}}),
    )
    .await;
    apply(
        &acmds,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand", "metadata": {"name": "rotate-unknown"},
               "spec": {"commandRef": "rotate", "parameters": {"token": token, "tokenCopy": token},
                        "nodeNames": ["node-0014"]}}),
    )
    .await;
    let rotated = eventually(&acmds, "rotate", FINISH, "the rotation final", finished).await;
    let s = rotated.status.expect("status");
    assert_eq!((s.succeeded, s.failed), (2, 1), "{s:?}");
    let refused = eventually(
        &acmds,
        "rotate-unknown",
        FINISH,
        "Stalled",
        |c: &AsyncCommand| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True")
            })
        },
    )
    .await;
    let stalled = refused
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(stalled.reason, "ParameterInvalid");
    assert!(stalled.message.contains("tokenCopy"), "{}", stalled.message);
    // The token did go where it belongs: the node's environment.
    let job = ns
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .into_iter()
        .find(|j| j.annotations().get(NODE_ANNOTATION).map(String::as_str) == Some("node-0011"))
        .expect("a Job on node-0011");
    assert!(
        serde_json::to_string(&job.spec)
            .expect("json")
            .contains(&token),
        "the token reaches the run as a parameter"
    );
    // Events are written after the status: wait for the failure's.
    let events: Api<CoreEvent> = ns.api();
    let t = Instant::now();
    loop {
        let list = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items;
        if list
            .iter()
            .any(|e| e.reason.as_deref() == Some("ParameterInvalid"))
            && list
                .iter()
                .any(|e| e.reason.as_deref() == Some("NodeFailed"))
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "Events: {list:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Scan: every nodeops status in the namespace, the NodeAgent whole, every Event, the
    // operator's whole log.
    let mut texts: Vec<(String, String)> = Vec::new();
    texts.extend(statuses(&acmds).await);
    texts.extend(statuses(&commands).await);
    texts.extend(statuses(&ns.api::<Invoker>()).await);
    texts.extend(statuses(&ns.api::<AgentInvocation>()).await);
    texts.extend(statuses(&ns.api::<AgentUpgradeJob>()).await);
    let invocations = ns
        .api::<AgentInvocation>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    texts.push((
        "AgentInvocation objects".into(),
        serde_json::to_string(&invocations).expect("json"),
    ));
    let a = agent.api().get(&agent.name).await.expect("agent");
    texts.push((
        format!("NodeAgent/{}", agent.name),
        serde_json::to_string(&a).expect("json"),
    ));
    let all_events = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    let event_count = all_events.len();
    texts.push((
        "Events".into(),
        serde_json::to_string(&all_events).expect("json"),
    ));
    let log = op.log();
    assert!(log.contains("caches ready"), "the log is the operator's");
    texts.push(("operator log".into(), log.clone()));
    let scanned: usize = texts.iter().map(|(_, t)| t.len()).sum();
    for (what, text) in &texts {
        assert!(!text.contains(&password), "the password leaked into {what}");
        assert!(!text.contains(&token), "the token leaked into {what}");
    }
    println!(
        "RESULT secrets: {} statuses and objects, {event_count} Events and {} operator log lines \
         (debug, JSON; {} bytes scanned in all) hold neither the Secret's password nor the \
         parameter token",
        texts.len() - 2,
        log.lines().count(),
        scanned
    );
    drop(op);
}
