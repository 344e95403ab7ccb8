//! Commands on the real node (kubelet + containerd, started by hack/real-node.sh beside the
//! simulated ones): what only a real kubelet exercises. The runner's report through the real
//! termination-message path, the init container that copies the runner in Container mode,
//! the process-group kill on the host, Host mode as root and as another user, parameters as
//! data, and the true reason of each real failure. Host-side facts (files, processes) are
//! read on this machine, which is the node.
//!
//! The tests share one node with a small pod capacity: each holds it shared
//! (`support::real_node_shared`, several at once, other test binaries' too), the
//! pod-capacity test holds it alone (`support::real_node_alone`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use nodeops::api::Command;
use nodeops::api::async_command::{AsyncCommand, CmdJob, NodePhase};
use nodeops::api::invoker::Invoker;
use nodeops::keys::sim;
use serde_json::{Value, json};
use support::{Operator, TestNamespace, apply, finished, install_crds, manifest, wait_for};

const FINISH: Duration = Duration::from_secs(120);

/// An operator for `ns` with the flags the real node needs (its images, how to enter the
/// host), Host mode allowed in `ns`.
fn operator(ns: &TestNamespace) -> Operator {
    Operator::start(&ns.name, &["--host-mode-namespaces", &ns.name])
}

async fn run(ns: &TestNamespace, name: &str, spec: Value) -> AsyncCommand {
    let api: Api<AsyncCommand> = ns.api();
    apply(&api, manifest::<AsyncCommand>(name, spec)).await;
    wait_for(&api, name, FINISH, "every node final", finished).await
}

fn entry<'a>(c: &'a AsyncCommand, node: &str) -> &'a CmdJob {
    c.status
        .as_ref()
        .expect("status")
        .cmd_jobs
        .iter()
        .find(|e| e.node_name == node)
        .unwrap_or_else(|| panic!("no entry for {node} in {:#?}", c.status))
}

async fn command(ns: &TestNamespace, name: &str, spec: Value) {
    let api: Api<Command> = ns.api();
    apply(&api, manifest::<Command>(name, spec)).await;
}

/// A directory on the host (this machine) for one test.
fn host_dir(ns: &TestNamespace) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nodeops-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("host dir");
    dir
}

/// Host processes whose command line is exactly `argv`.
fn host_processes(argv: &[&str]) -> Vec<u32> {
    support::host_processes()
        .into_iter()
        .filter(|p| p.argv == argv)
        .map(|p| p.pid)
        .collect()
}

