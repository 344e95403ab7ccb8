//! Installing nodeops: the Helm chart (`charts/nodeops`) lints and renders, carries the
//! generated CRDs and exactly the RBAC of `config/rbac/`, and installs, upgrades and
//! uninstalls on the local control plane; the kustomize tree (`config/default`) renders the
//! same Deployment and passes a server-side dry run. helm is built by `hack/helm.sh` (once,
//! cached); these tests fail, never skip, when it cannot be.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams};
use nodeops::api::NodeAgent;
use nodeops::keys::REAL_NODE_TAINT;
use serde::Deserialize;
use serde_json::{Value, json};
use support::helm::{CHART, Release, helm, helm_bin, run};
use support::{TestNamespace, install_crds, kubeconfig_path, kubectl, repo_root};

const LABELS: [&str; 5] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
];

/// The documents of a YAML stream, empty ones left out.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_file(path: &str) -> Value {
    let text = std::fs::read_to_string(support::repo_root().join(path))
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// `helm template` of the chart as release `release` in `namespace`, with `--set` values.
fn render(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    for s in sets {
        args.extend(["--set", s]);
    }
    let r = helm(&args);
    // Clean: no warnings, apart from helm's about a group-readable kubeconfig (a user's
    // ~/.kube/config, not the chart).
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("WARNING: Kubernetes configuration file is"))
        .collect();
    assert!(
        warnings.is_empty(),
        "helm template {sets:?} warned:\n{}",
        r.stderr
    );
    documents(&r.stdout)
}

/// The one object of `kind` in `docs`.
fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected, found {}", found.len());
    found[0]
}

/// The operator's own ClusterRole (the others are the roles to grant people).
fn operator_role(docs: &[Value]) -> &Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["kind"] == "ClusterRole"
                && d["metadata"]["labels"]["app.kubernetes.io/component"] != "user-role"
        })
        .collect();
    assert_eq!(found.len(), 1, "one operator ClusterRole expected");
    found[0]
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().expect("kind").to_string())
        .collect();
    k.sort();
    k
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").to_string())
        .collect()
}

/// The YAML files of a directory, by name.
fn yaml_files(dir: &str) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect()
}

