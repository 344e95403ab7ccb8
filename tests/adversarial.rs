//! Adversarial manifests: every string field of every kind that reaches a node, a
//! command line, a label, an object name or an SSH login gets shell metacharacters, paths,
//! unicode look-alikes, invisible and control characters and oversized values; the API
//! server refuses each at apply, naming the field. The fields left free-form (a Command's
//! script, parameter values, descriptions, an Invoker's `displayName`, which refuses only
//! control characters, a remote host's display name, a working directory) never reach a
//! shell other than the one they are written for: parameters and the working directory
//! travel as environment and argv (tests/hostile_input.rs, tests/runner.rs), scripts are
//! the user's own program.

mod support;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{TestNamespace, install_crds};

const HOSTILE: &[&str] = &[
    "a; rm -rf /",
    "$(reboot)",
    "`id`",
    "a|b",
    "a&&b",
    "a\nb",
    "../../etc/passwd",
    "/etc/passwd",
    "nоde-0001",     // Cyrillic о
    "ｎｏｄｅ",      // fullwidth
    "node\u{200b}1", // zero-width space
    "\u{202e}1000",  // right-to-left override
    "a\u{0}b",
    "-rf",
    " ",
];

/// (kind, base spec, field path as a JSON pointer into spec, last path segment the
/// error must name).
fn targets() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let acmd = json!({"command": "ls -l", "nodeNames": ["node-0001"]});
    let inv = json!({"commandRef": "c", "nodeNames": ["node-0001"],
                     "scheduleSettings": {"policy": "Recurrence", "recurrence": "* * * * *", "timeZone": "UTC"}});
    let agent = json!({"namespace": "nodeops-agents", "image": "registry.example.com/telescope", "basicVersion": "1.0.0",
                       "mode": "HostInstaller", "installer": {"image": "example/installer:1", "commandRef": "install"},
                       "remoteInstaller": {"commandRef": "remote"}, "remoteInstallHost": "node-0001"});
    let ainv = json!({"invocationType": "Update", "nodeNames": ["node-0001"], "version": "1.0.0"});
    let remote = json!({"invocationType": "RemoteInstall", "remoteInstallMeta": [
        {"remoteIp": "192.0.2.10", "userName": "root", "credentialsSecretRef": {"name": "creds", "key": "password"}}]});
    let ids = json!({"invocationType": "Rollback", "invocationIds": ["6f5f0327-1d29-51ab-813c-e8a4d9c59a04"]});
    let upgrade = json!({"agent": "telescope", "agents": ["6f5f0327-1d29-51ab-813c-e8a4d9c59a04"],
                         "targetVersion": "2.0.0", "canaryNodes": ["node-0001"]});
    let command = json!({"content": "uptime", "username": "ops", "workingDirectory": "/tmp"});
    vec![
        ("AsyncCommand", acmd.clone(), "/command", "command"),
        ("AsyncCommand", acmd.clone(), "/nodeNames/0", "nodeNames"),
        (
            "AsyncCommand",
            json!({"command": "ls", "nodeNames": ["node-0001"], "executionMode": "Host", "username": "ops"}),
            "/username",
            "username",
        ),
        (
            "AsyncCommand",
            json!({"commandRef": "c", "nodeNames": ["node-0001"]}),
            "/commandRef",
            "commandRef",
        ),
        (
            "AsyncCommand",
            json!({"command": "ls", "nodeNames": ["node-0001"], "image": "busybox:1.36"}),
            "/image",
            "image",
        ),
        ("Command", command.clone(), "/username", "username"),
        ("Invoker", inv.clone(), "/nodeNames/0", "nodeNames"),
        ("Invoker", inv.clone(), "/commandRef", "commandRef"),
        (
            "Invoker",
            json!({"commandRef": "c", "nodeNames": ["node-0001"], "executionMode": "Host", "username": "ops",
                           "scheduleSettings": {"policy": "Recurrence", "recurrence": "* * * * *"}}),
            "/username",
            "username",
        ),
        (
            "Invoker",
            inv.clone(),
            "/scheduleSettings/timeZone",
            "timeZone",
        ),
        ("NodeAgent", agent.clone(), "/namespace", "namespace"),
        ("NodeAgent", agent.clone(), "/image", "image"),
        ("NodeAgent", agent.clone(), "/basicVersion", "basicVersion"),
        ("NodeAgent", agent.clone(), "/installer/image", "image"),
        (
            "NodeAgent",
            agent.clone(),
            "/installer/commandRef",
            "commandRef",
        ),
        (
            "NodeAgent",
            agent.clone(),
            "/remoteInstaller/commandRef",
            "commandRef",
        ),
        (
            "NodeAgent",
            agent.clone(),
            "/remoteInstallHost",
            "remoteInstallHost",
        ),
        ("AgentInvocation", ainv.clone(), "/nodeNames/0", "nodeNames"),
        ("AgentInvocation", ainv.clone(), "/version", "version"),
        (
            "AgentInvocation",
            json!({"invocationType": "Update", "nodeNames": ["node-0001"], "invocationTarget": "telescope"}),
            "/invocationTarget",
            "invocationTarget",
        ),
        (
            "AgentInvocation",
            ids.clone(),
            "/invocationIds/0",
            "invocationIds",
        ),
        (
            "AgentInvocation",
            remote.clone(),
            "/remoteInstallMeta/0/remoteIp",
            "remoteIp",
        ),
        (
            "AgentInvocation",
            remote.clone(),
            "/remoteInstallMeta/0/userName",
            "userName",
        ),
        (
            "AgentInvocation",
            remote.clone(),
            "/remoteInstallMeta/0/credentialsSecretRef/name",
            "name",
        ),
        (
            "AgentInvocation",
            remote.clone(),
            "/remoteInstallMeta/0/credentialsSecretRef/key",
            "key",
        ),
        ("AgentUpgradeJob", upgrade.clone(), "/agent", "agent"),
        ("AgentUpgradeJob", upgrade.clone(), "/agents/0", "agents"),
        (
            "AgentUpgradeJob",
            upgrade.clone(),
            "/targetVersion",
            "targetVersion",
        ),
        (
            "AgentUpgradeJob",
            upgrade.clone(),
            "/canaryNodes/0",
            "canaryNodes",
        ),
    ]
}

