use super::*;
use crate::agent::agent_uuid;
use crate::api::agent_invocation::{AgentInvocation, InvocationPhase};
use crate::api::agent_upgrade_job::AgentUpgrade;
use crate::conditions::{COMPLETE, FAILED};
use crate::keys::{NODE_ANNOTATION, ROLE_LABEL};
use serde_json::json;

/// The plan with the job's own rollout policy.
fn plan(job: &AgentUpgradeJob, world: &World) -> Plan {
    let policy = policy::parse(job.spec.rollout.as_ref()).expect("valid policy");
    super::plan(job, world, &policy)
}

fn now() -> Timestamp {
    "2026-11-26T02:00:00Z".parse().expect("ts")
}

fn job(spec: serde_json::Value) -> AgentUpgradeJob {
    let mut spec = spec;
    spec["targetVersion"] = json!("2.0.0");
    serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1",
        "kind": "AgentUpgradeJob",
        "metadata": {"name": "up", "namespace": "ops", "uid": "job-uid", "generation": 1},
        "spec": spec,
    }))
    .expect("job")
}

/// n1..n6 at 1.0.0 (n3 not Ready), n7 at 2.0.0, n8 without the agent; n1..n7 selected.
fn world() -> World {
    let mut nodes = BTreeMap::new();
    for i in 1..=8 {
        nodes.insert(
            format!("n{i}"),
            NodeView {
                uid: format!("uid-{i}"),
                ready: i != 3,
                version: match i {
                    7 => Some("2.0.0".into()),
                    8 => None,
                    _ => Some("1.0.0".into()),
                },
                selected: i != 8,
                conditions: vec![("Ready".into(), if i == 3 { "False" } else { "True" }.into())],
            },
        );
    }
    World {
        now: now(),
        agent_uid: "agent-uid".into(),
        nodes,
        ..Default::default()
    }
}

fn states(status: &AgentUpgradeJobStatus) -> Vec<(String, S)> {
    status
        .agents
        .iter()
        .map(|a| (a.node_name.clone().unwrap_or_default(), a.status))
        .collect()
}

fn result(phase: InvocationPhase, before: &str, after: &str) -> ChildView {
    ChildView {
        result: Some(InvocationResult {
            instance_id: "x".into(),
            invocation_id: "inv-id".into(),
            phase,
            version_before: Some(before.into()),
            version_after: Some(after.into()),
            reason: (phase == InvocationPhase::Failed).then(|| "AgentNotReady".to_string()),
            error_code: (phase == InvocationPhase::Failed)
                .then(|| "invocationmgr.0101".to_string()),
            ..Default::default()
        }),
    }
}

fn running() -> ChildView {
    ChildView { result: None }
}

fn again(j: &AgentUpgradeJob, status: &AgentUpgradeJobStatus, w: &World) -> Plan {
    let mut next = j.clone();
    next.status = Some(status.clone());
    plan(&next, w)
}

/// The message of the Complete condition: the job's summary.
fn complete_message(status: &AgentUpgradeJobStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == COMPLETE)
        .map(|c| c.message.clone())
        .expect("Complete")
}

#[test]
fn a_target_below_an_agent_is_a_downgrade_skipped_unless_allowed() {
    use crate::api::agent_upgrade_job::Direction;
    let mut w = world();
    w.nodes.get_mut("n1").expect("n1").version = Some("3.2.1".into());
    // The seed's sample: 3.2.1 -> 1.5.0 (n2 at 1.0.0 goes up to it).
    let at = |allow: bool| {
        let mut j = job(json!({"nodeSelector": {}, "simulated": true, "allowDowngrade": allow}));
        j.spec.target_version = "1.5.0".into();
        plan(&j, &w).status
    };
    let refused = at(false);
    let n1 = &refused.agents[0];
    assert_eq!(
        (n1.node_name.as_deref(), n1.status, n1.direction),
        (Some("n1"), S::Skipped, None)
    );
    assert!(
        n1.error
            .as_deref()
            .is_some_and(|e| e.starts_with("DowngradeNotAllowed: the agent runs 3.2.1")),
        "{n1:?}"
    );
    assert_eq!(
        n1.new_version.as_deref(),
        Some("3.2.1"),
        "it keeps its version"
    );
    let n2 = &refused.agents[1];
    assert_eq!(
        (n2.status, n2.direction),
        (S::Pending, Some(Direction::Upgrade))
    );
    let summary = complete_message(&refused);
    assert!(
        summary.starts_with(
            "simulated: 4 would be upgraded and 0 downgraded to 1.5.0, 0 current, 3 cannot be changed"
        ),
        "{summary}"
    );

    let allowed = at(true);
    let n1 = &allowed.agents[0];
    assert_eq!(
        (n1.status, n1.direction, n1.new_version.as_deref()),
        (S::Pending, Some(Direction::Downgrade), Some("1.5.0"))
    );
    let summary = complete_message(&allowed);
    // n1 (3.2.1) and n7 (2.0.0) go down; n3 is not Ready.
    assert!(
        summary.starts_with("simulated: 4 would be upgraded and 2 downgraded to 1.5.0, 0 current, 1 cannot be changed"),
        "{summary}"
    );
}

