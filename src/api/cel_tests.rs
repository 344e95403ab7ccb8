//! Unit tests of the hand-written CEL rules, evaluated client-side with kube's CEL
//! evaluator against the same schema the CRD carries. The API server's own verdicts are
//! tested end to end in `tests/api_validation.rs`.

use kube::core::cel::{validate_cel, validate_cel_update};
use serde_json::json;

use super::*;

fn from<K: serde::de::DeserializeOwned>(kind: &str, spec: serde_json::Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec
    }))
    .expect("valid object")
}

fn refused_with<K: kube::CustomResourceExt + serde::Serialize>(obj: &K, fragment: &str) {
    match validate_cel(obj) {
        Ok(()) => panic!("accepted, expected a refusal naming {fragment:?}"),
        Err(e) => assert!(
            format!("{e:?}").contains(fragment),
            "{fragment:?} not in {e:?}"
        ),
    }
}

#[test]
fn async_command_needs_exactly_one_command_source() {
    let ok: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "nodeNames": ["n1"]}),
    );
    validate_cel(&ok).expect("valid");
    let both: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "commandRef": "c", "nodeNames": ["n1"]}),
    );
    refused_with(&both, "exactly one of spec.command and spec.commandRef");
    let neither: AsyncCommand = from("AsyncCommand", json!({"nodeNames": ["n1"]}));
    refused_with(&neither, "exactly one of spec.command and spec.commandRef");
    let params: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "nodeNames": ["n1"], "parameters": {"a": "b"}}),
    );
    refused_with(
        &params,
        "spec.parameters can only be given with spec.commandRef",
    );
    let user: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "nodeNames": ["n1"], "username": "root"}),
    );
    refused_with(&user, "spec.username is only used in Host mode");
}

#[test]
fn async_command_target_is_immutable() {
    let old: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "nodeNames": ["n1"]}),
    );
    let same_with_new_ttl: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "nodeNames": ["n1"], "ttlSecondsAfterFinished": 60}),
    );
    validate_cel_update(&same_with_new_ttl, &old).expect("ttl may change");
    let moved: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "nodeNames": ["n2"]}),
    );
    let err = validate_cel_update(&moved, &old).expect_err("nodes are immutable");
    assert!(format!("{err:?}").contains("spec.nodeNames is immutable"));
    let changed: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "reboot", "nodeNames": ["n1"]}),
    );
    let err = validate_cel_update(&changed, &old).expect_err("command is immutable");
    assert!(format!("{err:?}").contains("spec.command is immutable"));
}

#[test]
fn a_batch_allowance_only_grows_and_stays_a_batch() {
    let batch = |starts: i32| -> AsyncCommand {
        from(
            "AsyncCommand",
            json!({"command": "uptime", "nodeNames": ["n1", "n2"], "batch": {"starts": starts}}),
        )
    };
    validate_cel(&batch(0)).expect("a batch");
    validate_cel_update(&batch(2), &batch(1)).expect("raised");
    let err = validate_cel_update(&batch(1), &batch(2)).expect_err("lowered");
    assert!(format!("{err:?}").contains("spec.batch.starts only grows"));
    let plain: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "nodeNames": ["n1", "n2"]}),
    );
    let err = validate_cel_update(&batch(0), &plain).expect_err("made a batch");
    assert!(format!("{err:?}").contains("spec.batch cannot be added or removed"));
    let by_selector: AsyncCommand = from(
        "AsyncCommand",
        json!({"command": "uptime", "nodeSelector": {}, "batch": {"starts": 0}}),
    );
    refused_with(&by_selector, "which names its nodes");
}

