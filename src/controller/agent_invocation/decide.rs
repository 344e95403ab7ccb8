//! The AgentInvocation's place among the kinds' decisions: what its controller reads
//! ([`Fetched`]), its validation (the NodeAgent exists), and its plan's effects turned into
//! typed changes (node labels, the remote install host, installer and remote-install Jobs,
//! the Jobs of final instances deleted after the status that records them).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::json;

use super::jobs::{self, Runner};
use super::plan::{self, Effect, World};
use crate::api::agent_invocation::{
    AgentInvocation, AgentInvocationPhase, AgentInvocationStatus, InstanceAction, RemoteInstallHost,
};
use crate::api::{Command, NodeAgent};
use crate::conditions;
use crate::keys::{REMOTE_HOST_FIELD_MANAGER, agent_node_label};
use crate::plan::{Change, Child, ChildKind, Decide, Invalid, Note, Plan};

/// What the controller read.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub now: Timestamp,
    /// Everything else; none: the NodeAgent does not exist.
    pub found: Option<Found>,
}

/// The world of an invocation whose NodeAgent exists.
#[derive(Clone, Debug)]
pub struct Found {
    pub world: World,
    pub agent: std::sync::Arc<NodeAgent>,
    /// The HostInstaller's Command, when this invocation may need it.
    pub installer_command: Option<Command>,
    /// The remote installer's Command, when this invocation may need it.
    pub remote_command: Option<Command>,
    /// The remote host of each RemoteInstall instance, by invocation id.
    pub remote_hosts: BTreeMap<String, RemoteInstallHost>,
    pub runner: Runner,
    /// The invocation's Jobs: (namespace, name, invocation id).
    pub jobs: Vec<(String, String, Option<String>)>,
}

/// The AgentInvocation's decisions.
pub struct Decisions;

impl Decide for Decisions {
    type Kind = AgentInvocation;
    type Status = AgentInvocationStatus;
    type World = Fetched;
    type Valid = ();
    const KIND: &'static str = "AgentInvocation";

    fn status(obj: &AgentInvocation) -> Option<&AgentInvocationStatus> {
        obj.status.as_ref()
    }
    fn conditions(status: &AgentInvocationStatus) -> &[Condition] {
        &status.conditions
    }
    fn validate(obj: &AgentInvocation, fetched: &Fetched) -> Result<(), Invalid> {
        match &fetched.found {
            Some(_) => Ok(()),
            None => Err(Invalid::new(
                "AgentNotFound",
                format!("NodeAgent {} does not exist", obj.spec.invocation_target),
            )),
        }
    }
    fn plan(obj: &AgentInvocation, fetched: &Fetched, (): ()) -> Plan<AgentInvocationStatus> {
        let Some(found) = &fetched.found else {
            let invalid = Invalid::new("AgentNotFound", "the NodeAgent does not exist");
            return Self::stall(obj, fetched, &invalid);
        };
        let planned = plan::plan(obj, &found.world);
        let mut notes = planned.notes;
        let mut requeue = planned.requeue;
        // Effects first: the status written after them records what they did.
        let before = planned
            .effects
            .iter()
            .filter_map(|effect| match change(obj, found, &planned.status, effect) {
                Ok(change) => change,
                Err(message) => {
                    // An installer that cannot be rendered for this instance: say so, and
                    // look again (a fixed Command is not an event of this object).
                    notes.push(Note::warning("InstallerNotRendered", message));
                    requeue = Some(plan::POLL);
                    None
                }
            })
            .collect();
        // A final instance's Job has served: its result is in the status now.
        let after = found
            .jobs
            .iter()
            .filter(|(_, _, id)| {
                planned
                    .status
                    .invocations
                    .iter()
                    .any(|e| Some(&e.invocation_id) == id.as_ref() && e.phase.is_final())
            })
            .map(|(namespace, name, _)| Change::Delete {
                kind: ChildKind::Job,
                namespace: namespace.clone(),
                name: name.clone(),
            })
            .collect();
        Plan {
            before,
            status: planned.status,
            after,
            notes,
            requeue,
        }
    }
    /// Stalled with the reason, instances untouched.
    fn stalled(obj: &AgentInvocation, fetched: &Fetched, why: &Invalid) -> AgentInvocationStatus {
        let prev = obj.status.clone().unwrap_or_default();
        let generation = obj.metadata.generation;
        let mut status = AgentInvocationStatus {
            observed_generation: generation,
            // Nothing started: the spec cannot be acted on (yet). Started instances keep
            // theirs.
            phase: if prev.invocations.is_empty() {
                AgentInvocationPhase::Invalid
            } else {
                prev.phase
            },
            ..prev
        };
        conditions::stall(
            &mut status.conditions,
            why.reason,
            &why.message,
            generation,
            &Time(fetched.now),
        );
        status
    }
    fn outcomes(status: &AgentInvocationStatus) -> Vec<(String, String, String)> {
        status
            .invocations
            .iter()
            .filter(|e| e.phase.is_final())
            .map(|e| {
                (
                    e.invocation_id.clone(),
                    format!("{:?}", e.phase),
                    e.reason.clone().unwrap_or_else(|| "-".into()),
                )
            })
            .collect()
    }
}

/// The change an effect asks for; `Ok(None)` when its instance is no longer in the status.
fn change(
    obj: &AgentInvocation,
    found: &Found,
    status: &AgentInvocationStatus,
    effect: &Effect,
) -> Result<Option<Change>, String> {
    let target = &obj.spec.invocation_target;
    Ok(Some(match effect {
        Effect::SetLabel { node, version } => Change::LabelNode {
            node: node.clone(),
            key: agent_node_label(target),
            value: version.clone(),
        },
        // Under its own field manager: the GitOps tool that owns the rest of the spec
        // keeps owning it.
        Effect::SetRemoteInstallHost { node } => Change::ApplyFields {
            kind: ChildKind::NodeAgent,
            name: target.clone(),
            manager: REMOTE_HOST_FIELD_MANAGER,
            fields: json!({"metadata": {"name": target}, "spec": {"remoteInstallHost": node}}),
        },
        Effect::CreateJob { invocation_id } => {
            let Some(e) = status
                .invocations
                .iter()
                .find(|e| &e.invocation_id == invocation_id)
            else {
                return Ok(None);
            };
            let what = |m: &str| format!("the Job of {}: {m}", e.instance_id);
            let job = if e.action == Some(InstanceAction::RemoteInstall) {
                let host = found
                    .remote_hosts
                    .get(invocation_id)
                    .ok_or_else(|| what("the remote host is not in the spec"))?;
                let command = found
                    .remote_command
                    .as_ref()
                    .ok_or_else(|| what("no remote installer Command"))?;
                let host_node = found
                    .agent
                    .spec
                    .remote_install_host
                    .clone()
                    .unwrap_or_default();
                jobs::remote_job(
                    obj,
                    &found.agent,
                    command,
                    &host_node,
                    host,
                    e,
                    &found.runner.image,
                )
                .map_err(|m| what(&m))?
            } else {
                let command = found
                    .installer_command
                    .as_ref()
                    .ok_or_else(|| what("no installer Command"))?;
                jobs::installer_job(obj, &found.agent, command, e, &found.runner)
                    .map_err(|m| what(&m))?
            };
            Change::Create(Child::Job(Box::new(job)))
        }
    }))
}
