//! Node agents end to end on the local control plane: a NodeAgent in DaemonSet mode (one
//! DaemonSet per live version, the real DaemonSet controller and scheduler placing pods on
//! kwok nodes, which kwok makes Ready) and in HostInstaller mode (installer Jobs through
//! the per-node engine), driven by AgentInvocations: install, update, rollback by
//! invocation id, retry, per-node preconditions, the remote install host and remote
//! installs with a Secret that never leaks.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Node, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use nodeops::api::agent_invocation::{AgentInvocation, AgentInvocationPhase, RetStatus};
use nodeops::api::node_agent::NodeAgent;
use serde_json::json;
use support::agents::{Agent, invoke, ok, results};
use support::{Operator, TestNamespace, apply, install_crds, wait_for};

const FINISH: Duration = Duration::from_secs(120);

fn node_names(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("node-{i:04}")).collect()
}

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
            "podAnnotations": {"sim.nodeops.io/unready-node-0020": "true"},
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
    let gone = async {
        while agent
            .api()
            .get_opt(&agent.name)
            .await
            .expect("get")
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(FINISH, gone)
        .await
        .expect("the NodeAgent is gone once its labels are");
    assert!(agent.versions().await.is_empty(), "no node keeps the label");
    drop(op);
    let _ = nodes.delete(&sick, &DeleteParams::default()).await;
}