#[test]
fn simulation_reports_the_whole_plan_and_changes_nothing() {
    let j = job(json!({"nodeSelector": {}, "simulated": true, "canaryNodes": ["n5"]}));
    let p = plan(&j, &world());
    assert!(p.effects.is_empty(), "a simulation changes nothing");
    assert_eq!(
        states(&p.status),
        [
            ("n5".to_string(), S::Pending),
            ("n1".into(), S::Pending),
            ("n2".into(), S::Pending),
            ("n3".into(), S::Skipped),
            ("n4".into(), S::Pending),
            ("n6".into(), S::Pending),
            ("n7".into(), S::Current),
        ],
        "canary first, then by name; the node without the agent is not part of it"
    );
    let n3 = &p.status.agents[3];
    assert!(
        n3.error
            .as_deref()
            .is_some_and(|e| e.starts_with("NodeNotReady"))
    );
    assert_eq!(p.status.agents[0].old_version.as_deref(), Some("1.0.0"));
    assert_eq!(p.status.agents[0].new_version.as_deref(), Some("2.0.0"));
    assert_eq!(
        p.status.status,
        UpgradeJobState::Planned,
        "a plan, not a success"
    );
    assert_eq!(
        p.status.agents[0].direction,
        Some(crate::api::agent_upgrade_job::Direction::Upgrade)
    );
    assert!(p.status.simulated && p.status.completed_at.is_some());
    assert_eq!(p.notes[0].reason, "Simulated");
    assert!(conditions::is_true(&p.status.conditions, COMPLETE));
    assert!(!conditions::is_true(
        &p.status.conditions,
        crate::conditions::STALLED
    ));
}

#[test]
fn agents_named_by_uuid() {
    let uuid = agent_uuid("agent-uid", "uid-2");
    let j = job(json!({"agents": [uuid, "00000000-0000-0000-0000-000000000000"]}));
    let p = plan(&j, &world());
    assert_eq!(p.status.agents[0].node_name, None);
    assert_eq!(p.status.agents[0].status, S::Skipped);
    assert!(
        p.status.agents[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("AgentNotFound"))
    );
    assert_eq!(p.status.agents[1].node_name.as_deref(), Some("n2"));
    assert_eq!(p.effects, [Effect::Upgrade { node: "n2".into() }]);
}

#[test]
fn never_more_than_max_concurrency_in_flight() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 2}));
    let mut w = world();
    let p1 = plan(&j, &w);
    assert_eq!(
        p1.effects,
        [
            Effect::Upgrade { node: "n1".into() },
            Effect::Upgrade { node: "n2".into() }
        ]
    );
    assert_eq!(p1.status.in_flight, 2);
    assert_eq!(p1.status.status, UpgradeJobState::Running);
    // The children exist, unfinished: nothing more starts.
    w.upgrades.insert("n1".into(), running());
    w.upgrades.insert("n2".into(), running());
    let p2 = again(&j, &p1.status, &w);
    assert!(p2.effects.is_empty());
    // One finishes: exactly one more starts.
    w.upgrades.insert(
        "n1".into(),
        result(InvocationPhase::Succeeded, "1.0.0", "2.0.0"),
    );
    let p3 = again(&j, &p2.status, &w);
    assert_eq!(p3.effects, [Effect::Upgrade { node: "n4".into() }]);
    let n1 = &p3.status.agents[0];
    assert_eq!(
        (n1.status, n1.new_version.as_deref()),
        (S::Success, Some("2.0.0"))
    );
}

