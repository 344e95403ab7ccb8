//! `make bench`: nodeops measured beside Kubernetes' own machinery, on a control plane of its
//! own (`hack/bench.sh`), because an absolute figure on a shared machine means little.
//!
//! 1. Footprint: 1000 AsyncCommands of one node each; the operator's RSS and CPU time, and
//!    API requests per node operation.
//! 2. Fan-out: AsyncCommands over 1000 nodes in total, against a minimal client loop
//!    creating the same number of Jobs with the operator's requests-in-flight budget (and,
//!    beside it, with the 10 in flight of the earlier baseline).
//! 3. Schedules: 100 Invokers and 100 CronJobs on the same every-minute schedule; the lag
//!    from the scheduled time to the child (AsyncCommand / Job) being seen by a watch.
//! 4. Upgrade (only when asked: `hack/bench.sh upgrade`, it takes long at thousands of
//!    nodes): an AgentUpgradeJob over every node at maxConcurrency 10%, beside Kubernetes'
//!    own DaemonSet controller rolling the same number of pods at maxUnavailable 10%; time
//!    to finish, peak in flight from a watch, and the largest object each wrote.
//!
//! Every measurement is repeated (`NODEOPS_BENCH_RUNS`, default 3), each run with its own
//! baseline, so every ratio is computed within a run; the tables give each figure's median,
//! its spread (min–max) and every run's value. The operator benched is the binary
//! `NODEOPS_BENCH_OPERATOR` names (`hack/bench.sh`: the static musl build the image ships),
//! else cargo's own build; which one it was is printed first.
//!
//! It prints figures and ratios; it asserts nothing about time.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use nodeops::api::agent_upgrade_job::AgentUpgradeJob;
use nodeops::api::{AgentInvocation, AsyncCommand, NodeAgent};
use serde_json::json;
use sha2::Digest;

const INVOKERS: usize = 1000;
const FAN_OUT_COMMANDS: usize = 10;
const NODES_PER_COMMAND: usize = 100;
/// The raw loop's requests in flight before it was given the operator's budget; still run,
/// so the figures stay comparable with the earlier ones.
const EARLIER_RAW_IN_FLIGHT: usize = 10;
/// The bench client's read timeout, and the server-side timeout of its watches (shorter).
const READ_TIMEOUT_S: u64 = 60;
const WATCH_TIMEOUT_S: u32 = 45;

/// The operator's own bounds, read from its source when the bench is compiled: the baseline
/// follows them when they change.
const CLIENT_SRC: &str = include_str!("../src/operator/mod.rs");
const EXECUTE_SRC: &str = include_str!("../src/controller/shell/execute.rs");

