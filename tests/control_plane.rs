//! The local control plane is real: the Job controller, the scheduler's node binding and
//! kwok's simulated kubelets take a Job pinned to a simulated node to Complete, and a pod
//! that asks to fail ends Failed with its exit code and message in the Pod status.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use nodeops::keys::sim;
use support::{TestNamespace, node_ready, wait_for};

fn job(name: &str, node: &str, annotations: serde_json::Value) -> Job {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "nodeName": node,
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]
                }
            }
        }
    }))
    .expect("job")
}

fn job_condition(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

#[tokio::test]
async fn simulated_nodes_are_ready_and_server_is_real() {
    let ns = TestNamespace::new("smoke-nodes").await;
    let version = ns.client.apiserver_version().await.expect("version");
    println!(
        "kube-apiserver {} at the local control plane",
        version.git_version
    );
    assert!(
        version.git_version.starts_with("v1."),
        "a real kube-apiserver answers: {version:?}"
    );
    let nodes = Api::<Node>::all(ns.client.clone())
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .expect("list nodes");
    assert!(
        nodes.items.len() >= 10,
        "at least 10 simulated nodes, found {}",
        nodes.items.len()
    );
    for node in &nodes.items {
        assert!(node_ready(node), "node {:?} is Ready", node.metadata.name);
    }
}

#[tokio::test]
async fn job_on_a_simulated_node_completes() {
    let ns = TestNamespace::new("smoke-job").await;
    let jobs: Api<Job> = ns.api();
    jobs.create(
        &PostParams::default(),
        &job("ok", "node-0001", serde_json::json!({})),
    )
    .await
    .expect("create job");
    let done = wait_for(&jobs, "ok", Duration::from_secs(60), "Job Complete", |j| {
        job_condition(j, "Complete")
    })
    .await;
    assert_eq!(done.status.and_then(|s| s.succeeded), Some(1));
    let pods: Api<Pod> = ns.api();
    let pod = pods
        .list(&ListParams::default().labels("job-name=ok"))
        .await
        .expect("pods")
        .items
        .remove(0);
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some("node-0001")
    );
    assert_eq!(
        pod.status.and_then(|s| s.phase).as_deref(),
        Some("Succeeded")
    );
}

#[tokio::test]
async fn pod_can_script_a_failure_with_exit_code() {
    let ns = TestNamespace::new("smoke-fail").await;
    let jobs: Api<Job> = ns.api();
    let annotations = serde_json::json!({
        sim::OUTCOME: "fail",
        sim::EXIT_CODE: "42",
        sim::MESSAGE: "disk full",
    });
    jobs.create(
        &PostParams::default(),
        &job("bad", "node-0002", annotations),
    )
    .await
    .expect("create job");
    wait_for(&jobs, "bad", Duration::from_secs(60), "Job Failed", |j| {
        job_condition(j, "Failed")
    })
    .await;
    let pods: Api<Pod> = ns.api();
    let pod = pods
        .list(&ListParams::default().labels("job-name=bad"))
        .await
        .expect("pods")
        .items
        .remove(0);
    let status = pod.status.expect("pod status");
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let terminated = status.container_statuses.expect("container statuses")[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("terminated state");
    assert_eq!(terminated.exit_code, 42);
    assert_eq!(terminated.message.as_deref(), Some("disk full"));
}

#[tokio::test]
async fn pod_can_ask_to_keep_running() {
    let ns = TestNamespace::new("smoke-running").await;
    let pods: Api<Pod> = ns.api();
    let pod = |name: &str, annotations: serde_json::Value| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"nodeName": "node-0003", "restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "busybox"}]}
        }))
        .expect("pod")
    };
    pods.create(
        &PostParams::default(),
        &pod("stays", serde_json::json!({sim::OUTCOME: "running"})),
    )
    .await
    .expect("create pod");
    pods.create(
        &PostParams::default(),
        &pod("control", serde_json::json!({})),
    )
    .await
    .expect("create pod");
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    wait_for(
        &pods,
        "stays",
        Duration::from_secs(60),
        "pod Running",
        |p| phase(p).as_deref() == Some("Running"),
    )
    .await;
    // The control pod on the same node, created after it, completes; by then the simulated
    // kubelet has passed over the annotated one, which must still be Running.
    wait_for(
        &pods,
        "control",
        Duration::from_secs(60),
        "control pod Succeeded",
        |p| phase(p).as_deref() == Some("Succeeded"),
    )
    .await;
    let stays = pods.get("stays").await.expect("get");
    assert_eq!(phase(&stays).as_deref(), Some("Running"));
}