#[test]
fn a_restart_after_creating_children_adopts_them_and_never_exceeds_the_limit() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 2}));
    let mut w = world();
    let p1 = plan(&j, &w);
    // Crash after creating the children, before writing the status: the stored status is
    // the first one with every agent Pending (here: no status at all, then the agents).
    let mut stale = p1.status.clone();
    for a in stale.agents.iter_mut().filter(|a| a.status == S::Running) {
        a.status = S::Pending;
    }
    w.upgrades.insert("n1".into(), running());
    w.upgrades.insert("n2".into(), running());
    let p2 = again(&j, &stale, &w);
    assert!(p2.effects.is_empty(), "{:?}", p2.effects);
    assert_eq!(
        states(&p2.status)[..2],
        [("n1".to_string(), S::Running), ("n2".into(), S::Running)]
    );
}

#[test]
fn failures_past_max_failures_stop_the_rollout() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 2, "maxFailures": 1}));
    let mut w = world();
    let p1 = plan(&j, &w);
    w.upgrades.insert(
        "n1".into(),
        result(InvocationPhase::Failed, "1.0.0", "1.0.0"),
    );
    w.upgrades.insert("n2".into(), running());
    let p2 = again(&j, &p1.status, &w);
    assert_eq!(
        p2.effects,
        [Effect::Upgrade { node: "n4".into() }],
        "one failure is tolerated"
    );
    assert!(
        p2.status.agents[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("invocationmgr.0101"))
    );
    w.upgrades.insert(
        "n2".into(),
        result(InvocationPhase::Failed, "1.0.0", "1.0.0"),
    );
    w.upgrades.insert("n4".into(), running());
    let p3 = again(&j, &p2.status, &w);
    assert!(p3.effects.is_empty());
    assert_eq!(p3.status.failures, 2);
    let n6 = p3
        .status
        .agents
        .iter()
        .find(|a| a.node_name.as_deref() == Some("n6"))
        .expect("n6");
    assert_eq!(n6.status, S::Skipped);
    assert!(
        n6.error
            .as_deref()
            .is_some_and(|e| e.contains("maxFailures 1"))
    );
    assert!(p3.notes.iter().any(|n| n.reason == "RolloutStopped"));
    assert_eq!(
        p3.status.status,
        UpgradeJobState::Running,
        "n4 is still in flight"
    );
    w.upgrades.insert(
        "n4".into(),
        result(InvocationPhase::Succeeded, "1.0.0", "2.0.0"),
    );
    let p4 = again(&j, &p3.status, &w);
    assert_eq!(p4.status.status, UpgradeJobState::Failed);
    assert!(p4.status.completed_at.is_some());
    assert!(
        conditions::is_true(&p4.status.conditions, crate::conditions::STALLED),
        "a failure is terminal for kstatus"
    );
    let failed = p4
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == FAILED)
        .expect("Failed");
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "MaxFailuresExceeded")
    );
}

#[test]
fn pause_holds_and_resume_continues() {
    let paused = job(json!({"nodeSelector": {}, "maxConcurrency": 2, "paused": true}));
    let w = world();
    let p1 = plan(&paused, &w);
    assert!(p1.effects.is_empty());
    assert!(conditions::is_true(&p1.status.conditions, PAUSED));
    let resumed = job(json!({"nodeSelector": {}, "maxConcurrency": 2}));
    let p2 = again(&resumed, &p1.status, &w);
    assert_eq!(p2.effects.len(), 2);
    assert!(!conditions::is_true(&p2.status.conditions, PAUSED));
    assert!(p2.notes.iter().any(|n| n.reason == "Resumed"));
}

