//! Human-readable per-node (per-instance) tables of an object's status (`nodeops get`), because a hundred
//! rows of YAML status are not readable.

use std::fmt::Write;

use crate::api::agent_invocation::{InvocationPhase, RetStatus};
use crate::api::agent_upgrade_job::AgentUpgradeJob;
use crate::api::{AgentInvocation, AsyncCommand, Invoker, NodeAgent};

/// Characters of output shown per node.
const PREVIEW: usize = 48;

fn preview(text: Option<&str>) -> String {
    let line = text
        .unwrap_or("")
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .trim();
    if line.chars().count() > PREVIEW {
        let tail: String = line
            .chars()
            .rev()
            .take(PREVIEW - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    } else {
        line.to_string()
    }
}

/// Lays out rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = *w);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The per-node table of an AsyncCommand, with a summary line.
pub fn async_command(obj: &AsyncCommand) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let Some(status) = &obj.status else {
        return format!("AsyncCommand {name}: no status yet\n");
    };
    let mut out = format!(
        "AsyncCommand {name}  task {}  phase {:?}  succeeded {}  failed {}  cancelled {}\n",
        status.task_id.as_deref().unwrap_or("-"),
        status.phase,
        status.progress.as_deref().unwrap_or("-"),
        status.failed,
        status.cancelled
    );
    let rows: Vec<Vec<String>> = status
        .cmd_jobs
        .iter()
        .map(|e| {
            vec![
                e.node_name.clone(),
                format!("{:?}", e.phase),
                e.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.reason.clone().unwrap_or_else(|| "-".into()),
                e.job_id.clone(),
                format!(
                    "{}{}",
                    if e.output_truncated {
                        "[truncated] "
                    } else {
                        ""
                    },
                    preview(e.output.as_deref().or(e.message.as_deref()))
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NODE", "PHASE", "EXIT", "REASON", "JOB ID", "OUTPUT"],
        &rows,
    ));
    out
}

/// The per-instance table of an AgentInvocation (the seed's invocations), with a summary.
pub fn agent_invocation(obj: &AgentInvocation) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let Some(status) = &obj.status else {
        return format!("AgentInvocation {name}: no status yet\n");
    };
    let mut out = format!(
        "AgentInvocation {name}  {:?} {}  phase {:?}  succeeded {}\n",
        obj.spec.invocation_type,
        obj.spec.invocation_target,
        status.phase,
        status.progress.as_deref().unwrap_or("-"),
    );
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = status
        .invocations
        .iter()
        .map(|e| {
            let ret = match e.ret_status {
                Some(RetStatus::Successful) => "successful".to_string(),
                Some(RetStatus::Error) => "error".to_string(),
                None => format!("{:?}", e.phase),
            };
            vec![
                e.instance_id.clone(),
                e.invocation_id.clone(),
                ret,
                match e.phase {
                    InvocationPhase::Succeeded | InvocationPhase::Failed => format!(
                        "{} -> {}",
                        dash(e.version_before.as_deref()),
                        dash(e.version_after.as_deref())
                    ),
                    _ => format!("to {}", dash(e.target_version.as_deref())),
                },
                dash(e.error_code.as_deref()),
                e.error_message
                    .as_deref()
                    .or(e.message.as_deref())
                    .unwrap_or("")
                    .to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "INSTANCE",
            "INVOCATION ID",
            "RESULT",
            "VERSION",
            "ERROR CODE",
            "MESSAGE",
        ],
        &rows,
    ));
    out
}

/// The per-agent table of an AgentUpgradeJob (the seed's agents), with a summary.
pub fn agent_upgrade_job(obj: &AgentUpgradeJob) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let Some(status) = &obj.status else {
        return format!("AgentUpgradeJob {name}: no status yet\n");
    };
    let mut out = format!(
        "AgentUpgradeJob {name}  to {}  status {:?}{}  upgraded {}  in flight {}  failures {}\n",
        obj.spec.target_version,
        status.status,
        if status.simulated { " (simulated)" } else { "" },
        status.progress.as_deref().unwrap_or("-"),
        status.in_flight,
        status.failures,
    );
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = status
        .agents
        .iter()
        .map(|a| {
            vec![
                dash(a.node_name.as_deref()),
                a.agent_uuid.clone(),
                format!("{:?}", a.status),
                format!(
                    "{} -> {}",
                    dash(a.old_version.as_deref()),
                    dash(a.new_version.as_deref())
                ),
                dash(a.error.as_deref()),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NODE", "AGENT UUID", "STATUS", "VERSION", "ERROR"],
        &rows,
    ));
    out
}

/// The per-node table of a NodeAgent: each node's version and agent UUID.
pub fn node_agent(obj: &NodeAgent) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let Some(status) = &obj.status else {
        return format!("NodeAgent {name}: no status yet\n");
    };
    let versions: Vec<String> = status
        .versions
        .iter()
        .map(|v| format!("{} on {} ({} ready)", v.version, v.nodes, v.ready))
        .collect();
    let mut out = format!(
        "NodeAgent {name}  mode {:?}  installed on {} nodes: {}\n",
        obj.spec.mode,
        status.installed_nodes,
        if versions.is_empty() {
            "-".to_string()
        } else {
            versions.join(", ")
        }
    );
    let rows: Vec<Vec<String>> = status
        .agents
        .iter()
        .map(|a| vec![a.node_name.clone(), a.version.clone(), a.agent_uuid.clone()])
        .collect();
    out.push_str(&table(&["NODE", "VERSION", "AGENT UUID"], &rows));
    out
}

/// The runs of an Invoker: each scheduled time, its AsyncCommand and how it went.
pub fn invoker(obj: &Invoker) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let Some(status) = &obj.status else {
        return format!("Invoker {name}: no status yet\n");
    };
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string()).unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "Invoker {name}  {:?}  last run {}  next run {}{}\n",
        obj.spec.schedule_settings.policy,
        time(status.last_invoke_time.as_ref()),
        time(status.next_invoke_time.as_ref()),
        if obj.spec.suspend {
            "  (suspended)"
        } else {
            ""
        }
    );
    let rows: Vec<Vec<String>> = status
        .recent_runs
        .iter()
        .map(|r| {
            vec![
                r.scheduled_time.0.to_string(),
                r.async_command.clone(),
                r.phase.clone().unwrap_or_else(|| "-".into()),
                r.succeeded.to_string(),
                r.failed.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SCHEDULED", "ASYNCCOMMAND", "PHASE", "SUCCEEDED", "FAILED"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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
            "spec": {"type": "Schedule", "commandRef": "c", "nodeNames": ["n1"],
                     "scheduleSettings": {"policy": "Recurrence", "recurrence": "0 3 * * *"}},
            "status": {"recentRuns": [{"scheduledTime": "2026-11-26T03:00:00Z", "asyncCommand": "nightly-29400000", "phase": "Succeeded", "succeeded": 1, "failed": 0}]}
        }))
        .expect("invoker");
        let text = invoker(&inv);
        assert!(
            text.lines()
                .nth(2)
                .is_some_and(|l| l.contains("nightly-29400000") && l.contains("Succeeded")),
            "{text}"
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
        assert!(
            lines[3].contains("NodeNotFound") && lines[3].ends_with("node node-b does not exist")
        );
    }

    #[test]
    fn long_output_is_cut_from_the_front() {
        assert_eq!(preview(Some(&"x".repeat(100))).chars().count(), PREVIEW);
        assert_eq!(preview(None), "");
    }
}
