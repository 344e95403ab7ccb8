//! The operator runs with only the permissions of `config/rbac/` (its ServiceAccount's
//! token, not the admin certificate): an AsyncCommand, a fleet of batches, a Command, an Invoker, a NodeAgent
//! with its install, update and DaemonSet clean-up, and an AgentUpgradeJob all work, and
//! the log holds no forbidden error.

mod support;

use std::time::Duration;

use kube::Api;
use nodeops::api::{AgentUpgradeJob, AsyncCommand, Command, Invoker};
use nodeops::keys::sim;
use serde_json::json;
use support::agents::{Agent, invoke, ok, results};
use support::{
    Operator, TestNamespace, apply, finished, install_crds, kubeconfig_path, kubectl, manifest,
    repo_root, wait_for,
};

/// A kubeconfig that authenticates as the operator's ServiceAccount.
fn service_account_kubeconfig() -> std::path::PathBuf {
    kubectl(&[
        "apply",
        "--server-side",
        "--field-manager",
        "nodeops-tests",
        "-k",
        "config/rbac",
    ]);
    let token = kubectl(&[
        "create",
        "token",
        "nodeops",
        "-n",
        "nodeops-system",
        "--duration",
        "1h",
    ]);
    let admin = std::fs::read_to_string(kubeconfig_path()).expect("admin kubeconfig");
    let value = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
            .expect("kubeconfig field")
    };
    let path = repo_root().join("target/nodeops-sa.kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: nodeops\n  user:\n    token: {token}\ncontexts:\n- name: nodeops\n  context: {{cluster: local, user: nodeops}}\ncurrent-context: nodeops\n",
        value("server:"),
        value("certificate-authority:")
    );
    std::fs::write(&path, config).expect("write kubeconfig");
    path
}

