//! AgentUpgradeJob end to end on the local control plane: DaemonSet-mode agents on
//! simulated nodes upgraded through child AgentInvocations; a dry run that changes
//! nothing, maxConcurrency asserted from a watch of every child's transitions, maxFailures
//! stopping the rollout, pause and resume, and an operator killed mid-rollout.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use nodeops::api::agent_invocation::AgentInvocation;
use nodeops::api::agent_upgrade_job::{
    AgentUpgradeJob, AgentUpgradeState, Direction, UpgradeJobState,
};
use nodeops::keys::{UPGRADE_JOB_UID_LABEL, sim};
use serde_json::json;
use support::agents::{Agent, ok, results};
use support::{TestNamespace, apply, manifest, node_names, wait_for};

const FINISH: Duration = Duration::from_secs(240);

/// A DaemonSet-mode agent at 1.0.0 on `nodes`.
async fn installed(ns: &TestNamespace, nodes: &[String], extra: serde_json::Value) -> Agent {
    let mut spec = json!({
        "mode": "DaemonSet",
        "image": "registry.example.com/telescope",
        "basicVersion": "1.0.0",
        // Generous: under a loaded test run, 50 DaemonSet pods can take a while.
        "readyTimeoutSeconds": 60,
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Agent::installed(ns, spec, nodes).await
}

fn selector(agent: &Agent) -> serde_json::Value {
    json!({"matchExpressions": [{"key": agent.label(), "operator": "Exists"}]})
}

async fn start_job(ns: &TestNamespace, spec: serde_json::Value) -> Api<AgentUpgradeJob> {
    let api: Api<AgentUpgradeJob> = ns.api();
    apply(&api, manifest::<AgentUpgradeJob>("upgrade", spec)).await;
    api
}

fn done(j: &AgentUpgradeJob) -> bool {
    j.status.as_ref().is_some_and(|s| s.completed_at.is_some())
}

/// Counts child invocations in flight (created, not final) from a watch of every change,
/// and records the highest count seen. The task ends with an error when the watch breaks:
/// a count that missed transitions proves nothing.
fn track_in_flight(
    ns: &TestNamespace,
) -> (
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let max = Arc::new(AtomicUsize::new(0));
    let seen = max.clone();
    let api: Api<AgentInvocation> = ns.api();
    let handle = tokio::spawn(async move {
        let mut in_flight = BTreeSet::new();
        let mut done = BTreeSet::new();
        let stream = watcher(
            api,
            watcher::Config::default().labels(UPGRADE_JOB_UID_LABEL),
        )
        .applied_objects();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let inv = event.map_err(|e| format!("the watch of the children broke: {e}"))?;
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
            seen.fetch_max(in_flight.len(), Ordering::SeqCst);
        }
        Err("the watch of the children ended".to_string())
    });
    (max, handle)
}

async fn children(ns: &TestNamespace) -> Vec<AgentInvocation> {
    let api: Api<AgentInvocation> = ns.api();
    api.list(&ListParams::default().labels(UPGRADE_JOB_UID_LABEL))
        .await
        .expect("children")
        .items
}

#[tokio::test]
async fn a_simulated_upgrade_reports_the_plan_and_changes_nothing() {
    let (ns, _op) = TestNamespace::with_operator("aup-sim").await;
    let nodes = node_names(51..=60);
    let agent = installed(&ns, &nodes[..9], json!({})).await;
    let dss: Api<DaemonSet> = ns.api();
    let before_labels = agent.versions().await;
    let before_ds: Vec<String> = dss
        .list(&ListParams::default())
        .await
        .expect("ds")
        .items
        .iter()
        .map(|d| d.name_any())
        .collect();

    // node-0060 has no agent: the selector (the agent label) leaves it out.
    let api = start_job(
        &ns,
        json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0",
               "simulated": true, "canaryNodes": ["node-0055"]}),
    )
    .await;
    let job = wait_for(&api, "upgrade", FINISH, "the simulation", done).await;
    let s = job.status.expect("status");
    assert!(s.simulated);
    assert_eq!(s.status, UpgradeJobState::Planned, "a plan, not a success");
    assert_eq!(s.agents.len(), 9);
    assert_eq!(
        s.agents[0].node_name.as_deref(),
        Some("node-0055"),
        "canary first"
    );
    for a in &s.agents {
        assert_eq!(
            (a.status, a.old_version.as_deref(), a.new_version.as_deref()),
            (AgentUpgradeState::Pending, Some("1.0.0"), Some("2.0.0")),
            "{a:?}"
        );
        assert_eq!(a.agent_uuid.len(), 36);
        assert_eq!(a.direction, Some(Direction::Upgrade), "{a:?}");
    }
    // A target below the running version is a downgrade: refused per agent unless the job
    // allows it, and the plan says which way each agent would go.
    for (name, allow) in [("down", false), ("down-allowed", true)] {
        apply(
            &api,
            manifest::<AgentUpgradeJob>(
                name,
                json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "0.9.0",
                       "simulated": true, "allowDowngrade": allow}),
            ),
        )
        .await;
        let s = wait_for(&api, name, FINISH, "the simulation", done)
            .await
            .status
            .expect("status");
        assert_eq!(s.status, UpgradeJobState::Planned);
        for a in &s.agents {
            if allow {
                assert_eq!(
                    (a.status, a.direction, a.new_version.as_deref()),
                    (
                        AgentUpgradeState::Pending,
                        Some(Direction::Downgrade),
                        Some("0.9.0")
                    ),
                    "{a:?}"
                );
            } else {
                assert_eq!(
                    (a.status, a.direction),
                    (AgentUpgradeState::Skipped, None),
                    "{a:?}"
                );
                assert!(
                    a.error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("DowngradeNotAllowed")),
                    "{a:?}"
                );
            }
        }
    }
    // No wait for "nothing happened": a reconcile creates children before it writes the
    // status that records them, and a planned job is idle from then on (no request at
    // all), so what exists once the plan is written is all that will ever exist.
    assert_eq!(agent.versions().await, before_labels, "no label changed");
    let after_ds: Vec<String> = dss
        .list(&ListParams::default())
        .await
        .expect("ds")
        .items
        .iter()
        .map(|d| d.name_any())
        .collect();
    assert_eq!(after_ds, before_ds, "no workload changed");
    assert!(children(&ns).await.is_empty(), "no invocation was created");
}

