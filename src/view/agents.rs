//! The tables of the agent kinds: AgentInvocation (a row per instance), AgentUpgradeJob
//! (a row per agent), NodeAgent (a row per version).

use super::table;
use crate::api::agent_invocation::{InvocationPhase, RetStatus};
use crate::api::agent_upgrade_job::AgentUpgradeJob;
use crate::api::{AgentInvocation, NodeAgent};

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
    out.push_str(&super::held(&status.conditions));
    if let (Some(plan), Some(c)) = (&status.plan, &status.counts) {
        out.push_str(&format!(
            "plan: {} agents in {} ConfigMaps; {} success, {} current, {} running, {} pending, {} failed, {} rolled back, {} skipped\n",
            plan.agents,
            plan.config_maps,
            c.success,
            c.current,
            c.running,
            c.pending,
            c.failed,
            c.rolled_back,
            c.skipped
        ));
    }
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
pub(super) fn agent_state(a: &crate::api::agent_upgrade_job::AgentUpgrade) -> String {
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
