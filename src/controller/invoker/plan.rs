//! The Invoker's decisions as plain functions of (invoker, its Command, its children, now):
//! whether a slot fires, what the child AsyncCommand is, which children to delete, and the
//! status. The last fired slot lives in status, never in the existence of children, so
//! neither a restart nor a pruned child ever fires a slot twice.

use crate::keys::{INVOKER_UID_LABEL, SCHEDULED_TIME_ANNOTATION};
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::api::async_command::{AsyncCommand, CommandPhase};
use crate::api::command::CommandSpec;
use crate::api::invoker::{ConcurrencyPolicy, Invoker, InvokerRun, InvokerStatus, SchedulePolicy};
use crate::conditions::{self, Desired, READY, RECONCILING, STALLED};
use crate::engine::script;
use crate::plan::Note;
use crate::schedule::{self, Due};

/// Starting deadline when the spec sets none.
pub const DEFAULT_STARTING_DEADLINE: i64 = 60;
/// Runs kept in `status.recentRuns`.
const RECENT_RUNS: usize = 10;

/// A child AsyncCommand of the Invoker, as read back.
#[derive(Clone, Debug)]
pub struct Child {
    pub name: String,
    pub slot: Timestamp,
    pub phase: CommandPhase,
    pub finished: bool,
    pub succeeded: i32,
    pub failed: i32,
}

impl Child {
    /// Reads a child; `None` if it does not carry its slot.
    pub fn from(obj: &AsyncCommand) -> Option<Child> {
        let slot = obj
            .metadata
            .annotations
            .as_ref()?
            .get(SCHEDULED_TIME_ANNOTATION)?
            .parse()
            .ok()?;
        let status = obj.status.clone().unwrap_or_default();
        Some(Child {
            name: obj.metadata.name.clone()?,
            slot,
            phase: status.phase,
            finished: status.completion_time.is_some() || status.phase == CommandPhase::Invalid,
            succeeded: status.succeeded,
            failed: status.failed + status.cancelled,
        })
    }
}

/// The decisions of one reconcile.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The child to create now: (name, manifest).
    pub create: Option<(String, Value)>,
    /// Children to delete (replaced, or beyond the history limits).
    pub delete: Vec<String>,
    pub status: InvokerStatus,
    pub requeue_after: Option<Duration>,
    pub notes: Vec<Note>,
}

/// The child's name: the Invoker's name and the slot in minutes since the epoch, as
/// CronJob names its Jobs: the same slot always gives the same name.
pub fn child_name(invoker: &str, slot: Timestamp) -> String {
    let minutes = slot.as_second().div_euclid(60);
    let suffix = format!("-{minutes}");
    let mut prefix: String = invoker.chars().take(253 - suffix.len()).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

fn to_duration(d: SignedDuration) -> Duration {
    let d = Duration::from_nanos(d.as_nanos().max(0) as u64);
    // Wake a hair after the slot, so "now" is at or past it.
    d + Duration::from_millis(5)
}

fn t(ts: Timestamp) -> Time {
    Time(ts)
}

/// Plans an Invoker. `command` is its Command's spec (None: it does not exist).
pub fn plan(
    inv: &Invoker,
    command: Option<&CommandSpec>,
    children: &[Child],
    now: Timestamp,
) -> Plan {
    let name = inv.metadata.name.clone().unwrap_or_default();
    let uid = inv.metadata.uid.clone().unwrap_or_default();
    let generation = inv.metadata.generation;
    let prev = inv.status.clone().unwrap_or_default();
    let mut status = InvokerStatus {
        observed_generation: generation,
        invoker_id: Some(format!("ivk-{}", uid.split('-').next().unwrap_or_default())),
        ..prev.clone()
    };
    status.active = {
        let mut active: Vec<&Child> = children.iter().filter(|c| !c.finished).collect();
        active.sort_by_key(|c| c.slot);
        active.iter().map(|c| c.name.clone()).collect()
    };
    status.recent_runs = recent_runs(&prev.recent_runs, children);
    let mut p = Plan::default();
    let now_t = t(now);

    let stall = |mut status: InvokerStatus,
                 reason: &'static str,
                 message: String,
                 notes: &mut Vec<Note>| {
        let was = conditions::is_true(&status.conditions, STALLED)
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == STALLED && c.reason == reason);
        status.next_invoke_time = None;
        conditions::stall(&mut status.conditions, reason, &message, generation, &now_t);
        if !was {
            notes.push(Note {
                warning: true,
                reason,
                message,
            });
        }
        status
    };

    let sched = match schedule::parse(&inv.spec.schedule_settings) {
        Ok(s) => s,
        Err(e) => {
            p.status = stall(status, e.reason(), e.to_string(), &mut p.notes);
            return p;
        }
    };
    let created = inv
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|c| c.0)
        .unwrap_or(now);
    let last = prev.last_invoke_time.as_ref().map(|l| l.0);
    if let schedule::Schedule::Once(at) = &sched
        && last.is_none()
        && *at < created - SignedDuration::from_secs(1)
    {
        let msg = format!(
            "invokeTime {at} was already past when the Invoker was created ({created}); it will not run"
        );
        p.status = stall(status, "InvokeTimeExpired", msg, &mut p.notes);
        return p;
    }
    let Some(command) = command else {
        let msg = format!(
            "Command {} does not exist in this namespace",
            inv.spec.command_ref
        );
        p.status = stall(status, "CommandNotFound", msg, &mut p.notes);
        return p;
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
        let msg = format!("Command {}: {e}", inv.spec.command_ref);
        p.status = stall(status, "ParameterInvalid", msg, &mut p.notes);
        return p;
    }
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
                        p.delete.push(a.name.clone());
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
                    status.active.retain(|a| !p.delete.contains(a));
                }
                p.create = Some((child.clone(), child_manifest(inv, &uid, &child, slot)));
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
    p.requeue_after = next.map(|n| to_duration(n.duration_since(now)));

    p.delete.extend(history_to_delete(
        children,
        inv.spec.successful_history_limit,
        inv.spec.failed_history_limit,
        &p.delete,
    ));
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