#[test]
fn agent_invocation_required_when_rules() {
    let install: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "Install", "nodeNames": ["n1"]}),
    );
    validate_cel(&install).expect("valid");
    let install_without_nodes: AgentInvocation =
        from("AgentInvocation", json!({"invocationType": "Install"}));
    refused_with(
        &install_without_nodes,
        "spec.nodeNames is required when invocationType is Install or Update",
    );
    let rollback: AgentInvocation = from("AgentInvocation", json!({"invocationType": "Rollback"}));
    refused_with(
        &rollback,
        "spec.invocationIds is required when invocationType is Rollback or Retry",
    );
    let retry: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "Retry", "invocationIds": ["a-1"]}),
    );
    validate_cel(&retry).expect("valid");
    let remote: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "RemoteInstall"}),
    );
    refused_with(
        &remote,
        "spec.remoteInstallMeta is required when invocationType is RemoteInstall",
    );
    // The seed allows an empty remote_install_meta: no hosts, on a type that takes none;
    // a RemoteInstall with no host has nothing to do.
    let empty: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "Install", "nodeNames": ["n1"], "remoteInstallMeta": []}),
    );
    validate_cel(&empty).expect("an empty list on Install");
    let remote_empty: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "RemoteInstall", "remoteInstallMeta": []}),
    );
    refused_with(
        &remote_empty,
        "spec.remoteInstallMeta is required when invocationType is RemoteInstall",
    );
    let hosts_on_install: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "Install", "nodeNames": ["n1"], "remoteInstallMeta": [
            {"remoteIp": "192.0.2.1", "userName": "root", "credentialsSecretRef": {"name": "s"}}]}),
    );
    refused_with(
        &hosts_on_install,
        "spec.remoteInstallMeta is only used when invocationType is RemoteInstall",
    );
    let host: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "SetRemoteInstallHost", "nodeNames": ["n1", "n2"]}),
    );
    refused_with(&host, "exactly one node");
    let both: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "Update", "nodeNames": ["n1"], "version": "1.0", "versionType": "BasicVersion"}),
    );
    refused_with(&both, "mutually exclusive");
}

#[test]
fn agent_invocation_spec_is_immutable() {
    let old: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "Install", "nodeNames": ["n1"]}),
    );
    let new: AgentInvocation = from(
        "AgentInvocation",
        json!({"invocationType": "Install", "nodeNames": ["n2"]}),
    );
    let err = validate_cel_update(&new, &old).expect_err("immutable");
    assert!(format!("{err:?}").contains("spec is immutable"));
}

#[test]
fn invoker_schedule_settings_rules() {
    let once: Invoker = from(
        "Invoker",
        json!({"commandRef": "c", "nodeNames": ["n1"], "scheduleSettings": {"policy": "Once", "invokeTime": "2031-09-01T00:00:00+08:00"}}),
    );
    validate_cel(&once).expect("valid");
    let once_without_time: Invoker = from(
        "Invoker",
        json!({"commandRef": "c", "nodeNames": ["n1"], "scheduleSettings": {"policy": "Once"}}),
    );
    refused_with(
        &once_without_time,
        "scheduleSettings.invokeTime is required when policy is Once",
    );
    let cron_without_expr: Invoker = from(
        "Invoker",
        json!({"commandRef": "c", "nodeNames": ["n1"], "scheduleSettings": {"policy": "Recurrence"}}),
    );
    refused_with(
        &cron_without_expr,
        "scheduleSettings.recurrence is required when policy is Recurrence",
    );
}

#[test]
fn node_agent_installer_rule() {
    let host: NodeAgent = from(
        "NodeAgent",
        json!({"namespace": "a", "image": "r/telescope", "basicVersion": "1", "mode": "HostInstaller"}),
    );
    refused_with(
        &host,
        "spec.installer is required when mode is HostInstaller",
    );
}

#[test]
fn upgrade_job_target_is_immutable() {
    let old: AgentUpgradeJob = from(
        "AgentUpgradeJob",
        json!({"nodeSelector": {}, "targetVersion": "1.5.0"}),
    );
    let paused: AgentUpgradeJob = from(
        "AgentUpgradeJob",
        json!({"nodeSelector": {}, "targetVersion": "1.5.0", "paused": true}),
    );
    validate_cel_update(&paused, &old).expect("pause may change");
    let retarget: AgentUpgradeJob = from(
        "AgentUpgradeJob",
        json!({"nodeSelector": {}, "targetVersion": "2.0.0"}),
    );
    let err = validate_cel_update(&retarget, &old).expect_err("immutable");
    assert!(format!("{err:?}").contains("spec.targetVersion is immutable"));
}
