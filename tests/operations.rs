//! Running nodeops as an operator is run: two replicas with leader election (one
//! reconciles; when it dies the other finishes the work, with no duplicate and never above
//! maxConcurrency), and the metrics endpoint serving every series docs/observability.md
//! documents, with /healthz and /readyz; Events on transitions only, none from reconciles
//! that change nothing or from a restart.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;
use nodeops::api::AsyncCommand;
use nodeops::api::async_command::NodePhase;
use nodeops::keys::{NODE_ANNOTATION, sim};
use serde_json::json;
use support::{
    Operator, TestNamespace, apply, finished, install_crds, manifest, repo_root,
    track_jobs_in_flight, wait_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over plain HTTP/1.0: (status code, body).
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn wait_in_log(op: &Operator, text: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while !op.log().contains(text) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text:?} not in the log within {within:?}:\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_standby_replica_finishes_the_work_when_the_leader_dies() {
    let ns = TestNamespace::new("failover").await;
    install_crds(&ns.client).await;
    let args = [
        "--leader-election",
        "--leader-election-namespace",
        ns.name.as_str(),
    ];
    let mut a = Operator::start_replica(&ns.name, "a", &args);
    wait_in_log(&a, "acquired the leader Lease", Duration::from_secs(60)).await;
    let b = Operator::start_replica(&ns.name, "b", &args);
    wait_in_log(
        &b,
        "another replica leads; standing by",
        Duration::from_secs(60),
    )
    .await;

    let in_flight = track_jobs_in_flight(&ns);
    let nodes: Vec<String> = (1..=60).map(|i| format!("node-{i:04}")).collect();
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "fleet",
            json!({"command": "uptime", "nodeNames": nodes, "maxConcurrency": 5,
                   "podAnnotations": {sim::DELAY: "1s"}}),
        ),
    )
    .await;
    wait_for(
        &api,
        "fleet",
        Duration::from_secs(120),
        "ten nodes done",
        |c| {
            c.status.as_ref().is_some_and(|s| {
                s.cmd_jobs
                    .iter()
                    .filter(|e| e.phase == NodePhase::Succeeded)
                    .count()
                    >= 10
            })
        },
    )
    .await;
    assert!(
        !b.log().contains("starting controllers"),
        "the standby does not reconcile while the leader lives"
    );
    let killed_at = jiff::Timestamp::now();
    let clock = std::time::Instant::now();
    a.kill();
    wait_in_log(&b, "acquired the leader Lease", Duration::from_secs(60)).await;
    // A figure, not an assertion: the Lease expires 15 s after the leader's last renewal.
    eprintln!(
        "the standby took over {:.1}s after the leader was killed",
        clock.elapsed().as_secs_f64()
    );
    let done = wait_for(
        &api,
        "fleet",
        Duration::from_secs(180),
        "every node final",
        finished,
    )
    .await;
    assert!(b.log().contains("starting controllers"), "{}", b.log());
    let s = done.status.expect("status");
    assert_eq!(s.cmd_jobs.len(), 60);
    assert!(
        s.cmd_jobs.iter().all(|e| e.phase == NodePhase::Succeeded),
        "{:?}",
        s.cmd_jobs
    );
    // No duplicate: one Job per node, and one job id each.
    let jobs: Api<Job> = ns.api();
    let list = jobs.list(&ListParams::default()).await.expect("jobs").items;
    assert_eq!(list.len(), 60);
    let per_node: BTreeSet<String> = list
        .iter()
        .filter_map(|j| {
            j.metadata
                .annotations
                .as_ref()?
                .get(NODE_ANNOTATION)
                .cloned()
        })
        .collect();
    assert_eq!(per_node.len(), 60);
    // The standby did the rest: most Jobs were created after the leader died (creation
    // times have whole seconds, hence the second's slack).
    let after_kill = list
        .iter()
        .filter(|j| {
            j.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0.as_second() >= killed_at.as_second())
        })
        .count();
    assert!(
        after_kill >= 30,
        "only {after_kill} of 60 Jobs were created after the leader died"
    );
    // The watch saw all 60 Jobs finish without breaking: the bound covers the failover.
    let max = in_flight.finish(60, Duration::from_secs(60)).await;
    assert!(
        max <= 5,
        "maxConcurrency exceeded across the failover: {max}"
    );
    assert!(max >= 2, "the fleet ran in parallel: {max}");

    // The Lease names the survivor.
    let leases: Api<Lease> = ns.api();
    let lease = leases.get("nodeops").await.expect("lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(!holder.is_empty());
    let addr = b.metrics_addr().await;
    let (_, metrics) = http_get(&addr, "/metrics").await;
    assert!(metrics.contains("nodeops_leader 1"), "{metrics}");
}

