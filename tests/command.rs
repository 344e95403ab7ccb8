//! Command end to end on the local control plane: the Command controller puts a Command's
//! `{{name}}` placeholders in its status and says whether it is usable (Ready with reason
//! Valid, or Stalled and Ready=False with reason ParameterInvalid) for the generation it
//! saw; an edit that leaves defaultParameters unused stalls it with a Warning Event, fixing
//! it makes it Ready again with a Normal Event, and edits that keep it usable record none.
//! Commands run on nodes through AsyncCommands and Invokers (tests/async_command.rs,
//! tests/invoker.rs).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::ListParams;
use nodeops::api::Command;
use serde_json::json;
use support::{TestNamespace, apply, manifest, wait_for, wait_for_event};

/// The controller only reads the Command: its status follows at once.
const SETTLE: Duration = Duration::from_secs(60);

fn condition<'a>(c: &'a Command, type_: &str) -> Option<&'a Condition> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|cond| cond.type_ == type_)
}

/// The status describes the Command's current generation.
fn observed(c: &Command) -> bool {
    c.metadata.generation.is_some()
        && c.status.as_ref().and_then(|s| s.observed_generation) == c.metadata.generation
}

/// Ready=True for the current generation.
fn ready(c: &Command) -> bool {
    observed(c) && condition(c, "Ready").is_some_and(|r| r.status == "True")
}

/// Stalled=True for the current generation.
fn stalled(c: &Command) -> bool {
    observed(c) && condition(c, "Stalled").is_some_and(|s| s.status == "True")
}

fn parameters(c: &Command) -> Vec<&str> {
    c.status
        .as_ref()
        .expect("status")
        .parameters
        .iter()
        .map(String::as_str)
        .collect()
}

/// The Events recorded about Command `name`, as (type, reason) -> how often (a repeated
/// Event counts its series).
async fn events_about(ns: &TestNamespace, name: &str) -> BTreeMap<(String, String), i32> {
    let events: Api<Event> = ns.api();
    let mut out = BTreeMap::new();
    for e in events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
    {
        let regarding = e.regarding.as_ref();
        if regarding.and_then(|r| r.kind.as_deref()) != Some("Command")
            || regarding.and_then(|r| r.name.as_deref()) != Some(name)
        {
            continue;
        }
        let count = e.series.as_ref().map(|s| s.count).unwrap_or(1);
        *out.entry((e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .or_insert(0) += count;
    }
    out
}

#[tokio::test]
async fn a_command_reports_its_placeholders_and_is_ready() {
    let (ns, _op) = TestNamespace::with_operator("cmd-ready").await;
    let api: Api<Command> = ns.api();
    apply(
        &api,
        manifest::<Command>(
            "disk-usage",
            json!({"content": "du -h --max-depth={{ depth }} {{path}} {{path}}", "enableParameters": true,
                   "defaultParameters": {"path": "/"}}),
        ),
    )
    .await;
    let cmd = wait_for(&api, "disk-usage", SETTLE, "Ready", ready).await;
    assert_eq!(
        parameters(&cmd),
        ["depth", "path"],
        "each placeholder once, sorted"
    );
    let generation = cmd.metadata.generation;
    let r = condition(&cmd, "Ready").expect("Ready");
    assert_eq!(r.reason, "Valid", "{r:?}");
    assert_eq!(r.observed_generation, generation, "{r:?}");
    assert!(condition(&cmd, "Stalled").is_none(), "{:?}", cmd.status);

    // A Command without parameters is usable too, and has none to report.
    apply(
        &api,
        manifest::<Command>("uptime", json!({"content": "uptime"})),
    )
    .await;
    let cmd = wait_for(&api, "uptime", SETTLE, "Ready", ready).await;
    assert!(parameters(&cmd).is_empty(), "{:?}", cmd.status);
    assert_eq!(condition(&cmd, "Ready").expect("Ready").reason, "Valid");
}

#[tokio::test]
async fn unused_default_parameters_stall_the_command_until_fixed() {
    let (ns, _op) = TestNamespace::with_operator("cmd-stall").await;
    let api: Api<Command> = ns.api();
    let spec = |content: &str| json!({"content": content, "enableParameters": true, "defaultParameters": {"path": "/"}});
    apply(
        &api,
        manifest::<Command>("disk-usage", spec("df -h {{path}}")),
    )
    .await;
    wait_for(&api, "disk-usage", SETTLE, "Ready", ready).await;

    // The script no longer says {{path}}: its default is for nothing.
    apply(
        &api,
        manifest::<Command>("disk-usage", spec("df -h {{dir}}")),
    )
    .await;
    let cmd = wait_for(&api, "disk-usage", SETTLE, "Stalled", stalled).await;
    assert_eq!(parameters(&cmd), ["dir"]);
    let s = condition(&cmd, "Stalled").expect("Stalled");
    assert_eq!(s.reason, "ParameterInvalid", "{s:?}");
    assert!(
        s.message.contains("path"),
        "names the unused default: {s:?}"
    );
    assert_eq!(s.observed_generation, cmd.metadata.generation, "{s:?}");
    let r = condition(&cmd, "Ready").expect("Ready");
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "ParameterInvalid"),
        "{r:?}"
    );
    let warning = wait_for_event(
        &ns,
        "Command",
        "disk-usage",
        "Warning",
        "ParameterInvalid",
        SETTLE,
    )
    .await;
    assert!(
        warning.note.as_deref().is_some_and(|n| n.contains("path")),
        "{warning:?}"
    );

    // Fixed: Ready again, Stalled gone, and a Normal Event says so.
    apply(
        &api,
        manifest::<Command>("disk-usage", spec("df -h {{path}} {{dir}}")),
    )
    .await;
    let cmd = wait_for(&api, "disk-usage", SETTLE, "Ready again", ready).await;
    assert_eq!(parameters(&cmd), ["dir", "path"]);
    assert!(condition(&cmd, "Stalled").is_none(), "{:?}", cmd.status);
    assert_eq!(condition(&cmd, "Ready").expect("Ready").reason, "Valid");
    wait_for_event(&ns, "Command", "disk-usage", "Normal", "Valid", SETTLE).await;
    // One Event per transition: the Warning was not repeated; the Command's first, valid,
    // status was quiet (that Event would precede the Warning).
    assert_eq!(
        events_about(&ns, "disk-usage").await,
        BTreeMap::from([
            (("Normal".to_string(), "Valid".to_string()), 1),
            (("Warning".to_string(), "ParameterInvalid".to_string()), 1),
        ])
    );
}

