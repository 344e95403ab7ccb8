//! The NodeAgent plan, a pure function of (agent, nodes, agent pods, DaemonSets, now): which
//! per-version DaemonSets must exist, which must go, and the status.

use crate::keys::{
    AGENT_COMPONENT, AGENT_LABEL, AGENT_VERSION_LABEL, TEMPLATE_HASH_ANNOTATION, agent_node_label,
};
use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::agent::{agent_uuid, daemonset_name};
use crate::api::node_agent::{AgentInstance, AgentMode, NodeAgent, NodeAgentStatus, VersionCount};
use crate::conditions::{self, Desired};
use crate::keys::MANAGED_BY;
use crate::plan::Note;

/// A node as this controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub uid: String,
    /// The agent's version label, if any.
    pub version: Option<String>,
}

/// What the cluster holds for one agent.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub now: Timestamp,
    pub nodes: Vec<NodeView>,
    /// (node, version) pairs whose agent pod is Ready.
    pub ready: BTreeSet<(String, String)>,
    /// Existing DaemonSets of the agent: name -> template hash.
    pub daemonsets: BTreeMap<String, Option<String>>,
}

/// What to do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// DaemonSets to apply (missing or changed).
    pub apply: Vec<DaemonSet>,
    /// DaemonSets to delete (their version is on no node).
    pub delete: Vec<String>,
    pub status: NodeAgentStatus,
    pub notes: Vec<Note>,
}

/// The DaemonSet running `version` of `agent` on the nodes labelled with it.
pub fn render_daemonset(agent: &NodeAgent, version: &str) -> Result<DaemonSet, serde_json::Error> {
    let name = agent.metadata.name.clone().unwrap_or_default();
    let ds_name = daemonset_name(&name, version);
    let selector = json!({AGENT_LABEL: name, AGENT_VERSION_LABEL: version});
    let labels = json!({
        AGENT_LABEL: name,
        AGENT_VERSION_LABEL: version,
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/version": version,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": AGENT_COMPONENT,
    });
    let owner = OwnerReference {
        api_version: "nodeops.io/v1alpha1".into(),
        kind: "NodeAgent".into(),
        name: name.clone(),
        uid: agent.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let spec = json!({
        "selector": {"matchLabels": selector},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": agent.spec.pod_annotations.clone().unwrap_or_default(),
            },
            "spec": {
                "nodeSelector": {agent_node_label(&name): version},
                "tolerations": [{"operator": "Exists"}],
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "containers": [{
                    "name": "agent",
                    "image": format!("{}:{version}", agent.spec.image),
                    "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                }],
            },
        },
    });
    let hash: String = Sha256::digest(spec.to_string().as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": ds_name,
            "namespace": agent.spec.namespace,
            "labels": labels,
            "annotations": {TEMPLATE_HASH_ANNOTATION: hash},
            "ownerReferences": [owner],
        },
        "spec": spec,
    }))
}

fn template_hash(ds: &DaemonSet) -> Option<String> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_HASH_ANNOTATION)
        .cloned()
}

