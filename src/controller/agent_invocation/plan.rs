//! The AgentInvocation plan, a pure function of (invocation, agent, nodes, agent pods,
//! installer Jobs, earlier invocations, now).
//!
//! Each instance is a small state machine ([`step()`]):
//!
//! ```text
//! Pending --precondition unmet--> Failed (00NN code, nothing changed)
//! Pending --already at target---> Succeeded (no-op, with a message)
//! Pending --otherwise-----------> Running (versionBefore recorded, nothing changed yet)
//! Running --done----------------> Succeeded | Failed (01NN code)
//! ```
//!
//! Effects (a node label, a Job, the remote install host) are only ever produced for an
//! instance whose `Running` entry is already in the stored status, and they are applied
//! before the status that records their result. So a crash at any point repeats an
//! idempotent effect at worst; it never forgets a versionBefore or reports a change that
//! did not happen.
//!
//! The parts, each in its own file: `instances` (the instances the spec asks for, and
//! the sources and remote hosts to read for them), `step` (the state machine above),
//! `outcome` (an instance's final entry, and what a failed Job means) and `status` (the
//! overall status and conditions). This file holds the types and [`plan()`], which puts
//! them together.

mod instances;
mod outcome;
mod status;
mod step;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use crate::api::agent_invocation::{
    AgentInvocation, AgentInvocationPhase, AgentInvocationStatus, InstanceAction, InvocationPhase,
    InvocationResult, RemoteInstallHost,
};
use crate::api::node_agent::{AgentMode, NodeAgentSpec};
use crate::engine::outcome::Observed;
use crate::plan::Note;

pub use instances::{instances, remote_hosts, wanted_sources};
pub use outcome::job_failure;
pub use step::{job_name, step};

/// The seed's limit on an error message.
pub const MESSAGE_LIMIT: usize = 128;
/// How long a running invocation goes at most without looking again when no event comes:
/// a safety net. What time alone moves (an agent pod Ready long enough, a ready timeout)
/// is looked at when it is due ([`next_look`]); everything else comes as an event (node
/// labels, agent pods, Jobs).
pub const POLL: Duration = Duration::from_secs(10);
/// The soonest a running invocation looks again.
const SOONEST: Duration = Duration::from_millis(100);

/// One node as seen now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub ready: bool,
    /// The agent's version label.
    pub version: Option<String>,
}

/// An earlier instance, found by its invocation id.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The NodeAgent it acted on.
    pub agent: String,
    pub result: InvocationResult,
    /// The host it installed on, for a RemoteInstall instance.
    pub remote: Option<RemoteInstallHost>,
}

/// Whether the agent's installer (HostInstaller Command or remote installer) can be used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Installer {
    #[default]
    Usable,
    /// Why not (the Command is missing or its script is invalid).
    Unusable(String),
}

/// Everything observed this reconcile.
#[derive(Clone, Debug)]
pub struct World {
    pub now: Timestamp,
    pub agent: NodeAgentSpec,
    pub nodes: BTreeMap<String, NodeFacts>,
    /// (node, version) pairs whose agent pod is Ready (DaemonSet mode).
    pub ready_pods: BTreeSet<(String, String)>,
    /// (node, version) pairs whose agent pod is Ready but not for long enough yet, with
    /// when it will have been ([`crate::agent::AGENT_MIN_READY`]).
    pub ready_soon: BTreeMap<(String, String), Timestamp>,
    /// Installer and remote-install Jobs, by invocation id.
    pub runs: BTreeMap<String, Observed>,
    /// Earlier instances named by Rollback and Retry, by invocation id.
    pub sources: BTreeMap<String, Source>,
    /// Whether the agent's namespace may run Host-mode pods.
    pub host_mode_allowed: bool,
    /// The HostInstaller Command (HostInstaller mode).
    pub installer: Installer,
    /// The remote installer Command (RemoteInstall).
    pub remote_installer: Option<Installer>,
    /// Nodes another invocation of the same agent is changing now: node -> that
    /// invocation (`namespace/name`). Two invocations on one node would fight over its label.
    pub busy: BTreeMap<String, String>,
}

/// A change to the world, applied before the status that records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Set (or with `None` remove) the node's agent version label.
    SetLabel {
        node: String,
        version: Option<String>,
    },
    /// Create the installer (node) or remote-install (remote host) Job of an instance.
    CreateJob { invocation_id: String },
    /// Make `node` the agent's remote install host.
    SetRemoteInstallHost { node: String },
}

/// What to do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub status: AgentInvocationStatus,
    pub effects: Vec<Effect>,
    pub notes: Vec<Note>,
    /// When to look again without an event.
    pub requeue: Option<Duration>,
}

/// When a running invocation with nothing to do now can move by time alone: the soonest
/// of its agent pods Ready long enough and of its ready timeouts (DaemonSet mode), and at
/// the latest [`POLL`].
pub fn next_look(entries: &[InvocationResult], world: &World) -> Duration {
    let node_action = |e: &InvocationResult| {
        matches!(
            e.action.unwrap_or(InstanceAction::Install),
            InstanceAction::Install | InstanceAction::Update | InstanceAction::Rollback
        )
    };
    let timeout = jiff::SignedDuration::from_secs(world.agent.ready_timeout_seconds.max(0));
    let due = entries
        .iter()
        .filter(|e| e.phase == InvocationPhase::Running && node_action(e))
        .filter(|_| world.agent.mode == AgentMode::DaemonSet)
        .flat_map(|e| {
            let ready = e.target_version.as_ref().and_then(|v| {
                world
                    .ready_soon
                    .get(&(e.instance_id.clone(), v.clone()))
                    .copied()
            });
            let deadline = e
                .start_time
                .as_ref()
                .and_then(|t| t.0.checked_add(timeout).ok());
            [ready, deadline]
        })
        .flatten()
        .min();
    let left = due.map_or(POLL, |at| {
        Duration::try_from(world.now.duration_until(at)).unwrap_or(Duration::ZERO)
    });
    left.clamp(SOONEST, POLL)
}

/// The whole plan: new instances, one step of each, the overall status.
pub fn plan(obj: &AgentInvocation, world: &World) -> Plan {
    let prev = obj.status.clone().unwrap_or_default();
    let mut entries = if prev.invocations.is_empty() {
        instances(obj, world)
    } else {
        prev.invocations.clone()
    };
    let mut effects = Vec::new();
    let mut started = false;
    for e in entries.iter_mut() {
        let was_running = e.phase == InvocationPhase::Running;
        let (next, fx) = step(e, world);
        started |= !was_running && next.phase == InvocationPhase::Running;
        *e = next;
        if fx.iter().any(|f| matches!(f, Effect::CreateJob { .. })) {
            e.job_name = Some(job_name(obj, e));
        }
        effects.extend(fx);
    }
    let (status, notes) = status::summarize(obj, &prev, entries, world.now);
    let all_final = status.phase != AgentInvocationPhase::Running;
    let requeue = if started || !effects.is_empty() {
        // Effects wait for the status that records Running: come straight back.
        Some(Duration::from_millis(100))
    } else if !all_final {
        Some(next_look(&status.invocations, world))
    } else {
        None
    };
    Plan {
        status,
        effects,
        notes,
        requeue,
    }
}

#[cfg(test)]
mod tests;
