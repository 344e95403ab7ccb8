//! The API server itself refuses bad manifests at apply (OpenAPI schema and CEL rules from
//! the generated CRDs), with a message that names the field; every sample is accepted.

mod support;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use support::{TestNamespace, install_crds, kubeconfig_path, repo_root};

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
        // TAT's CreateInvoker errors, each as the API server answers it.
        case(
            "display name over 120 characters (TAT's Name; InvalidParameterValue.TooLong)",
            "Invoker",
            json!({"displayName": "é".repeat(121)}),
            &["spec.displayName", "120"],
        ),
        case(
            "display name with a newline",
            "Invoker",
            json!({"displayName": "nightly\nrun"}),
            &["spec.displayName", "should match"],
        ),
        case(
            "command id that is not a name (InvalidParameterValue.InvalidCommandId)",
            "Invoker",
            json!({"commandRef": "CMD_m7uma92n"}),
            &["spec.commandRef", "should match"],
        ),
        case(
            "one bad id among good ones (InvalidParameterValue.InconsistentID, .InvalidInstanceId)",
            "Invoker",
            json!({"nodeNames": ["node-0001", "INS_yx05ky8j"]}),
            &["spec.nodeNames[1]", "should match"],
        ),
        case(
            "starting deadline over a day (InvalidParameterValue.Range)",
            "Invoker",
            json!({"startingDeadlineSeconds": 86401}),
            &["spec.startingDeadlineSeconds"],
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
            "empty version (the seed's minimum is 0, its pattern needs a character)",
            "AgentInvocation",
            json!({"version": ""}),
            &["spec.version"],
        ),
        case(
            "RemoteInstall with an empty remoteInstallMeta",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": []}),
            &["spec.remoteInstallMeta is required when invocationType is RemoteInstall"],
        ),
        case(
            "remote host without remoteIp",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [{"instanceName": "db-1", "userName": "root", "credentialsSecretRef": {"name": "s"}}]}),
            // Server-side apply refuses it first: remoteIp is the list's key.
            &["spec.remoteInstallMeta", "omits all key fields", "remoteIp"],
        ),
        case(
            "remote host without userName",
            "AgentInvocation",
            json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [{"remoteIp": "192.0.2.1", "credentialsSecretRef": {"name": "s"}}]}),
            &["spec.remoteInstallMeta[0].userName", "Required value"],
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
        // The seed's example agent ids: nodeops issues every agent id itself (a UUID that
        // NodeAgent status lists), so no other form can name an agent here.
        case(
            "agent id that is not a UUID (the seed's item1)",
            "AgentUpgradeJob",
            json!({"nodeSelector": null, "agents": ["item1"]}),
            &["spec.agents[0]", "should match"],
        ),
        case(
            "the seed's response agent id agent-abc123-def456",
            "AgentUpgradeJob",
            json!({"nodeSelector": null, "agents": ["agent-abc123-def456"]}),
            &["spec.agents[0]", "should match"],
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
    assert_eq!(cases.len(), 91, "bad manifests in this suite");
}

