//! The operator as a pod: the operator image hack/images.sh builds runs on the real node
//! (kubelet + containerd), installed the two documented ways: the Helm chart and
//! `kubectl apply -k config/default` (through an overlay of the test's). Each install must
//! become Available, hold its leader Lease, run an AsyncCommand on the real node to a real
//! result, show that reconcile in the pod's own log, and leave nothing behind when removed;
//! the chart's `helm test` must pass (and fail when it cannot reach the operator).
//!
//! The pods use the host's network (the API server listens on loopback and there is no
//! kube-proxy: the chart's hostNetwork and apiServer values), each on a free port of its
//! own, and watch only their test's namespace. They hold the real node shared
//! (`support::real_node_shared`): its pod capacity is small.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ListParams, LogParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use nodeops::api::async_command::{AsyncCommand, NodePhase};
use nodeops::keys::REAL_NODE_TAINT;
use serde_json::{Value, json};
use support::helm::{CHART, Release, helm, run};
use support::{
    TestNamespace, apply, finished, install_crds, kubeconfig_path, kubectl, manifest, wait_for,
};

/// Until an install is Available: the images are on the node, so this is the operator's
/// start.
const START: Duration = Duration::from_secs(180);
const FINISH: Duration = Duration::from_secs(120);
/// The operator pods' label (the chart's and config/manager's).
const OPERATOR_PODS: &str = "app.kubernetes.io/component=operator";

/// The API server's host and port, as the admin kubeconfig names it (loopback): with
/// hostNetwork, the operator's in-cluster client reaches it there.
fn api_server() -> (String, u16) {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    let server = kubeconfig
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.server.clone())
        .expect("a cluster with a server in the kubeconfig");
    let uri: http::Uri = server.parse().expect("server URL");
    let host = uri.host().expect("server host").to_string();
    (host, uri.port_u16().unwrap_or(443))
}

/// A TCP port free on this machine (the node) now: the operator binds it in the host's
/// network.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// What the real node's script says an operator needs there (pull policy, host process).
fn node_settings() -> BTreeMap<String, String> {
    let env = support::real_node_env("operator.env");
    assert!(
        env.contains_key("NODEOPS_HOST_PROCESS"),
        "no operator.env of the real node: start the cluster with REAL_NODES=1 (the default)"
    );
    env
}

/// The state of the namespace's pods and the operator's last log lines, for a failure.
async fn pods_report(client: &Client, namespace: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut out = String::new();
    for pod in pods
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let name = pod.name_any();
        let status = serde_json::to_string_pretty(&pod.status).unwrap_or_default();
        let log = pods
            .logs(
                &name,
                &LogParams {
                    tail_lines: Some(30),
                    ..LogParams::default()
                },
            )
            .await
            .unwrap_or_else(|e| format!("(no log: {e})"));
        out.push_str(&format!(
            "--- pod {name} on {:?}\nstatus: {status}\nlog:\n{log}\n",
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
        ));
    }
    out
}

/// What is wrong with the first operator pod of the namespace that cannot come up: an image
/// the node does not have, a container that keeps crashing. Pending while there is none.
async fn broken_operator_pod(client: &Client, namespace: &str) -> String {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut stream = watcher(pods, watcher::Config::default().labels(OPERATOR_PODS))
        .applied_objects()
        .boxed();
    while let Some(Ok(pod)) = stream.next().await {
        let statuses = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten());
        for cs in statuses {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            let reason = waiting
                .and_then(|w| w.reason.as_deref())
                .unwrap_or_default();
            let bad_image = matches!(
                reason,
                "ErrImageNeverPull" | "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            );
            if bad_image || cs.restart_count >= 2 {
                return format!(
                    "pod {} {reason}, restarts {}",
                    pod.name_any(),
                    cs.restart_count
                );
            }
        }
    }
    futures::future::pending().await
}

/// Waits until the Deployment is Available with one ready replica (as `kubectl wait
/// --for=condition=Available`); when its pod cannot come up or on a timeout, panics with
/// its pods' states and logs.
async fn wait_available(client: &Client, namespace: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let available = await_condition(api, name, |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            s.ready_replicas == Some(1)
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Available" && c.status == "True")
        })
    });
    let outcome = tokio::select! {
        done = tokio::time::timeout(START, available) => match done {
            Ok(Ok(_)) => return,
            other => format!("{other:?}"),
        },
        broken = broken_operator_pod(client, namespace) => broken,
    };
    panic!(
        "deployment {namespace}/{name} not Available ({outcome}):\n{}",
        pods_report(client, namespace).await
    );
}

