//! The per-node state machine: the events of one node's run, the phase each event moves
//! it to, and how a node's entry records a failure or what its Job says.

use k8s_openapi::jiff::Timestamp;

use super::{MESSAGE_LIMIT, time};
use crate::api::async_command::{CmdJob, NodePhase};
use crate::engine::job::job_name;
use crate::engine::outcome::{Observed, RunState};
use crate::plan::clip;

/// What happens to one node's run: the inputs of the per-node state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// nodeops created the node's Job.
    Started,
    /// The node's Job exists and has not finished.
    JobActive,
    JobSucceeded,
    JobFailed,
    /// A Job nodeops created is gone before it finished.
    JobVanished,
    /// The node does not exist.
    NodeMissing,
    /// The node stayed NotReady past the deadline.
    NodeNotReadyTimeout,
    /// The run was stopped before the node started (maxErrors).
    Cancelled,
}

impl NodeEvent {
    pub const ALL: [NodeEvent; 8] = [
        NodeEvent::Started,
        NodeEvent::JobActive,
        NodeEvent::JobSucceeded,
        NodeEvent::JobFailed,
        NodeEvent::JobVanished,
        NodeEvent::NodeMissing,
        NodeEvent::NodeNotReadyTimeout,
        NodeEvent::Cancelled,
    ];
}

/// The per-node state machine. `None`: the event does not apply in that phase (final
/// phases absorb everything, so a result once written is never rewritten).
pub fn transition(from: NodePhase, event: NodeEvent) -> Option<NodePhase> {
    use NodeEvent as E;
    use NodePhase as P;
    match (from, event) {
        (P::Pending, E::Started | E::JobActive) => Some(P::Running),
        (P::Pending | P::Running, E::JobSucceeded) => Some(P::Succeeded),
        (P::Pending | P::Running, E::JobFailed) => Some(P::Failed),
        (P::Pending, E::NodeMissing | E::NodeNotReadyTimeout) => Some(P::Failed),
        (P::Pending, E::Cancelled) => Some(P::Cancelled),
        (P::Running, E::JobActive) => Some(P::Running),
        (P::Running, E::JobVanished) => Some(P::Failed),
        // A running node finishes even when the node object disappears or the run is
        // stopped: its Job decides.
        (P::Running, E::NodeMissing | E::NodeNotReadyTimeout | E::Cancelled | E::Started) => None,
        (P::Pending, E::JobVanished) => None,
        (P::Succeeded | P::Failed | P::Cancelled, _) => None,
    }
}

pub(super) fn apply(e: &mut CmdJob, event: NodeEvent) {
    if let Some(next) = transition(e.phase, event) {
        e.phase = next;
    }
}

pub(super) fn fail(e: &mut CmdJob, why: &str, message: &str, now: Timestamp) {
    if e.phase == NodePhase::Failed && e.completion_time.is_none() {
        e.reason = Some(why.into());
        e.message = Some(clip(message, MESSAGE_LIMIT));
        e.completion_time = Some(time(now));
    }
}

/// Copies what the Job says into a non-final entry (the entry's phase was already moved).
pub(super) fn record(e: &mut CmdJob, obs: &Observed, owner: &str, uid: &str, now: Timestamp) {
    e.job_name = Some(job_name(owner, uid, &e.node_name));
    if matches!(obs.state, RunState::Active { .. }) {
        // A result is written once, with the entry's final phase: a Pod's report read
        // while its Job is still active would be one more status write per node (and
        // may be a try the Job replaces).
        if e.start_time.is_none() {
            e.start_time = obs.start_time.clone();
        }
        return;
    }
    e.exit_code = obs.exit_code;
    e.output = obs.output.clone();
    e.output_truncated = obs.truncated;
    e.output_head = obs.output_head.clone();
    e.output_bytes_dropped = obs
        .output_head
        .is_some()
        .then(|| i64::try_from(obs.dropped_bytes).unwrap_or(i64::MAX));
    e.reason = obs.reason.clone();
    e.message = obs.message.as_deref().map(|m| clip(m, MESSAGE_LIMIT));
    if e.start_time.is_none() {
        e.start_time = obs.start_time.clone();
    }
    // A run the Pods failed while its Job is active has no Job completion time: now. (A
    // final entry is never recorded again, so the stand-in stays put: the soak time
    // counts from it.)
    e.completion_time = obs
        .completion_time
        .clone()
        .or_else(|| matches!(obs.state, RunState::Failed | RunState::Succeeded).then(|| time(now)));
}
