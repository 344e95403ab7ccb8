//! AsyncCommand end to end on the local control plane: per-node Jobs run by the real Job
//! controller on kwok's simulated nodes, per-node results in status, the operator killed
//! and restarted mid-way, rate control asserted from a watch.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use nodeops::api::Command;
use nodeops::api::async_command::{AsyncCommand, CommandPhase, NodePhase};
use nodeops::keys::{FLEET_PART_ANNOTATION, FLEET_UID_LABEL, OWNER_UID_LABEL, sim};
use serde_json::json;
use support::{
    Operator, TestNamespace, apply, finished, install_crds, manifest, node_names, wait_for,
};

const FINISH: Duration = Duration::from_secs(180);

async fn owned_jobs(ns: &TestNamespace, uid: &str) -> Vec<Job> {
    let jobs: Api<Job> = ns.api();
    jobs.list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await
        .expect("jobs")
        .items
}

#[tokio::test]
async fn hundred_nodes_with_mixed_outcomes_are_each_reported() {
    let ns = TestNamespace::new("acmd-mixed").await;
    install_crds(&ns.client).await;
    // A node that exists but never becomes Ready: kwok does not manage it.
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let sick = format!("{}-notready", ns.name);
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": sick}})).expect("node"),
        )
        .await
        .expect("create NotReady node");
    let _op = Operator::start(&ns.name, &[]);
    let mut targets = node_names(1..=98);
    targets.push("node-does-not-exist".into());
    targets.push(sick.clone());
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "mixed",
            json!({
                "command": "ls -l /system",
                "nodeNames": targets,
                "nodeReadyTimeoutSeconds": 5,
                "podAnnotations": {
                    format!("{}node-0007", sim::EXIT_CODE_NODE_PREFIX): "2",
                    format!("{}node-0042", sim::EXIT_CODE_NODE_PREFIX): "137",
                    sim::MESSAGE: "simulated output"
                }
            }),
        ),
    )
    .await;
    let done = wait_for(&api, "mixed", FINISH, "all 100 nodes final", finished).await;
    let _ = nodes.delete(&sick, &DeleteParams::default()).await;
    let status = done.status.expect("status");
    assert_eq!(status.cmd_jobs.len(), 100, "one entry per node");
    assert_eq!(
        (status.total, status.succeeded, status.failed),
        (100, 96, 4)
    );
    assert_eq!(status.phase, CommandPhase::Failed);
    let by_node: BTreeMap<_, _> = status
        .cmd_jobs
        .iter()
        .map(|e| (e.node_name.as_str(), e))
        .collect();
    let e = by_node["node-0007"];
    assert_eq!(
        (e.phase, e.exit_code, e.reason.as_deref()),
        (NodePhase::Failed, Some(2), Some("ExitCode"))
    );
    assert_eq!(e.output.as_deref(), Some("simulated output"));
    assert_eq!(by_node["node-0042"].exit_code, Some(137));
    assert_eq!(
        by_node["node-does-not-exist"].reason.as_deref(),
        Some("NodeNotFound")
    );
    assert_eq!(
        by_node[sick.as_str()].reason.as_deref(),
        Some("NodeNotReady")
    );
    assert_eq!(by_node["node-0001"].phase, NodePhase::Succeeded);
    assert_eq!(by_node["node-0001"].exit_code, Some(0));
    assert!(by_node.values().all(|e| e.job_id.len() == 32));
    assert_eq!(status.task_id.as_deref().map(str::len), Some(32));
    assert_eq!(status.progress.as_deref(), Some("96/100"));
    let uid = done.metadata.uid.expect("uid");
    assert_eq!(
        owned_jobs(&ns, &uid).await.len(),
        98,
        "no Job for the missing and the NotReady node"
    );
    let size = serde_json::to_vec(&status).expect("json").len();
    println!("status of 100 nodes: {size} bytes");
}