#[test]
fn failed_nodes_roll_back_when_asked() {
    let j = job(json!({"agents": [agent_uuid("agent-uid", "uid-1")], "rollbackOnFailure": true}));
    let mut w = world();
    let p1 = plan(&j, &w);
    w.upgrades.insert(
        "n1".into(),
        result(InvocationPhase::Failed, "1.0.0", "1.0.0"),
    );
    let p2 = again(&j, &p1.status, &w);
    assert_eq!(
        p2.effects,
        [Effect::Rollback {
            node: "n1".into(),
            invocation_id: "inv-id".into()
        }]
    );
    assert_eq!(
        p2.status.status,
        UpgradeJobState::Running,
        "the rollback is still open"
    );
    w.rollbacks.insert("n1".into(), running());
    let p3 = again(&j, &p2.status, &w);
    assert!(p3.effects.is_empty(), "one rollback per node");
    w.rollbacks.insert(
        "n1".into(),
        result(InvocationPhase::Succeeded, "1.0.0", "1.0.0"),
    );
    let p4 = again(&j, &p3.status, &w);
    assert_eq!(p4.status.agents[0].status, S::RolledBack);
    assert_eq!(p4.status.status, UpgradeJobState::Failed);
}

#[test]
fn a_deleted_child_fails_its_agent() {
    let j = job(json!({"agents": [agent_uuid("agent-uid", "uid-1")]}));
    let w = world();
    let p1 = plan(&j, &w);
    let p2 = again(&j, &p1.status, &w);
    assert_eq!(p2.status.agents[0].status, S::Failed);
    assert!(
        p2.effects.is_empty(),
        "never recreated: that could upgrade twice"
    );
}

/// Every state against every child observation: final states never move, Pending never
/// finishes without a child, Running only leaves with a final child.
#[test]
fn state_machine_is_exhaustively_well_formed() {
    let all = [
        S::Pending,
        S::Running,
        S::Success,
        S::Failed,
        S::Current,
        S::Skipped,
        S::RolledBack,
    ];
    let children = [
        None,
        Some(running()),
        Some(result(InvocationPhase::Succeeded, "1", "2")),
        Some(result(InvocationPhase::Failed, "1", "1")),
    ];
    for state in all {
        for up in &children {
            for rb in &children {
                let a = AgentUpgrade {
                    agent_uuid: "u".into(),
                    node_name: Some("n".into()),
                    status: state,
                    ..Default::default()
                };
                let next = step(&a, up.as_ref(), rb.as_ref(), now());
                let ctx = format!("{state:?} up={up:?} rb={rb:?}");
                match state {
                    S::Success | S::Current | S::Skipped | S::RolledBack => {
                        assert_eq!(next, a, "{ctx}")
                    }
                    S::Pending if up.is_none() => assert_eq!(next.status, S::Pending, "{ctx}"),
                    S::Pending | S::Running => {
                        let final_child = up.as_ref().is_some_and(|c| c.is_final());
                        assert_eq!(
                            matches!(next.status, S::Success | S::Failed),
                            final_child || up.is_none(),
                            "{ctx}"
                        );
                        if next.status == S::Failed {
                            // A lost child has no end time: a soak never waits on it.
                            assert!(
                                next.error.is_some()
                                    && (up.is_none() || next.completion_time.is_some()),
                                "{ctx}"
                            );
                        }
                    }
                    S::Failed => assert!(matches!(next.status, S::Failed | S::RolledBack), "{ctx}"),
                }
            }
        }
    }
}

#[test]
fn a_restart_before_the_first_status_adopts_children_whose_nodes_already_changed() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 2}));
    let mut w = world();
    // The children of n1 and n2 were created, then the operator died before the job's
    // first status write. n1's child already moved the label to the target and failed
    // its readiness check; n2's is still running with the label changed.
    w.nodes.get_mut("n1").expect("n1").version = Some("2.0.0".into());
    w.nodes.get_mut("n2").expect("n2").version = Some("2.0.0".into());
    w.upgrades.insert(
        "n1".into(),
        result(InvocationPhase::Failed, "1.0.0", "1.0.0"),
    );
    let mut n2 = result(InvocationPhase::Running, "1.0.0", "2.0.0");
    n2.result.as_mut().expect("result").version_after = None;
    w.upgrades.insert("n2".into(), n2);
    let p = plan(&j, &w);
    assert!(
        p.effects.is_empty(),
        "both slots are taken: {:?}",
        p.effects
    );
    let by_node: BTreeMap<String, AgentUpgrade> = p
        .status
        .agents
        .iter()
        .map(|a| (a.node_name.clone().unwrap_or_default(), a.clone()))
        .collect();
    assert_eq!(
        by_node["n1"].status,
        S::Failed,
        "not Current: its child failed"
    );
    assert_eq!(by_node["n1"].old_version.as_deref(), Some("1.0.0"));
    assert_eq!(by_node["n2"].status, S::Running);
    assert_eq!(by_node["n2"].old_version.as_deref(), Some("1.0.0"));
    assert_eq!(
        by_node["n7"].status,
        S::Current,
        "no child: decided by its label"
    );
}