#[tokio::test]
async fn fifty_nodes_at_max_concurrency_five_across_an_operator_restart() {
    let (ns, mut op) = TestNamespace::with_operator("aup-run").await;
    let nodes = node_names(51..=100);
    let agent = installed(&ns, &nodes, json!({})).await;

    // First the plan of the same rollout: all 50 would go 1.0.0 -> 2.0.0, nothing changes.
    let dss: Api<DaemonSet> = ns.api();
    let ds_names = || async {
        dss.list(&ListParams::default())
            .await
            .expect("ds")
            .items
            .iter()
            .map(|d| (d.name_any(), d.metadata.generation))
            .collect::<Vec<_>>()
    };
    let (labels_before, ds_before) = (agent.versions().await, ds_names().await);
    let jobs: Api<AgentUpgradeJob> = ns.api();
    apply(
        &jobs,
        manifest::<AgentUpgradeJob>(
            "plan",
            json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0",
                   "maxConcurrency": 5, "simulated": true}),
        ),
    )
    .await;
    let plan = wait_for(&jobs, "plan", FINISH, "the simulation", done).await;
    let s = plan.status.expect("status");
    assert_eq!(s.agents.len(), 50);
    assert!(
        s.agents
            .iter()
            .all(|a| a.status == AgentUpgradeState::Pending
                && a.old_version.as_deref() == Some("1.0.0")
                && a.new_version.as_deref() == Some("2.0.0"))
    );
    // Planned is final and idle: what exists now is all the plan will ever have done.
    assert_eq!(
        agent.versions().await,
        labels_before,
        "the plan changed a label"
    );
    assert_eq!(ds_names().await, ds_before, "the plan changed a workload");
    assert!(
        children(&ns).await.is_empty(),
        "the plan created an invocation"
    );

    let (max_in_flight, watch) = track_in_flight(&ns);
    let api = start_job(
        &ns,
        json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0", "maxConcurrency": 5}),
    )
    .await;

    // Kill the operator mid-rollout, then let a new one finish it.
    wait_for(&api, "upgrade", FINISH, "ten agents upgraded", |j| {
        j.status.as_ref().is_some_and(|s| {
            s.agents
                .iter()
                .filter(|a| a.status == AgentUpgradeState::Success)
                .count()
                >= 10
        })
    })
    .await;
    op.kill();
    op.restart();
    let job = wait_for(&api, "upgrade", FINISH, "the rollout finished", done).await;
    let s = job.status.expect("status");
    assert_eq!(s.status, UpgradeJobState::Success, "{s:#?}");
    assert_eq!(s.progress.as_deref(), Some("50/50"));
    assert!(
        s.agents
            .iter()
            .all(|a| a.status == AgentUpgradeState::Success
                && a.old_version.as_deref() == Some("1.0.0")
                && a.new_version.as_deref() == Some("2.0.0"))
    );
    let expected: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.clone(), "2.0.0".to_string()))
        .collect();
    assert_eq!(agent.versions().await, expected);

    // Exactly one Update per node, each with one successful instance: nothing twice.
    let kids = children(&ns).await;
    assert_eq!(kids.len(), 50);
    let per_node: BTreeSet<String> = kids
        .iter()
        .map(|c| c.spec.node_names.clone().expect("nodes")[0].clone())
        .collect();
    assert_eq!(per_node.len(), 50);
    assert!(kids.iter().all(|c| results(c).values().all(ok)));
    assert!(
        !watch.is_finished(),
        "the in-flight count is incomplete: {:?}",
        watch.await
    );
    watch.abort();
    let max = max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 5, "{max} upgrades in flight at once");
    assert!(max >= 2, "the rollout ran in parallel ({max})");
    // The old version's DaemonSet goes with its last node.
    let dss: Api<DaemonSet> = ns.api();
    let old_ds = format!("{}-1.0.0", agent.name);
    let gone =
        kube::runtime::wait::await_condition(dss.clone(), &old_ds, |d: Option<&DaemonSet>| {
            d.is_none()
        });
    tokio::time::timeout(FINISH, gone)
        .await
        .unwrap_or_else(|_| panic!("{old_ds} still there: a node still runs 1.0.0"))
        .expect("the watch of the DaemonSet");
}