#[tokio::test]
async fn operator_killed_mid_fan_out_resumes_without_duplicates_or_excess_concurrency() {
    let ns = TestNamespace::new("acmd-restart").await;
    install_crds(&ns.client).await;
    let in_flight = support::track_jobs_in_flight(&ns);
    let mut op = Operator::start(&ns.name, &[]);
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "fanout",
            json!({
                "command": "uptime",
                "nodeNames": node_names(1..=100),
                "maxConcurrency": 10,
                "podAnnotations": {sim::DELAY: "300ms"}
            }),
        ),
    )
    .await;
    // Kill it twice mid-way, at different depths of the fan-out.
    for threshold in [15, 55] {
        wait_for(&api, "fanout", FINISH, "progress", |c: &AsyncCommand| {
            c.status.as_ref().is_some_and(|s| s.succeeded >= threshold)
        })
        .await;
        op.restart();
    }
    let done = wait_for(&api, "fanout", FINISH, "completion", finished).await;
    let status = done.status.expect("status");
    assert_eq!(status.succeeded, 100, "every result present");
    let uid = done.metadata.uid.expect("uid");
    let jobs = owned_jobs(&ns, &uid).await;
    assert_eq!(jobs.len(), 100, "exactly one Job per node");
    let pods: Api<Pod> = ns.api();
    let pods = pods
        .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await
        .expect("pods");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods.items {
        *per_node
            .entry(
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), 100);
    assert!(
        per_node.values().all(|n| *n == 1),
        "no node ran twice: {per_node:?}"
    );
    // The watch saw all 100 Jobs finish without breaking: the bound below covers the run.
    let max = in_flight.finish(100, FINISH).await;
    println!("highest number of Jobs in flight seen by the watch: {max} (maxConcurrency 10)");
    assert!(max <= 10, "maxConcurrency exceeded: {max} Jobs in flight");
    assert!(max >= 5, "the fan-out did run in parallel: {max}");
}

#[tokio::test]
async fn deleting_mid_way_removes_jobs_and_pods() {
    let (ns, _op) = TestNamespace::with_operator("acmd-delete").await;
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "doomed",
            json!({"command": "uptime", "nodeNames": node_names(1..=30), "maxConcurrency": 5,
                   "podAnnotations": {sim::OUTCOME: "running"}}),
        ),
    )
    .await;
    let running = wait_for(
        &api,
        "doomed",
        FINISH,
        "5 nodes running",
        |c: &AsyncCommand| c.status.as_ref().is_some_and(|s| s.running == 5),
    )
    .await;
    let uid = running.metadata.uid.expect("uid");
    assert_eq!(owned_jobs(&ns, &uid).await.len(), 5);
    api.delete("doomed", &DeleteParams::foreground())
        .await
        .expect("delete");
    let pods: Api<Pod> = ns.api();
    let jobs: Api<Job> = ns.api();
    let selector = format!("{OWNER_UID_LABEL}={uid}");
    let gc = Duration::from_secs(60);
    support::wait_until_gone(&api, "doomed", gc).await;
    support::wait_until_none(&jobs, &selector, gc).await;
    support::wait_until_none(&pods, &selector, gc).await;
}

/// A running node whose Job is deleted fails `JobLost`; the nodes whose Jobs are there
/// keep running (a Job missing from the cache is read from the API before that verdict).
#[tokio::test]
async fn a_running_node_whose_job_is_deleted_fails_job_lost() {
    let (ns, _op) = TestNamespace::with_operator("acmd-joblost").await;
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "lost",
            json!({"command": "uptime", "nodeNames": node_names(1..=3),
                   "podAnnotations": {sim::OUTCOME: "running"}}),
        ),
    )
    .await;
    let running = wait_for(
        &api,
        "lost",
        FINISH,
        "3 nodes running",
        |c: &AsyncCommand| c.status.as_ref().is_some_and(|s| s.running == 3),
    )
    .await;
    let uid = running.metadata.uid.expect("uid");
    let entry = running
        .status
        .as_ref()
        .and_then(|s| s.cmd_jobs.iter().find(|e| e.node_name == "node-0002"))
        .cloned()
        .expect("node-0002's entry");
    let job = entry.job_name.expect("node-0002's Job");
    let jobs: Api<Job> = ns.api();
    jobs.delete(&job, &DeleteParams::background())
        .await
        .expect("delete the Job");
    let lost = wait_for(
        &api,
        "lost",
        FINISH,
        "node-0002 failed",
        |c: &AsyncCommand| {
            c.status.as_ref().is_some_and(|s| {
                s.cmd_jobs
                    .iter()
                    .any(|e| e.node_name == "node-0002" && e.phase == NodePhase::Failed)
            })
        },
    )
    .await;
    let status = lost.status.expect("status");
    for e in &status.cmd_jobs {
        if e.node_name == "node-0002" {
            assert_eq!(e.reason.as_deref(), Some("JobLost"), "{e:?}");
        } else {
            assert_eq!(e.phase, NodePhase::Running, "{e:?}");
        }
    }
    assert_eq!(
        owned_jobs(&ns, &uid).await.len(),
        2,
        "the other Jobs remain"
    );
}

