//! One reconcile of a valid AsyncCommand across its nodes: each node's event, the nodes
//! that start now (within maxConcurrency and the rollout policy: windows, soak, health
//! gates) or are cancelled (past maxErrors), the Jobs to delete, the Events, and when to
//! look again.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::machine::{NodeEvent, apply, fail, record};
use super::status::{finished_note, started, summarize};
use super::{Note, Plan, World, concurrency_limit, time};
use crate::api::async_command::{AsyncCommand, CmdJob, NodePhase};
use crate::api::common::scaled_limit;
use crate::conditions::{self, Desired};
use crate::engine::job::{job_id, job_name};
use crate::engine::outcome::{RunState, reason};
use crate::plan::clip;
use crate::rollout::{Hold, PAUSED, Policy, Progress};

fn to_duration(d: SignedDuration) -> Duration {
    Duration::from_secs(d.as_secs().max(0) as u64) + Duration::from_millis(100)
}

/// Plans a valid AsyncCommand. `targets` are the addressed nodes, in order (resolved from
/// `nodeNames` or the selector the first time, then kept in status).
pub fn plan(obj: &AsyncCommand, targets: &[String], world: &World, policy: &Policy) -> Plan {
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let prev = obj.status.clone().unwrap_or_default();
    let now = world.now;
    let started_at = prev.start_time.as_ref().map(|t| t.0).unwrap_or(now);
    let ready_deadline =
        started_at + SignedDuration::from_secs(obj.spec.node_ready_timeout_seconds);

    let mut previous: BTreeMap<String, CmdJob> = prev
        .cmd_jobs
        .iter()
        .map(|e| (e.node_name.clone(), e.clone()))
        .collect();
    let mut entries: Vec<CmdJob> = Vec::with_capacity(targets.len());
    let mut candidates = Vec::new();
    let mut waiting_until: Option<Timestamp> = None;
    let mut delete = Vec::new();
    let mut newly_failed = Vec::new();

    for node in targets {
        let mut e = previous.remove(node).unwrap_or_else(|| CmdJob {
            node_name: node.clone(),
            job_id: job_id(&uid, node),
            ..Default::default()
        });
        let before = e.phase;
        if !e.phase.is_final() {
            if let Some(message) = world.refused.get(node) {
                apply(&mut e, NodeEvent::JobFailed);
                fail(&mut e, reason::ADMISSION_REFUSED, message, now);
            } else if let Some(obs) = world.runs.get(node) {
                let event = match obs.state {
                    RunState::Active { .. } => NodeEvent::JobActive,
                    RunState::Succeeded => NodeEvent::JobSucceeded,
                    RunState::Failed => NodeEvent::JobFailed,
                };
                apply(&mut e, event);
                record(&mut e, obs, &name, &uid, now);
            } else if e.phase == NodePhase::Running {
                apply(&mut e, NodeEvent::JobVanished);
                fail(
                    &mut e,
                    reason::JOB_LOST,
                    "the node's Job was deleted before it finished",
                    now,
                );
            } else {
                match world.nodes.get(node) {
                    None => {
                        apply(&mut e, NodeEvent::NodeMissing);
                        fail(
                            &mut e,
                            reason::NODE_NOT_FOUND,
                            &format!("node {node} does not exist"),
                            now,
                        );
                    }
                    Some(info) if !info.ready => {
                        if now >= ready_deadline {
                            apply(&mut e, NodeEvent::NodeNotReadyTimeout);
                            let msg = format!(
                                "node {node} was not Ready within {}s",
                                obj.spec.node_ready_timeout_seconds
                            );
                            fail(&mut e, reason::NODE_NOT_READY, &msg, now);
                        } else {
                            e.reason = Some(reason::NODE_NOT_READY.into());
                            e.message = Some(format!("waiting for node {node} to be Ready"));
                            waiting_until = Some(ready_deadline);
                        }
                    }
                    Some(_) => candidates.push(entries.len()),
                }
            }
        }
        let job_still_active = world.refused.contains_key(node)
            || world
                .runs
                .get(node)
                .is_some_and(|o| o.state == RunState::Failed && o.job_active);
        if e.phase.is_final() && job_still_active {
            delete.push(node.clone());
        }
        if e.phase == NodePhase::Failed && before != NodePhase::Failed {
            newly_failed.push(format!("{node}: {}", e.reason.clone().unwrap_or_default()));
        }
        entries.push(e);
    }

    let total = entries.len();
    let failed = entries
        .iter()
        .filter(|e| e.phase == NodePhase::Failed)
        .count();
    let max_errors = obj
        .spec
        .max_errors
        .as_ref()
        .and_then(|m| scaled_limit(m, total, 0));
    let mut notes = Vec::new();
    // A fleet's batch: the fleet decides how many of its nodes may start and when the
    // rest are cancelled (its maxErrors across every batch).
    let batch = obj.spec.batch.as_ref();
    let fleet_stopped = batch.and_then(|b| b.cancel.clone());
    let stop_starting = max_errors.is_some_and(|m| failed > m) || fleet_stopped.is_some();
    let mut start = Vec::new();
    let mut hold = None;
    if stop_starting {
        let mut cancelled = 0;
        for e in entries.iter_mut().filter(|e| e.phase == NodePhase::Pending) {
            apply(e, NodeEvent::Cancelled);
            e.reason = Some(reason::MAX_ERRORS_REACHED.into());
            e.message = Some(fleet_stopped.clone().unwrap_or_else(|| {
                format!("not started: {failed} nodes failed, more than maxErrors allows")
            }));
            e.completion_time = Some(time(now));
            cancelled += 1;
        }
        waiting_until = None;
        if cancelled > 0 {
            notes.push(Note {
                warning: true,
                reason: "MaxErrorsReached",
                message: format!("{failed} nodes failed; {cancelled} nodes not started"),
            });
        }
    } else {
        let in_flight = entries
            .iter()
            .filter(|e| e.phase == NodePhase::Running)
            .count();
        let limit = concurrency_limit(obj, total);
        let last_finished = entries
            .iter()
            .filter(|e| e.start_time.is_some() && e.phase.is_final())
            .filter_map(|e| e.completion_time.as_ref().map(|t| t.0))
            .max();
        let nodes = targets
            .iter()
            .filter_map(|n| Some((n.as_str(), &world.nodes.get(n)?.conditions)));
        let progress = Progress {
            limit,
            in_flight,
            last_finished,
        };
        let starts = super::starts_now(policy, world, nodes, progress);
        // Only a rollout with nodes waiting to start is held.
        hold = starts.hold.filter(|_| !candidates.is_empty());
        if let Some(h) = &hold {
            let message = clip(&h.message(), super::MESSAGE_LIMIT);
            for &i in &candidates {
                entries[i].reason = Some(h.reason().into());
                entries[i].message = Some(message.clone());
            }
        }
        let slots = match batch {
            Some(b) => {
                let started = started(&entries);
                let allowed = usize::try_from(b.starts).unwrap_or(0);
                starts.slots.min(allowed.saturating_sub(started))
            }
            None => starts.slots,
        };
        for &i in candidates.iter().take(slots) {
            let e = &mut entries[i];
            apply(e, NodeEvent::Started);
            e.job_name = Some(job_name(&name, &uid, &e.node_name));
            e.start_time = Some(time(now));
            e.reason = None;
            e.message = None;
            start.push(e.node_name.clone());
        }
    }
    if !newly_failed.is_empty() {
        notes.push(Note {
            warning: true,
            reason: "NodeFailed",
            message: clip(&newly_failed.join("; "), 1024),
        });
    }

    let mut status = summarize(obj, &prev, entries, now);
    held(
        &mut status,
        &prev,
        hold.as_ref(),
        &mut notes,
        obj.metadata.generation,
        now,
    );
    if prev.start_time.is_none() && !start.is_empty() {
        status.start_time = Some(time(now));
        notes.push(Note {
            warning: false,
            reason: "Started",
            message: format!("started on {} of {total} nodes", start.len()),
        });
    } else if prev.start_time.is_none() {
        status.start_time = Some(time(started_at));
    }
    let finished = status.completion_time.is_some();
    notes.extend(finished_note(&prev, &status));

    let mut delete_self = false;
    let requeue_after = if finished {
        let (expired, wake) = expiry(obj, &status, now);
        delete_self = expired;
        wake
    } else if let Some(wake) = hold.as_ref().and_then(|h| h.recheck(now)) {
        // A window opening or a soak ending, exactly; a gate every few seconds.
        wake.min(Duration::from_secs(20))
            .min(waiting_until.map_or(Duration::MAX, |u| to_duration(u.duration_since(now))))
            .into()
    } else if let Some(until) = waiting_until {
        // Nodes turning Ready are noticed at least every 10s; the deadline exactly.
        Some(to_duration(until.duration_since(now)).min(Duration::from_secs(10)))
    } else if world
        .runs
        .values()
        .any(|o| o.state == RunState::Active { pods: 0 })
    {
        // A Job without a Pod may be refused by admission: look again soon.
        Some(Duration::from_secs(5))
    } else {
        // Job and Pod events drive progress; this is a safety net (a watch restarting
        // after an API server restart delivers nothing for a while).
        Some(Duration::from_secs(20))
    };
    let requeue_after = match (requeue_after, world.recheck) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Plan {
        start,
        delete,
        status,
        requeue_after,
        delete_self,
        notes,
    }
}