/// The one operator pod of the namespace, running on the real node in the host's network.
async fn operator_pod(client: &Client, namespace: &str, node: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(OPERATOR_PODS))
        .await
        .expect("list operator pods")
        .items;
    assert_eq!(list.len(), 1, "one operator pod expected: {list:#?}");
    let pod = list.into_iter().next().expect("pod");
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some(node), "{pod:#?}");
    assert_eq!(spec.host_network, Some(true));
    pod
}

/// The pod's operator runs on this machine (the node) as the image's non-root user: its
/// process, found by the pod name in its environment, has uid 65532.
fn assert_runs_on_this_machine_as_nonroot(pod: &str) {
    let process = support::host_processes()
        .into_iter()
        .find(|p| {
            p.argv.first().map(String::as_str) == Some("/nodeops")
                && p.env.get("POD_NAME").map(String::as_str) == Some(pod)
        })
        .unwrap_or_else(|| panic!("no /nodeops process of pod {pod} on this machine"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.pid))
        .expect("the operator's /proc status");
    let uids: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line")
        .split_whitespace()
        .collect();
    assert_eq!(uids, ["65532"; 4], "the operator's uids");
}

/// Waits until the Lease names the pod as its holder: it leads.
async fn assert_leads(client: &Client, namespace: &str, lease: &str, pod: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &leases,
        lease,
        START,
        &format!("Lease {lease} held by {pod}"),
        |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(pod),
    )
    .await;
}

/// Runs an AsyncCommand on the node and returns its one node's output, which must be a
/// success.
async fn run_on(ns: &TestNamespace, name: &str, node: &str, spec: Value) -> String {
    let api: Api<AsyncCommand> = ns.api();
    let mut spec = spec;
    spec["nodeNames"] = json!([node]);
    apply(&api, manifest::<AsyncCommand>(name, spec)).await;
    let done = wait_for(&api, name, FINISH, "every node final", finished).await;
    let status = done.status.as_ref().expect("status");
    let entry = status
        .cmd_jobs
        .iter()
        .find(|e| e.node_name == node)
        .unwrap_or_else(|| panic!("no entry for {node}: {status:#?}"));
    assert_eq!(
        (entry.phase, entry.exit_code, entry.reason.as_deref()),
        (NodePhase::Succeeded, Some(0), Some("Completed")),
        "{entry:#?}"
    );
    entry.output.clone().expect("output")
}

/// The operator pod's log (JSON lines) says it started as this version watching only
/// `ns`, and reconciled the AsyncCommand `name` there and nothing of another namespace.
async fn assert_log_shows_reconcile(
    client: &Client,
    pod_ns: &str,
    pod: &str,
    ns: &str,
    name: &str,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), pod_ns);
    let log = pods
        .logs(pod, &LogParams::default())
        .await
        .expect("the operator pod's log");
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(
            |l| l["message"] == "starting nodeops" && l["version"] == env!("CARGO_PKG_VERSION")
        ),
        "no start line of version {} in the pod's log:\n{log}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "caches ready" && l["namespace"] == format!("Some({ns:?})")),
        "the pod's log has no start watching only {ns}:\n{log}"
    );
    let namespaced = [
        "AsyncCommand",
        "Command",
        "Invoker",
        "AgentInvocation",
        "AgentUpgradeJob",
    ];
    let elsewhere: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "reconciled")
        .filter(|l| namespaced.iter().any(|k| l["span"]["kind"] == *k))
        .filter(|l| l["span"]["namespace"] != ns)
        .collect();
    assert!(
        elsewhere.is_empty(),
        "reconciles outside {ns}: {elsewhere:#?}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "reconciled"
            && l["ok"] == true
            && l["span"]["kind"] == "AsyncCommand"
            && l["span"]["namespace"] == ns
            && l["span"]["object"] == name),
        "no reconcile of AsyncCommand {ns}/{name} in the pod's log:\n{log}"
    );
}

