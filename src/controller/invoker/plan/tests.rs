use super::*;
use crate::api::async_command::CommandPhase;
use crate::api::invoker::InvokerSpec;
use crate::keys::SCHEDULED_TIME_ANNOTATION;
use serde_json::json;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn invoker(spec: serde_json::Value, created: &str) -> Invoker {
    let spec: InvokerSpec = serde_json::from_value(spec).expect("spec");
    let mut inv = Invoker::new("nightly", spec);
    inv.metadata.uid = Some("abcdef01-2222-3333-4444-555555555555".into());
    inv.metadata.namespace = Some("ops".into());
    inv.metadata.generation = Some(1);
    inv.metadata.creation_timestamp = Some(Time(ts(created)));
    inv
}

fn every_minute(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "commandRef": "disk-usage", "nodeNames": ["node-0001"],
        "scheduleSettings": {"policy": "Recurrence", "recurrence": "* * * * *"}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    spec
}

fn command() -> CommandSpec {
    serde_json::from_value(json!({"content": "df -h {{path}}", "enableParameters": true, "defaultParameters": {"path": "/"}}))
        .expect("command")
}

fn child(name: &str, slot: &str, phase: CommandPhase, finished: bool) -> Child {
    Child {
        name: name.into(),
        slot: ts(slot),
        phase,
        finished,
        succeeded: 1,
        failed: 0,
    }
}

/// A plan as these tests read it: the child created (name and manifest), the children
/// deleted.
struct Planned {
    create: Option<(String, serde_json::Value)>,
    delete: Vec<String>,
    status: InvokerStatus,
    requeue_after: Option<Duration>,
    notes: Vec<Note>,
}

/// Decides as the shell does (validate, then plan or stall).
fn plan(
    inv: &Invoker,
    command: Option<&CommandSpec>,
    children: &[Child],
    now: Timestamp,
) -> Planned {
    let world = World {
        now,
        command: command.cloned(),
        children: children.to_vec(),
    };
    let p = Decisions::decide(inv, &world);
    let create = p.created().find_map(|c| match c {
        ChildObject::AsyncCommand(c) => Some((
            c.metadata.name.clone().expect("name"),
            serde_json::to_value(c.as_ref()).expect("serializes"),
        )),
        _ => None,
    });
    Planned {
        create,
        delete: p.deleted(ChildKind::AsyncCommand),
        status: p.status,
        requeue_after: p.requeue,
        notes: p.notes,
    }
}

/// Plans and folds the status back, as the next reconcile sees it.
fn step(inv: &mut Invoker, children: &[Child], now: &str) -> Planned {
    let p = plan(inv, Some(&command()), children, ts(now));
    inv.status = Some(p.status.clone());
    p
}

