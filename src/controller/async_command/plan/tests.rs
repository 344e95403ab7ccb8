use super::*;
use crate::api::async_command::AsyncCommandSpec;
use crate::api::async_command::{CommandPhase, NodePhase};
use crate::conditions::STALLED;
use crate::conditions::{self, COMPLETE, FAILED, READY, RECONCILING};
use crate::engine::outcome::{RunState, reason};
use crate::rollout::PAUSED;
use serde_json::json;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("time")
}

fn command(spec: serde_json::Value) -> AsyncCommand {
    let spec: AsyncCommandSpec = serde_json::from_value(spec).expect("spec");
    let mut obj = AsyncCommand::new("cmd", spec);
    obj.metadata.uid = Some("11111111-2222-3333-4444-555555555555".into());
    obj.metadata.generation = Some(1);
    obj
}

fn nodes(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn ready(names: &[&str]) -> BTreeMap<String, NodeInfo> {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                NodeInfo {
                    ready: true,
                    ..Default::default()
                },
            )
        })
        .collect()
}

fn observed(state: RunState, exit: Option<i32>) -> Observed {
    let failed = state == RunState::Failed;
    let job_active = matches!(state, RunState::Active { .. });
    Observed {
        state,
        exit_code: exit,
        output: Some("out".into()),
        truncated: false,
        output_head: None,
        dropped_bytes: 0,
        reason: failed.then(|| reason::EXIT_CODE.to_string()),
        message: None,
        start_time: Some(Time(at(1))),
        completion_time: None,
        job_active,
        note: None,
    }
}

/// Runs `plan` and folds its status back into the object, as the next reconcile sees it.
fn step(obj: &mut AsyncCommand, targets: &[String], world: &World) -> Plan {
    let policy = crate::rollout::parse(obj.spec.rollout.as_ref()).expect("valid policy");
    let p = plan(obj, targets, world, &policy);
    obj.status = Some(p.status.clone());
    p
}

fn phase_of(p: &Plan, node: &str) -> NodePhase {
    p.status
        .cmd_jobs
        .iter()
        .find(|e| e.node_name == node)
        .expect("entry")
        .phase
}

#[test]
fn state_machine_is_exhaustively_as_specified() {
    use NodeEvent as E;
    use NodePhase as P;
    let phases = [
        P::Pending,
        P::Running,
        P::Succeeded,
        P::Failed,
        P::Cancelled,
    ];
    // The specification, written as the list of allowed transitions.
    let allowed = [
        (P::Pending, E::Started, P::Running),
        (P::Pending, E::JobActive, P::Running),
        (P::Pending, E::JobSucceeded, P::Succeeded),
        (P::Pending, E::JobFailed, P::Failed),
        (P::Pending, E::NodeMissing, P::Failed),
        (P::Pending, E::NodeNotReadyTimeout, P::Failed),
        (P::Pending, E::Cancelled, P::Cancelled),
        (P::Running, E::JobActive, P::Running),
        (P::Running, E::JobSucceeded, P::Succeeded),
        (P::Running, E::JobFailed, P::Failed),
        (P::Running, E::JobVanished, P::Failed),
    ];
    for from in phases {
        for event in NodeEvent::ALL {
            let want = allowed
                .iter()
                .find(|(f, e, _)| *f == from && *e == event)
                .map(|(_, _, to)| *to);
            assert_eq!(transition(from, event), want, "{from:?} + {event:?}");
        }
    }
    for final_phase in [P::Succeeded, P::Failed, P::Cancelled] {
        assert!(final_phase.is_final());
        assert!(
            NodeEvent::ALL
                .iter()
                .all(|e| transition(final_phase, *e).is_none()),
            "{final_phase:?} absorbs"
        );
    }
}

