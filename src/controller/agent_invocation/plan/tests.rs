use super::*;
use crate::api::agent_invocation::InvocationPhase as P;
use crate::api::agent_invocation::{InstanceAction, RetStatus};
use crate::conditions;
use crate::conditions::STALLED;
use crate::controller::agent_invocation::codes::ErrorCode;
use crate::engine::outcome::RunState;
use crate::engine::outcome::{Observed, reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

fn now() -> Timestamp {
    "2026-11-26T01:00:00Z".parse().expect("ts")
}

fn agent(mode: &str) -> NodeAgentSpec {
    serde_json::from_value(json!({
        "namespace": "nodeops-agents",
        "mode": mode,
        "image": "example/telescope",
        "basicVersion": "3.2.1",
        "advanceVersion": "3.3.0",
        "readyTimeoutSeconds": 60,
    }))
    .expect("agent")
}

fn invocation(spec: serde_json::Value) -> AgentInvocation {
    serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1",
        "kind": "AgentInvocation",
        "metadata": {"name": "inv", "namespace": "ops", "uid": "inv-uid", "generation": 1},
        "spec": spec,
    }))
    .expect("invocation")
}

fn world(mode: &str) -> World {
    let node = |ready: bool, v: Option<&str>| NodeFacts {
        ready,
        version: v.map(String::from),
    };
    World {
        now: now(),
        agent: agent(mode),
        nodes: BTreeMap::from([
            ("n1".to_string(), node(true, None)),
            ("n2".to_string(), node(true, Some("3.2.1"))),
            ("n3".to_string(), node(false, None)),
            ("n4".to_string(), node(true, Some("3.0.0"))),
        ]),
        ready_pods: BTreeSet::new(),
        ready_soon: BTreeMap::new(),
        runs: BTreeMap::new(),
        sources: BTreeMap::new(),
        host_mode_allowed: true,
        installer: Installer::Usable,
        remote_installer: None,
        busy: BTreeMap::new(),
    }
}

fn by_instance(status: &AgentInvocationStatus) -> BTreeMap<String, InvocationResult> {
    status
        .invocations
        .iter()
        .map(|e| (e.instance_id.clone(), e.clone()))
        .collect()
}

/// Plans again from the previous plan's status, as the next reconcile would.
fn again(obj: &AgentInvocation, status: &AgentInvocationStatus, w: &World) -> Plan {
    let mut next = obj.clone();
    next.status = Some(status.clone());
    plan(&next, w)
}

#[test]
fn install_preconditions_are_per_node() {
    let obj = invocation(
        json!({"invocationType": "Install", "nodeNames": ["n1", "n2", "n3", "n4", "gone"]}),
    );
    let p = plan(&obj, &world("DaemonSet"));
    let e = by_instance(&p.status);
    assert_eq!(e["n1"].phase, P::Running);
    assert_eq!(e["n1"].version_before, None);
    assert_eq!(e["n1"].target_version.as_deref(), Some("3.2.1"));
    assert_eq!(
        (
            e["n2"].phase,
            e["n2"].ret_status,
            e["n2"].message.as_deref()
        ),
        (
            P::Succeeded,
            Some(RetStatus::Successful),
            Some("already at version 3.2.1")
        ),
        "already at the version: a no-op success"
    );
    assert_eq!(e["n3"].error_code.as_deref(), Some("invocationmgr.0002"));
    assert_eq!(e["n3"].reason.as_deref(), Some("NodeNotReady"));
    assert_eq!(e["n4"].reason.as_deref(), Some("AgentAlreadyInstalled"));
    assert_eq!(e["gone"].error_code.as_deref(), Some("invocationmgr.0001"));
    assert!(
        p.effects.is_empty(),
        "nothing changes before Running is recorded"
    );
    assert_eq!(p.status.phase, AgentInvocationPhase::Running);
    assert_eq!(p.status.progress.as_deref(), Some("1/5"));
    assert_eq!(p.requeue, Some(Duration::from_millis(100)));
    let ids: BTreeSet<_> = p
        .status
        .invocations
        .iter()
        .map(|e| e.invocation_id.clone())
        .collect();
    assert_eq!(ids.len(), 5, "one distinct id per instance");
    assert_eq!(p.notes[0].reason, "Started");
}