#[test]
fn chart_lints_and_renders() {
    let lint = helm(&["lint", "--strict", CHART]);
    assert!(lint.stdout.contains("0 chart(s) failed"), "{}", lint.stdout);
    for values in [
        "leaderElection.enabled=false,replicaCount=1",
        "watchNamespace=team-a,hostModeNamespaces={nodeops-agents,ops}",
        "defaultAgent.enabled=false,metrics.service.enabled=false",
        "defaultAgent.enabled=true",
        "hostNetwork=true,apiServer.host=127.0.0.1,apiServer.port=16443,runnerImage.pullPolicy=Never,tests.address=127.0.0.1:9090",
        "defaultAgent.enabled=true,defaultAgent.mode=HostInstaller,defaultAgent.installer.commandRef=install-telescope,defaultAgent.installer.image=registry.example.com/telescope-installer:1,hostModeNamespaces={nodeops-agents}",
    ] {
        helm(&["lint", "--strict", CHART, "--set", values]);
    }

    let chart = yaml_file("charts/nodeops/Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion is the crate's version (the images' default tag)"
    );

    // No NodeAgent unless asked for: its image must exist where the nodes pull from.
    let plain = render("demo", "ops", &[]);
    assert!(plain.iter().all(|d| d["kind"] != "NodeAgent"), "{plain:?}");
    let docs = render("demo", "ops", &["defaultAgent.enabled=true"]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Namespace",
            "NodeAgent",
            "Pod",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    let bare = render(
        "demo",
        "ops",
        &["admissionPolicies.enabled=false,userRoles.enabled=false"],
    );
    assert_eq!(
        kinds(&bare)
            .iter()
            .filter(|k| k.starts_with("ValidatingAdmission"))
            .count(),
        0
    );
    assert_eq!(
        kinds(&bare).iter().filter(|k| *k == "ClusterRole").count(),
        1
    );
    for doc in &docs {
        for label in LABELS {
            assert!(
                doc["metadata"]["labels"][label].is_string(),
                "{} {} has no label {label}",
                doc["kind"],
                doc["metadata"]["name"]
            );
        }
    }

    let deployment = only(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "ops");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "nodeops.local/nodeops:v0.1.0");
    assert_eq!(
        args_of(deployment),
        [
            "--log-format=json",
            "--log-filter=info,kube=warn",
            "--runner-image=nodeops.local/nodeops-exec:v0.1.0",
            "--default-image=busybox:1.36",
            "--leader-election",
            "--leader-election-namespace=$(POD_NAMESPACE)",
            "--leader-election-lease=demo-nodeops",
            "--metrics-addr=0.0.0.0:8080",
        ]
    );
    assert_eq!(
        container["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ])
    );
    assert_eq!(
        container["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
    assert!(container["resources"]["requests"].is_object());
    assert!(container["resources"]["limits"].is_object());
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["serviceAccountName"], "demo-nodeops");

    let service = only(&docs, "Service");
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/port"],
        "8080"
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // The helm test pod: a hook, never selected by the operator's Deployment (its
    // ReplicaSet would adopt it), asking the metrics Service; not in the node's network.
    let test_pod = only(&docs, "Pod");
    assert_eq!(test_pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let selector = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector");
    assert!(
        !selector
            .iter()
            .all(|(k, v)| test_pod["metadata"]["labels"][k] == *v),
        "the Deployment's selector {selector:?} selects the test pod"
    );
    let test_container = &test_pod["spec"]["containers"][0];
    assert_eq!(test_container["image"], "busybox:1.36");
    assert_eq!(
        test_container["env"],
        json!([{"name": "ADDRESS", "value": "demo-nodeops-metrics.ops.svc:8080"}])
    );
    assert_eq!(test_pod["spec"]["securityContext"], pod["securityContext"]);
    assert_eq!(
        test_container["securityContext"],
        container["securityContext"]
    );
    assert_eq!(test_pod["spec"]["nodeSelector"], pod["nodeSelector"]);
    assert!(pod["hostNetwork"].is_null() && test_pod["spec"]["hostNetwork"].is_null());

    let agent = only(&docs, "NodeAgent");
    assert_eq!(agent["metadata"]["name"], "telescope");
    assert_eq!(
        agent["spec"],
        json!({"namespace": "nodeops-agents", "mode": "DaemonSet",
               "image": "nodeops.local/sample-agent",
               "basicVersion": "1.0.0", "advanceVersion": "1.1.0", "readyTimeoutSeconds": 300})
    );
    assert_eq!(
        agent["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(
        only(&docs, "Namespace")["metadata"]["name"],
        "nodeops-agents"
    );

    // Values become arguments.
    let docs = render(
        "demo",
        "ops",
        &[
            "watchNamespace=team-a",
            "hostModeNamespaces={nodeops-agents,ops}",
            "logFormat=text",
            "logLevel=debug",
            "runnerImage.tag=v9",
            "hostProcess=kubelet",
            "metrics.port=9090",
        ],
    );
    let args = args_of(only(&docs, "Deployment"));
    for want in [
        "--namespace=team-a",
        "--host-mode-namespaces=nodeops-agents,ops",
        "--log-format=text",
        "--log-filter=debug",
        "--runner-image=nodeops.local/nodeops-exec:v9",
        "--host-process=kubelet",
        "--metrics-addr=0.0.0.0:9090",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--image-pull-policy")),
        "{args:?}"
    );

    // In the node's network, against an API server of its own address, pulling nothing:
    // the operator on the local cluster's real node (tests/in_cluster.rs).
    let docs = render(
        "demo",
        "ops",
        &[
            "hostNetwork=true",
            "apiServer.host=127.0.0.1",
            "apiServer.port=16443",
            "runnerImage.pullPolicy=Never",
            "tests.image=registry.example.com/toolbox:1",
            "tests.address=127.0.0.1:9090",
            "nodeSelector.type=real",
            &format!("tolerations[0].key={REAL_NODE_TAINT},tolerations[0].operator=Exists"),
        ],
    );
    let deployment = only(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(
        pod["tolerations"],
        json!([{"key": REAL_NODE_TAINT, "operator": "Exists"}])
    );
    assert_eq!(
        pod["containers"][0]["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": "16443"},
        ])
    );
    assert!(
        args_of(deployment)
            .iter()
            .any(|a| a == "--image-pull-policy=Never")
    );
    let test_pod = &only(&docs, "Pod")["spec"];
    assert_eq!(test_pod["hostNetwork"], true);
    assert_eq!(test_pod["nodeSelector"], pod["nodeSelector"]);
    assert_eq!(test_pod["tolerations"], pod["tolerations"]);
    assert_eq!(
        test_pod["containers"][0]["image"],
        "registry.example.com/toolbox:1"
    );
    assert_eq!(
        test_pod["containers"][0]["env"],
        json!([{"name": "ADDRESS", "value": "127.0.0.1:9090"}])
    );
    // The port defaults to 443 (the API server's in-cluster port).
    let docs = render("demo", "ops", &["apiServer.host=10.0.0.1"]);
    let env = &only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env[3],
        json!({"name": "KUBERNETES_SERVICE_PORT", "value": "443"})
    );
    // No metrics Service and no address: nothing for a test pod to ask.
    let docs = render("demo", "ops", &["metrics.service.enabled=false"]);
    assert!(docs.iter().all(|d| d["kind"] != "Pod"), "{docs:?}");

    // Without leader election: no Lease, no Role; one replica.
    let docs = render(
        "demo",
        "ops",
        &[
            "leaderElection.enabled=false",
            "replicaCount=1",
            "defaultAgent.enabled=false",
            "admissionPolicies.enabled=false",
            "userRoles.enabled=false",
        ],
    );
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Pod",
            "Service",
            "ServiceAccount"
        ]
    );
    assert!(
        !args_of(only(&docs, "Deployment"))
            .iter()
            .any(|a| a.starts_with("--leader-election"))
    );

    // The agent's namespace is not created twice when it is the release's.
    let docs = render("demo", "nodeops-agents", &["defaultAgent.enabled=true"]);
    assert!(docs.iter().any(|d| d["kind"] == "NodeAgent"));
    assert!(docs.iter().all(|d| d["kind"] != "Namespace"));

    // Values that cannot work are refused at render time.
    for (sets, why) in [
        (
            "leaderElection.enabled=false",
            "replicaCount > 1 needs leaderElection.enabled",
        ),
        (
            "defaultAgent.enabled=true,defaultAgent.mode=HostInstaller",
            "defaultAgent.installer ({commandRef, image}) is required",
        ),
        (
            "defaultAgent.enabled=true,defaultAgent.mode=HostInstaller,defaultAgent.installer.commandRef=i,defaultAgent.installer.image=i",
            "to hostModeNamespaces",
        ),
        // values.schema.json: a wrong value, a wrong type, a misspelt key, top-level or
        // nested, are refused before anything renders.
        (
            "logFormat=xml",
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        (
            "runnerImage.pullPolicy=Sometimes",
            "at '/runnerImage/pullPolicy': value must be one of",
        ),
        (
            "replicaCount=two",
            "at '/replicaCount': got string, want integer",
        ),
        (
            "hostNetwork=yes please",
            "at '/hostNetwork': got string, want boolean",
        ),
        (
            "replicaCont=2",
            "additional properties 'replicaCont' not allowed",
        ),
        (
            "metrics.service.prot=80",
            "additional properties 'prot' not allowed",
        ),
        (
            "defaultAgent.readyTimeoutSeconds=5",
            "at '/defaultAgent/readyTimeoutSeconds': minimum",
        ),
        ("apiServer.port=6443", "apiServer.port needs apiServer.host"),
    ] {
        let r = run(helm_bin(), &["template", "demo", CHART, "--set", sets]);
        assert!(!r.ok, "helm template --set {sets} should fail");
        assert!(r.stderr.contains(why), "{sets}: {}", r.stderr);
    }
}

/// `helm package` makes an archive that installs the same chart, schema included.
#[test]
fn the_packaged_chart_renders_and_keeps_its_schema() {
    let out = repo_root().join("target/helm/package");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("package dir");
    let dir = out.to_str().expect("utf-8");
    helm(&["package", CHART, "--destination", dir]);
    let archive = out.join("nodeops-0.1.0.tgz");
    assert!(
        archive.is_file(),
        "helm package wrote no {}",
        archive.display()
    );
    let archive = archive.to_str().expect("utf-8");
    let from_dir = helm(&["template", "demo", CHART]).stdout;
    let from_archive = helm(&["template", "demo", archive]).stdout;
    assert_eq!(
        from_archive, from_dir,
        "the archive renders what the directory does"
    );
    let r = run(
        helm_bin(),
        &["template", "demo", archive, "--set", "replicaCont=2"],
    );
    assert!(
        !r.ok
            && r.stderr
                .contains("additional properties 'replicaCont' not allowed"),
        "the archive's schema refuses unknown keys: {}",
        r.stderr
    );
}

#[test]
fn chart_and_kustomize_crds_are_the_generated_crds() {
    let generated = yaml_files("crds");
    assert!(!generated.is_empty(), "crds/ is empty");
    for copy in ["charts/nodeops/crds", "config/crd/bases"] {
        let files = yaml_files(copy);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            generated.keys().collect::<Vec<_>>(),
            "{copy}/ holds other files than crds/: run `make crds`"
        );
        for (name, bytes) in &generated {
            assert!(
                files[name] == *bytes,
                "{copy}/{name} differs from crds/{name}: run `make crds`"
            );
        }
    }
    let listed: Vec<String> = yaml_file("config/crd/kustomization.yaml")["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("resource").to_string())
        .collect();
    let want: Vec<String> = generated.keys().map(|n| format!("bases/{n}")).collect();
    assert_eq!(
        listed, want,
        "config/crd/kustomization.yaml must list every CRD of crds/"
    );
}

/// The chart's admission policies and user roles are config/policy's, under the release's
/// names.
#[test]
fn chart_policies_are_config_policies() {
    let docs = render("demo", "ops", &[]);
    let strip = |v: &Value| {
        let text = serde_json::to_string(v).expect("json");
        let text = text.replace("demo-nodeops-", "nodeops-");
        let mut v: Value = serde_json::from_str(&text).expect("json");
        v["metadata"] = json!({"name": v["metadata"]["name"]});
        v
    };
    let mut config = documents(
        &std::fs::read_to_string(
            support::repo_root().join("config/policy/admission_policies.yaml"),
        )
        .expect("read"),
    );
    config.extend(documents(
        &std::fs::read_to_string(support::repo_root().join("config/policy/user_roles.yaml"))
            .expect("read"),
    ));
    for want in &config {
        let want = strip(want);
        let got = docs
            .iter()
            .map(strip)
            .find(|d| {
                d["kind"] == want["kind"] && d["metadata"]["name"] == want["metadata"]["name"]
            })
            .unwrap_or_else(|| {
                panic!(
                    "the chart has no {} {}",
                    want["kind"], want["metadata"]["name"]
                )
            });
        assert_eq!(
            got, want,
            "the chart's {} differs from config/policy's",
            want["metadata"]["name"]
        );
    }
}

#[test]
fn chart_rbac_is_config_rbac() {
    let docs = render("demo", "ops", &[]);
    let cluster_role = operator_role(&docs);
    assert_eq!(
        cluster_role["rules"],
        yaml_file("config/rbac/cluster_role.yaml")["rules"],
        "the chart's ClusterRole must grant exactly config/rbac/cluster_role.yaml's rules"
    );
    let role = only(&docs, "Role");
    assert_eq!(
        role["rules"],
        yaml_file("config/rbac/leader_election_role.yaml")["rules"],
        "the chart's Role must grant exactly config/rbac/leader_election_role.yaml's rules"
    );
    assert_eq!(role["metadata"]["namespace"], "ops");

    let account = only(&docs, "ServiceAccount");
    let subject = json!([{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "ops"}]);
    let binding = only(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    assert_eq!(binding["subjects"], subject);
    let binding = only(&docs, "RoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"], subject);
}

#[tokio::test]
async fn chart_installs_upgrades_and_uninstalls() {
    let ns = TestNamespace::new("chart").await;
    let client = ns.client.clone();
    // The chart's pods must pass the restricted Pod Security Standard.
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            }}})),
        )
        .await
        .expect("label namespace");
    // The CRDs as the other tests install them; helm skips crds/ that exist.
    install_crds(&client).await;

    let release_name = ns.name.clone();
    let agent = format!("{}-agent", ns.name);
    let kubeconfig = kubeconfig_path().to_string_lossy().into_owned();
    let agent_name = format!("defaultAgent.name={agent}");
    let agent_ns = format!("defaultAgent.namespace={}", ns.name);
    let (mut release, install) = Release::install(
        &release_name,
        &ns.name,
        &[
            // kwok marks the operator's pods Running and Ready.
            "--wait",
            "--timeout",
            "120s",
            "--set",
            "defaultAgent.enabled=true",
            "--set",
            &agent_name,
            "--set",
            &agent_ns,
            "--set",
            "defaultAgent.keepOnUninstall=false",
        ],
    );
    assert!(
        !install.stderr.contains("PodSecurity"),
        "the operator's pods violate the restricted Pod Security Standard:\n{}",
        install.stderr
    );
    assert!(
        install.stdout.contains("STATUS: deployed"),
        "{}",
        install.stdout
    );

    let full = format!("{release_name}-nodeops");
    // `helm install --wait` returns once replicas minus maxUnavailable are ready: wait for
    // both from the Deployment's watch.
    let deployment = support::wait_for(
        &ns.api::<Deployment>(),
        &full,
        std::time::Duration::from_secs(120),
        "both replicas ready",
        |d: &Deployment| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2),
    )
    .await;
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
    ns.api::<ServiceAccount>()
        .get(&full)
        .await
        .expect("ServiceAccount");
    ns.api::<Service>()
        .get(&format!("{full}-metrics"))
        .await
        .expect("metrics Service");
    let role = ns
        .api::<Role>()
        .get(&format!("{full}-leader-election"))
        .await
        .expect("leader-election Role");
    assert_eq!(
        serde_json::to_value(&role.rules).expect("rules"),
        yaml_file("config/rbac/leader_election_role.yaml")["rules"]
    );
    ns.api::<RoleBinding>()
        .get(&format!("{full}-leader-election"))
        .await
        .expect("leader-election RoleBinding");
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let cluster_role = cluster_roles.get(&full).await.expect("ClusterRole");
    assert_eq!(
        serde_json::to_value(&cluster_role.rules).expect("rules"),
        yaml_file("config/rbac/cluster_role.yaml")["rules"]
    );
    let cluster_role_bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    cluster_role_bindings
        .get(&full)
        .await
        .expect("ClusterRoleBinding");
    let agents: Api<NodeAgent> = Api::all(client.clone());
    let node_agent = agents.get(&agent).await.expect("the default NodeAgent");
    assert_eq!(node_agent.spec.namespace, ns.name);

    // An upgrade changes the Deployment in place.
    let upgrade = helm(&[
        "upgrade",
        &release_name,
        CHART,
        "--namespace",
        &ns.name,
        "--kubeconfig",
        &kubeconfig,
        "--reuse-values",
        "--wait",
        "--timeout",
        "120s",
        "--set",
        "replicaCount=3",
        "--set",
        "logLevel=debug",
    ]);
    assert!(upgrade.stdout.contains("REVISION: 2"), "{}", upgrade.stdout);
    // `--wait` returns while the rollout may still surge (4 ready of 3 was seen in CI):
    // wait, from the Deployment's watch, until the rollout has settled at 3.
    let deployment = support::wait_for(
        &ns.api::<Deployment>(),
        &full,
        std::time::Duration::from_secs(120),
        "the upgrade rolled out to 3 ready replicas",
        |d: &Deployment| {
            d.status.as_ref().is_some_and(|s| {
                s.observed_generation == d.metadata.generation
                    && s.replicas == Some(3)
                    && s.updated_replicas == Some(3)
                    && s.ready_replicas == Some(3)
            })
        },
    )
    .await;
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let args = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(args.contains(&"--log-filter=debug".to_string()), "{args:?}");

    // Uninstall removes everything, cluster-scoped objects included; the CRDs stay.
    release.uninstall();
    assert!(cluster_roles.get_opt(&full).await.expect("get").is_none());
    assert!(
        cluster_role_bindings
            .get_opt(&full)
            .await
            .expect("get")
            .is_none()
    );
    assert!(agents.get_opt(&agent).await.expect("get").is_none());
    assert!(
        ns.api::<Deployment>()
            .get_opt(&full)
            .await
            .expect("get")
            .is_none()
    );
}

