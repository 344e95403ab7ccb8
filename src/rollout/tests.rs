use super::*;
use crate::api::rollout::MaintenanceWindow;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn policy(windows: &[(&str, &str, Option<&str>)], soak: i64) -> Policy {
    parse(Some(&RolloutPolicy {
        maintenance_windows: windows
            .iter()
            .map(|(schedule, duration, tz)| MaintenanceWindow {
                schedule: schedule.to_string(),
                duration: duration.to_string(),
                time_zone: tz.map(str::to_string),
            })
            .collect(),
        soak_seconds: soak,
        health_gates: Vec::new(),
    }))
    .expect("valid policy")
}

fn open(closes: &str) -> WindowState {
    WindowState::Open { closes: ts(closes) }
}

fn closed(opens: &str) -> WindowState {
    WindowState::Closed {
        opens: Some(ts(opens)),
    }
}

#[test]
fn durations_are_hours_minutes_seconds() {
    assert_eq!(
        parse_duration("1h30m"),
        Some(SignedDuration::from_secs(5400))
    );
    assert_eq!(parse_duration("20s"), Some(SignedDuration::from_secs(20)));
    assert_eq!(parse_duration("90m"), Some(SignedDuration::from_secs(5400)));
    assert_eq!(
        parse_duration("168h"),
        Some(SignedDuration::from_hours(168))
    );
    for bad in ["", "0s", "1d", "1h30", "h", "1.5h", "-1h"] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn no_window_means_any_time() {
    let p = policy(&[], 0);
    assert_eq!(p.window_at(ts("2026-01-01T00:00:00Z")), WindowState::Always);
}

#[test]
fn a_window_is_open_from_its_start_for_its_duration() {
    let p = policy(&[("0 2 * * *", "2h", None)], 0);
    assert_eq!(
        p.window_at(ts("2026-06-01T01:59:59Z")),
        closed("2026-06-01T02:00:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-06-01T02:00:00Z")),
        open("2026-06-01T04:00:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-06-01T03:59:59Z")),
        open("2026-06-01T04:00:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-06-01T04:00:00Z")),
        closed("2026-06-02T02:00:00Z")
    );
}

#[test]
fn several_windows_the_earliest_opening_and_the_latest_close() {
    let p = policy(
        &[
            ("0 22 * * 6", "8h", Some("Europe/London")),
            ("0 3 * * *", "1h", None),
            ("30 3 * * *", "1h", None),
        ],
        0,
    );
    // Wednesday 2026-06-03: the nightly ones overlap into one window 03:00-04:30.
    assert_eq!(
        p.window_at(ts("2026-06-03T03:45:00Z")),
        open("2026-06-03T04:30:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-06-03T05:00:00Z")),
        closed("2026-06-04T03:00:00Z")
    );
    // Saturday 2026-06-06 22:00 BST is 21:00Z: the weekly window opens first.
    assert_eq!(
        p.window_at(ts("2026-06-06T20:00:00Z")),
        closed("2026-06-06T21:00:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-06-07T03:10:00Z")),
        open("2026-06-07T05:00:00Z")
    );
}

#[test]
fn berlin_spring_forward_opens_a_skipped_time_when_the_clock_jumps() {
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z); 02:30 does not exist.
    let p = policy(&[("30 2 * * *", "1h", Some("Europe/Berlin"))], 0);
    assert_eq!(
        p.window_at(ts("2026-03-29T00:59:00Z")),
        closed("2026-03-29T01:00:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-03-29T01:30:00Z")),
        open("2026-03-29T02:00:00Z")
    );
    // The next night is CEST as usual: 02:30 CEST is 00:30Z.
    assert_eq!(
        p.window_at(ts("2026-03-29T02:00:00Z")),
        closed("2026-03-30T00:30:00Z")
    );
}

