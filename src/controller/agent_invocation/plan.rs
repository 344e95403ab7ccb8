//! The AgentInvocation plan, a pure function of (invocation, agent, nodes, agent pods,
//! installer Jobs, earlier invocations, now).
//!
//! Each instance is a small state machine ([`step`]):
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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::codes::ErrorCode;
use crate::agent::{invocation_id, is_label_value, resolve_version};
use crate::api::agent_invocation::{
    AgentInvocation, AgentInvocationPhase, AgentInvocationStatus, InstanceAction, InvocationPhase,
    InvocationResult, InvocationType, RemoteInstallHost, RetStatus,
};
use crate::api::node_agent::{AgentMode, NodeAgentSpec};
use crate::conditions::{self, COMPLETE, Desired, FAILED, READY, RECONCILING};
use crate::engine::outcome::{Observed, RunState, reason};
use crate::exec::remote::SSH_FAILED_EXIT_CODE;
use crate::exec::{START_FAILED_EXIT_CODE, TIMEOUT_EXIT_CODE};
use crate::plan::Note;

/// The seed's limit on an error message.
pub const MESSAGE_LIMIT: usize = 128;
/// How often a running invocation looks again without an event.
pub const POLL: Duration = Duration::from_secs(2);

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

/// The earlier instances a Rollback or Retry still needs, by invocation id.
///
/// Before the first status write every one named in the spec (the plan builds the
/// instances from them); afterwards the sources of instances not final yet, because a
/// retried RemoteInstall's host (user, port, Secret) lives only in its source's spec.
pub fn wanted_sources(obj: &AgentInvocation) -> BTreeSet<String> {
    if !matches!(
        obj.spec.invocation_type,
        InvocationType::Rollback | InvocationType::Retry
    ) {
        return BTreeSet::new();
    }
    match &obj.status {
        Some(s) if !s.invocations.is_empty() => s
            .invocations
            .iter()
            .filter(|e| !e.phase.is_final() && e.action == Some(InstanceAction::RemoteInstall))
            .filter_map(|e| e.source_invocation_id.clone())
            .collect(),
        _ => obj.spec.invocation_ids.iter().flatten().cloned().collect(),
    }
}

/// The remote host of each RemoteInstall instance (from the spec, or for a Retry from the
/// source invocation's spec), by invocation id.
pub fn remote_hosts(
    obj: &AgentInvocation,
    sources: &BTreeMap<String, Source>,
) -> BTreeMap<String, RemoteInstallHost> {
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for host in obj.spec.remote_install_meta.iter().flatten() {
        let id = crate::agent::invocation_id(&uid, &format!("remote/{}", host.remote_ip));
        out.insert(id, host.clone());
    }
    let retried: Vec<_> = obj
        .status
        .iter()
        .flat_map(|s| s.invocations.iter())
        .filter_map(|e| Some((e.invocation_id.clone(), e.source_invocation_id.clone()?)))
        .collect();
    for (id, source) in retried {
        if let Some(remote) = sources.get(&source).and_then(|s| s.remote.clone()) {
            out.insert(id, remote);
        }
    }
    // Before the first status write the ids are not recorded yet: derive them.
    if obj.spec.invocation_type == InvocationType::Retry {
        for (source_id, source) in sources {
            if let Some(remote) = &source.remote {
                let id = crate::agent::invocation_id(&uid, &format!("retry/{source_id}"));
                out.entry(id).or_insert_with(|| remote.clone());
            }
        }
    }
    out
}