#[test]
fn first_reconcile_starts_up_to_max_concurrency() {
    let mut obj = command(
        json!({"command": "uptime", "nodeNames": ["a", "b", "c", "d", "e"], "maxConcurrency": 2}),
    );
    let targets = nodes(&["a", "b", "c", "d", "e"]);
    let world = World {
        nodes: ready(&["a", "b", "c", "d", "e"]),
        now: at(0),
        ..Default::default()
    };
    let p = step(&mut obj, &targets, &world);
    assert_eq!(p.start, ["a", "b"]);
    assert_eq!(
        (p.status.running, p.status.pending, p.status.total),
        (2, 3, 5)
    );
    assert_eq!(p.status.phase, CommandPhase::Running);
    assert_eq!(
        p.status.task_id.as_deref(),
        Some("11111111222233334444555555555555")
    );
    assert_eq!(p.notes.iter().filter(|n| n.reason == "Started").count(), 1);
    let a = &p.status.cmd_jobs[0];
    assert_eq!(a.job_id.len(), 32);
    assert!(a.job_name.is_some() && a.start_time.is_some());

    // Nothing finished yet: no new start, whatever the cache says.
    let mut runs = BTreeMap::new();
    runs.insert(
        "a".to_string(),
        observed(RunState::Active { pods: 1 }, None),
    );
    runs.insert(
        "b".to_string(),
        observed(RunState::Active { pods: 1 }, None),
    );
    let world = World {
        runs: runs.clone(),
        ..world
    };
    let p = step(
        &mut obj,
        &targets,
        &World {
            now: at(1),
            ..world.clone()
        },
    );
    assert!(p.start.is_empty());
    assert!(
        p.notes.iter().all(|n| n.reason != "Started"),
        "Started is emitted once"
    );

    // One finishes: exactly one more starts.
    runs.insert("a".to_string(), observed(RunState::Succeeded, Some(0)));
    let p = step(
        &mut obj,
        &targets,
        &World {
            runs,
            now: at(2),
            ..world
        },
    );
    assert_eq!(p.start, ["c"]);
    assert_eq!((p.status.succeeded, p.status.running), (1, 2));
}

#[test]
fn percentage_concurrency_rounds_up_and_is_at_least_one() {
    let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut obj =
        command(json!({"command": "uptime", "nodeNames": names, "maxConcurrency": "25%"}));
    let world = World {
        nodes: ready(&refs),
        now: at(0),
        ..Default::default()
    };
    assert_eq!(step(&mut obj, &names, &world).start.len(), 3);
    let mut obj = command(json!({"command": "uptime", "nodeNames": names, "maxConcurrency": "1%"}));
    assert_eq!(step(&mut obj, &names, &world).start.len(), 1);
}

#[test]
fn a_job_found_without_a_status_entry_is_adopted_not_recreated() {
    // The operator created b's Job and was killed before writing status.
    let mut obj =
        command(json!({"command": "uptime", "nodeNames": ["a", "b"], "maxConcurrency": 1}));
    let targets = nodes(&["a", "b"]);
    let mut runs = BTreeMap::new();
    runs.insert(
        "b".to_string(),
        observed(RunState::Active { pods: 1 }, None),
    );
    let world = World {
        nodes: ready(&["a", "b"]),
        runs,
        now: at(0),
        ..Default::default()
    };
    let p = step(&mut obj, &targets, &world);
    assert!(p.start.is_empty(), "b's Job fills the only slot; a waits");
    assert_eq!(phase_of(&p, "b"), NodePhase::Running);
    assert_eq!(phase_of(&p, "a"), NodePhase::Pending);
}

