//! NodeAgents on the real node, with the sample agent (images/sample-agent, built by
//! hack/images.sh). DaemonSet mode: installed, updated, rolled back, broken and rolled
//! back by `readyTimeoutSeconds`, then upgraded by an AgentUpgradeJob across the real node
//! and simulated ones. HostInstaller mode: the installer image's payload staged on the host
//! and its install.sh run there, leaving files and a service the test finds on the host.
//! Which version runs is read from the agent processes on the host (their environment)
//! and the files from the host's filesystem, not inferred from status.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use nodeops::api::Command;
use nodeops::api::agent_upgrade_job::{AgentUpgradeJob, AgentUpgradeState, UpgradeJobState};
use nodeops::keys::OWNER_UID_LABEL;
use serde_json::json;
use support::agents::{Agent, invoke, ok, results};
use support::{Operator, TestNamespace, apply, install_crds, manifest, wait_for};

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
    let _node = support::real_node_shared().await;
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
        manifest::<AgentUpgradeJob>(
            "upgrade",
            json!({"agent": agent.name, "targetVersion": "2.0.0", "maxConcurrency": 2,
                   "nodeSelector": {"matchExpressions": [{"key": agent.label(), "operator": "Exists"}]}}),
        ),
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

/// Where a HostInstaller test's agent lives on the host (the installer's AGENT_PREFIX): its
/// files and its service, both removed when dropped, whatever the test did.
struct HostAgent {
    prefix: PathBuf,
}

/// What of the sample agent is on the host: the version `current` points at, the version
/// directories, and the versions of the running agent processes.
#[derive(Debug, PartialEq)]
struct OnHost {
    current: Option<String>,
    versions: BTreeSet<String>,
    running: Vec<String>,
}

impl HostAgent {
    fn new(ns: &str) -> Self {
        let prefix = PathBuf::from(format!("/var/tmp/nodeops-{ns}"));
        let _ = std::fs::remove_dir_all(&prefix);
        Self { prefix }
    }

    fn processes(&self) -> Vec<support::HostProcess> {
        let prefix = self.prefix.display().to_string();
        support::host_processes()
            .into_iter()
            .filter(|p| p.env.get("AGENT_PREFIX") == Some(&prefix))
            .collect()
    }

    fn now(&self) -> OnHost {
        let current = std::fs::read_link(self.prefix.join("current"))
            .ok()
            .map(|l| l.display().to_string());
        let versions = std::fs::read_dir(self.prefix.join("versions"))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut running: Vec<String> = self
            .processes()
            .into_iter()
            .filter_map(|p| p.env.get("AGENT_VERSION").cloned())
            .collect();
        // The agent's sh and its sleep share the environment: one agent, two processes.
        running.sort();
        running.dedup();
        OnHost {
            current,
            versions,
            running,
        }
    }

    /// The pid the installer recorded for the service.
    fn service_pid(&self) -> u32 {
        std::fs::read_to_string(self.prefix.join("agent.pid"))
            .expect("agent.pid")
            .trim()
            .parse()
            .expect("a pid")
    }