#[tokio::test]
async fn failures_past_max_failures_stop_the_rollout() {
    let (ns, _op) = TestNamespace::with_operator("aup-fail").await;
    let nodes = node_names(61..=70);
    // The new version's pod never becomes Ready on the two canary nodes. One at a time, so
    // the outcome is exact: the first failure is tolerated (maxFailures 1) and the second
    // node starts; its failure stops the rollout before a third starts.
    let agent = installed(
        &ns,
        &nodes,
        json!({"readyTimeoutSeconds": 20,
               "podAnnotations": {format!("{}node-0061-2.0.0", sim::UNREADY_PREFIX): "true",
                                  format!("{}node-0062-2.0.0", sim::UNREADY_PREFIX): "true"}}),
    )
    .await;
    let api = start_job(
        &ns,
        json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0",
               "maxConcurrency": 1, "maxFailures": 1, "canaryNodes": ["node-0061", "node-0062"]}),
    )
    .await;
    let job = wait_for(&api, "upgrade", FINISH, "the rollout stopped", done).await;
    let s = job.status.expect("status");
    assert_eq!(s.status, UpgradeJobState::Failed);
    assert_eq!(s.failures, 2);
    let by_node: BTreeMap<String, _> = s
        .agents
        .iter()
        .map(|a| (a.node_name.clone().expect("node"), a.clone()))
        .collect();
    for n in ["node-0061", "node-0062"] {
        let a = &by_node[n];
        assert_eq!(a.status, AgentUpgradeState::Failed, "{a:?}");
        assert!(
            a.error
                .as_deref()
                .is_some_and(|e| e.contains("AgentNotReady")),
            "{a:?}"
        );
    }
    for n in node_names(63..=70) {
        let a = &by_node[&n];
        assert_eq!(a.status, AgentUpgradeState::Skipped, "{a:?}");
        assert!(
            a.error
                .as_deref()
                .is_some_and(|e| e.contains("maxFailures 1"))
        );
    }
    let labels = agent.versions().await;
    assert!(
        labels.values().all(|v| v == "1.0.0"),
        "the failed nodes were put back and the rest left untouched: {labels:?}"
    );
    assert_eq!(
        children(&ns).await.len(),
        2,
        "nothing started after the stop"
    );
    let failed = job_condition(&api, "Failed").await;
    assert_eq!(
        failed,
        ("True".to_string(), "MaxFailuresExceeded".to_string())
    );
}

