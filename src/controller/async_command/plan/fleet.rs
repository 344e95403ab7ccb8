//! A fleet: an AsyncCommand whose selector matches more nodes than one batch. Its nodes
//! are split once, when it starts, into batch AsyncCommands of at most 100 nodes each
//! (owned by the fleet, deterministically named, annotated `i/n`); each batch runs its
//! nodes and keeps their entries, as any AsyncCommand does. The fleet alone decides what
//! starts: it raises each batch's `spec.batch.starts` within its `maxConcurrency` and
//! rollout policy, and sets `spec.batch.cancel` once its `maxErrors` is passed. Its own
//! status keeps the totals and the first failures.
//!
//! Why a stale read never exceeds a bound: the nodes a batch may still start are those
//! granted and not started; a batch's status counts them together with what runs, in one
//! snapshot, so a freed slot is only seen with the outcome that freed it. A grant is a JSON
//! Patch that tests the allowance it raises: granted twice from one stale read, the second
//! is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

mod split;

use split::split;
pub use split::{batch_name, batch_object, part};

use super::run::{expiry, held};
use super::status::{Counts, finished_note, started, summary};
use super::{Note, World, concurrency_limit, starts_now, time};
use crate::api::async_command::{
    AsyncCommand, AsyncCommandStatus, CmdJob, FLEET_FAILURES_SHOWN, FleetFailure, FleetStatus,
    NodePhase,
};
use crate::api::common::scaled_limit;
use crate::keys::FLEET_PART_ANNOTATION;
use crate::plan::{Change, ChildKind, Invalid, Plan, clip};
use crate::rollout::{Policy, Progress};

/// How often a fleet looks at its batches without an event (a safety net: their changes
/// wake it).
const RECHECK: Duration = Duration::from_secs(20);

/// The batches read, in order, when they are all there: `Err` names what is missing.
fn ordered(batches: &[AsyncCommand]) -> Result<Vec<&AsyncCommand>, String> {
    let mut by_index: BTreeMap<usize, &AsyncCommand> = BTreeMap::new();
    let mut count = None;
    for b in batches {
        let Some((i, n)) = part(b) else {
            return Err(format!(
                "batch {} carries no valid {FLEET_PART_ANNOTATION}",
                b.name_any()
            ));
        };
        if *count.get_or_insert(n) != n {
            return Err(format!(
                "batches disagree on their count ({n} and {count:?})"
            ));
        }
        by_index.insert(i, b);
    }
    let n = count.unwrap_or(0);
    let missing: Vec<String> = (0..n)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    if n == 0 || !missing.is_empty() {
        return Err(format!("batches {} of {n} are missing", missing.join(", ")));
    }
    Ok(by_index.into_values().collect())
}

/// Why a started fleet cannot go on: a batch it recorded is gone (its nodes' entries with
/// it), so what was started there is unknown.
pub fn check(obj: &AsyncCommand, world: &World) -> Result<(), Invalid> {
    let Some(recorded) = obj.status.as_ref().and_then(|s| s.fleet.as_ref()) else {
        return Ok(());
    };
    let found = ordered(&world.batches);
    match found {
        Ok(b) if b.len() == recorded.batches as usize => Ok(()),
        Ok(b) => Err(Invalid::new(
            "BatchMissing",
            format!(
                "the fleet was split into {} batches and {} are found",
                recorded.batches,
                b.len()
            ),
        )),
        Err(why) => Err(Invalid::new(
            "BatchMissing",
            format!(
                "{why}: their nodes' results are lost; delete this AsyncCommand and create it again"
            ),
        )),
    }
}

/// A fleet's start, with its first grants: its `startTime` and its Event.
fn mark_started(
    status: &mut AsyncCommandStatus,
    notes: &mut Vec<Note>,
    now: Timestamp,
    nodes: usize,
    batches: usize,
) {
    status.start_time = Some(time(now));
    notes.push(Note {
        warning: false,
        reason: "Started",
        message: format!("started a fleet of {nodes} nodes in {batches} batches"),
    });
}

