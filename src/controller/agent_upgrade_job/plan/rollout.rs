//! The whole plan of a reconcile: every agent stepped, the rollout stopped past
//! maxFailures, the nodes that start now (within maxConcurrency, unless paused or held by
//! the rollout policy: a window, a soak, a health gate), the rollbacks of failed nodes,
//! and the job's status, conditions and Events.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Effect, PAUSED, Plan, World, agents, record, step};
use crate::api::agent_upgrade_job::{
    AgentCounts, AgentPlan, AgentUpgrade, AgentUpgradeJob, AgentUpgradeJobStatus,
    AgentUpgradeState as S, Direction, UpgradeJobState,
};
use crate::api::common::scaled_limit;
use crate::conditions::{self, COMPLETE, Desired, FAILED, READY, RECONCILING};
use crate::plan::Note;
use crate::rollout::{self as policy, Policy, Progress};

/// Children one reconcile starts at most. A reconcile that starts hundreds (an upgrade at
/// maxConcurrency 500) holds the job's count of what finished meanwhile, and its status,
/// until the last creation returns: at 5000 agents one reconcile started 338 children in
/// about 20 s while slots freed by finished agents waited. The next reconcile follows
/// at once and starts the rest.
pub const STARTS_PER_RECONCILE: usize = 64;

fn count(agents: &[AgentUpgrade], states: &[S]) -> usize {
    agents.iter().filter(|a| states.contains(&a.status)).count()
}

/// Every agent as it stands: each agent of the plan (`records`) stepped through its
/// children until nothing changes. `started` (for a plan kept in ConfigMaps, whose records
/// never change): how many of the agents the plan left pending were started, in order;
/// one of them without its child lost it. Returns the agents and the started count, which
/// takes in children created before a crash lost the count.
pub fn derive(
    records: &[AgentUpgrade],
    started: Option<usize>,
    world: &World,
) -> (Vec<AgentUpgrade>, usize) {
    let child = |a: &AgentUpgrade| {
        world
            .upgrades
            .get(a.node_name.as_deref().unwrap_or_default())
    };
    let pending: Vec<&AgentUpgrade> = records.iter().filter(|a| a.status == S::Pending).collect();
    let started = started.map(|n| {
        pending
            .iter()
            .rposition(|a| child(a).is_some())
            .map_or(n, |last| n.max(last + 1))
    });
    let mut index = 0;
    let agents = records
        .iter()
        .map(|record| {
            let mut a = record.clone();
            if a.status == S::Pending {
                if started.is_some_and(|n| index < n) && child(&a).is_none() {
                    a.status = S::Running;
                }
                index += 1;
            }
            let node = a.node_name.clone().unwrap_or_default();
            // At most Pending -> Running -> Failed -> RolledBack.
            for _ in 0..4 {
                let next = step(
                    &a,
                    world.upgrades.get(&node),
                    world.rollbacks.get(&node),
                    world.now,
                );
                if next == a {
                    break;
                }
                a = next;
            }
            a
        })
        .collect();
    (agents, started.unwrap_or(0))
}

