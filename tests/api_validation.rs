//! The API server itself refuses bad manifests at apply (OpenAPI schema and CEL rules from
//! the generated CRDs), with a message that names the field; every sample is accepted.

mod support;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{TestNamespace, install_crds, repo_root};

/// A valid spec per kind; each case merges its change into it (JSON merge patch: `null`
/// removes a field).
fn base_spec(kind: &str) -> Value {
    match kind {
        "AsyncCommand" => {
            json!({"command": "ls -l /system", "nodeNames": ["node-0001", "node-0002"]})
        }
        "Command" => {
            json!({"content": "df -h {{path}}", "enableParameters": true, "defaultParameters": {"path": "/"}})
        }
        "Invoker" => json!({
            "commandRef": "disk-usage", "nodeNames": ["node-0001"],
            "scheduleSettings": {"policy": "Once", "invokeTime": "2031-09-01T00:00:00+08:00"}
        }),
        "NodeAgent" => {
            json!({"namespace": "nodeops-agents", "image": "registry.example.com/telescope", "basicVersion": "1.0.0"})
        }
        "AgentInvocation" => json!({"invocationType": "Install", "nodeNames": ["node-0001"]}),
        "AgentUpgradeJob" => {
            json!({"nodeSelector": {"matchLabels": {"type": "kwok"}}, "targetVersion": "1.5.0"})
        }
        other => panic!("no base spec for {other}"),
    }
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
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

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "nodeops.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec
    }))
    .expect("object")
}

/// Like `kubectl apply --server-side --dry-run=server`: strict field validation, so unknown
/// fields (a `password`) are refused, not silently dropped.
async fn apply_dry_run(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
) -> Result<DynamicObject, kube::Error> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply("nodeops-tests")
        .dry_run()
        .validation_strict();
    api.patch(&name, &params, &Patch::Apply(obj)).await
}

struct Case {
    what: &'static str,
    kind: &'static str,
    change: Value,
    expect: &'static [&'static str],
}

fn case(
    what: &'static str,
    kind: &'static str,
    change: Value,
    expect: &'static [&'static str],
) -> Case {
    Case {
        what,
        kind,
        change,
        expect,
    }
}