#[test]
fn kustomize_renders_the_chart_defaults_and_applies() {
    let docs = documents(&kubectl(&["kustomize", "config/default"]));
    let mut want = vec!["CustomResourceDefinition"; yaml_files("crds").len()];
    want.extend(["ClusterRole"; 5]);
    want.extend(["ValidatingAdmissionPolicy"; 5]);
    want.extend(["ValidatingAdmissionPolicyBinding"; 5]);
    want.extend([
        "ClusterRoleBinding",
        "Deployment",
        "Namespace",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]);
    want.sort();
    assert_eq!(kinds(&docs), want);
    assert_eq!(
        operator_role(&docs)["rules"],
        yaml_file("config/rbac/cluster_role.yaml")["rules"]
    );

    // The kustomize Deployment is the chart's with its defaults, released as "nodeops" in
    // nodeops-system (where names come out as config/rbac's).
    let kustomized = only(&docs, "Deployment");
    let charted = render("nodeops", "nodeops-system", &[]);
    let charted = only(&charted, "Deployment");
    let (k, c) = (
        &kustomized["spec"]["template"]["spec"],
        &charted["spec"]["template"]["spec"],
    );
    assert_eq!(kustomized["metadata"]["namespace"], "nodeops-system");
    assert_eq!(kustomized["spec"]["replicas"], charted["spec"]["replicas"]);
    for field in [
        "containers",
        "securityContext",
        "serviceAccountName",
        "nodeSelector",
        "terminationGracePeriodSeconds",
    ] {
        assert_eq!(
            k[field], c[field],
            "config/manager/manager.yaml's {field} differs from the chart's defaults"
        );
    }
    assert_eq!(
        k["serviceAccountName"],
        only(&docs, "ServiceAccount")["metadata"]["name"]
    );

    let applied = server_dry_run("config/default");
    assert!(
        applied.contains("deployment.apps/nodeops serverside-applied (server dry run)"),
        "{applied}"
    );
}

