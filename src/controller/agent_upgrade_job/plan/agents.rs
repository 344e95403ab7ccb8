//! The agents of a job, decided once when it starts: which nodes' agents it upgrades,
//! which are already current, and which cannot be upgraded and why.

use std::collections::BTreeMap;

use super::World;
use crate::agent::is_label_value;
use crate::api::agent_upgrade_job::{
    AgentUpgrade, AgentUpgradeJob, AgentUpgradeState as S, Direction,
};

/// The agents of the job, decided once: who will be upgraded, who is current, who cannot
/// be upgraded and why. Canary nodes first, in their order, then by node name.
pub fn agents(job: &AgentUpgradeJob, world: &World) -> Vec<AgentUpgrade> {
    let spec = &job.spec;
    let target = &spec.target_version;
    let by_uuid: BTreeMap<String, String> = world
        .nodes
        .iter()
        .filter(|(_, n)| n.version.is_some())
        .map(|(name, n)| {
            (
                crate::agent::agent_uuid(&world.agent_uid, &n.uid),
                name.clone(),
            )
        })
        .collect();
    let mut out: Vec<AgentUpgrade> = Vec::new();
    let entry = |uuid: &str, node: &str| {
        let n = &world.nodes[node];
        let mut a = AgentUpgrade {
            agent_uuid: uuid.to_string(),
            node_name: Some(node.to_string()),
            old_version: n.version.clone(),
            new_version: Some(target.clone()),
            status: S::Pending,
            ..Default::default()
        };
        if let Some(child) = world.upgrades.get(node) {
            // Created before a crash that lost the first status: the node was chosen then,
            // and its label may already show the target. The child knows the version before.
            if let Some(before) = child.result.as_ref().and_then(|r| r.version_before.clone()) {
                a.old_version = Some(before);
            }
            return a;
        }
        let direction = n.version.as_deref().map(|v| {
            if crate::agent::compare_versions(target, v).is_lt() {
                Direction::Downgrade
            } else {
                Direction::Upgrade
            }
        });
        if n.version.as_deref() == Some(target.as_str()) {
            a.status = S::Current;
        } else if direction == Some(Direction::Downgrade) && !spec.allow_downgrade {
            a.status = S::Skipped;
            a.error = Some(format!(
                "DowngradeNotAllowed: the agent runs {}, above the target {target}; set allowDowngrade to move it down",
                n.version.as_deref().unwrap_or_default()
            ));
        } else if !n.ready {
            a.status = S::Skipped;
            a.error = Some("NodeNotReady: the node is not Ready".into());
        } else if !is_label_value(target) {
            a.status = S::Skipped;
            a.error = Some(format!(
                "InvalidVersion: {target:?} cannot be a node label value"
            ));
        }
        if a.status == S::Pending {
            a.direction = direction.or(Some(Direction::Upgrade));
        } else {
            a.new_version = n.version.clone();
        }
        a
    };
    match &spec.agents {
        Some(uuids) => {
            for uuid in uuids {
                match by_uuid.get(uuid) {
                    Some(node) => out.push(entry(uuid, node)),
                    None => out.push(AgentUpgrade {
                        agent_uuid: uuid.clone(),
                        status: S::Skipped,
                        error: Some(format!(
                            "AgentNotFound: no node runs agent {} with this UUID",
                            spec.agent
                        )),
                        ..Default::default()
                    }),
                }
            }
        }
        None => {
            for (uuid, node) in &by_uuid {
                if world.nodes[node].selected {
                    out.push(entry(uuid, node));
                }
            }
        }
    }
    let canary: BTreeMap<&str, usize> = spec
        .canary_nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    out.sort_by_key(|a| {
        let node = a.node_name.clone().unwrap_or_default();
        (
            canary.get(node.as_str()).copied().unwrap_or(usize::MAX),
            node,
            a.agent_uuid.clone(),
        )
    });
    out
}