/// Positive evidence that the operator has reconciled the job once more, at a spec it
/// reads the same way: the generation is bumped (maxFailures up by one, with no failure
/// in sight) and the status' observedGeneration catches up. A reconcile creates its
/// children before it writes that status, so what exists afterwards is what it decided.
async fn reconciled_again(api: &Api<AgentUpgradeJob>, name: &str) {
    let job = api.get(name).await.expect("job");
    let patch = json!({"spec": {"maxFailures": job.spec.max_failures + 1}});
    let bumped = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("bump the generation");
    let generation = bumped.metadata.generation;
    wait_for(
        api,
        name,
        FINISH,
        "the operator reconciled the new generation",
        |j| j.status.as_ref().and_then(|s| s.observed_generation) == generation,
    )
    .await;
}

async fn job_condition(api: &Api<AgentUpgradeJob>, type_: &str) -> (String, String) {
    let job = api.get("upgrade").await.expect("job");
    let c = job
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status, c.reason)
}

#[tokio::test]
async fn pause_holds_the_rollout_and_resume_finishes_it() {
    let (ns, _op) = TestNamespace::with_operator("aup-pause").await;
    let nodes = node_names(71..=80);
    let agent = installed(&ns, &nodes, json!({})).await;
    let api = start_job(
        &ns,
        json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0",
               "maxConcurrency": 2, "paused": true}),
    )
    .await;
    wait_for(&api, "upgrade", FINISH, "the Paused condition", |j| {
        j.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Paused" && c.status == "True")
        })
    })
    .await;
    assert!(children(&ns).await.is_empty(), "paused: nothing starts");
    reconciled_again(&api, "upgrade").await;
    assert!(
        children(&ns).await.is_empty(),
        "paused: a reconcile after the pause started nothing"
    );

    let set_paused = |paused: bool| {
        let api = api.clone();
        async move {
            api.patch(
                "upgrade",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"paused": paused}})),
            )
            .await
            .expect("patch paused");
        }
    };
    set_paused(false).await;
    wait_for(&api, "upgrade", FINISH, "four agents upgraded", |j| {
        j.status.as_ref().is_some_and(|s| {
            s.agents
                .iter()
                .filter(|a| a.status == AgentUpgradeState::Success)
                .count()
                >= 4
        })
    })
    .await;
    set_paused(true).await;
    // Nodes in flight finish; then nothing more starts while paused.
    let held = wait_for(&api, "upgrade", FINISH, "in-flight nodes finished", |j| {
        j.status.as_ref().is_some_and(|s| {
            s.in_flight == 0
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Paused" && c.status == "True")
        })
    })
    .await;
    let started = children(&ns).await.len();
    reconciled_again(&api, "upgrade").await;
    assert_eq!(
        children(&ns).await.len(),
        started,
        "paused: no new node starts"
    );
    assert!(
        held.status.expect("status").completed_at.is_none(),
        "a paused rollout is not finished"
    );
    set_paused(false).await;
    let job = wait_for(&api, "upgrade", FINISH, "the rollout finished", done).await;
    let s = job.status.expect("status");
    assert_eq!(s.status, UpgradeJobState::Success);
    assert_eq!(s.progress.as_deref(), Some("10/10"));
    assert!(agent.versions().await.values().all(|v| v == "2.0.0"));
}