#[tokio::test]
async fn container_mode_reports_real_output_exactly() {
    let _shared = support::real_node_shared().await;
    let ns = TestNamespace::new("real-output").await;
    install_crds(&ns.client).await;
    let node = support::ready_real_node(&ns.client).await;
    let _op = operator(&ns);

    let done = run(
        &ns,
        "uname",
        json!({"command": "uname -srm", "nodeNames": [node]}),
    )
    .await;
    let e = entry(&done, &node);
    let host = std::process::Command::new("uname")
        .arg("-srm")
        .output()
        .expect("uname on the host");
    assert_eq!(
        (e.phase, e.exit_code, e.reason.as_deref()),
        (NodePhase::Succeeded, Some(0), Some("Completed"))
    );
    assert_eq!(
        e.output.as_deref(),
        Some(String::from_utf8_lossy(&host.stdout).as_ref()),
        "the container sees the node's kernel"
    );

    // Multi-byte UTF-8, both quotes, a tab, a carriage return and a bell, through the runner,
    // the termination message, the Pod status and the operator.
    command(
        &ns,
        "bytes",
        json!({"content": "printf '%s\\n' \"héllo ✓ — \\\"dq\\\" 'sq'\"; printf 'tab\\tcr\\rbell\\a\\n'"}),
    )
    .await;
    let done = run(
        &ns,
        "bytes",
        json!({"commandRef": "bytes", "nodeNames": [node]}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(e.phase, NodePhase::Succeeded, "{e:#?}");
    assert_eq!(
        e.output.as_deref(),
        Some("héllo ✓ — \"dq\" 'sq'\ntab\tcr\rbell\u{7}\n")
    );
    assert!(!e.output_truncated);

    // Characters YAML refuses raw (DEL, C1 controls, U+FFFE; the API server reads apply
    // patches as YAML), escapes and 4-byte UTF-8, more than status holds: byte for byte
    // through the real termination message into status, and the message as full as the
    // kubelet allows however much of it JSON must escape.
    command(
        &ns,
        "hostile",
        json!({"content": "i=0; while [ $i -lt 2000 ]; do printf 'say \"hi\" \\\\srv\\\\share \\001\\002\\033\\177\\302\\205\\302\\233\\357\\277\\276 \\360\\235\\204\\236\\360\\237\\230\\200 \\342\\200\\250 \\342\\200\\251\\n'; i=$((i+1)); done"}),
    )
    .await;
    let done = run(
        &ns,
        "hostile",
        json!({"commandRef": "hostile", "nodeNames": [node]}),
    )
    .await;
    let e = entry(&done, &node);
    let whole =
        "say \"hi\" \\srv\\share \u{1}\u{2}\u{1b}\u{7f}\u{85}\u{9b}\u{fffe} 𝄞😀 \u{2028} \u{2029}\n".repeat(2000);
    assert_eq!(e.phase, NodePhase::Succeeded, "{e:#?}");
    let (head, tail) = (
        e.output_head.as_deref().expect("the output's beginning"),
        e.output.as_deref().expect("the output's end"),
    );
    assert!(whole.starts_with(head), "head changed on the way: {head:?}");
    assert!(whole.ends_with(tail), "tail changed on the way: {tail:?}");
    assert!(
        tail.contains("\u{7f}\u{85}\u{9b}\u{fffe} 𝄞😀 \u{2028} \u{2029}\n"),
        "{tail:?}"
    );
    assert_eq!(
        head.len() as i64 + e.output_bytes_dropped.expect("dropped") + tail.len() as i64,
        whole.len() as i64,
        "beginning, dropped and end add up to the whole output"
    );
    let pods: Api<Pod> = ns.api();
    let uid = done.metadata.uid.clone().expect("uid");
    let message = pods
        .list(&ListParams::default().labels(&format!("{}={uid}", nodeops::keys::OWNER_UID_LABEL)))
        .await
        .expect("the run's Pods")
        .items
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .expect("a termination message");
    assert!(
        message.len() > nodeops::exec::TERMINATION_MESSAGE_LIMIT - 6
            && message.len() <= nodeops::exec::TERMINATION_MESSAGE_LIMIT,
        "the runner filled the termination message: {} bytes",
        message.len()
    );

    let done = run(
        &ns,
        "exit",
        json!({"command": "false", "nodeNames": [node]}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.exit_code, e.reason.as_deref()),
        (NodePhase::Failed, Some(1), Some("ExitCode")),
        "{e:#?}"
    );

    // More output than status holds: its beginning and its end, the bytes between them
    // counted; all of it from the Pod with `nodeops logs`.
    command(&ns, "long", json!({"content": "seq 1 50000"})).await;
    let done = run(
        &ns,
        "long",
        json!({"commandRef": "long", "nodeNames": [node]}),
    )
    .await;
    let e = entry(&done, &node);
    let out = e.output.as_deref().expect("output");
    let whole: String = (1..=50000).map(|i| format!("{i}\n")).collect();
    assert_eq!(e.phase, NodePhase::Succeeded, "{e:#?}");
    assert!(e.output_truncated, "{e:#?}");
    assert!(out.ends_with("49999\n50000\n"), "{out:?}");
    assert!(out.len() <= 2048, "{}", out.len());
    let head = e.output_head.as_deref().expect("the output's beginning");
    assert!(head.starts_with("1\n2\n3\n"), "{head:?}");
    assert!(whole.starts_with(head) && whole.ends_with(out));
    assert_eq!(
        head.len() as i64 + e.output_bytes_dropped.expect("dropped") + out.len() as i64,
        whole.len() as i64,
        "beginning, dropped and end add up to the whole output"
    );
    let nodeops_logs = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_nodeops"))
            .args([
                "logs",
                "asynccommand",
                "long",
                "--node",
                &node,
                "-n",
                &ns.name,
            ])
            .env("KUBECONFIG", support::kubeconfig_path())
            .output()
            .expect("nodeops logs")
    };
    let logs = nodeops_logs();
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let printed = String::from_utf8_lossy(&logs.stdout);
    assert!(
        printed == whole,
        "nodeops logs prints the whole output ({} bytes, want {}; first lines {:?}, last lines {:?})",
        logs.stdout.len(),
        whole.len(),
        printed.lines().take(3).collect::<Vec<_>>(),
        printed.lines().rev().take(3).collect::<Vec<_>>()
    );

    // Once the Pod is gone, it says so instead of printing part of the output.
    let pods: Api<Pod> = ns.api();
    let uid = done.metadata.uid.clone().expect("uid");
    let runs = format!("{}={uid}", nodeops::keys::OWNER_UID_LABEL);
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels(&runs),
    )
    .await
    .expect("delete the Pods");
    support::wait_until_none(&pods, &runs, FINISH).await;
    let gone = nodeops_logs();
    let said = String::from_utf8_lossy(&gone.stderr);
    assert!(!gone.status.success() && gone.stdout.is_empty());
    assert!(said.contains("no longer exists"), "{said}");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group_on_the_node() {
    let _shared = support::real_node_shared().await;
    let ns = TestNamespace::new("real-timeout").await;
    install_crds(&ns.client).await;
    let node = support::ready_real_node(&ns.client).await;
    let _op = operator(&ns);
    // A number no other process uses, so the host's process table can be searched for it.
    let secs = 100_000 + (std::process::id() % 50_000);
    let secs = secs.to_string();
    command(
        &ns,
        "hang",
        json!({"content": format!("sleep {secs} & echo started; sleep {secs}"), "timeoutSeconds": 5}),
    )
    .await;
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>("hang", json!({"commandRef": "hang", "nodeNames": [node]})),
    )
    .await;
    // Positive evidence first: both sleeps run on the host.
    let mut seen = 0;
    for _ in 0..600 {
        seen = host_processes(&["sleep", &secs]).len();
        if seen == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 2, "the command's two sleeps never ran on the node");
    let done = wait_for(&api, "hang", FINISH, "the timeout", finished).await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.exit_code, e.reason.as_deref()),
        (NodePhase::Failed, Some(124), Some("Timeout")),
        "{e:#?}"
    );
    assert_eq!(e.output.as_deref(), Some("started\n"));
    // The report is written after the group was killed: the background sleep is gone too.
    assert_eq!(
        host_processes(&["sleep", &secs]),
        Vec::<u32>::new(),
        "a process of the command survived its timeout"
    );
}

