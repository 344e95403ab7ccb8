//! Validation of an AsyncCommand's spec: what each node runs (its command, or the named
//! Command's script with its parameters, in a mode the namespace allows) and which nodes
//! it addresses.

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::World;
use crate::api::async_command::AsyncCommand;
use crate::api::common::ExecutionMode;
use crate::engine::job::RunTemplate;
use crate::engine::{argv, script};
use crate::plan::Invalid;

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
        pod_security: spec.pod_security,
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

/// The nodes an AsyncCommand addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// The nodes of one object, each with its entry in status: `nodeNames`, a selector
    /// over at most one batch of nodes, or a fleet's batch.
    Nodes(Vec<String>),
    /// A fleet: the nodes a selector matched beyond one batch, to split into batches; empty
    /// once the batches exist (their `nodeNames` are the fleet's membership from then on).
    Fleet(Vec<String>),
}

/// Whether `obj` is a fleet that has started: its batches exist or its status says so.
pub fn fleet_started(obj: &AsyncCommand, world: &World) -> bool {
    obj.spec.batch.is_none()
        && (obj.status.as_ref().is_some_and(|s| s.fleet.is_some()) || !world.batches.is_empty())
}

/// The addressed nodes: those already recorded in status (the set is fixed when the
/// command starts; a fleet's in its batches), else `nodeNames`, else the nodes the selector
/// matches now.
pub fn targets(obj: &AsyncCommand, world: &World) -> Result<Targets, Invalid> {
    if let Some(status) = &obj.status
        && !status.cmd_jobs.is_empty()
    {
        return Ok(Targets::Nodes(
            status
                .cmd_jobs
                .iter()
                .map(|e| e.node_name.clone())
                .collect(),
        ));
    }
    if fleet_started(obj, world) {
        return Ok(Targets::Fleet(Vec::new()));
    }
    if let Some(names) = &obj.spec.node_names {
        return Ok(Targets::Nodes(names.clone()));
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
    if names.len() > world.settings.batch_nodes() && obj.spec.batch.is_none() {
        return Ok(Targets::Fleet(names));
    }
    Ok(Targets::Nodes(names))
}
