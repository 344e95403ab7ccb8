//! NodeAgent end to end on the local control plane, in DaemonSet mode: one DaemonSet per
//! live version (the real DaemonSet controller and scheduler placing pods on kwok nodes,
//! which kwok makes Ready), driven by AgentInvocations through install, update, rollback by
//! invocation id and retry; the fleet in the NodeAgent's status; deleting the NodeAgent
//! removes its DaemonSets and, through its finalizer, its node labels. The invocations'
//! own behaviour (installer Jobs, remote installs) is in tests/agent_invocation.rs.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use nodeops::api::agent_invocation::{AgentInvocationPhase, RetStatus};
use nodeops::api::node_agent::NodeAgent;
use nodeops::keys::sim;
use serde_json::json;
use support::agents::{Agent, FINISH, invoke, ok, results};
use support::{Operator, TestNamespace, install_crds, node_names, wait_for};

#[tokio::test]
async fn daemonset_agent_install_update_rollback_retry() {
    let ns = TestNamespace::new("agent-ds").await;
    install_crds(&ns.client).await;
    // A node that exists but never becomes Ready: kwok does not manage it.
    let sick = format!("{}-notready", ns.name);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": sick}})).expect("node"),
        )
        .await
        .expect("create NotReady node");
    let op = Operator::start(&ns.name, &[]);
    let agent = Agent::create(
        &ns,
        json!({
            "mode": "DaemonSet",
            "image": "registry.example.com/telescope",
            "basicVersion": "3.2.1",
            "advanceVersion": "3.3.0",
            "readyTimeoutSeconds": 25,
            // The agent's pod never comes up on node-0020 (a kwok script).
            "podAnnotations": {format!("{}node-0020", sim::UNREADY_PREFIX): "true"},
        }),
    )
    .await;

    // Install on 20 nodes, one missing and one NotReady.
    let mut targets = node_names(1..=20);
    targets.push("node-missing".into());
    targets.push(sick.clone());
    let install = invoke(
        &ns,
        "install",
        json!({"invocationType": "Install", "invocationTarget": agent.name, "nodeNames": targets, "origin": "CES"}),
    )
    .await;
    let r = results(&install);
    assert_eq!(r.len(), 22);
    for node in node_names(1..=19) {
        let e = &r[&node];
        assert!(ok(e), "{node}: {e:?}");
        assert_eq!(
            (e.version_before.as_deref(), e.version_after.as_deref()),
            (None, Some("3.2.1"))
        );
        assert!(e.start_time.is_some() && e.completion_time.is_some());
    }
    let failed = &r["node-0020"];
    assert_eq!(
        (failed.reason.as_deref(), failed.error_code.as_deref()),
        (Some("AgentNotReady"), Some("invocationmgr.0101")),
        "{failed:?}"
    );
    assert_eq!(failed.ret_status, Some(RetStatus::Error));
    assert_eq!(
        r["node-missing"].error_code.as_deref(),
        Some("invocationmgr.0001")
    );
    assert_eq!(r[&sick].reason.as_deref(), Some("NodeNotReady"));
    let status = install.status.as_ref().expect("status");
    assert_eq!(status.phase, AgentInvocationPhase::Failed);
    assert_eq!(status.progress.as_deref(), Some("19/22"));

    let expected: BTreeMap<String, String> = node_names(1..=19)
        .into_iter()
        .map(|n| (n, "3.2.1".to_string()))
        .collect();
    assert_eq!(
        agent.versions().await,
        expected,
        "the labels show the installs; node-0020's was put back"
    );
    let dss: Api<DaemonSet> = ns.api();
    let ds = dss
        .get(&format!("{}-3.2.1", agent.name))
        .await
        .expect("the 3.2.1 DaemonSet");
    assert_eq!(
        ds.spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
            .node_selector
            .expect("selector")[&agent.label()],
        "3.2.1"
    );

    // Update 10 to the advance version.
    let update = invoke(
        &ns,
        "update",
        json!({"invocationType": "Update", "invocationTarget": agent.name, "nodeNames": node_names(1..=10), "versionType": "AdvanceVersion"}),
    )
    .await;
    let r = results(&update);
    assert!(r.values().all(ok), "{r:#?}");
    assert!(
        r.values()
            .all(|e| e.version_before.as_deref() == Some("3.2.1")
                && e.version_after.as_deref() == Some("3.3.0"))
    );
    dss.get(&format!("{}-3.3.0", agent.name))
        .await
        .expect("a DaemonSet for the new version");

    // Roll back 5 by invocation id.
    let ids: Vec<String> = node_names(1..=5)
        .iter()
        .map(|n| r[n].invocation_id.clone())
        .collect();
    let rollback = invoke(
        &ns,
        "rollback",
        json!({"invocationType": "Rollback", "invocationTarget": agent.name, "invocationIds": ids}),
    )
    .await;
    let rb = results(&rollback);
    assert_eq!(rb.len(), 5);
    for node in node_names(1..=5) {
        let e = &rb[&node];
        assert!(ok(e), "{e:?}");
        assert_eq!(e.version_after.as_deref(), Some("3.2.1"));
        assert_eq!(
            e.source_invocation_id.as_deref(),
            Some(r[&node].invocation_id.as_str())
        );
    }

    // Retry the failed install once its cause is gone.
    let patch = json!({"spec": {"podAnnotations": null}});
    agent
        .api()
        .patch(&agent.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("fix the agent");
    let retry = invoke(
        &ns,
        "retry",
        json!({"invocationType": "Retry", "invocationTarget": agent.name,
               "invocationIds": [failed.invocation_id, install.status.as_ref().expect("s").invocations[0].invocation_id]}),
    )
    .await;
    let rt = results(&retry);
    assert!(ok(&rt["node-0020"]), "{:?}", rt["node-0020"]);
    assert_eq!(
        rt["node-0001"].reason.as_deref(),
        Some("NothingToRetry"),
        "a successful invocation is not retried"
    );

    let mut expected: BTreeMap<String, String> = node_names(1..=20)
        .into_iter()
        .map(|n| (n, "3.2.1".to_string()))
        .collect();
    for n in node_names(6..=10) {
        expected.insert(n, "3.3.0".into());
    }
    assert_eq!(agent.versions().await, expected);
    assert_eq!(
        agent.kubectl_versions(),
        expected,
        "kubectl get nodes -L {} shows what the invocations set",
        agent.label()
    );

    // The NodeAgent reports the fleet.
    let a = wait_for(
        &agent.api(),
        &agent.name,
        FINISH,
        "20 nodes counted, all ready",
        |a: &NodeAgent| {
            a.status.as_ref().is_some_and(|s| {
                s.installed_nodes == 20 && s.versions.iter().map(|v| v.ready).sum::<i32>() == 20
            })
        },
    )
    .await;
    let s = a.status.clone().expect("status");
    assert_eq!(
        s.versions
            .iter()
            .map(|v| (v.version.as_str(), v.nodes))
            .collect::<Vec<_>>(),
        [("3.2.1", 15), ("3.3.0", 5)]
    );
    assert_eq!(s.agents.len(), 20);
    assert!(
        support::name_of(&a).starts_with("tel-")
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // Deleting the agent removes its DaemonSets and, through the finalizer, its labels.
    agent
        .api()
        .delete(&agent.name, &DeleteParams::background())
        .await
        .expect("delete the agent");
    // The NodeAgent is gone once its labels are.
    support::wait_until_gone(&agent.api(), &agent.name, FINISH).await;
    assert!(agent.versions().await.is_empty(), "no node keeps the label");
    drop(op);
    let _ = nodes.delete(&sick, &DeleteParams::default()).await;
}
