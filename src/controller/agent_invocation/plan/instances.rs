//! The instances an AgentInvocation's spec asks for, and the earlier invocations
//! (sources) and remote hosts the controller must read to build and run them.

use std::collections::{BTreeMap, BTreeSet};

use super::outcome::refuse;
use super::{Source, World};
use crate::agent::{invocation_id, resolve_version};
use crate::api::agent_invocation::{
    AgentInvocation, InstanceAction, InvocationPhase, InvocationResult, InvocationType,
    RemoteInstallHost,
};
use crate::controller::agent_invocation::codes::ErrorCode;

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