/// Whether a finished AsyncCommand's TTL has passed (delete it), else when it will.
pub(super) fn expiry(
    obj: &AsyncCommand,
    status: &crate::api::async_command::AsyncCommandStatus,
    now: Timestamp,
) -> (bool, Option<Duration>) {
    match (
        obj.spec.ttl_seconds_after_finished,
        status.completion_time.as_ref(),
    ) {
        (Some(ttl), Some(done)) => {
            let expires = done.0 + SignedDuration::from_secs(ttl);
            if now >= expires {
                (true, None)
            } else {
                (false, Some(to_duration(expires.duration_since(now))))
            }
        }
        _ => (false, None),
    }
}

/// The Paused condition and `nextStartTime` of a rollout held by its policy, with an Event
/// when it starts or stops being held.
pub(super) fn held(
    status: &mut crate::api::async_command::AsyncCommandStatus,
    prev: &crate::api::async_command::AsyncCommandStatus,
    hold: Option<&Hold>,
    notes: &mut Vec<Note>,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.next_start_time = hold.and_then(Hold::until).map(time);
    let had = prev.conditions.iter().any(|c| c.type_ == PAUSED);
    if status.completion_time.is_some() {
        conditions::remove(&mut status.conditions, PAUSED);
        return;
    }
    if hold.is_none() && !had {
        return;
    }
    let (reason, message) = match hold {
        Some(h) => (h.reason(), h.message()),
        None => (
            "Resumed",
            "nodes start as maxConcurrency allows".to_string(),
        ),
    };
    let changed = conditions::set(
        &mut status.conditions,
        Desired::new(PAUSED, hold.is_some(), reason, message.clone()),
        generation,
        &time(now),
    );
    if changed {
        notes.push(Note {
            warning: matches!(hold, Some(Hold::Unhealthy { .. })),
            reason,
            message,
        });
    }
}
