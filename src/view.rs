//! Human-readable per-node (per-instance) tables of an object's status (`nodeops get`), because a hundred
//! rows of YAML status are not readable.

use std::fmt::Write;

use crate::api::agent_invocation::{InvocationPhase, RetStatus};
use crate::api::agent_upgrade_job::AgentUpgradeJob;
use crate::api::{AgentInvocation, AsyncCommand, Command, Invoker, NodeAgent};

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
                agent_state(a),
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

/// An agent's state, with the direction when its version moves down.
fn agent_state(a: &crate::api::agent_upgrade_job::AgentUpgrade) -> String {
    use crate::api::agent_upgrade_job::Direction;
    match a.direction {
        Some(Direction::Downgrade) => format!("{:?} (downgrade)", a.status),
        _ => format!("{:?}", a.status),
    }
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
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::conditions::STALLED && c.status == "True")
    {
        let _ = writeln!(out, "stalled: {}: {}", c.reason, c.message);
    }
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

/// A Command (a template: it runs only through AsyncCommands and Invokers): whether it is
/// usable, its parameters, and the AsyncCommands that ran it, newest first, with how each
/// went. `runs` are the namespace's AsyncCommands; those naming another Command are left out.
pub fn command(obj: &Command, runs: &[AsyncCommand]) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let ready = obj
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == crate::conditions::READY)
        .map(|c| format!("{} ({}: {})", c.status, c.reason, c.message))
        .unwrap_or_else(|| "no status yet".into());
    let params = obj
        .status
        .as_ref()
        .map(|s| s.parameters.join(", "))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "-".into());
    let mut out = format!(
        "Command {name}  {:?}  timeout {}s  ready {ready}\nparameters: {params}\n",
        obj.spec.interpreter, obj.spec.timeout_seconds
    );
    let mut mine: Vec<&AsyncCommand> = runs
        .iter()
        .filter(|r| r.spec.command_ref.as_deref() == Some(name.as_str()))
        .collect();
    mine.sort_by_key(|r| {
        std::cmp::Reverse((
            r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            r.metadata.name.clone(),
        ))
    });
    let rows: Vec<Vec<String>> = mine
        .iter()
        .map(|r| {
            let s = r.status.as_ref();
            vec![
                r.metadata.name.clone().unwrap_or_default(),
                r.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.map(|s| format!("{:?}", s.phase))
                    .unwrap_or_else(|| "-".into()),
                s.and_then(|s| s.progress.clone())
                    .unwrap_or_else(|| "-".into()),
                s.map(|s| s.failed.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ASYNCCOMMAND", "CREATED", "PHASE", "SUCCEEDED", "FAILED"],
        &rows,
    ));
    if let Some(latest) = mine.first() {
        out.push_str("\nlatest run, per node:\n");
        out.push_str(&async_command(latest));
    }
    out
}

/// What `nodeops get --watch` needs of a kind: one line per node (or instance) whose result
/// is final, keyed so each is printed once as it arrives, whether the object is finished,
/// and its full table.
pub trait Follow {
    fn arrived(&self) -> Vec<(String, String)>;
    fn finished(&self) -> bool;
    fn render(&self) -> String;
}

impl Follow for AsyncCommand {
    fn arrived(&self) -> Vec<(String, String)> {
        self.status
            .iter()
            .flat_map(|s| s.cmd_jobs.iter())
            .filter(|e| e.phase.is_final())
            .map(|e| {
                let line = format!(
                    "{}  {:?}  exit {}  {}  {}",
                    e.node_name,
                    e.phase,
                    e.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    e.reason.as_deref().unwrap_or("-"),
                    preview(e.output.as_deref().or(e.message.as_deref()))
                );
                (e.node_name.clone(), line)
            })
            .collect()
    }
    fn finished(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            matches!(
                s.phase,
                crate::api::async_command::CommandPhase::Succeeded
                    | crate::api::async_command::CommandPhase::Failed
                    | crate::api::async_command::CommandPhase::Invalid
            ) && s.observed_generation == self.metadata.generation
        })
    }
    fn render(&self) -> String {
        async_command(self)
    }
}

impl Follow for AgentInvocation {
    fn arrived(&self) -> Vec<(String, String)> {
        self.status
            .iter()
            .flat_map(|s| s.invocations.iter())
            .filter(|e| e.phase.is_final())
            .map(|e| {
                let line = format!(
                    "{}  {:?}  {} -> {}  {}  {}",
                    e.instance_id,
                    e.phase,
                    e.version_before.as_deref().unwrap_or("-"),
                    e.version_after.as_deref().unwrap_or("-"),
                    e.error_code.as_deref().unwrap_or("-"),
                    e.error_message
                        .as_deref()
                        .or(e.message.as_deref())
                        .unwrap_or("")
                );
                (e.invocation_id.clone(), line)
            })
            .collect()
    }
    fn finished(&self) -> bool {
        use crate::api::agent_invocation::AgentInvocationPhase as P;
        self.status.as_ref().is_some_and(|s| {
            matches!(s.phase, P::Succeeded | P::Failed | P::Invalid)
                && s.observed_generation == self.metadata.generation
        })
    }
    fn render(&self) -> String {
        agent_invocation(self)
    }
}

impl Follow for AgentUpgradeJob {
    fn arrived(&self) -> Vec<(String, String)> {
        use crate::api::agent_upgrade_job::AgentUpgradeState as S;
        self.status
            .iter()
            .flat_map(|s| s.agents.iter())
            .filter(|a| !matches!(a.status, S::Pending | S::Running) || self.spec.simulated)
            .map(|a| {
                let line = format!(
                    "{}  {}  {} -> {}  {}",
                    a.node_name.as_deref().unwrap_or(&a.agent_uuid),
                    agent_state(a),
                    a.old_version.as_deref().unwrap_or("-"),
                    a.new_version.as_deref().unwrap_or("-"),
                    a.error.as_deref().unwrap_or("")
                );
                // Keyed by state too: a Failed agent that is rolled back arrives again.
                (format!("{}/{:?}", a.agent_uuid, a.status), line)
            })
            .collect()
    }
    fn finished(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.completed_at.is_some())
    }
    fn render(&self) -> String {
        agent_upgrade_job(self)
    }
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