#[tokio::test]
async fn max_errors_stops_starting_nodes_and_cancels_the_rest() {
    let (ns, _op) = TestNamespace::with_operator("acmd-maxerr").await;
    let api: Api<AsyncCommand> = ns.api();
    let mut annotations = serde_json::Map::new();
    for i in 1..=4 {
        annotations.insert(
            format!("{}node-{i:04}", sim::EXIT_CODE_NODE_PREFIX),
            json!("1"),
        );
    }
    apply(
        &api,
        manifest::<AsyncCommand>(
            "fragile",
            json!({"command": "uptime", "nodeNames": node_names(1..=20), "maxConcurrency": 2, "maxErrors": 1,
                   "podAnnotations": annotations}),
        ),
    )
    .await;
    let done = wait_for(&api, "fragile", FINISH, "completion", finished).await;
    let status = done.status.expect("status");
    assert_eq!(status.phase, CommandPhase::Failed);
    assert!(status.failed >= 2, "{status:?}");
    assert!(
        status.cancelled >= 14,
        "the rest never started: {}",
        status.cancelled
    );
    assert_eq!(status.failed + status.succeeded + status.cancelled, 20);
    let cancelled: Vec<_> = status
        .cmd_jobs
        .iter()
        .filter(|e| e.phase == NodePhase::Cancelled)
        .collect();
    assert!(
        cancelled
            .iter()
            .all(|e| e.reason.as_deref() == Some("MaxErrorsReached") && e.job_name.is_none())
    );
    let uid = done.metadata.uid.expect("uid");
    let started = (status.failed + status.succeeded) as usize;
    assert_eq!(
        owned_jobs(&ns, &uid).await.len(),
        started,
        "no Job for a cancelled node"
    );
}

#[tokio::test]
async fn host_mode_only_where_the_operator_allows_it() {
    let ns = TestNamespace::new("acmd-host").await;
    install_crds(&ns.client).await;
    let mut op = Operator::start(
        &ns.name,
        &["--host-mode-namespaces", "some-other-namespace"],
    );
    let api: Api<AsyncCommand> = ns.api();
    let on_host = manifest::<AsyncCommand>(
        "on-host",
        json!({"command": "systemctl is-active kubelet", "nodeNames": ["node-0001", "node-0002"],
               "executionMode": "Host", "username": "root"}),
    );
    apply(&api, on_host).await;
    let stalled = wait_for(&api, "on-host", FINISH, "Stalled", |c: &AsyncCommand| {
        c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True")
        })
    })
    .await;
    let status = stalled.status.expect("status");
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(cond.reason, "HostModeNotAllowed");
    assert!(cond.message.contains(&ns.name), "{}", cond.message);
    assert_eq!(status.phase, CommandPhase::Invalid);
    let uid = stalled.metadata.uid.clone().expect("uid");
    assert!(owned_jobs(&ns, &uid).await.is_empty(), "nothing runs");

    // Allowed here: privileged host Jobs run and succeed.
    drop(op);
    op = Operator::start(&ns.name, &["--host-mode-namespaces", &ns.name]);
    api.delete("on-host", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for_gone(&api, "on-host").await;
    apply(
        &api,
        manifest::<AsyncCommand>(
            "on-host",
            json!({"command": "systemctl is-active kubelet", "nodeNames": ["node-0001", "node-0002"],
                   "executionMode": "Host", "username": "root"}),
        ),
    )
    .await;
    let done = wait_for(&api, "on-host", FINISH, "completion", finished).await;
    assert_eq!(done.status.as_ref().map(|s| s.succeeded), Some(2));
    let jobs = owned_jobs(&ns, &done.metadata.uid.expect("uid")).await;
    let pod = jobs[0]
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod");
    assert_eq!(pod.host_pid, Some(true));
    assert_eq!(
        pod.containers[0]
            .security_context
            .as_ref()
            .and_then(|s| s.privileged),
        Some(true)
    );
    let args = pod.containers[0].args.clone().expect("args");
    assert_eq!(args[0], "--host");
    assert!(args.contains(&"--timeout".to_string()), "{args:?}");
    assert!(args.ends_with(&[
        "--".into(),
        "systemctl".into(),
        "is-active".into(),
        "kubelet".into()
    ]));
    drop(op);
}