#[tokio::test]
async fn agents_named_by_uuid_and_failed_nodes_rolled_back() {
    let (ns, _op) = TestNamespace::with_operator("aup-uuid").await;
    let nodes = node_names(81..=86);
    // 2.0.0 never becomes Ready on node-0082.
    let agent = installed(
        &ns,
        &nodes,
        json!({"podAnnotations": {format!("{}node-0082-2.0.0", sim::UNREADY_PREFIX): "true"},
               "readyTimeoutSeconds": 20}),
    )
    .await;
    // The agents' UUIDs as the NodeAgent reports them.
    let a = wait_for(
        &agent.api(),
        &agent.name,
        FINISH,
        "the NodeAgent lists its agents",
        |a: &nodeops::api::NodeAgent| a.status.as_ref().is_some_and(|s| s.agents.len() == 6),
    )
    .await;
    let uuid: BTreeMap<String, String> = a
        .status
        .expect("status")
        .agents
        .into_iter()
        .map(|i| (i.node_name, i.agent_uuid))
        .collect();
    let chosen = ["node-0081", "node-0082", "node-0083"];
    let api = start_job(
        &ns,
        json!({"agent": agent.name, "targetVersion": "2.0.0", "maxConcurrency": 3, "maxFailures": 3,
               "rollbackOnFailure": true,
               "agents": chosen.iter().map(|n| uuid[*n].clone()).chain(["5f0c4b7e-0000-5000-8000-000000000000".to_string()]).collect::<Vec<_>>()}),
    )
    .await;
    let job = wait_for(&api, "upgrade", FINISH, "the rollout finished", done).await;
    let s = job.status.expect("status");
    assert_eq!(s.status, UpgradeJobState::Failed, "one node failed: {s:#?}");
    let by_node: BTreeMap<String, _> = s
        .agents
        .iter()
        .filter_map(|a| Some((a.node_name.clone()?, a.clone())))
        .collect();
    for n in ["node-0081", "node-0083"] {
        let a = &by_node[n];
        assert_eq!(
            (a.status, a.agent_uuid.as_str(), a.new_version.as_deref()),
            (AgentUpgradeState::Success, uuid[n].as_str(), Some("2.0.0")),
            "{a:?}"
        );
    }
    let failed = &by_node["node-0082"];
    assert_eq!(failed.status, AgentUpgradeState::RolledBack, "{failed:?}");
    assert_eq!(failed.new_version.as_deref(), Some("1.0.0"));
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("AgentNotReady")),
        "{failed:?}"
    );
    let unknown = s
        .agents
        .iter()
        .find(|a| a.node_name.is_none())
        .expect("the unknown UUID is reported");
    assert_eq!(unknown.status, AgentUpgradeState::Skipped);
    assert!(
        unknown
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("AgentNotFound"))
    );
    let mut expected: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.clone(), "1.0.0".to_string()))
        .collect();
    expected.insert("node-0081".into(), "2.0.0".into());
    expected.insert("node-0083".into(), "2.0.0".into());
    assert_eq!(
        agent.versions().await,
        expected,
        "the failed node is back at 1.0.0; nodes not named are untouched"
    );
}

/// Seconds past the minute of an instant.
fn second_of_minute(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_second().rem_euclid(60)
}

fn paused_reason(j: &AgentUpgradeJob) -> Option<String> {
    j.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Paused" && c.status == "True")
            .map(|c| c.reason.clone())
    })
}

#[tokio::test]
async fn a_window_and_a_soak_time_hold_the_rollout_across_an_operator_restart() {
    let (ns, mut op) = TestNamespace::with_operator("aup-window").await;
    let nodes = node_names(87..=92);
    let agent = installed(&ns, &nodes, json!({})).await;
    // Open for the first 25 s of every minute; a 10 s soak after each one-node batch: at
    // most three nodes fit in a window, so six need at least two.
    let api = start_job(
        &ns,
        json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0",
               "maxConcurrency": 1, "rollout": {"soakSeconds": 10,
               "maintenanceWindows": [{"schedule": "* * * * *", "duration": "25s"}]}}),
    )
    .await;
    // Stopped by the window's end with some done: the operator is killed there, and a new
    // one resumes the rollout in the next window.
    wait_for(
        &api,
        "upgrade",
        FINISH,
        "held outside the window after an upgrade",
        |j| {
            j.status.as_ref().is_some_and(|s| {
                s.agents
                    .iter()
                    .any(|a| a.status == AgentUpgradeState::Success)
                    && s.next_start_time.is_some()
            }) && paused_reason(j).as_deref() == Some("OutsideMaintenanceWindow")
        },
    )
    .await;
    op.kill();
    op.restart();
    let job = wait_for(
        &api,
        "upgrade",
        Duration::from_secs(300),
        "the rollout finished",
        done,
    )
    .await;
    let s = job.status.expect("status");
    assert_eq!(s.status, UpgradeJobState::Success, "{s:#?}");
    assert_eq!(s.progress.as_deref(), Some("6/6"));
    // Every node started inside a window, by the operator's decision (startTime) and by
    // the API server's clock (the child's creation).
    let mut starts: Vec<_> = s
        .agents
        .iter()
        .map(|a| {
            let start = a.start_time.clone().expect("started");
            assert!(
                second_of_minute(&start) < 25,
                "{:?} started outside the window at {}",
                a.node_name,
                start.0
            );
            (start.0, a.completion_time.clone().expect("finished").0)
        })
        .collect();
    for child in children(&ns).await {
        let created = child.metadata.creation_timestamp.clone().expect("created");
        assert!(
            second_of_minute(&created) <= 25,
            "{} created outside the window at {}",
            child.name_any(),
            created.0
        );
    }
    starts.sort();
    let minutes: BTreeSet<i64> = starts
        .iter()
        .map(|(s, _)| s.as_second().div_euclid(60))
        .collect();
    assert!(
        minutes.len() >= 2,
        "the rollout went on in a later window: {starts:?}"
    );
    // Each batch started at least the soak time after the previous one finished.
    for pair in starts.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].1).as_secs();
        assert!(
            gap >= 10,
            "a batch started {gap} s after the previous finished: {starts:?}"
        );
    }
}

