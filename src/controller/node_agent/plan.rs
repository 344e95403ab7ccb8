//! The NodeAgent plan, a pure function of (agent, nodes, agent pods, DaemonSets, now): which
//! per-version DaemonSets must exist, which must go, and the status.

use crate::keys::{
    AGENT_COMPONENT, AGENT_LABEL, AGENT_VERSION_LABEL, TEMPLATE_HASH_ANNOTATION, agent_node_label,
};
use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::agent::{agent_uuid, daemonset_name};
use crate::api::node_agent::{AgentInstance, AgentMode, NodeAgent, NodeAgentStatus, VersionCount};
use crate::conditions::{self, Desired};
use crate::keys::{COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, VERSION_LABEL};
use crate::plan::{Change, Child, ChildKind, Decide, Invalid, Note, Plan as Changes};

/// Look again this often even without events (readiness of a DaemonSet pod we missed).
pub const RESYNC: Duration = Duration::from_secs(300);

/// A node as this controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub uid: String,
    /// The agent's version label, if any.
    pub version: Option<String>,
}

impl NodeView {
    /// A node by its metadata, with its version label `label`.
    pub fn of(meta: &ObjectMeta, label: &str) -> Self {
        Self {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            version: meta.labels.as_ref().and_then(|l| l.get(label)).cloned(),
        }
    }
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
pub fn render_daemonset(agent: &NodeAgent, version: &str) -> DaemonSet {
    let name = agent.metadata.name.clone().unwrap_or_default();
    let ds_name = daemonset_name(&name, version);
    let selector: BTreeMap<String, String> = [
        (AGENT_LABEL.to_string(), name.clone()),
        (AGENT_VERSION_LABEL.to_string(), version.to_string()),
    ]
    .into();
    let mut labels = selector.clone();
    labels.extend([
        (NAME_LABEL.to_string(), name.clone()),
        (VERSION_LABEL.to_string(), version.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (COMPONENT_LABEL.to_string(), AGENT_COMPONENT.to_string()),
    ]);
    let owner = OwnerReference {
        api_version: NodeAgent::api_version(&()).into(),
        kind: NodeAgent::kind(&()).into(),
        name: name.clone(),
        uid: agent.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let spec = DaemonSetSpec {
        selector: LabelSelector {
            match_labels: Some(selector),
            ..LabelSelector::default()
        },
        update_strategy: Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: Some(IntOrString::String("10%".into())),
                ..RollingUpdateDaemonSet::default()
            }),
        }),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels.clone()),
                annotations: Some(agent.spec.pod_annotations.clone().unwrap_or_default()),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                node_selector: Some([(agent_node_label(&name), version.to_string())].into()),
                tolerations: Some(vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Toleration::default()
                }]),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                containers: vec![Container {
                    name: "agent".into(),
                    image: Some(format!("{}:{version}", agent.spec.image)),
                    env: Some(vec![EnvVar {
                        name: "NODE_NAME".into(),
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "spec.nodeName".into(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..EnvVarSource::default()
                        }),
                        ..EnvVar::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        },
        ..DaemonSetSpec::default()
    };
    // What the template was rendered from decides whether it is applied again.
    let rendered = serde_json::to_string(&spec).unwrap_or_default();
    let hash: String = Sha256::digest(rendered.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(ds_name),
            namespace: Some(agent.spec.namespace.clone()),
            labels: Some(labels),
            annotations: Some([(TEMPLATE_HASH_ANNOTATION.to_string(), hash)].into()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn template_hash(ds: &DaemonSet) -> Option<String> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_HASH_ANNOTATION)
        .cloned()
}

/// The NodeAgent's decisions.
pub struct Decisions;

impl Decide for Decisions {
    type Kind = NodeAgent;
    type Status = NodeAgentStatus;
    type World = World;
    type Valid = ();
    const KIND: &'static str = "NodeAgent";

    fn status(agent: &NodeAgent) -> Option<&NodeAgentStatus> {
        agent.status.as_ref()
    }
    fn conditions(status: &NodeAgentStatus) -> &[Condition] {
        &status.conditions
    }
    // The schema says what a NodeAgent may be; what the API server cannot say (its
    // namespace does not exist) the apply of a DaemonSet finds out, and the shell stalls
    // it with reason NamespaceNotFound.
    fn validate(_: &NodeAgent, _: &World) -> Result<(), Invalid> {
        Ok(())
    }
    fn plan(agent: &NodeAgent, world: &World, (): ()) -> Changes<NodeAgentStatus> {
        let planned = plan(agent, world);
        let ns = agent.spec.namespace.clone();
        Changes {
            before: planned
                .apply
                .into_iter()
                .map(|ds| Change::Apply(Child::DaemonSet(Box::new(ds))))
                .chain(planned.delete.into_iter().map(|name| Change::Delete {
                    kind: ChildKind::DaemonSet,
                    namespace: ns.clone(),
                    name,
                }))
                .collect(),
            status: planned.status,
            after: Vec::new(),
            notes: planned.notes,
            requeue: Some(RESYNC),
        }
    }
    fn stalled(agent: &NodeAgent, world: &World, why: &Invalid) -> NodeAgentStatus {
        stalled(agent, why.reason, &why.message, world.now)
    }
}

/// Agents a NodeAgent's status lists, the first by node name: the object stays the same
/// size at any fleet size. `installedNodes` counts them all; `nodeops get nodeagent`
/// lists every one, from the nodes.
pub const AGENTS_IN_STATUS: usize = 100;

/// The agents installed on `nodes`, by node name, each with its UUID.
pub fn instances(agent_uid: &str, nodes: &[NodeView]) -> Vec<AgentInstance> {
    let mut agents: Vec<AgentInstance> = nodes
        .iter()
        .filter_map(|node| {
            Some(AgentInstance {
                agent_uuid: agent_uuid(agent_uid, &node.uid),
                node_name: node.name.clone(),
                version: node.version.clone()?,
            })
        })
        .collect();
    agents.sort_by(|a, b| a.node_name.cmp(&b.node_name));
    agents
}

/// The plan for `agent` in `world`.
pub fn plan(agent: &NodeAgent, world: &World) -> Plan {
    let agent_uid = agent.metadata.uid.clone().unwrap_or_default();
    let mut counts: BTreeMap<String, VersionCount> = BTreeMap::new();
    let mut agents = instances(&agent_uid, &world.nodes);
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
    }

    let mut out = Plan::default();
    let daemonset_mode = agent.spec.mode == AgentMode::DaemonSet;
    let mut wanted = BTreeSet::new();
    if daemonset_mode {
        for version in counts.keys() {
            let ds = render_daemonset(agent, version);
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
    agents.truncate(AGENTS_IN_STATUS);
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
    out
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
mod tests;