#[tokio::test]
async fn command_ref_parameters_reach_the_pod_as_environment() {
    let (ns, _op) = TestNamespace::with_operator("acmd-cmdref").await;
    let commands: Api<Command> = ns.api();
    apply(
        &commands,
        manifest::<Command>(
            "disk-usage",
            json!({"content": "df -h {{path}}", "enableParameters": true, "defaultParameters": {"path": "/"}, "timeoutSeconds": 30}),
        ),
    )
    .await;
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "df",
            json!({"commandRef": "disk-usage", "parameters": {"path": "/var; reboot"}, "nodeNames": ["node-0003"]}),
        ),
    )
    .await;
    let done = wait_for(&api, "df", FINISH, "completion", finished).await;
    assert_eq!(done.status.as_ref().map(|s| s.succeeded), Some(1));
    let jobs = owned_jobs(&ns, &done.metadata.uid.expect("uid")).await;
    let c = &jobs[0]
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod")
        .containers[0];
    let args = c.args.clone().expect("args");
    assert!(
        args.ends_with(&[
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            // `$$`: the kubelet's escape of `$`, so its `$(VAR)` expansion leaves the script be.
            "df -h \"$${NODEOPS_PARAM_path}\"".into()
        ]),
        "{args:?}"
    );
    let env = c.env.clone().expect("env");
    assert_eq!(env[0].name, "NODEOPS_PARAM_path");
    assert_eq!(env[0].value.as_deref(), Some("/var; reboot"));

    // An unknown parameter is a Stalled condition, not a run.
    apply(
        &api,
        manifest::<AsyncCommand>(
            "df-bad",
            json!({"commandRef": "disk-usage", "parameters": {"nope": "x"}, "nodeNames": ["node-0003"]}),
        ),
    )
    .await;
    let bad = wait_for(&api, "df-bad", FINISH, "Stalled", |c: &AsyncCommand| {
        c.status
            .as_ref()
            .is_some_and(|s| s.phase == CommandPhase::Invalid)
    })
    .await;
    let cond = bad
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(cond.reason, "ParameterInvalid");
    assert!(cond.message.contains("nope"));
}

async fn wait_for_gone(api: &Api<AsyncCommand>, name: &str) {
    let Some(obj) = api.get_opt(name).await.expect("get") else {
        return;
    };
    let uid = obj.metadata.uid.unwrap_or_default();
    let cond = kube::runtime::wait::await_condition(
        api.clone(),
        name,
        kube::runtime::conditions::is_deleted(&uid),
    );
    tokio::time::timeout(Duration::from_secs(30), cond)
        .await
        .expect("deleted in time")
        .expect("watch");
}

#[tokio::test]
async fn admission_refusal_is_reported_per_node() {
    let ns = TestNamespace::new("acmd-psa").await;
    install_crds(&ns.client).await;
    // Pod Security admission refuses privileged pods here, as a hardened cluster would.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
    let patch = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}});
    namespaces
        .patch(
            &ns.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("label namespace");
    let _op = Operator::start(&ns.name, &["--host-mode-namespaces", &ns.name]);
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "refused",
            json!({"command": "uptime", "nodeNames": ["node-0001", "node-0002"], "executionMode": "Host"}),
        ),
    )
    .await;
    let done = wait_for(&api, "refused", FINISH, "completion", finished).await;
    let status = done.status.expect("status");
    assert_eq!(status.failed, 2);
    for e in &status.cmd_jobs {
        assert_eq!(e.reason.as_deref(), Some("AdmissionRefused"), "{e:?}");
        assert!(
            e.message
                .as_deref()
                .is_some_and(|m| m.contains("PodSecurity")),
            "{e:?}"
        );
    }
    let uid = done.metadata.uid.expect("uid");
    let jobs: Api<Job> = ns.api();
    let selector = format!("{OWNER_UID_LABEL}={uid}");
    support::wait_until_none(&jobs, &selector, Duration::from_secs(30)).await;
}