/// Waits until every pod of the namespace is gone (deleted objects, not a pause).
async fn assert_pods_gone(client: &Client, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in pods.list(&ListParams::default()).await.expect("pods").items {
        let (name, uid) = (pod.name_any(), pod.uid().expect("uid"));
        let gone = await_condition(pods.clone(), &name, conditions::is_deleted(&uid));
        tokio::time::timeout(FINISH, gone)
            .await
            .unwrap_or_else(|_| panic!("pod {name} still there"))
            .expect("watch pod");
    }
    let left = pods.list(&ListParams::default()).await.expect("pods").items;
    assert!(left.is_empty(), "pods left in {namespace}: {left:#?}");
}

/// `uname ARG` on this machine, which is the node.
fn host_uname(arg: &str) -> String {
    let out = std::process::Command::new("uname")
        .arg(arg)
        .output()
        .expect("uname on the host");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_chart_runs_the_operator_on_the_real_node() {
    let _node = support::real_node_shared().await;
    let ns = TestNamespace::new("inc-helm").await;
    let cmds = TestNamespace::new("inc-helm-cmds").await;
    let client = ns.client.clone();
    install_crds(&client).await;
    let node = support::ready_real_node(&client).await;
    let settings = node_settings();
    let images = support::real_node_images();
    let (api_host, api_port) = api_server();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");

    // The operator and runner images are the chart's defaults, nodeops.local/nodeops(-exec)
    // at v<appVersion>, which hack/real-node.sh tags on the node.
    let values = json!({
        "replicaCount": 1,
        "hostNetwork": true,
        "apiServer": {"host": api_host, "port": api_port},
        "nodeSelector": {"type": "real"},
        "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
        "watchNamespace": cmds.name,
        "hostModeNamespaces": [cmds.name],
        "hostProcess": settings["NODEOPS_HOST_PROCESS"],
        "runnerImage": {"pullPolicy": settings["NODEOPS_IMAGE_PULL_POLICY"]},
        "defaultImage": images["TOOLBOX_IMAGE"],
        "logLevel": "info,nodeops=debug,kube=warn",
        "metrics": {"port": port},
        "tests": {"image": images["TOOLBOX_IMAGE"], "address": address},
    });
    let dir = support::repo_root().join("target/in-cluster");
    std::fs::create_dir_all(&dir).expect("target/in-cluster");
    let values_file = dir.join(format!("{}-values.json", ns.name));
    std::fs::write(&values_file, values.to_string()).expect("write values");
    let values_file = values_file.to_string_lossy().into_owned();
    let kubeconfig = kubeconfig_path().to_string_lossy().into_owned();

    let release_name = ns.name.clone();
    let full = format!("{release_name}-nodeops");
    let (mut release, install) = Release::install(&release_name, &ns.name, &["-f", &values_file]);
    assert!(
        install.stdout.contains("STATUS: deployed"),
        "{}",
        install.stdout
    );
    wait_available(&client, &ns.name, &full).await;
    let pod = operator_pod(&client, &ns.name, &node).await;
    let pod_name = pod.name_any();
    let container = &pod.spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(concat!(
            "nodeops.local/nodeops:v",
            env!("CARGO_PKG_VERSION")
        ))
    );
    assert_runs_on_this_machine_as_nonroot(&pod_name);
    assert_leads(&client, &ns.name, &full, &pod_name).await;

    // Host mode on the real node, through the chart's default runner image: the node's own
    // host name.
    let output = run_on(
        &cmds,
        "hostname",
        &node,
        json!({"command": "uname -n", "executionMode": "Host"}),
    )
    .await;
    assert_eq!(output, host_uname("-n"));
    assert_log_shows_reconcile(&client, &ns.name, &pod_name, &cmds.name, "hostname").await;

    // helm test: the test pod finds /readyz "ok" and nodeops' metrics, and is removed.
    let test_pod = format!("{full}-test-readyz");
    let helm_test = [
        "test",
        &release_name,
        "--namespace",
        &ns.name,
        "--kubeconfig",
        &kubeconfig,
        "--timeout",
        "120s",
    ];
    let test = run(support::helm::helm_bin(), &helm_test);
    assert!(
        test.ok,
        "helm test failed:\n{}{}\n{}",
        test.stdout,
        test.stderr,
        pods_report(&client, &ns.name).await
    );
    assert!(
        test.stdout.contains(&format!("TEST SUITE:     {test_pod}"))
            && test
                .stdout
                .lines()
                .any(|l| l.split_whitespace().eq(["Phase:", "Succeeded"])),
        "{}",
        test.stdout
    );
    // ... and fails where nothing answers (a free port nobody listens on).
    let nowhere = format!("tests.address=127.0.0.1:{}", free_port());
    helm(&[
        "upgrade",
        &release_name,
        CHART,
        "--namespace",
        &ns.name,
        "--kubeconfig",
        &kubeconfig,
        "--reuse-values",
        "--set",
        &nowhere,
    ]);
    let failed = run(support::helm::helm_bin(), &helm_test);
    assert!(
        !failed.ok,
        "helm test passed with nothing at the address:\n{}",
        failed.stdout
    );
    // The failed test pod stays for its log.
    let pods: Api<Pod> = ns.api();
    let log = pods
        .logs(&test_pod, &LogParams::default())
        .await
        .expect("the failed test pod's log");
    assert!(log.contains("Connection refused"), "{log}");
    kubectl(&["delete", "pod", "-n", &ns.name, &test_pod, "--wait=true"]);

    // helm uninstall removes the operator and its cluster-scoped RBAC.
    release.uninstall();
    assert_pods_gone(&client, &ns.name).await;
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    assert!(cluster_roles.get_opt(&full).await.expect("get").is_none());
    assert!(bindings.get_opt(&full).await.expect("get").is_none());
    assert!(
        ns.api::<Deployment>()
            .get_opt(&full)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        ns.api::<Service>()
            .get_opt(&format!("{full}-metrics"))
            .await
            .expect("get")
            .is_none()
    );
    let _ = std::fs::remove_file(&values_file);
}