#[test]
fn missing_and_not_ready_nodes_fail_on_their_own() {
    let mut obj = command(
        json!({"command": "uptime", "nodeNames": ["ok", "gone", "sick"], "nodeReadyTimeoutSeconds": 30}),
    );
    let targets = nodes(&["ok", "gone", "sick"]);
    let mut cluster = ready(&["ok"]);
    cluster.insert(
        "sick".into(),
        NodeInfo {
            ready: false,
            ..Default::default()
        },
    );
    let world = World {
        nodes: cluster,
        now: at(0),
        ..Default::default()
    };
    let p = step(&mut obj, &targets, &world);
    assert_eq!(p.start, ["ok"], "one bad node never blocks the others");
    assert_eq!(phase_of(&p, "gone"), NodePhase::Failed);
    let gone = &p.status.cmd_jobs[1];
    assert_eq!(gone.reason.as_deref(), Some(reason::NODE_NOT_FOUND));
    assert_eq!(phase_of(&p, "sick"), NodePhase::Pending);
    assert!(p.requeue_after.expect("requeue") <= Duration::from_secs(10));
    assert!(
        p.notes
            .iter()
            .any(|n| n.reason == "NodeFailed" && n.message.contains("gone: NodeNotFound"))
    );

    // Past the deadline the NotReady node fails with its reason.
    let p = step(
        &mut obj,
        &targets,
        &World {
            now: at(31),
            ..world
        },
    );
    let sick = &p.status.cmd_jobs[2];
    assert_eq!(
        (sick.phase, sick.reason.as_deref()),
        (NodePhase::Failed, Some(reason::NODE_NOT_READY))
    );
}

#[test]
fn a_node_turning_ready_in_time_starts() {
    let mut obj =
        command(json!({"command": "uptime", "nodeNames": ["sick"], "nodeReadyTimeoutSeconds": 30}));
    let targets = nodes(&["sick"]);
    let mut cluster = BTreeMap::new();
    cluster.insert(
        "sick".to_string(),
        NodeInfo {
            ready: false,
            ..Default::default()
        },
    );
    step(
        &mut obj,
        &targets,
        &World {
            nodes: cluster,
            now: at(0),
            ..Default::default()
        },
    );
    let p = step(
        &mut obj,
        &targets,
        &World {
            nodes: ready(&["sick"]),
            now: at(20),
            ..Default::default()
        },
    );
    assert_eq!(p.start, ["sick"]);
    assert_eq!(p.status.cmd_jobs[0].reason, None);
}

#[test]
fn max_errors_cancels_the_nodes_never_started() {
    let mut obj = command(
        json!({"command": "uptime", "nodeNames": ["a", "b", "c", "d"], "maxConcurrency": 2, "maxErrors": 0}),
    );
    let targets = nodes(&["a", "b", "c", "d"]);
    let world = World {
        nodes: ready(&["a", "b", "c", "d"]),
        now: at(0),
        ..Default::default()
    };
    step(&mut obj, &targets, &world);
    let mut runs = BTreeMap::new();
    runs.insert("a".to_string(), observed(RunState::Failed, Some(2)));
    runs.insert(
        "b".to_string(),
        observed(RunState::Active { pods: 1 }, None),
    );
    let p = step(
        &mut obj,
        &targets,
        &World {
            runs: runs.clone(),
            now: at(5),
            ..world.clone()
        },
    );
    assert!(p.start.is_empty());
    assert_eq!(
        phase_of(&p, "b"),
        NodePhase::Running,
        "in-flight nodes finish"
    );
    for n in ["c", "d"] {
        let e = p
            .status
            .cmd_jobs
            .iter()
            .find(|e| e.node_name == n)
            .expect("entry");
        assert_eq!(
            (e.phase, e.reason.as_deref()),
            (NodePhase::Cancelled, Some(reason::MAX_ERRORS_REACHED))
        );
    }
    assert!(p.notes.iter().any(|n| n.reason == "MaxErrorsReached"));
    runs.insert("b".to_string(), observed(RunState::Succeeded, Some(0)));
    let p = step(
        &mut obj,
        &targets,
        &World {
            runs,
            now: at(6),
            ..world
        },
    );
    assert_eq!(p.status.phase, CommandPhase::Failed);
    assert_eq!(
        (p.status.succeeded, p.status.failed, p.status.cancelled),
        (1, 1, 2)
    );
    // A failure is terminal for kstatus: Stalled with the failure's reason.
    let stalled = p.status.conditions.iter().find(|c| c.type_ == STALLED);
    assert_eq!(
        stalled.map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "NodesFailed"))
    );
    assert!(p.notes.iter().any(|n| n.reason == "Failed" && n.warning));
}