/// Grants to `batches` (each with the allowance it was read with and its nodes waiting for
/// a grant), in order, until `slots` are given. Each grant tests the allowance it raises,
/// so one decided twice from the same read is refused.
fn grants<'a>(
    ns: &str,
    batches: impl Iterator<Item = (&'a AsyncCommand, usize, usize)>,
    mut slots: usize,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (batch, starts, waiting) in batches {
        let give = waiting.min(slots);
        if give == 0 {
            continue;
        }
        slots -= give;
        out.push(Change::PatchJson {
            kind: ChildKind::AsyncCommand,
            namespace: ns.to_string(),
            name: batch.name_any(),
            patch: json!([
                {"op": "test", "path": "/spec/batch/starts", "value": starts},
                {"op": "replace", "path": "/spec/batch/starts", "value": starts + give},
            ]),
        });
    }
    out
}

/// One batch as the fleet reads it.
struct Read<'a> {
    obj: &'a AsyncCommand,
    counts: Counts,
    /// Nodes with a Job.
    started: usize,
    /// The allowance.
    starts: usize,
}

impl<'a> Read<'a> {
    fn of(obj: &'a AsyncCommand) -> Self {
        let nodes = obj.spec.node_names.as_ref().map_or(0, Vec::len);
        let entries: &[CmdJob] = obj.status.as_ref().map_or(&[], |s| &s.cmd_jobs);
        let counts = if entries.is_empty() {
            Counts {
                pending: nodes as i32,
                ..Counts::default()
            }
        } else {
            Counts::of(entries)
        };
        Read {
            obj,
            counts,
            started: started(entries),
            starts: obj
                .spec
                .batch
                .as_ref()
                .map_or(0, |b| usize::try_from(b.starts).unwrap_or(0)),
        }
    }

    fn entries(&self) -> &'a [CmdJob] {
        self.obj.status.as_ref().map_or(&[], |s| &s.cmd_jobs)
    }

    /// Granted nodes not started yet: the batch may start them at any moment.
    fn reserved(&self) -> usize {
        self.starts
            .saturating_sub(self.started)
            .min(self.counts.pending as usize)
    }

    /// Nodes waiting for a grant.
    fn ungranted(&self) -> usize {
        (self.counts.pending as usize).saturating_sub(self.reserved())
    }
}

