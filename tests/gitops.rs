//! The Argo CD health checks of docs/gitops.md, run (Lua 5.1, as Argo runs them) against
//! objects in each state the controllers write, and against the objects the running
//! controllers produce on the local control plane: a check that does not parse, or calls a
//! state healthy that is not, fails here. The same objects are judged by kstatus, the
//! sigs.k8s.io/cli-utils library Flux and kpt use (`hack/kstatus`, built from the Go module
//! proxy): a finished failure must be `Failed` there, a success `Current`.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use kube::Api;
use mlua::{Lua, LuaSerdeExt};
use nodeops::api::{AgentInvocation, AgentUpgradeJob, AsyncCommand, Command, Invoker};
use nodeops::keys::sim;
use serde_json::{Value, json};
use support::agents::Agent;
use support::{TestNamespace, apply, manifest};

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

/// An object at generation 1 whose status was written for it (unless it says otherwise).
fn obj(spec: Value, status: Value) -> Value {
    let mut status = status;
    if status.get("observedGeneration").is_none() {
        status["observedGeneration"] = json!(1);
    }
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
                json!({"simulated": true}),
                json!({"status": "planned", "simulated": true, "conditions": [cond("Complete", "True", "Simulated"), cond("Ready", "True", "Succeeded")]}),
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

#[test]
fn a_status_of_an_older_generation_is_progressing_for_every_kind() {
    // Each kind's healthy status, then the same after a spec edit not yet observed.
    let healthy: Vec<(&str, Value)> = vec![
        (
            "AsyncCommand",
            json!({"phase": "Succeeded", "conditions": [cond("Complete", "True", "AllNodesFinished"), cond("Ready", "True", "Succeeded")]}),
        ),
        (
            "Invoker",
            json!({"conditions": [cond("Ready", "True", "Scheduled")]}),
        ),
        (
            "Command",
            json!({"conditions": [cond("Ready", "True", "Valid")]}),
        ),
        (
            "NodeAgent",
            json!({"conditions": [cond("Ready", "True", "Ready")]}),
        ),
        (
            "AgentInvocation",
            json!({"phase": "Succeeded", "conditions": [cond("Complete", "True", "AllInstancesFinished")]}),
        ),
        (
            "AgentUpgradeJob",
            json!({"status": "success", "conditions": [cond("Complete", "True", "AllAgentsFinished")]}),
        ),
    ];
    let checks = checks();
    for (kind, status) in healthy {
        let script = &checks.iter().find(|(k, _)| k == kind).expect("check").1;
        let current = obj(json!({}), status.clone());
        assert_eq!(health(script, current.clone()).0, "Healthy", "{kind}");
        let mut edited = current;
        edited["metadata"]["generation"] = json!(2);
        assert_eq!(
            health(script, edited).0,
            "Progressing",
            "{kind}: a status for generation 1 says nothing of generation 2"
        );
    }
}

/// The kstatus program, built once by `hack/kstatus.sh` (under a lock: test binaries run
/// in parallel).
fn kstatus_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| support::built_by("kstatus.sh"))
}