/// The instances the spec asks for, as fresh Pending entries (or immediate failures that
/// the spec and the sources alone decide).
pub fn instances(obj: &AgentInvocation, world: &World) -> Vec<InvocationResult> {
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let spec = &obj.spec;
    let entry = |key: &str, instance: &str, action: InstanceAction| InvocationResult {
        instance_id: instance.to_string(),
        invocation_id: invocation_id(&uid, key),
        action: Some(action),
        phase: InvocationPhase::Pending,
        ..Default::default()
    };
    let target = || resolve_version(&world.agent, spec.version.as_deref(), spec.version_type);
    let mut out = Vec::new();
    match spec.invocation_type {
        InvocationType::Install | InvocationType::Update | InvocationType::SetRemoteInstallHost => {
            let action = match spec.invocation_type {
                InvocationType::Install => InstanceAction::Install,
                InvocationType::Update => InstanceAction::Update,
                _ => InstanceAction::SetRemoteInstallHost,
            };
            for node in spec.node_names.iter().flatten() {
                let mut e = entry(node, node, action);
                if action != InstanceAction::SetRemoteInstallHost {
                    e.target_version = Some(target());
                }
                out.push(e);
            }
        }
        InvocationType::RemoteInstall => {
            for host in spec.remote_install_meta.iter().flatten() {
                let instance = host
                    .instance_name
                    .clone()
                    .unwrap_or_else(|| host.remote_ip.clone());
                let mut e = entry(
                    &format!("remote/{}", host.remote_ip),
                    &instance,
                    InstanceAction::RemoteInstall,
                );
                e.remote_ip = Some(host.remote_ip.clone());
                e.target_version = Some(target());
                out.push(e);
            }
        }
        InvocationType::Rollback | InvocationType::Retry => {
            let rollback = spec.invocation_type == InvocationType::Rollback;
            for id in spec.invocation_ids.iter().flatten() {
                let key = format!("{}/{id}", if rollback { "rollback" } else { "retry" });
                let source = world
                    .sources
                    .get(id)
                    .filter(|s| s.agent == spec.invocation_target);
                let Some(source) = source else {
                    let mut e = entry(
                        &key,
                        id,
                        if rollback {
                            InstanceAction::Rollback
                        } else {
                            InstanceAction::Install
                        },
                    );
                    e.source_invocation_id = Some(id.clone());
                    out.push(refuse(
                        e,
                        ErrorCode::InvocationNotFound,
                        format!(
                            "no invocation {id} of agent {} in this namespace",
                            spec.invocation_target
                        ),
                        world.now,
                    ));
                    continue;
                };
                let src = &source.result;
                let src_action = src.action.unwrap_or(InstanceAction::Install);
                let action = if rollback {
                    InstanceAction::Rollback
                } else {
                    src_action
                };
                let mut e = entry(&key, &src.instance_id, action);
                e.source_invocation_id = Some(id.clone());
                e.remote_ip = src.remote_ip.clone();
                let refusal = if rollback {
                    e.target_version = src.version_before.clone();
                    if matches!(
                        src_action,
                        InstanceAction::RemoteInstall | InstanceAction::SetRemoteInstallHost
                    ) {
                        Some((
                            ErrorCode::NotSupported,
                            format!("{src_action:?} instances cannot be rolled back"),
                        ))
                    } else if src.phase != InvocationPhase::Succeeded
                        && src.phase != InvocationPhase::Failed
                    {
                        Some((
                            ErrorCode::NothingToRollBack,
                            format!("invocation {id} has not finished"),
                        ))
                    } else if src.version_before.is_none() {
                        Some((
                            ErrorCode::NothingToRollBack,
                            format!(
                                "invocation {id} installed the agent on {}: there is no earlier version",
                                src.instance_id
                            ),
                        ))
                    } else {
                        None
                    }
                } else {
                    e.target_version = src.target_version.clone();
                    let versioned = matches!(
                        src_action,
                        InstanceAction::Install | InstanceAction::Update | InstanceAction::Rollback
                    );
                    if src.phase != InvocationPhase::Failed {
                        Some((
                            ErrorCode::NothingToRetry,
                            format!("invocation {id} is {:?}, not Failed", src.phase),
                        ))
                    } else if versioned && src.target_version.is_none() {
                        // A failed Rollback with nothing to roll back to has no version.
                        Some((
                            ErrorCode::NothingToRetry,
                            format!(
                                "invocation {id} failed before it had a version to install ({})",
                                src.error_code.as_deref().unwrap_or("no error code")
                            ),
                        ))
                    } else {
                        None
                    }
                };
                out.push(match refusal {
                    Some((code, message)) => refuse(e, code, message, world.now),
                    None => e,
                });
            }
        }
    }
    // Two instances of one invocation on one node would fight over its label.
    let mut seen = BTreeSet::new();
    for e in &mut out {
        let on_node = !matches!(e.action, Some(InstanceAction::RemoteInstall));
        if e.phase == InvocationPhase::Pending && on_node && !seen.insert(e.instance_id.clone()) {
            let node = e.instance_id.clone();
            *e = refuse(
                e.clone(),
                ErrorCode::InvocationConflict,
                format!("another instance of this invocation acts on {node}"),
                world.now,
            );
        }
    }
    out
}

fn cut(message: &str) -> String {
    crate::plan::clip(message, MESSAGE_LIMIT)
}