/// The plan for `agent` in `world`.
pub fn plan(agent: &NodeAgent, world: &World) -> Result<Plan, serde_json::Error> {
    let agent_uid = agent.metadata.uid.clone().unwrap_or_default();
    let mut counts: BTreeMap<String, VersionCount> = BTreeMap::new();
    let mut agents = Vec::new();
    for node in &world.nodes {
        let Some(version) = &node.version else {
            continue;
        };
        let count = counts
            .entry(version.clone())
            .or_insert_with(|| VersionCount {
                version: version.clone(),
                ..Default::default()
            });
        count.nodes += 1;
        if world.ready.contains(&(node.name.clone(), version.clone())) {
            count.ready += 1;
        }
        agents.push(AgentInstance {
            agent_uuid: agent_uuid(&agent_uid, &node.uid),
            node_name: node.name.clone(),
            version: version.clone(),
        });
    }
    agents.sort_by(|a, b| a.node_name.cmp(&b.node_name));

    let mut out = Plan::default();
    let daemonset_mode = agent.spec.mode == AgentMode::DaemonSet;
    let mut wanted = BTreeSet::new();
    if daemonset_mode {
        for version in counts.keys() {
            let ds = render_daemonset(agent, version)?;
            let name = ds.metadata.name.clone().unwrap_or_default();
            wanted.insert(name.clone());
            match world.daemonsets.get(&name) {
                Some(hash) if hash.is_some() && *hash == template_hash(&ds) => {}
                _ => out.apply.push(ds),
            }
        }
    }
    out.delete = world
        .daemonsets
        .keys()
        .filter(|n| !wanted.contains(*n))
        .cloned()
        .collect();

    let installed = agents.len() as i32;
    let ready: i32 = counts.values().map(|c| c.ready).sum();
    let mut status = agent.status.clone().unwrap_or_default();
    status.observed_generation = agent.metadata.generation;
    status.installed_nodes = installed;
    status.versions = counts.into_values().collect();
    status.agents = agents;
    let now = Time(world.now);
    let (is_ready, reason, message) = if !daemonset_mode {
        (
            true,
            "Installed",
            format!("{installed} nodes have the agent (installed by host installer Jobs)"),
        )
    } else if ready == installed {
        (
            true,
            "AgentsReady",
            format!("the agent is ready on all {installed} nodes that have it"),
        )
    } else {
        (
            false,
            "AgentsNotReady",
            format!("the agent is ready on {ready} of {installed} nodes that have it"),
        )
    };
    let transitioned = conditions::set(
        &mut status.conditions,
        Desired::new(conditions::READY, is_ready, reason, message.clone()),
        agent.metadata.generation,
        &now,
    );
    let pending = !out.apply.is_empty() || !out.delete.is_empty();
    if pending {
        conditions::set(
            &mut status.conditions,
            Desired::new(
                conditions::RECONCILING,
                true,
                "DaemonSetsChanging",
                "creating, updating or deleting per-version DaemonSets",
            ),
            agent.metadata.generation,
            &now,
        );
    } else {
        conditions::remove(&mut status.conditions, conditions::RECONCILING);
    }
    conditions::remove(&mut status.conditions, conditions::STALLED);
    if transitioned && is_ready {
        out.notes.push(Note {
            warning: false,
            reason: reason_static(reason),
            message,
        });
    }
    out.status = status;
    Ok(out)
}

fn reason_static(reason: &str) -> &'static str {
    match reason {
        "Installed" => "Installed",
        _ => "AgentsReady",
    }
}

