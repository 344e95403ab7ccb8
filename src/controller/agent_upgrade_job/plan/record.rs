//! Where a job's plan (its agents, decided once when it starts) is kept. A job of at most
//! [`PlanLimits::status_agents`] agents keeps it in its own status, as the seed's response
//! has it. A larger one keeps it in ConfigMaps of at most [`PlanLimits::part_agents`]
//! agents each, created before anything starts and never changed, so no object grows with
//! the fleet; its status keeps the counts, the agents in flight and the failures.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::api::agent_upgrade_job::{AgentUpgrade, AgentUpgradeJob};
use crate::keys::{
    MANAGED_BY, MANAGED_BY_LABEL, PLAN_PART_ANNOTATION, ROLE_LABEL, ROLE_PLAN,
    UPGRADE_JOB_UID_LABEL,
};

/// The key of a plan ConfigMap holding its agents, a JSON list in plan order.
pub const AGENTS_KEY: &str = "agents.json";

/// The bounds of what an AgentUpgradeJob writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// Agents a job's status lists: every agent up to this many, beyond it only those in
    /// flight and the failures, this many at most.
    pub status_agents: usize,
    /// Agents per plan ConfigMap.
    pub part_agents: usize,
}

impl Default for PlanLimits {
    /// 100 agents in status, the seed's per-request cap; 400 per ConfigMap, which at the
    /// longest node name, versions and error message stays under 512 KiB (a unit test
    /// computes it).
    fn default() -> Self {
        Self {
            status_agents: 100,
            part_agents: 400,
        }
    }
}

/// One plan ConfigMap as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub name: String,
    /// Its place and the number of parts (from [`PLAN_PART_ANNOTATION`]); none when the
    /// ConfigMap cannot be read as a part.
    pub place: Option<(usize, usize)>,
    pub agents: Vec<AgentUpgrade>,
}

/// The name of part `index` of `job`'s plan: fixed by the job, so a part is created once.
pub fn part_name(job: &AgentUpgradeJob, index: usize) -> String {
    crate::engine::job::job_name(
        job.metadata.name.as_deref().unwrap_or_default(),
        job.metadata.uid.as_deref().unwrap_or_default(),
        &format!("plan/{index}"),
    )
}

/// `agents` as the job's plan ConfigMaps, owned by the job and immutable.
pub fn parts(job: &AgentUpgradeJob, agents: &[AgentUpgrade], limits: PlanLimits) -> Vec<ConfigMap> {
    let chunks: Vec<&[AgentUpgrade]> = agents.chunks(limits.part_agents.max(1)).collect();
    let of = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| ConfigMap {
            metadata: ObjectMeta {
                name: Some(part_name(job, index)),
                namespace: job.metadata.namespace.clone(),
                labels: Some(
                    [
                        (
                            UPGRADE_JOB_UID_LABEL.to_string(),
                            job.metadata.uid.clone().unwrap_or_default(),
                        ),
                        (ROLE_LABEL.to_string(), ROLE_PLAN.to_string()),
                        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                    ]
                    .into(),
                ),
                annotations: Some(
                    [(PLAN_PART_ANNOTATION.to_string(), format!("{index}/{of}"))].into(),
                ),
                owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            // Serializing plain data cannot fail; an empty list would read back as a
            // broken part and be written again, never used.
            data: Some(BTreeMap::from([(
                AGENTS_KEY.to_string(),
                serde_json::to_string(chunk).unwrap_or_default(),
            )])),
            immutable: Some(true),
            ..ConfigMap::default()
        })
        .collect()
}

/// A plan ConfigMap as a [`Part`] (without a place when it is not one nodeops wrote).
pub fn read(cm: &ConfigMap) -> Part {
    let place = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PLAN_PART_ANNOTATION))
        .and_then(|v| v.split_once('/'))
        .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)));
    let agents = cm
        .data
        .as_ref()
        .and_then(|d| d.get(AGENTS_KEY))
        .and_then(|j| serde_json::from_str::<Vec<AgentUpgrade>>(j).ok());
    Part {
        name: cm.metadata.name.clone().unwrap_or_default(),
        place: place.filter(|_| agents.is_some()),
        agents: agents.unwrap_or_default(),
    }
}