#[test]
fn completion_conditions_and_ttl() {
    let mut obj =
        command(json!({"command": "uptime", "nodeNames": ["a"], "ttlSecondsAfterFinished": 60}));
    let targets = nodes(&["a"]);
    let world = World {
        nodes: ready(&["a"]),
        now: at(0),
        ..Default::default()
    };
    let p = step(&mut obj, &targets, &world);
    assert!(conditions::is_true(&p.status.conditions, RECONCILING));
    let ready_since = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("ready")
        .last_transition_time
        .clone();
    let mut runs = BTreeMap::new();
    runs.insert(
        "a".to_string(),
        observed(RunState::Active { pods: 1 }, None),
    );
    let p = step(
        &mut obj,
        &targets,
        &World {
            runs: runs.clone(),
            now: at(3),
            ..world.clone()
        },
    );
    let still = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("ready")
        .last_transition_time
        .clone();
    assert_eq!(
        ready_since, still,
        "no transition, no new lastTransitionTime"
    );

    runs.insert("a".to_string(), observed(RunState::Succeeded, Some(0)));
    let p = step(
        &mut obj,
        &targets,
        &World {
            runs: runs.clone(),
            now: at(10),
            ..world.clone()
        },
    );
    assert_eq!(p.status.phase, CommandPhase::Succeeded);
    assert!(conditions::is_true(&p.status.conditions, READY));
    assert!(conditions::is_true(&p.status.conditions, COMPLETE));
    assert!(!conditions::is_true(&p.status.conditions, FAILED));
    assert!(p.status.conditions.iter().all(|c| c.type_ != RECONCILING));
    assert!(p.status.conditions.iter().all(|c| c.type_ != STALLED));
    assert_eq!(p.status.completion_time, Some(Time(at(10))));
    assert_eq!(p.status.progress.as_deref(), Some("1/1"));
    assert!(
        p.notes
            .iter()
            .any(|n| n.reason == "Succeeded" && !n.warning)
    );
    let wait = p.requeue_after.expect("requeue for ttl");
    assert!(
        wait >= Duration::from_secs(59) && wait <= Duration::from_secs(61),
        "{wait:?}"
    );
    assert!(!p.delete_self);

    // Completion is reported once; the TTL then deletes the object.
    let p = step(
        &mut obj,
        &targets,
        &World {
            runs,
            now: at(71),
            ..world
        },
    );
    assert!(p.notes.is_empty());
    assert!(p.delete_self);
}

#[test]
fn final_results_survive_their_jobs() {
    let mut obj = command(json!({"command": "uptime", "nodeNames": ["a"]}));
    let targets = nodes(&["a"]);
    let mut runs = BTreeMap::new();
    runs.insert("a".to_string(), observed(RunState::Succeeded, Some(0)));
    let world = World {
        nodes: ready(&["a"]),
        runs,
        now: at(0),
        ..Default::default()
    };
    step(&mut obj, &targets, &world);
    // The Job is gone (deleted by hand) and so is the node: the result stays.
    let p = step(
        &mut obj,
        &targets,
        &World {
            now: at(5),
            ..Default::default()
        },
    );
    assert_eq!(phase_of(&p, "a"), NodePhase::Succeeded);
    assert_eq!(p.status.cmd_jobs[0].output.as_deref(), Some("out"));
    assert!(p.start.is_empty());
}

#[test]
fn a_job_deleted_while_running_is_reported_lost_not_rerun() {
    let mut obj = command(json!({"command": "uptime", "nodeNames": ["a"]}));
    let targets = nodes(&["a"]);
    let world = World {
        nodes: ready(&["a"]),
        now: at(0),
        ..Default::default()
    };
    assert_eq!(step(&mut obj, &targets, &world).start, ["a"]);
    let p = step(
        &mut obj,
        &targets,
        &World {
            now: at(5),
            ..world
        },
    );
    assert!(p.start.is_empty(), "never run twice");
    let e = &p.status.cmd_jobs[0];
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (NodePhase::Failed, Some(reason::JOB_LOST))
    );
}