fn bad_manifests() -> Vec<Case> {
    let many_nodes: Vec<String> = (1..=101).map(|i| format!("node-{i:04}")).collect();
    let many_params: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("p{i}"), json!("v"))).collect();
    vec![
        // AsyncCommand
        case(
            "shell metacharacters in command",
            "AsyncCommand",
            json!({"command": "ls; rm -rf /"}),
            &["spec.command", "should match"],
        ),
        case(
            "command substitution in command",
            "AsyncCommand",
            json!({"command": "echo $(id)"}),
            &["spec.command"],
        ),
        case(
            "command over 1024 bytes",
            "AsyncCommand",
            json!({"command": "a".repeat(1025)}),
            &["spec.command", "1024"],
        ),
        case(
            "blank command",
            "AsyncCommand",
            json!({"command": "   "}),
            &["spec.command must contain a program"],
        ),
        case(
            "command and commandRef",
            "AsyncCommand",
            json!({"commandRef": "disk-usage"}),
            &[
                "spec.command",
                "exactly one of spec.command and spec.commandRef",
            ],
        ),
        case(
            "neither command nor commandRef",
            "AsyncCommand",
            json!({"command": null}),
            &["exactly one of spec.command and spec.commandRef"],
        ),
        case(
            "empty nodeNames",
            "AsyncCommand",
            json!({"nodeNames": []}),
            &["spec.nodeNames", "at least 1"],
        ),
        case(
            "101 nodeNames",
            "AsyncCommand",
            json!({"nodeNames": many_nodes}),
            &["spec.nodeNames", "at most 100"],
        ),
        case(
            "duplicate nodeNames",
            "AsyncCommand",
            json!({"nodeNames": ["node-0001", "node-0001"]}),
            &["spec.nodeNames", "duplicate entries"],
        ),
        case(
            "node name that is a path",
            "AsyncCommand",
            json!({"nodeNames": ["../../etc/passwd"]}),
            &["spec.nodeNames[0]"],
        ),
        case(
            "node name in upper case",
            "AsyncCommand",
            json!({"nodeNames": ["Node-1"]}),
            &["spec.nodeNames[0]"],
        ),
        case(
            "nodeNames and nodeSelector",
            "AsyncCommand",
            json!({"nodeSelector": {"matchLabels": {"a": "b"}}}),
            &["exactly one of spec.nodeNames and spec.nodeSelector"],
        ),
        case(
            "unknown execution mode",
            "AsyncCommand",
            json!({"executionMode": "Shell"}),
            &["spec.executionMode", "Unsupported value"],
        ),
        case(
            "zero timeout",
            "AsyncCommand",
            json!({"timeoutSeconds": 0}),
            &["spec.timeoutSeconds"],
        ),
        case(
            "timeout over a day",
            "AsyncCommand",
            json!({"timeoutSeconds": 86401}),
            &["spec.timeoutSeconds"],
        ),
        case(
            "username in Container mode",
            "AsyncCommand",
            json!({"username": "root"}),
            &["spec.username is only used in Host mode"],
        ),
        case(
            "username that is not a username",
            "AsyncCommand",
            json!({"executionMode": "Host", "username": "root;id"}),
            &["spec.username"],
        ),
        case(
            "parameters without commandRef",
            "AsyncCommand",
            json!({"parameters": {"a": "b"}}),
            &["spec.parameters can only be given with spec.commandRef"],
        ),
        case(
            "parameter name starting with a digit",
            "AsyncCommand",
            json!({"command": null, "commandRef": "disk-usage", "parameters": {"1path": "/"}}),
            &["spec.parameters names"],
        ),
        case(
            "maxConcurrency zero",
            "AsyncCommand",
            json!({"maxConcurrency": 0}),
            &["spec.maxConcurrency"],
        ),
        case(
            "maxConcurrency over 100%",
            "AsyncCommand",
            json!({"maxConcurrency": "150%"}),
            &["spec.maxConcurrency"],
        ),
        case(
            "negative maxErrors",
            "AsyncCommand",
            json!({"maxErrors": -1}),
            &["spec.maxErrors"],
        ),
        case(
            "backoffLimit over 10",
            "AsyncCommand",
            json!({"backoffLimit": 11}),
            &["spec.backoffLimit"],
        ),
        case(
            "relative working directory",
            "AsyncCommand",
            json!({"workingDirectory": "tmp/x"}),
            &["spec.workingDirectory"],
        ),
        case(
            "image in Host mode",
            "AsyncCommand",
            json!({"executionMode": "Host", "image": "busybox"}),
            &["spec.image is only used in Container mode"],
        ),
        // Command
        case(
            "command without content",
            "Command",
            json!({"content": null}),
            &["spec.content", "Required value"],
        ),
        case(
            "content over 64 KiB",
            "Command",
            json!({"content": "x".repeat(65537)}),
            &["spec.content"],
        ),
        case(
            "defaultParameters without enableParameters",
            "Command",
            json!({"enableParameters": false}),
            &["spec.defaultParameters requires spec.enableParameters"],
        ),
        case(
            "unknown interpreter",
            "Command",
            json!({"interpreter": "Perl"}),
            &["spec.interpreter", "Unsupported value"],
        ),
        case(
            "more than 20 default parameters",
            "Command",
            json!({"defaultParameters": many_params}),
            &["spec.defaultParameters", "at most 20"],
        ),
        case(
            "parameter name with a dash",
            "Command",
            json!({"defaultParameters": {"my-path": "/"}}),
            &["spec.defaultParameters names"],
        ),
        // Invoker
        case(
            "Once without invokeTime",
            "Invoker",
            json!({"scheduleSettings": {"invokeTime": null}}),
            &["scheduleSettings.invokeTime is required when policy is Once"],
        ),
        case(
            "Recurrence without recurrence",
            "Invoker",
            json!({"scheduleSettings": {"policy": "Recurrence", "invokeTime": null}}),
            &["scheduleSettings.recurrence is required when policy is Recurrence"],
        ),
        case(
            "unknown policy",
            "Invoker",
            json!({"scheduleSettings": {"policy": "Weekly"}}),
            &["spec.scheduleSettings.policy", "Unsupported value"],
        ),
        case(
            "cron with four fields",
            "Invoker",
            json!({"scheduleSettings": {"policy": "Recurrence", "invokeTime": null, "recurrence": "0 0 1 *"}}),
            &["exactly 5 fields"],
        ),
        case(
            "invokeTime without T",
            "Invoker",
            json!({"scheduleSettings": {"invokeTime": "2031-09-01 00:00:00+08:00"}}),
            &["RFC 3339"],
        ),
        case(
            "invokeTime without offset",
            "Invoker",
            json!({"scheduleSettings": {"invokeTime": "2031-09-01T00:00:00"}}),
            &["spec.scheduleSettings.invokeTime"],
        ),
        case(
            "recurrence with policy Once",
            "Invoker",
            json!({"scheduleSettings": {"recurrence": "0 0 1 * *"}}),
            &["recurrence is only used when policy is Recurrence"],
        ),
        case(
            "unknown concurrency policy",
            "Invoker",
            json!({"concurrencyPolicy": "Sometimes"}),
            &["spec.concurrencyPolicy", "Unsupported value"],
        ),
        case(
            "unknown invoker type",
            "Invoker",
            json!({"type": "Event"}),
            &["spec.type", "Unsupported value"],
        ),
        case(
            "missing commandRef",
            "Invoker",
            json!({"commandRef": null}),
            &["spec.commandRef", "Required value"],
        ),
        case(
            "time zone with shell text",
            "Invoker",
            json!({"scheduleSettings": {"timeZone": "Asia/Shanghai; rm"}}),
            &["spec.scheduleSettings.timeZone"],
        ),
        case(
            "negative history limit",
            "Invoker",
            json!({"successfulHistoryLimit": -1}),
            &["spec.successfulHistoryLimit"],
        ),
        // NodeAgent
        case(
            "HostInstaller without installer",
            "NodeAgent",
            json!({"mode": "HostInstaller"}),
            &["spec.installer is required when mode is HostInstaller"],
        ),
        case(
            "version with a space",
            "NodeAgent",
            json!({"basicVersion": "1.0 beta"}),
            &["spec.basicVersion"],
        ),
        case(
            "unknown agent mode",
            "NodeAgent",
            json!({"mode": "Systemd"}),
            &["spec.mode", "Unsupported value"],
        ),
        case(
            "agent namespace that is not a name",
            "NodeAgent",
            json!({"namespace": "Agents!"}),
            &["spec.namespace"],
        ),
        // AgentInvocation
        case(
            "Install without nodeNames",
            "AgentInvocation",
            json!({"nodeNames": null}),
            &["spec.nodeNames is required when invocationType is Install or Update"],
        ),
        case(
            "Update without nodeNames",
            "AgentInvocation",
            json!({"invocationType": "Update", "nodeNames": null}),
            &["spec.nodeNames is required when invocationType is Install or Update"],
        ),
        case(
            "Rollback without invocationIds",
            "AgentInvocation",
            json!({"invocationType": "Rollback", "nodeNames": null}),
            &["spec.invocationIds is required when invocationType is Rollback or Retry"],
        ),
        case(
            "Retry without invocationIds",
            "AgentInvocation",
            json!({"invocationType": "Retry", "nodeNames": null}),
            &["spec.invocationIds is required"],
        ),
        case(
            "RemoteInstall without remoteInstallMeta",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null}),
            &["spec.remoteInstallMeta is required when invocationType is RemoteInstall"],
        ),
        case(
            "SetRemoteInstallHost with two nodes",
            "AgentInvocation",
            json!({"invocationType": "SetRemoteInstallHost", "nodeNames": ["node-0001", "node-0002"]}),
            &["exactly one node"],
        ),
        case(
            "seed's upper-case type",
            "AgentInvocation",
            json!({"invocationType": "INSTALL"}),
            &["spec.invocationType", "Unsupported value"],
        ),
        case(
            "unknown invocation target",
            "AgentInvocation",
            json!({"invocationTarget": "Telescope!"}),
            &["spec.invocationTarget"],
        ),
        case(
            "version with a slash",
            "AgentInvocation",
            json!({"version": "1.0/../x"}),
            &["spec.version"],
        ),
        case(
            "version over 64 characters",
            "AgentInvocation",
            json!({"version": "1".repeat(65)}),
            &["spec.version"],
        ),
        case(
            "version and versionType",
            "AgentInvocation",
            json!({"version": "1.0.0", "versionType": "BasicVersion"}),
            &["spec.version and spec.versionType are mutually exclusive"],
        ),
        case(
            "unknown origin",
            "AgentInvocation",
            json!({"origin": "WEB"}),
            &["spec.origin", "Unsupported value"],
        ),
        case(
            "invocation id with underscore",
            "AgentInvocation",
            json!({"invocationType": "Retry", "nodeNames": null, "invocationIds": ["abc_def"]}),
            &["spec.invocationIds[0]"],
        ),
        case(
            "remote IP out of range",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [{"remoteIp": "300.1.1.1", "userName": "root", "credentialsSecretRef": {"name": "s"}}]}),
            &["remoteIp must be an IPv4 address"],
        ),
        case(
            "remote IP that is IPv6",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [{"remoteIp": "fe80::1", "userName": "root", "credentialsSecretRef": {"name": "s"}}]}),
            &["remoteIp must be an IPv4 address"],
        ),
        case(
            "SSH port out of range",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [{"remoteIp": "192.0.2.1", "port": 70000, "userName": "root", "credentialsSecretRef": {"name": "s"}}]}),
            &["spec.remoteInstallMeta[0].port"],
        ),
        case(
            "password in the spec",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [{"remoteIp": "192.0.2.1", "userName": "root", "password": "hunter2", "credentialsSecretRef": {"name": "s"}}]}),
            &["remoteInstallMeta", "password", "not declared in schema"],
        ),
        case(
            "remote host without a Secret",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [{"remoteIp": "192.0.2.1", "userName": "root"}]}),
            &["credentialsSecretRef", "Required value"],
        ),
        case(
            "remote user that is not a username",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [{"remoteIp": "192.0.2.1", "userName": "root$(id)", "credentialsSecretRef": {"name": "s"}}]}),
            &["spec.remoteInstallMeta[0].userName"],
        ),
        case(
            "remoteInstallMeta on Install",
            "AgentInvocation",
            json!({"remoteInstallMeta": [{"remoteIp": "192.0.2.1", "userName": "root", "credentialsSecretRef": {"name": "s"}}]}),
            &["spec.remoteInstallMeta is only used when invocationType is RemoteInstall"],
        ),
        // AgentUpgradeJob
        case(
            "agents and nodeSelector",
            "AgentUpgradeJob",
            json!({"agents": ["0b7c4f9e-5d1a-5c3e-9f3a-1e2d3c4b5a69"]}),
            &["exactly one of spec.agents and spec.nodeSelector"],
        ),
        case(
            "agent id that is not a UUID",
            "AgentUpgradeJob",
            json!({"nodeSelector": null, "agents": ["item1"]}),
            &["spec.agents[0]"],
        ),
        case(
            "missing targetVersion",
            "AgentUpgradeJob",
            json!({"targetVersion": null}),
            &["spec.targetVersion", "Required value"],
        ),
        case(
            "maxConcurrency 0%",
            "AgentUpgradeJob",
            json!({"maxConcurrency": "0%"}),
            &["spec.maxConcurrency"],
        ),
        case(
            "negative maxFailures",
            "AgentUpgradeJob",
            json!({"maxFailures": -1}),
            &["spec.maxFailures"],
        ),
        case(
            "canary node that is a path",
            "AgentUpgradeJob",
            json!({"canaryNodes": ["/etc"]}),
            &["spec.canaryNodes[0]"],
        ),
        // The rollout policy (shared by AgentUpgradeJob, AsyncCommand and Invoker)
        case(
            "window duration in days",
            "AgentUpgradeJob",
            json!({"rollout": {"maintenanceWindows": [{"schedule": "0 2 * * *", "duration": "1d"}]}}),
            &["spec.rollout.maintenanceWindows[0].duration"],
        ),
        case(
            "window longer than a week",
            "AgentUpgradeJob",
            json!({"rollout": {"maintenanceWindows": [{"schedule": "0 2 * * *", "duration": "169h"}]}}),
            &[
                "spec.rollout.maintenanceWindows[0].duration",
                "from 1s to 168h",
            ],
        ),
        case(
            "window schedule of 3 fields",
            "AsyncCommand",
            json!({"rollout": {"maintenanceWindows": [{"schedule": "0 2 *", "duration": "1h"}]}}),
            &["spec.rollout.maintenanceWindows[0].schedule"],
        ),
        case(
            "window time zone with a space",
            "Invoker",
            json!({"rollout": {"maintenanceWindows": [{"schedule": "0 2 * * *", "duration": "1h", "timeZone": "Europe/Ber lin"}]}}),
            &["spec.rollout.maintenanceWindows[0].timeZone"],
        ),
        case(
            "negative soak",
            "AgentUpgradeJob",
            json!({"rollout": {"soakSeconds": -1}}),
            &["spec.rollout.soakSeconds"],
        ),
        case(
            "health gate with both forms",
            "AgentUpgradeJob",
            json!({"rollout": {"healthGates": [{"nodeCondition": {"type": "DiskPressure"}, "object": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}]}}),
            &[
                "spec.rollout.healthGates[0]",
                "exactly one of nodeCondition and object",
            ],
        ),
        case(
            "node gate status that is not a condition status",
            "AsyncCommand",
            json!({"rollout": {"healthGates": [{"nodeCondition": {"type": "DiskPressure", "status": "yes"}}]}}),
            &["spec.rollout.healthGates[0].nodeCondition.status"],
        ),
        case(
            "invoker maxConcurrency 0",
            "Invoker",
            json!({"maxConcurrency": 0}),
            &["spec.maxConcurrency"],
        ),
    ]
}

