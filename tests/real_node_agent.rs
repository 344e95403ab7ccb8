//! A DaemonSet-mode NodeAgent on the real node: the sample agent (images/sample-agent,
//! built by hack/images.sh) installed, updated, rolled back, broken and rolled back by
//! `readyTimeoutSeconds`, then upgraded by an AgentUpgradeJob across the real node and
//! simulated ones. Which version runs is read from the agent process on the host (its
//! environment), not inferred from status.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Api;
use nodeops::api::agent_upgrade_job::{AgentUpgradeJob, AgentUpgradeState, UpgradeJobState};
use serde_json::json;
use support::agents::{Agent, invoke, ok, results};
use support::{Operator, TestNamespace, apply, install_crds, wait_for};

const FINISH: Duration = Duration::from_secs(180);

/// The environment of every host process whose environment has `AGENT_NAME=sample-agent`
/// and `HOSTNAME=<pod_prefix>...` (the pods of the agent's DaemonSets are named after it).
fn agent_processes(pod_prefix: &str) -> Vec<BTreeMap<String, String>> {
    support::host_processes()
        .into_iter()
        .map(|p| p.env)
        .filter(|env| {
            env.get("AGENT_NAME").map(String::as_str) == Some("sample-agent")
                && env
                    .get("HOSTNAME")
                    .is_some_and(|h| h.starts_with(pod_prefix))
        })
        .collect()
}

/// Waits until exactly one agent process of `agent` runs on the host, at `version` (the
/// kubelet replaces pods asynchronously: the old one may still be stopping).
async fn running_version(agent: &Agent, version: &str) {
    let prefix = format!("{}-", agent.name);
    let mut seen = Vec::new();
    for _ in 0..600 {
        seen = agent_processes(&prefix)
            .into_iter()
            .map(|env| env.get("AGENT_VERSION").cloned().unwrap_or_default())
            .collect::<Vec<_>>();
        // The sh and its sleep share the environment: one agent is two processes.
        seen.dedup();
        if seen == [version] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "agent {} on the host runs {seen:?}, not {version}",
        agent.name
    );
}

#[tokio::test]
async fn the_sample_agent_is_installed_updated_rolled_back_and_upgraded_on_the_real_node() {
    let ns = TestNamespace::new("real-agent").await;
    install_crds(&ns.client).await;
    let real = support::real_node_name();
    let image = support::real_node_images()["SAMPLE_AGENT_IMAGE"].clone();
    let _op = Operator::start(&ns.name, &[]);
    let nodes = vec![
        real.clone(),
        "node-0001".to_string(),
        "node-0002".to_string(),
    ];
    let agent = Agent::installed(
        &ns,
        json!({"mode": "DaemonSet", "image": image, "basicVersion": "1.0.0",
               "advanceVersion": "1.1.0", "readyTimeoutSeconds": 20}),
        &nodes,
    )
    .await;
    running_version(&agent, "1.0.0").await;
    assert_eq!(agent.versions().await[&real], "1.0.0");

    // Update the real node to the advance version: the kubelet replaces the agent.
    let update = invoke(
        &ns,
        "update",
        json!({"invocationType": "Update", "invocationTarget": agent.name,
               "nodeNames": [real], "versionType": "AdvanceVersion"}),
    )
    .await;
    let r = results(&update);
    assert!(ok(&r[&real]), "{r:#?}");
    running_version(&agent, "1.1.0").await;

    // Roll it back by its invocation id.
    let rollback = invoke(
        &ns,
        "rollback",
        json!({"invocationType": "Rollback", "invocationTarget": agent.name,
               "invocationIds": [r[&real].invocation_id]}),
    )
    .await;
    let rb = results(&rollback);
    assert!(rb.values().all(ok), "{rb:#?}");
    running_version(&agent, "1.0.0").await;

    // A version that never starts: not Ready within readyTimeoutSeconds, so the node is
    // put back on the version it had, and the kubelet runs that one again.
    let broken = invoke(
        &ns,
        "broken",
        json!({"invocationType": "Update", "invocationTarget": agent.name,
               "nodeNames": [real], "version": "9.0.0"}),
    )
    .await;
    let b = &results(&broken)[&real];
    assert_eq!(b.reason.as_deref(), Some("AgentNotReady"), "{b:#?}");
    assert_eq!(agent.versions().await[&real], "1.0.0");
    running_version(&agent, "1.0.0").await;

    // Retry of the failed instance fails the same way (the version is still broken).
    let retry = invoke(
        &ns,
        "retry",
        json!({"invocationType": "Retry", "invocationTarget": agent.name,
               "invocationIds": [b.invocation_id]}),
    )
    .await;
    let rt = &results(&retry);
    assert_eq!(rt.len(), 1);
    assert!(
        rt.values()
            .all(|e| e.reason.as_deref() == Some("AgentNotReady")),
        "{rt:#?}"
    );
    running_version(&agent, "1.0.0").await;

    // An upgrade of every node with the agent: the real node's old and new versions are
    // the ones its agent process ran.
    let jobs: Api<AgentUpgradeJob> = ns.api();
    apply(
        &jobs,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AgentUpgradeJob", "metadata": {"name": "upgrade"},
               "spec": {"agent": agent.name, "targetVersion": "2.0.0", "maxConcurrency": 2,
                        "nodeSelector": {"matchExpressions": [{"key": agent.label(), "operator": "Exists"}]}}}),
    )
    .await;
    let job = wait_for(
        &jobs,
        "upgrade",
        FINISH,
        "the upgrade",
        |j: &AgentUpgradeJob| {
            j.status.as_ref().is_some_and(|s| {
                matches!(s.status, UpgradeJobState::Success | UpgradeJobState::Failed)
            })
        },
    )
    .await;
    let s = job.status.expect("status");
    assert_eq!(s.status, UpgradeJobState::Success, "{s:#?}");
    let mine = s
        .agents
        .iter()
        .find(|a| a.node_name.as_deref() == Some(real.as_str()))
        .expect("the real node's agent");
    assert_eq!(
        (
            mine.status,
            mine.old_version.as_deref(),
            mine.new_version.as_deref()
        ),
        (AgentUpgradeState::Success, Some("1.0.0"), Some("2.0.0"))
    );
    assert_eq!(s.agents.len(), 3);
    running_version(&agent, "2.0.0").await;
    assert!(agent.versions().await.values().all(|v| v == "2.0.0"));
}
