use super::*;
use crate::api::{Command, Invoker, NodeAgent};
use serde_json::json;

#[test]
fn node_agent_and_invoker_tables() {
    let agent: NodeAgent = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "NodeAgent", "metadata": {"name": "telescope"},
        "spec": {"namespace": "a", "image": "i", "basicVersion": "1"},
        "status": {"installedNodes": 1, "versions": [{"version": "1", "nodes": 1, "ready": 1}],
                   "agents": [{"agentUuid": "u", "nodeName": "n1", "version": "1"}]}
    }))
    .expect("agent");
    let text = node_agent(&agent);
    assert!(
        text.contains("installed on 1 nodes: 1 on 1 (1 ready)"),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("n1    1")),
        "{text}"
    );
    let inv: Invoker = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "Invoker", "metadata": {"name": "nightly"},
        "spec": {"type": "Schedule", "displayName": "Nightly disk check", "commandRef": "c", "nodeNames": ["n1"],
                 "scheduleSettings": {"policy": "Recurrence", "recurrence": "0 3 * * *"}},
        "status": {"recentRuns": [{"scheduledTime": "2026-11-26T03:00:00Z", "asyncCommand": "nightly-29400000", "phase": "Succeeded", "succeeded": 1, "failed": 0}]}
    }))
    .expect("invoker");
    let text = invoker(&inv);
    assert!(
        text.starts_with("Invoker nightly (Nightly disk check)  Recurrence"),
        "the display name beside the name: {text}"
    );
    assert!(
        text.lines()
            .nth(2)
            .is_some_and(|l| l.contains("nightly-29400000") && l.contains("Succeeded")),
        "{text}"
    );
}

#[test]
fn command_lists_its_runs_newest_first_and_the_latest_per_node() {
    let cmd: Command = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "Command", "metadata": {"name": "disk"},
        "spec": {"content": "df {{path}}", "enableParameters": true},
        "status": {"parameters": ["path"], "conditions": [{"type": "Ready", "status": "True",
            "reason": "Valid", "message": "1 parameter(s)", "lastTransitionTime": "2026-11-26T01:00:00Z"}]}
    }))
    .expect("command");
    let run = |name: &str, created: &str, cmd_ref: &str| -> AsyncCommand {
        serde_json::from_value(json!({
            "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"commandRef": cmd_ref, "nodeNames": ["n1"]},
            "status": {"phase": "Succeeded", "progress": "1/1", "cmdJobs": [
                {"nodeName": "n1", "phase": "Succeeded", "exitCode": 0, "jobId": "j", "output": format!("{name} done")}]}
        }))
        .expect("run")
    };
    let runs = [
        run("older", "2026-11-26T01:00:00Z", "disk"),
        run("other", "2026-11-26T03:00:00Z", "uptime"),
        run("newer", "2026-11-26T02:00:00Z", "disk"),
    ];
    let text = command(&cmd, &runs);
    assert!(text.contains("parameters: path"), "{text}");
    assert!(text.contains("ready True (Valid"), "{text}");
    let newer = text.find("newer").expect("newer listed");
    let older = text.find("older").expect("older listed");
    assert!(newer < older, "newest first: {text}");
    assert!(!text.contains("other"), "another Command's run: {text}");
    assert!(
        text.contains("newer done"),
        "the latest run's nodes: {text}"
    );
}

#[test]
fn follow_reports_each_final_node_once_and_when_finished() {
    let mut obj: AsyncCommand = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
        "metadata": {"name": "c", "generation": 1},
        "spec": {"command": "uptime", "nodeNames": ["n1", "n2"]},
        "status": {"observedGeneration": 1, "phase": "Running", "cmdJobs": [
            {"nodeName": "n1", "phase": "Failed", "exitCode": 2, "reason": "ExitCode", "jobId": "j1", "output": "boom"},
            {"nodeName": "n2", "phase": "Running", "jobId": "j2"}]}
    }))
    .expect("object");
    let first = obj.arrived();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, "n1");
    assert!(
        first[0].1.contains("exit 2") && first[0].1.contains("boom"),
        "{first:?}"
    );
    assert!(!obj.finished());
    let s = obj.status.as_mut().expect("status");
    s.cmd_jobs[1].phase = crate::api::async_command::NodePhase::Succeeded;
    s.phase = crate::api::async_command::CommandPhase::Failed;
    assert_eq!(obj.arrived().len(), 2);
    assert!(obj.finished());
    obj.metadata.generation = Some(2);
    assert!(
        !obj.finished(),
        "a status of an older generation is not final"
    );
}

