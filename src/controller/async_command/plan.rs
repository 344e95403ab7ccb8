//! The AsyncCommand's decisions as plain functions of (object, observed runs, nodes, now):
//! which nodes start now, which are failed or cancelled without running, and the status
//! that results. No client, no clock: everything is passed in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::{Selector, SelectorExt};
use kube::{Resource, ResourceExt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::async_command::{
    AsyncCommand, AsyncCommandStatus, CmdJob, CommandPhase, MAX_NODES, NodePhase,
};
use crate::api::command::Command;
use crate::api::common::ExecutionMode;
use crate::api::common::scaled_limit;
use crate::conditions::{self, COMPLETE, Desired, FAILED, READY, RECONCILING};
use crate::engine::job::{Owner, RunTemplate, job_id, job_name, render};
use crate::engine::outcome::{Observed, RunState, reason};
use crate::engine::{argv, script};
pub use crate::plan::Note;
use crate::plan::{Change, Child, ChildKind, Decide, Invalid, Plan as Changes, clip};
use crate::settings::Settings;

/// Bytes of each node's output kept in status: 100 nodes of it stay far below the API
/// server's object size limit.
pub const OUTPUT_LIMIT: usize = 2048;
/// Bytes of a node's message kept in status.
pub const MESSAGE_LIMIT: usize = 512;

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

/// A node as the controller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub ready: bool,
}

/// Everything observed about the world this reconcile.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// What the operator is configured with (Host mode's namespaces, images).
    pub settings: Settings,
    /// The Command `spec.commandRef` names; none: not named, or it does not exist.
    pub command: Option<Command>,
    /// Every node of the cluster (for `nodeSelector`).
    pub fleet: Vec<Arc<Node>>,
    /// Every node of the cluster, by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Each node's Job, read back.
    pub runs: BTreeMap<String, Observed>,
    /// Nodes whose Job cannot create its Pod (admission refused), with the refusal.
    pub refused: BTreeMap<String, String>,
    pub now: Timestamp,
}

/// The decisions of one reconcile.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Nodes whose Job to create now.
    pub start: Vec<String>,
    /// Nodes whose Job to delete: the node failed while its Job is still active (refused
    /// by admission, which the Job would retry for ever, or a failure its Pods show, such
    /// as an image that cannot be pulled, which would hold a pod slot until the deadline).
    /// Applied after the status that records the failure, and planned again on every
    /// reconcile until the Job is gone, so a failed delete is retried.
    pub delete: Vec<String>,
    pub status: AsyncCommandStatus,
    /// When to look again without an event.
    pub requeue_after: Option<Duration>,
    /// Delete the AsyncCommand itself (its TTL after finishing has passed).
    pub delete_self: bool,
    pub notes: Vec<Note>,
}

fn time(ts: Timestamp) -> Time {
    Time(ts)
}

fn to_duration(d: SignedDuration) -> Duration {
    Duration::from_secs(d.as_secs().max(0) as u64) + Duration::from_millis(100)
}

