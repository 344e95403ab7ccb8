//! Human-readable per-node (per-instance) tables of an object's status (`nodeops get`), because a hundred
//! rows of YAML status are not readable.

use std::fmt::Write;

mod agents;
mod commands;

use agents::agent_state;
pub use agents::{agent_invocation, agent_upgrade_job, node_agent};
pub use commands::{async_command, command, fleet, invoker};

use crate::api::agent_upgrade_job::AgentUpgradeJob;
use crate::api::{AgentInvocation, AsyncCommand};

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
/// The line saying why a rollout starts no node now (its `Paused` condition), if it is
/// held: `held: OutsideMaintenanceWindow: ...`.
pub(crate) fn held(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == crate::rollout::PAUSED && c.status == "True")
        .map(|c| format!("held: {}: {}\n", c.reason, c.message))
        .unwrap_or_default()
}

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
mod tests;
