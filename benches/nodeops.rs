//! `make bench`: nodeops measured beside Kubernetes' own machinery on the local control
//! plane, in one run, because an absolute figure on a shared machine means little.
//!
//! 1. Schedules: 100 Invokers and 100 CronJobs on the same every-minute schedule; the lag
//!    from the scheduled time to the child (AsyncCommand / Job) being seen by a watch.
//! 2. Fan-out: AsyncCommands over 1000 nodes in total, against a minimal client loop
//!    creating the same number of Jobs with the same QPS budget.
//! 3. Footprint: the operator's RSS and CPU time, and API requests per node operation.
//!
//! It prints figures and ratios; it asserts nothing about time.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use nodeops::api::AsyncCommand;
use serde_json::json;

const INVOKERS: usize = 100;
const FAN_OUT_COMMANDS: usize = 10;
const NODES_PER_COMMAND: usize = 100;

struct Operator {
    child: std::process::Child,
    log: String,
}

impl Operator {
    fn start(kubeconfig: &str, namespace: &str) -> Self {
        let log_path = format!(
            "{}/target/bench-operator-{namespace}.log",
            env!("CARGO_MANIFEST_DIR")
        );
        let log = std::fs::File::create(&log_path).expect("log");
        // NODEOPS_BENCH_WRAPPER runs the operator under a profiler (e.g. `heaptrack`); its
        // figures are then the profiler's, not the operator's.
        let mut command = match std::env::var("NODEOPS_BENCH_WRAPPER") {
            Ok(wrapper) if !wrapper.is_empty() => {
                let mut c = std::process::Command::new(wrapper);
                c.arg(env!("CARGO_BIN_EXE_nodeops"));
                c
            }
            _ => std::process::Command::new(env!("CARGO_BIN_EXE_nodeops")),
        };
        let child = command
            .args(["--namespace", namespace, "--metrics-addr", "off"])
            // Its own process group: a wrapper's child is stopped with it.
            .process_group(0)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,nodeops::operator=info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start operator");
        Self {
            child,
            log: log_path,
        }
    }

    /// Stops it with SIGTERM and returns what its shutdown log line reported.
    fn stop(mut self) -> Report {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("api_requests="))
            .unwrap_or("");
        let field = |name: &str| -> Option<u64> {
            line.split(&format!("{name}="))
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        Report {
            requests: field("api_requests"),
            heap_in_use: field("heap_in_use"),
            heap_free: field("heap_free"),
        }
    }