#[test]
fn admission_refusal_fails_the_node_and_removes_its_job() {
    let mut obj = command(json!({"command": "uptime", "nodeNames": ["a"]}));
    let targets = nodes(&["a"]);
    let mut runs = BTreeMap::new();
    runs.insert(
        "a".to_string(),
        observed(RunState::Active { pods: 0 }, None),
    );
    let mut refused = BTreeMap::new();
    refused.insert(
        "a".to_string(),
        "pods \"x\" is forbidden: violates PodSecurity \"baseline\"".to_string(),
    );
    let world = World {
        nodes: ready(&["a"]),
        runs,
        refused,
        now: at(0),
        ..World::default()
    };
    let p = step(&mut obj, &targets, &world);
    assert_eq!(p.delete, ["a"]);
    let e = &p.status.cmd_jobs[0];
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (NodePhase::Failed, Some(reason::ADMISSION_REFUSED))
    );
    assert!(
        e.message
            .as_deref()
            .expect("message")
            .contains("PodSecurity")
    );
}

#[test]
fn a_failure_the_pods_show_fails_the_node_and_deletes_its_active_job() {
    let mut obj = command(json!({"command": "uptime", "nodeNames": ["a", "b"]}));
    let targets = nodes(&["a", "b"]);
    let world = World {
        nodes: ready(&["a", "b"]),
        now: at(0),
        ..Default::default()
    };
    assert_eq!(step(&mut obj, &targets, &world).start, ["a", "b"]);
    // a: the image cannot be pulled while its Job is active; b: its Job failed on its own.
    let mut pulled = observed(RunState::Failed, None);
    pulled.job_active = true;
    pulled.reason = Some(reason::IMAGE_NOT_AVAILABLE.into());
    pulled.message = Some("image \"x\" of container run is not available (ErrImagePull)".into());
    let mut runs = BTreeMap::new();
    runs.insert("a".to_string(), pulled);
    runs.insert("b".to_string(), observed(RunState::Failed, Some(3)));
    let world = World {
        nodes: ready(&["a", "b"]),
        runs,
        now: at(4),
        ..Default::default()
    };
    let p = step(&mut obj, &targets, &world);
    assert_eq!(p.delete, ["a"], "only the Job still active is deleted");
    let e = &p.status.cmd_jobs[0];
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (NodePhase::Failed, Some(reason::IMAGE_NOT_AVAILABLE))
    );
    assert_eq!(e.completion_time, Some(Time(at(4))));
    assert_eq!(p.status.phase, CommandPhase::Failed);
    // The delete failed (or is not seen yet): asked again, the result unchanged.
    let p = step(
        &mut obj,
        &targets,
        &World {
            now: at(9),
            ..world.clone()
        },
    );
    assert_eq!(p.delete, ["a"]);
    assert_eq!(p.status.cmd_jobs[0].completion_time, Some(Time(at(4))));
    // The Job is gone: nothing to delete, and the node stays ImageNotAvailable, not JobLost.
    let mut world = world;
    world.runs.remove("a");
    let p = step(
        &mut obj,
        &targets,
        &World {
            now: at(12),
            ..world
        },
    );
    assert!(p.delete.is_empty());
    assert_eq!(
        p.status.cmd_jobs[0].reason.as_deref(),
        Some(reason::IMAGE_NOT_AVAILABLE)
    );
}