/// The status of an agent whose DaemonSets cannot be written: (reason, message).
pub fn stalled(agent: &NodeAgent, reason: &str, message: &str, now: Timestamp) -> NodeAgentStatus {
    let mut status = agent.status.clone().unwrap_or_default();
    status.observed_generation = agent.metadata.generation;
    conditions::stall(
        &mut status.conditions,
        reason,
        message,
        agent.metadata.generation,
        &Time(now),
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(mode: &str) -> NodeAgent {
        let mut a: NodeAgent = serde_json::from_value(json!({
            "apiVersion": "nodeops.io/v1alpha1",
            "kind": "NodeAgent",
            "metadata": {"name": "telescope", "uid": "agent-uid", "generation": 2},
            "spec": {
                "namespace": "nodeops-agents",
                "mode": mode,
                "image": "registry.example.com/telescope",
                "basicVersion": "3.2.1",
                "podAnnotations": {"example.com/scrape": "true"},
            },
        }))
        .expect("agent");
        if mode == "HostInstaller" {
            a.spec.installer = serde_json::from_value(
                json!({"image": "example/installer:1", "commandRef": "install-telescope"}),
            )
            .expect("installer");
        }
        a
    }

    fn node(name: &str, version: Option<&str>) -> NodeView {
        NodeView {
            name: name.into(),
            uid: format!("uid-{name}"),
            version: version.map(String::from),
        }
    }

    fn world() -> World {
        World {
            now: "2026-11-26T00:00:00Z".parse().expect("ts"),
            nodes: vec![
                node("n1", Some("3.2.1")),
                node("n2", Some("3.2.1")),
                node("n3", Some("3.3.0")),
                node("n4", None),
            ],
            ready: [("n1".into(), "3.2.1".into()), ("n3".into(), "3.3.0".into())]
                .into_iter()
                .collect(),
            daemonsets: BTreeMap::new(),
        }
    }

    #[test]
    fn one_daemonset_per_live_version_selecting_on_the_label() {
        let a = agent("DaemonSet");
        let p = plan(&a, &world()).expect("plan");
        let names: Vec<_> = p
            .apply
            .iter()
            .map(|d| d.metadata.name.clone().expect("name"))
            .collect();
        assert_eq!(names, ["telescope-3.2.1", "telescope-3.3.0"]);
        let ds = &p.apply[0];
        let pod = ds
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod");
        assert_eq!(
            pod.node_selector.as_ref().expect("selector")["agent.nodeops.io/telescope"],
            "3.2.1"
        );
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("registry.example.com/telescope:3.2.1")
        );
        assert_eq!(
            ds.metadata.owner_references.as_ref().expect("owner")[0].kind,
            "NodeAgent"
        );
        assert_eq!(ds.metadata.namespace.as_deref(), Some("nodeops-agents"));
        assert!(p.delete.is_empty());
    }

    #[test]
    fn unchanged_daemonsets_are_not_rewritten_and_unused_ones_go() {
        let a = agent("DaemonSet");
        let mut w = world();
        let current = render_daemonset(&a, "3.2.1").expect("ds");
        w.daemonsets
            .insert("telescope-3.2.1".into(), template_hash(&current));
        w.daemonsets
            .insert("telescope-3.3.0".into(), Some("stale".into()));
        w.daemonsets.insert("telescope-3.1.0".into(), None);
        let p = plan(&a, &w).expect("plan");
        let applied: Vec<_> = p
            .apply
            .iter()
            .map(|d| d.metadata.name.clone().expect("name"))
            .collect();
        assert_eq!(applied, ["telescope-3.3.0"], "only the changed one");
        assert_eq!(p.delete, ["telescope-3.1.0"]);
    }

    #[test]
    fn status_counts_versions_and_readiness() {
        let a = agent("DaemonSet");
        let p = plan(&a, &world()).expect("plan");
        let s = &p.status;
        assert_eq!(s.installed_nodes, 3);
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(
            s.versions
                .iter()
                .map(|v| (v.version.as_str(), v.nodes, v.ready))
                .collect::<Vec<_>>(),
            [("3.2.1", 2, 1), ("3.3.0", 1, 1)]
        );
        assert_eq!(s.agents.len(), 3);
        assert_eq!(s.agents[0].agent_uuid, agent_uuid("agent-uid", "uid-n1"));
        let ready = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "AgentsNotReady")
        );
        assert!(p.notes.is_empty(), "no Event for not ready");

        let mut w = world();
        w.ready.insert(("n2".into(), "3.2.1".into()));
        let mut again = a.clone();
        again.status = Some(p.status.clone());
        let p2 = plan(&again, &w).expect("plan");
        let ready2 = p2
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready2.status, "True");
        assert_eq!(p2.notes.len(), 1, "an Event on the transition");
    }

    #[test]
    fn host_installer_mode_runs_no_daemonsets() {
        let a = agent("HostInstaller");
        let mut w = world();
        w.daemonsets.insert("telescope-3.2.1".into(), None);
        let p = plan(&a, &w).expect("plan");
        assert!(p.apply.is_empty());
        assert_eq!(p.delete, ["telescope-3.2.1"]);
        assert_eq!(p.status.installed_nodes, 3);
        assert!(conditions::is_true(&p.status.conditions, conditions::READY));
    }

    #[test]
    fn stalled_sets_stalled_and_not_ready() {
        let a = agent("DaemonSet");
        let s = stalled(
            &a,
            "NamespaceNotFound",
            "namespace nodeops-agents does not exist",
            world().now,
        );
        assert!(conditions::is_true(&s.conditions, conditions::STALLED));
        assert!(!conditions::is_true(&s.conditions, conditions::READY));
    }
}