fn refuse(
    mut e: InvocationResult,
    code: ErrorCode,
    message: String,
    now: Timestamp,
) -> InvocationResult {
    e.phase = InvocationPhase::Failed;
    e.ret_status = Some(RetStatus::Error);
    e.error_code = Some(code.code().into());
    e.reason = Some(code.reason().into());
    e.error_message = Some(cut(&message));
    e.start_time.get_or_insert(Time(now));
    e.completion_time = Some(Time(now));
    e
}

fn succeed(
    mut e: InvocationResult,
    version_after: Option<String>,
    message: Option<String>,
    now: Timestamp,
) -> InvocationResult {
    e.phase = InvocationPhase::Succeeded;
    e.ret_status = Some(RetStatus::Successful);
    e.version_after = version_after;
    e.message = message.map(|m| cut(&m));
    e.start_time.get_or_insert(Time(now));
    e.completion_time = Some(Time(now));
    e
}

/// Why an instance cannot start, or that it has nothing to do.
#[derive(Clone, Debug, PartialEq)]
enum Start {
    Go {
        version_before: Option<String>,
    },
    NoOp {
        version: Option<String>,
        message: String,
    },
    Refuse(ErrorCode, String),
}

fn check_node(world: &World, node: &str, what: &str) -> Result<NodeFacts, (ErrorCode, String)> {
    match world.nodes.get(node) {
        None => Err((
            ErrorCode::NodeNotFound,
            format!("{what} {node} does not exist"),
        )),
        Some(n) if !n.ready => Err((
            ErrorCode::NodeNotReady,
            format!("{what} {node} is not Ready"),
        )),
        Some(n) => Ok(n.clone()),
    }
}

fn precondition(e: &InvocationResult, world: &World) -> Start {
    let action = e.action.unwrap_or(InstanceAction::Install);
    let agent = &world.agent;
    match action {
        InstanceAction::SetRemoteInstallHost => {
            if let Err((c, m)) = check_node(world, &e.instance_id, "node") {
                return Start::Refuse(c, m);
            }
            if agent.remote_install_host.as_deref() == Some(e.instance_id.as_str()) {
                return Start::NoOp {
                    version: None,
                    message: format!("{} is already the remote install host", e.instance_id),
                };
            }
            Start::Go {
                version_before: None,
            }
        }
        InstanceAction::RemoteInstall => {
            let Some(host) = &agent.remote_install_host else {
                return Start::Refuse(
                    ErrorCode::RemoteInstallHostNotSet,
                    "no remote install host: run a SetRemoteInstallHost invocation first".into(),
                );
            };
            if let Err((c, m)) = check_node(world, host, "remote install host") {
                return Start::Refuse(c, m);
            }
            match &world.remote_installer {
                None => Start::Refuse(
                    ErrorCode::RemoteInstallerNotConfigured,
                    "the NodeAgent has no spec.remoteInstaller".into(),
                ),
                Some(Installer::Unusable(why)) => {
                    Start::Refuse(ErrorCode::InstallerNotFound, why.clone())
                }
                Some(Installer::Usable) => Start::Go {
                    version_before: None,
                },
            }
        }
        InstanceAction::Install | InstanceAction::Update | InstanceAction::Rollback => {
            let target = e.target_version.clone().unwrap_or_default();
            if !is_label_value(&target) {
                return Start::Refuse(
                    ErrorCode::InvalidVersion,
                    format!("version {target:?} cannot be a node label value"),
                );
            }
            let node = match check_node(world, &e.instance_id, "node") {
                Ok(n) => n,
                Err((c, m)) => return Start::Refuse(c, m),
            };
            if let Some(other) = world.busy.get(&e.instance_id) {
                return Start::Refuse(
                    ErrorCode::InvocationConflict,
                    format!("AgentInvocation {other} is changing the agent on this node"),
                );
            }
            match (&node.version, action) {
                (Some(v), _) if *v == target => {
                    return Start::NoOp {
                        version: Some(v.clone()),
                        message: format!("already at version {v}"),
                    };
                }
                (Some(v), InstanceAction::Install) => {
                    return Start::Refuse(
                        ErrorCode::AgentAlreadyInstalled,
                        format!("version {v} is installed: use Update"),
                    );
                }
                (None, InstanceAction::Update | InstanceAction::Rollback) => {
                    return Start::Refuse(
                        ErrorCode::AgentNotInstalled,
                        "the agent is not installed on the node".into(),
                    );
                }
                _ => {}
            }
            if agent.mode == AgentMode::HostInstaller {
                if !world.host_mode_allowed {
                    return Start::Refuse(
                        ErrorCode::HostModeNotAllowed,
                        format!(
                            "namespace {} is not in the operator's --host-mode-namespaces",
                            agent.namespace
                        ),
                    );
                }
                if let Installer::Unusable(why) = &world.installer {
                    return Start::Refuse(ErrorCode::InstallerNotFound, why.clone());
                }
            }
            Start::Go {
                version_before: node.version,
            }
        }
    }
}

