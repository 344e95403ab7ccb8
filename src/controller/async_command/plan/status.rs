//! The AsyncCommand's status: counts, phase, progress and conditions from its nodes'
//! entries, or the Stalled status of one that cannot run.

use k8s_openapi::jiff::Timestamp;

use super::{Note, time};
use crate::api::async_command::{
    AsyncCommand, AsyncCommandStatus, CmdJob, CommandPhase, NodePhase,
};
use crate::conditions::{self, COMPLETE, Desired, FAILED, READY, RECONCILING};

pub(super) fn summary_message(s: &AsyncCommandStatus) -> String {
    format!(
        "{} of {} nodes succeeded, {} failed, {} cancelled",
        s.succeeded, s.total, s.failed, s.cancelled
    )
}

/// The Event of a command that finished with this status write.
pub(super) fn finished_note(
    prev: &AsyncCommandStatus,
    status: &AsyncCommandStatus,
) -> Option<Note> {
    if status.completion_time.is_none() || prev.completion_time.is_some() {
        return None;
    }
    let (warning, reason) = if status.phase == CommandPhase::Succeeded {
        (false, "Succeeded")
    } else {
        (true, "Failed")
    };
    Some(Note {
        warning,
        reason,
        message: summary_message(status),
    })
}

/// The seed's task id: the object's uid without dashes (32 hex).
fn task_id(obj: &AsyncCommand) -> String {
    obj.metadata
        .uid
        .clone()
        .unwrap_or_default()
        .replace('-', "")
}

/// Nodes in each phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub pending: i32,
    pub running: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub cancelled: i32,
}

impl Counts {
    pub fn of(entries: &[CmdJob]) -> Counts {
        let count = |p: NodePhase| entries.iter().filter(|e| e.phase == p).count() as i32;
        Counts {
            pending: count(NodePhase::Pending),
            running: count(NodePhase::Running),
            succeeded: count(NodePhase::Succeeded),
            failed: count(NodePhase::Failed),
            cancelled: count(NodePhase::Cancelled),
        }
    }

    pub fn add(&mut self, other: Counts) {
        self.pending += other.pending;
        self.running += other.running;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }

    pub fn total(&self) -> i32 {
        self.pending + self.running + self.succeeded + self.failed + self.cancelled
    }
}

/// Nodes with a Job, of `entries`: the starts a batch has used of its allowance.
pub(super) fn started(entries: &[CmdJob]) -> usize {
    entries.iter().filter(|e| e.job_name.is_some()).count()
}

/// The status for `entries`: counts, phase, progress and conditions.
pub(super) fn summarize(
    obj: &AsyncCommand,
    prev: &AsyncCommandStatus,
    entries: Vec<CmdJob>,
    now: Timestamp,
) -> AsyncCommandStatus {
    let counts = Counts::of(&entries);
    summary(obj, prev, counts, entries, now)
}

/// The status for nodes in `counts` (`entries`: their entries, none for a fleet).
pub(super) fn summary(
    obj: &AsyncCommand,
    prev: &AsyncCommandStatus,
    counts: Counts,
    entries: Vec<CmdJob>,
    now: Timestamp,
) -> AsyncCommandStatus {
    let total = counts.total();
    let Counts {
        pending,
        running,
        succeeded,
        failed,
        cancelled,
    } = counts;
    let all_final = pending == 0 && running == 0;
    let phase = if all_final {
        if failed == 0 && cancelled == 0 {
            CommandPhase::Succeeded
        } else {
            CommandPhase::Failed
        }
    } else if running > 0 || succeeded + failed + cancelled > 0 {
        CommandPhase::Running
    } else {
        CommandPhase::Pending
    };
    let generation = obj.metadata.generation;
    let mut status = AsyncCommandStatus {
        observed_generation: generation,
        task_id: Some(task_id(obj)),
        phase,
        progress: Some(format!("{succeeded}/{total}")),
        total,
        pending,
        running,
        succeeded,
        failed,
        cancelled,
        start_time: prev.start_time.clone(),
        completion_time: if all_final {
            prev.completion_time.clone().or_else(|| Some(time(now)))
        } else {
            None
        },
        cmd_jobs: entries,
        next_start_time: None,
        fleet: prev.fleet.clone(),
        conditions: prev.conditions.clone(),
    };
    let now_t = time(now);
    let s = summary_message(&status);
    let conds = &mut status.conditions;
    let ok = phase == CommandPhase::Succeeded;
    let failure = (all_final && !ok).then(|| ("NodesFailed", s.clone()));
    let desired = if all_final {
        conditions::remove(conds, RECONCILING);
        let (failed_reason, ready_reason) = if ok {
            ("NoNodeFailed", "Succeeded")
        } else {
            ("NodesFailed", "NodesFailed")
        };
        vec![
            Desired::new(COMPLETE, true, "AllNodesFinished", s.clone()),
            Desired::new(FAILED, !ok, failed_reason, s.clone()),
            Desired::new(READY, ok, ready_reason, s),
        ]
    } else {
        let progress = format!(
            "{} of {total} nodes finished, {running} running",
            total - pending - running
        );
        vec![
            Desired::new(RECONCILING, true, "Running", progress.clone()),
            Desired::new(READY, false, "Running", progress.clone()),
            Desired::new(COMPLETE, false, "Running", progress),
        ]
    };
    for d in desired {
        conditions::set(conds, d, generation, &now_t);
    }
    conditions::stalled_if_failed(conds, failure, generation, &now_t);
    status
}

/// The status of an AsyncCommand that cannot run: Stalled with a machine reason, nothing
/// started. Nodes already recorded keep their entries.
pub fn invalid(obj: &AsyncCommand, why: &str, message: &str, now: Timestamp) -> AsyncCommandStatus {
    let prev = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let mut status = AsyncCommandStatus {
        observed_generation: generation,
        task_id: Some(task_id(obj)),
        phase: CommandPhase::Invalid,
        ..prev.clone()
    };
    conditions::stall(&mut status.conditions, why, message, generation, &time(now));
    status
}