#[test]
fn update_needs_the_agent_and_resolves_the_version_type() {
    let obj = invocation(
        json!({"invocationType": "Update", "nodeNames": ["n1", "n2", "n4"], "versionType": "AdvanceVersion"}),
    );
    let p = plan(&obj, &world("DaemonSet"));
    let e = by_instance(&p.status);
    assert_eq!(e["n1"].reason.as_deref(), Some("AgentNotInstalled"));
    assert_eq!(e["n1"].error_code.as_deref(), Some("invocationmgr.0003"));
    assert_eq!(
        (e["n2"].phase, e["n2"].version_before.as_deref()),
        (P::Running, Some("3.2.1"))
    );
    assert_eq!(e["n4"].target_version.as_deref(), Some("3.3.0"));
}

#[test]
fn daemonset_mode_labels_then_waits_for_the_pod() {
    let obj =
        invocation(json!({"invocationType": "Update", "nodeNames": ["n2"], "version": "3.4.0"}));
    let mut w = world("DaemonSet");
    let p1 = plan(&obj, &w);
    assert!(p1.effects.is_empty());
    let p2 = again(&obj, &p1.status, &w);
    assert_eq!(
        p2.effects,
        [Effect::SetLabel {
            node: "n2".into(),
            version: Some("3.4.0".into())
        }]
    );
    assert_eq!(p2.status.invocations[0].phase, P::Running);
    // The label is set; the pod is not Ready yet: wait, no effect.
    w.nodes.get_mut("n2").expect("n2").version = Some("3.4.0".into());
    let p3 = again(&obj, &p2.status, &w);
    assert!(p3.effects.is_empty());
    assert_eq!(p3.requeue, Some(POLL));
    w.ready_pods.insert(("n2".into(), "3.4.0".into()));
    let p4 = again(&obj, &p3.status, &w);
    let e = &p4.status.invocations[0];
    assert_eq!(
        (
            e.phase,
            e.version_before.as_deref(),
            e.version_after.as_deref()
        ),
        (P::Succeeded, Some("3.2.1"), Some("3.4.0"))
    );
    assert_eq!(p4.status.phase, AgentInvocationPhase::Succeeded);
    assert!(p4.status.completion_time.is_some());
    assert_eq!(p4.notes.last().expect("note").reason, "Succeeded");
    assert_eq!(p4.requeue, None);
}

#[test]
fn a_running_invocation_looks_again_when_time_alone_can_move_it() {
    let obj =
        invocation(json!({"invocationType": "Update", "nodeNames": ["n2"], "version": "3.4.0"}));
    let mut w = world("DaemonSet");
    let p1 = plan(&obj, &w);
    let p2 = again(&obj, &p1.status, &w);
    w.nodes.get_mut("n2").expect("n2").version = Some("3.4.0".into());
    // Nothing due: the safety net.
    let p3 = again(&obj, &p2.status, &w);
    assert_eq!(p3.requeue, Some(POLL));
    // The pod turned Ready a moment ago: look again when it has been Ready long enough.
    let at = now() + jiff::SignedDuration::from_millis(2500);
    w.ready_soon.insert(("n2".into(), "3.4.0".into()), at);
    let p4 = again(&obj, &p3.status, &w);
    assert_eq!(p4.requeue, Some(Duration::from_millis(2500)));
    // The ready timeout (60 s after the start) comes first: look again then.
    w.ready_soon.clear();
    w.now = now() + jiff::SignedDuration::from_secs(55);
    let p5 = again(&obj, &p4.status, &w);
    assert_eq!(p5.requeue, Some(Duration::from_secs(5)));
    // Past it: the step fails the instance now (and puts the label back).
    w.now = now() + jiff::SignedDuration::from_secs(60);
    let p6 = again(&obj, &p5.status, &w);
    assert_eq!(p6.status.invocations[0].phase, P::Failed);
}

#[test]
fn daemonset_timeout_restores_the_previous_label() {
    let obj = invocation(json!({"invocationType": "Install", "nodeNames": ["n1"]}));
    let mut w = world("DaemonSet");
    let p1 = plan(&obj, &w);
    w.nodes.get_mut("n1").expect("n1").version = Some("3.2.1".into());
    w.now = now() + jiff::SignedDuration::from_secs(61);
    let p2 = again(&obj, &p1.status, &w);
    assert_eq!(
        p2.effects,
        [Effect::SetLabel {
            node: "n1".into(),
            version: None
        }]
    );
    let e = &p2.status.invocations[0];
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (P::Failed, Some("AgentNotReady"))
    );
    assert_eq!(e.error_code.as_deref(), Some("invocationmgr.0101"));
    assert!(e.error_message.as_deref().expect("message").len() <= MESSAGE_LIMIT);
    assert_eq!(p2.status.phase, AgentInvocationPhase::Failed);
    assert!(p2.notes.iter().any(|n| n.warning && n.reason == "Failed"));
    let stalled = p2.status.conditions.iter().find(|c| c.type_ == STALLED);
    assert_eq!(
        stalled.map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "InstancesFailed")),
        "a failure is terminal for kstatus"
    );
}