#[test]
fn children_are_named_by_job_and_node_and_owned() {
    let job: AgentUpgradeJob = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": "AgentUpgradeJob",
        "metadata": {"name": "up", "namespace": "ops", "uid": "job-uid"},
        "spec": {"agent": "telescope", "nodeSelector": {}, "targetVersion": "2.0.0"},
    }))
    .expect("job");
    let up =
        serde_json::to_value(child(&job, &Effect::Upgrade { node: "n1".into() })).expect("json");
    assert_eq!(up["metadata"]["annotations"][NODE_ANNOTATION], "n1");
    let again =
        serde_json::to_value(child(&job, &Effect::Upgrade { node: "n1".into() })).expect("json");
    assert_eq!(up["metadata"]["name"], again["metadata"]["name"]);
    assert_eq!(up["spec"]["invocationType"], "Update");
    assert_eq!(up["spec"]["version"], "2.0.0");
    assert_eq!(
        up["metadata"]["ownerReferences"][0]["kind"],
        "AgentUpgradeJob"
    );
    let typed: AgentInvocation = serde_json::from_value(up.clone()).expect("an AgentInvocation");
    assert_eq!(typed.spec.node_names, Some(vec!["n1".to_string()]));
    let rb = serde_json::to_value(child(
        &job,
        &Effect::Rollback {
            node: "n1".into(),
            invocation_id: "id".into(),
        },
    ))
    .expect("json");
    assert_ne!(rb["metadata"]["name"], up["metadata"]["name"]);
    assert_eq!(rb["metadata"]["labels"][ROLE_LABEL], "rollback");
}

fn reason_of(status: &AgentUpgradeJobStatus, type_: &str) -> (String, String) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
        .expect("condition")
}

#[test]
fn no_node_starts_outside_a_window_and_the_rollout_resumes_in_the_next() {
    // now() is 02:00Z; the window is 22:00-23:00 UTC every day.
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 2,
        "rollout": {"maintenanceWindows": [{"schedule": "0 22 * * *", "duration": "1h"}]}}));
    let mut w = world();
    let p1 = plan(&j, &w);
    assert!(p1.effects.is_empty(), "{:?}", p1.effects);
    assert_eq!(
        reason_of(&p1.status, PAUSED),
        ("True".into(), "OutsideMaintenanceWindow".into())
    );
    let opens: Timestamp = "2026-11-26T22:00:00Z".parse().expect("ts");
    assert_eq!(p1.status.next_start_time, Some(Time(opens)));
    assert!(
        p1.notes
            .iter()
            .any(|n| n.reason == "OutsideMaintenanceWindow")
    );
    // Inside the window: two start; the window closes with them in flight.
    w.now = opens;
    let p2 = again(&j, &p1.status, &w);
    assert_eq!(p2.effects.len(), 2);
    assert_eq!(reason_of(&p2.status, PAUSED).0, "False");
    w.upgrades.insert("n1".into(), running());
    w.upgrades.insert("n2".into(), running());
    w.now = "2026-11-26T23:00:00Z".parse().expect("ts");
    let p3 = again(&j, &p2.status, &w);
    assert!(p3.effects.is_empty(), "nothing new starts after the window");
    // The two in flight finish outside the window: recorded, nothing more starts.
    w.upgrades.insert(
        "n1".into(),
        result(InvocationPhase::Succeeded, "1.0.0", "2.0.0"),
    );
    w.upgrades.insert(
        "n2".into(),
        result(InvocationPhase::Succeeded, "1.0.0", "2.0.0"),
    );
    w.now = "2026-11-26T23:05:00Z".parse().expect("ts");
    let p4 = again(&j, &p3.status, &w);
    assert!(p4.effects.is_empty());
    assert_eq!(
        p4.status.progress.as_deref(),
        Some("3/7"),
        "n1, n2 and n7 (current)"
    );
    // The next window resumes where the rollout stopped (n3, not Ready, was skipped).
    w.now = "2026-11-27T22:00:01Z".parse().expect("ts");
    let p5 = again(&j, &p4.status, &w);
    assert_eq!(
        p5.effects,
        [
            Effect::Upgrade { node: "n4".into() },
            Effect::Upgrade { node: "n5".into() }
        ]
    );
}

