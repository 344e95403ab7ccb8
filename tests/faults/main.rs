//! Faults, proven from the cluster: nothing lost, nothing run twice.
//!
//! These scenarios kill the operator at seeded pseudo-random points, restart kube-apiserver
//! and etcd, compact etcd's history so resumed watches get 410 Gone, let other writers fight
//! the operator over a status, and look for secrets everywhere the operator writes. Every
//! outcome is asserted from watches (each Job, child and slot seen by uid, in-flight counts
//! kept from every transition, node label transitions per node) and from lists at the end;
//! sleeps only place the faults.
//!
//! They need a control plane of their own (components are restarted): `make faults`
//! (hack/faults.sh) starts one and sets `NODEOPS_FAULT_CLUSTER_DIR`; without it every
//! scenario fails at once (it never injects faults into a shared cluster, and never passes
//! without having run). Cargo.toml keeps the suite out of a plain `cargo test`.
//! `NODEOPS_FAULT_SEED` replays or varies the operator kill points. See docs/reliability.md.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use nodeops::api::agent_invocation::AgentInvocation;
use nodeops::api::agent_upgrade_job::{AgentUpgradeJob, AgentUpgradeState, UpgradeJobState};
use nodeops::api::async_command::{CommandPhase, NodePhase};
use nodeops::api::{AsyncCommand, Command, Invoker};
use nodeops::keys::{
    INVOKER_UID_LABEL, NODE_ANNOTATION, OWNER_UID_LABEL, ROLE_LABEL, ROLE_UPGRADE,
    SCHEDULED_TIME_ANNOTATION, UPGRADE_JOB_UID_LABEL, sim,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use support::agents::{Agent, invoke, ok, results};
use support::{Operator, TestNamespace, apply, finished, install_crds, manifest, repo_root};

/// How long a fan-out may take to finish once its fault is over.
const FINISH: Duration = Duration::from_secs(240);
/// The fewest operator kills the kill scenario makes.
const MIN_KILLS: usize = 20;
const DEFAULT_SEED: u64 = 0x5EED_FA17_C0DE_0001;

// ---------------------------------------------------------------------------------------
// The fault cluster and its components.

/// The control plane hack/faults.sh started for this suite, or None (the scenario then
/// fails): faults are only ever injected into a cluster made for them.
fn fault_cluster() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("NODEOPS_FAULT_CLUSTER_DIR")?);
    let kubeconfig = std::env::var_os("NODEOPS_TEST_KUBECONFIG").map(PathBuf::from);
    assert_eq!(
        kubeconfig.as_deref(),
        Some(dir.join("kubeconfig").as_path()),
        "NODEOPS_TEST_KUBECONFIG must be the kubeconfig of the fault cluster the suite restarts"
    );
    Some(dir)
}

/// The fault cluster, or a failed test: a scenario whose environment is missing proves
/// nothing and must not pass.
macro_rules! required_fault_cluster {
    () => {
        fault_cluster().expect(
            "NODEOPS_FAULT_CLUSTER_DIR is not set: the fault scenarios run only on a control plane of their own, through `make faults` (hack/faults.sh)",
        )
    };
}

/// `hack/restart-component.sh <action> <component>` on the fault cluster.
async fn component(cluster: &Path, action: &str, name: &str) {
    let status = tokio::process::Command::new(repo_root().join("hack/restart-component.sh"))
        .args([action, name])
        .env("CLUSTER_DIR", cluster)
        .status()
        .await
        .expect("run hack/restart-component.sh");
    assert!(status.success(), "{action} {name} failed");
}

/// A stop, `down` without the component, a start (which waits until it serves again).
async fn outage(cluster: &Path, name: &str, down: Duration) -> Duration {
    let t = Instant::now();
    component(cluster, "stop", name).await;
    tokio::time::sleep(down).await;
    component(cluster, "start", name).await;
    let took = t.elapsed();
    println!("{name} was out for {:.1}s", took.as_secs_f64());
    took
}

/// etcd's client URL (its HTTP/JSON gateway serves /v3/kv/*).
fn etcd_url() -> String {
    std::env::var("NODEOPS_FAULT_ETCD_URL").unwrap_or_else(|_| "http://127.0.0.1:24790".into())
}

/// POST `body` to etcd's gateway, with curl (the repository needs no HTTP client crate).
async fn etcd_post(path: &str, body: serde_json::Value) -> serde_json::Value {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-f", "-X", "POST", "-d", &body.to_string()])
        .arg(format!("{}{path}", etcd_url()))
        .output()
        .await
        .expect("run curl");
    assert!(
        out.status.success(),
        "POST {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("etcd answers JSON")
}

/// Compacts etcd's whole history up to its current revision (physically): every watch that
/// resumes from an older resourceVersion can only get 410 Gone. Returns the revision.
async fn compact_etcd() -> u64 {
    let range = etcd_post("/v3/kv/range", json!({"key": "AA=="})).await;
    let revision = range["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse::<u64>().ok())
        .expect("current revision");
    etcd_post(
        "/v3/kv/compaction",
        json!({"revision": revision.to_string(), "physical": true}),
    )
    .await;
    println!("etcd compacted at revision {revision}");
    revision
}

mod conflicts;
mod control_plane;
mod kills;
mod ledgers;
mod secrets;
mod seed;
mod waiting;
mod workloads;

use ledgers::*;
use seed::*;
use waiting::*;
use workloads::*;