#[tokio::test]
async fn host_mode_runs_on_the_host_as_root_and_as_another_user() {
    let _shared = support::real_node_shared().await;
    let ns = TestNamespace::new("real-host").await;
    install_crds(&ns.client).await;
    let node = support::ready_real_node(&ns.client).await;
    let _op = operator(&ns);
    let dir = host_dir(&ns);
    let token = format!("written by the test for {}", ns.name);
    std::fs::write(dir.join("in.txt"), &token).expect("write on the host");
    let dir_s = dir.display().to_string();
    command(
        &ns,
        "files",
        json!({"content": format!("cat {dir_s}/in.txt; id -u > {dir_s}/out.txt")}),
    )
    .await;
    let done = run(
        &ns,
        "files",
        json!({"commandRef": "files", "nodeNames": [node], "executionMode": "Host"}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(e.phase, NodePhase::Succeeded, "{e:#?}");
    assert_eq!(e.output.as_deref(), Some(token.as_str()));
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).expect("the file the command wrote"),
        "0\n"
    );

    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("the host has a nobody user");
    let done = run(
        &ns,
        "as-nobody",
        json!({"command": "id -u", "nodeNames": [node], "executionMode": "Host", "username": "nobody"}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.output.clone()),
        (NodePhase::Succeeded, Some(format!("{}\n", nobody.uid))),
        "{e:#?}"
    );

    let done = run(
        &ns,
        "no-user",
        json!({"command": "id -u", "nodeNames": [node], "executionMode": "Host", "username": "no-such-user-x"}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (NodePhase::Failed, Some("StartFailed")),
        "{e:#?}"
    );
    assert!(
        e.message
            .as_deref()
            .unwrap_or("")
            .contains("no-such-user-x"),
        "{e:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_once_invoker_delivers_a_hostile_parameter_as_data() {
    let _shared = support::real_node_shared().await;
    let ns = TestNamespace::new("real-invoker").await;
    install_crds(&ns.client).await;
    let node = support::ready_real_node(&ns.client).await;
    let _op = operator(&ns);
    command(
        &ns,
        "echo-param",
        json!({"content": "printf '%s' {{value}}", "enableParameters": true}),
    )
    .await;
    let hostile = "a;b && $(id) $$ `id` ${HOME} \"dq\" 'sq' | rm -rf / # \\ é";
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let at = at.round(jiff::Unit::Second).expect("round");
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        manifest::<Invoker>(
            "once",
            json!({"commandRef": "echo-param", "nodeNames": [node], "parameters": {"value": hostile},
                   "scheduleSettings": {"policy": "Once", "invokeTime": at.to_string()}}),
        ),
    )
    .await;
    let fired = wait_for(&invokers, "once", FINISH, "the Once run", |i: &Invoker| {
        i.status
            .as_ref()
            .is_some_and(|s| s.recent_runs.iter().any(|r| !r.async_command.is_empty()))
    })
    .await;
    let run_name = fired.status.expect("status").recent_runs[0]
        .async_command
        .clone();
    let api: Api<AsyncCommand> = ns.api();
    let done = wait_for(&api, &run_name, FINISH, "the run final", finished).await;
    let e = entry(&done, &node);
    assert_eq!(e.phase, NodePhase::Succeeded, "{e:#?}");
    assert_eq!(e.output.as_deref(), Some(hostile));
}

#[tokio::test]
async fn real_failures_get_their_true_reasons() {
    let _shared = support::real_node_shared().await;
    let ns = TestNamespace::new("real-fail").await;
    install_crds(&ns.client).await;
    let node = support::ready_real_node(&ns.client).await;
    let _op = operator(&ns);

    // An image that is not on the node (the local cluster pulls nothing): reported as soon
    // as the kubelet says so, long before the 10-minute deadline.
    let done = run(
        &ns,
        "no-image",
        json!({"command": "true", "nodeNames": [node], "image": "nodeops.local/no-such-image:1", "timeoutSeconds": 600}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (NodePhase::Failed, Some("ImageNotAvailable")),
        "{e:#?}"
    );
    assert!(
        e.message
            .as_deref()
            .unwrap_or("")
            .contains("nodeops.local/no-such-image:1"),
        "{e:#?}"
    );

    // Killed by a signal.
    command(
        &ns,
        "self-kill",
        json!({"content": "echo before; kill -KILL $$"}),
    )
    .await;
    let done = run(
        &ns,
        "self-kill",
        json!({"commandRef": "self-kill", "nodeNames": [node]}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (
            e.phase,
            e.exit_code,
            e.reason.as_deref(),
            e.output.as_deref()
        ),
        (
            NodePhase::Failed,
            Some(137),
            Some("Signaled"),
            Some("before\n")
        ),
        "{e:#?}"
    );

    // Over a memory limit (the namespace's LimitRange gives every container 32 MiB).
    let limits: Api<LimitRange> = ns.api();
    limits
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "small"}, "spec": {"limits": [
                {"type": "Container", "default": {"memory": "32Mi"}, "defaultRequest": {"memory": "16Mi"}}
            ]}}))
            .expect("limit range"),
        )
        .await
        .expect("create LimitRange");
    command(
        &ns,
        "hog",
        json!({"content": "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"}),
    )
    .await;
    let done = run(
        &ns,
        "hog",
        json!({"commandRef": "hog", "nodeNames": [node]}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (NodePhase::Failed, Some("OOMKilled")),
        "{e:#?}"
    );
}

