//! Node-agent helpers shared by the agent tests: a NodeAgent per test (cleaned up with its
//! node labels), invocations run to the end, results by instance.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use nodeops::api::agent_invocation::{
    AgentInvocation, AgentInvocationPhase, InvocationPhase, InvocationResult, RetStatus,
};
use nodeops::api::node_agent::NodeAgent;
use nodeops::keys::agent_node_label;
use serde_json::json;

use super::{TestNamespace, apply, manifest, wait_for};

/// How long an invocation may take in the tests.
pub const FINISH: Duration = Duration::from_secs(120);

/// A cluster-scoped NodeAgent named after the test namespace (so parallel tests never share
/// a node label), deleted with its labels when dropped.
pub struct Agent {
    pub name: String,
    pub client: Client,
}

impl Agent {
    pub async fn create(ns: &TestNamespace, spec: serde_json::Value) -> Self {
        let name = format!("tel-{}", ns.name.rsplit('-').next().expect("suffix"));
        let mut spec = spec;
        spec["namespace"] = json!(ns.name);
        let api: Api<NodeAgent> = Api::all(ns.client.clone());
        apply(&api, manifest::<NodeAgent>(&name, spec)).await;
        Self {
            name,
            client: ns.client.clone(),
        }
    }

    /// Creates the agent and installs it on `nodes` (an Install invocation named
    /// `install`), asserting every node succeeded.
    pub async fn installed(ns: &TestNamespace, spec: serde_json::Value, nodes: &[String]) -> Self {
        let agent = Self::create(ns, spec).await;
        let install = invoke(
            ns,
            "install",
            json!({"invocationType": "Install", "invocationTarget": agent.name, "nodeNames": nodes}),
        )
        .await;
        let r = results(&install);
        assert!(r.values().all(ok), "install: {r:#?}");
        agent
    }

    pub fn label(&self) -> String {
        agent_node_label(&self.name)
    }

    pub fn api(&self) -> Api<NodeAgent> {
        Api::all(self.client.clone())
    }

    /// What `kubectl get nodes -L agent.nodeops.io/<agent>` prints, run for real, as
    /// node -> version for the nodes that have the label.
    pub fn kubectl_versions(&self) -> BTreeMap<String, String> {
        let label = self.label();
        let out = super::kubectl(&["get", "nodes", "--no-headers", "-L", &label]);
        // NAME STATUS ROLES AGE VERSION <label column>; an empty column for unlabelled nodes.
        out.lines()
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                (cols.len() == 6).then(|| (cols[0].to_string(), cols[5].to_string()))
            })
            .collect()
    }

    /// The nodes labelled with the agent's version, as node -> version (through the API).
    pub async fn versions(&self) -> BTreeMap<String, String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .list(&ListParams::default().labels(&self.label()))
            .await
            .expect("nodes")
            .items
            .into_iter()
            .map(|n| {
                let v = n.labels()[&self.label()].clone();
                (n.name_any(), v)
            })
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let name = self.name.clone();
        let label = self.label();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = super::client().await;
                let _ = Api::<NodeAgent>::all(client.clone())
                    .delete(&name, &DeleteParams::background())
                    .await;
                let nodes: Api<Node> = Api::all(client);
                if let Ok(list) = nodes.list(&ListParams::default().labels(&label)).await {
                    for n in list.items {
                        let patch = json!({"metadata": {"labels": {label.clone(): null}}});
                        let _ = nodes
                            .patch(
                                &n.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

pub fn is_final(inv: &AgentInvocation) -> bool {
    inv.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            AgentInvocationPhase::Succeeded | AgentInvocationPhase::Failed
        )
    })
}

/// Creates an AgentInvocation and waits until every instance is final.
pub async fn invoke(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> AgentInvocation {
    let api: Api<AgentInvocation> = ns.api();
    apply(&api, manifest::<AgentInvocation>(name, spec)).await;
    wait_for(&api, name, FINISH, "every instance final", is_final).await
}

pub fn results(inv: &AgentInvocation) -> BTreeMap<String, InvocationResult> {
    inv.status
        .as_ref()
        .expect("status")
        .invocations
        .iter()
        .map(|e| (e.instance_id.clone(), e.clone()))
        .collect()
}

pub fn ok(e: &InvocationResult) -> bool {
    e.phase == InvocationPhase::Succeeded && e.ret_status == Some(RetStatus::Successful)
}