#[test]
fn a_soak_time_waits_after_each_batch() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 2, "rollout": {"soakSeconds": 600}}));
    let mut w = world();
    let p1 = plan(&j, &w);
    assert_eq!(p1.effects.len(), 2);
    w.upgrades.insert(
        "n1".into(),
        result(InvocationPhase::Succeeded, "1.0.0", "2.0.0"),
    );
    w.upgrades.insert("n2".into(), running());
    w.now = now() + jiff::SignedDuration::from_secs(60);
    let p2 = again(&j, &p1.status, &w);
    assert!(p2.effects.is_empty(), "a batch in flight: the next waits");
    w.upgrades.insert(
        "n2".into(),
        result(InvocationPhase::Succeeded, "1.0.0", "2.0.0"),
    );
    w.now = now() + jiff::SignedDuration::from_secs(120);
    let p3 = again(&j, &p2.status, &w);
    assert!(p3.effects.is_empty(), "soaking");
    assert_eq!(
        reason_of(&p3.status, PAUSED),
        ("True".into(), "Soaking".into())
    );
    let until = now() + jiff::SignedDuration::from_secs(720);
    assert_eq!(p3.status.next_start_time, Some(Time(until)));
    assert_eq!(p3.requeue, Some(Duration::from_secs(30)));
    w.now = until;
    let p4 = again(&j, &p3.status, &w);
    assert_eq!(p4.effects.len(), 2, "soaked: the next batch");
}

#[test]
fn an_unhealthy_gate_holds_with_its_reason_and_a_warning() {
    let j = job(
        json!({"nodeSelector": {}, "maxConcurrency": 2, "rollout": {"healthGates": [
            {"nodeCondition": {"type": "DiskPressure"}},
            {"object": {"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand", "name": "smoke"}}
        ]}}),
    );
    let mut w = world();
    w.object_gates = vec![policy::Reading {
        healthy: true,
        message: "AsyncCommand smoke is Ready".into(),
    }];
    w.nodes
        .get_mut("n5")
        .expect("n5")
        .conditions
        .push(("DiskPressure".into(), "True".into()));
    let p1 = plan(&j, &w);
    assert!(p1.effects.is_empty());
    assert_eq!(
        reason_of(&p1.status, PAUSED),
        ("True".into(), "HealthGateUnhealthy".into())
    );
    let note = p1
        .notes
        .iter()
        .find(|n| n.reason == "HealthGateUnhealthy")
        .expect("Event");
    assert!(note.warning && note.message.contains("DiskPressure=True on 1 node: n5"));
    // The node recovers, the object gate fails: still held, with the object's reason.
    w.nodes.get_mut("n5").expect("n5").conditions.pop();
    w.object_gates[0] = policy::Reading {
        healthy: false,
        message: "AsyncCommand smoke is not Ready".into(),
    };
    let p2 = again(&j, &p1.status, &w);
    assert!(p2.effects.is_empty());
    let msg = p2
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == PAUSED)
        .expect("Paused");
    assert!(
        msg.message.contains("smoke is not Ready"),
        "{}",
        msg.message
    );
    w.object_gates[0].healthy = true;
    let p3 = again(&j, &p2.status, &w);
    assert_eq!(p3.effects.len(), 2);
    assert!(p3.notes.iter().any(|n| n.reason == "Resumed"));
}

