//! Invoker end to end: a Once invoker fires exactly once; an every-minute invoker fires on
//! consecutive minutes across an operator restart with no duplicate, even with its
//! children pruned; Forbid skips and Replace replaces a run still active; a suspended
//! invoker does not fire.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use nodeops::api::{AsyncCommand, Command, Invoker};
use serde_json::json;
use support::{
    Operator, TestNamespace, apply, finished, install_crds, manifest, node_ready, wait_for,
};

/// Two minute boundaries and some slack.
const TWO_SLOTS: Duration = Duration::from_secs(150);

/// Every child AsyncCommand ever created in the namespace, from a watch (so children
/// pruned by history limits still count).
fn record_children(
    ns: &TestNamespace,
) -> (Arc<Mutex<BTreeSet<String>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let out = seen.clone();
    let api: Api<AsyncCommand> = ns.api();
    let handle = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(obj)) = stream.next().await {
            out.lock().expect("lock").insert(obj.name_any());
        }
    });
    (seen, handle)
}

async fn command(ns: &TestNamespace) {
    let commands: Api<Command> = ns.api();
    apply(
        &commands,
        manifest::<Command>(
            "disk-usage",
            json!({"content": "df -h {{path}}", "enableParameters": true, "defaultParameters": {"path": "/"}}),
        ),
    )
    .await;
}

fn every_minute(name: &str, nodes: &[&str], extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "commandRef": "disk-usage", "nodeNames": nodes,
        "scheduleSettings": {"policy": "Recurrence", "recurrence": "* * * * *"}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    manifest::<Invoker>(name, spec)
}

fn last_invoke(i: &Invoker) -> Option<String> {
    i.status
        .as_ref()
        .and_then(|s| s.last_invoke_time.as_ref())
        .map(|t| t.0.to_string())
}

/// A Ready simulated node where commands hang (kwok keeps pods on `*-hang` nodes Running):
/// runs on it stay active until stopped.
async fn hanging_node(ns: &TestNamespace) -> String {
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let name = format!("{}-hang", ns.name);
    let node = json!({"metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"}}});
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).expect("node"),
        )
        .await
        .expect("create node");
    wait_for(
        &nodes,
        &name,
        Duration::from_secs(60),
        "node Ready",
        node_ready,
    )
    .await;
    name
}

#[tokio::test]
async fn once_invoker_fires_exactly_once() {
    let ns = TestNamespace::new("ivk-once").await;
    install_crds(&ns.client).await;
    command(&ns).await;
    let (children, watch) = record_children(&ns);
    let _op = Operator::start(&ns.name, &[]);
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
    let at = at.round(jiff::Unit::Second).expect("round");
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        manifest::<Invoker>(
            "once",
            json!({"commandRef": "disk-usage", "nodeNames": ["node-0001"], "parameters": {"path": "/var"},
                   "scheduleSettings": {"policy": "Once", "invokeTime": at.to_string()}}),
        ),
    )
    .await;
    let fired = wait_for(
        &invokers,
        "once",
        Duration::from_secs(60),
        "the Once run",
        |i: &Invoker| last_invoke(i).is_some(),
    )
    .await;
    assert_eq!(last_invoke(&fired), Some(at.to_string()));
    let status = fired.status.clone().expect("status");
    assert_eq!(status.next_invoke_time, None);
    assert!(
        status
            .invoker_id
            .as_deref()
            .is_some_and(|id| id.starts_with("ivk-"))
    );
    let child_name = status.recent_runs[0].async_command.clone();
    let acmds: Api<AsyncCommand> = ns.api();
    let child = wait_for(
        &acmds,
        &child_name,
        Duration::from_secs(60),
        "the child to finish",
        finished,
    )
    .await;
    assert_eq!(child.spec.command_ref.as_deref(), Some("disk-usage"));
    assert_eq!(
        child
            .spec
            .parameters
            .as_ref()
            .and_then(|p| p.get("path"))
            .map(String::as_str),
        Some("/var")
    );
    assert_eq!(child.status.expect("status").succeeded, 1);
    // The child finishing wakes the Invoker; still exactly one run.
    wait_for(
        &invokers,
        "once",
        Duration::from_secs(30),
        "Done",
        |i: &Invoker| {
            i.status.as_ref().is_some_and(|s| {
                s.active.is_empty() && s.conditions.iter().any(|c| c.reason == "Done")
            })
        },
    )
    .await;
    watch.abort();
    assert_eq!(children.lock().expect("lock").len(), 1, "exactly one child");
}