#[test]
fn renders_one_row_per_agent() {
    let obj: AgentUpgradeJob = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AgentUpgradeJob",
        "metadata": {"name": "up"},
        "spec": {"nodeSelector": {}, "targetVersion": "2.0.0", "simulated": true},
        "status": {"status": "success", "simulated": true, "progress": "0/2", "agents": [
            {"agentUuid": "u1", "nodeName": "n1", "oldVersion": "1.0.0", "newVersion": "2.0.0", "status": "pending"},
            {"agentUuid": "u2", "status": "skipped", "error": "AgentNotFound: no node runs agent telescope with this UUID"}
        ]}
    }))
    .expect("object");
    let text = agent_upgrade_job(&obj);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("status Success (simulated)"),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].starts_with("n1    u1") && lines[2].contains("1.0.0 -> 2.0.0"),
        "{:?}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("-     u2") && lines[3].ends_with("with this UUID"),
        "{:?}",
        lines[3]
    );
}

#[test]
fn renders_one_row_per_instance() {
    let obj: AgentInvocation = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AgentInvocation",
        "metadata": {"name": "install"},
        "spec": {"invocationType": "Install", "nodeNames": ["a", "b"]},
        "status": {"phase": "Failed", "progress": "1/2", "invocations": [
            {"instanceId": "a", "invocationId": "id-a", "phase": "Succeeded", "retStatus": "successful", "versionAfter": "3.2.1"},
            {"instanceId": "b", "invocationId": "id-b", "phase": "Failed", "retStatus": "error", "targetVersion": "3.2.1",
             "errorCode": "invocationmgr.0002", "errorMessage": "node b is not Ready"}
        ]}
    }))
    .expect("object");
    let text = agent_invocation(&obj);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("Install telescope") && lines[0].contains("succeeded 1/2"),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].starts_with("a         id-a") && lines[2].contains("successful  - -> 3.2.1"),
        "{:?}",
        lines[2]
    );
    assert!(
        lines[3].contains("invocationmgr.0002") && lines[3].ends_with("node b is not Ready"),
        "{:?}",
        lines[3]
    );
}

#[test]
fn renders_one_row_per_node() {
    let obj: AsyncCommand = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
        "metadata": {"name": "ls"},
        "spec": {"command": "ls", "nodeNames": ["a", "b"]},
        "status": {"taskId": "t", "phase": "Failed", "progress": "1/2", "failed": 1, "total": 2,
            "cmdJobs": [
                {"nodeName": "a", "jobId": "j1", "phase": "Succeeded", "exitCode": 0, "output": "line1\nlast line\n"},
                {"nodeName": "node-b", "jobId": "j2", "phase": "Failed", "reason": "NodeNotFound", "message": "node node-b does not exist"}
            ]}
    }))
    .expect("object");
    let text = async_command(&obj);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("task t") && lines[0].contains("succeeded 1/2"));
    assert!(lines[1].starts_with("NODE    PHASE"));
    assert!(
        lines[2].starts_with("a       Succeeded  0") && lines[2].ends_with("last line"),
        "{:?}",
        lines[2]
    );
    assert!(lines[3].contains("NodeNotFound") && lines[3].ends_with("node node-b does not exist"));
}

#[test]
fn long_output_is_cut_from_the_front() {
    assert_eq!(preview(Some(&"x".repeat(100))).chars().count(), PREVIEW);
    assert_eq!(preview(None), "");
}

#[test]
fn a_held_rollout_says_why_under_its_summary() {
    let cmd: crate::api::AsyncCommand = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand", "metadata": {"name": "patch"},
        "spec": {"command": "uptime", "nodeNames": ["n1"]},
        "status": {"phase": "Pending", "total": 1, "pending": 1,
                   "cmdJobs": [{"nodeName": "n1", "jobId": "j", "phase": "Pending", "reason": "OutsideMaintenanceWindow"}],
                   "conditions": [{"type": "Paused", "status": "True", "reason": "OutsideMaintenanceWindow",
                                   "message": "outside every maintenance window: ... at 2026-12-01T01:00:00Z",
                                   "lastTransitionTime": "2026-11-29T00:00:00Z"}]}
    }))
    .expect("command");
    let text = async_command(&cmd);
    assert_eq!(
        text.lines().nth(1),
        Some(
            "held: OutsideMaintenanceWindow: outside every maintenance window: ... at 2026-12-01T01:00:00Z"
        ),
        "{text}"
    );
    let mut resumed = cmd.clone();
    if let Some(s) = resumed.status.as_mut() {
        s.conditions[0].status = "False".into();
    }
    assert!(!async_command(&resumed).contains("held:"));
}