/// 250 Ready nodes at 1.0.0, all selected, with a job keeping 10 agents in status and 100
/// per plan ConfigMap: a large job.
fn fleet() -> World {
    let nodes = (0..250)
        .map(|i| {
            (
                format!("f{i:03}"),
                NodeView {
                    uid: format!("uid-f{i}"),
                    ready: true,
                    version: Some("1.0.0".into()),
                    selected: true,
                    conditions: vec![("Ready".into(), "True".into())],
                },
            )
        })
        .collect();
    World {
        now: now(),
        agent_uid: "agent-uid".into(),
        nodes,
        limits: PlanLimits {
            status_agents: 10,
            part_agents: 100,
        },
        ..Default::default()
    }
}

/// The world after `p`'s plan ConfigMaps were created.
fn with_parts(mut w: World, p: &Plan) -> World {
    if !p.parts.is_empty() {
        w.parts = p.parts.iter().map(record::read).collect();
    }
    w
}

fn started_nodes(p: &Plan) -> Vec<String> {
    p.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Upgrade { node } => Some(node.clone()),
            Effect::Rollback { .. } => None,
        })
        .collect()
}

#[test]
fn a_large_job_keeps_its_plan_in_configmaps_and_a_bounded_status() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 20, "maxFailures": 100}));
    let mut w = fleet();
    let p1 = plan(&j, &w);
    // The plan, in parts, before anything starts; the status lists only what runs.
    assert_eq!(p1.parts.len(), 3);
    let s = &p1.status;
    assert_eq!(
        s.plan,
        Some(crate::api::agent_upgrade_job::AgentPlan {
            config_maps: 3,
            agents: 250
        })
    );
    assert_eq!(
        started_nodes(&p1),
        (0..20).map(|i| format!("f{i:03}")).collect::<Vec<_>>()
    );
    assert_eq!(s.started, 20);
    assert_eq!(s.agents.len(), 10, "bounded by status_agents");
    assert!(s.agents.iter().all(|a| a.status == S::Running));
    let c = s.counts.clone().expect("counts");
    assert_eq!((c.total, c.running, c.pending), (250, 20, 230));
    assert_eq!(s.progress.as_deref(), Some("0/250"));
    assert!(matches!(
        Decisions::plan(&j, &w, policy::parse(None).expect("policy")).before[0],
        Change::Create(Child::ConfigMap(_))
    ));

    // Next reconcile: the parts and the children exist. Three finish, one of them failed:
    // exactly three more start, the next in plan order.
    w = with_parts(w, &p1);
    for n in started_nodes(&p1) {
        w.upgrades.insert(n, running());
    }
    for n in ["f000", "f001"] {
        w.upgrades.insert(
            n.into(),
            result(InvocationPhase::Succeeded, "1.0.0", "2.0.0"),
        );
    }
    w.upgrades.insert(
        "f002".into(),
        result(InvocationPhase::Failed, "1.0.0", "1.0.0"),
    );
    let p2 = again(&j, &p1.status, &w);
    assert!(p2.parts.is_empty(), "the plan is written once");
    assert_eq!(started_nodes(&p2), ["f020", "f021", "f022"]);
    let s2 = &p2.status;
    assert_eq!(s2.started, 23);
    let c = s2.counts.clone().expect("counts");
    assert_eq!((c.success, c.failed, c.running, c.pending), (2, 1, 20, 227));
    // The failure first, then what is in flight; never more than the bound.
    assert_eq!(s2.agents.len(), 10);
    assert_eq!(
        (s2.agents[0].node_name.as_deref(), s2.agents[0].status),
        (Some("f002"), S::Failed)
    );
    assert!(s2.agents[1..].iter().all(|a| a.status == S::Running));
    assert_eq!(s2.progress.as_deref(), Some("2/250"));
}