#[tokio::test]
async fn metrics_endpoint_serves_the_documented_series() {
    let (ns, op) = TestNamespace::with_operator("metrics").await;
    let addr = op.metrics_addr().await;
    assert_eq!(http_get(&addr, "/healthz").await.0, 200);
    // Ready once the caches are filled.
    let mut ready = 0;
    for _ in 0..100 {
        ready = http_get(&addr, "/readyz").await.0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready, 200);
    assert_eq!(http_get(&addr, "/nothing").await.0, 404);

    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "mixed",
            json!({"command": "uptime", "nodeNames": ["node-0001", "node-0002", "node-0003"],
                   "podAnnotations": {format!("{}node-0002", sim::EXIT_CODE_NODE_PREFIX): "3"}}),
        ),
    )
    .await;
    wait_for(&api, "mixed", Duration::from_secs(120), "final", finished).await;
    // The outcomes are counted right after the status write the watch above saw.
    let expected =
        "nodeops_node_outcomes_total{kind=\"AsyncCommand\",phase=\"Failed\",reason=\"ExitCode\"} 1";
    let mut text = String::new();
    for _ in 0..50 {
        let (status, body) = http_get(&addr, "/metrics").await;
        assert_eq!(status, 200);
        text = body;
        if text.contains(expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in [
        "nodeops_reconciles_total{kind=\"AsyncCommand\",result=\"ok\"}",
        "nodeops_reconcile_duration_seconds_count{kind=\"AsyncCommand\"}",
        "nodeops_node_outcomes_total{kind=\"AsyncCommand\",phase=\"Succeeded\",reason=\"Completed\"} 2",
        "nodeops_node_outcomes_total{kind=\"AsyncCommand\",phase=\"Failed\",reason=\"ExitCode\"} 1",
        "nodeops_leader 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // The documentation's table and what is served agree both ways, name and type.
    let doc = std::fs::read_to_string(repo_root().join("docs/observability.md"))
        .expect("docs/observability.md");
    let documented: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix("`nodeops_")?.strip_suffix('`')?;
            let family = format!("nodeops_{name}")
                .trim_end_matches("_total")
                .to_string();
            Some((family, cells.get(2)?.to_string()))
        })
        .collect();
    let served: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("# TYPE ")?.split_whitespace();
            let family = words.next()?.to_string();
            family
                .starts_with("nodeops_")
                .then(|| (family, words.next().unwrap_or("").to_string()))
        })
        .collect();
    assert!(documented.len() >= 7, "{documented:?}");
    assert_eq!(
        served, documented,
        "served series (left) and docs/observability.md's table (right) differ:\n{text}"
    );
}

/// How often each Event reason was recorded for one object (a repeated Event counts its
/// series).
async fn occurrences(ns: &TestNamespace, kind: &str, name: &str) -> BTreeMap<String, i32> {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut out = BTreeMap::new();
    for e in events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
    {
        let regarding = e.regarding.as_ref();
        if regarding.and_then(|r| r.kind.as_deref()) != Some(kind)
            || regarding.and_then(|r| r.name.as_deref()) != Some(name)
        {
            continue;
        }
        let count = e.series.as_ref().map(|s| s.count).unwrap_or(1);
        *out.entry(e.reason.unwrap_or_default()).or_insert(0) += count;
    }
    out
}

#[tokio::test]
async fn events_mark_transitions_and_never_repeat() {
    let (ns, mut op) = TestNamespace::with_operator("events").await;
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "mixed",
            json!({"command": "uptime", "nodeNames": ["node-0001", "node-0002", "node-0003"],
                   "maxConcurrency": 1,
                   "podAnnotations": {format!("{}node-0002", sim::EXIT_CODE_NODE_PREFIX): "3",
                                      sim::DELAY: "1s"}}),
        ),
    )
    .await;
    // Changes that wake the controller but change nothing it decides, all through the run.
    let touch = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let patch = json!({"metadata": {"labels": {"touched": i.to_string()}}});
                let _ = api
                    .patch(
                        "mixed",
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    wait_for(&api, "mixed", Duration::from_secs(120), "final", finished).await;
    // The final Event follows the status write the wait saw.
    support::wait_for_event(
        &ns,
        "AsyncCommand",
        "mixed",
        "Warning",
        "Failed",
        Duration::from_secs(30),
    )
    .await;
    let first = occurrences(&ns, "AsyncCommand", "mixed").await;
    // A restarted operator reconciles everything again: still no new Event. Positive
    // evidence that it did, twice (a reconcile posts its Events before the next of the
    // same object starts): a generation bumped by a change it reads the same way
    // (maxConcurrency of a finished command), and observedGeneration catching up.
    touch.abort();
    op.kill();
    op.restart();
    for concurrency in [2, 3] {
        let patch = json!({"spec": {"maxConcurrency": concurrency}});
        let bumped = api
            .patch(
                "mixed",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("bump the generation");
        let generation = bumped.metadata.generation;
        wait_for(
            &api,
            "mixed",
            Duration::from_secs(60),
            "the restarted operator reconciled it",
            |c: &AsyncCommand| c.status.as_ref().and_then(|s| s.observed_generation) == generation,
        )
        .await;
    }
    let after = occurrences(&ns, "AsyncCommand", "mixed").await;
    let want: BTreeMap<String, i32> = [("Started", 1), ("NodeFailed", 1), ("Failed", 1)]
        .into_iter()
        .map(|(r, n)| (r.to_string(), n))
        .collect();
    assert_eq!(first, want, "one Event per transition");
    assert_eq!(after, want, "reconciles and a restart add no Event");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_reconcile_span() {
    let ns = TestNamespace::new("jsonlog").await;
    install_crds(&ns.client).await;
    let mut op = Operator::start(
        &ns.name,
        &["--log-format", "json", "--log-filter", "info,nodeops=debug"],
    );
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "logged",
            json!({"command": "uptime", "nodeNames": ["node-0001"]}),
        ),
    )
    .await;
    wait_for(&api, "logged", Duration::from_secs(60), "final", finished).await;
    op.terminate(Duration::from_secs(25)).expect("clean exit");
    let log = op.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for l in &lines {
        assert!(
            l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string(),
            "a line without timestamp, level or message: {l}"
        );
    }
    let in_span = lines.iter().any(|l| {
        l["span"]["kind"] == "AsyncCommand"
            && l["span"]["namespace"] == ns.name.as_str()
            && l["span"]["object"] == "logged"
    });
    assert!(in_span, "no line carries the reconcile's span:\n{log}");
    assert!(log.contains("nodeops stopped"), "{log}");
}