#[test]
fn host_installer_runs_a_job_then_labels_the_node() {
    let obj = invocation(json!({"invocationType": "Install", "nodeNames": ["n1"]}));
    let mut w = world("HostInstaller");
    let p1 = plan(&obj, &w);
    let p2 = again(&obj, &p1.status, &w);
    let id = p2.status.invocations[0].invocation_id.clone();
    assert_eq!(
        p2.effects,
        [Effect::CreateJob {
            invocation_id: id.clone()
        }]
    );
    let job = p2.status.invocations[0]
        .job_name
        .clone()
        .expect("job name recorded");
    assert!(job.starts_with("inv-"));
    let mut run = Observed {
        state: RunState::Active { pods: 1 },
        exit_code: None,
        output: None,
        truncated: false,
        output_head: None,
        dropped_bytes: 0,
        reason: None,
        message: None,
        start_time: None,
        completion_time: None,
        job_active: true,
        note: None,
    };
    w.runs.insert(id.clone(), run.clone());
    let p3 = again(&obj, &p2.status, &w);
    assert!(p3.effects.is_empty(), "a running Job is left alone");
    run.state = RunState::Succeeded;
    run.exit_code = Some(0);
    w.runs.insert(id.clone(), run.clone());
    let p4 = again(&obj, &p3.status, &w);
    assert_eq!(
        p4.effects,
        [Effect::SetLabel {
            node: "n1".into(),
            version: Some("3.2.1".into())
        }]
    );
    assert_eq!(p4.status.invocations[0].phase, P::Succeeded);
}

#[test]
fn host_installer_failures_and_lost_jobs() {
    let obj = invocation(json!({"invocationType": "Install", "nodeNames": ["n1"]}));
    let mut w = world("HostInstaller");
    let p2 = again(&obj, &plan(&obj, &w).status, &w);
    let id = p2.status.invocations[0].invocation_id.clone();
    let failed = Observed {
        state: RunState::Failed,
        exit_code: Some(3),
        output: Some("disk full\n".into()),
        truncated: false,
        output_head: None,
        dropped_bytes: 0,
        reason: Some("ExitCode".into()),
        message: None,
        start_time: None,
        completion_time: None,
        job_active: false,
        note: None,
    };
    w.runs.insert(id.clone(), failed);
    let p3 = again(&obj, &p2.status, &w);
    let e = &p3.status.invocations[0];
    assert_eq!(
        (e.reason.as_deref(), e.error_message.as_deref()),
        (
            Some("InstallerFailed"),
            Some("installer exited 3: disk full")
        )
    );
    assert!(p3.effects.is_empty(), "a failed installer changes no label");

    // The Job vanished after it was recorded as created: never run it again.
    w.runs.clear();
    let p3 = again(&obj, &p2.status, &w);
    assert_eq!(p3.status.invocations[0].reason.as_deref(), Some("JobLost"));
    assert!(p3.effects.is_empty());
}

#[test]
fn host_installer_preconditions() {
    let obj = invocation(json!({"invocationType": "Install", "nodeNames": ["n1"]}));
    let mut w = world("HostInstaller");
    w.host_mode_allowed = false;
    assert_eq!(
        plan(&obj, &w).status.invocations[0].reason.as_deref(),
        Some("HostModeNotAllowed")
    );
    w.host_mode_allowed = true;
    w.installer = Installer::Unusable("Command install-telescope does not exist".into());
    let e = plan(&obj, &w).status.invocations[0].clone();
    assert_eq!(
        (e.reason.as_deref(), e.error_code.as_deref()),
        (Some("InstallerNotFound"), Some("invocationmgr.0012"))
    );
}