/// `kubectl apply --server-side --dry-run=server -k dir`: the API server validates every
/// object and changes nothing.
///
/// A dry-run Namespace is not created, so the namespaced objects need nodeops-system to
/// exist first: applied here, not left to whichever test of this binary runs first (CI
/// failed once on that order).
fn server_dry_run(dir: &str) -> String {
    kubectl(&[
        "apply",
        "--server-side",
        "--field-manager",
        "nodeops-tests",
        "-f",
        "config/rbac/namespace.yaml",
    ]);
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "nodeops-tests",
        "--dry-run=server",
        "-k",
        dir,
    ])
}

/// The overlays change what they say and nothing else, and the API server accepts them.
#[test]
fn kustomize_overlays_change_only_what_they_say() {
    let base = documents(&kubectl(&["kustomize", "config/default"]));
    let base_deploy = only(&base, "Deployment").clone();

    let dev = documents(&kubectl(&["kustomize", "config/overlays/dev"]));
    assert_eq!(kinds(&dev), kinds(&base));
    let mut want = base_deploy.clone();
    want["spec"]["replicas"] = json!(1);
    let args = &mut want["spec"]["template"]["spec"]["containers"][0]["args"];
    args[0] = json!("--log-format=text");
    args[1] = json!("--log-filter=info,nodeops=debug,kube=warn");
    assert_eq!(only(&dev, "Deployment"), &want);

    let host = documents(&kubectl(&["kustomize", "config/overlays/host-mode"]));
    let mut want_kinds = kinds(&base);
    want_kinds.push("Namespace".into());
    want_kinds.sort();
    assert_eq!(kinds(&host), want_kinds);
    let agents_ns = host
        .iter()
        .find(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == "nodeops-agents")
        .expect("the agents' namespace");
    assert_eq!(
        agents_ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let mut want = base_deploy;
    want["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": "NODEOPS_HOST_MODE_NAMESPACES", "value": "nodeops-agents"}));
    assert_eq!(only(&host, "Deployment"), &want);

    for overlay in ["config/overlays/dev", "config/overlays/host-mode"] {
        let applied = server_dry_run(overlay);
        assert!(
            applied.contains("deployment.apps/nodeops"),
            "{overlay}: {applied}"
        );
    }
}