/// The cluster-scoped objects of a kustomize install, deleted when dropped (also after a
/// panic); the namespaced ones go with the test namespace.
struct ClusterScoped {
    name: String,
}

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        let _ = std::process::Command::new(support::kubectl_bin())
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args([
                "delete",
                "--ignore-not-found",
                "clusterrolebinding,clusterrole",
                &self.name,
            ])
            .output();
    }
}

#[tokio::test]
async fn kubectl_apply_k_config_default_runs_the_operator_on_the_real_node() {
    let _node = support::real_node_shared().await;
    let ns = TestNamespace::new("inc-kust").await;
    let cmds = TestNamespace::new("inc-kust-cmds").await;
    let client = ns.client.clone();
    install_crds(&client).await;
    let node = support::ready_real_node(&client).await;
    let settings = node_settings();
    let images = support::real_node_images();
    let (api_host, api_port) = api_server();
    let port = free_port();

    // An overlay of config/default, as docs/install.md suggests for another namespace or
    // registry: the test's namespace (which exists: config/default's Namespace is dropped),
    // a suffix on every name (ClusterRole and ClusterRoleBinding are cluster-wide), the
    // images exactly as built (their content tags), one replica on the real node in its
    // network, and the node's settings. The test operations pin manager.yaml's arguments.
    let suffix = format!("-{}", ns.name);
    let operator_image = &images["OPERATOR_IMAGE"];
    let (operator_repo, operator_tag) = operator_image.rsplit_once(':').expect("image:tag");
    let args = "/spec/template/spec/containers/0/args";
    let patch = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true},
        {"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": "ClusterFirstWithHostNet"},
        {"op": "add", "path": "/spec/template/spec/nodeSelector/type", "value": "real"},
        {"op": "add", "path": "/spec/template/spec/tolerations",
         "value": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]},
        {"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"},
        {"op": "test", "path": format!("{args}/1"), "value": "--log-filter=info,kube=warn"},
        {"op": "replace", "path": format!("{args}/1"), "value": "--log-filter=info,nodeops=debug,kube=warn"},
        {"op": "test", "path": format!("{args}/2"),
         "value": concat!("--runner-image=nodeops.local/nodeops-exec:v", env!("CARGO_PKG_VERSION"))},
        {"op": "replace", "path": format!("{args}/2"), "value": format!("--runner-image={}", images["RUNNER_IMAGE"])},
        {"op": "test", "path": format!("{args}/3"), "value": "--default-image=busybox:1.36"},
        {"op": "replace", "path": format!("{args}/3"), "value": format!("--default-image={}", images["TOOLBOX_IMAGE"])},
        {"op": "test", "path": format!("{args}/7"), "value": "--metrics-addr=0.0.0.0:8080"},
        {"op": "replace", "path": format!("{args}/7"), "value": format!("--metrics-addr=0.0.0.0:{port}")},
        {"op": "add", "path": format!("{args}/-"), "value": format!("--namespace={}", cmds.name)},
        {"op": "add", "path": format!("{args}/-"), "value": format!("--host-process={}", settings["NODEOPS_HOST_PROCESS"])},
        {"op": "add", "path": format!("{args}/-"),
         "value": format!("--image-pull-policy={}", settings["NODEOPS_IMAGE_PULL_POLICY"])},
        {"op": "test", "path": "/spec/template/spec/containers/0/ports/0/containerPort", "value": 8080},
        {"op": "replace", "path": "/spec/template/spec/containers/0/ports/0/containerPort", "value": port},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBERNETES_SERVICE_HOST", "value": api_host}},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBERNETES_SERVICE_PORT", "value": api_port.to_string()}},
    ]);
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": ns.name,
        "nameSuffix": suffix,
        // kustomize takes only relative paths: target/in-cluster/<ns>/ -> config/default.
        "resources": ["../../../config/default"],
        "images": [{"name": "nodeops.local/nodeops", "newName": operator_repo, "newTag": operator_tag}],
        "patches": [
            {"patch": "$patch: delete\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: nodeops-system\n"},
            {"target": {"kind": "Deployment", "name": "nodeops"}, "patch": patch.to_string()},
        ],
    });
    let dir = support::repo_root()
        .join("target/in-cluster")
        .join(&ns.name);
    std::fs::create_dir_all(&dir).expect("overlay dir");
    // JSON is YAML.
    std::fs::write(dir.join("kustomization.yaml"), kustomization.to_string())
        .expect("write overlay");
    let overlay = dir.to_string_lossy().into_owned();

    let name = format!("nodeops{suffix}");
    let _cluster_scoped = ClusterScoped { name: name.clone() };
    // Server-side, as docs/install.md recommends, by the manager that installs the CRDs in
    // the other tests (so applying the same CRDs changes nothing).
    let applied = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "nodeops-tests",
        "-k",
        &overlay,
    ]);
    for object in [
        format!("serviceaccount/{name}"),
        format!("clusterrole.rbac.authorization.k8s.io/{name}"),
        format!("clusterrolebinding.rbac.authorization.k8s.io/{name}"),
        format!("deployment.apps/{name}"),
        format!("service/nodeops-metrics{suffix}"),
    ] {
        assert!(
            applied.contains(&object),
            "{object} missing from:\n{applied}"
        );
    }
    wait_available(&client, &ns.name, &name).await;
    let pod = operator_pod(&client, &ns.name, &node).await;
    let pod_name = pod.name_any();
    assert_eq!(
        pod.spec.as_ref().expect("spec").containers[0]
            .image
            .as_deref(),
        Some(operator_image.as_str())
    );
    assert_runs_on_this_machine_as_nonroot(&pod_name);
    // config/manager's Lease name, in the pod's namespace.
    assert_leads(&client, &ns.name, "nodeops", &pod_name).await;

    // Container mode in the toolbox image: the node's kernel.
    let output = run_on(&cmds, "kernel", &node, json!({"command": "uname -srm"})).await;
    assert_eq!(output, host_uname("-srm"));
    assert_log_shows_reconcile(&client, &ns.name, &pod_name, &cmds.name, "kernel").await;

    // Removing what was applied (not `kubectl delete -k`: that would delete the CRDs every
    // test shares) stops the operator; the cluster-scoped RBAC goes too.
    kubectl(&[
        "delete",
        "-n",
        &ns.name,
        &format!("deployment/{name}"),
        &format!("service/nodeops-metrics{suffix}"),
        "--wait=true",
    ]);
    kubectl(&[
        "delete",
        &format!("clusterrolebinding/{name}"),
        &format!("clusterrole/{name}"),
    ]);
    assert_pods_gone(&client, &ns.name).await;
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    assert!(cluster_roles.get_opt(&name).await.expect("get").is_none());
    assert!(bindings.get_opt(&name).await.expect("get").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