/// The simulated nodes (kwok's `type=kwok` label): the fleet tests' selector.
async fn kwok_nodes(ns: &TestNamespace) -> Vec<String> {
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let mut names: Vec<String> = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    names
}

/// A fleet's batches, in order.
async fn batches_of(api: &Api<AsyncCommand>, uid: &str) -> Vec<AsyncCommand> {
    let mut batches = api
        .list(&ListParams::default().labels(&format!("{FLEET_UID_LABEL}={uid}")))
        .await
        .expect("batches")
        .items;
    batches.sort_by_key(|b| {
        b.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FLEET_PART_ANNOTATION))
            .and_then(|p| p.split_once('/'))
            .and_then(|(i, _)| i.parse::<usize>().ok())
            .expect("a batch's part")
    });
    batches
}

/// Pods per node in the namespace: a node that ran twice has two.
async fn pods_per_node(ns: &TestNamespace) -> BTreeMap<String, usize> {
    let pods: Api<Pod> = ns.api();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods.list(&ListParams::default()).await.expect("pods").items {
        let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
        *per_node.entry(node).or_default() += 1;
    }
    per_node
}

#[tokio::test]
async fn a_fleet_runs_every_node_once_across_batches_and_an_operator_kill() {
    let ns = TestNamespace::new("acmd-fleet").await;
    install_crds(&ns.client).await;
    let targets = kwok_nodes(&ns).await;
    assert!(
        targets.len() > 40,
        "the test needs more nodes than two batches"
    );
    let in_flight = support::track_jobs_in_flight(&ns);
    // Batches of 20: the cluster's 100 simulated nodes make a fleet of 5.
    let mut op = Operator::start(&ns.name, &["--fleet-batch-nodes", "20"]);
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "fleet",
            json!({
                "command": "uptime",
                "nodeSelector": {"matchLabels": {"type": "kwok"}},
                "maxConcurrency": 12,
                "maxErrors": 5,
                "podAnnotations": {
                    sim::DELAY: "300ms",
                    format!("{}node-0033", sim::EXIT_CODE_NODE_PREFIX): "3",
                }
            }),
        ),
    )
    .await;
    wait_for(&api, "fleet", FINISH, "a third done", |c: &AsyncCommand| {
        c.status.as_ref().is_some_and(|s| s.succeeded >= 30)
    })
    .await;
    op.restart();
    let done = wait_for(&api, "fleet", FINISH, "completion", finished).await;
    let n = targets.len() as i32;
    let status = done.status.clone().expect("status");
    assert_eq!(
        (
            status.total,
            status.succeeded,
            status.failed,
            status.cancelled
        ),
        (n, n - 1, 1, 0)
    );
    assert_eq!(status.phase, CommandPhase::Failed);
    assert!(
        status.cmd_jobs.is_empty(),
        "the nodes' entries are in the batches"
    );
    let fleet = status.fleet.expect("fleet status");
    let uid = done.metadata.uid.clone().expect("uid");
    let batches = batches_of(&api, &uid).await;
    assert_eq!(fleet.batches as usize, batches.len());
    assert_eq!(batches.len(), targets.len().div_ceil(20));
    assert_eq!(fleet.started, n);
    assert_eq!(fleet.failures.len(), 1);
    assert_eq!(fleet.failures[0].node_name, "node-0033");
    assert_eq!(fleet.failures[0].reason.as_deref(), Some("ExitCode"));
    // Membership: every node in exactly one batch, each with its own entry and Job.
    let mut members = Vec::new();
    let mut jobs = 0;
    for b in &batches {
        let names = b.spec.node_names.clone().expect("a batch names its nodes");
        assert!(names.len() <= 20);
        let s = b.status.as_ref().expect("batch status");
        assert_eq!(s.cmd_jobs.len(), names.len());
        assert!(s.completion_time.is_some());
        if names.contains(&"node-0033".to_string()) {
            assert_eq!(
                fleet.failures[0].batch,
                b.metadata.name.clone().expect("name")
            );
            let e = s
                .cmd_jobs
                .iter()
                .find(|e| e.node_name == "node-0033")
                .expect("entry");
            assert_eq!((e.phase, e.exit_code), (NodePhase::Failed, Some(3)));
        }
        jobs += owned_jobs(&ns, b.metadata.uid.as_deref().expect("uid"))
            .await
            .len();
        members.extend(names);
    }
    members.sort();
    assert_eq!(
        members, targets,
        "the fleet is the nodes the selector matched"
    );
    assert_eq!(jobs, targets.len(), "exactly one Job per node");
    let per_node = pods_per_node(&ns).await;
    assert_eq!(per_node.len(), targets.len());
    assert!(
        per_node.values().all(|n| *n == 1),
        "no node ran twice: {per_node:?}"
    );
    let max = in_flight.finish(targets.len(), FINISH).await;
    println!("highest number of Jobs in flight across the fleet: {max} (maxConcurrency 12)");
    assert!(max <= 12, "maxConcurrency exceeded across batches: {max}");
    assert!(max >= 6, "the fleet did run in parallel: {max}");
    // `nodeops get` shows the fleet, each batch, and every node's result.
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_nodeops"))
        .args(["get", "asynccommand", "fleet", "-n", &ns.name])
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .expect("nodeops get");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("fleet of {} batches", batches.len())),
        "{shown}"
    );
    for b in &batches {
        assert!(
            shown.contains(b.metadata.name.as_deref().expect("name")),
            "{shown}"
        );
    }
    for node in &targets {
        assert_eq!(
            shown
                .lines()
                .filter(|l| l.starts_with(&format!("{node} ")))
                .count(),
            1,
            "one row for {node}"
        );
    }
    // Every object of the fleet, managed fields included, stays under the bound.
    let mut largest = 0;
    for obj in batches.iter().chain([&done]) {
        largest = largest.max(serde_json::to_vec(obj).expect("json").len());
    }
    println!("largest object of the fleet: {largest} bytes");
    assert!(largest < 512 * 1024);
}