#[tokio::test]
async fn bad_manifests_are_refused_with_the_field_named() {
    let ns = TestNamespace::new("api-bad").await;
    install_crds(&ns.client).await;
    let cases = bad_manifests();
    assert!(
        cases.len() >= 40,
        "the table holds at least 40 bad manifests"
    );
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let mut spec = base_spec(c.kind);
        merge(&mut spec, &c.change);
        let api = api_for(&ns.client, &ns.name, c.kind);
        let name = format!("bad-{i}");
        match apply_dry_run(&api, &object(c.kind, &name, spec)).await {
            Ok(_) => failures.push(format!("{} ({}): accepted", c.what, c.kind)),
            Err(kube::Error::Api(status)) => {
                let missing: Vec<_> = c
                    .expect
                    .iter()
                    .filter(|e| !status.message.contains(*e))
                    .collect();
                if !missing.is_empty() {
                    failures.push(format!(
                        "{} ({}): message lacks {missing:?}: {}",
                        c.what, c.kind, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{} ({}): unexpected error {e}", c.what, c.kind)),
        }
    }
    println!(
        "{} bad manifests refused by the API server",
        cases.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // docs/api.md quotes this number: a case added or lost changes it here first.
    assert_eq!(cases.len(), 81, "bad manifests in this suite");
}

#[tokio::test]
async fn base_specs_are_valid() {
    // Guards the table: each case must fail because of its change, not its base.
    let ns = TestNamespace::new("api-base").await;
    install_crds(&ns.client).await;
    for kind in [
        "AsyncCommand",
        "Command",
        "Invoker",
        "NodeAgent",
        "AgentInvocation",
        "AgentUpgradeJob",
    ] {
        let api = api_for(&ns.client, &ns.name, kind);
        apply_dry_run(&api, &object(kind, "base", base_spec(kind)))
            .await
            .unwrap_or_else(|e| panic!("base {kind} refused: {e}"));
    }
}

#[tokio::test]
async fn every_sample_is_accepted() {
    let ns = TestNamespace::new("api-samples").await;
    install_crds(&ns.client).await;
    // The samples and those in subdirectories, which need something of the user's.
    let mut dirs = vec![repo_root().join("config/samples")];
    let mut paths = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("config/samples") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "yaml") {
                paths.push(path);
            }
        }
    }
    let mut count = 0;
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read sample");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).expect("yaml");
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_yaml::from_value(value).expect("object");
            let types = obj.types.clone().expect("apiVersion and kind");
            if !types.api_version.starts_with("nodeops.io/") {
                continue; // the namespace the agent sample runs in
            }
            let kind = types.kind;
            apply_dry_run(&api_for(&ns.client, &ns.name, &kind), &obj)
                .await
                .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
            count += 1;
        }
    }
    assert!(count >= 9, "the nine nodeops samples, found {count}");
}