/// What kstatus says of each object: (status, message).
fn kstatus(objects: &[Value]) -> Vec<(String, String)> {
    use std::io::Write;
    let mut child = std::process::Command::new(kstatus_bin())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kstatus");
    let mut stdin = child.stdin.take().expect("stdin");
    for o in objects {
        writeln!(stdin, "{o}").expect("write an object");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("kstatus output");
    assert!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            (
                v["status"].as_str().expect("status").to_string(),
                v["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(verdicts.len(), objects.len(), "one verdict per object");
    verdicts
}

/// Applies `manifest` and waits until its check stops saying Progressing; returns what it
/// says then, and the object it judged.
async fn settled<K>(api: &Api<K>, manifest: Value) -> ((String, String), Value)
where
    K: support::Watched + serde::Serialize,
{
    let kind = manifest["kind"].as_str().expect("kind").to_string();
    let name = manifest["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    apply(api, manifest).await;
    judged(api, &kind, &name).await
}

/// What `kind`'s check says of object `name` once it stops saying Progressing, and the
/// object it judged.
async fn judged<K>(api: &Api<K>, kind: &str, name: &str) -> ((String, String), Value)
where
    K: support::Watched + serde::Serialize,
{
    let script = checks()
        .into_iter()
        .find(|(k, _)| k == kind)
        .expect("check")
        .1;
    let judge = |o: &K| health(&script, serde_json::to_value(o).expect("JSON"));
    let done = support::wait_for(api, name, Duration::from_secs(90), "a verdict", |o: &K| {
        judge(o).0 != "Progressing"
    })
    .await;
    (judge(&done), serde_json::to_value(&done).expect("JSON"))
}

#[tokio::test]
async fn checks_judge_what_the_controllers_really_write() {
    let (ns, _op) = TestNamespace::with_operator("gitops").await;
    let mut verdicts = Vec::new();
    let mut objects = Vec::new();

    let commands: Api<Command> = ns.api();
    for (name, spec, want) in [
        ("uptime", json!({"content": "uptime"}), "Healthy"),
        (
            "broken",
            json!({"content": "df {{9x}}", "enableParameters": true}),
            "Degraded",
        ),
    ] {
        let got = settled(&commands, manifest::<Command>(name, spec)).await;
        verdicts.push(("Command", name, want, got.0));
        objects.push(got.1);
    }
    let runs: Api<AsyncCommand> = ns.api();
    for (name, spec, want) in [
        (
            "fine",
            json!({"command": "uptime", "nodeNames": ["node-0001", "node-0002"]}),
            "Healthy",
        ),
        (
            "one-fails",
            json!({"command": "uptime", "nodeNames": ["node-0001", "node-0002"],
                   "podAnnotations": {format!("{}node-0002", sim::EXIT_CODE_NODE_PREFIX): "3"}}),
            "Degraded",
        ),
        (
            "host-refused",
            json!({"command": "uptime", "nodeNames": ["node-0001"], "executionMode": "Host"}),
            "Degraded",
        ),
    ] {
        let got = settled(&runs, manifest::<AsyncCommand>(name, spec)).await;
        verdicts.push(("AsyncCommand", name, want, got.0));
        objects.push(got.1);
    }
    let invokers: Api<Invoker> = ns.api();
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
        .round(jiff::Unit::Second)
        .expect("round");
    for (name, time, want) in [
        ("in-an-hour", later.to_string(), "Healthy"),
        ("expired", "2021-09-01T00:00:00Z".to_string(), "Degraded"),
    ] {
        let spec = json!({"commandRef": "uptime", "nodeNames": ["node-0001"],
                          "scheduleSettings": {"policy": "Once", "invokeTime": time}});
        let got = settled(&invokers, manifest::<Invoker>(name, spec)).await;
        verdicts.push(("Invoker", name, want, got.0));
        objects.push(got.1);
    }

    let agent = Agent::create(
        &ns,
        json!({"mode": "DaemonSet", "image": "registry.example.com/telescope", "basicVersion": "1.0.0"}),
    )
    .await;
    let invocations: Api<AgentInvocation> = ns.api();
    for (name, target, want) in [
        ("install", agent.name.as_str(), "Healthy"),
        ("no-such-agent", "no-such-agent", "Degraded"),
    ] {
        let spec = json!({"invocationType": "Install", "invocationTarget": target, "nodeNames": ["node-0030"]});
        let got = settled(&invocations, manifest::<AgentInvocation>(name, spec)).await;
        verdicts.push(("AgentInvocation", name, want, got.0));
        objects.push(got.1);
    }
    let got = judged(&agent.api(), "NodeAgent", &agent.name).await;
    verdicts.push(("NodeAgent", "installed", "Healthy", got.0));
    objects.push(got.1);
    let jobs: Api<AgentUpgradeJob> = ns.api();
    let spec = json!({"agent": agent.name, "targetVersion": "2.0.0", "simulated": true,
                      "nodeSelector": {"matchExpressions": [{"key": agent.label(), "operator": "Exists"}]}});
    let got = settled(&jobs, manifest::<AgentUpgradeJob>("plan", spec)).await;
    verdicts.push(("AgentUpgradeJob", "plan", "Healthy", got.0));
    objects.push(got.1);

    // Runs that end in failure: an agent whose 2.0.0 never becomes Ready on node-0031 and
    // whose 1.0.0 never does on node-0032.
    let sick = Agent::create(
        &ns,
        json!({"mode": "DaemonSet", "image": "registry.example.com/telescope", "basicVersion": "1.0.0",
               "readyTimeoutSeconds": 10,
               "podAnnotations": {format!("{}node-0031-2.0.0", sim::UNREADY_PREFIX): "true",
                                  format!("{}node-0032-1.0.0", sim::UNREADY_PREFIX): "true"}}),
    )
    .await;
    for (name, node, want) in [
        ("sick-install", "node-0031", "Healthy"),
        ("sick-install-fails", "node-0032", "Degraded"),
    ] {
        let spec = json!({"invocationType": "Install", "invocationTarget": sick.name, "nodeNames": [node]});
        let got = settled(&invocations, manifest::<AgentInvocation>(name, spec)).await;
        verdicts.push(("AgentInvocation", name, want, got.0));
        objects.push(got.1);
    }
    let spec = json!({"agent": sick.name, "targetVersion": "2.0.0",
                      "nodeSelector": {"matchExpressions": [{"key": sick.label(), "operator": "Exists"}]}});
    let got = settled(&jobs, manifest::<AgentUpgradeJob>("upgrade-fails", spec)).await;
    verdicts.push(("AgentUpgradeJob", "upgrade-fails", "Degraded", got.0));
    objects.push(got.1);

    // kstatus judges the same objects: Argo's Healthy is its Current, Degraded its Failed.
    let judged = kstatus(&objects);
    let kstatus_wrong: Vec<_> = verdicts
        .iter()
        .zip(&judged)
        .filter(|((_, _, want, _), got)| {
            let expected = if *want == "Healthy" {
                "Current"
            } else {
                "Failed"
            };
            got.0 != expected
        })
        .map(|((kind, name, want, _), got)| (kind, name, want, got))
        .collect();
    assert!(
        kstatus_wrong.is_empty(),
        "kind, name, Argo verdict, kstatus said: {kstatus_wrong:#?}"
    );

    let wrong: Vec<_> = verdicts
        .iter()
        .filter(|(_, _, want, got)| got.0 != *want)
        .collect();
    assert!(
        wrong.is_empty(),
        "kind, name, expected, check said: {wrong:#?}"
    );
}