#[test]
fn status_of_100_nodes_with_full_outputs_stays_small() {
    let names: Vec<String> = (0..100).map(|i| format!("node-{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut obj = command(json!({"command": "uptime", "nodeNames": names}));
    let mut runs = BTreeMap::new();
    for n in &names {
        let mut o = observed(RunState::Failed, Some(1));
        o.output = Some("x".repeat(OUTPUT_LIMIT));
        o.message = Some("m".repeat(10_000));
        runs.insert(n.clone(), o);
    }
    let world = World {
        nodes: ready(&refs),
        runs,
        now: at(0),
        ..Default::default()
    };
    let p = step(&mut obj, &names, &world);
    let size = serde_json::to_vec(&p.status).expect("json").len();
    println!("status of 100 nodes with full outputs: {size} bytes");
    assert!(
        size < 512 * 1024,
        "{size} bytes, well under the API server's 1.5 MiB"
    );
    assert!(
        p.status
            .cmd_jobs
            .iter()
            .all(|e| e.message.as_ref().expect("message").len() <= MESSAGE_LIMIT)
    );
}

#[test]
fn invalid_spec_is_stalled_with_its_reason() {
    let obj = command(json!({"command": "uptime", "nodeNames": ["a"], "executionMode": "Host"}));
    let s = invalid(
        &obj,
        "HostModeNotAllowed",
        "host mode is not allowed in namespace default",
        at(0),
    );
    assert_eq!(s.phase, CommandPhase::Invalid);
    assert!(conditions::is_true(&s.conditions, STALLED));
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == STALLED)
        .expect("stalled");
    assert_eq!(c.reason, "HostModeNotAllowed");
}

fn fleet(nodes: &[(&str, &str)]) -> Vec<Arc<Node>> {
    nodes
        .iter()
        .map(|(name, role)| {
            let mut n = Node::default();
            n.metadata.name = Some(name.to_string());
            n.metadata.labels = Some([("role".to_string(), role.to_string())].into());
            Arc::new(n)
        })
        .collect()
}

fn reason_of(r: Result<impl std::fmt::Debug, Invalid>) -> &'static str {
    r.expect_err("invalid").reason
}

#[test]
fn validation_is_a_pure_step_with_a_reason_for_each_refusal() {
    let mut world = World::default();
    world.settings.host_mode_namespaces = ["ops".to_string()].into();
    let mut host =
        command(json!({"command": "uptime", "nodeNames": ["a"], "executionMode": "Host"}));
    host.metadata.namespace = Some("dev".into());
    assert_eq!(
        reason_of(Decisions::validate(&host, &world)),
        "HostModeNotAllowed"
    );
    host.metadata.namespace = Some("ops".into());
    assert!(Decisions::validate(&host, &world).is_ok());

    let quoted = command(json!({"command": "echo 'unterminated", "nodeNames": ["a"]}));
    assert_eq!(
        reason_of(Decisions::validate(&quoted, &world)),
        "InvalidCommand"
    );

    let by_ref = command(json!({"commandRef": "disk", "nodeNames": ["a"]}));
    assert_eq!(
        reason_of(Decisions::validate(&by_ref, &world)),
        "CommandNotFound"
    );
    world.command = Some(Command::new(
        "disk",
        serde_json::from_value(json!({"content": "df {{path}}", "enableParameters": true}))
            .expect("spec"),
    ));
    assert_eq!(
        reason_of(Decisions::validate(&by_ref, &world)),
        "ParameterInvalid",
        "path has no value"
    );

    world.fleet = fleet(&[("a", "db"), ("b", "web"), ("c", "web")]);
    let web =
        command(json!({"command": "uptime", "nodeSelector": {"matchLabels": {"role": "web"}}}));
    let (_, targets, _) = Decisions::validate(&web, &world).expect("valid");
    assert_eq!(targets, Targets::Nodes(nodes(&["b", "c"])));
    let none =
        command(json!({"command": "uptime", "nodeSelector": {"matchLabels": {"role": "cache"}}}));
    assert_eq!(
        reason_of(Decisions::validate(&none, &world)),
        "NoNodesSelected"
    );
    let bad = command(
        json!({"command": "uptime", "nodeSelector": {"matchExpressions": [{"key": "role", "operator": "Bogus"}]}}),
    );
    assert_eq!(
        reason_of(Decisions::validate(&bad, &world)),
        "InvalidNodeSelector"
    );
}