/// A seed value nodeops takes as it is: accepted at apply, and what the listed JSON pointers
/// of the applied object hold.
struct Good {
    what: &'static str,
    kind: &'static str,
    labels: usize,
    change: Value,
    kept: Vec<(&'static str, Value)>,
}

fn good_manifests() -> Vec<Good> {
    // TAT's Name: up to 120 characters of free text (characters, not bytes: these 120 are
    // 201 bytes).
    let mut name = String::from("Nightly disk check — 机房 A, rack \"3/4\" (UTC+8) 🙂 ");
    while name.chars().count() < 120 {
        name.push('·');
    }
    let dotted = "ip-10-0-0-1.eu-west-1.compute.internal";
    let long = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    // An agent id as nodeops issues it (NodeAgent status lists it).
    let uuid = nodeops::agent::agent_uuid("nodeagent-uid", "node-uid");
    vec![
        Good {
            what: "TAT Name: 120 characters of free text in displayName",
            kind: "Invoker",
            labels: 0,
            change: json!({"displayName": name}),
            kept: vec![("/spec/displayName", json!(name))],
        },
        Good {
            what: "TAT Tags: 11 labels, one over TAT's cap of 10",
            kind: "Invoker",
            labels: 11,
            change: json!({}),
            kept: vec![("/metadata/labels/tag-10", json!("v10"))],
        },
        Good {
            what: "Cloud Eye instance_id: node names with dots, up to 253 characters",
            kind: "AgentInvocation",
            labels: 0,
            change: json!({"nodeNames": [dotted, long]}),
            kept: vec![("/spec/nodeNames/1", json!(long))],
        },
        Good {
            what: "Cloud Eye: an empty remote_install_meta on a task that takes no host",
            kind: "AgentInvocation",
            labels: 0,
            change: json!({"remoteInstallMeta": []}),
            kept: vec![("/spec/remoteInstallMeta", json!([]))],
        },
        Good {
            what: "Cloud Eye: a remote host without its optional instance_name, port and remote_use_pem",
            kind: "AgentInvocation",
            labels: 0,
            change: json!({"invocationType": "RemoteInstall", "nodeNames": null, "remoteInstallMeta": [
                {"remoteIp": "192.0.2.1", "userName": "root", "credentialsSecretRef": {"name": "s"}}]}),
            kept: vec![
                ("/spec/remoteInstallMeta/0/port", json!(22)),
                ("/spec/remoteInstallMeta/0/usePem", json!(false)),
            ],
        },
        Good {
            what: "TokenBatchUpgrade agentUuids: an agent id as nodeops issues it",
            kind: "AgentUpgradeJob",
            labels: 0,
            change: json!({"nodeSelector": null, "agents": [uuid]}),
            kept: vec![("/spec/agents/0", json!(uuid))],
        },
    ]
}

#[tokio::test]
async fn seed_values_taken_as_they_are_are_accepted() {
    let ns = TestNamespace::new("api-good").await;
    install_crds(&ns.client).await;
    let cases = good_manifests();
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let mut spec = base_spec(c.kind);
        merge(&mut spec, &c.change);
        let mut obj = object(c.kind, &format!("good-{i}"), spec);
        if c.labels > 0 {
            obj.metadata.labels = Some(
                (0..c.labels)
                    .map(|j| (format!("tag-{j}"), format!("v{j}")))
                    .collect(),
            );
        }
        let api = api_for(&ns.client, &ns.name, c.kind);
        match apply_dry_run(&api, &obj).await {
            Ok(applied) => {
                let applied = serde_json::to_value(&applied).expect("json");
                for (pointer, want) in &c.kept {
                    if applied.pointer(pointer) != Some(want) {
                        failures.push(format!(
                            "{} ({}): {pointer} is {:?}, not {want}",
                            c.what,
                            c.kind,
                            applied.pointer(pointer)
                        ));
                    }
                }
            }
            Err(e) => failures.push(format!("{} ({}): refused: {e}", c.what, c.kind)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // docs/api.md maps these seed values; a case added or lost changes it here first.
    assert_eq!(cases.len(), 6, "seed values accepted");
}

/// The seeds' request envelope is the API server's own: a request id the client sends (the
/// cloud phone's `x-request-id`) goes as `Audit-ID` and comes back on the response (TAT's
/// `RequestId`); success is the object itself (no `error_code: "0"`, `error_msg: "ok"`); a
/// refusal is a `Status` with `reason`, `message` and `code`; bad credentials are 401 (TAT's
/// `AuthFailure`).
#[tokio::test]
async fn the_seeds_request_envelope_is_the_api_servers() {
    let ns = TestNamespace::new("api-envelope").await;
    install_crds(&ns.client).await;
    let create = |spec: Value, request_id: &'static str| {
        let body = serde_json::to_vec(&json!({
            "apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
            "metadata": {"name": "seed"}, "spec": spec
        }))
        .expect("body");
        http::Request::post(format!(
            "/apis/nodeops.io/v1alpha1/namespaces/{}/asynccommands?dryRun=All&fieldValidation=Strict",
            ns.name
        ))
        .header("Content-Type", "application/json")
        .header("Audit-ID", request_id)
        .body(kube::client::Body::from(body))
        .expect("request")
    };
    let send = |request: http::Request<kube::client::Body>| async {
        let response = ns.client.send(request).await.expect("send");
        let code = response.status().as_u16();
        let audit_id = response
            .headers()
            .get("Audit-ID")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .expect("response body");
        let body: Value = serde_json::from_slice(&bytes).expect("JSON body");
        (code, audit_id, body)
    };

    // The seed's own request: created (201), the answer is the object itself.
    let (code, audit_id, body) = send(create(
        json!({"command": "ls -l /system", "nodeNames": ["a44uhlf7", "efjy72gs"]}),
        "seed-request-0001",
    ))
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(audit_id.as_deref(), Some("seed-request-0001"));
    assert_eq!(body["kind"], "AsyncCommand", "{body}");
    assert!(body.get("error_code").is_none() && body.get("data").is_none());

    // A bad parameter: a Status naming the field, with the request's id.
    let (code, audit_id, body) = send(create(
        json!({"command": "ls -l /system; reboot", "nodeNames": ["a44uhlf7"]}),
        "seed-request-0002",
    ))
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(audit_id.as_deref(), Some("seed-request-0002"));
    assert_eq!(
        (
            &body["kind"],
            &body["status"],
            &body["reason"],
            &body["code"]
        ),
        (
            &json!("Status"),
            &json!("Failure"),
            &json!("Invalid"),
            &json!(422)
        ),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.command")),
        "{body}"
    );

    // Credentials the API server does not know: 401 Unauthorized, nothing reaches nodeops.
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info = serde_json::from_value(json!({"token": "not-a-token"})).expect("auth");
    let stranger = Client::try_from(config).expect("client");
    match api_for(&stranger, &ns.name, "AsyncCommand")
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"))
        }
        other => panic!("a bad token: {other:?}"),
    }
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