#[tokio::test]
async fn a_node_at_its_pod_capacity_rejects_the_run() {
    let _alone = support::real_node_alone().await;
    let ns = TestNamespace::new("real-maxpods").await;
    install_crds(&ns.client).await;
    let node = support::ready_real_node(&ns.client).await;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let capacity: usize = nodes
        .get(&node)
        .await
        .expect("node")
        .status
        .expect("status")
        .allocatable
        .expect("allocatable")["pods"]
        .0
        .parse()
        .expect("pods");
    // Pods of earlier tests may still be terminating (a Job deleted for an image that is
    // not there): wait until the node runs nothing, so the fillers below are exactly its
    // capacity. Every test that runs pods there holds the node shared, so none starts now.
    let all_pods: Api<Pod> = Api::all(ns.client.clone());
    let mut busy = Vec::new();
    for _ in 0..240 {
        busy = all_pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .expect("pods")
            .items
            .into_iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
            .collect::<Vec<_>>();
        if busy.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        busy,
        Vec::<String>::new(),
        "pods still active on the real node"
    );
    let pause = support::real_node_images()["PAUSE_IMAGE"].clone();
    let pods: Api<Pod> = ns.api();
    for i in 0..capacity {
        let pod = json!({"metadata": {"name": format!("filler-{i}"), "labels": {"role": "filler"}},
            "spec": {"nodeName": node, "hostNetwork": true, "tolerations": [{"operator": "Exists"}],
                     "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                     "containers": [{"name": "pause", "image": pause, "imagePullPolicy": "Never"}]}});
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod).expect("pod"),
        )
        .await
        .expect("create filler pod");
    }
    for i in 0..capacity {
        wait_for(
            &pods,
            &format!("filler-{i}"),
            FINISH,
            "filler Running",
            |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
        )
        .await;
    }
    let _op = operator(&ns);
    let done = run(&ns, "full", json!({"command": "true", "nodeNames": [node]})).await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (NodePhase::Failed, Some("NodeRejected")),
        "{e:#?}"
    );
    assert!(
        e.message.as_deref().unwrap_or("").contains("OutOfpods"),
        "{e:#?}"
    );
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels("role=filler"),
    )
    .await
    .expect("delete fillers");
}