/// Plans a valid AsyncCommand. `targets` are the addressed nodes, in order (resolved from
/// `nodeNames` or the selector the first time, then kept in status).
pub fn plan(obj: &AsyncCommand, targets: &[String], world: &World) -> Plan {
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
    let stop_starting = max_errors.is_some_and(|m| failed > m);
    let mut start = Vec::new();
    if stop_starting {
        let mut cancelled = 0;
        for e in entries.iter_mut().filter(|e| e.phase == NodePhase::Pending) {
            apply(e, NodeEvent::Cancelled);
            e.reason = Some(reason::MAX_ERRORS_REACHED.into());
            e.message = Some(format!(
                "not started: {failed} nodes failed, more than maxErrors allows"
            ));
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
        let limit = obj
            .spec
            .max_concurrency
            .as_ref()
            .and_then(|m| scaled_limit(m, total, 1))
            .unwrap_or(total);
        let slots = limit.saturating_sub(in_flight);
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
    if finished && prev.completion_time.is_none() {
        let (warning, reason) = if status.phase == CommandPhase::Succeeded {
            (false, "Succeeded")
        } else {
            (true, "Failed")
        };
        notes.push(Note {
            warning,
            reason,
            message: summary_message(&status),
        });
    }

    let mut delete_self = false;
    let requeue_after = if finished {
        match (
            obj.spec.ttl_seconds_after_finished,
            status.completion_time.as_ref(),
        ) {
            (Some(ttl), Some(done)) => {
                let expires = done.0 + SignedDuration::from_secs(ttl);
                if now >= expires {
                    delete_self = true;
                    None
                } else {
                    Some(to_duration(expires.duration_since(now)))
                }
            }
            _ => None,
        }
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
    Plan {
        start,
        delete,
        status,
        requeue_after,
        delete_self,
        notes,
    }
}

fn apply(e: &mut CmdJob, event: NodeEvent) {
    if let Some(next) = transition(e.phase, event) {
        e.phase = next;
    }
}

fn fail(e: &mut CmdJob, why: &str, message: &str, now: Timestamp) {
    if e.phase == NodePhase::Failed && e.completion_time.is_none() {
        e.reason = Some(why.into());
        e.message = Some(clip(message, MESSAGE_LIMIT));
        e.completion_time = Some(time(now));
    }
}

/// Copies what the Job says into a non-final entry (the entry's phase was already moved).
fn record(e: &mut CmdJob, obs: &Observed, owner: &str, uid: &str, now: Timestamp) {
    e.job_name = Some(job_name(owner, uid, &e.node_name));
    e.exit_code = obs.exit_code;
    e.output = obs.output.clone();
    e.output_truncated = obs.truncated;
    e.reason = obs.reason.clone();
    e.message = obs.message.as_deref().map(|m| clip(m, MESSAGE_LIMIT));
    if e.start_time.is_none() {
        e.start_time = obs.start_time.clone();
    }
    // A run the Pods failed while its Job is active has no Job completion time: now.
    e.completion_time = obs
        .completion_time
        .clone()
        .or_else(|| (obs.state == RunState::Failed).then(|| time(now)));
}

fn summary_message(s: &AsyncCommandStatus) -> String {
    format!(
        "{} of {} nodes succeeded, {} failed, {} cancelled",
        s.succeeded, s.total, s.failed, s.cancelled
    )
}

/// The seed's task id: the object's uid without dashes (32 hex).
fn task_id(obj: &AsyncCommand) -> String {
    obj.metadata
        .uid
        .clone()
        .unwrap_or_default()
        .replace('-', "")
}

/// The status for `entries`: counts, phase, progress and conditions.
fn summarize(
    obj: &AsyncCommand,
    prev: &AsyncCommandStatus,
    entries: Vec<CmdJob>,
    now: Timestamp,
) -> AsyncCommandStatus {
    let count = |p: NodePhase| entries.iter().filter(|e| e.phase == p).count() as i32;
    let total = entries.len() as i32;
    let (pending, running, succeeded, failed, cancelled) = (
        count(NodePhase::Pending),
        count(NodePhase::Running),
        count(NodePhase::Succeeded),
        count(NodePhase::Failed),
        count(NodePhase::Cancelled),
    );
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

/// The AsyncCommand's decisions.
pub struct Decisions;

impl Decide for Decisions {
    type Kind = AsyncCommand;
    type Status = AsyncCommandStatus;
    type World = World;
    /// What each node runs, and the addressed nodes.
    type Valid = (RunTemplate, Vec<String>);
    const KIND: &'static str = "AsyncCommand";

    fn status(obj: &AsyncCommand) -> Option<&AsyncCommandStatus> {
        obj.status.as_ref()
    }
    fn conditions(status: &AsyncCommandStatus) -> &[Condition] {
        &status.conditions
    }
    fn validate(obj: &AsyncCommand, world: &World) -> Result<Self::Valid, Invalid> {
        Ok((template(obj, world)?, targets(obj, world)?))
    }
    fn plan(
        obj: &AsyncCommand,
        world: &World,
        (template, targets): Self::Valid,
    ) -> Changes<AsyncCommandStatus> {
        let planned = plan(obj, &targets, world);
        let owner = owner_of(obj);
        let ns = obj.namespace().unwrap_or_default();
        let mut after: Vec<Change> = planned
            .delete
            .iter()
            .map(|node| Change::Delete {
                kind: ChildKind::Job,
                namespace: ns.clone(),
                name: job_name(&owner.name, &owner.uid, node),
            })
            .collect();
        if planned.delete_self {
            after.push(Change::Delete {
                kind: ChildKind::Itself,
                namespace: ns,
                name: owner.name.clone(),
            });
        }
        Changes {
            // A Job is never changed once created: a plain create, where an existing Job
            // of the same name (created before a restart) is success.
            before: planned
                .start
                .iter()
                .map(|node| Change::Create(Child::Job(Box::new(render(&owner, node, &template)))))
                .collect(),
            status: planned.status,
            after,
            notes: planned.notes,
            requeue: planned.requeue_after,
        }
    }
    fn stalled(obj: &AsyncCommand, world: &World, why: &Invalid) -> AsyncCommandStatus {
        invalid(obj, why.reason, &why.message, world.now)
    }
    fn outcomes(status: &AsyncCommandStatus) -> Vec<(String, String, String)> {
        status
            .cmd_jobs
            .iter()
            .filter(|e| e.phase.is_final())
            .map(|e| {
                (
                    e.node_name.clone(),
                    format!("{:?}", e.phase),
                    e.reason.clone().unwrap_or_else(|| "-".into()),
                )
            })
            .collect()
    }
}

fn owner_of(obj: &AsyncCommand) -> Owner {
    Owner {
        kind: AsyncCommand::kind(&()).into(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        reference: obj.controller_owner_ref(&()).unwrap_or_default(),
    }
}

/// What each node runs, or why the spec cannot run.
pub fn template(obj: &AsyncCommand, world: &World) -> Result<RunTemplate, Invalid> {
    let spec = &obj.spec;
    let settings = &world.settings;
    let ns = obj.namespace().unwrap_or_default();
    if spec.execution_mode == ExecutionMode::Host && !settings.host_mode_namespaces.contains(&ns) {
        return Err(Invalid::new(
            "HostModeNotAllowed",
            format!(
                "executionMode Host is not allowed in namespace {ns}; the operator allows it in: {}",
                settings.host_mode_allowed_in()
            ),
        ));
    }
    let mut t = RunTemplate {
        mode: spec.execution_mode,
        image: spec
            .image
            .clone()
            .unwrap_or_else(|| settings.default_image.clone()),
        runner_image: settings.runner_image.clone(),
        host_process: settings.host_process.clone(),
        image_pull_policy: settings.image_pull_policy.clone(),
        username: spec.username.clone(),
        working_directory: spec.working_directory.clone(),
        timeout_seconds: spec.timeout_seconds,
        backoff_limit: spec.backoff_limit,
        pod_annotations: spec.pod_annotations.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(command) = &spec.command {
        t.argv = argv::split(command).map_err(|e| Invalid::new("InvalidCommand", e.to_string()))?;
    } else if let Some(name) = &spec.command_ref {
        let Some(command) = &world.command else {
            return Err(Invalid::new(
                "CommandNotFound",
                format!("Command {name} does not exist in namespace {ns}"),
            ));
        };
        let c = &command.spec;
        let given = spec.parameters.clone().unwrap_or_default();
        let defaults = c.default_parameters.clone().unwrap_or_default();
        let (argv, env) = script::render(
            c.interpreter,
            &c.content,
            c.enable_parameters,
            &defaults,
            &given,
        )
        .map_err(|e| Invalid::new("ParameterInvalid", format!("Command {name}: {e}")))?;
        t.argv = argv;
        t.env = env;
        t.timeout_seconds = c.timeout_seconds;
        t.username = spec.username.clone().or_else(|| c.username.clone());
        t.working_directory = spec
            .working_directory
            .clone()
            .or_else(|| c.working_directory.clone());
    }
    Ok(t)
}

/// The addressed nodes: those already recorded in status (the set is fixed when the
/// command starts), else `nodeNames`, else the nodes the selector matches now.
pub fn targets(obj: &AsyncCommand, world: &World) -> Result<Vec<String>, Invalid> {
    if let Some(status) = &obj.status
        && !status.cmd_jobs.is_empty()
    {
        return Ok(status
            .cmd_jobs
            .iter()
            .map(|e| e.node_name.clone())
            .collect());
    }
    if let Some(names) = &obj.spec.node_names {
        return Ok(names.clone());
    }
    let Some(selector) = &obj.spec.node_selector else {
        return Err(Invalid::new(
            "NoNodes",
            "neither nodeNames nor nodeSelector is set",
        ));
    };
    let selector = Selector::try_from(selector.clone())
        .map_err(|e| Invalid::new("InvalidNodeSelector", e.to_string()))?;
    let mut names: Vec<String> = world
        .fleet
        .iter()
        .filter(|n| selector.matches(n.labels()))
        .map(|n| n.name_any())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(Invalid::new(
            "NoNodesSelected",
            "the nodeSelector matches no node",
        ));
    }
    if names.len() > MAX_NODES {
        return Err(Invalid::new(
            "TooManyNodes",
            format!(
                "the nodeSelector matches {} nodes; at most {MAX_NODES} are allowed",
                names.len()
            ),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