/// The whole plan.
pub fn plan(job: &AgentUpgradeJob, world: &World, policy: &Policy) -> Plan {
    let spec = &job.spec;
    let prev = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation;
    let now = world.now;
    let first = prev.plan.is_none() && prev.agents.is_empty();
    let mut notes = Vec::new();
    let mut effects = Vec::new();

    // Where the plan is: the ConfigMaps of a large job, the status of a small one, or
    // nowhere yet (decided now; a large plan's ConfigMaps are written first).
    let mut parts = Vec::new();
    let (records, large) = match record::assemble(&world.parts) {
        Some(records) => (records, true),
        None if prev.plan.is_none() && !prev.agents.is_empty() => (prev.agents.clone(), false),
        None if !world.parts.is_empty() => {
            // Parts of an attempt a crash cut short (no child was started from them): they
            // go, and the plan is decided again from the world as it is then.
            return Plan {
                status: prev,
                discard: world.parts.iter().map(|p| p.name.clone()).collect(),
                requeue: Some(Duration::from_secs(1)),
                ..Plan::default()
            };
        }
        None => {
            let records = agents(job, world);
            let large = records.len() > world.limits.status_agents;
            if large {
                parts = record::parts(job, &records, world.limits);
            }
            (records, large)
        }
    };
    let plan_ref = large.then(|| AgentPlan {
        config_maps: records.len().div_ceil(world.limits.part_agents.max(1)) as i32,
        agents: records.len() as i32,
    });
    let (mut agents, mut started) = if spec.simulated {
        (records, 0)
    } else {
        derive(&records, large.then_some(prev.started as usize), world)
    };

    let failures = count(&agents, &[S::Failed, S::RolledBack]);
    let stopped = failures > spec.max_failures as usize;
    let was_stopped = prev
        .conditions
        .iter()
        .any(|c| c.type_ == FAILED && c.reason == "MaxFailuresExceeded");
    if !spec.simulated && stopped {
        for a in agents.iter_mut().filter(|a| a.status == S::Pending) {
            a.status = S::Skipped;
            a.error = Some(format!(
                "not started: {failures} failures exceed maxFailures {}",
                spec.max_failures
            ));
        }
        if !was_stopped {
            notes.push(Note {
                warning: true,
                reason: "RolloutStopped",
                message: format!(
                    "{failures} upgrades failed (maxFailures {}): no further node starts",
                    spec.max_failures
                ),
            });
        }
    }

    let total = agents.len();
    let limit = scaled_limit(&spec.max_concurrency, total, 1).unwrap_or(1);
    // In flight: children that exist and are not final (the cluster's word, not ours).
    let in_flight = world.upgrades.values().filter(|c| !c.is_final()).count()
        + world.rollbacks.values().filter(|c| !c.is_final()).count();
    if !spec.simulated && spec.rollback_on_failure {
        for a in agents.iter().filter(|a| a.status == S::Failed) {
            let node = a.node_name.clone().unwrap_or_default();
            let failed_id = world
                .upgrades
                .get(&node)
                .and_then(|c| c.result.as_ref())
                .map(|r| r.invocation_id.clone());
            if let Some(invocation_id) = failed_id
                && !world.rollbacks.contains_key(&node)
            {
                effects.push(Effect::Rollback {
                    node,
                    invocation_id,
                });
            }
        }
    }
    // Whether new nodes may start: only asked while some wait and the rollout goes on.
    let waiting = !stopped && agents.iter().any(|a| a.status == S::Pending);
    // Slots left over by the bound on starts per reconcile.
    let mut more = false;
    let hold = if spec.simulated || !waiting {
        None
    } else {
        let nodes = agents.iter().filter_map(|a| {
            let name = a.node_name.as_deref()?;
            Some((name, &world.nodes.get(name)?.conditions))
        });
        let mut gates = policy.node_readings(nodes);
        gates.extend(world.object_gates.iter().cloned());
        let last_finished = agents
            .iter()
            .filter(|a| matches!(a.status, S::Success | S::Failed | S::RolledBack))
            .filter_map(|a| a.completion_time.as_ref().map(|t| t.0))
            .max();
        let progress = Progress {
            limit,
            in_flight: in_flight + effects.len(),
            last_finished,
        };
        let starts = policy::starts(policy, spec.paused, progress, &gates, now);
        let mut slots = starts.slots.min(STARTS_PER_RECONCILE);
        for a in agents.iter_mut().filter(|a| a.status == S::Pending) {
            if slots == 0 {
                break;
            }
            let node = a.node_name.clone().unwrap_or_default();
            effects.push(Effect::Upgrade { node });
            a.status = S::Running;
            a.start_time = Some(Time(now));
            slots -= 1;
            started += 1;
        }
        more = starts.slots > STARTS_PER_RECONCILE && agents.iter().any(|a| a.status == S::Pending);
        starts.hold
    };

    let running = count(&agents, &[S::Running]);
    let pending = count(&agents, &[S::Pending]);
    let rollbacks_open = spec.rollback_on_failure
        && agents.iter().any(|a| {
            a.status == S::Failed
                && world
                    .rollbacks
                    .get(a.node_name.as_deref().unwrap_or_default())
                    .is_none_or(|c| !c.is_final())
        });
    let done = spec.simulated || (running == 0 && pending == 0 && !rollbacks_open);
    let good = count(&agents, &[S::Success, S::Current]);
    let bad = total - good - running - pending;
    let state = if spec.simulated {
        UpgradeJobState::Planned
    } else if done {
        if bad == 0 && total > 0 {
            UpgradeJobState::Success
        } else {
            UpgradeJobState::Failed
        }
    } else if first && effects.is_empty() {
        UpgradeJobState::Pending
    } else {
        UpgradeJobState::Running
    };
    let summary = if spec.simulated {
        let downgrades = agents
            .iter()
            .filter(|a| a.status == S::Pending && a.direction == Some(Direction::Downgrade))
            .count();
        format!(
            "simulated: {} would be upgraded and {downgrades} downgraded to {}, {} current, {} cannot be changed; nothing changed",
            pending - downgrades,
            spec.target_version,
            count(&agents, &[S::Current]),
            count(&agents, &[S::Skipped])
        )
    } else {
        format!(
            "{good} of {total} agents at {}, {running} upgrading, {failures} failed, {} skipped",
            spec.target_version,
            count(&agents, &[S::Skipped])
        )
    };
    let mut status = AgentUpgradeJobStatus {
        observed_generation: generation,
        id: Some(job.metadata.uid.clone().unwrap_or_default()),
        target_version: Some(spec.target_version.clone()),
        in_flight: (in_flight
            + effects
                .iter()
                .filter(|e| matches!(e, Effect::Upgrade { .. } | Effect::Rollback { .. }))
                .count()) as i32,
        failures: failures as i32,
        progress: Some(format!("{good}/{total}")),
        status: state,
        simulated: spec.simulated,
        created_at: prev
            .created_at
            .clone()
            .or_else(|| job.metadata.creation_timestamp.clone())
            .or(Some(Time(now))),
        completed_at: if done {
            prev.completed_at.clone().or(Some(Time(now)))
        } else {
            None
        },
        next_start_time: hold.as_ref().and_then(policy::Hold::until).map(Time),
        counts: Some(AgentCounts {
            total: total as i32,
            pending: pending as i32,
            running: running as i32,
            success: count(&agents, &[S::Success]) as i32,
            failed: count(&agents, &[S::Failed]) as i32,
            current: count(&agents, &[S::Current]) as i32,
            skipped: count(&agents, &[S::Skipped]) as i32,
            rolled_back: count(&agents, &[S::RolledBack]) as i32,
        }),
        started: if large { started as i32 } else { 0 },
        plan: plan_ref,
        // A large job lists the failures, then what is in flight, up to the bound.
        agents: if large {
            let listed =
                |states: &'static [S]| agents.iter().filter(move |a| states.contains(&a.status));
            listed(&[S::Failed, S::RolledBack])
                .chain(listed(&[S::Running]))
                .take(world.limits.status_agents)
                .cloned()
                .collect()
        } else {
            agents
        },
        conditions: prev.conditions.clone(),
    };
    if done {
        status.in_flight = 0;
    }
    let now_t = Time(now);
    let conds = &mut status.conditions;
    let ok = matches!(state, UpgradeJobState::Success | UpgradeJobState::Planned);
    let failed_reason = if stopped {
        "MaxFailuresExceeded"
    } else if ok {
        "NoAgentFailed"
    } else {
        "AgentsNotUpgraded"
    };
    let failure = (done && !ok).then(|| (failed_reason, summary.clone()));
    let desired = if done {
        conditions::remove(conds, RECONCILING);
        conditions::remove(conds, PAUSED);
        vec![
            Desired::new(
                COMPLETE,
                true,
                if spec.simulated {
                    "Simulated"
                } else {
                    "AllAgentsFinished"
                },
                summary.clone(),
            ),
            Desired::new(FAILED, !ok, failed_reason, summary.clone()),
            Desired::new(
                READY,
                ok,
                if ok { "Succeeded" } else { failed_reason },
                summary.clone(),
            ),
        ]
    } else {
        let mut d = vec![
            Desired::new(RECONCILING, true, "RollingOut", summary.clone()),
            Desired::new(READY, false, "RollingOut", summary.clone()),
            Desired::new(COMPLETE, false, "RollingOut", summary.clone()),
        ];
        if stopped {
            d.push(Desired::new(
                FAILED,
                true,
                "MaxFailuresExceeded",
                summary.clone(),
            ));
        }
        d
    };
    let mut completed_now = false;
    for d in desired {
        let complete = d.type_ == COMPLETE && d.status;
        completed_now |= conditions::set(conds, d, generation, &now_t) && complete;
    }
    conditions::stalled_if_failed(conds, failure, generation, &now_t);
    if !done {
        let (reason, message) = match &hold {
            Some(h) => (h.reason(), h.message()),
            None => ("Resumed", "the rollout proceeds".to_string()),
        };
        let paused_changed = conditions::set(
            conds,
            Desired::new(PAUSED, hold.is_some(), reason, message.clone()),
            generation,
            &now_t,
        );
        let had_paused = prev.conditions.iter().any(|c| c.type_ == PAUSED);
        if paused_changed && (hold.is_some() || had_paused) {
            notes.push(Note {
                warning: matches!(hold, Some(policy::Hold::Unhealthy { .. })),
                reason,
                message: format!("{message} ({summary})"),
            });
        }
    }
    if first {
        notes.insert(
            0,
            Note {
                warning: false,
                reason: if spec.simulated {
                    "Simulated"
                } else {
                    "Started"
                },
                message: summary.clone(),
            },
        );
    }
    if completed_now && !spec.simulated {
        notes.push(Note {
            warning: !ok,
            reason: if ok { "Succeeded" } else { "Failed" },
            message: summary,
        });
    }
    Plan {
        status,
        parts,
        discard: Vec::new(),
        requeue: if done {
            None
        } else if more {
            Some(Duration::ZERO)
        } else if !effects.is_empty() {
            Some(Duration::from_secs(1))
        } else {
            // A window opening or a soak ending is woken for exactly; the rest by events,
            // with this as the safety net.
            let net = Duration::from_secs(30);
            Some(
                hold.and_then(|h| h.recheck(now))
                    .map_or(net, |d| d.min(net)),
            )
        },
        effects,
        notes,
    }
}
