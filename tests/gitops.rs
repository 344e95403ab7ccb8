//! The Argo CD health checks of docs/gitops.md, run (Lua 5.1, as Argo runs them) against
//! objects in each state the controllers write: a check that does not parse, or calls a
//! state healthy that is not, fails here.

use mlua::{Lua, LuaSerdeExt};
use serde_json::{Value, json};

/// `kind -> Lua source`, from the `resource.customizations.health.nodeops.io_<Kind>` keys.
fn checks() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/gitops.md"))
        .expect("docs/gitops.md");
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        if let Some(rest) = line
            .trim()
            .strip_prefix("resource.customizations.health.nodeops.io_")
        {
            if let Some(done) = current.take() {
                out.push(done);
            }
            let kind = rest.trim_end_matches(": |").to_string();
            current = Some((kind, String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            if let Some(code) = line.strip_prefix("    ") {
                body.push_str(code);
                body.push('\n');
            } else if line.starts_with("```")
                && let Some(done) = current.take()
            {
                out.push(done);
            }
        }
    }
    out
}

fn health(script: &str, obj: Value) -> (String, String) {
    let lua = Lua::new();
    let value = lua.to_value(&obj).expect("object to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let table: mlua::Table = lua
        .load(script)
        .eval()
        .unwrap_or_else(|e| panic!("health check failed to run: {e}\n{script}"));
    let status: String = table.get("status").expect("status");
    let message: String = table.get("message").unwrap_or_default();
    (status, message)
}

fn cond(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": format!("{type_} {reason}")})
}

fn obj(spec: Value, status: Value) -> Value {
    json!({"metadata": {"name": "x", "generation": 1}, "spec": spec, "status": status})
}

#[test]
fn every_kind_has_a_check() {
    let kinds: Vec<String> = checks().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "AsyncCommand",
            "Invoker",
            "Command",
            "NodeAgent",
            "AgentInvocation",
            "AgentUpgradeJob"
        ]
    );
}

#[test]
fn checks_read_the_states_the_controllers_write() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "AsyncCommand",
            json!({"metadata": {"generation": 1}}),
            "Progressing",
        ),
        (
            "AsyncCommand",
            obj(
                json!({}),
                json!({"observedGeneration": 1, "phase": "Running", "progress": "3/10",
            "conditions": [cond("Reconciling", "True", "Running"), cond("Complete", "False", "Running")]}),
            ),
            "Progressing",
        ),
        (
            "AsyncCommand",
            obj(
                json!({}),
                json!({"observedGeneration": 1, "phase": "Succeeded",
            "conditions": [cond("Complete", "True", "AllNodesFinished"), cond("Ready", "True", "Succeeded")]}),
            ),
            "Healthy",
        ),
        (
            "AsyncCommand",
            obj(
                json!({}),
                json!({"observedGeneration": 1, "phase": "Failed",
            "conditions": [cond("Complete", "True", "AllNodesFinished"), cond("Failed", "True", "NodesFailed")]}),
            ),
            "Degraded",
        ),
        (
            "AsyncCommand",
            obj(
                json!({}),
                json!({"observedGeneration": 1, "phase": "Invalid",
            "conditions": [cond("Stalled", "True", "HostModeNotAllowed")]}),
            ),
            "Degraded",
        ),
        (
            "AsyncCommand",
            obj(
                json!({}),
                json!({"observedGeneration": 0, "phase": "Succeeded",
            "conditions": [cond("Complete", "True", "AllNodesFinished")]}),
            ),
            "Progressing",
        ),
        (
            "Invoker",
            obj(
                json!({"suspend": false}),
                json!({"conditions": [cond("Ready", "True", "Scheduled")]}),
            ),
            "Healthy",
        ),
        (
            "Invoker",
            obj(
                json!({"suspend": true}),
                json!({"conditions": [cond("Ready", "True", "Suspended")]}),
            ),
            "Suspended",
        ),
        (
            "Invoker",
            obj(
                json!({}),
                json!({"conditions": [cond("Stalled", "True", "InvalidCronExpression")]}),
            ),
            "Degraded",
        ),
        (
            "Command",
            obj(
                json!({}),
                json!({"conditions": [cond("Ready", "True", "Valid")]}),
            ),
            "Healthy",
        ),
        (
            "Command",
            obj(
                json!({}),
                json!({"conditions": [cond("Stalled", "True", "ParameterInvalid")]}),
            ),
            "Degraded",
        ),
        (
            "NodeAgent",
            obj(
                json!({}),
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "True", "AgentsReady")]}),
            ),
            "Healthy",
        ),
        (
            "NodeAgent",
            obj(
                json!({}),
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "AgentsNotReady")]}),
            ),
            "Progressing",
        ),
        (
            "NodeAgent",
            obj(
                json!({}),
                json!({"observedGeneration": 1, "conditions": [cond("Stalled", "True", "NamespaceNotFound"), cond("Ready", "False", "NamespaceNotFound")]}),
            ),
            "Degraded",
        ),
        (
            "AgentInvocation",
            obj(
                json!({}),
                json!({"phase": "Running", "progress": "1/3", "conditions": [cond("Reconciling", "True", "Running")]}),
            ),
            "Progressing",
        ),
        (
            "AgentInvocation",
            obj(
                json!({}),
                json!({"phase": "Succeeded", "conditions": [cond("Complete", "True", "AllInstancesFinished")]}),
            ),
            "Healthy",
        ),
        (
            "AgentInvocation",
            obj(
                json!({}),
                json!({"phase": "Failed", "conditions": [cond("Complete", "True", "AllInstancesFinished"), cond("Failed", "True", "InstancesFailed")]}),
            ),
            "Degraded",
        ),
        (
            "AgentInvocation",
            obj(
                json!({}),
                json!({"phase": "Pending", "conditions": [cond("Stalled", "True", "AgentNotFound")]}),
            ),
            "Degraded",
        ),
        (
            "AgentUpgradeJob",
            obj(
                json!({}),
                json!({"status": "running", "progress": "5/50", "conditions": [cond("Reconciling", "True", "RollingOut")]}),
            ),
            "Progressing",
        ),
        (
            "AgentUpgradeJob",
            obj(
                json!({"paused": true}),
                json!({"status": "running", "conditions": [cond("Paused", "True", "Paused")]}),
            ),
            "Suspended",
        ),
        (
            "AgentUpgradeJob",
            obj(
                json!({}),
                json!({"status": "success", "conditions": [cond("Complete", "True", "AllAgentsFinished")]}),
            ),
            "Healthy",
        ),
        (
            "AgentUpgradeJob",
            obj(
                json!({}),
                json!({"status": "failed", "conditions": [cond("Complete", "True", "AllAgentsFinished"), cond("Failed", "True", "MaxFailuresExceeded")]}),
            ),
            "Degraded",
        ),
    ];
    let checks = checks();
    for (kind, object, want) in cases {
        let script = &checks.iter().find(|(k, _)| k == kind).expect("check").1;
        let (got, message) = health(script, object.clone());
        assert_eq!(got, want, "{kind}: {object}\nmessage: {message}");
    }
}