fn reason(p: &Planned, type_: &str) -> String {
    p.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[test]
fn requeues_to_the_exact_next_slot_and_fires_it_once() {
    let mut inv = invoker(every_minute(json!({})), "2026-01-01T00:00:30Z");
    let p = step(&mut inv, &[], "2026-01-01T00:00:30Z");
    assert!(p.create.is_none());
    assert_eq!(
        p.status.next_invoke_time,
        Some(Time(ts("2026-01-01T00:01:00Z")))
    );
    let wait = p.requeue_after.expect("requeue");
    assert!(
        wait >= Duration::from_millis(30_000) && wait < Duration::from_millis(30_100),
        "{wait:?}"
    );
    assert_eq!(reason(&p, READY), "Scheduled");

    let p = step(&mut inv, &[], "2026-01-01T00:01:00.005Z");
    let (name, manifest) = p.create.clone().expect("fires");
    assert_eq!(name, "nightly-29453761");
    assert_eq!(manifest["spec"]["commandRef"], "disk-usage");
    assert_eq!(manifest["spec"]["nodeNames"][0], "node-0001");
    assert_eq!(
        manifest["metadata"]["annotations"][SCHEDULED_TIME_ANNOTATION],
        "2026-01-01T00:01:00Z"
    );
    assert_eq!(
        manifest["metadata"]["ownerReferences"][0]["kind"],
        "Invoker"
    );
    assert_eq!(
        p.status.last_invoke_time,
        Some(Time(ts("2026-01-01T00:01:00Z")))
    );
    assert_eq!(
        p.status.next_invoke_time,
        Some(Time(ts("2026-01-01T00:02:00Z")))
    );
    assert_eq!(p.status.active, std::slice::from_ref(&name));

    // A reconcile later in the same minute (child already running) fires nothing.
    let running = [child(
        &name,
        "2026-01-01T00:01:00Z",
        CommandPhase::Running,
        false,
    )];
    let p = step(&mut inv, &running, "2026-01-01T00:01:20Z");
    assert!(p.create.is_none());
}

#[test]
fn a_pruned_child_never_causes_a_rerun() {
    let mut inv = invoker(
        every_minute(json!({"successfulHistoryLimit": 0})),
        "2026-01-01T00:00:30Z",
    );
    let p = step(&mut inv, &[], "2026-01-01T00:01:00.01Z");
    let (name, _) = p.create.expect("fires");
    let done = [child(
        &name,
        "2026-01-01T00:01:00Z",
        CommandPhase::Succeeded,
        true,
    )];
    let p = step(&mut inv, &done, "2026-01-01T00:01:10Z");
    assert_eq!(
        p.delete,
        std::slice::from_ref(&name),
        "history limit 0 prunes it"
    );
    // The child is gone; the slot stays fired.
    let p = step(&mut inv, &[], "2026-01-01T00:01:20Z");
    assert!(p.create.is_none());
    assert_eq!(
        p.status.recent_runs[0].async_command, name,
        "the run stays in history"
    );
    assert_eq!(p.status.recent_runs[0].phase.as_deref(), Some("Succeeded"));
}

#[test]
fn a_child_created_before_a_lost_status_write_is_adopted() {
    let mut inv = invoker(every_minute(json!({})), "2026-01-01T00:00:30Z");
    // The operator created nightly-29453761 and died before recording the slot.
    let existing = [child(
        "nightly-29453761",
        "2026-01-01T00:01:00Z",
        CommandPhase::Running,
        false,
    )];
    let p = step(&mut inv, &existing, "2026-01-01T00:01:03Z");
    assert!(p.create.is_none());
    assert!(
        p.notes.iter().all(|n| n.reason != "SkippedActiveRun"),
        "its own run is not a concurrent one"
    );
    assert_eq!(
        p.status.last_invoke_time,
        Some(Time(ts("2026-01-01T00:01:00Z")))
    );
}

#[test]
fn concurrency_policies() {
    let active = [child(
        "nightly-29453761",
        "2026-01-01T00:01:00Z",
        CommandPhase::Running,
        false,
    )];
    let mut forbid = invoker(
        every_minute(json!({"concurrencyPolicy": "Forbid"})),
        "2026-01-01T00:00:30Z",
    );
    forbid.status = Some(InvokerStatus {
        last_invoke_time: Some(Time(ts("2026-01-01T00:01:00Z"))),
        ..Default::default()
    });
    let p = step(&mut forbid, &active, "2026-01-01T00:02:00.01Z");
    assert!(p.create.is_none());
    assert!(p.notes.iter().any(|n| n.reason == "SkippedActiveRun"));
    assert_eq!(
        p.status.last_invoke_time,
        Some(Time(ts("2026-01-01T00:02:00Z"))),
        "the skipped slot is consumed"
    );

    let mut replace = invoker(
        every_minute(json!({"concurrencyPolicy": "Replace"})),
        "2026-01-01T00:00:30Z",
    );
    replace.status = forbid.status.clone().map(|s| InvokerStatus {
        last_invoke_time: Some(Time(ts("2026-01-01T00:01:00Z"))),
        ..s
    });
    let p = step(&mut replace, &active, "2026-01-01T00:02:00.01Z");
    assert_eq!(p.delete, ["nightly-29453761"]);
    assert_eq!(p.create.expect("new run").0, "nightly-29453762");
    assert_eq!(p.status.active, ["nightly-29453762"]);

    let mut allow = invoker(
        every_minute(json!({"concurrencyPolicy": "Allow"})),
        "2026-01-01T00:00:30Z",
    );
    allow.status = Some(InvokerStatus {
        last_invoke_time: Some(Time(ts("2026-01-01T00:01:00Z"))),
        ..Default::default()
    });
    let p = step(&mut allow, &active, "2026-01-01T00:02:00.01Z");
    assert!(p.delete.is_empty());
    assert!(p.create.is_some());
    assert_eq!(p.status.active.len(), 2);
}

#[test]
fn suspend_stops_firing_and_resume_catches_up_once() {
    let mut inv = invoker(
        every_minute(json!({"suspend": true})),
        "2026-01-01T00:00:30Z",
    );
    let p = step(&mut inv, &[], "2026-01-01T00:05:00.01Z");
    assert!(p.create.is_none());
    assert_eq!(p.status.next_invoke_time, None);
    assert_eq!(reason(&p, READY), "Suspended");
    inv.spec.suspend = false;
    let p = step(&mut inv, &[], "2026-01-01T00:05:10Z");
    assert_eq!(p.create.expect("one catch-up run").0, "nightly-29453765");
    let missed = p
        .notes
        .iter()
        .find(|n| n.reason == "MissedSchedule")
        .expect("event");
    assert!(
        missed.message.starts_with("4 earlier"),
        "{}",
        missed.message
    );
}

#[test]
fn downtime_beyond_the_deadline_skips_with_an_event() {
    let mut inv = invoker(
        every_minute(json!({"startingDeadlineSeconds": 10})),
        "2026-01-01T00:00:30Z",
    );
    let p = step(&mut inv, &[], "2026-01-01T00:10:30Z");
    assert!(p.create.is_none());
    assert!(
        p.notes
            .iter()
            .any(|n| n.reason == "MissedSchedule" && n.message.starts_with("10 scheduled"))
    );
    assert_eq!(
        p.status.last_invoke_time,
        Some(Time(ts("2026-01-01T00:10:00Z")))
    );
    assert_eq!(
        p.status.next_invoke_time,
        Some(Time(ts("2026-01-01T00:11:00Z")))
    );
}

#[test]
fn once_fires_once_and_expired_is_refused() {
    let spec = json!({"commandRef": "disk-usage", "nodeNames": ["node-0001"],
        "scheduleSettings": {"policy": "Once", "invokeTime": "2026-01-01T08:00:00+08:00"}});
    let mut inv = invoker(spec.clone(), "2025-12-31T23:59:00Z");
    let p = step(&mut inv, &[], "2025-12-31T23:59:00Z");
    assert_eq!(
        p.status.next_invoke_time,
        Some(Time(ts("2026-01-01T00:00:00Z")))
    );
    let p = step(&mut inv, &[], "2026-01-01T00:00:00.01Z");
    assert!(p.create.is_some());
    assert_eq!(p.status.next_invoke_time, None);
    let p = step(&mut inv, &[], "2026-01-01T00:00:30Z");
    assert!(p.create.is_none());
    assert_eq!(p.requeue_after, None);
    assert_eq!(reason(&p, READY), "Done");

    // The seed's example time, long past at creation.
    let mut expired = invoker(spec, "2026-02-01T00:00:00Z");
    let p = step(&mut expired, &[], "2026-02-01T00:00:00Z");
    assert!(p.create.is_none());
    assert_eq!(reason(&p, STALLED), "InvokeTimeExpired");
    assert!(p.notes.iter().any(|n| n.reason == "InvokeTimeExpired"));
    let p = step(&mut expired, &[], "2026-02-01T00:00:10Z");
    assert!(
        p.notes.is_empty(),
        "the Event is emitted on the transition only"
    );
}

#[test]
fn schedule_and_command_errors_are_conditions() {
    let mut bad_cron = invoker(
        every_minute(
            json!({"scheduleSettings": {"policy": "Recurrence", "recurrence": "61 * * * *"}}),
        ),
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(
        reason(&step(&mut bad_cron, &[], "2026-01-01T00:00:00Z"), STALLED),
        "InvalidCronExpression"
    );
    let mut bad_zone = invoker(
        every_minute(
            json!({"scheduleSettings": {"policy": "Recurrence", "recurrence": "0 * * * *", "timeZone": "Asia/Atlantis"}}),
        ),
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(
        reason(&step(&mut bad_zone, &[], "2026-01-01T00:00:00Z"), STALLED),
        "InvalidTimeZone"
    );
    let mut inv = invoker(every_minute(json!({})), "2026-01-01T00:00:00Z");
    let p = plan(&inv, None, &[], ts("2026-01-01T00:00:00Z"));
    assert_eq!(reason(&p, STALLED), "CommandNotFound");
    inv.spec.parameters = Some([("nope".to_string(), "x".to_string())].into());
    let p = step(&mut inv, &[], "2026-01-01T00:00:00Z");
    assert_eq!(reason(&p, STALLED), "ParameterInvalid");
    assert!(
        p.status
            .conditions
            .iter()
            .any(|c| c.message.contains("nope"))
    );
}

#[test]
fn history_limits_keep_the_newest() {
    let children = [
        child(
            "nightly-1",
            "2026-01-01T00:01:00Z",
            CommandPhase::Succeeded,
            true,
        ),
        child(
            "nightly-2",
            "2026-01-01T00:02:00Z",
            CommandPhase::Failed,
            true,
        ),
        child(
            "nightly-3",
            "2026-01-01T00:03:00Z",
            CommandPhase::Succeeded,
            true,
        ),
        child(
            "nightly-4",
            "2026-01-01T00:04:00Z",
            CommandPhase::Failed,
            true,
        ),
        child(
            "nightly-5",
            "2026-01-01T00:05:00Z",
            CommandPhase::Running,
            false,
        ),
    ];
    let mut del = history_to_delete(&children, 1, 1, &[]);
    del.sort();
    assert_eq!(del, ["nightly-1", "nightly-2"]);
}

#[test]
fn child_names_are_deterministic_and_valid() {
    assert_eq!(
        child_name("nightly", ts("2026-01-01T00:01:00Z")),
        "nightly-29453761"
    );
    assert_eq!(
        child_name("nightly", ts("2026-01-01T00:01:59Z")),
        "nightly-29453761"
    );
    assert!(child_name(&"x".repeat(253), ts("2026-01-01T00:01:00Z")).len() <= 253);
}

#[test]
fn each_run_carries_the_rollout_policy_and_a_bad_window_stalls_the_invoker() {
    let rollout = json!({"soakSeconds": 60,
        "maintenanceWindows": [{"schedule": "0 1 * * *", "duration": "4h", "timeZone": "Europe/Berlin"}]});
    let mut inv = invoker(
        every_minute(json!({"maxConcurrency": "25%", "maxErrors": 1, "rollout": rollout})),
        "2026-01-01T00:00:30Z",
    );
    let p = step(&mut inv, &[], "2026-01-01T00:01:00Z");
    let (_, child) = p.create.expect("a run");
    assert_eq!(child["spec"]["rollout"], rollout);
    assert_eq!(child["spec"]["maxConcurrency"], json!("25%"));
    assert_eq!(child["spec"]["maxErrors"], json!(1));

    let mut bad = invoker(
        every_minute(json!({"rollout": {"maintenanceWindows": [
            {"schedule": "0 1 * * *", "duration": "4h", "timeZone": "Europe/Atlantis"}]}})),
        "2026-01-01T00:00:30Z",
    );
    let p = step(&mut bad, &[], "2026-01-01T00:01:00Z");
    assert!(
        p.create.is_none(),
        "no run is created with a window that cannot be read"
    );
    assert_eq!(reason(&p, crate::conditions::STALLED), "InvalidTimeZone");
}

#[test]
fn each_run_carries_the_invokers_labels_with_no_cap_on_their_number() {
    // TAT caps an invoker's Tags at 10; labels have no cap, and each run inherits them all
    // beside its own.
    let mut inv = invoker(every_minute(json!({})), "2026-01-01T00:00:30Z");
    let tags: std::collections::BTreeMap<String, String> = (0..11)
        .map(|i| (format!("tag-{i}"), format!("v{i}")))
        .collect();
    inv.metadata.labels = Some(tags.clone());
    let p = step(&mut inv, &[], "2026-01-01T00:01:00Z");
    let (_, child) = p.create.expect("a run");
    let labels = child["metadata"]["labels"].as_object().expect("labels");
    for (k, v) in &tags {
        assert_eq!(labels.get(k), Some(&json!(v)), "{k} on the run: {labels:?}");
    }
    assert_eq!(
        labels.get(crate::keys::INVOKER_UID_LABEL),
        Some(&json!("abcdef01-2222-3333-4444-555555555555"))
    );
    assert_eq!(
        labels.len(),
        13,
        "the 11 tags and the run's own 2: {labels:?}"
    );
}