    fn expect(&self, current: &str, versions: &[&str], running: &str) {
        let want = OnHost {
            current: Some(format!("versions/{current}")),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            running: vec![running.to_string()],
        };
        assert_eq!(self.now(), want, "the sample agent on the host");
        // Nothing staged is left on the host once the installer ended.
        let staged: Vec<_> = std::fs::read_dir(nodeops::engine::job::STAGING_DIR)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        assert!(staged.is_empty(), "staged payloads left: {staged:?}");
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        for p in self.processes() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &p.pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

/// Waits until no Job of `inv` and no Pod of those Jobs is left (the invocation deletes the
/// Jobs once it recorded them; a Pod is gone once the kubelet stopped its containers).
async fn jobs_gone(ns: &TestNamespace, inv: &nodeops::api::agent_invocation::AgentInvocation) {
    let runs = format!("{OWNER_UID_LABEL}={}", inv.uid().expect("uid"));
    let timeout = Duration::from_secs(60);
    support::wait_until_none(&ns.api::<Job>(), &runs, timeout).await;
    support::wait_until_none(&ns.api::<Pod>(), &runs, timeout).await;
}

#[tokio::test]
async fn a_host_installer_installs_updates_rolls_back_and_undoes_on_the_real_node() {
    let _node = support::real_node_shared().await;
    let ns = TestNamespace::new("real-inst").await;
    install_crds(&ns.client).await;
    let real = support::real_node_name();
    let images = support::real_node_images();
    let host = HostAgent::new(&ns.name);
    let _op = Operator::start(&ns.name, &["--host-mode-namespaces", &ns.name]);
    let commands: Api<Command> = ns.api();
    apply(
        &commands,
        manifest::<Command>(
            "install-agent",
            json!({"content": format!("AGENT_PREFIX={} exec sh \"$NODEOPS_PAYLOAD/install.sh\"", host.prefix.display())}),
        ),
    )
    .await;
    let agent = Agent::create(
        &ns,
        json!({"mode": "HostInstaller", "image": images["SAMPLE_AGENT_IMAGE"],
               "basicVersion": "1.0.0", "advanceVersion": "1.1.0", "readyTimeoutSeconds": 60,
               "installer": {"image": images["SAMPLE_AGENT_INSTALLER_IMAGE"], "commandRef": "install-agent"}}),
    )
    .await;

    // Install: the payload's install.sh ran on the host and started the service, which
    // outlives the installer's pod (its Job is deleted once recorded).
    let install = invoke(
        &ns,
        "install",
        json!({"invocationType": "Install", "invocationTarget": agent.name, "nodeNames": [real]}),
    )
    .await;
    let r = results(&install);
    assert!(ok(&r[&real]), "{r:#?}");
    jobs_gone(&ns, &install).await;
    host.expect("1.0.0", &["1.0.0"], "1.0.0");
    let first = host.service_pid();
    assert_eq!(agent.versions().await[&real], "1.0.0");

    // Update to the advance version: a new service process, the old files kept.
    let update = invoke(
        &ns,
        "update",
        json!({"invocationType": "Update", "invocationTarget": agent.name,
               "nodeNames": [real], "versionType": "AdvanceVersion"}),
    )
    .await;
    let u = results(&update);
    assert!(ok(&u[&real]), "{u:#?}");
    jobs_gone(&ns, &update).await;
    host.expect("1.1.0", &["1.0.0", "1.1.0"], "1.1.0");
    assert_ne!(host.service_pid(), first, "the service was restarted");
    assert_eq!(agent.versions().await[&real], "1.1.0");

    // Rollback by invocation id: 1.0.0 runs again and 1.1.0's files are removed.
    let rollback = invoke(
        &ns,
        "rollback",
        json!({"invocationType": "Rollback", "invocationTarget": agent.name,
               "invocationIds": [u[&real].invocation_id]}),
    )
    .await;
    let rb = results(&rollback);
    assert!(rb.values().all(ok), "{rb:#?}");
    jobs_gone(&ns, &rollback).await;
    host.expect("1.0.0", &["1.0.0"], "1.0.0");
    assert_eq!(agent.versions().await[&real], "1.0.0");

    // A version that never starts: the installer undoes it and fails; the node keeps 1.0.0.
    let broken = invoke(
        &ns,
        "broken",
        json!({"invocationType": "Update", "invocationTarget": agent.name,
               "nodeNames": [real], "version": "9.0.0"}),
    )
    .await;
    let b = &results(&broken)[&real];
    assert_eq!(b.reason.as_deref(), Some("InstallerFailed"), "{b:#?}");
    jobs_gone(&ns, &broken).await;
    assert!(
        b.error_message
            .as_deref()
            .is_some_and(|m| m.contains("update to 9.0.0 failed; versions/1.0.0 runs again")),
        "the installer's own words reach the status: {b:#?}"
    );
    host.expect("1.0.0", &["1.0.0"], "1.0.0");
    assert_eq!(agent.versions().await[&real], "1.0.0");

    // Retry runs the installer again, which fails the same way and leaves 1.0.0 running.
    let retry = invoke(
        &ns,
        "retry",
        json!({"invocationType": "Retry", "invocationTarget": agent.name,
               "invocationIds": [b.invocation_id]}),
    )
    .await;
    let rt = results(&retry);
    assert_eq!(rt.len(), 1);
    assert!(
        rt.values()
            .all(|e| e.reason.as_deref() == Some("InstallerFailed")),
        "{rt:#?}"
    );
    jobs_gone(&ns, &retry).await;
    host.expect("1.0.0", &["1.0.0"], "1.0.0");
}