#[test]
fn berlin_fall_back_a_window_lasts_its_elapsed_duration() {
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z). A 3h window opening at
    // 01:00 CEST (23:00Z) closes 3 real hours later, 03:00 CET on the wall clock.
    let p = policy(&[("0 1 * * *", "3h", Some("Europe/Berlin"))], 0);
    assert_eq!(
        p.window_at(ts("2026-10-24T23:00:00Z")),
        open("2026-10-25T02:00:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-10-25T01:59:59Z")),
        open("2026-10-25T02:00:00Z")
    );
    // The next opening is 01:00 CET, 00:00Z.
    assert_eq!(
        p.window_at(ts("2026-10-25T02:00:00Z")),
        closed("2026-10-26T00:00:00Z")
    );
}

#[test]
fn new_york_a_weekend_window_across_fall_back() {
    // Saturday 2026-10-31 22:00 EDT (02:00Z Sunday); clocks fall back at 02:00 EDT on
    // Sunday. Eight elapsed hours end at 10:00Z, 05:00 EST on the wall clock.
    let p = policy(&[("0 22 * * 6", "8h", Some("America/New_York"))], 0);
    assert_eq!(
        p.window_at(ts("2026-11-01T01:59:00Z")),
        closed("2026-11-01T02:00:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-11-01T06:30:00Z")),
        open("2026-11-01T10:00:00Z")
    );
    assert_eq!(
        p.window_at(ts("2026-11-01T09:59:59Z")),
        open("2026-11-01T10:00:00Z")
    );
    // The next Saturday 22:00 is EST: 03:00Z.
    assert_eq!(
        p.window_at(ts("2026-11-01T10:00:00Z")),
        closed("2026-11-08T03:00:00Z")
    );
}

#[test]
fn sydney_the_repeated_half_hour_does_not_reopen_a_window() {
    // 2026-04-05: 03:00 AEDT falls back to 02:00 AEST (16:00Z on the 4th); 02:30 happens
    // twice. The window opens once, at the first 02:30 (AEDT, 15:30Z).
    let p = policy(&[("30 2 * * *", "30m", Some("Australia/Sydney"))], 0);
    assert_eq!(
        p.window_at(ts("2026-04-04T15:30:00Z")),
        open("2026-04-04T16:00:00Z")
    );
    // 16:30Z is 02:30 AEST, the second time round: still closed; next 02:30 AEST.
    assert_eq!(
        p.window_at(ts("2026-04-04T16:40:00Z")),
        closed("2026-04-05T16:30:00Z")
    );
}

#[test]
fn sydney_spring_forward_a_midnight_window_keeps_its_length() {
    // 2026-10-04: 02:00 AEST jumps to 03:00 AEDT. A 4h window opening at 00:00 AEST
    // (14:00Z on the 3rd) closes 4 real hours later, 05:00 AEDT on the wall clock.
    let p = policy(&[("0 0 * * *", "4h", Some("Australia/Sydney"))], 0);
    assert_eq!(
        p.window_at(ts("2026-10-03T17:59:00Z")),
        open("2026-10-03T18:00:00Z")
    );
    // The next midnight is AEDT: 13:00Z.
    assert_eq!(
        p.window_at(ts("2026-10-03T18:00:00Z")),
        closed("2026-10-04T13:00:00Z")
    );
}

#[test]
fn bad_schedules_and_zones_say_why() {
    let bad = |schedule: &str, duration: &str, tz: Option<&str>| {
        parse(Some(&RolloutPolicy {
            maintenance_windows: vec![MaintenanceWindow {
                schedule: schedule.into(),
                duration: duration.into(),
                time_zone: tz.map(str::to_string),
            }],
            ..Default::default()
        }))
        .expect_err("refused")
    };
    assert_eq!(
        bad("61 * * * *", "1h", None).reason,
        "InvalidCronExpression"
    );
    assert_eq!(
        bad("0 2 * * *", "1h", Some("Mars/Olympus")).reason,
        "InvalidTimeZone"
    );
    assert_eq!(bad("0 2 * * *", "1d", None).reason, "InvalidDuration");
}

fn gate(healthy: bool, message: &str) -> Reading {
    Reading {
        healthy,
        message: message.into(),
    }
}