    /// ((resident set size in KiB, CPU seconds), peak resident set size in KiB) from /proc.
    fn footprint(&self) -> ((u64, f64), u64) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |field: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let rss = kib("VmRSS:");
        let peak = kib("VmHWM:");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of /proc/pid/stat (11 and 12 after the name).
        let ticks: f64 = fields
            .get(11)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        ((rss, ticks / 100.0), peak)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

async fn client(kubeconfig: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.read_timeout = Some(Duration::from_secs(60));
    Client::try_from(config).expect("client")
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn drop_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await;
}

/// Deletes a namespace and waits until it is gone, so its objects' garbage collection does
/// not load the cluster during the next measurement.
async fn drop_namespace_and_wait(client: &Client, name: &str) {
    drop_namespace(client, name).await;
    let api = Api::<Namespace>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline && api.get_opt(name).await.ok().flatten().is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the operator said when it stopped: API requests made, and the allocator's bytes in
/// use and free but kept (glibc only) at that moment.
struct Report {
    requests: Option<u64>,
    heap_in_use: Option<u64>,
    heap_free: Option<u64>,
}

/// The operator's resource rows of a footprint table.
fn print_resources(
    (rss_kib, cpu): (u64, f64),
    peak_kib: u64,
    report: &Report,
    node_operations: usize,
) {
    println!("| RSS at the end | {:.1} MiB |", rss_kib as f64 / 1024.0);
    println!("| peak RSS | {:.1} MiB |", peak_kib as f64 / 1024.0);
    if let (Some(used), Some(free)) = (report.heap_in_use, report.heap_free) {
        println!(
            "| heap in use / free but kept | {:.1} / {:.1} MiB |",
            used as f64 / 1048576.0,
            free as f64 / 1048576.0
        );
    }
    println!("| CPU time | {cpu:.2} s |");
    if let Some(r) = report.requests {
        println!(
            "| API requests | {r} ({:.2} per node operation) |",
            r as f64 / node_operations as f64
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Records, for every object a watch reports, when it was first seen.
fn first_seen<K>(
    api: Api<K>,
) -> (
    Arc<Mutex<BTreeMap<String, jiff::Timestamp>>>,
    tokio::task::JoinHandle<()>,
)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let out = seen.clone();
    let handle = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(obj)) = stream.next().await {
            let now = jiff::Timestamp::now();
            out.lock()
                .expect("lock")
                .entry(obj.name_any())
                .or_insert(now);
        }
    });
    (seen, handle)
}

/// Lags in ms of the children of `slot_minutes` among `seen` (named `<parent>-<minutes>`).
fn lags(seen: &BTreeMap<String, jiff::Timestamp>, slot_minutes: i64) -> Vec<f64> {
    let slot = jiff::Timestamp::from_second(slot_minutes * 60).expect("slot");
    let suffix = format!("-{slot_minutes}");
    let mut out: Vec<f64> = seen
        .iter()
        .filter(|(name, _)| name.ends_with(&suffix))
        .map(|(_, at)| at.duration_since(slot).as_secs_f64() * 1000.0)
        .collect();
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

async fn schedules(client: &Client, kubeconfig: &str) {
    let ns = format!("bench-sched-{}", std::process::id());
    namespace(client, &ns).await;
    let op = Operator::start(kubeconfig, &ns);
    let pp = PatchParams::apply("nodeops-bench").force();
    let commands: Api<nodeops::api::Command> = Api::namespaced(client.clone(), &ns);
    commands
        .patch(
            "noop",
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Command",
            "metadata": {"name": "noop"}, "spec": {"content": "true"}}),
            ),
        )
        .await
        .expect("command");
    let (acmd_seen, w1) = first_seen(Api::<AsyncCommand>::namespaced(client.clone(), &ns));
    let (job_seen, w2) = first_seen(Api::<Job>::namespaced(client.clone(), &ns));
    // Create everything well before a minute boundary.
    let now = jiff::Timestamp::now();
    if now.as_second() % 60 > 40 {
        tokio::time::sleep(Duration::from_secs((61 - now.as_second() % 60) as u64)).await;
    }
    let invokers: Api<nodeops::api::Invoker> = Api::namespaced(client.clone(), &ns);
    let cronjobs: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(client.clone(), &ns);
    for i in 0..INVOKERS {
        let node = format!("node-{:04}", i % 100 + 1);
        invokers
            .patch(
                &format!("ivk-{i:03}"),
                &pp,
                &Patch::Apply(
                    json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Invoker",
                "metadata": {"name": format!("ivk-{i:03}")},
                "spec": {"commandRef": "noop", "nodeNames": [node], "concurrencyPolicy": "Allow",
                         "scheduleSettings": {"policy": "Recurrence", "recurrence": "* * * * *"}}}),
                ),
            )
            .await
            .expect("invoker");
        cronjobs
            .patch(&format!("cj-{i:03}"), &pp, &Patch::Apply(json!({"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": format!("cj-{i:03}")},
                "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Allow",
                         "jobTemplate": {"spec": {"template": {"spec": {"nodeName": node, "restartPolicy": "Never",
                             "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}}}})))
            .await
            .expect("cronjob");
    }
    let created = jiff::Timestamp::now();
    let slot_minutes = created.as_second().div_euclid(60) + 1;
    println!(
        "schedules: {INVOKERS} Invokers and {INVOKERS} CronJobs on \"* * * * *\", measuring the slot at minute {slot_minutes}"
    );
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let a = lags(&acmd_seen.lock().expect("lock"), slot_minutes).len();
        let j = lags(&job_seen.lock().expect("lock"), slot_minutes).len();
        if (a >= INVOKERS && j >= INVOKERS) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let a = lags(&acmd_seen.lock().expect("lock"), slot_minutes);
    let j = lags(&job_seen.lock().expect("lock"), slot_minutes);
    w1.abort();
    w2.abort();
    let ((rss, cpu), _) = op.footprint();
    let report = op.stop();
    println!();
    println!("| schedule lag (slot -> child seen) | children | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (what, l) in [
        ("nodeops Invoker -> AsyncCommand", &a),
        ("Kubernetes CronJob -> Job", &j),
    ] {
        println!(
            "| {what} | {} | {:.0} | {:.0} | {:.0} |",
            l.len(),
            percentile(l, 50.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!(
        "ratio Invoker/CronJob: p50 {:.2}, p99 {:.2}; operator RSS {:.1} MiB, CPU {:.2}s, API requests {}",
        percentile(&a, 50.0) / percentile(&j, 50.0),
        percentile(&a, 99.0) / percentile(&j, 99.0),
        rss as f64 / 1024.0,
        cpu,
        report
            .requests
            .map(|r| r.to_string())
            .unwrap_or_else(|| "?".into())
    );
    drop_namespace(client, &ns).await;
}

async fn fan_out(client: &Client, kubeconfig: &str) {
    let total = FAN_OUT_COMMANDS * NODES_PER_COMMAND;
    // The raw limit: a minimal client loop creating the same Jobs, one at a time per
    // worker, with the operator's concurrency (kube-rs' default client, no extra QPS).
    let ns_raw = format!("bench-raw-{}", std::process::id());
    namespace(client, &ns_raw).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns_raw);
    let start = Instant::now();
    futures::stream::iter(0..total)
        .for_each_concurrent(FAN_OUT_COMMANDS, |i| {
            let jobs = jobs.clone();
            async move {
                let job: Job = serde_json::from_value(json!({
                    "metadata": {"name": format!("raw-{i:04}")},
                    "spec": {"backoffLimit": 0, "template": {"spec": {"nodeName": format!("node-{:04}", i % 1000 + 1),
                        "restartPolicy": "Never", "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "run", "image": "busybox", "command": ["true"]}]}}}
                }))
                .expect("job");
                jobs.create(&PostParams::default(), &job).await.expect("create job");
            }
        })
        .await;
    let raw_created = start.elapsed();
    drop_namespace_and_wait(client, &ns_raw).await;

    let ns = format!("bench-fan-{}", std::process::id());
    namespace(client, &ns).await;
    let op = Operator::start(kubeconfig, &ns);
    let (job_seen, w) = first_seen(Api::<Job>::namespaced(client.clone(), &ns));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api: Api<AsyncCommand> = Api::namespaced(client.clone(), &ns);
    let pp = PatchParams::apply("nodeops-bench").force();
    let start = Instant::now();
    for c in 0..FAN_OUT_COMMANDS {
        let nodes: Vec<String> = (0..NODES_PER_COMMAND)
            .map(|n| format!("node-{:04}", c * NODES_PER_COMMAND + n + 1))
            .collect();
        api.patch(&format!("fan-{c}"), &pp, &Patch::Apply(json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
            "metadata": {"name": format!("fan-{c}")}, "spec": {"command": "uptime", "nodeNames": nodes}})))
            .await
            .expect("apply");
    }
    let mut all_jobs = None;
    let mut all_final = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline && all_final.is_none() {
        if all_jobs.is_none() && job_seen.lock().expect("lock").len() >= total {
            all_jobs = Some(start.elapsed());
        }
        let list = api.list(&ListParams::default()).await.expect("list");
        if list.items.len() == FAN_OUT_COMMANDS
            && list.items.iter().all(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.completion_time.is_some())
            })
        {
            all_final = Some(start.elapsed());
            if all_jobs.is_none() {
                all_jobs = all_final;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.abort();
    let (usage, peak) = op.footprint();
    let secs = |d: Option<Duration>| {
        d.map(|d| format!("{:.1}", d.as_secs_f64()))
            .unwrap_or_else(|| "timeout".into())
    };
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!();
    println!(
        "| fan-out of {total} node runs ({FAN_OUT_COMMANDS} AsyncCommands x {NODES_PER_COMMAND} nodes) | seconds | Jobs/s |"
    );
    println!("|---|---|---|");
    println!(
        "| raw client loop: {total} Jobs created | {:.1} | {:.0} |",
        raw_created.as_secs_f64(),
        rate(raw_created)
    );
    if let Some(d) = all_jobs {
        println!(
            "| nodeops: apply -> every Job created | {} | {:.0} |",
            secs(all_jobs),
            rate(d)
        );
        println!(
            "| nodeops: apply -> every status entry final | {} | |",
            secs(all_final)
        );
        println!(
            "ratio nodeops/raw Job creation rate: {:.2}",
            rate(d) / rate(raw_created)
        );
    }
    let report = op.stop();
    println!();
    println!("| operator footprint, 1000 nodes cached, {total} node runs | value |");
    println!("|---|---|");
    print_resources(usage, peak, &report, total);
    drop_namespace_and_wait(client, &ns).await;
}

/// 1000 AsyncCommands of one node each: the operator with 1000 nodes and 1000 objects.
async fn footprint(client: &Client, kubeconfig: &str) {
    let objects = 1000;
    let ns = format!("bench-objects-{}", std::process::id());
    namespace(client, &ns).await;
    let op = Operator::start(kubeconfig, &ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api: Api<AsyncCommand> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    futures::stream::iter(0..objects)
        .for_each_concurrent(10, |i| {
            let api = api.clone();
            async move {
                let obj: AsyncCommand = serde_json::from_value(json!({
                    "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
                    "metadata": {"name": format!("one-{i:04}")},
                    "spec": {"command": "uptime", "nodeNames": [format!("node-{:04}", i % 1000 + 1)]}
                }))
                .expect("object");
                api.create(&PostParams::default(), &obj).await.expect("create");
            }
        })
        .await;
    let applied = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done = None;
    while Instant::now() < deadline {
        let list = api.list(&ListParams::default()).await.expect("list");
        if list
            .items
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.completion_time.is_some())
            })
            .count()
            == objects
        {
            done = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (usage, peak) = op.footprint();
    let report = op.stop();
    println!();
    println!("| operator with 1000 nodes and {objects} AsyncCommands of 1 node | value |");
    println!("|---|---|");
    println!("| all applied | {:.1} s |", applied.as_secs_f64());
    println!(
        "| all final | {} |",
        done.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "timeout".into())
    );
    print_resources(usage, peak, &report, objects);
    drop_namespace_and_wait(client, &ns).await;
}

#[tokio::main]
async fn main() {
    let kubeconfig = std::env::var("NODEOPS_TEST_KUBECONFIG")
        .unwrap_or_else(|_| format!("{}/.local-cluster/kubeconfig", env!("CARGO_MANIFEST_DIR")));
    let client = client(&kubeconfig).await;
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "all".into());
    if which == "all" || which == "footprint" {
        footprint(&client, &kubeconfig).await;
    }
    if which == "all" || which == "fanout" {
        fan_out(&client, &kubeconfig).await;
    }
    if which == "all" || which == "schedules" {
        schedules(&client, &kubeconfig).await;
    }
}