/// The plan the parts hold, in order, when every part is there, readable and agrees on
/// their number; none otherwise (no parts, or a crash while they were written).
pub fn assemble(parts: &[Part]) -> Option<Vec<AgentUpgrade>> {
    let of = parts.first()?.place?.1;
    let mut by_index: BTreeMap<usize, &Part> = BTreeMap::new();
    for p in parts {
        let (i, n) = p.place?;
        if n != of || by_index.insert(i, p).is_some() {
            return None;
        }
    }
    if by_index.len() != of || by_index.keys().copied().ne(0..of) {
        return None;
    }
    Some(
        by_index
            .into_values()
            .flat_map(|p| p.agents.iter().cloned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::agent_upgrade_job::{AgentUpgradeState, Direction};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn job() -> AgentUpgradeJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nodeops.io/v1alpha1", "kind": "AgentUpgradeJob",
            "metadata": {"name": "j".repeat(253), "namespace": "ops", "uid": "job-uid"},
            "spec": {"targetVersion": "2.0.0", "nodeSelector": {}},
        }))
        .expect("job")
    }

    /// The largest agent entry a plan can hold: the longest node name and versions, a
    /// downgrade refused with the longest message `agents` writes.
    fn largest(i: usize) -> AgentUpgrade {
        let version = "v".repeat(64);
        AgentUpgrade {
            agent_uuid: format!("{i:08x}-0000-4000-8000-000000000000"),
            node_name: Some(format!("{i:08}{}", "n".repeat(253 - 8))),
            old_version: Some(version.clone()),
            new_version: Some(version.clone()),
            status: AgentUpgradeState::RolledBack,
            direction: Some(Direction::Downgrade),
            error: Some(format!(
                "DowngradeNotAllowed: the agent runs {version}, above the target {version}; set allowDowngrade to move it down; rollback failed: {}",
                "e".repeat(160)
            )),
            start_time: Some(Time("2026-11-29T00:00:00Z".parse().expect("ts"))),
            completion_time: Some(Time("2026-11-29T00:00:00Z".parse().expect("ts"))),
        }
    }

    #[test]
    fn the_largest_part_stays_under_512_kib() {
        let agents: Vec<AgentUpgrade> = (0..5000).map(largest).collect();
        let parts = parts(&job(), &agents, PlanLimits::default());
        assert_eq!(parts.len(), 13);
        // What the API server adds (uid, times, managed fields of one data key) is far
        // below the 64 KiB left.
        for p in &parts {
            let size = serde_json::to_vec(p).expect("json").len();
            eprintln!("a plan part of the largest agents: {size} bytes");
            assert!(
                size < 448 * 1024,
                "{} is {size} bytes",
                p.metadata.name.as_deref().unwrap_or_default()
            );
        }
    }

    #[test]
    fn the_largest_status_stays_far_under_512_kib() {
        use crate::api::agent_upgrade_job::AgentUpgradeJobStatus;
        let mut j = job();
        j.status = Some(AgentUpgradeJobStatus {
            agents: (0..PlanLimits::default().status_agents)
                .map(largest)
                .collect(),
            ..Default::default()
        });
        // Server-side apply's managed fields add about 300 bytes per listed agent.
        let size = serde_json::to_vec(&j).expect("json").len();
        eprintln!("status listing 100 of the largest agents: {size} bytes");
        assert!(size < 256 * 1024, "{size} bytes");
    }

    #[test]
    fn parts_read_back_whole_and_a_missing_one_is_no_plan() {
        let agents: Vec<AgentUpgrade> = (0..25).map(largest).collect();
        let limits = PlanLimits {
            status_agents: 10,
            part_agents: 10,
        };
        let written = parts(&job(), &agents, limits);
        assert_eq!(written.len(), 3);
        let mut read: Vec<Part> = written.iter().map(read).collect();
        read.reverse();
        assert_eq!(assemble(&read), Some(agents));
        // A crash between two parts: the plan is incomplete, never half used.
        read.remove(1);
        assert_eq!(assemble(&read), None);
        assert_eq!(assemble(&[]), None);
        // Names are fixed by the job and the index, and fit a name.
        assert_eq!(written[0].metadata.name, Some(part_name(&job(), 0)));
        assert!(part_name(&job(), 0).len() <= 63);
        assert_ne!(part_name(&job(), 0), part_name(&job(), 1));
    }
}