fn source(
    id: &str,
    node: &str,
    action: InstanceAction,
    phase: P,
    before: Option<&str>,
    target: &str,
) -> (String, Source) {
    (
        id.to_string(),
        Source {
            agent: "telescope".into(),
            result: InvocationResult {
                instance_id: node.into(),
                invocation_id: id.into(),
                action: Some(action),
                phase,
                version_before: before.map(String::from),
                target_version: Some(target.into()),
                ..Default::default()
            },
            remote: None,
        },
    )
}

#[test]
fn rollback_targets_the_version_before_each_source() {
    let obj = invocation(
        json!({"invocationType": "Rollback", "invocationIds": ["a", "b", "c", "d", "e"], "invocationTarget": "telescope"}),
    );
    let mut w = world("DaemonSet");
    w.sources = BTreeMap::from([
        source(
            "a",
            "n2",
            InstanceAction::Update,
            P::Succeeded,
            Some("3.0.0"),
            "3.2.1",
        ),
        source(
            "b",
            "n1",
            InstanceAction::Install,
            P::Succeeded,
            None,
            "3.2.1",
        ),
        source(
            "c",
            "n4",
            InstanceAction::Update,
            P::Running,
            Some("2.0"),
            "3.0.0",
        ),
        source(
            "e",
            "n2",
            InstanceAction::Update,
            P::Succeeded,
            Some("2.9"),
            "3.0.0",
        ),
    ]);
    let p = plan(&obj, &w);
    let by_source: BTreeMap<_, _> = p
        .status
        .invocations
        .iter()
        .map(|e| (e.source_invocation_id.clone().expect("source"), e.clone()))
        .collect();
    let a = &by_source["a"];
    assert_eq!(
        (a.instance_id.as_str(), a.target_version.as_deref(), a.phase),
        ("n2", Some("3.0.0"), P::Running)
    );
    assert_eq!(a.action, Some(InstanceAction::Rollback));
    assert_eq!(by_source["b"].reason.as_deref(), Some("NothingToRollBack"));
    assert_eq!(
        by_source["c"].reason.as_deref(),
        Some("NothingToRollBack"),
        "not finished"
    );
    assert_eq!(by_source["d"].reason.as_deref(), Some("InvocationNotFound"));
    assert_eq!(
        by_source["d"].error_code.as_deref(),
        Some("invocationmgr.0006")
    );
    assert_eq!(
        by_source["e"].reason.as_deref(),
        Some("InvocationConflict"),
        "n2 is taken by a"
    );
}

#[test]
fn rollback_of_another_agent_is_not_found() {
    let obj = invocation(
        json!({"invocationType": "Rollback", "invocationIds": ["a"], "invocationTarget": "other"}),
    );
    let mut w = world("DaemonSet");
    w.sources = BTreeMap::from([source(
        "a",
        "n2",
        InstanceAction::Update,
        P::Succeeded,
        Some("3.0.0"),
        "3.2.1",
    )]);
    assert_eq!(
        plan(&obj, &w).status.invocations[0].reason.as_deref(),
        Some("InvocationNotFound")
    );
}

#[test]
fn retry_repeats_failed_sources_only() {
    let obj = invocation(json!({"invocationType": "Retry", "invocationIds": ["f", "s"]}));
    let mut w = world("DaemonSet");
    w.sources = BTreeMap::from([
        source("f", "n1", InstanceAction::Install, P::Failed, None, "3.2.1"),
        source(
            "s",
            "n2",
            InstanceAction::Install,
            P::Succeeded,
            None,
            "3.2.1",
        ),
    ]);
    let p = plan(&obj, &w);
    let e = by_instance(&p.status);
    assert_eq!(
        (
            e["n1"].action,
            e["n1"].phase,
            e["n1"].target_version.as_deref()
        ),
        (Some(InstanceAction::Install), P::Running, Some("3.2.1"))
    );
    assert_eq!(e["n2"].reason.as_deref(), Some("NothingToRetry"));
    assert_eq!(e["n2"].error_code.as_deref(), Some("invocationmgr.0007"));
}

