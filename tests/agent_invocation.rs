//! AgentInvocation end to end on the local control plane: a NodeAgent in HostInstaller
//! mode installed and updated through installer Jobs (the per-node engine, outcomes scripted
//! per node), refused without Host mode in its namespace; the remote install host set by a
//! SetRemoteInstallHost invocation, and a RemoteInstall with a Secret that never leaks into
//! a status, an Event or the operator's log. DaemonSet mode, driven by the same
//! invocations, is in tests/node_agent.rs.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use nodeops::api::Command;
use nodeops::api::agent_invocation::AgentInvocation;
use nodeops::keys::{OWNER_UID_LABEL, sim};
use serde_json::json;
use support::agents::{Agent, invoke, ok, results};
use support::{Operator, TestNamespace, apply, install_crds, manifest, node_names};

#[tokio::test]
async fn host_installer_runs_installer_jobs_with_scripted_failures() {
    let ns = TestNamespace::new("agent-host").await;
    install_crds(&ns.client).await;
    let op = Operator::start(&ns.name, &["--host-mode-namespaces", &ns.name]);
    let commands: Api<Command> = ns.api();
    apply(
        &commands,
        manifest::<Command>(
            "install-agent",
            json!({"content": "/opt/agent/install.sh \"$NODEOPS_PARAM_action\" \"$NODEOPS_PARAM_version\""}),
        ),
    )
    .await;
    let agent = Agent::create(
        &ns,
        json!({
            "mode": "HostInstaller",
            "image": "registry.example.com/telescope",
            "basicVersion": "1.0.0",
            "installer": {"image": "registry.example.com/telescope-installer:1", "commandRef": "install-agent"},
            "podAnnotations": {format!("{}node-0033", sim::EXIT_CODE_NODE_PREFIX): "3"},
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
    let selector = format!("{OWNER_UID_LABEL}={uid}");
    // Installer Jobs are deleted after their result is recorded.
    support::wait_until_none(&jobs, &selector, Duration::from_secs(10)).await;

    // Update: the installer gets the action and both versions. Its Job is deleted once
    // recorded, so a watch keeps every Job as it was created: a watch from the
    // resourceVersion of a list made now, so it sees every Job created after this point
    // however late it connects. A watch that breaks fails the test.
    let created = Arc::new(Mutex::new(Vec::<Job>::new()));
    let from = jobs
        .list_metadata(&ListParams::default().limit(1))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("resourceVersion");
    let recorder = {
        let created = created.clone();
        let jobs = jobs.clone();
        tokio::spawn(async move {
            let stream = jobs
                .watch(&kube::api::WatchParams::default(), &from)
                .await
                .map_err(|e| format!("watching Jobs: {e}"))?;
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event.map_err(|e| format!("the watch of Jobs broke: {e}"))? {
                    kube::api::WatchEvent::Added(job) => created.lock().expect("lock").push(job),
                    kube::api::WatchEvent::Error(e) => return Err(format!("watch error: {e:?}")),
                    _ => {}
                }
            }
            Err::<(), String>("the watch of Jobs ended".into())
        })
    };
    let update = invoke(
        &ns,
        "update",
        json!({"invocationType": "Update", "invocationTarget": agent.name, "nodeNames": ["node-0031", "node-0033"], "version": "1.1.0"}),
    )
    .await;
    let r = results(&update);
    assert!(ok(&r["node-0031"]));
    assert_eq!(r["node-0033"].reason.as_deref(), Some("AgentNotInstalled"));
    assert!(
        !recorder.is_finished(),
        "the Job watch stopped: {:?}",
        recorder.await
    );
    recorder.abort();
    let update_uid = update.uid().expect("uid");
    let env: BTreeMap<String, String> = created
        .lock()
        .expect("lock")
        .iter()
        .filter(|j| j.labels().get(OWNER_UID_LABEL) == Some(&update_uid))
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
    let (ns, op) = TestNamespace::with_operator("agent-remote").await;
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
    let commands: Api<Command> = ns.api();
    apply(
        &commands,
        manifest::<Command>(
            "remote-install",
            json!({"content": "curl -fsS https://repo.example.com/telescope-{{version}}.sh | sh", "enableParameters": true}),
        ),
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