#[test]
fn starts_within_the_limit_when_nothing_holds() {
    let p = policy(&[], 0);
    let progress = Progress {
        limit: 5,
        in_flight: 2,
        last_finished: None,
    };
    let s = starts(
        &p,
        false,
        progress,
        &[gate(true, "ok")],
        ts("2026-06-01T00:00:00Z"),
    );
    assert_eq!(
        s,
        Starts {
            slots: 3,
            hold: None
        }
    );
}

#[test]
fn holds_in_order_paused_window_gate() {
    let p = policy(&[("0 2 * * *", "1h", None)], 0);
    let progress = Progress {
        limit: 5,
        ..Default::default()
    };
    let outside = ts("2026-06-01T01:00:00Z");
    let inside = ts("2026-06-01T02:30:00Z");
    let bad = [gate(false, "node n1 has DiskPressure=True")];
    assert_eq!(
        starts(&p, true, progress, &bad, inside).hold,
        Some(Hold::Paused)
    );
    assert_eq!(
        starts(&p, false, progress, &bad, outside).hold,
        Some(Hold::OutsideWindow {
            opens: Some(ts("2026-06-01T02:00:00Z"))
        })
    );
    let s = starts(&p, false, progress, &bad, inside);
    assert_eq!(s.slots, 0);
    assert_eq!(
        s.hold.as_ref().map(Hold::reason),
        Some("HealthGateUnhealthy")
    );
    assert!(s.hold.expect("held").message().contains("DiskPressure"));
    assert_eq!(starts(&p, false, progress, &[], inside).slots, 5);
}

#[test]
fn a_soak_time_makes_batches_and_waits_after_each() {
    let p = policy(&[], 60);
    let now = ts("2026-06-01T00:10:00Z");
    // A batch in flight: none starts, and that is not a hold.
    let running = Progress {
        limit: 3,
        in_flight: 1,
        last_finished: Some(ts("2026-06-01T00:09:00Z")),
    };
    assert_eq!(
        starts(&p, false, running, &[], now),
        Starts {
            slots: 0,
            hold: None
        }
    );
    // The batch finished 30 s ago: soaking for 30 s more.
    let soaking = Progress {
        limit: 3,
        in_flight: 0,
        last_finished: Some(ts("2026-06-01T00:09:30Z")),
    };
    let s = starts(&p, false, soaking, &[], now);
    let until = ts("2026-06-01T00:10:30Z");
    assert_eq!(s.hold, Some(Hold::Soaking { until }));
    assert_eq!(
        s.hold.expect("held").recheck(now),
        Some(Duration::from_millis(30_200))
    );
    // Soaked: a whole batch starts; the first batch never waits.
    assert_eq!(starts(&p, false, soaking, &[], until).slots, 3);
    let first = Progress {
        limit: 3,
        ..Default::default()
    };
    assert_eq!(starts(&p, false, first, &[], now).slots, 3);
}

#[test]
fn a_node_gate_names_the_nodes_that_have_its_condition() {
    let p = parse(Some(&RolloutPolicy {
        health_gates: vec![crate::api::rollout::HealthGate {
            node_condition: Some(NodeConditionGate {
                type_: "DiskPressure".into(),
                status: "True".into(),
            }),
            object: None,
        }],
        ..Default::default()
    }))
    .expect("valid");
    let fine: Conditions = vec![
        ("Ready".into(), "True".into()),
        ("DiskPressure".into(), "False".into()),
    ];
    let full: Conditions = vec![
        ("Ready".into(), "True".into()),
        ("DiskPressure".into(), "True".into()),
    ];
    let nodes = [("n1", &fine), ("n2", &full), ("n3", &fine)];
    let r = p.node_readings(nodes.iter().map(|(n, c)| (*n, *c)));
    assert_eq!(
        r,
        [Reading {
            healthy: false,
            message: "DiskPressure=True on 1 node: n2".into()
        }]
    );
    let r = p.node_readings(
        nodes
            .iter()
            .filter(|(n, _)| *n != "n2")
            .map(|(n, c)| (*n, *c)),
    );
    assert!(r[0].healthy, "{r:?}");
}