#[tokio::test]
async fn edits_that_keep_the_command_usable_record_no_event() {
    let (ns, _op) = TestNamespace::with_operator("cmd-quiet").await;
    let api: Api<Command> = ns.api();
    apply(
        &api,
        manifest::<Command>(
            "rotate",
            json!({"content": "rotate-logs {{dir}}", "enableParameters": true}),
        ),
    )
    .await;
    let first = wait_for(&api, "rotate", SETTLE, "Ready", ready).await;
    // A new generation, the same verdict: the status follows the generation, no Event.
    apply(
        &api,
        manifest::<Command>(
            "rotate",
            json!({"content": "rotate-logs {{dir}}", "enableParameters": true,
                   "description": "rotates the logs", "timeoutSeconds": 120}),
        ),
    )
    .await;
    let second = wait_for(&api, "rotate", SETTLE, "Ready for the edit", ready).await;
    assert!(
        second.metadata.generation > first.metadata.generation,
        "the edit made a new generation"
    );
    assert_eq!(
        condition(&second, "Ready").map(|r| &r.last_transition_time),
        condition(&first, "Ready").map(|r| &r.last_transition_time),
        "Ready did not transition"
    );
    // Then a transition: its Event comes after any the quiet reconciles would have
    // recorded (a Command's reconciles run one at a time, each writing its Event after its
    // status), so it is the only one.
    apply(
        &api,
        manifest::<Command>(
            "rotate",
            json!({"content": "rotate-logs {{9dir}}", "enableParameters": true}),
        ),
    )
    .await;
    wait_for(&api, "rotate", SETTLE, "Stalled", stalled).await;
    wait_for_event(
        &ns,
        "Command",
        "rotate",
        "Warning",
        "ParameterInvalid",
        SETTLE,
    )
    .await;
    assert_eq!(
        events_about(&ns, "rotate").await,
        BTreeMap::from([(("Warning".to_string(), "ParameterInvalid".to_string()), 1)])
    );
}