#[test]
fn set_remote_install_host() {
    let obj = invocation(json!({"invocationType": "SetRemoteInstallHost", "nodeNames": ["n1"]}));
    let mut w = world("DaemonSet");
    let p1 = plan(&obj, &w);
    assert!(p1.effects.is_empty());
    let p2 = again(&obj, &p1.status, &w);
    assert_eq!(
        p2.effects,
        [Effect::SetRemoteInstallHost { node: "n1".into() }]
    );
    assert_eq!(p2.status.phase, AgentInvocationPhase::Succeeded);
    w.agent.remote_install_host = Some("n1".into());
    let p = plan(&obj, &w);
    assert_eq!(
        p.status.invocations[0].phase,
        P::Succeeded,
        "already the host: no-op"
    );
    let not_ready =
        invocation(json!({"invocationType": "SetRemoteInstallHost", "nodeNames": ["n3"]}));
    assert_eq!(
        plan(&not_ready, &w).status.invocations[0].reason.as_deref(),
        Some("NodeNotReady")
    );
}

#[test]
fn remote_install_preconditions_and_outcomes() {
    let spec = json!({"invocationType": "RemoteInstall", "remoteInstallMeta": [
        {"remoteIp": "10.0.0.5", "userName": "root", "credentialsSecretRef": {"name": "s"}},
        {"remoteIp": "10.0.0.6", "instanceName": "db-1", "userName": "root", "credentialsSecretRef": {"name": "s"}},
    ]});
    let obj = invocation(spec);
    let mut w = world("DaemonSet");
    let p = plan(&obj, &w);
    assert!(
        p.status
            .invocations
            .iter()
            .all(|e| e.reason.as_deref() == Some("RemoteInstallHostNotSet"))
    );
    assert_eq!(p.status.invocations[1].instance_id, "db-1");
    assert_eq!(
        p.status.invocations[1].remote_ip.as_deref(),
        Some("10.0.0.6")
    );
    w.agent.remote_install_host = Some("n1".into());
    assert!(
        plan(&obj, &w)
            .status
            .invocations
            .iter()
            .all(|e| e.reason.as_deref() == Some("RemoteInstallerNotConfigured"))
    );
    w.agent.remote_install_host = Some("n3".into());
    w.remote_installer = Some(Installer::Usable);
    assert!(
        plan(&obj, &w)
            .status
            .invocations
            .iter()
            .all(|e| e.reason.as_deref() == Some("NodeNotReady"))
    );
    w.agent.remote_install_host = Some("n1".into());
    let p1 = plan(&obj, &w);
    assert!(p1.status.invocations.iter().all(|e| e.phase == P::Running));
    let p2 = again(&obj, &p1.status, &w);
    assert_eq!(p2.effects.len(), 2, "one Job per host");
    let ids: Vec<_> = p2
        .status
        .invocations
        .iter()
        .map(|e| e.invocation_id.clone())
        .collect();
    let done = |code: i32| Observed {
        state: if code == 0 {
            RunState::Succeeded
        } else {
            RunState::Failed
        },
        exit_code: Some(code),
        output: None,
        truncated: false,
        output_head: None,
        dropped_bytes: 0,
        reason: None,
        message: Some("permission denied".into()),
        start_time: None,
        completion_time: None,
        job_active: false,
        note: None,
    };
    w.runs.insert(ids[0].clone(), done(0));
    w.runs.insert(ids[1].clone(), done(255));
    let p3 = again(&obj, &p2.status, &w);
    let e = by_instance(&p3.status);
    assert_eq!(e["10.0.0.5"].phase, P::Succeeded);
    assert_eq!(e["db-1"].reason.as_deref(), Some("SshFailed"));
    assert_eq!(e["db-1"].error_code.as_deref(), Some("invocationmgr.0104"));
}

