//! The overall status of an AgentInvocation from its instances: phase, progress,
//! completion time, conditions, and the Events the change deserves.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::agent_invocation::{
    AgentInvocation, AgentInvocationPhase, AgentInvocationStatus, InvocationPhase, InvocationResult,
};
use crate::conditions::{self, COMPLETE, Desired, FAILED, READY, RECONCILING};
use crate::plan::Note;

/// The status recording `entries` (the instances after this reconcile's step), given the
/// stored status `prev`, with the Events to emit: Started on the first status, Succeeded
/// or Failed when the invocation completes.
pub(super) fn summarize(
    obj: &AgentInvocation,
    prev: &AgentInvocationStatus,
    entries: Vec<InvocationResult>,
    now: Timestamp,
) -> (AgentInvocationStatus, Vec<Note>) {
    let generation = obj.metadata.generation;
    let total = entries.len();
    let succeeded = entries
        .iter()
        .filter(|e| e.phase == InvocationPhase::Succeeded)
        .count();
    let failed = entries
        .iter()
        .filter(|e| e.phase == InvocationPhase::Failed)
        .count();
    let running = total - succeeded - failed;
    let all_final = running == 0;
    let phase = if !all_final {
        AgentInvocationPhase::Running
    } else if failed == 0 {
        AgentInvocationPhase::Succeeded
    } else {
        AgentInvocationPhase::Failed
    };
    let summary = format!("{succeeded} of {total} instances succeeded, {failed} failed");
    let mut status = AgentInvocationStatus {
        observed_generation: generation,
        phase,
        progress: Some(format!("{succeeded}/{total}")),
        invocations: entries,
        completion_time: if all_final {
            prev.completion_time.clone().or(Some(Time(now)))
        } else {
            None
        },
        conditions: prev.conditions.clone(),
    };
    let now_t = Time(now);
    let conds = &mut status.conditions;
    let ok = failed == 0;
    let failure = (all_final && !ok).then(|| ("InstancesFailed", summary.clone()));
    let desired = if all_final {
        conditions::remove(conds, RECONCILING);
        vec![
            Desired::new(COMPLETE, true, "AllInstancesFinished", summary.clone()),
            Desired::new(
                FAILED,
                !ok,
                if ok {
                    "NoInstanceFailed"
                } else {
                    "InstancesFailed"
                },
                summary.clone(),
            ),
            Desired::new(
                READY,
                ok,
                if ok { "Succeeded" } else { "InstancesFailed" },
                summary.clone(),
            ),
        ]
    } else {
        let progress = format!(
            "{} of {total} instances finished, {running} running",
            total - running
        );
        vec![
            Desired::new(RECONCILING, true, "Running", progress.clone()),
            Desired::new(READY, false, "Running", progress.clone()),
            Desired::new(COMPLETE, false, "Running", progress),
        ]
    };
    let mut completed_now = false;
    for d in desired {
        let is_complete = d.type_ == COMPLETE && d.status;
        let transitioned = conditions::set(conds, d, generation, &now_t);
        completed_now |= is_complete && transitioned;
    }
    conditions::stalled_if_failed(conds, failure, generation, &now_t);
    let mut notes = Vec::new();
    if prev.invocations.is_empty() && total > 0 {
        notes.push(Note {
            warning: false,
            reason: "Started",
            message: format!(
                "{:?} of agent {} on {total} instances",
                obj.spec.invocation_type, obj.spec.invocation_target
            ),
        });
    }
    if completed_now {
        notes.push(Note {
            warning: failed > 0,
            reason: if failed > 0 { "Failed" } else { "Succeeded" },
            message: summary,
        });
    }
    (status, notes)
}