/// The value of `const NAME: usize = N;` in `src`.
fn source_const(src: &str, name: &str) -> usize {
    let needle = format!("const {name}: usize = ");
    src.lines()
        .find_map(|l| {
            l.split(&needle)
                .nth(1)?
                .trim()
                .strip_suffix(';')?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `const {name}: usize = N;` in the operator's source"))
}

/// How many Job creations the operator can have in flight during the fan-out.
struct Budget {
    /// Requests awaiting their response at once, every verb (the client's bound).
    client: usize,
    /// Creations in flight at once within one reconcile.
    per_reconcile: usize,
    /// What the fan-out's AsyncCommands can use: min(client, commands x per reconcile).
    job_creations: usize,
}

impl Budget {
    fn of_the_operator() -> Self {
        let client = source_const(CLIENT_SRC, "REQUESTS_IN_FLIGHT");
        let per_reconcile = source_const(EXECUTE_SRC, "CREATE_PARALLELISM");
        Self {
            client,
            per_reconcile,
            job_creations: client.min(per_reconcile * FAN_OUT_COMMANDS),
        }
    }
}

/// The operator binary benched, and what it is.
struct Binary {
    path: PathBuf,
    target: String,
    build: String,
    /// The ELF interpreter; none: a static executable.
    interpreter: Option<String>,
    allocator: String,
    /// glibc's heap figures (mallinfo2) are in its shutdown log; elsewhere they are zeros.
    heap_figures: bool,
    size: u64,
    sha256: String,
}

impl Binary {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (path, target, build) = match var("NODEOPS_BENCH_OPERATOR") {
            Some(path) => (
                PathBuf::from(path),
                var("NODEOPS_BENCH_OPERATOR_TARGET").unwrap_or_else(|| "not given".into()),
                var("NODEOPS_BENCH_OPERATOR_BUILD")
                    .unwrap_or_else(|| "given by NODEOPS_BENCH_OPERATOR".into()),
            ),
            None => (
                PathBuf::from(env!("CARGO_BIN_EXE_nodeops")),
                "the host's (cargo bench's own build)".into(),
                "cargo bench (bench profile)".into(),
            ),
        };
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("reading the operator binary {}: {e}", path.display()));
        let interpreter = elf_interpreter(&bytes);
        let has = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
        let glibc = interpreter
            .as_deref()
            .is_some_and(|i| i.contains("ld-linux"));
        // nodeops sets no #[global_allocator]: the libc's malloc, unless a Rust allocator
        // crate was linked in (their names are in their messages and settings).
        let (allocator, heap_figures) = if has(b"mimalloc") {
            ("mimalloc".to_string(), false)
        } else if has(b"jemalloc") {
            ("jemalloc".to_string(), false)
        } else if interpreter.is_none() && target.contains("musl") {
            (
                "musl's malloc, linked in statically (no malloc_trim; no heap figures)".into(),
                false,
            )
        } else if glibc {
            (
                "glibc's malloc (the operator calls malloc_trim every 5 s when free memory moved)"
                    .into(),
                true,
            )
        } else {
            ("the libc's malloc (unknown libc)".into(), false)
        };
        if target.contains("musl") && interpreter.is_some() {
            panic!(
                "{} is said to be a musl build but is dynamically linked",
                path.display()
            );
        }
        let sha256 = hex_sha256(&bytes);
        Self {
            path,
            target,
            build,
            interpreter,
            allocator,
            heap_figures,
            size: bytes.len() as u64,
            sha256,
        }
    }

    fn print(&self) {
        println!("| operator binary benched | |");
        println!("|---|---|");
        println!("| path | {} |", self.path.display());
        println!("| target | {} |", self.target);
        println!(
            "| linking | {} |",
            match &self.interpreter {
                None => "static (no ELF interpreter)".to_string(),
                Some(i) => format!("dynamic, interpreter {i}"),
            }
        );
        println!("| allocator | {} |", self.allocator);
        println!(
            "| size, sha256 | {:.1} MiB, {} |",
            self.size as f64 / 1048576.0,
            self.sha256
        );
        println!("| built by | {} |", self.build);
        if let Ok(source) = std::env::var("NODEOPS_BENCH_SOURCE") {
            println!("| source | {source} |");
        }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_of(path: &Path) -> String {
    hex_sha256(&std::fs::read(path).unwrap_or_default())
}

/// The PT_INTERP of a 64-bit little-endian ELF executable (none: static).
fn elf_interpreter(elf: &[u8]) -> Option<String> {
    assert!(
        elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "the operator binary is not a 64-bit little-endian ELF file"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).find_map(|i| {
        let ph = phoff + i * phentsize;
        // PT_INTERP: p_type 3; p_offset at +8, p_filesz at +32.
        (u32::from_le_bytes([elf[ph], elf[ph + 1], elf[ph + 2], elf[ph + 3]]) == 3).then(|| {
            let (off, len) = (u64_at(ph + 8), u64_at(ph + 32));
            String::from_utf8_lossy(&elf[off..off + len])
                .trim_end_matches('\0')
                .to_string()
        })
    })
}

/// What every part needs.
struct Bench {
    client: Client,
    kubeconfig: String,
    operator: Binary,
    runs: usize,
}

struct Operator {
    child: std::process::Child,
    log: String,
    /// Where its pid is written while it runs, for `hack/cluster-down.sh` to end it if this
    /// process is killed (its own process group outlives this one).
    pid_file: Option<PathBuf>,
}

impl Operator {
    fn start(bench: &Bench, namespace: &str) -> Self {
        let log_path = format!(
            "{}/target/bench-operator-{namespace}.log",
            env!("CARGO_MANIFEST_DIR")
        );
        let log = std::fs::File::create(&log_path).expect("log");
        let binary = &bench.operator.path;
        // NODEOPS_BENCH_WRAPPER runs the operator under a profiler (e.g. `heaptrack`); its
        // figures are then the profiler's, not the operator's.
        let mut command = match std::env::var("NODEOPS_BENCH_WRAPPER") {
            Ok(wrapper) if !wrapper.is_empty() => {
                let mut c = std::process::Command::new(wrapper);
                c.arg(binary);
                c
            }
            _ => std::process::Command::new(binary),
        };
        let child = command
            .args(["--namespace", namespace, "--metrics-addr", "off"])
            // Its own process group: a wrapper's child is stopped with it.
            .process_group(0)
            .env("KUBECONFIG", &bench.kubeconfig)
            .env("RUST_LOG", "warn,nodeops::operator=info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start operator");
        let pid_file = std::env::var_os("NODEOPS_BENCH_PID_FILE").map(PathBuf::from);
        if let Some(f) = &pid_file {
            std::fs::write(f, child.id().to_string()).expect("pid file");
        }
        Self {
            child,
            log: log_path,
            pid_file,
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
        // Where the requests went, for the reader of the bench's output.
        let by = log
            .lines()
            .rev()
            .find_map(|l| l.split("API requests by verb and resource: ").nth(1));
        if let Some(by) = by {
            println!("operator's API requests by verb and resource: {by}");
        }
        // `POST events 2000, PATCH events 3`: the Events it recorded.
        let events = by.map(|by| {
            by.split(", ")
                .filter_map(|entry| {
                    let mut words = entry.split(' ');
                    let (_verb, resource, n) = (words.next()?, words.next()?, words.next()?);
                    (resource == "events").then(|| n.parse::<u64>().ok())?
                })
                .sum::<u64>()
        });
        Report {
            events,
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
        if let Some(f) = &self.pid_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

async fn client(kubeconfig: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.read_timeout = Some(Duration::from_secs(READ_TIMEOUT_S));
    Client::try_from(config).expect("client")
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// Deletes a namespace and waits until it is gone, so its objects' garbage collection does
/// not load the cluster during the next measurement.
async fn drop_namespace_and_wait(client: &Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline && api.get_opt(name).await.ok().flatten().is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the operator said when it stopped: API requests made, and the allocator's bytes in
/// use and free but kept (glibc only) at that moment.
struct Report {
    requests: Option<u64>,
    /// Of them, the Events it recorded.
    events: Option<u64>,
    heap_in_use: Option<u64>,
    heap_free: Option<u64>,
}

/// The operator's resources over one run.
struct Resources {
    rss_mib: f64,
    peak_mib: f64,
    cpu_s: f64,
    requests: Option<f64>,
    events: Option<f64>,
    heap_in_use_mib: Option<f64>,
    heap_free_mib: Option<f64>,
}

impl Resources {
    fn of(op: Operator, bench: &Bench) -> Self {
        let ((rss, cpu_s), peak) = op.footprint();
        let report = op.stop();
        let mib = |b: Option<u64>| {
            b.filter(|_| bench.operator.heap_figures)
                .map(|b| b as f64 / 1048576.0)
        };
        Self {
            rss_mib: rss as f64 / 1024.0,
            peak_mib: peak as f64 / 1024.0,
            cpu_s,
            requests: report.requests.map(|r| r as f64),
            events: report.events.map(|r| r as f64),
            heap_in_use_mib: mib(report.heap_in_use),
            heap_free_mib: mib(report.heap_free),
        }
    }
}

/// The operator's resource rows of a footprint table, over the runs.
fn resource_rows(runs: &[Resources], node_operations: usize, bench: &Bench) {
    let each = |f: &dyn Fn(&Resources) -> Option<f64>| runs.iter().map(f).collect::<Vec<_>>();
    row("RSS at the end, MiB", &each(&|r| Some(r.rss_mib)), 1);
    row("peak RSS, MiB", &each(&|r| Some(r.peak_mib)), 1);
    if bench.operator.heap_figures {
        row("heap in use, MiB", &each(&|r| r.heap_in_use_mib), 1);
        row("heap free but kept, MiB", &each(&|r| r.heap_free_mib), 1);
    }
    row("CPU time, s", &each(&|r| Some(r.cpu_s)), 2);
    row("API requests", &each(&|r| r.requests), 0);
    row(
        "API requests per node operation",
        &each(&|r| r.requests.map(|n| n / node_operations as f64)),
        2,
    );
    row(
        "API requests per node operation, its Events apart",
        &each(&|r| {
            r.requests
                .zip(r.events)
                .map(|(n, e)| (n - e) / node_operations as f64)
        }),
        2,
    );
}

/// The header of a table of figures over runs.
fn table(what: &str, runs: usize) {
    println!();
    println!("| {what}, {runs} runs | median | min–max | each run |");
    println!("|---|---|---|---|");
}

/// One figure over the runs: its median, its spread and each run's value (none: the run
/// timed out, or had nothing to measure).
fn row(label: &str, values: &[Option<f64>], decimals: usize) {
    let mut got: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    got.sort_by(f64::total_cmp);
    let each = values
        .iter()
        .map(|v| match v {
            Some(v) if v.is_finite() => format!("{v:.decimals$}"),
            _ => "none".into(),
        })
        .collect::<Vec<_>>()
        .join(" / ");
    let n = got.len();
    if n == 0 {
        println!("| {label} | none | none | {each} |");
        return;
    }
    let median = if n % 2 == 1 {
        got[n / 2]
    } else {
        (got[n / 2 - 1] + got[n / 2]) / 2.0
    };
    let of = if n < values.len() {
        format!(" ({n} of {} runs)", values.len())
    } else {
        String::new()
    };
    println!(
        "| {label} | {median:.decimals$}{of} | {:.decimals$}–{:.decimals$} | {each} |",
        got[0],
        got[n - 1]
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What a bench watch can watch.
trait Watched:
    kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
{
}
impl<K> Watched for K where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// When a watch first saw each object, and how often the watch failed (it goes on after a
/// failure: a re-list reports objects again, and the first sighting is kept).
struct FirstSeen {
    seen: Arc<Mutex<BTreeMap<String, jiff::Timestamp>>>,
    errors: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FirstSeen {
    fn watch<K>(api: Api<K>) -> Self
    where
        K: Watched,
    {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let errors = Arc::new(AtomicUsize::new(0));
        let (out, failed) = (seen.clone(), errors.clone());
        // The server ends each watch within WATCH_TIMEOUT_S, before the client's read
        // timeout could fail an idle one (a schedule's children come a minute after the
        // watch starts); the watcher then resumes from where it was.
        let config = watcher::Config::default().timeout(WATCH_TIMEOUT_S);
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(item) = stream.next().await {
                let now = jiff::Timestamp::now();
                match item {
                    Ok(obj) => {
                        out.lock()
                            .expect("lock")
                            .entry(obj.name_any())
                            .or_insert(now);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { seen, errors, task }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, jiff::Timestamp>> {
        self.seen.lock().expect("lock")
    }

    /// Waits until the watch has seen `name`, at most 60 s: from then on it delivers.
    async fn wait_for(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.seen().contains_key(name) {
            assert!(Instant::now() < deadline, "the watch saw no {name} in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Once `count` objects were seen, how long after `start` the last of them was: the
    /// watch's own timestamps, not when a polling loop noticed.
    fn all_seen_after(&self, start: jiff::Timestamp, count: usize) -> Option<Duration> {
        let seen = self.seen();
        if seen.len() < count {
            return None;
        }
        let last = seen.values().max()?;
        Some(Duration::from_secs_f64(
            last.duration_since(start).as_secs_f64().max(0.0),
        ))
    }

    /// How long after `start` the first object was seen: with [`Self::all_seen_after`],
    /// the delay before the first creation apart from the rate of the rest.
    fn first_seen_after(&self, start: jiff::Timestamp) -> Option<Duration> {
        let first = *self.seen().values().min()?;
        Some(Duration::from_secs_f64(
            first.duration_since(start).as_secs_f64().max(0.0),
        ))
    }

    /// Stops the watch; how often it failed.
    fn stop(&self) -> usize {
        self.task.abort();
        self.errors.load(Ordering::Relaxed)
    }
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

/// One run of the schedule part.
struct ScheduleRun {
    /// The raw loop's time to create as many AsyncCommands, ms.
    raw_ms: f64,
    /// When the bench's watch saw each of them, ms after the raw loop's clock started.
    raw_seen: Vec<f64>,
    invoker: Vec<f64>,
    cronjob: Vec<f64>,
    resources: Resources,
}

async fn schedules_once(bench: &Bench, run: usize) -> ScheduleRun {
    let client = &bench.client;
    // The limit: a raw client loop creating as many AsyncCommands as the Invokers fire,
    // with the operator's in-flight budget, where no operator watches.
    let raw_ns = format!("bench-sched-raw-{}-{run}", std::process::id());
    namespace(client, &raw_ns).await;
    // The Invoker's lag ends when the bench's watch sees the child, so the raw loop's
    // objects are timed by such a watch too: the same delivery through the API server's
    // watch cache. The watch has seen an object before the clock starts.
    let raw_api = Api::<AsyncCommand>::namespaced(client.clone(), &raw_ns);
    let raw_seen = FirstSeen::watch(raw_api.clone());
    let ready: AsyncCommand = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
        "metadata": {"name": "ready"},
        "spec": {"commandRef": "noop", "nodeNames": ["node-0001"]}
    }))
    .expect("asynccommand");
    raw_api
        .create(&PostParams::default(), &ready)
        .await
        .expect("create");
    raw_seen.wait_for("ready").await;
    let (raw_start, raw) = raw_create(
        raw_api,
        source_const(CLIENT_SRC, "REQUESTS_IN_FLIGHT"),
        INVOKERS,
        |i| {
            serde_json::from_value(json!({
                "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
                "metadata": {"name": format!("raw-{i:04}")},
                "spec": {"commandRef": "noop", "nodeNames": [format!("node-{:04}", i % 100 + 1)]}
            }))
            .expect("asynccommand")
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while raw_seen.seen().len() < INVOKERS + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raw_watch_failures = raw_seen.stop();
    let mut raw_seen_ms: Vec<f64> = raw_seen
        .seen()
        .iter()
        .filter(|(name, _)| name.starts_with("raw-"))
        .map(|(_, at)| at.duration_since(raw_start).as_secs_f64() * 1000.0)
        .collect();
    raw_seen_ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "schedules run {run}/{}: raw loop {:.0} ms to the last response; seen by a watch: {} of {INVOKERS}, p50 {:.0} ms, p99 {:.0} ms, last {:.0} ms; watch failures {raw_watch_failures}",
        bench.runs,
        raw.as_secs_f64() * 1000.0,
        raw_seen_ms.len(),
        percentile(&raw_seen_ms, 50.0),
        percentile(&raw_seen_ms, 99.0),
        raw_seen_ms.last().copied().unwrap_or(f64::NAN),
    );
    drop_namespace_and_wait(client, &raw_ns).await;
    let ns = format!("bench-sched-{}-{run}", std::process::id());
    namespace(client, &ns).await;
    let op = Operator::start(bench, &ns);
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
    let acmd_seen = FirstSeen::watch(Api::<AsyncCommand>::namespaced(client.clone(), &ns));
    let job_seen = FirstSeen::watch(Api::<Job>::namespaced(client.clone(), &ns));
    // Start creating just after a minute boundary: the whole minute is left to create
    // them all (16 at a time) before the slot that is measured.
    let now = jiff::Timestamp::now();
    if now.as_second() % 60 > 5 {
        tokio::time::sleep(Duration::from_secs((61 - now.as_second() % 60) as u64)).await;
    }
    let invokers: Api<nodeops::api::Invoker> = Api::namespaced(client.clone(), &ns);
    let cronjobs: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(client.clone(), &ns);
    futures::stream::iter(0..INVOKERS)
        .for_each_concurrent(16, |i| {
            let (invokers, cronjobs, pp) = (invokers.clone(), cronjobs.clone(), pp.clone());
            async move {
                let node = format!("node-{:04}", i % 100 + 1);
                invokers
                    .patch(
                        &format!("ivk-{i:04}"),
                        &pp,
                        &Patch::Apply(
                            json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Invoker",
                        "metadata": {"name": format!("ivk-{i:04}")},
                        "spec": {"commandRef": "noop", "nodeNames": [node], "concurrencyPolicy": "Allow",
                                 "scheduleSettings": {"policy": "Recurrence", "recurrence": "* * * * *"}}}),
                        ),
                    )
                    .await
                    .expect("invoker");
                cronjobs
                    .patch(&format!("cj-{i:04}"), &pp, &Patch::Apply(json!({"apiVersion": "batch/v1", "kind": "CronJob",
                        "metadata": {"name": format!("cj-{i:04}")},
                        "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Allow",
                                 "jobTemplate": {"spec": {"template": {"spec": {"nodeName": node, "restartPolicy": "Never",
                                     "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}}}})))
                    .await
                    .expect("cronjob");
            }
        })
        .await;
    let created = jiff::Timestamp::now();
    // The next slot, unless it is too close for the controllers to have seen every object.
    let slot_minutes = (created.as_second() + 10).div_euclid(60) + 1;
    println!(
        "schedules run {run}/{}: {INVOKERS} Invokers and {INVOKERS} CronJobs created {}s into the minute",
        bench.runs,
        created.as_second() % 60
    );
    // Three minutes after the slot: the CronJob controller syncs 5 CronJobs at a time
    // (`--concurrent-cron-job-syncs`), and takes minutes to create 1000 Jobs.
    let until_slot = (slot_minutes * 60 - created.as_second()).max(0) as u64;
    let deadline = Instant::now() + Duration::from_secs(until_slot + 180);
    loop {
        let a = lags(&acmd_seen.seen(), slot_minutes).len();
        let j = lags(&job_seen.seen(), slot_minutes).len();
        if (a >= INVOKERS && j >= INVOKERS) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let invoker = lags(&acmd_seen.seen(), slot_minutes);
    let cronjob = lags(&job_seen.seen(), slot_minutes);
    let watch_failures = acmd_seen.stop() + job_seen.stop();
    let resources = Resources::of(op, bench);
    println!(
        "schedules run {run}/{}: slot at minute {slot_minutes}; Invoker p50 {:.0} ms, p99 {:.0} ms ({} children); CronJob p50 {:.0} ms, p99 {:.0} ms ({} children); watch failures {watch_failures}",
        bench.runs,
        percentile(&invoker, 50.0),
        percentile(&invoker, 99.0),
        invoker.len(),
        percentile(&cronjob, 50.0),
        percentile(&cronjob, 99.0),
        cronjob.len(),
    );
    drop_namespace_and_wait(client, &ns).await;
    ScheduleRun {
        raw_ms: raw.as_secs_f64() * 1000.0,
        raw_seen: raw_seen_ms,
        invoker,
        cronjob,
        resources,
    }
}

async fn schedules(bench: &Bench) {
    println!();
    println!(
        "schedules: {INVOKERS} Invokers and {INVOKERS} CronJobs on \"* * * * *\" in one namespace, the same slot measured for both; a fresh namespace and operator each run"
    );
    let mut runs = Vec::new();
    for run in 1..=bench.runs {
        runs.push(schedules_once(bench, run).await);
    }
    let each = |f: &dyn Fn(&ScheduleRun) -> f64| {
        runs.iter()
            .map(|r| Some(f(r)).filter(|v| v.is_finite()))
            .collect::<Vec<_>>()
    };
    let max = |l: &[f64]| l.last().copied().unwrap_or(f64::NAN);
    table("schedule lag (slot -> child seen)", bench.runs);
    row(
        &format!(
            "raw client loop, {} requests in flight: {INVOKERS} AsyncCommands created, ms (the limit)",
            source_const(CLIENT_SRC, "REQUESTS_IN_FLIGHT")
        ),
        &each(&|r| r.raw_ms),
        0,
    );
    row(
        "raw client loop: AsyncCommands seen by a watch",
        &each(&|r| r.raw_seen.len() as f64),
        0,
    );
    row(
        "raw client loop: start -> AsyncCommand seen by a watch, p99 ms",
        &each(&|r| percentile(&r.raw_seen, 99.0)),
        0,
    );
    row(
        "nodeops Invoker -> AsyncCommand: children seen",
        &each(&|r| r.invoker.len() as f64),
        0,
    );
    row(
        "nodeops Invoker -> AsyncCommand: p50 ms",
        &each(&|r| percentile(&r.invoker, 50.0)),
        0,
    );
    row(
        "nodeops Invoker -> AsyncCommand: p99 ms",
        &each(&|r| percentile(&r.invoker, 99.0)),
        0,
    );
    row(
        "nodeops Invoker -> AsyncCommand: max ms",
        &each(&|r| max(&r.invoker)),
        0,
    );
    row(
        "Kubernetes CronJob -> Job: children seen",
        &each(&|r| r.cronjob.len() as f64),
        0,
    );
    row(
        "Kubernetes CronJob -> Job: p50 ms",
        &each(&|r| percentile(&r.cronjob, 50.0)),
        0,
    );
    row(
        "Kubernetes CronJob -> Job: p99 ms",
        &each(&|r| percentile(&r.cronjob, 99.0)),
        0,
    );
    row(
        "Kubernetes CronJob -> Job: max ms",
        &each(&|r| max(&r.cronjob)),
        0,
    );
    row(
        "ratio Invoker/CronJob p50 (per run)",
        &each(&|r| percentile(&r.invoker, 50.0) / percentile(&r.cronjob, 50.0)),
        2,
    );
    row(
        "ratio Invoker/CronJob p99 (per run)",
        &each(&|r| percentile(&r.invoker, 99.0) / percentile(&r.cronjob, 99.0)),
        2,
    );
    row(
        "ratio Invoker p99/raw loop (per run; goal <= 1.2)",
        &each(&|r| percentile(&r.invoker, 99.0) / r.raw_ms),
        2,
    );
    row(
        "ratio Invoker p99/raw loop p99, both seen by a watch (per run)",
        &each(&|r| percentile(&r.invoker, 99.0) / percentile(&r.raw_seen, 99.0)),
        2,
    );
    row(
        "operator RSS during the run, MiB",
        &each(&|r| r.resources.rss_mib),
        1,
    );
    row(
        "operator peak RSS, MiB",
        &each(&|r| r.resources.peak_mib),
        1,
    );
    row("operator CPU time, s", &each(&|r| r.resources.cpu_s), 2);
}

/// A duration measured for a run's line, or "timeout" when it never came.
fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "timeout".into())
}

/// What a raw loop took, from the moment its clock started: to its last response, and to
/// when a watch of its namespace saw the last of its Jobs (`None`: not all seen in 120 s).
#[derive(Clone, Copy)]
struct RawTimes {
    response: Duration,
    seen: Option<Duration>,
    /// Events the operator's watches of Jobs and Pods delivered, when the loop kept them.
    observed: Option<usize>,
}

/// The watches the operator keeps of its children in a namespace, kept by the bench: its
/// Jobs (by `child_selector`) and its Pods (by the managed-by label), as full objects in
/// JSON. A raw loop that keeps them gives the API server the same watches to serve as
/// nodeops does while it creates: how much of the gap between the two is observing.
struct Observers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    events: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
}

impl Observers {
    /// Opens both watches and returns once each has listed (its watch follows at once).
    async fn open(client: &Client, ns: &str) -> Self {
        use k8s_openapi::api::core::v1::Pod;
        let events = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(AtomicUsize::new(0));
        let jobs = watcher::Config::default()
            .labels(&nodeops::controller::async_command::child_selector());
        let pods = watcher::Config::default().labels(nodeops::keys::MANAGED_SELECTOR);
        let (listed_jobs, jobs_rx) = tokio::sync::oneshot::channel();
        let (listed_pods, pods_rx) = tokio::sync::oneshot::channel();
        let tasks = vec![
            Self::keep(
                Api::<Job>::namespaced(client.clone(), ns),
                jobs,
                &events,
                &errors,
                listed_jobs,
            ),
            Self::keep(
                Api::<Pod>::namespaced(client.clone(), ns),
                pods,
                &events,
                &errors,
                listed_pods,
            ),
        ];
        let within = Duration::from_secs(60);
        for listed in [jobs_rx, pods_rx] {
            tokio::time::timeout(within, listed)
                .await
                .expect("an observer listed within 60 s")
                .expect("an observer's task");
        }
        Self {
            tasks,
            events,
            errors,
        }
    }

    fn keep<K>(
        api: Api<K>,
        config: watcher::Config,
        events: &Arc<AtomicUsize>,
        errors: &Arc<AtomicUsize>,
        listed: tokio::sync::oneshot::Sender<()>,
    ) -> tokio::task::JoinHandle<()>
    where
        K: Watched,
    {
        let (events, errors) = (events.clone(), errors.clone());
        tokio::spawn(async move {
            let mut listed = Some(listed);
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    }

    /// Stops both watches: the events they delivered; a failed watch fails the bench.
    fn stop(self) -> usize {
        for task in &self.tasks {
            task.abort();
        }
        assert_eq!(
            self.errors.load(Ordering::Relaxed),
            0,
            "an observer's watch failed"
        );
        self.events.load(Ordering::Relaxed)
    }
}

/// A minimal client loop creating `total` Jobs, the operator's own ([`operator_job`]), in a
/// namespace of its own with `in_flight` requests at once (kube-rs' default client, no
/// QPS limit).
async fn raw_loop(client: &Client, name: &str, in_flight: usize, total: usize) -> RawTimes {
    raw_loop_over(client, name, in_flight, total, 1000, RawKind::Plain).await
}

/// What a raw loop keeps beside its creations, to tell what part of the gap to nodeops
/// each of nodeops' differences is.
#[derive(Clone, Copy)]
enum RawKind {
    /// Its Jobs, owned by nothing, and the bench's watch of them.
    Plain,
    /// The operator's watches of its Jobs and Pods too ([`Observers`]).
    Watched,
    /// Its Jobs owned as nodeops' are: each hundred by an AsyncCommand of its own (a
    /// controller owner reference, blocking the owner's deletion), which the garbage
    /// collector of kube-controller-manager keeps in its graph.
    Owned,
}

/// [`raw_loop`] with its Jobs spread over `nodes` nodes (`node-0001`...). nodeops' Jobs are
/// timed by the bench's watch ([`operator_in`]), so the raw loop's are too: the same
/// delivery through the API server's watch cache, and the same watch to serve while they
/// are created. The watch has seen an object (a suspended Job, which runs nothing) before
/// the clock starts; so have the owners of [`RawKind::Owned`], created before it too.
async fn raw_loop_over(
    client: &Client,
    name: &str,
    in_flight: usize,
    total: usize,
    nodes: usize,
    kind: RawKind,
) -> RawTimes {
    namespace(client, name).await;
    let api = Api::<Job>::namespaced(client.clone(), name);
    let observers = match kind {
        RawKind::Watched => Some(Observers::open(client, name).await),
        _ => None,
    };
    let owners = match kind {
        RawKind::Owned => raw_owners(client, name, total.div_ceil(100)).await,
        _ => Vec::new(),
    };
    let watch = FirstSeen::watch(api.clone());
    let ready: Job = serde_json::from_value(json!({
        "metadata": {"name": "ready"},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "ready", "image": nodeops::engine::job::DEFAULT_IMAGE}]}}}
    }))
    .expect("job");
    api.create(&PostParams::default(), &ready)
        .await
        .expect("create");
    watch.wait_for("ready").await;
    let (started, response) = raw_create(api, in_flight, total, |i| {
        operator_job(
            name,
            i,
            &format!("node-{:04}", i % nodes + 1),
            owners.get(i / 100),
        )
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        // `ready` was seen before the clock started: the last of `total + 1` is a raw Job.
        seen = watch.all_seen_after(started, total + 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failures = watch.stop();
    assert_eq!(failures, 0, "the raw loop's watch of {name} failed");
    let observed = observers.map(Observers::stop);
    drop_namespace_and_wait(client, name).await;
    RawTimes {
        response,
        seen,
        observed,
    }
}

/// `count` AsyncCommands (`owner-00000`...) that no operator runs, to own a raw loop's
/// Jobs as a fleet's batches own nodeops'.
async fn raw_owners(client: &Client, namespace: &str, count: usize) -> Vec<AsyncCommand> {
    let api = Api::<AsyncCommand>::namespaced(client.clone(), namespace);
    let mut owners = Vec::new();
    for i in 0..count {
        let owner: AsyncCommand = serde_json::from_value(json!({
            "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
            "metadata": {"name": format!("owner-{i:05}")},
            "spec": {"command": "uptime", "nodeNames": ["node-0001"]}
        }))
        .expect("asynccommand");
        owners.push(
            api.create(&PostParams::default(), &owner)
                .await
                .expect("create"),
        );
    }
    owners
}

/// The Job the operator creates for node `node` of an AsyncCommand `{"command": "uptime"}`
/// (its own rendering, with the operator's default images). Owned by `owned_by` as the
/// operator's are, or by nothing: the raw loop sends the API server the same bodies, so
/// the comparison is of the clients.
fn operator_job(namespace: &str, i: usize, node: &str, owned_by: Option<&AsyncCommand>) -> Job {
    use nodeops::controller::async_command::plan::{World, owner_of, template};
    use nodeops::engine::job::render;
    let obj: AsyncCommand = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
        "metadata": {"name": format!("raw-{i:05}"), "namespace": namespace, "uid": format!("raw-{i:05}")},
        "spec": {"command": "uptime", "nodeNames": [node]}
    }))
    .expect("object");
    let world = World {
        settings: nodeops::settings::Settings {
            // The operator's defaults, as the bench runs it.
            runner_image: nodeops::engine::job::DEFAULT_RUNNER_IMAGE.into(),
            default_image: nodeops::engine::job::DEFAULT_IMAGE.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut job = render(
        &owner_of(owned_by.unwrap_or(&obj)),
        node,
        &template(&obj, &world).expect("template"),
    );
    if owned_by.is_none() {
        job.metadata.owner_references = None;
    }
    job
}

/// The time a minimal client loop takes to create `total` objects made by `make`, with
/// `in_flight` requests at once (kube-rs' default client, no QPS limit), and when its clock
/// started.
async fn raw_create<K>(
    api: Api<K>,
    in_flight: usize,
    total: usize,
    make: impl Fn(usize) -> K,
) -> (jiff::Timestamp, Duration)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    // Built before the clock starts: the limit is the client's and the API server's time,
    // not the rendering of the bodies.
    let objects: Vec<K> = (0..total).map(make).collect();
    let (started, start) = (jiff::Timestamp::now(), Instant::now());
    futures::stream::iter(objects)
        .for_each_concurrent(in_flight, |object| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &object)
                    .await
                    .expect("create");
            }
        })
        .await;
    (started, start.elapsed())
}

/// A fresh namespace `ns` with the operator watching it, a watch of its Jobs, and its
/// AsyncCommands' Api.
async fn operator_in(bench: &Bench, ns: &str) -> (Operator, FirstSeen, Api<AsyncCommand>) {
    namespace(&bench.client, ns).await;
    let op = Operator::start(bench, ns);
    let job_seen = FirstSeen::watch(Api::<Job>::namespaced(bench.client.clone(), ns));
    // The operator's caches fill before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (op, job_seen, Api::namespaced(bench.client.clone(), ns))
}

/// One run of the fan-out part: the two raw loops, then nodeops, each in a fresh namespace.
struct FanOutRun {
    raw_same: RawTimes,
    raw_earlier: RawTimes,
    created: Option<Duration>,
    all_final: Option<Duration>,
    resources: Resources,
}

async fn fan_out_once(bench: &Bench, budget: &Budget, run: usize) -> FanOutRun {
    let client = &bench.client;
    let total = FAN_OUT_COMMANDS * NODES_PER_COMMAND;
    let pid = std::process::id();
    let raw_same = raw_loop(
        client,
        &format!("bench-raw{}-{pid}-{run}", budget.job_creations),
        budget.job_creations,
        total,
    )
    .await;
    let raw_earlier = raw_loop(
        client,
        &format!("bench-raw{EARLIER_RAW_IN_FLIGHT}-{pid}-{run}"),
        EARLIER_RAW_IN_FLIGHT,
        total,
    )
    .await;

    let ns = format!("bench-fan-{pid}-{run}");
    let (op, job_seen, api) = operator_in(bench, &ns).await;
    let pp = PatchParams::apply("nodeops-bench").force();
    let start = Instant::now();
    let start_at = jiff::Timestamp::now();
    for c in 0..FAN_OUT_COMMANDS {
        let nodes: Vec<String> = (0..NODES_PER_COMMAND)
            .map(|n| format!("node-{:04}", c * NODES_PER_COMMAND + n + 1))
            .collect();
        api.patch(&format!("fan-{c}"), &pp, &Patch::Apply(json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
            "metadata": {"name": format!("fan-{c}")}, "spec": {"command": "uptime", "nodeNames": nodes}})))
            .await
            .expect("apply");
    }
    let mut created = None;
    let mut all_final = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline && all_final.is_none() {
        if created.is_none() {
            created = job_seen.all_seen_after(start_at, total);
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
            if created.is_none() {
                created = all_final;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = job_seen.first_seen_after(start_at);
    let watch_failures = job_seen.stop();
    let resources = Resources::of(op, bench);
    println!(
        "fan-out run {run}/{}: raw loop {} in flight {:.1} s (last Job seen {}), {EARLIER_RAW_IN_FLIGHT} in flight {:.1} s; nodeops first Job {}, every Job created {}, every status entry final {}; watch failures {watch_failures}",
        bench.runs,
        budget.job_creations,
        raw_same.response.as_secs_f64(),
        secs(raw_same.seen),
        raw_earlier.response.as_secs_f64(),
        secs(first),
        secs(created),
        secs(all_final),
    );
    drop_namespace_and_wait(client, &ns).await;
    FanOutRun {
        raw_same,
        raw_earlier,
        created,
        all_final,
        resources,
    }
}

async fn fan_out(bench: &Bench, nodes: usize) {
    let total = FAN_OUT_COMMANDS * NODES_PER_COMMAND;
    let budget = Budget::of_the_operator();
    println!();
    println!(
        "fan-out: {FAN_OUT_COMMANDS} AsyncCommands x {NODES_PER_COMMAND} nodes against a raw client loop creating the same {total} Jobs; each run: raw loop ({} in flight), raw loop ({EARLIER_RAW_IN_FLIGHT} in flight), nodeops, each in a fresh namespace deleted before the next",
        budget.job_creations
    );
    println!(
        "in-flight budget: the operator's client lets {} requests of every verb await their response at once (REQUESTS_IN_FLIGHT, src/operator/mod.rs) and a reconcile creates at most {} Jobs at once (CREATE_PARALLELISM, src/controller/shell/execute.rs): {FAN_OUT_COMMANDS} AsyncCommands have min({}, {FAN_OUT_COMMANDS} x {}) = {} Job creations in flight at most, shared with their other requests",
        budget.client,
        budget.per_reconcile,
        budget.client,
        budget.per_reconcile,
        budget.job_creations
    );
    let mut runs = Vec::new();
    for run in 1..=bench.runs {
        runs.push(fan_out_once(bench, &budget, run).await);
    }
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    let each = |f: &dyn Fn(&FanOutRun) -> Option<f64>| runs.iter().map(f).collect::<Vec<_>>();
    let b = budget.job_creations;
    let e = EARLIER_RAW_IN_FLIGHT;
    table(
        &format!(
            "fan-out of {total} node runs ({FAN_OUT_COMMANDS} AsyncCommands x {NODES_PER_COMMAND} nodes)"
        ),
        bench.runs,
    );
    row(
        &format!("raw client loop, {b} requests in flight: {total} Jobs created, s"),
        &each(&|r| Some(r.raw_same.response.as_secs_f64())),
        1,
    );
    row(
        &format!("raw client loop, {b} requests in flight: start -> last Job seen by a watch, s"),
        &each(&|r| r.raw_same.seen.map(|d| d.as_secs_f64())),
        1,
    );
    row(
        &format!("raw client loop, {b} requests in flight: Jobs/s"),
        &each(&|r| Some(rate(r.raw_same.response))),
        0,
    );
    row(
        &format!("raw client loop, {e} requests in flight: {total} Jobs created, s"),
        &each(&|r| Some(r.raw_earlier.response.as_secs_f64())),
        1,
    );
    row(
        &format!("raw client loop, {e} requests in flight: Jobs/s"),
        &each(&|r| Some(rate(r.raw_earlier.response))),
        0,
    );
    row(
        &format!("nodeops, at most {b} requests in flight: apply -> every Job created, s"),
        &each(&|r| r.created.map(|d| d.as_secs_f64())),
        1,
    );
    row(
        &format!("nodeops, at most {b} requests in flight: Jobs/s"),
        &each(&|r| r.created.map(rate)),
        0,
    );
    row(
        "nodeops: apply -> every status entry final, s",
        &each(&|r| r.all_final.map(|d| d.as_secs_f64())),
        1,
    );
    row(
        &format!("ratio nodeops/raw Job creation rate, both {b} in flight (per run)"),
        &each(&|r| r.created.map(|d| rate(d) / rate(r.raw_same.response))),
        2,
    );
    row(
        &format!("ratio, both {b} in flight, both timed by a watch (per run)"),
        &each(&|r| {
            r.created
                .zip(r.raw_same.seen)
                .map(|(d, raw)| rate(d) / rate(raw))
        }),
        2,
    );
    row(
        &format!("ratio nodeops/raw Job creation rate, raw loop {e} in flight (per run)"),
        &each(&|r| r.created.map(|d| rate(d) / rate(r.raw_earlier.response))),
        2,
    );
    let resources: Vec<Resources> = runs.into_iter().map(|r| r.resources).collect();
    table(
        &format!("operator footprint, {nodes} nodes cached, {total} node runs"),
        bench.runs,
    );
    resource_rows(&resources, total, bench);
}

/// One run of the fleet part.
struct FleetRun {
    raw: RawTimes,
    /// The raw loop again, keeping the operator's watches of its Jobs and Pods.
    observed: RawTimes,
    /// The raw loop again, its Jobs owned as nodeops' are.
    owned: RawTimes,
    created: Option<Duration>,
    all_final: Option<Duration>,
    /// The largest AsyncCommand (the fleet or a batch), managed fields included, bytes.
    largest: usize,
    resources: Resources,
}

/// One AsyncCommand whose selector matches every simulated node, split by the operator
/// into batches of 100; beside a raw client loop creating as many Jobs.
async fn fleet_once(bench: &Bench, in_flight: usize, nodes: usize, run: usize) -> FleetRun {
    let client = &bench.client;
    let pid = std::process::id();
    let raw_loop = |kind: RawKind, part: usize| {
        let name = format!("bench-fleet-{}-{pid}-{run}", PARTS[part]);
        async move { raw_loop_over(client, &name, in_flight, nodes, nodes, kind).await }
    };
    // The four take turns (each run starts one further), so none always runs right after
    // the cluster deleted the others' 5000 Jobs.
    const PARTS: [&str; 4] = ["raw", "watched", "owned", "nodeops"];
    let order: Vec<usize> = (0..PARTS.len())
        .map(|i| (i + run - 1) % PARTS.len())
        .collect();
    let (mut raw, mut observed, mut owned, mut ours) = (None, None, None, None);
    for &part in &order {
        match part {
            0 => raw = Some(raw_loop(RawKind::Plain, part).await),
            1 => observed = Some(raw_loop(RawKind::Watched, part).await),
            2 => owned = Some(raw_loop(RawKind::Owned, part).await),
            _ => ours = Some(fleet_nodeops(bench, nodes, run).await),
        }
    }
    let (raw, observed, owned, ours) = (
        raw.expect("ran"),
        observed.expect("ran"),
        owned.expect("ran"),
        ours.expect("ran"),
    );
    println!(
        "fleet run {run}/{} ({}): raw loop {in_flight} in flight {:.1} s (last Job seen {}); with the operator's watches {:.1} s (last Job seen {}, {} events observed); its Jobs owned {:.1} s (last Job seen {}); nodeops first Job {}, every Job created {}, the fleet final {} ({}, {} objects, largest {} bytes); watch failures {}",
        bench.runs,
        order
            .iter()
            .map(|&p| PARTS[p])
            .collect::<Vec<_>>()
            .join(", "),
        raw.response.as_secs_f64(),
        secs(raw.seen),
        observed.response.as_secs_f64(),
        secs(observed.seen),
        observed.observed.unwrap_or_default(),
        owned.response.as_secs_f64(),
        secs(owned.seen),
        secs(ours.first),
        secs(ours.created),
        secs(ours.all_final),
        ours.summary,
        ours.objects,
        ours.largest,
        ours.watch_failures,
    );
    FleetRun {
        raw,
        observed,
        owned,
        created: ours.created,
        all_final: ours.all_final,
        largest: ours.largest,
        resources: ours.resources,
    }
}

/// nodeops' side of a fleet run.
struct NodeopsFleet {
    first: Option<Duration>,
    created: Option<Duration>,
    all_final: Option<Duration>,
    summary: String,
    objects: usize,
    largest: usize,
    watch_failures: usize,
    resources: Resources,
}

/// The fleet applied to a fresh operator in a namespace of its own, until every node's
/// result is final.
async fn fleet_nodeops(bench: &Bench, nodes: usize, run: usize) -> NodeopsFleet {
    let client = &bench.client;
    let ns = format!("bench-fleet-{}-{run}", std::process::id());
    let (op, job_seen, api) = operator_in(bench, &ns).await;
    let pp = PatchParams::apply("nodeops-bench").force();
    let start = Instant::now();
    let start_at = jiff::Timestamp::now();
    api.patch("fleet", &pp, &Patch::Apply(json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
        "metadata": {"name": "fleet"}, "spec": {"command": "uptime", "nodeSelector": {"matchLabels": {"type": "kwok"}},
        // The simulated cluster takes minutes to run thousands of Pods at once on 2 cores: the
        // default 60 s would fail the nodes it has not got to yet (seen at 5000 nodes).
        "timeoutSeconds": 3600}})))
        .await
        .expect("apply");
    let mut created = None;
    let mut all_final = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while Instant::now() < deadline && all_final.is_none() {
        if created.is_none() {
            created = job_seen.all_seen_after(start_at, nodes);
        }
        let fleet = api.get("fleet").await.expect("get");
        if fleet
            .status
            .as_ref()
            .is_some_and(|s| s.completion_time.is_some())
        {
            all_final = Some(start.elapsed());
            created = created.or(all_final);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = job_seen.first_seen_after(start_at);
    let watch_failures = job_seen.stop();
    let resources = Resources::of(op, bench);
    let objects = api.list(&ListParams::default()).await.expect("list").items;
    let largest = objects.iter().map(size_of).max().unwrap_or(0);
    let fleet = objects
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some("fleet"));
    let summary = fleet
        .and_then(|f| f.status.as_ref())
        .map(|s| {
            format!(
                "{} succeeded, {} failed of {}",
                s.succeeded, s.failed, s.total
            )
        })
        .unwrap_or_default();
    assert!(largest < 512 * 1024, "an AsyncCommand of {largest} bytes");
    drop_namespace_and_wait(client, &ns).await;
    NodeopsFleet {
        first,
        created,
        all_final,
        summary,
        objects: objects.len(),
        largest,
        watch_failures,
        resources,
    }
}

async fn fleet(bench: &Bench) {
    let nodes = Api::<Node>::all(bench.client.clone())
        .list_metadata(&ListParams::default().labels("type=kwok"))
        .await
        .expect("nodes")
        .items
        .len();
    let batches = nodes.div_ceil(100);
    let client = source_const(CLIENT_SRC, "REQUESTS_IN_FLIGHT");
    let per_reconcile = source_const(EXECUTE_SRC, "CREATE_PARALLELISM");
    let in_flight = client.min(per_reconcile * batches);
    println!();
    println!(
        "fleet: one AsyncCommand whose nodeSelector matches all {nodes} simulated nodes (the operator splits it into {batches} batches of 100) against a raw client loop creating {nodes} Jobs with min({client}, {batches} x {per_reconcile}) = {in_flight} requests in flight, the most the batches' creations can have"
    );
    let mut runs = Vec::new();
    for run in 1..=bench.runs {
        runs.push(fleet_once(bench, in_flight, nodes, run).await);
    }
    let rate = |d: Duration| nodes as f64 / d.as_secs_f64();
    let each = |f: &dyn Fn(&FleetRun) -> Option<f64>| runs.iter().map(f).collect::<Vec<_>>();
    table(
        &format!("fan-out of one selector over {nodes} nodes ({batches} batches)"),
        bench.runs,
    );
    row(
        &format!("raw client loop, {in_flight} requests in flight: {nodes} Jobs created, s"),
        &each(&|r| Some(r.raw.response.as_secs_f64())),
        1,
    );
    row(
        "raw client loop: start -> last Job seen by a watch, s",
        &each(&|r| r.raw.seen.map(|d| d.as_secs_f64())),
        1,
    );
    row(
        "raw client loop keeping the operator's watches of its Jobs and Pods, s",
        &each(&|r| Some(r.observed.response.as_secs_f64())),
        1,
    );
    row(
        &format!("raw client loop, its Jobs owned as nodeops' are (by {batches} AsyncCommands), s"),
        &each(&|r| Some(r.owned.response.as_secs_f64())),
        1,
    );
    row(
        "nodeops: apply -> every Job created, s",
        &each(&|r| r.created.map(|d| d.as_secs_f64())),
        1,
    );
    row(
        "nodeops: apply -> every node's result final, s",
        &each(&|r| r.all_final.map(|d| d.as_secs_f64())),
        1,
    );
    row(
        "ratio nodeops/raw Job creation rate (per run)",
        &each(&|r| r.created.map(|d| rate(d) / rate(r.raw.response))),
        2,
    );
    row(
        "ratio, both timed by a watch (per run)",
        &each(&|r| {
            r.created
                .zip(r.raw.seen)
                .map(|(d, raw)| rate(d) / rate(raw))
        }),
        2,
    );
    row(
        "ratio nodeops/raw loop keeping the operator's watches (per run)",
        &each(&|r| r.created.map(|d| rate(d) / rate(r.observed.response))),
        2,
    );
    row(
        "ratio nodeops/raw loop with its Jobs owned (per run)",
        &each(&|r| r.created.map(|d| rate(d) / rate(r.owned.response))),
        2,
    );
    row(
        "largest AsyncCommand (fleet or batch), bytes",
        &each(&|r| Some(r.largest as f64)),
        0,
    );
    let resources: Vec<Resources> = runs.into_iter().map(|r| r.resources).collect();
    table(
        &format!("operator footprint, the fleet of {nodes} nodes"),
        bench.runs,
    );
    resource_rows(&resources, nodes, bench);
}

/// One run of the footprint part.
struct FootprintRun {
    applied: Duration,
    done: Option<Duration>,
    resources: Resources,
}

/// 1000 AsyncCommands of one node each: the operator with 1000 nodes and 1000 objects.
async fn footprint_once(bench: &Bench, objects: usize, nodes: usize, run: usize) -> FootprintRun {
    let client = &bench.client;
    let ns = format!("bench-objects-{}-{run}", std::process::id());
    namespace(client, &ns).await;
    let op = Operator::start(bench, &ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api: Api<AsyncCommand> = Api::namespaced(client.clone(), &ns);
    // Objects final, counted from a watch (a list of 10,000 objects every half second was
    // itself a load on the API server).
    let (final_tx, final_rx) = tokio::sync::watch::channel(0usize);
    let counter = tokio::spawn(count_final(api.clone(), final_tx));
    let start = Instant::now();
    futures::stream::iter(0..objects)
        .for_each_concurrent(10, |i| {
            let mut final_rx = final_rx.clone();
            let api = api.clone();
            async move {
                // Created as earlier ones finish: at most FOOTPRINT_UNFINISHED at once.
                let _ = final_rx
                    .wait_for(|&done| i < done + FOOTPRINT_UNFINISHED)
                    .await;
                let obj: AsyncCommand = serde_json::from_value(json!({
                    "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
                    "metadata": {"name": format!("one-{i:05}")},
                    "spec": {"command": "uptime", "nodeNames": [format!("node-{:04}", i % nodes + 1)]}
                }))
                .expect("object");
                api.create(&PostParams::default(), &obj).await.expect("create");
            }
        })
        .await;
    let applied = start.elapsed();
    // The simulated cluster runs about 10 Pods a second on 2 cores at 5000 nodes.
    let limit = Duration::from_secs(600 + objects as u64 / 5);
    let mut final_rx = final_rx.clone();
    let done = tokio::time::timeout(
        limit.saturating_sub(applied),
        final_rx.wait_for(|&done| done >= objects),
    )
    .await
    .ok()
    .map(|_| start.elapsed());
    counter.abort();
    let resources = Resources::of(op, bench);
    println!(
        "footprint run {run}/{}: all applied {:.1} s, all final {}, peak RSS {:.1} MiB",
        bench.runs,
        applied.as_secs_f64(),
        done.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "timeout".into()),
        resources.peak_mib
    );
    drop_namespace_and_wait(client, &ns).await;
    FootprintRun {
        applied,
        done,
        resources,
    }
}

/// The footprint part's objects not yet final at any moment: 10,000 applied at once kept
/// 6000 Pods waiting on the simulated cluster, whose 2 cores run about 10 a second, and
/// most failed their command's 60 s timeout while they waited.
const FOOTPRINT_UNFINISHED: usize = 500;

/// Sends the number of `api`'s objects that are final (a completion time) whenever it grows.
async fn count_final(api: Api<AsyncCommand>, sink: tokio::sync::watch::Sender<usize>) {
    let mut done = std::collections::HashSet::new();
    let mut stream = std::pin::pin!(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(obj) => {
                let finished = obj
                    .status
                    .as_ref()
                    .is_some_and(|s| s.completion_time.is_some());
                if finished && done.insert(obj.name_any()) {
                    sink.send_replace(done.len());
                }
            }
            Err(e) => eprintln!("footprint: the watch of the objects failed ({e}); it starts over"),
        }
    }
}

async fn footprint(bench: &Bench, nodes: usize) {
    // BENCH_OBJECTS: issue 19's footprint is 10,000 finished objects at 5000 nodes.
    let objects = std::env::var("NODEOPS_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 1)
        .unwrap_or(1000);
    let nodes = nodes.clamp(1, 9999);
    println!();
    println!(
        "footprint: {objects} AsyncCommands of 1 node each (over {nodes} nodes), created 10 at a time with at most {FOOTPRINT_UNFINISHED} unfinished; a fresh namespace and operator each run"
    );
    let mut runs = Vec::new();
    for run in 1..=bench.runs {
        runs.push(footprint_once(bench, objects, nodes, run).await);
    }
    table(
        &format!("operator with {nodes} nodes and {objects} AsyncCommands of 1 node"),
        bench.runs,
    );
    row(
        "all applied, s",
        &runs
            .iter()
            .map(|r| Some(r.applied.as_secs_f64()))
            .collect::<Vec<_>>(),
        1,
    );
    row(
        "all final, s",
        &runs
            .iter()
            .map(|r| r.done.map(|d| d.as_secs_f64()))
            .collect::<Vec<_>>(),
        1,
    );
    let resources: Vec<Resources> = runs.into_iter().map(|r| r.resources).collect();
    resource_rows(&resources, objects, bench);
}

#[tokio::main]
async fn main() {
    let kubeconfig = std::env::var("NODEOPS_TEST_KUBECONFIG")
        .unwrap_or_else(|_| format!("{}/.local-cluster/kubeconfig", env!("CARGO_MANIFEST_DIR")));
    let runs = std::env::var("NODEOPS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 1)
        .unwrap_or(3);
    let bench = Bench {
        client: client(&kubeconfig).await,
        kubeconfig,
        operator: Binary::from_env(),
        runs,
    };
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "all".into());
    let nodes = Api::<Node>::all(bench.client.clone())
        .list_metadata(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .len();
    println!(
        "nodeops bench: {which}, {runs} runs per figure, {nodes} nodes, kubeconfig {}",
        bench.kubeconfig
    );
    println!();
    bench.operator.print();
    // One part, several separated by commas, or "all".
    let part = |name: &str| which == "all" || which.split(',').any(|w| w == name);
    let mut took = Vec::new();
    // The short parts first; the footprint of many objects last.
    if part("schedules") {
        let start = Instant::now();
        schedules(&bench).await;
        took.push(format!("schedules {:.0} s", start.elapsed().as_secs_f64()));
    }
    if part("fanout") {
        let start = Instant::now();
        fan_out(&bench, nodes).await;
        took.push(format!("fan-out {:.0} s", start.elapsed().as_secs_f64()));
    }
    if part("fleet") {
        let start = Instant::now();
        fleet(&bench).await;
        took.push(format!("fleet {:.0} s", start.elapsed().as_secs_f64()));
    }
    // Not part of "all": minutes at 1000 nodes, far more at 5000.
    if which.split(',').any(|w| w == "upgrade") {
        let start = Instant::now();
        upgrade(&bench, nodes).await;
        took.push(format!("upgrade {:.0} s", start.elapsed().as_secs_f64()));
    }
    if part("footprint") {
        let start = Instant::now();
        footprint(&bench, nodes).await;
        took.push(format!("footprint {:.0} s", start.elapsed().as_secs_f64()));
    }
    println!();
    println!("parts took: {}", took.join(", "));
    // A rebuild during the run would have benched two binaries: say so.
    if sha256_of(&bench.operator.path) != bench.operator.sha256 {
        println!(
            "WARNING: {} changed during the run: the runs did not all bench the binary above",
            bench.operator.path.display()
        );
    }
}

/// How long the upgrade part waits for one rollout.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(3600);

/// Labels every node with `key=value`, `in_flight` patches at a time.
async fn label_all(client: &Client, nodes: &[String], key: &str, value: Option<&str>) {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(nodes.iter().cloned())
        .for_each_concurrent(96, |n| {
            let api = api.clone();
            async move {
                let patch = json!({"metadata": {"labels": {key: value}}});
                api.patch(&n, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("label node");
            }
        })
        .await;
}

/// Polls `check` every 2 s until it is true or `deadline` passes; how long it took.
async fn until<F, Fut>(deadline: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    None
}

/// Size in bytes of an object as the API server returns it, managed fields included.
fn size_of<K: serde::Serialize>(obj: &K) -> usize {
    serde_json::to_vec(obj).map(|v| v.len()).unwrap_or(0)
}

/// One run of the upgrade part.
struct UpgradeRun {
    daemonset: Option<Duration>,
    nodeops: Option<Duration>,
    peak_in_flight: usize,
    largest: Vec<(String, usize)>,
    resources: Resources,
}

/// Kubernetes' own DaemonSet controller: a DaemonSet on every node rolled from one image to
/// another at maxUnavailable `unavailable`; the time from the change to every pod updated
/// and available.
async fn daemonset_rollout(
    client: &Client,
    ns: &str,
    total: usize,
    unavailable: &str,
) -> Option<Duration> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let ds = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "limit"},
            "spec": {"selector": {"matchLabels": {"app": "limit"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": unavailable}},
                "template": {"metadata": {"labels": {"app": "limit"}},
                    "spec": {"tolerations": [{"operator": "Exists"}],
                        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "type", "operator": "In", "values": ["kwok"]}]}]}}},
                        "containers": [{"name": "agent", "image": image}]}}}})
    };
    let pp = PatchParams::apply("nodeops-bench").force();
    api.patch(
        "limit",
        &pp,
        &Patch::Apply(ds("registry.example.com/telescope:1.0.0")),
    )
    .await
    .expect("daemonset");
    let settled = |generation: i64| {
        let api = api.clone();
        async move {
            let d = api.get("limit").await.expect("daemonset");
            let s = d.status.unwrap_or_default();
            s.observed_generation == Some(generation)
                && s.desired_number_scheduled as usize == total
                && s.updated_number_scheduled.unwrap_or(0) as usize == total
                && s.number_available.unwrap_or(0) as usize == total
        }
    };
    until(UPGRADE_DEADLINE, || settled(1)).await?;
    api.patch(
        "limit",
        &pp,
        &Patch::Apply(ds("registry.example.com/telescope:2.0.0")),
    )
    .await
    .expect("daemonset");
    until(UPGRADE_DEADLINE, || settled(2)).await
}

async fn upgrade_once(bench: &Bench, nodes: &[String], run: usize) -> UpgradeRun {
    let client = &bench.client;
    let total = nodes.len();
    let pid = std::process::id();
    let limit_ns = format!("bench-ds-{pid}-{run}");
    namespace(client, &limit_ns).await;
    let daemonset = daemonset_rollout(client, &limit_ns, total, "10%").await;
    drop_namespace_and_wait(client, &limit_ns).await;

    let ns = format!("bench-up-{pid}-{run}");
    namespace(client, &ns).await;
    let op = Operator::start(bench, &ns);
    // The agent at 1.0.0 on every node: its label set directly (what an Install leaves),
    // its DaemonSet's pods Ready on all.
    let agent = format!("bench-{pid}-{run}");
    let key = nodeops::keys::agent_node_label(&agent);
    let agents: Api<NodeAgent> = Api::all(client.clone());
    let pp = PatchParams::apply("nodeops-bench").force();
    agents
        .patch(&agent, &pp, &Patch::Apply(json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "NodeAgent",
            "metadata": {"name": agent}, "spec": {"namespace": ns, "mode": "DaemonSet",
            "image": "registry.example.com/telescope", "basicVersion": "1.0.0", "readyTimeoutSeconds": 600}})))
        .await
        .expect("agent");
    label_all(client, nodes, &key, Some("1.0.0")).await;
    let ready_at = |version: &'static str| {
        let agents = agents.clone();
        let agent = agent.clone();
        async move {
            agents
                .get(&agent)
                .await
                .ok()
                .and_then(|a| a.status)
                .is_some_and(|s| {
                    s.versions.iter().any(|v| {
                        v.version == version
                            && v.nodes as usize == total
                            && v.ready as usize == total
                    })
                })
        }
    };
    let installed = until(UPGRADE_DEADLINE, || ready_at("1.0.0")).await;
    println!(
        "upgrade run {run}/{}: agent at 1.0.0 Ready on {total} nodes in {}",
        bench.runs,
        installed.map_or("timeout".into(), |d| format!("{:.0} s", d.as_secs_f64()))
    );

    // Peak in flight from a watch of every child: created and not final.
    let children: Api<AgentInvocation> = Api::namespaced(client.clone(), &ns);
    let peak = Arc::new(AtomicUsize::new(0));
    let watch_failed = Arc::new(AtomicUsize::new(0));
    let (seen_peak, failed) = (peak.clone(), watch_failed.clone());
    let watch = tokio::spawn(async move {
        let mut in_flight = std::collections::BTreeSet::new();
        let mut done = std::collections::BTreeSet::new();
        let mut stream = watcher(
            children,
            watcher::Config::default().timeout(WATCH_TIMEOUT_S),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        while let Some(item) = stream.next().await {
            let Ok(inv) = item else {
                failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let name = inv.name_any();
            let finished = inv
                .status
                .as_ref()
                .and_then(|s| s.invocations.first())
                .is_some_and(|e| e.phase.is_final());
            if finished {
                in_flight.remove(&name);
                done.insert(name);
            } else if !done.contains(&name) {
                in_flight.insert(name);
            }
            seen_peak.fetch_max(in_flight.len(), Ordering::Relaxed);
        }
    });
    let jobs: Api<AgentUpgradeJob> = Api::namespaced(client.clone(), &ns);
    jobs.patch("fleet", &pp, &Patch::Apply(json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AgentUpgradeJob",
        "metadata": {"name": "fleet"}, "spec": {"agent": agent, "targetVersion": "2.0.0", "maxConcurrency": "10%",
        "nodeSelector": {"matchExpressions": [{"key": key, "operator": "Exists"}]}}})))
        .await
        .expect("upgrade job");
    let finished = until(UPGRADE_DEADLINE, || {
        let jobs = jobs.clone();
        async move {
            jobs.get("fleet")
                .await
                .ok()
                .and_then(|j| j.status)
                .is_some_and(|s| s.completed_at.is_some())
        }
    })
    .await;
    watch.abort();
    let job = jobs.get("fleet").await.expect("job");
    let s = job.status.clone().unwrap_or_default();
    let upgraded = nodes_at(client, &key, "2.0.0").await;
    println!(
        "upgrade run {run}/{}: DaemonSet rollout {}; nodeops {} ({:?}, progress {}, {upgraded} nodes labelled 2.0.0), peak in flight {}, watch failures {}",
        bench.runs,
        daemonset.map_or("timeout".into(), |d| format!("{:.0} s", d.as_secs_f64())),
        finished.map_or("timeout".into(), |d| format!("{:.0} s", d.as_secs_f64())),
        s.status,
        s.progress.as_deref().unwrap_or("-"),
        peak.load(Ordering::Relaxed),
        watch_failed.load(Ordering::Relaxed),
    );
    // Why agents failed, if any did: the job lists its failures first.
    for a in s.agents.iter().filter(|a| a.error.is_some()).take(5) {
        println!(
            "upgrade run {run}/{}: {} on {}: {}",
            bench.runs,
            serde_json::to_value(a.status).unwrap_or_default(),
            a.node_name.as_deref().unwrap_or("-"),
            a.error.as_deref().unwrap_or("-")
        );
    }
    // The largest object of each kind nodeops wrote for it.
    let mut largest = vec![("AgentUpgradeJob".to_string(), size_of(&job))];
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let plan = cms
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            nodeops::keys::ROLE_LABEL,
            nodeops::keys::ROLE_PLAN
        )))
        .await
        .expect("plan");
    largest.push((
        format!("plan ConfigMap (of {})", plan.items.len()),
        plan.items.iter().map(size_of).max().unwrap_or(0),
    ));
    let kids: Api<AgentInvocation> = Api::namespaced(client.clone(), &ns);
    let kids = kids.list(&ListParams::default()).await.expect("children");
    largest.push((
        format!("AgentInvocation (of {})", kids.items.len()),
        kids.items.iter().map(size_of).max().unwrap_or(0),
    ));
    largest.push((
        "NodeAgent".to_string(),
        agents.get(&agent).await.map(|a| size_of(&a)).unwrap_or(0),
    ));
    for (what, bytes) in &largest {
        println!(
            "upgrade run {run}/{}: largest {what}: {bytes} bytes",
            bench.runs
        );
        assert!(*bytes < 512 * 1024, "{what} is {bytes} bytes, over 512 KiB");
    }
    assert_eq!(upgraded, total, "every agent upgraded");
    // The operator stops before the clean-up: deleting a DaemonSet-mode agent unlabels
    // every node (its finalizer), 5000 node operations of another shape that its request
    // count must not charge to the upgrade. The bench then removes the agent, its
    // finalizer and its labels itself.
    let resources = Resources::of(op, bench);
    agents
        .delete(&agent, &DeleteParams::default())
        .await
        .expect("delete agent");
    match agents
        .patch(
            &agent,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("dropping the agent's finalizer: {e}"),
    }
    label_all(client, nodes, &key, None).await;
    drop_namespace_and_wait(client, &ns).await;
    UpgradeRun {
        daemonset,
        nodeops: finished,
        peak_in_flight: peak.load(Ordering::Relaxed),
        largest,
        resources,
    }
}

/// Nodes whose `key` label is `value`.
async fn nodes_at(client: &Client, key: &str, value: &str) -> usize {
    Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&format!("{key}={value}")))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

async fn upgrade(bench: &Bench, _all: usize) {
    let nodes: Vec<String> = Api::<Node>::all(bench.client.clone())
        .list_metadata(&ListParams::default().labels("type=kwok"))
        .await
        .expect("nodes")
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let total = nodes.len();
    println!();
    println!(
        "upgrade: an AgentUpgradeJob over {total} nodes at maxConcurrency 10% ({}), beside a DaemonSet on the same nodes rolled by Kubernetes' own controller at maxUnavailable 10%; a fresh namespace and operator each run",
        total.div_ceil(10)
    );
    let mut runs = Vec::new();
    for run in 1..=bench.runs {
        runs.push(upgrade_once(bench, &nodes, run).await);
    }
    let each = |f: &dyn Fn(&UpgradeRun) -> Option<f64>| runs.iter().map(f).collect::<Vec<_>>();
    table(
        &format!("upgrade of {total} agents, 10% at a time"),
        bench.runs,
    );
    row(
        "Kubernetes' DaemonSet controller: image change -> every pod updated and available, s",
        &each(&|r| r.daemonset.map(|d| d.as_secs_f64())),
        0,
    );
    row(
        "nodeops AgentUpgradeJob: apply -> every agent upgraded, s",
        &each(&|r| r.nodeops.map(|d| d.as_secs_f64())),
        0,
    );
    row(
        "ratio nodeops/DaemonSet time (per run)",
        &each(&|r| Some(r.nodeops?.as_secs_f64() / r.daemonset?.as_secs_f64())),
        2,
    );
    row(
        &format!("peak upgrades in flight (limit {})", total.div_ceil(10)),
        &each(&|r| Some(r.peak_in_flight as f64)),
        0,
    );
    let kinds: Vec<String> = runs
        .first()
        .map(|r| r.largest.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    for (i, kind) in kinds.iter().enumerate() {
        row(
            &format!("largest {kind}, KiB"),
            &each(&|r| r.largest.get(i).map(|(_, b)| *b as f64 / 1024.0)),
            1,
        );
    }
    let resources: Vec<Resources> = runs.into_iter().map(|r| r.resources).collect();
    table(
        &format!("operator footprint, upgrade of {total} agents"),
        bench.runs,
    );
    resource_rows(&resources, total, bench);
}
