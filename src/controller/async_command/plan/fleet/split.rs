//! A fleet's start: its batches named, built and created, and the first grants.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::super::status::{Counts, summary};
use super::super::{Note, World, concurrency_limit, starts_now};
use super::{RECHECK, grants};
use crate::api::async_command::{
    AsyncCommand, AsyncCommandSpec, AsyncCommandStatus, FleetBatch, FleetStatus,
};
use crate::engine::job::job_id;
use crate::keys::{FLEET_PART_ANNOTATION, FLEET_UID_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use crate::plan::{Change, Child, Plan};
use crate::rollout::{Policy, Progress};

/// The name of batch `index` of the fleet `name` (uid `uid`): the fleet's name, a hash of
/// its uid (a fleet recreated under the same name never adopts the old one's batches) and
/// the index.
pub fn batch_name(name: &str, uid: &str, index: usize) -> String {
    let suffix = format!("-{}-{index}", &job_id(uid, "fleet")[..6]);
    let mut prefix: String = name.chars().take(253 - suffix.len()).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

/// A batch's place in its fleet, `(index, count)`, from its annotation.
pub fn part(batch: &AsyncCommand) -> Option<(usize, usize)> {
    let (i, n) = batch
        .annotations()
        .get(FLEET_PART_ANNOTATION)?
        .split_once('/')?;
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    (i < n).then_some((i, n))
}

/// Batch `index` of `count`: the fleet's spec on `nodes`, with nothing allowed to start.
pub fn batch_object(
    fleet: &AsyncCommand,
    index: usize,
    count: usize,
    nodes: &[String],
) -> AsyncCommand {
    let uid = fleet.metadata.uid.clone().unwrap_or_default();
    let name = fleet.name_any();
    let labels = [
        (FLEET_UID_LABEL.to_string(), uid.clone()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ];
    let mut owner = fleet.controller_owner_ref(&()).unwrap_or_default();
    owner.block_owner_deletion = Some(true);
    AsyncCommand {
        metadata: ObjectMeta {
            name: Some(batch_name(&name, &uid, index)),
            namespace: fleet.metadata.namespace.clone(),
            labels: Some(labels.into_iter().collect()),
            annotations: Some(
                [(
                    FLEET_PART_ANNOTATION.to_string(),
                    format!("{index}/{count}"),
                )]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: AsyncCommandSpec {
            node_names: Some(nodes.to_vec()),
            node_selector: None,
            // The fleet holds these across its batches.
            max_concurrency: None,
            max_errors: None,
            rollout: None,
            // The fleet's TTL deletes it, and the batches with it.
            ttl_seconds_after_finished: None,
            batch: Some(FleetBatch {
                starts: 0,
                cancel: None,
            }),
            ..fleet.spec.clone()
        },
        status: None,
    }
}

/// The fleet's start: its nodes split into batches of the configured size, created with
/// nothing allowed to start, the status that records them, and then (once that status is
/// written) the first grants. Granting after the record keeps a crash mid-split harmless;
/// granting in the same reconcile saves the round of the next one before the first node
/// starts. A policy with node gates grants on the next reconcile, which reads the
/// batches' nodes.
pub(super) fn split(
    obj: &AsyncCommand,
    prev: &AsyncCommandStatus,
    names: &[String],
    world: &World,
    policy: &Policy,
) -> Plan<AsyncCommandStatus> {
    let ns = obj.namespace().unwrap_or_default();
    let chunks: Vec<&[String]> = names.chunks(world.settings.batch_nodes()).collect();
    let batches: Vec<AsyncCommand> = chunks
        .iter()
        .enumerate()
        .map(|(i, nodes)| batch_object(obj, i, chunks.len(), nodes))
        .collect();
    let slots = if policy.reads_nodes() {
        0
    } else {
        let progress = Progress {
            limit: concurrency_limit(obj, names.len()),
            in_flight: 0,
            last_finished: None,
        };
        starts_now(policy, world, std::iter::empty(), progress).slots
    };
    let after = grants(
        &ns,
        batches
            .iter()
            .zip(&chunks)
            .map(|(b, nodes)| (b, 0, nodes.len())),
        slots,
    );
    let before = batches
        .into_iter()
        .map(|b| Change::Create(Child::AsyncCommand(Box::new(b))))
        .collect();
    let counts = Counts {
        pending: names.len() as i32,
        ..Counts::default()
    };
    let mut status = summary(obj, prev, counts, Vec::new(), world.now);
    status.fleet = Some(FleetStatus {
        batches: chunks.len() as i32,
        started: 0,
        failures: Vec::new(),
    });
    let mut notes = vec![Note {
        warning: false,
        reason: "FleetSplit",
        message: format!(
            "{} nodes split into {} batches of at most {}",
            names.len(),
            chunks.len(),
            world.settings.batch_nodes()
        ),
    }];
    if !after.is_empty() && prev.start_time.is_none() {
        super::mark_started(
            &mut status,
            &mut notes,
            world.now,
            names.len(),
            chunks.len(),
        );
    }
    Plan {
        before,
        status,
        after,
        notes,
        requeue: Some(RECHECK),
    }
}