#[tokio::test]
async fn operator_needs_no_more_than_its_cluster_role() {
    let ns = TestNamespace::new("rbac").await;
    install_crds(&ns.client).await;
    let sa_kubeconfig = service_account_kubeconfig();
    // Privileged pods are refused here, so the admission-refusal path (reading the Job
    // controller's Events) runs under the role too.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
    let label = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}});
    namespaces
        .patch(
            &ns.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label),
        )
        .await
        .expect("label namespace");
    // With leader election, as the chart runs it: the Role for Leases is exercised too.
    let lease = format!("rbac-{}", ns.name);
    let op = Operator::start_as(
        &ns.name,
        &[
            "--host-mode-namespaces",
            &ns.name,
            "--leader-election",
            "--leader-election-namespace",
            "nodeops-system",
            "--leader-election-lease",
            &lease,
            "--fleet-batch-nodes",
            "40",
        ],
        &sa_kubeconfig,
    );

    let commands: Api<Command> = ns.api();
    apply(
        &commands,
        manifest::<Command>("uptime", json!({"content": "uptime"})),
    )
    .await;
    let acmds: Api<AsyncCommand> = ns.api();
    apply(
        &acmds,
        manifest::<AsyncCommand>(
            "rbac-check",
            json!({"command": "uptime", "nodeNames": ["node-0001", "node-0002", "node-0404"],
                   "podAnnotations": {format!("{}node-0002", sim::EXIT_CODE_NODE_PREFIX): "3"}}),
        ),
    )
    .await;
    let done = wait_for(
        &acmds,
        "rbac-check",
        Duration::from_secs(120),
        "completion",
        finished,
    )
    .await;
    let status = done.status.expect("status");
    assert_eq!((status.succeeded, status.failed), (1, 2));

    // A fleet: batches created, and their allowances raised (patched) under the role.
    apply(
        &acmds,
        manifest::<AsyncCommand>(
            "rbac-fleet",
            json!({"command": "uptime", "nodeSelector": {"matchLabels": {"type": "kwok"}},
                   "maxConcurrency": 50}),
        ),
    )
    .await;
    let fleet = wait_for(
        &acmds,
        "rbac-fleet",
        Duration::from_secs(180),
        "completion",
        finished,
    )
    .await
    .status
    .expect("status");
    assert!(
        fleet.fleet.as_ref().is_some_and(|f| f.batches >= 2),
        "{fleet:?}"
    );
    assert_eq!(fleet.succeeded, fleet.total);

    apply(
        &acmds,
        manifest::<AsyncCommand>(
            "on-host",
            json!({"command": "uptime", "nodeNames": ["node-0004"], "executionMode": "Host"}),
        ),
    )
    .await;
    let refused = wait_for(
        &acmds,
        "on-host",
        Duration::from_secs(120),
        "completion",
        finished,
    )
    .await;
    assert_eq!(
        refused.status.expect("status").cmd_jobs[0]
            .reason
            .as_deref(),
        Some("AdmissionRefused")
    );

    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3))
        .round(jiff::Unit::Second)
        .expect("round");
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        manifest::<Invoker>(
            "once",
            json!({"commandRef": "uptime", "nodeNames": ["node-0003"],
                   "scheduleSettings": {"policy": "Once", "invokeTime": at.to_string()}}),
        ),
    )
    .await;
    let fired = wait_for(
        &invokers,
        "once",
        Duration::from_secs(60),
        "the run",
        |i: &Invoker| {
            i.status
                .as_ref()
                .is_some_and(|s| s.last_invoke_time.is_some())
        },
    )
    .await;
    let child = fired.status.expect("status").recent_runs[0]
        .async_command
        .clone();
    wait_for(
        &acmds,
        &child,
        Duration::from_secs(60),
        "the child to succeed",
        |c: &AsyncCommand| c.status.as_ref().is_some_and(|s| s.succeeded == 1),
    )
    .await;
    let cmd = wait_for(
        &commands,
        "uptime",
        Duration::from_secs(30),
        "Command status",
        |c: &Command| c.status.is_some(),
    )
    .await;
    assert!(
        cmd.status
            .expect("status")
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // The agent paths: DaemonSets created and deleted, Node labels, child invocations.
    let nodes: Vec<String> = (10..=12).map(|i| format!("node-{i:04}")).collect();
    let agent = Agent::installed(
        &ns,
        json!({"mode": "DaemonSet", "image": "registry.example.com/telescope",
               "basicVersion": "1.0.0", "advanceVersion": "2.0.0", "readyTimeoutSeconds": 60}),
        &nodes,
    )
    .await;
    let update = invoke(
        &ns,
        "update",
        json!({"invocationType": "Update", "invocationTarget": agent.name,
               "versionType": "AdvanceVersion", "nodeNames": [nodes[0]]}),
    )
    .await;
    assert!(results(&update).values().all(ok), "{update:?}");
    let jobs: Api<AgentUpgradeJob> = ns.api();
    apply(
        &jobs,
        manifest::<AgentUpgradeJob>(
            "rest",
            json!({"agent": agent.name, "targetVersion": "2.0.0", "maxConcurrency": 2,
                   "nodeSelector": {"matchExpressions": [{"key": agent.label(), "operator": "Exists"}]}}),
        ),
    )
    .await;
    let upgraded = wait_for(
        &jobs,
        "rest",
        Duration::from_secs(180),
        "the upgrade",
        |j: &AgentUpgradeJob| j.status.as_ref().is_some_and(|s| s.completed_at.is_some()),
    )
    .await;
    let states: Vec<_> = upgraded
        .status
        .expect("status")
        .agents
        .iter()
        .map(|a| format!("{:?}", a.status))
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "Success").count(),
        2,
        "two upgraded, one already current: {states:?}"
    );
    assert!(agent.versions().await.values().all(|v| v == "2.0.0"));
    // No node runs 1.0.0 any more: its DaemonSet is deleted.
    let dss: Api<k8s_openapi::api::apps::v1::DaemonSet> = ns.api();
    let old = format!("{}-1.0.0", agent.name);
    support::wait_until_gone(&dss, &old, Duration::from_secs(30)).await;

    let log = op.log();
    for needle in ["forbidden", "Forbidden"] {
        assert!(
            !log.contains(needle),
            "the operator hit a permission error:\n{log}"
        );
    }
}