#[test]
fn job_failures_map_to_codes() {
    let o = |exit: Option<i32>, reason: Option<&str>| Observed {
        state: RunState::Failed,
        exit_code: exit,
        output: None,
        truncated: false,
        output_head: None,
        dropped_bytes: 0,
        reason: reason.map(String::from),
        message: None,
        start_time: None,
        completion_time: None,
        job_active: false,
        note: None,
    };
    assert_eq!(
        job_failure(&o(Some(124), None), false).0,
        ErrorCode::InstallerTimeout
    );
    assert_eq!(
        job_failure(&o(None, Some("Timeout")), true).0,
        ErrorCode::InstallerTimeout
    );
    assert_eq!(
        job_failure(&o(Some(255), None), true).0,
        ErrorCode::SshFailed
    );
    assert_eq!(
        job_failure(&o(Some(255), None), false).0,
        ErrorCode::InstallerFailed
    );
    // The runner reports an SSH failure as its own error (StartFailed) with exit 255:
    // SshFailed, not a lost Job; a refused host key by its reason.
    assert_eq!(
        job_failure(&o(Some(255), Some(reason::START_FAILED)), true).0,
        ErrorCode::SshFailed
    );
    assert_eq!(
        job_failure(&o(Some(255), Some(reason::HOST_KEY_UNKNOWN)), true).0,
        ErrorCode::HostKeyUnknown
    );
    assert_eq!(
        job_failure(&o(Some(255), Some(reason::HOST_KEY_MISMATCH)), true).0,
        ErrorCode::HostKeyMismatch
    );
    assert_eq!(
        job_failure(&o(Some(2), None), true).0,
        ErrorCode::RemoteScriptFailed
    );
    assert_eq!(
        job_failure(&o(None, Some("JobLost")), false).0,
        ErrorCode::JobLost
    );
    // What the kubelet said wins over exit codes.
    assert_eq!(
        job_failure(&o(None, Some(reason::IMAGE_NOT_AVAILABLE)), false).0,
        ErrorCode::ImageNotAvailable
    );
    assert_eq!(
        job_failure(&o(None, Some(reason::NODE_REJECTED)), true).0,
        ErrorCode::NodeRejected
    );
    assert_eq!(
        job_failure(&o(Some(128), Some(reason::START_FAILED)), false).0,
        ErrorCode::JobLost
    );
    // The runner's own start error (unknown user) is the installer's failure.
    assert_eq!(
        job_failure(&o(Some(127), Some(reason::START_FAILED)), false).0,
        ErrorCode::InstallerFailed
    );
    // A failed script is described by its last line, else by the runner's message.
    let mut said = o(Some(1), None);
    said.output = Some("installing 9.0.0\nupdate to 9.0.0 failed; 1.0.0 runs again\n\n".into());
    said.message = Some("the command exited with code 1".into());
    assert_eq!(
        job_failure(&said, false).1,
        "installer exited 1: update to 9.0.0 failed; 1.0.0 runs again"
    );
    said.output = None;
    assert_eq!(
        job_failure(&said, true).1,
        "remote script exited 1: the command exited with code 1"
    );
}

#[test]
fn an_installer_image_that_cannot_be_pulled_fails_the_instance() {
    let obj = invocation(json!({"invocationType": "Install", "nodeNames": ["n1"]}));
    let mut w = world("HostInstaller");
    let p2 = again(&obj, &plan(&obj, &w).status, &w);
    let id = p2.status.invocations[0].invocation_id.clone();
    // As `observe` reads an active Job whose Pod waits in ImagePullBackOff.
    let failed = Observed {
        state: RunState::Failed,
        exit_code: None,
        output: None,
        truncated: false,
        output_head: None,
        dropped_bytes: 0,
        reason: Some(reason::IMAGE_NOT_AVAILABLE.into()),
        message: Some(
            "image \"registry.example/installer:9\" of container run is not available (ImagePullBackOff): Back-off pulling image".into(),
        ),
        start_time: None,
        completion_time: None,
        job_active: true,
        note: None,
    };
    w.runs.insert(id, failed);
    let p3 = again(&obj, &p2.status, &w);
    let e = &p3.status.invocations[0];
    assert_eq!(
        (e.phase, e.reason.as_deref(), e.error_code.as_deref()),
        (
            P::Failed,
            Some("ImageNotAvailable"),
            Some("invocationmgr.0107")
        )
    );
    assert!(
        e.error_message
            .as_deref()
            .expect("message")
            .contains("registry.example/installer:9")
    );
    assert!(
        p3.effects.is_empty(),
        "no label for an installer that never ran"
    );
}