#[test]
fn a_stalled_command_says_why_once() {
    let world = World::default();
    let mut obj = command(json!({"commandRef": "missing", "nodeNames": ["a"]}));
    let first = Decisions::decide(&obj, &world);
    assert_eq!(first.status.phase, CommandPhase::Invalid);
    assert!(first.before.is_empty(), "nothing started");
    assert_eq!(
        first.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["CommandNotFound"]
    );
    obj.status = Some(first.status);
    let again = Decisions::decide(&obj, &world);
    assert!(
        again.notes.is_empty(),
        "still stalled for the same reason: no Event"
    );
    assert!(
        again.requeue.is_some(),
        "looks again: the Command may appear"
    );
}

#[test]
fn the_rollout_policy_holds_starts_outside_the_window_and_while_soaking() {
    // at(0) is 08:00Z; the window is 09:00-10:00Z.
    let mut obj = command(json!({
        "command": "uptime", "nodeNames": ["a", "b", "c", "d"], "maxConcurrency": 2,
        "rollout": {"maintenanceWindows": [{"schedule": "0 9 * * *", "duration": "1h"}], "soakSeconds": 300}
    }));
    let targets = nodes(&["a", "b", "c", "d"]);
    let mut world = World {
        nodes: ready(&["a", "b", "c", "d"]),
        now: at(0),
        ..Default::default()
    };
    let p = step(&mut obj, &targets, &world);
    assert!(p.start.is_empty());
    assert_eq!(p.status.next_start_time, Some(Time(at(3600))));
    assert_eq!(
        p.status.cmd_jobs[0].reason.as_deref(),
        Some("OutsideMaintenanceWindow")
    );
    assert!(conditions::is_true(&p.status.conditions, PAUSED));
    assert_eq!(
        p.notes
            .iter()
            .filter(|n| n.reason == "OutsideMaintenanceWindow")
            .count(),
        1
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
    // Near the opening, woken for it exactly.
    world.now = at(3590);
    let p = step(&mut obj, &targets, &world);
    assert_eq!(p.requeue_after, Some(Duration::from_millis(10_200)));
    assert!(p.notes.is_empty(), "no Event without a transition");
    // The window opens: a batch of two starts.
    world.now = at(3600);
    let p = step(&mut obj, &targets, &world);
    assert_eq!(p.start, ["a", "b"]);
    assert!(!conditions::is_true(&p.status.conditions, PAUSED));
    assert!(p.notes.iter().any(|n| n.reason == "Resumed"));
    // The batch finishes at +60 s: soaking for 300 s, then the next batch.
    let mut runs = BTreeMap::new();
    runs.insert("a".to_string(), observed(RunState::Succeeded, Some(0)));
    runs.insert("b".to_string(), observed(RunState::Succeeded, Some(0)));
    world.runs = runs;
    world.now = at(3660);
    let p = step(&mut obj, &targets, &world);
    assert!(p.start.is_empty());
    assert_eq!(p.status.next_start_time, Some(Time(at(3960))));
    assert_eq!(p.status.cmd_jobs[2].reason.as_deref(), Some("Soaking"));
    world.now = at(3960);
    let p = step(&mut obj, &targets, &world);
    assert_eq!(p.start, ["c", "d"]);
    assert_eq!(p.status.next_start_time, None);
}

#[test]
fn a_node_gate_holds_while_a_target_has_the_condition() {
    let mut obj = command(json!({
        "command": "uptime", "nodeNames": ["a", "b"],
        "rollout": {"healthGates": [{"nodeCondition": {"type": "MemoryPressure"}}]}
    }));
    let targets = nodes(&["a", "b"]);
    let mut world = World {
        nodes: ready(&["a", "b"]),
        now: at(0),
        ..Default::default()
    };
    world.nodes.get_mut("b").expect("b").conditions =
        vec![("MemoryPressure".into(), "True".into())];
    let p = step(&mut obj, &targets, &world);
    assert!(p.start.is_empty());
    let note = p
        .notes
        .iter()
        .find(|n| n.reason == "HealthGateUnhealthy")
        .expect("Event");
    assert!(
        note.warning && note.message.contains("MemoryPressure=True on 1 node: b"),
        "{}",
        note.message
    );
    world.nodes.get_mut("b").expect("b").conditions.clear();
    world.now = at(10);
    let p = step(&mut obj, &targets, &world);
    assert_eq!(p.start, ["a", "b"]);
}

#[test]
fn a_one_node_run_writes_its_status_when_it_starts_and_when_it_ends_only() {
    // Each status that differs from the last one is a write: a one-node object's budget
    // of API requests is its Job, these writes and its Events.
    let mut obj = command(json!({"command": "uptime", "nodeNames": ["a"]}));
    let targets = nodes(&["a"]);
    let world = |runs: BTreeMap<String, Observed>, now| World {
        nodes: ready(&["a"]),
        runs,
        now,
        ..Default::default()
    };
    let mut writes = 0;
    let mut last = None;
    let mut seen = |obj: &AsyncCommand, what: &str| {
        if obj.status != last {
            writes += 1;
            println!("write {writes} after {what}");
            last = obj.status.clone();
        }
    };
    let p = step(&mut obj, &targets, &world(BTreeMap::new(), at(0)));
    assert_eq!(p.start, ["a"]);
    seen(&obj, "the start");
    // The Job as created (its creation time), then as the Job controller and kubelet move it.
    let mut created = observed(RunState::Active { pods: 0 }, None);
    created.start_time = Some(Time(at(0)));
    created.output = None;
    let mut running = observed(RunState::Active { pods: 1 }, None);
    running.output = None;
    let done = observed(RunState::Succeeded, Some(0));
    for (what, obs, t) in [
        ("the Job created", created.clone(), 1),
        ("its Pod pending", created, 2),
        ("its Pod running", running.clone(), 3),
        ("the Job running", running, 4),
        // The Pod's report (exit code, output) read before the Job controller ends the Job.
        (
            "its Pod done",
            observed(RunState::Active { pods: 1 }, Some(0)),
            5,
        ),
        ("the Job done", done.clone(), 5),
        ("the Job done, again", done, 6),
    ] {
        let runs = BTreeMap::from([("a".to_string(), obs)]);
        step(&mut obj, &targets, &world(runs, at(t)));
        seen(&obj, what);
    }
    assert_eq!(writes, 2, "one write to start, one to finish");
}

#[test]
fn only_a_spec_not_acted_on_wakes_at_once_and_a_batch_only_when_granted() {
    use crate::api::async_command::CmdJob;
    let with_status = |mut obj: AsyncCommand, observed: i64, started: usize| {
        obj.status = Some(AsyncCommandStatus {
            observed_generation: Some(observed),
            cmd_jobs: (0..3)
                .map(|i| CmdJob {
                    node_name: format!("n{i}"),
                    job_name: (i < started).then(|| format!("job-{i}")),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        obj
    };
    let plain = command(json!({"command": "uptime", "nodeNames": ["n0", "n1", "n2"]}));
    assert!(wakes_at_once(&plain), "a new object");
    assert!(
        !wakes_at_once(&with_status(plain.clone(), 1, 1)),
        "its own status written"
    );
    let mut changed = with_status(plain, 1, 1);
    changed.metadata.generation = Some(2);
    assert!(wakes_at_once(&changed), "its spec changed");

    let batch = |starts: i32, generation: i64| {
        let mut b = command(json!({"command": "uptime", "nodeNames": ["n0", "n1", "n2"],
            "batch": {"starts": starts}}));
        b.metadata.generation = Some(generation);
        b
    };
    assert!(
        !wakes_at_once(&batch(0, 1)),
        "a batch just created, granted nothing"
    );
    assert!(
        wakes_at_once(&batch(2, 2)),
        "granted before its first status"
    );
    assert!(
        wakes_at_once(&with_status(batch(2, 2), 1, 0)),
        "granted two, none started"
    );
    assert!(
        !wakes_at_once(&with_status(batch(2, 3), 2, 2)),
        "changed, with every granted node started"
    );
    assert!(
        !wakes_at_once(&with_status(batch(2, 2), 2, 0)),
        "its own status written"
    );
}