fn child_manifest(inv: &Invoker, uid: &str, child: &str, slot: Timestamp) -> Value {
    let spec = &inv.spec;
    let mut child_spec = json!({
        "commandRef": spec.command_ref,
        "executionMode": spec.execution_mode,
    });
    let obj = child_spec.as_object_mut().expect("object literal");
    if let Some(n) = &spec.node_names {
        obj.insert("nodeNames".into(), json!(n));
    }
    if let Some(s) = &spec.node_selector {
        obj.insert("nodeSelector".into(), json!(s));
    }
    if let Some(u) = &spec.username {
        obj.insert("username".into(), json!(u));
    }
    if let Some(params) = &spec.parameters {
        obj.insert("parameters".into(), json!(params));
    }
    let mut labels: BTreeMap<String, String> = inv.metadata.labels.clone().unwrap_or_default();
    labels.insert(INVOKER_UID_LABEL.into(), uid.into());
    labels.insert("app.kubernetes.io/managed-by".into(), "nodeops".into());
    json!({
        "apiVersion": "nodeops.io/v1alpha1",
        "kind": "AsyncCommand",
        "metadata": {
            "name": child,
            "namespace": inv.metadata.namespace,
            "labels": labels,
            "annotations": {SCHEDULED_TIME_ANNOTATION: slot.to_string()},
            "ownerReferences": [{
                "apiVersion": "nodeops.io/v1alpha1", "kind": "Invoker",
                "name": inv.metadata.name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": child_spec
    })
}

/// Merges the children's current state into the recent runs, newest first. Runs whose
/// child was pruned keep their last known state.
fn recent_runs(prev: &[InvokerRun], children: &[Child]) -> Vec<InvokerRun> {
    let mut runs: BTreeMap<String, InvokerRun> = prev
        .iter()
        .map(|r| (r.async_command.clone(), r.clone()))
        .collect();
    for c in children {
        runs.insert(
            c.name.clone(),
            InvokerRun {
                scheduled_time: t(c.slot),
                async_command: c.name.clone(),
                phase: Some(format!("{:?}", c.phase)),
                succeeded: c.succeeded,
                failed: c.failed,
            },
        );
    }
    let mut runs: Vec<InvokerRun> = runs.into_values().collect();
    runs.sort_by(|a, b| b.scheduled_time.cmp(&a.scheduled_time));
    runs.truncate(RECENT_RUNS);
    runs
}

/// Finished children beyond the history limits, oldest first to go.
fn history_to_delete(
    children: &[Child],
    keep_ok: i32,
    keep_failed: i32,
    already: &[String],
) -> Vec<String> {
    let mut finished: Vec<&Child> = children
        .iter()
        .filter(|c| c.finished && !already.contains(&c.name))
        .collect();
    finished.sort_by_key(|c| std::cmp::Reverse(c.slot));
    let (ok, failed): (Vec<&Child>, Vec<&Child>) = finished
        .into_iter()
        .partition(|c| c.phase == CommandPhase::Succeeded);
    let mut out: Vec<String> = ok
        .iter()
        .skip(keep_ok.max(0) as usize)
        .map(|c| c.name.clone())
        .collect();
    out.extend(
        failed
            .iter()
            .skip(keep_failed.max(0) as usize)
            .map(|c| c.name.clone()),
    );
    out
}

#[cfg(test)]
mod tests;
