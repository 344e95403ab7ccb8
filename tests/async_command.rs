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
use nodeops::keys::{OWNER_UID_LABEL, sim};
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