#[tokio::test]
async fn every_minute_across_a_restart_with_pruned_children_never_fires_twice() {
    let ns = TestNamespace::new("ivk-cron").await;
    install_crds(&ns.client).await;
    command(&ns).await;
    let (children, watch) = record_children(&ns);
    let mut op = Operator::start(&ns.name, &[]);
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        every_minute(
            "cron",
            &["node-0001", "node-0002"],
            json!({"successfulHistoryLimit": 0}),
        ),
    )
    .await;
    let first = wait_for(&invokers, "cron", TWO_SLOTS, "first run", |i: &Invoker| {
        last_invoke(i).is_some()
    })
    .await;
    let first_slot = last_invoke(&first).expect("slot");
    op.restart();
    let second = wait_for(&invokers, "cron", TWO_SLOTS, "second run", |i: &Invoker| {
        last_invoke(i).is_some_and(|s| s != first_slot)
    })
    .await;
    let second_slot = last_invoke(&second).expect("slot");
    let a: jiff::Timestamp = first_slot.parse().expect("ts");
    let b: jiff::Timestamp = second_slot.parse().expect("ts");
    assert_eq!(
        b.duration_since(a).as_secs(),
        60,
        "consecutive minutes: {first_slot} then {second_slot}"
    );
    // Let the second run finish and be pruned, then check nothing fired again.
    wait_for(
        &invokers,
        "cron",
        Duration::from_secs(60),
        "second run pruned",
        |i: &Invoker| {
            i.status
                .as_ref()
                .is_some_and(|s| s.active.is_empty() && s.recent_runs.len() == 2)
        },
    )
    .await;
    let acmds: Api<AsyncCommand> = ns.api();
    let now_children = acmds
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .len();
    watch.abort();
    let seen = children.lock().expect("lock").clone();
    assert_eq!(
        seen.len(),
        2,
        "one child per slot, none repeated after pruning: {seen:?}"
    );
    assert_eq!(now_children, 0, "successfulHistoryLimit 0 pruned both");
    drop(op);
}