/// Values a field legitimately holds although they look hostile elsewhere.
fn allowed(pointer: &str, value: &str) -> bool {
    match pointer {
        // A command line names a program by path and passes it options: it is exec'd as
        // an argv, never given to a shell.
        "/command" => matches!(value, "../../etc/passwd" | "/etc/passwd" | "-rf"),
        // A Secret key becomes a file name under /etc/nodeops/ssh/, passed as one argv
        // element.
        "/remoteInstallMeta/0/credentialsSecretRef/key" => value == "-rf",
        _ => false,
    }
}

fn api_for(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("nodeops.io", "v1alpha1", kind));
    if kind == "NodeAgent" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

async fn dry_run(api: &Api<DynamicObject>, kind: &str, spec: &Value) -> Result<(), String> {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": kind, "metadata": {"name": "adversarial"}, "spec": spec
    }))
    .expect("object");
    let params = PatchParams::apply("nodeops-tests")
        .dry_run()
        .validation_strict();
    match api.patch("adversarial", &params, &Patch::Apply(&obj)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(e.message),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn hostile_values_in_every_guarded_field_are_refused_naming_the_field() {
    let ns = TestNamespace::new("adversarial").await;
    install_crds(&ns.client).await;
    let mut refused = 0;
    let mut failures = Vec::new();
    for (kind, base, pointer, field) in targets() {
        let api = api_for(&ns.client, &ns.name, kind);
        // The base is valid: what is refused below is the hostile value.
        if let Err(e) = dry_run(&api, kind, &base).await {
            panic!("{kind} base spec refused: {e}");
        }
        let oversized = "a".repeat(70_000);
        for value in HOSTILE.iter().copied().chain([oversized.as_str()]) {
            if allowed(pointer, value) {
                continue;
            }
            let mut spec = base.clone();
            *spec.pointer_mut(pointer).expect("field") = json!(value);
            match dry_run(&api, kind, &spec).await {
                Ok(()) => failures.push(format!("{kind} {pointer} accepted {value:?}")),
                Err(message) if message.contains(field) => refused += 1,
                Err(message) => failures.push(format!(
                    "{kind} {pointer} = {value:?} refused without naming {field}: {message}"
                )),
            }
        }
    }
    println!("{refused} hostile values refused at apply, each naming its field");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // docs/api.md quotes this number: a value or field added or lost changes it here first.
    assert_eq!(refused, 460, "hostile values refused");
}

#[tokio::test]
async fn oversized_lists_are_refused() {
    let ns = TestNamespace::new("adversarial-lists").await;
    install_crds(&ns.client).await;
    let nodes: Vec<String> = (0..101).map(|i| format!("node-{i:04}")).collect();
    let cases = [
        (
            "AsyncCommand",
            json!({"command": "ls", "nodeNames": nodes}),
            "nodeNames",
        ),
        (
            "Invoker",
            json!({"commandRef": "c", "nodeNames": nodes,
            "scheduleSettings": {"policy": "Once", "invokeTime": "2031-09-01T00:00:00Z"}}),
            "nodeNames",
        ),
        (
            "AgentInvocation",
            json!({"invocationType": "Install", "nodeNames": nodes}),
            "nodeNames",
        ),
        (
            "AsyncCommand",
            json!({"command": format!("ls {}", "a".repeat(1100)), "nodeNames": ["n"]}),
            "command",
        ),
        ("Command", json!({"content": "x".repeat(70_000)}), "content"),
    ];
    for (kind, spec, field) in cases {
        let api = api_for(&ns.client, &ns.name, kind);
        let message = dry_run(&api, kind, &spec).await.expect_err("refused");
        assert!(message.contains(field), "{kind}: {message}");
    }
}