#[tokio::test]
async fn a_health_gate_holds_the_rollout_until_its_object_is_ready() {
    let (ns, _op) = TestNamespace::with_operator("aup-gate").await;
    let nodes = node_names(93..=96);
    let agent = installed(&ns, &nodes, json!({})).await;
    let api = start_job(
        &ns,
        json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0",
               "maxConcurrency": 2, "rollout": {"healthGates": [{"object":
               {"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand", "name": "smoke"}}]}}),
    )
    .await;
    let held = wait_for(&api, "upgrade", FINISH, "held by the gate", |j| {
        paused_reason(j).as_deref() == Some("HealthGateUnhealthy")
    })
    .await;
    let message = held
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Paused"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("AsyncCommand smoke does not exist"),
        "{message}"
    );
    support::wait_for_event(
        &ns,
        "AgentUpgradeJob",
        "upgrade",
        "Warning",
        "HealthGateUnhealthy",
        FINISH,
    )
    .await;
    assert!(children(&ns).await.is_empty(), "held: nothing started");
    let commands: Api<nodeops::api::AsyncCommand> = ns.api();
    apply(
        &commands,
        manifest::<nodeops::api::AsyncCommand>(
            "smoke",
            json!({"command": "uptime", "nodeNames": [nodes[0]]}),
        ),
    )
    .await;
    let smoke = wait_for(
        &commands,
        "smoke",
        FINISH,
        "the smoke test finished",
        support::finished,
    )
    .await;
    let ready_at = smoke
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone())
        .expect("completed");
    let job = wait_for(&api, "upgrade", FINISH, "the rollout finished", done).await;
    assert_eq!(job.status.expect("status").status, UpgradeJobState::Success);
    // Every node started after the gate's object became Ready (the API server's clock).
    let kids = children(&ns).await;
    assert_eq!(kids.len(), 4);
    for child in kids {
        let created = child
            .metadata
            .creation_timestamp
            .clone()
            .expect("created")
            .0;
        assert!(
            created >= ready_at.0,
            "{} created at {created}, before the gate was Ready at {}",
            child.name_any(),
            ready_at.0
        );
    }
    support::wait_for_event(
        &ns,
        "AgentUpgradeJob",
        "upgrade",
        "Normal",
        "Resumed",
        FINISH,
    )
    .await;
}

/// What `nodeops get agentupgradejob NAME` prints, run for real.
fn nodeops_get(ns: &TestNamespace, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeops"))
        .args(["get", "agentupgradejob", name, "-n", &ns.name])
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .expect("nodeops get");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of `nodeops get` for `nodes`: node -> status column.
fn rows(printed: &str, nodes: &[String]) -> BTreeMap<String, String> {
    printed
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 3 && nodes.iter().any(|n| n == cols[0]))
                .then(|| (cols[0].to_string(), cols[2].to_string()))
        })
        .collect()
}

