//! The Invoker's decisions as plain functions of (invoker, its Command, its children, now):
//! whether a slot fires, what the child AsyncCommand is, which children to delete, and the
//! status. The last fired slot lives in status, never in the existence of children, so
//! neither a restart nor a pruned child ever fires a slot twice.
//!
//! The children (a child read back, the child a slot creates, the recent runs and the
//! history to prune) are in `children`; this file holds what the decisions read,
//! [`validate`] and [`plan()`].

mod children;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::command::CommandSpec;
use crate::api::invoker::{ConcurrencyPolicy, Invoker, InvokerRun, InvokerStatus, SchedulePolicy};
use crate::conditions::{self, Desired, READY, RECONCILING, STALLED};
use crate::engine::script;
use crate::plan::{Change, Child as ChildObject, ChildKind, Decide, Invalid, Note, Plan};
use crate::schedule::{self, Due};

pub use children::{Child, child_name};
use children::{child_object, history_to_delete, recent_runs};

/// Starting deadline when the spec sets none.
pub const DEFAULT_STARTING_DEADLINE: i64 = 60;
/// Runs kept in `status.recentRuns`.
const RECENT_RUNS: usize = 10;

/// What an Invoker's decisions read.
#[derive(Clone, Debug)]
pub struct World {
    pub now: Timestamp,
    /// Its Command's spec; none: the Command does not exist.
    pub command: Option<CommandSpec>,
    /// Its child AsyncCommands.
    pub children: Vec<Child>,
}

/// The Invoker's decisions.
pub struct Decisions;

impl Decide for Decisions {
    type Kind = Invoker;
    type Status = InvokerStatus;
    type World = World;
    type Valid = schedule::Schedule;
    const KIND: &'static str = "Invoker";

    fn status(obj: &Invoker) -> Option<&InvokerStatus> {
        obj.status.as_ref()
    }
    fn conditions(status: &InvokerStatus) -> &[Condition] {
        &status.conditions
    }
    fn validate(inv: &Invoker, world: &World) -> Result<schedule::Schedule, Invalid> {
        validate(inv, world)
    }
    fn plan(inv: &Invoker, world: &World, sched: schedule::Schedule) -> Plan<InvokerStatus> {
        plan(inv, world, sched)
    }
    fn stalled(inv: &Invoker, world: &World, invalid: &Invalid) -> InvokerStatus {
        let mut status = observed(inv, &world.children);
        status.next_invoke_time = None;
        conditions::stall(
            &mut status.conditions,
            invalid.reason,
            &invalid.message,
            inv.metadata.generation,
            &t(world.now),
        );
        status
    }
}

fn to_duration(d: SignedDuration) -> Duration {
    let d = Duration::from_nanos(d.as_nanos().max(0) as u64);
    // Wake a hair after the slot, so "now" is at or past it.
    d + Duration::from_millis(5)
}

fn t(ts: Timestamp) -> Time {
    Time(ts)
}

/// The status carried over, with what the children say now (active runs, recent runs).
fn observed(inv: &Invoker, children: &[Child]) -> InvokerStatus {
    let uid = inv.metadata.uid.clone().unwrap_or_default();
    let prev = inv.status.clone().unwrap_or_default();
    let mut status = InvokerStatus {
        observed_generation: inv.metadata.generation,
        invoker_id: Some(format!("ivk-{}", uid.split('-').next().unwrap_or_default())),
        ..prev.clone()
    };
    status.active = {
        let mut active: Vec<&Child> = children.iter().filter(|c| !c.finished).collect();
        active.sort_by_key(|c| c.slot);
        active.iter().map(|c| c.name.clone()).collect()
    };
    status.recent_runs = recent_runs(&prev.recent_runs, children);
    status
}

fn created(inv: &Invoker, now: Timestamp) -> Timestamp {
    inv.metadata
        .creation_timestamp
        .as_ref()
        .map(|c| c.0)
        .unwrap_or(now)
}

/// Whether the Invoker can run: its schedule parses, a one-time run is not already past,
/// its Command exists and takes its parameters.
pub fn validate(inv: &Invoker, world: &World) -> Result<schedule::Schedule, Invalid> {
    let sched = schedule::parse(&inv.spec.schedule_settings)
        .map_err(|e| Invalid::new(e.reason(), e.to_string()))?;
    // Refused here once, rather than in every run it would create.
    crate::rollout::parse(inv.spec.rollout.as_ref())?;
    let created = created(inv, world.now);
    let last = inv
        .status
        .as_ref()
        .and_then(|s| s.last_invoke_time.as_ref())
        .map(|l| l.0);
    if let schedule::Schedule::Once(at) = &sched
        && last.is_none()
        && *at < created - SignedDuration::from_secs(1)
    {
        return Err(Invalid::new(
            "InvokeTimeExpired",
            format!(
                "invokeTime {at} was already past when the Invoker was created ({created}); it will not run"
            ),
        ));
    }
    let Some(command) = &world.command else {
        return Err(Invalid::new(
            "CommandNotFound",
            format!(
                "Command {} does not exist in this namespace",
                inv.spec.command_ref
            ),
        ));
    };
    let given = inv.spec.parameters.clone().unwrap_or_default();
    let defaults = command.default_parameters.clone().unwrap_or_default();
    if let Err(e) = script::render(
        command.interpreter,
        &command.content,
        command.enable_parameters,
        &defaults,
        &given,
    ) {
        return Err(Invalid::new(
            "ParameterInvalid",
            format!("Command {}: {e}", inv.spec.command_ref),
        ));
    }
    Ok(sched)
}