/// Maps a failed Job to an error code: the runner's exit codes say which step failed.
pub fn job_failure(observed: &Observed, remote: bool) -> (ErrorCode, String) {
    let detail = observed
        .message
        .clone()
        .or_else(|| observed.output.clone())
        .unwrap_or_default();
    let detail = detail.trim();
    let with = |s: String| {
        if detail.is_empty() {
            s
        } else {
            format!("{s}: {detail}")
        }
    };
    match (observed.exit_code, observed.reason.as_deref()) {
        // What the kubelet said first: the installer never ran, whatever the exit code.
        (_, Some(reason::IMAGE_NOT_AVAILABLE)) => (ErrorCode::ImageNotAvailable, detail.into()),
        (_, Some(reason::NODE_REJECTED)) => (ErrorCode::NodeRejected, detail.into()),
        // The runtime could not start the container (the runner's own start error is its
        // exit code 127, an installer failure like any other).
        (code, Some(reason::START_FAILED)) if code != Some(START_FAILED_EXIT_CODE) => {
            (ErrorCode::JobLost, detail.into())
        }
        (Some(TIMEOUT_EXIT_CODE), _) | (_, Some(reason::TIMEOUT)) => {
            (ErrorCode::InstallerTimeout, with("timed out".into()))
        }
        (Some(SSH_FAILED_EXIT_CODE), _) if remote => {
            (ErrorCode::SshFailed, with("SSH failed".into()))
        }
        // A script that failed says why in its last words, not in the runner's exit message.
        (Some(code), _) if remote => (
            ErrorCode::RemoteScriptFailed,
            last_words(observed, format!("remote script exited {code}")),
        ),
        (Some(code), _) => (
            ErrorCode::InstallerFailed,
            last_words(observed, format!("installer exited {code}")),
        ),
        (None, r) => (
            ErrorCode::JobLost,
            with(format!("the Job failed ({})", r.unwrap_or("no exit code"))),
        ),
    }
}

/// `what`, then the last line the script printed, or the runner's message when it printed
/// nothing.
fn last_words(observed: &Observed, what: String) -> String {
    let line = observed
        .output
        .as_deref()
        .and_then(|o| o.lines().rev().map(str::trim).find(|l| !l.is_empty()));
    match line.or(observed.message.as_deref().map(str::trim)) {
        Some(detail) if !detail.is_empty() => format!("{what}: {detail}"),
        _ => what,
    }
}

/// One step of one instance's state machine.
pub fn step(e: &InvocationResult, world: &World) -> (InvocationResult, Vec<Effect>) {
    let now = world.now;
    match e.phase {
        InvocationPhase::Succeeded | InvocationPhase::Failed => (e.clone(), vec![]),
        InvocationPhase::Pending => {
            let next = match precondition(e, world) {
                Start::Refuse(code, message) => refuse(e.clone(), code, message, now),
                Start::NoOp { version, message } => {
                    let mut done = e.clone();
                    done.version_before = version.clone();
                    succeed(done, version, Some(message), now)
                }
                Start::Go { version_before } => {
                    let mut running = e.clone();
                    running.phase = InvocationPhase::Running;
                    running.version_before = version_before;
                    running.start_time = Some(Time(now));
                    running
                }
            };
            (next, vec![])
        }
        InvocationPhase::Running => run(e, world),
    }
}