/// A job with more agents than its status lists (lowered to 5 here, 100 by default)
/// keeps its plan in ConfigMaps of at most 8 agents (500 by default): the plan is written
/// once, the status stays bounded, maxConcurrency holds, an operator killed mid-rollout
/// starts no agent twice, and `nodeops get` still shows every agent.
#[tokio::test]
async fn a_large_job_keeps_its_plan_in_configmaps_across_an_operator_restart() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use nodeops::keys::{PLAN_PART_ANNOTATION, ROLE_LABEL, ROLE_PLAN};
    let ns = TestNamespace::new("aup-large").await;
    support::install_crds(&ns.client).await;
    let args = [
        "--upgrade-status-agents",
        "5",
        "--upgrade-plan-part-agents",
        "8",
    ];
    let mut op = support::Operator::start(&ns.name, &args);
    let nodes = node_names(71..=100);
    let agent = installed(&ns, &nodes, json!({})).await;
    let jobs: Api<AgentUpgradeJob> = ns.api();

    // The dry run: its whole plan in ConfigMaps, shown by nodeops get; nothing changes.
    apply(
        &jobs,
        manifest::<AgentUpgradeJob>(
            "plan",
            json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0", "simulated": true}),
        ),
    )
    .await;
    let plan = wait_for(&jobs, "plan", FINISH, "the simulation", done).await;
    let s = plan.status.expect("status");
    assert_eq!(s.status, UpgradeJobState::Planned);
    assert!(s.agents.is_empty(), "{:?}", s.agents);
    assert_eq!(
        s.plan.as_ref().map(|p| (p.config_maps, p.agents)),
        Some((4, 30))
    );
    let planned = rows(&nodeops_get(&ns, "plan"), &nodes);
    assert_eq!(planned.len(), 30, "{planned:?}");
    assert!(planned.values().all(|s| s == "Pending"), "{planned:?}");

    let (max_in_flight, watch) = track_in_flight(&ns);
    let api = start_job(
        &ns,
        json!({"agent": agent.name, "nodeSelector": selector(&agent), "targetVersion": "2.0.0", "maxConcurrency": 4}),
    )
    .await;
    let success = |j: &AgentUpgradeJob| {
        j.status
            .as_ref()
            .and_then(|s| s.counts.as_ref())
            .map_or(0, |c| c.success)
    };
    wait_for(&api, "upgrade", FINISH, "eight agents upgraded", |j| {
        success(j) >= 8
    })
    .await;
    op.kill();
    op.restart();
    let job = wait_for(&api, "upgrade", FINISH, "the rollout finished", done).await;
    let s = job.status.clone().expect("status");
    assert_eq!(s.status, UpgradeJobState::Success, "{s:#?}");
    assert_eq!(s.progress.as_deref(), Some("30/30"));
    assert_eq!(
        s.counts.as_ref().map(|c| (c.total, c.success)),
        Some((30, 30))
    );
    assert_eq!(s.started, 30);
    assert!(
        s.agents.is_empty(),
        "nothing in flight or failed: {:?}",
        s.agents
    );

    // The plan: 4 immutable ConfigMaps of at most 8 agents, owned by the job.
    let cms: Api<ConfigMap> = ns.api();
    let uid = job.metadata.uid.clone().expect("uid");
    let parts = cms
        .list(&ListParams::default().labels(&format!(
            "{UPGRADE_JOB_UID_LABEL}={uid},{ROLE_LABEL}={ROLE_PLAN}"
        )))
        .await
        .expect("plan ConfigMaps")
        .items;
    assert_eq!(parts.len(), 4);
    let mut places = BTreeSet::new();
    for p in &parts {
        assert_eq!(p.immutable, Some(true));
        assert_eq!(p.owner_references()[0].uid, uid);
        places.insert(p.annotations()[PLAN_PART_ANNOTATION].clone());
        let agents: Vec<serde_json::Value> =
            serde_json::from_str(&p.data.as_ref().expect("data")["agents.json"]).expect("json");
        assert!(agents.len() <= 8);
    }
    assert_eq!(
        places,
        ["0/4", "1/4", "2/4", "3/4"].map(String::from).into()
    );

    // Every agent, one Update each, all upgraded; never more than 4 at once.
    let kids = children(&ns).await;
    let upgrades: Vec<&AgentInvocation> = kids
        .iter()
        .filter(|c| c.name_any().starts_with("upgrade-"))
        .collect();
    assert_eq!(upgrades.len(), 30, "one Update per node, none twice");
    let per_node: BTreeSet<String> = upgrades
        .iter()
        .map(|c| c.spec.node_names.clone().expect("nodes")[0].clone())
        .collect();
    assert_eq!(per_node.len(), 30);
    assert!(upgrades.iter().all(|c| results(c).values().all(ok)));
    let expected: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.clone(), "2.0.0".to_string()))
        .collect();
    assert_eq!(agent.versions().await, expected);
    assert!(
        !watch.is_finished(),
        "the in-flight count is incomplete: {:?}",
        watch.await
    );
    watch.abort();
    let max = max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 4, "{max} upgrades in flight at once");
    assert!(max >= 2, "the rollout ran in parallel ({max})");
    let shown = rows(&nodeops_get(&ns, "upgrade"), &nodes);
    assert_eq!(shown.len(), 30, "{shown:?}");
    assert!(shown.values().all(|s| s == "Success"), "{shown:?}");
}