#[test]
fn a_large_job_never_starts_an_agent_twice_whatever_was_lost() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 5}));
    let w0 = fleet();
    let p1 = plan(&j, &w0);
    let mut w = with_parts(w0, &p1);
    // Crash after the children of a second reconcile were created, before its status:
    // the status says 5 started, 7 children exist. They are adopted; nothing else starts.
    for i in 0..7 {
        w.upgrades.insert(format!("f{i:03}"), running());
    }
    let p2 = again(&j, &p1.status, &w);
    assert!(started_nodes(&p2).is_empty(), "{:?}", p2.effects);
    assert_eq!(p2.status.started, 7);
    assert_eq!(p2.status.in_flight, 7);
    // A started agent's child deleted: it failed, and is not started again.
    w.upgrades.remove("f003");
    let p3 = again(&j, &p2.status, &w);
    assert!(!started_nodes(&p3).contains(&"f003".to_string()));
    let f003 = p3
        .status
        .agents
        .iter()
        .find(|a| a.node_name.as_deref() == Some("f003"))
        .expect("listed as a failure");
    assert_eq!(f003.status, S::Failed);
    assert!(
        f003.error
            .as_deref()
            .is_some_and(|e| e.starts_with("InvocationDeleted"))
    );
}

#[test]
fn a_plan_cut_short_is_written_again_and_a_lost_plan_stalls() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 5}));
    let w0 = fleet();
    let p1 = plan(&j, &w0);
    // A crash after the first part only: it goes, nothing starts from it.
    let mut w = w0.clone();
    w.parts = vec![record::read(&p1.parts[0])];
    let p = plan(&j, &w);
    assert_eq!(
        p.discard,
        [p1.parts[0].metadata.name.clone().expect("name")]
    );
    assert!(p.effects.is_empty() && p.parts.is_empty());
    // Every part there, the status not written: adopted as it is, then started from.
    let w = with_parts(w0.clone(), &p1);
    let p = plan(&j, &w);
    assert!(p.parts.is_empty() && p.discard.is_empty());
    assert_eq!(started_nodes(&p).len(), 5);
    // The status says there is a plan, and a part is gone: Stalled, nothing starts.
    let mut w = with_parts(w0, &p1);
    w.parts.pop();
    let mut next = j.clone();
    next.status = Some(p1.status.clone());
    let invalid = Decisions::validate(
        &next,
        &World {
            agent_found: true,
            ..w
        },
    )
    .expect_err("stalls");
    assert_eq!(invalid.reason, "PlanMissing");
}

#[test]
fn a_large_simulation_keeps_the_whole_plan_in_configmaps() {
    let j = job(json!({"nodeSelector": {}, "simulated": true}));
    let p = plan(&j, &fleet());
    assert_eq!(p.parts.len(), 3);
    assert!(p.effects.is_empty());
    assert_eq!(p.status.status, UpgradeJobState::Planned);
    assert!(p.status.agents.is_empty());
    let read: Vec<Part> = p.parts.iter().map(record::read).collect();
    let plan = record::assemble(&read).expect("whole");
    assert_eq!(plan.len(), 250);
    assert!(plan.iter().all(|a| a.status == S::Pending));
}

#[test]
fn one_reconcile_starts_a_bounded_number_and_the_next_follows_at_once() {
    let j = job(json!({"nodeSelector": {}, "maxConcurrency": 200}));
    let w0 = fleet();
    let p1 = plan(&j, &w0);
    assert_eq!(started_nodes(&p1).len(), STARTS_PER_RECONCILE);
    assert_eq!(p1.requeue, Some(Duration::ZERO), "slots are left");
    let mut w = with_parts(w0, &p1);
    for n in started_nodes(&p1) {
        w.upgrades.insert(n, running());
    }
    let p2 = again(&j, &p1.status, &w);
    assert_eq!(
        started_nodes(&p2),
        (STARTS_PER_RECONCILE..2 * STARTS_PER_RECONCILE)
            .map(|i| format!("f{i:03}"))
            .collect::<Vec<_>>(),
        "the next in plan order"
    );
    assert_eq!(p2.status.in_flight as usize, 2 * STARTS_PER_RECONCILE);
    // Round after round until maxConcurrency holds starts; then the next look waits.
    let mut p = p2;
    loop {
        for n in started_nodes(&p) {
            w.upgrades.insert(n, running());
        }
        let next = again(&j, &p.status, &w);
        assert!(started_nodes(&next).len() <= STARTS_PER_RECONCILE);
        if started_nodes(&next).is_empty() {
            assert_eq!(next.status.in_flight, 200);
            assert_ne!(next.requeue, Some(Duration::ZERO));
            break;
        }
        assert_eq!(
            next.requeue == Some(Duration::ZERO),
            next.status.in_flight < 200
        );
        p = next;
    }
}