#[tokio::test]
async fn the_real_node_and_simulated_nodes_are_reported_alike() {
    let _shared = support::real_node_shared().await;
    let ns = TestNamespace::new("real-mixed").await;
    install_crds(&ns.client).await;
    let node = support::ready_real_node(&ns.client).await;
    let _op = operator(&ns);
    // The simulated kubelet writes, as termination message, what the runner writes on the
    // real one for `echo same`.
    let report = r#"{"exitCode":0,"output":"same\n","truncated":false,"timedOut":false}"#;
    let done = run(
        &ns,
        "mixed",
        json!({"command": "echo same", "nodeNames": [node, "node-0001", "node-0002"],
               "podAnnotations": {sim::MESSAGE: report}}),
    )
    .await;
    let shape = |e: &CmdJob| {
        (
            e.phase,
            e.exit_code,
            e.output.clone(),
            e.output_truncated,
            e.reason.clone(),
            e.message.clone(),
            e.job_id.len(),
            e.job_name.is_some(),
            e.start_time.is_some(),
            e.completion_time.is_some(),
        )
    };
    let by_node: BTreeMap<String, _> = done
        .status
        .as_ref()
        .expect("status")
        .cmd_jobs
        .iter()
        .map(|e| (e.node_name.clone(), shape(e)))
        .collect();
    assert_eq!(by_node.len(), 3);
    assert_eq!(by_node[&node], by_node["node-0001"], "{by_node:#?}");
    assert_eq!(by_node["node-0001"], by_node["node-0002"]);
    assert_eq!(by_node[&node].2.as_deref(), Some("same\n"));
}

/// Labels `ns` to enforce the Pod Security Standards' `level`.
async fn enforce(ns: &TestNamespace, level: &str) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
    let patch = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}});
    namespaces
        .patch(
            &ns.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("label the namespace");
}

#[tokio::test]
async fn container_mode_is_restricted_by_default_and_baseline_on_request() {
    let _shared = support::real_node_shared().await;
    let node = {
        let client = support::client().await;
        support::ready_real_node(&client).await
    };
    // A namespace that enforces restricted: the default run passes it, as user nobody, on
    // the real kubelet (the runner writes its report as that user); asking for baseline
    // is refused there by Pod Security.
    let strict = TestNamespace::new("real-restricted").await;
    install_crds(&strict.client).await;
    enforce(&strict, "restricted").await;
    let _op = Operator::start(&strict.name, &[]);
    let done = run(
        &strict,
        "whoami",
        json!({"command": "id -u", "nodeNames": [node]}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.output.as_deref()),
        (NodePhase::Succeeded, Some("65534\n")),
        "{e:#?}"
    );
    let done = run(
        &strict,
        "root",
        json!({"command": "id -u", "nodeNames": [node], "podSecurity": "Baseline"}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.reason.as_deref()),
        (NodePhase::Failed, Some("AdmissionRefused")),
        "{e:#?}"
    );
    assert!(
        e.message.as_deref().unwrap_or("").contains("restricted"),
        "{e:#?}"
    );

    // A namespace that enforces baseline: both run; baseline as the image's user, root.
    let base = TestNamespace::new("real-baseline").await;
    enforce(&base, "baseline").await;
    let _op2 = Operator::start(&base.name, &[]);
    let done = run(
        &base,
        "whoami",
        json!({"command": "id -u", "nodeNames": [node]}),
    )
    .await;
    assert_eq!(entry(&done, &node).output.as_deref(), Some("65534\n"));
    let done = run(
        &base,
        "root",
        json!({"command": "id -u", "nodeNames": [node], "podSecurity": "Baseline"}),
    )
    .await;
    let e = entry(&done, &node);
    assert_eq!(
        (e.phase, e.output.as_deref()),
        (NodePhase::Succeeded, Some("0\n")),
        "{e:#?}"
    );
}
