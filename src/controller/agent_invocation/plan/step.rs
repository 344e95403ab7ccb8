//! The per-instance state machine: whether a Pending instance may start (its
//! preconditions), and one step of a Running instance (its Job, its node label, the agent
//! pod's readiness), with the effects that step needs.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::outcome::{job_failure, refuse, succeed};
use super::{Effect, Installer, NodeFacts, World};
use crate::agent::is_label_value;
use crate::api::agent_invocation::{
    AgentInvocation, InstanceAction, InvocationPhase, InvocationResult,
};
use crate::api::node_agent::AgentMode;
use crate::controller::agent_invocation::codes::ErrorCode;
use crate::engine::outcome::RunState;

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
            Some(o) if o.state == RunState::Succeeded => {
                // A host key accepted unverified is said beside the success.
                let message = match &o.note {
                    Some(note) => format!("installed over SSH; {note}"),
                    None => "installed over SSH".into(),
                };
                (succeed(e.clone(), target, Some(message), now), vec![])
            }
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
