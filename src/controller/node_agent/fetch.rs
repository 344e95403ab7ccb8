//! What the NodeAgent controller reads from the shared caches (nodes and their version
//! labels, Ready agent pods) and the node labels it removes when an agent goes.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::Error;
use super::plan::{NodeView, World};
use crate::api::NodeAgent;
use crate::api::node_agent::AgentMode;
use crate::controller::Context;
use crate::keys::{AGENT_LABEL, AGENT_VERSION_LABEL, TEMPLATE_HASH_ANNOTATION, agent_node_label};

/// Removes the agent's label from every node. In HostInstaller mode the agent stays on
/// the hosts (deleting the object uninstalls nothing), so the labels stay true and are
/// kept.
pub async fn unlabel_nodes(ctx: &Context, agent: &NodeAgent) -> Result<(), Error> {
    if agent.spec.mode != AgentMode::DaemonSet {
        return Ok(());
    }
    let key = agent_node_label(&agent.name_any());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let labelled = nodes
        .list_metadata(&ListParams::default().labels(&key))
        .await
        .map_err(Error::ListNodes)?;
    let patch = serde_json::json!({"metadata": {"labels": {key: null}}});
    for node in labelled.items {
        let node = node.name_any();
        match nodes
            .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Unlabel { node, source }),
        }
    }
    Ok(())
}

/// The world of `agent`: nodes, Ready agent pods, its DaemonSets.
pub fn observe(
    agent: &NodeAgent,
    ctx: &Context,
    now: Timestamp,
    daemonsets: Vec<kube::core::PartialObjectMeta<DaemonSet>>,
) -> World {
    let name = agent.name_any();
    let key = agent_node_label(&name);
    let mut nodes: Vec<NodeView> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| NodeView::of(&n.metadata, &key))
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let ready: BTreeSet<(String, String)> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| p.labels().get(AGENT_LABEL) == Some(&name))
        .filter(|p| crate::agent::pod_ready(p))
        .filter_map(|p| {
            let version = p.labels().get(AGENT_VERSION_LABEL)?.clone();
            let node = p.spec.as_ref()?.node_name.clone()?;
            Some((node, version))
        })
        .collect();
    let daemonsets: BTreeMap<String, Option<String>> = daemonsets
        .into_iter()
        .map(|d| {
            let hash = d.annotations().get(TEMPLATE_HASH_ANNOTATION).cloned();
            (d.name_any(), hash)
        })
        .collect();
    World {
        now,
        nodes,
        ready,
        daemonsets,
    }
}