/// `kubectl apply -k config/default`, for real and client-side as the README says it: every
/// object is created or configured, and the operator's Deployment and Service exist. They
/// are removed afterwards (the simulated nodes would only pretend to run the image); the
/// namespace, RBAC and CRDs stay, as the other tests install them too.
#[tokio::test]
async fn kubectl_apply_k_config_default_works() {
    let client = support::client().await;
    // The CRDs as the other tests install them (a concurrent test may be applying them).
    install_crds(&client).await;
    let applied = kubectl(&["apply", "-k", "config/default"]);
    for object in [
        "namespace/nodeops-system",
        "serviceaccount/nodeops",
        "clusterrole.rbac.authorization.k8s.io/nodeops",
        "clusterrolebinding.rbac.authorization.k8s.io/nodeops",
        "deployment.apps/nodeops",
        "service/nodeops-metrics",
        "customresourcedefinition.apiextensions.k8s.io/asynccommands.nodeops.io",
    ] {
        assert!(
            applied.contains(object),
            "{object} missing from:\n{applied}"
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "nodeops-system");
    let d = deployments.get("nodeops").await.expect("the Deployment");
    assert_eq!(d.spec.expect("spec").replicas, Some(2));
    kubectl(&[
        "delete",
        "-n",
        "nodeops-system",
        "deployment/nodeops",
        "service/nodeops-metrics",
        "--wait=false",
    ]);
}