#[tokio::test]
async fn a_fleet_stops_every_batch_past_max_errors() {
    let ns = TestNamespace::new("acmd-fleet-errors").await;
    install_crds(&ns.client).await;
    let targets = kwok_nodes(&ns).await;
    let _op = Operator::start(&ns.name, &["--fleet-batch-nodes", "20"]);
    let api: Api<AsyncCommand> = ns.api();
    // node-0025 is in the second batch; nodes start in order, 3 at a time.
    apply(
        &api,
        manifest::<AsyncCommand>(
            "fragile-fleet",
            json!({
                "command": "uptime",
                "nodeSelector": {"matchLabels": {"type": "kwok"}},
                "maxConcurrency": 3,
                "maxErrors": 0,
                "podAnnotations": {format!("{}node-0025", sim::EXIT_CODE_NODE_PREFIX): "1"}
            }),
        ),
    )
    .await;
    let done = wait_for(&api, "fragile-fleet", FINISH, "completion", finished).await;
    let status = done.status.expect("status");
    let n = targets.len() as i32;
    assert_eq!(status.failed, 1, "{status:?}");
    assert_eq!(status.failed + status.succeeded + status.cancelled, n);
    // Started: the 24 before it, itself, and at most the 2 beside it in flight.
    assert!(
        (24..=27).contains(&status.succeeded),
        "{}",
        status.succeeded
    );
    let uid = done.metadata.uid.expect("uid");
    let batches = batches_of(&api, &uid).await;
    let mut jobs = 0;
    for b in &batches {
        jobs += owned_jobs(&ns, b.metadata.uid.as_deref().expect("uid"))
            .await
            .len();
        for e in &b.status.as_ref().expect("status").cmd_jobs {
            if e.phase == NodePhase::Cancelled {
                assert_eq!(e.reason.as_deref(), Some("MaxErrorsReached"));
                assert!(e.job_name.is_none());
            }
        }
    }
    assert_eq!(
        jobs as i32,
        status.succeeded + status.failed,
        "no Job for a cancelled node"
    );
    assert!(
        batches[2..].iter().all(|b| b.status.as_ref().is_some_and(
            |s| s.cancelled as usize == b.spec.node_names.as_ref().map_or(0, Vec::len)
        )),
        "the batches after the failure started nothing"
    );
}