#[tokio::test]
async fn forbid_skips_and_suspend_holds() {
    let ns = TestNamespace::new("ivk-forbid").await;
    install_crds(&ns.client).await;
    command(&ns).await;
    let stuck = hanging_node(&ns).await;
    let (children, watch) = record_children(&ns);
    let _op = Operator::start(&ns.name, &[]);
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        every_minute(
            "forbid",
            &[stuck.as_str()],
            json!({"concurrencyPolicy": "Forbid"}),
        ),
    )
    .await;
    apply(
        &invokers,
        every_minute("held", &["node-0001"], json!({"suspend": true})),
    )
    .await;
    let first = wait_for(
        &invokers,
        "forbid",
        TWO_SLOTS,
        "first run",
        |i: &Invoker| last_invoke(i).is_some(),
    )
    .await;
    let first_slot = last_invoke(&first).expect("slot");
    let second = wait_for(
        &invokers,
        "forbid",
        TWO_SLOTS,
        "the next slot",
        |i: &Invoker| last_invoke(i).is_some_and(|s| s != first_slot),
    )
    .await;
    let status = second.status.expect("status");
    assert_eq!(
        status.active.len(),
        1,
        "the first run is still active: {:?}",
        status.active
    );
    let held = invokers.get("held").await.expect("held");
    assert_eq!(
        last_invoke(&held),
        None,
        "a suspended invoker does not fire"
    );
    watch.abort();
    let seen = children.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "Forbid skipped the second slot: {seen:?}");
    let _ = Api::<Node>::all(ns.client.clone())
        .delete(&stuck, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn replace_stops_the_active_run_for_the_new_one() {
    let ns = TestNamespace::new("ivk-replace").await;
    install_crds(&ns.client).await;
    command(&ns).await;
    let stuck = hanging_node(&ns).await;
    let _op = Operator::start(&ns.name, &[]);
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        every_minute(
            "replace",
            &[stuck.as_str()],
            json!({"concurrencyPolicy": "Replace"}),
        ),
    )
    .await;
    let first = wait_for(
        &invokers,
        "replace",
        TWO_SLOTS,
        "first run",
        |i: &Invoker| last_invoke(i).is_some(),
    )
    .await;
    let first_slot = last_invoke(&first).expect("slot");
    let first_child = first.status.as_ref().expect("status").active[0].clone();
    let second = wait_for(
        &invokers,
        "replace",
        TWO_SLOTS,
        "the next slot",
        |i: &Invoker| last_invoke(i).is_some_and(|s| s != first_slot),
    )
    .await;
    let active = second.status.expect("status").active;
    assert_eq!(active.len(), 1);
    assert_ne!(active[0], first_child, "the new run replaced the old");
    let acmds: Api<AsyncCommand> = ns.api();
    // The replaced run is deleted.
    support::wait_until_gone(&acmds, &first_child, Duration::from_secs(30)).await;
    let _ = Api::<Node>::all(ns.client.clone())
        .delete(&stuck, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn an_invokers_run_starts_nodes_only_inside_its_window() {
    let (ns, _op) = TestNamespace::with_operator("ivk-window").await;
    command(&ns).await;
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let at = at.round(jiff::Unit::Second).expect("round");
    let nodes = ["node-0041", "node-0042", "node-0043", "node-0044"];
    // Open for the first 20 s of every minute; one node at a time with an 8 s soak: at
    // most three nodes fit in a window, so four need two.
    let rollout = json!({"soakSeconds": 8,
        "maintenanceWindows": [{"schedule": "* * * * *", "duration": "20s"}]});
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        manifest::<Invoker>(
            "win",
            json!({"commandRef": "disk-usage", "nodeNames": nodes, "maxConcurrency": 1,
                   "rollout": rollout,
                   "scheduleSettings": {"policy": "Once", "invokeTime": at.to_string()}}),
        ),
    )
    .await;
    let fired = wait_for(
        &invokers,
        "win",
        Duration::from_secs(60),
        "the run",
        |i: &Invoker| last_invoke(i).is_some(),
    )
    .await;
    let child_name = fired.status.expect("status").recent_runs[0]
        .async_command
        .clone();
    let acmds: Api<AsyncCommand> = ns.api();
    let child = wait_for(
        &acmds,
        &child_name,
        Duration::from_secs(240),
        "the run finished",
        finished,
    )
    .await;
    assert_eq!(
        serde_json::to_value(&child.spec.rollout).expect("json"),
        rollout,
        "the run carries the Invoker's rollout policy"
    );
    assert_eq!(
        child.spec.max_concurrency,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let status = child.status.expect("status");
    assert_eq!(status.succeeded, 4, "{status:#?}");
    let second = |t: &jiff::Timestamp| t.as_second().rem_euclid(60);
    let mut minutes = BTreeSet::new();
    for e in &status.cmd_jobs {
        let start = e.start_time.as_ref().expect("started").0;
        assert!(
            second(&start) < 20,
            "{} started outside the window at {start}",
            e.node_name
        );
        minutes.insert(start.as_second().div_euclid(60));
    }
    assert!(
        minutes.len() >= 2,
        "the run went on in the next window: {:?}",
        status.cmd_jobs
    );
    // The Jobs by the API server's clock.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = ns.api();
    let jobs = jobs.list(&Default::default()).await.expect("jobs").items;
    assert_eq!(jobs.len(), 4);
    for job in jobs {
        let created = job.metadata.creation_timestamp.clone().expect("created").0;
        assert!(
            second(&created) <= 20,
            "{} created outside the window at {created}",
            job.name_any()
        );
    }
}