/// Changes to a running object that would be ambiguous are refused at apply.
#[tokio::test]
async fn immutable_fields_are_refused_on_update() {
    let ns = TestNamespace::new("api-immutable").await;
    install_crds(&ns.client).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "AsyncCommand",
            json!({"command": "uptime"}),
            "spec.command is immutable",
        ),
        (
            "AsyncCommand",
            json!({"nodeNames": ["node-0003"]}),
            "spec.nodeNames is immutable",
        ),
        (
            "AsyncCommand",
            json!({"executionMode": "Host"}),
            "spec.executionMode is immutable",
        ),
        (
            "AgentInvocation",
            json!({"nodeNames": ["node-0009"]}),
            "spec is immutable",
        ),
        (
            "AgentUpgradeJob",
            json!({"targetVersion": "2.0.0"}),
            "spec.targetVersion is immutable",
        ),
        (
            "AgentUpgradeJob",
            json!({"simulated": true}),
            "spec.simulated is immutable",
        ),
    ];
    for (i, (kind, change, expect)) in cases.into_iter().enumerate() {
        let api = api_for(&ns.client, &ns.name, kind);
        let name = format!("imm-{i}");
        let created = api
            .create(
                &PostParams::default(),
                &object(kind, &name, base_spec(kind)),
            )
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
        let mut spec = base_spec(kind);
        merge(&mut spec, &change);
        let mut changed = object(kind, &name, spec);
        changed.metadata.resource_version = created.metadata.resource_version.clone();
        match api.replace(&name, &PostParams::default(), &changed).await {
            Ok(_) => panic!("{kind}: change {change} accepted"),
            Err(kube::Error::Api(status)) => {
                assert!(
                    status.message.contains(expect),
                    "{kind}: message lacks {expect:?}: {}",
                    status.message
                )
            }
            Err(e) => panic!("{kind}: unexpected error {e}"),
        }
        // A change to a mutable field still goes through.
        if kind == "AgentUpgradeJob" {
            let mut spec = base_spec(kind);
            merge(&mut spec, &json!({"paused": true}));
            let mut paused = object(kind, &name, spec);
            paused.metadata.resource_version = created.metadata.resource_version.clone();
            api.replace(&name, &PostParams::default(), &paused)
                .await
                .expect("pause is allowed");
        }
    }
}