#[tokio::test]
async fn host_installer_runs_installer_jobs_with_scripted_failures() {
    let ns = TestNamespace::new("agent-host").await;
    install_crds(&ns.client).await;
    let op = Operator::start(&ns.name, &["--host-mode-namespaces", &ns.name]);
    let commands: Api<nodeops::api::Command> = ns.api();
    apply(
        &commands,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Command", "metadata": {"name": "install-agent"},
               "spec": {"content": "/opt/agent/install.sh \"$NODEOPS_PARAM_action\" \"$NODEOPS_PARAM_version\""}}),
    )
    .await;
    let agent = Agent::create(
        &ns,
        json!({
            "mode": "HostInstaller",
            "image": "registry.example.com/telescope",
            "basicVersion": "1.0.0",
            "installer": {"image": "registry.example.com/telescope-installer:1", "commandRef": "install-agent"},
            "podAnnotations": {"sim.nodeops.io/exit-code-node-0033": "3"},
        }),
    )
    .await;
    let install = invoke(
        &ns,
        "install",
        json!({"invocationType": "Install", "invocationTarget": agent.name, "nodeNames": node_names(31..=35)}),
    )
    .await;
    let r = results(&install);
    for n in ["node-0031", "node-0032", "node-0034", "node-0035"] {
        assert!(ok(&r[n]), "{n}: {:?}", r[n]);
        assert!(r[n].job_name.is_some());
    }
    let e = &r["node-0033"];
    assert_eq!(
        (e.reason.as_deref(), e.error_code.as_deref()),
        (Some("InstallerFailed"), Some("invocationmgr.0102")),
        "{e:?}"
    );
    assert!(
        e.error_message
            .as_deref()
            .is_some_and(|m| m.contains("exited 3")),
        "{e:?}"
    );
    let expected: BTreeMap<String, String> = ["node-0031", "node-0032", "node-0034", "node-0035"]
        .iter()
        .map(|n| (n.to_string(), "1.0.0".to_string()))
        .collect();
    assert_eq!(
        agent.versions().await,
        expected,
        "only successful installs are labelled"
    );

    // kwok "ran" the installer Jobs (their outcomes are scripted by annotation; the real
    // installer runs in tests/real_node_agent.rs), and they are gone once recorded.
    let jobs: Api<Job> = ns.api();
    let uid = install.uid().expect("uid");
    let selector = format!("nodeops.io/owner-uid={uid}");
    for _ in 0..50 {
        if jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("jobs")
            .items
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        jobs.list(&ListParams::default().labels(&selector))
            .await
            .expect("jobs")
            .items
            .is_empty(),
        "installer Jobs are deleted after their result is recorded"
    );

    // Update: the installer gets the action and both versions. Its Job is deleted once
    // recorded, so a watch keeps every Job as it was created.
    let created = Arc::new(Mutex::new(Vec::<Job>::new()));
    let recorder = {
        let created = created.clone();
        let stream = kube::runtime::watcher(jobs.clone(), Default::default()).applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(job)) = stream.next().await {
                created.lock().expect("lock").push(job);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let update = invoke(
        &ns,
        "update",
        json!({"invocationType": "Update", "invocationTarget": agent.name, "nodeNames": ["node-0031", "node-0033"], "version": "1.1.0"}),
    )
    .await;
    let r = results(&update);
    assert!(ok(&r["node-0031"]));
    assert_eq!(r["node-0033"].reason.as_deref(), Some("AgentNotInstalled"));
    recorder.abort();
    let update_uid = update.uid().expect("uid");
    let env: BTreeMap<String, String> = created
        .lock()
        .expect("lock")
        .iter()
        .filter(|j| j.labels().get("nodeops.io/owner-uid") == Some(&update_uid))
        .flat_map(|j| {
            j.spec
                .iter()
                .flat_map(|s| s.template.spec.iter())
                .flat_map(|p| p.containers.iter())
                .flat_map(|c| c.env.iter().flatten())
                .filter(|e| e.name.starts_with("NODEOPS_PARAM_"))
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        env,
        BTreeMap::from([
            ("NODEOPS_PARAM_action".to_string(), "update".to_string()),
            (
                "NODEOPS_PARAM_previousVersion".to_string(),
                "1.0.0".to_string()
            ),
            ("NODEOPS_PARAM_version".to_string(), "1.1.0".to_string()),
        ]),
        "one installer Job, for node-0031 (node-0033 has no agent to update)"
    );
    drop(op);

    // Without Host mode in the agent's namespace, nothing runs.
    let op = Operator::start(&ns.name, &[]);
    let refused = invoke(
        &ns,
        "no-host-mode",
        json!({"invocationType": "Update", "invocationTarget": agent.name, "nodeNames": ["node-0032"], "version": "1.2.0"}),
    )
    .await;
    assert_eq!(
        results(&refused)["node-0032"].reason.as_deref(),
        Some("HostModeNotAllowed")
    );
    drop(op);
}

#[tokio::test]
async fn remote_install_from_the_remote_install_host_keeps_the_secret_secret() {
    let ns = TestNamespace::new("agent-remote").await;
    install_crds(&ns.client).await;
    let op = Operator::start(&ns.name, &[]);
    let password = "correct-horse-battery-staple-4711";
    let secrets: Api<Secret> = ns.api();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "legacy-creds"}, "stringData": {"password": password}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret");
    let commands: Api<nodeops::api::Command> = ns.api();
    apply(
        &commands,
        json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "Command", "metadata": {"name": "remote-install"},
               "spec": {"content": "curl -fsS https://repo.example.com/telescope-{{version}}.sh | sh", "enableParameters": true}}),
    )
    .await;
    let agent = Agent::create(
        &ns,
        json!({
            "mode": "DaemonSet",
            "image": "registry.example.com/telescope",
            "basicVersion": "3.2.1",
            "remoteInstaller": {"commandRef": "remote-install"},
        }),
    )
    .await;
    let hosts = json!([
        {"instanceName": "legacy-db-01", "remoteIp": "192.0.2.10", "userName": "root", "credentialsSecretRef": {"name": "legacy-creds"}},
    ]);
    let early = invoke(
        &ns,
        "too-early",
        json!({"invocationType": "RemoteInstall", "invocationTarget": agent.name, "remoteInstallMeta": hosts}),
    )
    .await;
    assert_eq!(
        results(&early)["legacy-db-01"].reason.as_deref(),
        Some("RemoteInstallHostNotSet")
    );

    let set = invoke(
        &ns,
        "set-host",
        json!({"invocationType": "SetRemoteInstallHost", "invocationTarget": agent.name, "nodeNames": ["node-0050"]}),
    )
    .await;
    assert!(ok(&results(&set)["node-0050"]));
    let a = agent.api().get(&agent.name).await.expect("agent");
    assert_eq!(a.spec.remote_install_host.as_deref(), Some("node-0050"));

    let install = invoke(
        &ns,
        "remote",
        json!({"invocationType": "RemoteInstall", "invocationTarget": agent.name, "remoteInstallMeta": hosts}),
    )
    .await;
    let e = &results(&install)["legacy-db-01"];
    assert!(ok(e), "{e:?}");
    assert_eq!(e.remote_ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(e.version_after.as_deref(), Some("3.2.1"));

    // The Secret's value is in no status, Event or log line.
    let invocations: Api<AgentInvocation> = ns.api();
    let all = serde_json::to_string(
        &invocations
            .list(&ListParams::default())
            .await
            .expect("list")
            .items,
    )
    .expect("json");
    let events: Api<Event> = ns.api();
    let events = serde_json::to_string(
        &events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items,
    )
    .expect("json");
    let agent_json =
        serde_json::to_string(&agent.api().get(&agent.name).await.expect("agent")).expect("json");
    let log = op.log();
    for (what, text) in [
        ("statuses", &all),
        ("events", &events),
        ("NodeAgent", &agent_json),
        ("operator log", &log),
    ] {
        assert!(
            !text.contains(password),
            "the password leaked into the {what}"
        );
    }
    assert!(log.contains("caches ready"), "the log is the operator's");
    drop(op);
}