fn run(e: &InvocationResult, world: &World) -> (InvocationResult, Vec<Effect>) {
    let now = world.now;
    let node = e.instance_id.clone();
    let target = e.target_version.clone();
    match e.action.unwrap_or(InstanceAction::Install) {
        InstanceAction::SetRemoteInstallHost => (
            succeed(
                e.clone(),
                None,
                Some(format!("{node} is the remote install host")),
                now,
            ),
            vec![Effect::SetRemoteInstallHost { node }],
        ),
        InstanceAction::RemoteInstall => match world.runs.get(&e.invocation_id) {
            None => create_or_lost(e, now),
            Some(o) if matches!(o.state, RunState::Active { .. }) => (e.clone(), vec![]),
            Some(o) if o.state == RunState::Succeeded => (
                succeed(e.clone(), target, Some("installed over SSH".into()), now),
                vec![],
            ),
            Some(o) => {
                let (code, message) = job_failure(o, true);
                (refuse(e.clone(), code, message, now), vec![])
            }
        },
        InstanceAction::Install | InstanceAction::Update | InstanceAction::Rollback => {
            let Some(facts) = world.nodes.get(&node) else {
                return (
                    refuse(
                        e.clone(),
                        ErrorCode::NodeNotFound,
                        format!("node {node} was deleted"),
                        now,
                    ),
                    vec![],
                );
            };
            match world.agent.mode {
                AgentMode::DaemonSet => run_daemonset(e, world, facts),
                AgentMode::HostInstaller => match world.runs.get(&e.invocation_id) {
                    None => create_or_lost(e, now),
                    Some(o) if matches!(o.state, RunState::Active { .. }) => (e.clone(), vec![]),
                    Some(o) if o.state == RunState::Succeeded => {
                        let effects = if facts.version != target {
                            vec![Effect::SetLabel {
                                node,
                                version: target.clone(),
                            }]
                        } else {
                            vec![]
                        };
                        (succeed(e.clone(), target, None, now), effects)
                    }
                    Some(o) => {
                        let (code, message) = job_failure(o, false);
                        let mut failed = refuse(e.clone(), code, message, now);
                        failed.version_after = facts.version.clone();
                        (failed, vec![])
                    }
                },
            }
        }
    }
}

/// No Job: create it, unless the status says it was created (then someone deleted it, and
/// running the installer again could run it twice).
fn create_or_lost(e: &InvocationResult, now: Timestamp) -> (InvocationResult, Vec<Effect>) {
    match &e.job_name {
        Some(job) => (
            refuse(
                e.clone(),
                ErrorCode::JobLost,
                format!("Job {job} was deleted before it finished"),
                now,
            ),
            vec![],
        ),
        None => (
            e.clone(),
            vec![Effect::CreateJob {
                invocation_id: e.invocation_id.clone(),
            }],
        ),
    }
}

/// The Job name of an instance: deterministic from the invocation and the node (installer)
/// or the invocation id (remote install, several on one host node).
pub fn job_name(obj: &AgentInvocation, e: &InvocationResult) -> String {
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = if e.action == Some(InstanceAction::RemoteInstall) {
        &e.invocation_id
    } else {
        &e.instance_id
    };
    crate::engine::job::job_name(&name, &uid, key)
}

fn run_daemonset(
    e: &InvocationResult,
    world: &World,
    facts: &NodeFacts,
) -> (InvocationResult, Vec<Effect>) {
    let now = world.now;
    let node = e.instance_id.clone();
    let target = e.target_version.clone();
    let ready = target
        .as_ref()
        .is_some_and(|t| world.ready_pods.contains(&(node.clone(), t.clone())));
    if facts.version == target && ready {
        return (succeed(e.clone(), target, None, now), vec![]);
    }
    let started = e.start_time.as_ref().map(|t| t.0).unwrap_or(now);
    let elapsed = now.duration_since(started).as_secs();
    if elapsed >= world.agent.ready_timeout_seconds {
        // Put the node back as it was: its label must say what runs there.
        let effects = if facts.version != e.version_before {
            vec![Effect::SetLabel {
                node: node.clone(),
                version: e.version_before.clone(),
            }]
        } else {
            vec![]
        };
        let mut failed = refuse(
            e.clone(),
            ErrorCode::AgentNotReady,
            format!(
                "the {} pod was not Ready within {}s; {node} is back at {}",
                target.as_deref().unwrap_or("?"),
                world.agent.ready_timeout_seconds,
                e.version_before.as_deref().unwrap_or("no agent"),
            ),
            now,
        );
        failed.version_after = e.version_before.clone();
        return (failed, effects);
    }
    let effects = if facts.version != target {
        vec![Effect::SetLabel {
            node,
            version: target,
        }]
    } else {
        vec![]
    };
    (e.clone(), effects)
}

/// The whole plan: new instances, one step of each, the overall status.
pub fn plan(obj: &AgentInvocation, world: &World) -> Plan {
    let prev = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
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
            prev.completion_time.clone().or(Some(Time(world.now)))
        } else {
            None
        },
        conditions: prev.conditions.clone(),
    };
    let now_t = Time(world.now);
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
    let requeue = if started || !effects.is_empty() {
        // Effects wait for the status that records Running: come straight back.
        Some(Duration::from_millis(100))
    } else if !all_final {
        Some(POLL)
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