/// Plans a valid Invoker: whether a slot fires, the child it creates, the children it
/// deletes (replaced, or beyond the history limits), the status and when to look again.
pub fn plan(inv: &Invoker, world: &World, sched: schedule::Schedule) -> Plan<InvokerStatus> {
    let (now, children) = (world.now, world.children.as_slice());
    let name = inv.metadata.name.clone().unwrap_or_default();
    let uid = inv.metadata.uid.clone().unwrap_or_default();
    let ns = inv.metadata.namespace.clone().unwrap_or_default();
    let generation = inv.metadata.generation;
    let mut status = observed(inv, children);
    let mut p = Plan::status(InvokerStatus::default());
    let mut delete: Vec<String> = Vec::new();
    let mut create = None;
    let now_t = t(now);
    let created = created(inv, now);
    let last = status.last_invoke_time.as_ref().map(|l| l.0);
    conditions::remove(&mut status.conditions, STALLED);

    let deadline = SignedDuration::from_secs(
        inv.spec
            .starting_deadline_seconds
            .unwrap_or(DEFAULT_STARTING_DEADLINE),
    );
    let decision = if inv.spec.suspend {
        Due::NotYet { next: None }
    } else {
        schedule::due(&sched, last, created, now, deadline)
    };
    match decision {
        Due::NotYet { .. } => {}
        Due::Missed { slot, skipped } => {
            status.last_invoke_time = Some(t(slot));
            p.notes.push(Note {
                warning: true,
                reason: "MissedSchedule",
                message: format!(
                    "{skipped} scheduled run(s) up to {slot} were missed by more than startingDeadlineSeconds ({}s) and skipped",
                    deadline.as_secs()
                ),
            });
        }
        Due::Fire { slot, skipped } => {
            status.last_invoke_time = Some(t(slot));
            if skipped > 0 {
                p.notes.push(Note {
                    warning: true,
                    reason: "MissedSchedule",
                    message: format!("{skipped} earlier scheduled run(s) were missed and skipped; running the latest, {slot}"),
                });
            }
            let child = child_name(&name, slot);
            let exists = children.iter().any(|c| c.name == child);
            let active: Vec<&Child> = children
                .iter()
                .filter(|c| !c.finished && c.name != child)
                .collect();
            if exists {
                // Created before a restart that lost the status write: it is this slot's run.
            } else if !active.is_empty() && inv.spec.concurrency_policy == ConcurrencyPolicy::Forbid
            {
                p.notes.push(Note {
                    warning: true,
                    reason: "SkippedActiveRun",
                    message: format!(
                        "run for {slot} skipped: {} is still running (concurrencyPolicy Forbid)",
                        active[0].name
                    ),
                });
            } else {
                if inv.spec.concurrency_policy == ConcurrencyPolicy::Replace {
                    for a in &active {
                        delete.push(a.name.clone());
                    }
                    if !active.is_empty() {
                        p.notes.push(Note {
                            warning: false,
                            reason: "ReplacedActiveRun",
                            message: format!(
                                "stopped {} for the run of {slot} (concurrencyPolicy Replace)",
                                active.len()
                            ),
                        });
                    }
                    status.active.retain(|a| !delete.contains(a));
                }
                create = Some(child_object(inv, &uid, &child, slot));
                status.active.push(child.clone());
                status.recent_runs.insert(
                    0,
                    InvokerRun {
                        scheduled_time: t(slot),
                        async_command: child.clone(),
                        phase: Some("Pending".into()),
                        succeeded: 0,
                        failed: 0,
                    },
                );
                status.recent_runs.truncate(RECENT_RUNS);
                p.notes.push(Note {
                    warning: false,
                    reason: "Fired",
                    message: format!("created {child} for {slot}"),
                });
            }
        }
    }
    let fired_up_to = status.last_invoke_time.as_ref().map(|l| l.0);
    let next = match (&sched, inv.spec.suspend) {
        (_, true) => None,
        (schedule::Schedule::Once(at), false) => fired_up_to.is_none().then_some(*at),
        (schedule::Schedule::Recurrence { .. }, false) => {
            sched.next_after(fired_up_to.map_or(now, |f| f.max(now)))
        }
    };
    status.next_invoke_time = next.map(t);
    p.requeue = next.map(|n| to_duration(n.duration_since(now)));

    let pruned = history_to_delete(
        children,
        inv.spec.successful_history_limit,
        inv.spec.failed_history_limit,
        &delete,
    );
    delete.extend(pruned);
    // Replaced and pruned runs go first: a replaced run stops before its successor starts.
    p.before = delete
        .into_iter()
        .map(|name| Change::Delete {
            kind: ChildKind::AsyncCommand,
            namespace: ns.clone(),
            name,
        })
        .chain(create.map(|c| Change::Create(ChildObject::AsyncCommand(Box::new(c)))))
        .collect();
    let (reason, message) = match (
        inv.spec.suspend,
        &status.next_invoke_time,
        inv.spec.schedule_settings.policy,
    ) {
        (true, _, _) => ("Suspended", "suspended: no new runs start".to_string()),
        (false, Some(n), _) => ("Scheduled", format!("next run at {}", n.0)),
        (false, None, SchedulePolicy::Once) => {
            ("Done", "the one scheduled run has been started".to_string())
        }
        (false, None, SchedulePolicy::Recurrence) => {
            ("NoFutureRun", "the schedule has no future run".to_string())
        }
    };
    conditions::set(
        &mut status.conditions,
        Desired::new(READY, true, reason, message),
        generation,
        &now_t,
    );
    if status.active.is_empty() {
        conditions::remove(&mut status.conditions, RECONCILING);
    } else {
        let msg = format!("{} run(s) active", status.active.len());
        conditions::set(
            &mut status.conditions,
            Desired::new(RECONCILING, true, "RunActive", msg),
            generation,
            &now_t,
        );
    }
    p.status = status;
    p
}

#[cfg(test)]
mod tests;