/// One reconcile of a fleet: split its nodes into batches when it starts (`names`, the
/// selector's nodes), then grant starts, cancel, and sum the batches into its status.
pub fn plan(
    obj: &AsyncCommand,
    names: &[String],
    world: &World,
    policy: &Policy,
) -> Plan<AsyncCommandStatus> {
    let prev = obj.status.clone().unwrap_or_default();
    let ns = obj.namespace().unwrap_or_default();
    let now = world.now;
    let recorded = prev.fleet.is_some();
    let batches = match ordered(&world.batches) {
        Ok(b) => b,
        Err(_) if !recorded && !world.batches.is_empty() => {
            // A crash while the batches were created: none was allowed to start a node (a
            // grant needs the fleet recorded), so they go and the nodes are split again.
            let mut plan = Plan::status(prev);
            plan.after = world
                .batches
                .iter()
                .map(|b| Change::Delete {
                    kind: ChildKind::AsyncCommand,
                    namespace: ns.clone(),
                    name: b.name_any(),
                })
                .collect();
            plan.requeue = Some(Duration::from_secs(2));
            return plan;
        }
        Err(_) => return split(obj, &prev, names, world, policy),
    };

    let reads: Vec<Read> = batches.iter().map(|b| Read::of(b)).collect();
    let mut counts = Counts::default();
    let mut in_flight = 0;
    let mut started = 0;
    let mut last_finished: Option<Timestamp> = None;
    let mut failures = Vec::new();
    for r in &reads {
        counts.add(r.counts);
        in_flight += r.counts.running as usize + r.reserved();
        started += r.started;
        for e in r.entries() {
            if e.start_time.is_some() && e.phase.is_final() {
                let done = e.completion_time.as_ref().map(|t| t.0);
                last_finished = last_finished.max(done);
            }
            if e.phase == NodePhase::Failed && failures.len() < FLEET_FAILURES_SHOWN {
                failures.push(FleetFailure {
                    node_name: e.node_name.clone(),
                    batch: r.obj.name_any(),
                    reason: e.reason.clone(),
                    message: e.message.as_deref().map(|m| clip(m, 256)),
                });
            }
        }
    }
    let total = counts.total() as usize;
    let failed = counts.failed as usize;
    let max_errors = obj
        .spec
        .max_errors
        .as_ref()
        .and_then(|m| scaled_limit(m, total, 0));
    let mut notes = Vec::new();
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut hold = None;
    if max_errors.is_some_and(|m| failed > m) {
        let message =
            format!("not started: {failed} nodes of the fleet failed, more than maxErrors allows");
        let stopping: Vec<&Read> = reads
            .iter()
            .filter(|r| r.counts.pending > 0)
            .filter(|r| {
                r.obj
                    .spec
                    .batch
                    .as_ref()
                    .is_some_and(|b| b.cancel.is_none())
            })
            .collect();
        if !stopping.is_empty() {
            notes.push(Note::warning(
                "MaxErrorsReached",
                format!(
                    "{failed} nodes failed; {} nodes not started",
                    stopping.iter().map(|r| r.counts.pending).sum::<i32>()
                ),
            ));
        }
        after.extend(stopping.iter().map(|r| Change::PatchJson {
            kind: ChildKind::AsyncCommand,
            namespace: ns.clone(),
            name: r.obj.name_any(),
            patch: json!([{"op": "add", "path": "/spec/batch/cancel", "value": message}]),
        }));
    } else {
        let limit = concurrency_limit(obj, total);
        let nodes = world
            .nodes
            .iter()
            .map(|(n, info)| (n.as_str(), &info.conditions));
        let progress = Progress {
            limit,
            in_flight,
            last_finished,
        };
        let starts = starts_now(policy, world, nodes, progress);
        let waiting: usize = reads.iter().map(Read::ungranted).sum();
        hold = starts.hold.filter(|_| waiting > 0);
        before = grants(
            &ns,
            reads.iter().map(|r| (r.obj, r.starts, r.ungranted())),
            starts.slots,
        );
    }

    let mut status = summary(obj, &prev, counts, Vec::new(), now);
    status.fleet = Some(FleetStatus {
        batches: reads.len() as i32,
        started: started as i32,
        failures,
    });
    held(
        &mut status,
        &prev,
        hold.as_ref(),
        &mut notes,
        obj.metadata.generation,
        now,
    );
    if prev.start_time.is_none() && (!before.is_empty() || started > 0) {
        mark_started(&mut status, &mut notes, now, total, reads.len());
    }
    let finished = status.completion_time.is_some();
    notes.extend(finished_note(&prev, &status));
    let requeue = if finished {
        let (expired, wake) = expiry(obj, &status, now);
        if expired {
            after.push(Change::Delete {
                kind: ChildKind::Itself,
                namespace: ns,
                name: obj.name_any(),
            });
        }
        wake
    } else {
        let wake = hold
            .as_ref()
            .and_then(|h| h.recheck(now))
            .unwrap_or(RECHECK);
        Some(wake.min(RECHECK))
    };
    Plan {
        before,
        status,
        after,
        notes,
        requeue,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::async_command::CommandPhase;
    use crate::api::async_command::FleetBatch;
    use crate::controller::async_command::plan::{Decisions, NodeInfo, Targets};
    use crate::engine::outcome::{Observed, RunState};
    use crate::keys::FLEET_UID_LABEL;
    use crate::plan::Child;
    use crate::plan::Decide;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn fleet_of(spec: serde_json::Value) -> AsyncCommand {
        let mut obj = AsyncCommand::new("fleet", serde_json::from_value(spec).expect("spec"));
        obj.metadata.namespace = Some("ops".into());
        obj.metadata.uid = Some("aaaaaaaa-2222-3333-4444-555555555555".into());
        obj.metadata.generation = Some(1);
        obj
    }

    fn world_of(n: usize, batch_nodes: usize) -> World {
        let mut world = World {
            now: at(0),
            ..Default::default()
        };
        world.settings.fleet_batch_nodes = batch_nodes;
        for i in 0..n {
            let name = format!("n{i:02}");
            let node: Node = serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"pool": "web"}}}),
            )
            .expect("node");
            world.fleet.push(Arc::new(node));
            world.nodes.insert(
                name,
                NodeInfo {
                    ready: true,
                    ..Default::default()
                },
            );
        }
        world
    }

    fn run(state: RunState, exit: i32) -> Observed {
        let active = state == RunState::Active { pods: 1 };
        let failed = state == RunState::Failed;
        Observed {
            state,
            exit_code: (!active).then_some(exit),
            output: None,
            truncated: false,
            output_head: None,
            dropped_bytes: 0,
            reason: failed.then(|| "ExitCode".to_string()),
            message: None,
            start_time: Some(Time(at(0))),
            completion_time: (!active).then(|| Time(at(1))),
            job_active: active,
            note: None,
        }
    }

    /// The JSON Patches among `changes`, with the batch each is for.
    fn patches(changes: &[Change]) -> Vec<(&String, &serde_json::Value)> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::PatchJson { name, patch, .. } => Some((name, patch)),
                _ => None,
            })
            .collect()
    }

    /// Applies a fleet's patch to a batch as the API server would: `Err` when a test fails.
    fn patch(batch: &mut AsyncCommand, patch: &serde_json::Value) -> Result<(), String> {
        let mut value = serde_json::to_value(&*batch).expect("json");
        let p: json_patch::Patch = serde_json::from_value(patch.clone()).expect("patch");
        json_patch::patch(&mut value, &p).map_err(|e| e.to_string())?;
        *batch = serde_json::from_value(value).expect("batch");
        Ok(())
    }

    const SELECTOR: &str = r#"{"matchLabels": {"pool": "web"}}"#;

    #[test]
    fn a_selector_over_more_nodes_than_a_batch_is_split_once_and_granted_after_the_record() {
        let spec = json!({"command": "uptime", "nodeSelector": serde_json::from_str::<serde_json::Value>(SELECTOR).expect("json"),
                          "maxConcurrency": 2, "maxErrors": 0, "ttlSecondsAfterFinished": 60});
        let obj = fleet_of(spec);
        let world = world_of(7, 3);
        let (_, targets, _) = Decisions::validate(&obj, &world).expect("valid");
        assert_eq!(
            targets,
            Targets::Fleet((0..7).map(|i| format!("n{i:02}")).collect())
        );
        let plan = Decisions::decide(&obj, &world);
        let batches: Vec<AsyncCommand> = plan
            .created()
            .map(|c| match c {
                Child::AsyncCommand(b) => b.as_ref().clone(),
                other => panic!("a batch, not {}", other.kind()),
            })
            .collect();
        assert_eq!(batches.len(), 3);
        let names: Vec<Vec<String>> = batches
            .iter()
            .map(|b| b.spec.node_names.clone().expect("names"))
            .collect();
        assert_eq!(
            names.concat(),
            (0..7).map(|i| format!("n{i:02}")).collect::<Vec<_>>()
        );
        assert_eq!(names[2].len(), 1);
        for (i, b) in batches.iter().enumerate() {
            assert_eq!(part(b), Some((i, 3)));
            assert_eq!(
                b.name_any(),
                batch_name("fleet", "aaaaaaaa-2222-3333-4444-555555555555", i)
            );
            assert_eq!(
                b.spec.batch,
                Some(FleetBatch {
                    starts: 0,
                    cancel: None
                }),
                "nothing may start before the fleet is recorded"
            );
            assert!(b.spec.max_concurrency.is_none() && b.spec.max_errors.is_none());
            assert!(b.spec.ttl_seconds_after_finished.is_none() && b.spec.node_selector.is_none());
            assert_eq!(
                b.labels()[FLEET_UID_LABEL],
                "aaaaaaaa-2222-3333-4444-555555555555"
            );
            assert_eq!(
                b.owner_references()[0].uid,
                "aaaaaaaa-2222-3333-4444-555555555555"
            );
        }
        let s = &plan.status;
        assert_eq!((s.total, s.pending), (7, 7));
        assert_eq!(s.fleet.as_ref().map(|f| f.batches), Some(3));
        assert!(s.cmd_jobs.is_empty(), "a fleet lists no node of its own");
        // The first grants follow the status that records the fleet (`after`), within
        // maxConcurrency: its 2 slots to the first batch.
        assert!(plan.before.iter().all(|c| matches!(c, Change::Create(_))));
        let grants = patches(&plan.after);
        assert_eq!(grants.len(), 1, "{:?}", plan.after);
        assert_eq!(grants[0].0, &batches[0].name_any());
        let mut first = batches[0].clone();
        patch(&mut first, grants[0].1).expect("granted from 0");
        assert_eq!(first.spec.batch.as_ref().map(|b| b.starts), Some(2));
        assert!(s.start_time.is_some());
        assert!(plan.notes.iter().any(|n| n.reason == "Started"));
    }

    #[test]
    fn a_split_under_node_gates_grants_nothing_yet() {
        let selector: serde_json::Value = serde_json::from_str(SELECTOR).expect("json");
        let gated = fleet_of(json!({"command": "uptime", "nodeSelector": selector,
            "rollout": {"healthGates": [{"nodeCondition": {"type": "DiskPressure", "status": "True"}}]}}));
        let world = world_of(7, 3);
        let plan = Decisions::decide(&gated, &world);
        assert_eq!(plan.created().count(), 3);
        assert!(plan.after.is_empty(), "{:?}", plan.after);
        assert!(plan.status.start_time.is_none());
        // Without a gate, every node is granted at once (no maxConcurrency).
        let open = fleet_of(json!({"command": "uptime", "nodeSelector": selector}));
        let plan = Decisions::decide(&open, &world);
        assert_eq!(plan.after.len(), 3);
    }

    #[test]
    fn a_crash_while_splitting_deletes_the_partial_batches_and_a_lost_batch_stalls() {
        let spec = json!({"command": "uptime", "nodeSelector": serde_json::from_str::<serde_json::Value>(SELECTOR).expect("json")});
        let mut obj = fleet_of(spec);
        let mut world = world_of(7, 3);
        let split = Decisions::decide(&obj, &world);
        let batches: Vec<AsyncCommand> = split
            .created()
            .filter_map(|c| match c {
                Child::AsyncCommand(b) => Some(b.as_ref().clone()),
                _ => None,
            })
            .collect();
        // Two of three created, then the crash: the status was never written.
        world.batches = batches[..2].to_vec();
        let again = Decisions::decide(&obj, &world);
        assert_eq!(again.deleted(ChildKind::AsyncCommand).len(), 2);
        assert!(
            again.before.is_empty(),
            "nothing granted from a partial fleet"
        );
        // All three and no status: adopted.
        world.batches = batches.clone();
        let adopted = Decisions::decide(&obj, &world);
        assert_eq!(adopted.status.fleet.as_ref().map(|f| f.batches), Some(3));
        assert!(adopted.deleted(ChildKind::AsyncCommand).is_empty());
        // Recorded, then a batch deleted by hand: stalled, nothing granted.
        obj.status = Some(adopted.status);
        world.batches.remove(1);
        let lost = Decisions::decide(&obj, &world);
        assert!(lost.before.is_empty());
        let stalled = lost
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::conditions::STALLED);
        assert_eq!(stalled.map(|c| c.reason.as_str()), Some("BatchMissing"));
    }

    /// A fleet of 10 nodes in batches of 3, simulated reconcile by reconcile: the fleet
    /// grants, each batch starts what it may, each Job ends one step after it started
    /// (n03 and n07 fail). The batches' reads of one step may lag a grant (they are read
    /// before it is applied), as a cache would.
    fn simulate(
        spec: serde_json::Value,
        failing: &[&str],
    ) -> (
        AsyncCommand,
        Vec<AsyncCommand>,
        usize,
        BTreeMap<String, usize>,
    ) {
        let mut obj = fleet_of(spec);
        let mut world = world_of(10, 3);
        let mut jobs: BTreeMap<String, (usize, RunState)> = BTreeMap::new();
        let mut starts: BTreeMap<String, usize> = BTreeMap::new();
        let mut peak = 0;
        for step in 0..60 {
            world.now = at(step as i64);
            let plan = Decisions::decide(&obj, &world);
            for child in plan.created() {
                if let Child::AsyncCommand(b) = child {
                    let mut b = b.as_ref().clone();
                    b.metadata.uid = Some(format!("batch-{}", b.name_any()));
                    world.batches.push(b);
                }
            }
            for change in plan.before.iter().chain(&plan.after) {
                if let Change::PatchJson { name, patch: p, .. } = change {
                    let b = world
                        .batches
                        .iter_mut()
                        .find(|b| b.name_any() == *name)
                        .expect("batch");
                    patch(b, p).expect("a grant tests the allowance it raises");
                }
            }
            obj.status = Some(plan.status.clone());
            if plan.status.completion_time.is_some() {
                return (obj, world.batches, peak, starts);
            }
            // Jobs end one step after they start.
            for (node, (at_step, state)) in jobs.iter_mut() {
                if *at_step < step && *state == (RunState::Active { pods: 1 }) {
                    *state = if failing.contains(&node.as_str()) {
                        RunState::Failed
                    } else {
                        RunState::Succeeded
                    };
                }
            }
            for b in world.batches.iter_mut() {
                let targets = b.spec.node_names.clone().expect("names");
                let mut bw = World {
                    now: world.now,
                    nodes: world.nodes.clone(),
                    ..Default::default()
                };
                for n in &targets {
                    if let Some((_, state)) = jobs.get(n) {
                        bw.runs.insert(
                            n.clone(),
                            run(
                                state.clone(),
                                if *state == RunState::Failed { 1 } else { 0 },
                            ),
                        );
                    }
                }
                let p = super::super::plan(b, &targets, &bw, &Policy::default());
                for n in &p.start {
                    *starts.entry(n.clone()).or_default() += 1;
                    jobs.insert(n.clone(), (step, RunState::Active { pods: 1 }));
                }
                b.status = Some(p.status);
            }
            let active = jobs
                .values()
                .filter(|(_, s)| *s == (RunState::Active { pods: 1 }))
                .count();
            peak = peak.max(active);
        }
        panic!("the fleet did not finish: {:?}", obj.status);
    }

    #[test]
    fn max_concurrency_holds_across_batches_and_every_node_runs_once() {
        let spec = json!({"command": "uptime", "nodeSelector": serde_json::from_str::<serde_json::Value>(SELECTOR).expect("json"), "maxConcurrency": 4});
        let (obj, batches, peak, starts) = simulate(spec, &["n03", "n07"]);
        assert_eq!(peak, 4, "the fleet ran 4 at once, never more");
        assert_eq!(starts.len(), 10);
        assert!(starts.values().all(|n| *n == 1), "{starts:?}");
        let s = obj.status.expect("status");
        assert_eq!((s.total, s.succeeded, s.failed, s.cancelled), (10, 8, 2, 0));
        assert_eq!(s.phase, CommandPhase::Failed);
        let fleet = s.fleet.expect("fleet");
        let failed: BTreeSet<&str> = fleet
            .failures
            .iter()
            .map(|f| f.node_name.as_str())
            .collect();
        assert_eq!(failed, BTreeSet::from(["n03", "n07"]));
        assert_eq!(fleet.started, 10);
        let entries: usize = batches
            .iter()
            .map(|b| b.status.as_ref().map_or(0, |s| s.cmd_jobs.len()))
            .sum();
        assert_eq!(entries, 10, "every node's entry is in its batch");
    }

    #[test]
    fn max_errors_stops_every_batch() {
        let spec = json!({"command": "uptime", "nodeSelector": serde_json::from_str::<serde_json::Value>(SELECTOR).expect("json"),
                          "maxConcurrency": 1, "maxErrors": 0});
        let (obj, batches, peak, starts) = simulate(spec, &["n03", "n07"]);
        assert_eq!(peak, 1);
        let s = obj.status.expect("status");
        // n00..n03 ran one at a time; n03 failed; the other six never started.
        assert_eq!((s.succeeded, s.failed, s.cancelled), (3, 1, 6));
        assert_eq!(starts.len(), 4);
        for b in &batches {
            for e in &b.status.as_ref().expect("status").cmd_jobs {
                if e.phase == NodePhase::Cancelled {
                    assert_eq!(e.reason.as_deref(), Some("MaxErrorsReached"));
                    assert!(e.job_name.is_none());
                }
            }
        }
    }

    #[test]
    fn a_grant_from_a_stale_read_is_refused() {
        let spec = json!({"command": "uptime", "nodeSelector": serde_json::from_str::<serde_json::Value>(SELECTOR).expect("json"), "maxConcurrency": 2});
        let mut obj = fleet_of(spec);
        let mut world = world_of(7, 3);
        let split = Decisions::decide(&obj, &world);
        obj.status = Some(split.status.clone());
        world.batches = split
            .created()
            .filter_map(|c| match c {
                Child::AsyncCommand(b) => Some(b.as_ref().clone()),
                _ => None,
            })
            .collect();
        let granted = patches(&split.after);
        assert_eq!(granted.len(), 1, "2 slots, both to the first batch");
        let mut stored = world.batches[0].clone();
        patch(&mut stored, granted[0].1).expect("first grant");
        assert_eq!(stored.spec.batch.as_ref().map(|b| b.starts), Some(2));
        // The next reconcile reads the batches before the grant (a stale cache): it grants
        // the same again, and its test refuses it.
        let stale = Decisions::decide(&obj, &world);
        let grants = patches(&stale.before);
        assert_eq!(grants.len(), 1);
        assert!(patch(&mut stored, grants[0].1).is_err());
        // Read fresh, the granted nodes are in flight: nothing more is granted.
        world.batches[0] = stored;
        let second = Decisions::decide(&obj, &world);
        assert!(second.before.is_empty(), "{:?}", second.before);
    }
}