/// Every (phase, action, mode) combination: final phases never change, effects never come
/// with a Pending entry, and a Running entry only leaves Running with a final phase.
#[test]
fn state_machine_is_exhaustively_well_formed() {
    let phases = [P::Pending, P::Running, P::Succeeded, P::Failed];
    let actions = [
        InstanceAction::Install,
        InstanceAction::Update,
        InstanceAction::Rollback,
        InstanceAction::SetRemoteInstallHost,
        InstanceAction::RemoteInstall,
    ];
    let runs = [
        None,
        Some(RunState::Active { pods: 1 }),
        Some(RunState::Succeeded),
        Some(RunState::Failed),
    ];
    for mode in ["DaemonSet", "HostInstaller"] {
        for phase in phases {
            for action in actions {
                for run in runs.clone() {
                    for job_recorded in [false, true] {
                        for (ready, label) in
                            [(false, None), (true, Some("3.4.0")), (false, Some("3.2.1"))]
                        {
                            let mut w = world(mode);
                            w.agent.remote_install_host = Some("n2".into());
                            w.remote_installer = Some(Installer::Usable);
                            w.nodes.get_mut("n2").expect("n2").version = label.map(String::from);
                            if ready {
                                w.ready_pods.insert(("n2".into(), "3.4.0".into()));
                            }
                            let e = InvocationResult {
                                instance_id: "n2".into(),
                                invocation_id: "id".into(),
                                action: Some(action),
                                target_version: Some("3.4.0".into()),
                                version_before: Some("3.2.1".into()),
                                phase,
                                start_time: Some(Time(now())),
                                job_name: job_recorded.then(|| "job".to_string()),
                                ..Default::default()
                            };
                            if let Some(state) = run.clone() {
                                w.runs.insert(
                                    "id".into(),
                                    Observed {
                                        state,
                                        exit_code: Some(1),
                                        output: None,
                                        truncated: false,
                                        output_head: None,
                                        dropped_bytes: 0,
                                        reason: None,
                                        message: None,
                                        start_time: None,
                                        completion_time: None,
                                        job_active: false,
                                        note: None,
                                    },
                                );
                            }
                            let (next, effects) = step(&e, &w);
                            let ctx = format!(
                                "{mode} {phase:?} {action:?} {run:?} job={job_recorded} label={label:?} ready={ready}"
                            );
                            match phase {
                                P::Succeeded | P::Failed => {
                                    assert_eq!(next, e, "{ctx}");
                                    assert!(effects.is_empty(), "{ctx}");
                                }
                                P::Pending => {
                                    assert!(effects.is_empty(), "{ctx}");
                                    assert_ne!(
                                        next.phase,
                                        P::Pending,
                                        "{ctx}: a Pending entry is decided at once"
                                    );
                                }
                                P::Running => {
                                    if next.phase == P::Running {
                                        assert!(next.ret_status.is_none(), "{ctx}");
                                    } else {
                                        assert!(
                                            next.completion_time.is_some()
                                                && next.ret_status.is_some(),
                                            "{ctx}"
                                        );
                                    }
                                    if next.phase == P::Failed {
                                        assert!(
                                            next.error_code
                                                .as_deref()
                                                .is_some_and(|c| c.starts_with("invocationmgr.0")),
                                            "{ctx}"
                                        );
                                    }
                                }
                            }
                            if next.phase == P::Failed && phase != P::Failed {
                                let code = next.error_code.clone().expect("code");
                                assert!(ErrorCode::ALL.iter().any(|c| c.code() == code), "{ctx}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_node_another_invocation_is_changing_is_refused() {
    let obj = invocation(
        json!({"invocationType": "Update", "nodeNames": ["n2", "n4"], "version": "3.5.0"}),
    );
    let mut w = world("DaemonSet");
    w.busy.insert("n2".into(), "ops/other".into());
    let e = by_instance(&plan(&obj, &w).status);
    assert_eq!(e["n2"].reason.as_deref(), Some("InvocationConflict"));
    assert!(
        e["n2"]
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("ops/other"))
    );
    assert_eq!(e["n4"].phase, P::Running);
}

#[test]
fn a_retried_remote_install_finds_its_host_on_every_reconcile() {
    let host: RemoteInstallHost = serde_json::from_value(json!({
        "remoteIp": "10.0.0.5", "userName": "root", "port": 2222,
        "credentialsSecretRef": {"name": "s"},
    }))
    .expect("host");
    let (id, mut src) = source(
        "r",
        "10.0.0.5",
        InstanceAction::RemoteInstall,
        P::Failed,
        None,
        "3.2.1",
    );
    src.result.remote_ip = Some("10.0.0.5".into());
    src.remote = Some(host.clone());
    let obj = invocation(json!({"invocationType": "Retry", "invocationIds": ["r"]}));
    assert_eq!(wanted_sources(&obj), BTreeSet::from(["r".to_string()]));
    let mut w = world("DaemonSet");
    w.agent.remote_install_host = Some("n1".into());
    w.remote_installer = Some(Installer::Usable);
    w.sources = BTreeMap::from([(id, src)]);

    let p1 = plan(&obj, &w);
    assert_eq!(p1.status.invocations[0].phase, P::Running);
    let mut next = obj.clone();
    next.status = Some(p1.status.clone());
    // The Job is created on the next reconcile: the host's user, port and Secret are only
    // in the source's spec, so the source is still needed then.
    assert_eq!(wanted_sources(&next), BTreeSet::from(["r".to_string()]));
    let p2 = plan(&next, &w);
    let [Effect::CreateJob { invocation_id }] = p2.effects.as_slice() else {
        panic!("one Job expected, got {:?}", p2.effects);
    };
    assert_eq!(
        remote_hosts(&next, &w.sources).get(invocation_id),
        Some(&host)
    );

    let mut finished = next.clone();
    let mut status = p2.status.clone();
    status.invocations[0].phase = P::Failed;
    finished.status = Some(status);
    assert!(
        wanted_sources(&finished).is_empty(),
        "final: nothing to read"
    );
}

#[test]
fn retrying_a_failure_without_a_version_is_refused() {
    let obj = invocation(json!({"invocationType": "Retry", "invocationIds": ["f"]}));
    let (id, mut src) = source("f", "n1", InstanceAction::Rollback, P::Failed, None, "x");
    src.result.target_version = None;
    src.result.error_code = Some("invocationmgr.0006".into());
    let mut w = world("DaemonSet");
    w.sources = BTreeMap::from([(id, src)]);
    let e = &plan(&obj, &w).status.invocations[0];
    assert_eq!(e.reason.as_deref(), Some("NothingToRetry"));
    assert!(
        e.error_message
            .as_deref()
            .is_some_and(|m| m.contains("invocationmgr.0006")),
        "{e:?}"
    );
}

#[test]
fn an_invocation_of_a_missing_agent_is_invalid_until_it_exists() {
    let obj = invocation(json!({"invocationType": "Install", "nodeNames": ["n1"]}));
    let missing = super::super::decide::Fetched {
        now: now(),
        found: None,
    };
    use crate::plan::Decide;
    let p = super::super::decide::Decisions::decide(&obj, &missing);
    assert_eq!(
        p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["AgentNotFound"]
    );
    assert!(p.before.is_empty(), "nothing is changed");
    let s = p.status;
    assert_eq!(s.phase, AgentInvocationPhase::Invalid);
    assert!(conditions::is_true(&s.conditions, STALLED));
    let mut seen = obj.clone();
    seen.status = Some(s);
    // The agent appears: the next plan starts the instances.
    let p = plan(&seen, &world("DaemonSet"));
    assert_eq!(p.status.phase, AgentInvocationPhase::Running);
    assert!(!conditions::is_true(&p.status.conditions, STALLED));
}

/// The seed's `^[a-zA-Z0-9-]{1,64}$`, which its `instance_id` and `invocation_id` match.
fn seed_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[test]
fn instance_ids_are_node_names_as_they_are_and_invocation_ids_keep_the_seeds_pattern() {
    // Node names may hold dots and reach 253 characters, beyond the seed's instance_id
    // pattern: the instance keeps the node's own name (what `kubectl get node` finds), and
    // the invocation id is the key in the seed's form.
    let dotted = "ip-10-0-0-1.eu-west-1.compute.internal".to_string();
    let long = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    assert_eq!(long.len(), 253);
    let mut w = world("DaemonSet");
    for n in [&dotted, &long] {
        w.nodes.insert(
            n.clone(),
            NodeFacts {
                ready: true,
                version: None,
            },
        );
    }
    let obj = invocation(json!({"invocationType": "Install", "nodeNames": [dotted, long]}));
    let e = by_instance(&plan(&obj, &w).status);
    for n in [&dotted, &long] {
        assert!(!seed_id(n), "{n} is outside the seed's pattern");
        assert_eq!(e[n].phase, P::Running, "{n}: {:?}", e[n]);
        assert!(seed_id(&e[n].invocation_id), "{:?}", e[n].invocation_id);
    }
    // A remote host without instanceName is its IP, dots and all.
    let remote = invocation(
        json!({"invocationType": "RemoteInstall", "remoteInstallMeta": [
        {"remoteIp": "10.0.0.5", "userName": "root", "credentialsSecretRef": {"name": "s"}}]}),
    );
    let e = &plan(&remote, &w).status.invocations[0];
    assert_eq!(e.instance_id, "10.0.0.5");
    assert!(seed_id(&e.invocation_id), "{:?}", e.invocation_id);
}
