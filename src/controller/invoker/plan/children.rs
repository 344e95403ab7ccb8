//! The Invoker's children: a child AsyncCommand read back ([`Child`]), the child a slot
//! creates and its name, the recent runs they make up, and the finished ones beyond the
//! history limits.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use super::{RECENT_RUNS, t};
use crate::api::async_command::{AsyncCommand, AsyncCommandSpec, CommandPhase};
use crate::api::invoker::{Invoker, InvokerRun};
use crate::keys::{INVOKER_UID_LABEL, MANAGED_BY, MANAGED_BY_LABEL, SCHEDULED_TIME_ANNOTATION};

/// A child AsyncCommand of the Invoker, as read back.
#[derive(Clone, Debug)]
pub struct Child {
    pub name: String,
    pub slot: Timestamp,
    pub phase: CommandPhase,
    pub finished: bool,
    pub succeeded: i32,
    pub failed: i32,
}

impl Child {
    /// Reads a child; `None` if it does not carry its slot.
    pub fn from(obj: &AsyncCommand) -> Option<Child> {
        let slot = obj
            .metadata
            .annotations
            .as_ref()?
            .get(SCHEDULED_TIME_ANNOTATION)?
            .parse()
            .ok()?;
        let status = obj.status.clone().unwrap_or_default();
        Some(Child {
            name: obj.metadata.name.clone()?,
            slot,
            phase: status.phase,
            finished: status.completion_time.is_some() || status.phase == CommandPhase::Invalid,
            succeeded: status.succeeded,
            failed: status.failed + status.cancelled,
        })
    }
}

/// The child's name: the Invoker's name and the slot in minutes since the epoch, as
/// CronJob names its Jobs: the same slot always gives the same name.
pub fn child_name(invoker: &str, slot: Timestamp) -> String {
    let minutes = slot.as_second().div_euclid(60);
    let suffix = format!("-{minutes}");
    let mut prefix: String = invoker.chars().take(253 - suffix.len()).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

/// The slot's child: an AsyncCommand that runs the Invoker's Command on its nodes.
pub(super) fn child_object(inv: &Invoker, uid: &str, child: &str, slot: Timestamp) -> AsyncCommand {
    let spec = &inv.spec;
    let mut labels: BTreeMap<String, String> = inv.metadata.labels.clone().unwrap_or_default();
    labels.insert(INVOKER_UID_LABEL.into(), uid.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    AsyncCommand {
        metadata: ObjectMeta {
            name: Some(child.into()),
            namespace: inv.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some([(SCHEDULED_TIME_ANNOTATION.into(), slot.to_string())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: Invoker::api_version(&()).into(),
                kind: Invoker::kind(&()).into(),
                name: inv.metadata.name.clone().unwrap_or_default(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: AsyncCommandSpec {
            command_ref: Some(spec.command_ref.clone()),
            execution_mode: spec.execution_mode,
            node_names: spec.node_names.clone(),
            node_selector: spec.node_selector.clone(),
            username: spec.username.clone(),
            parameters: spec.parameters.clone(),
            max_concurrency: spec.max_concurrency.clone(),
            max_errors: spec.max_errors.clone(),
            rollout: spec.rollout.clone(),
            pod_security: spec.pod_security,
            ..AsyncCommandSpec::default()
        },
        status: None,
    }
}

/// Merges the children's current state into the recent runs, newest first. Runs whose
/// child was pruned keep their last known state.
pub(super) fn recent_runs(prev: &[InvokerRun], children: &[Child]) -> Vec<InvokerRun> {
    let mut runs: BTreeMap<String, InvokerRun> = prev
        .iter()
        .map(|r| (r.async_command.clone(), r.clone()))
        .collect();
    for c in children {
        runs.insert(
            c.name.clone(),
            InvokerRun {
                scheduled_time: t(c.slot),
                async_command: c.name.clone(),
                phase: Some(format!("{:?}", c.phase)),
                succeeded: c.succeeded,
                failed: c.failed,
            },
        );
    }
    let mut runs: Vec<InvokerRun> = runs.into_values().collect();
    runs.sort_by(|a, b| b.scheduled_time.cmp(&a.scheduled_time));
    runs.truncate(RECENT_RUNS);
    runs
}

/// Finished children beyond the history limits, oldest first to go.
pub(super) fn history_to_delete(
    children: &[Child],
    keep_ok: i32,
    keep_failed: i32,
    already: &[String],
) -> Vec<String> {
    let mut finished: Vec<&Child> = children
        .iter()
        .filter(|c| c.finished && !already.contains(&c.name))
        .collect();
    finished.sort_by_key(|c| std::cmp::Reverse(c.slot));
    let (ok, failed): (Vec<&Child>, Vec<&Child>) = finished
        .into_iter()
        .partition(|c| c.phase == CommandPhase::Succeeded);
    let mut out: Vec<String> = ok
        .iter()
        .skip(keep_ok.max(0) as usize)
        .map(|c| c.name.clone())
        .collect();
    out.extend(
        failed
            .iter()
            .skip(keep_failed.max(0) as usize)
            .map(|c| c.name.clone()),
    );
    out
}
