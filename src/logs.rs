//! `nodeops logs KIND NAME --node NODE`: a node's whole output, read from its Pod (the
//! runner copies the command's output to its stdout as it comes). Status keeps only the
//! output's beginning and end; the Pod has all of it until it is garbage-collected with
//! its Job, and then this says so instead of printing part of it.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, ResourceExt};
use thiserror::Error;

use crate::api::{AgentInvocation, AsyncCommand, NodeAgent};
use crate::engine::MAIN_CONTAINER;
use crate::keys::{INVOCATION_ID_ANNOTATION, NODE_ANNOTATION, OWNER_UID_LABEL};

/// Why a node's output cannot be printed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("nodeops logs: reads asynccommand (acmd) and agentinvocation (ainv), not {0:?}")]
    Kind(String),
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("{0}")]
    NotAddressed(String),
    #[error("listing the Pods: {0}")]
    ListPods(#[source] kube::Error),
    #[error("reading the log of Pod {pod}: {source}")]
    ReadLog { pod: String, source: kube::Error },
    #[error("{0}")]
    Gone(String),
}

/// Where a node's Pods are: their namespaces, and what picks them out there.
struct Target {
    uid: String,
    namespaces: Vec<String>,
    /// (annotation, value) the node's Pods carry.
    annotation: (&'static str, String),
    /// How to see what status kept, for the message when the Pods are gone.
    get: String,
}

/// The whole output of `node` in the run of the object `kind`/`name`: each attempt's
/// log, oldest first, under a header when there were several.
pub async fn node_output(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: &str,
    node: &str,
) -> Result<String, Error> {
    let target = target(client, kind, namespace, name, node).await?;
    let mut pods: Vec<Pod> = Vec::new();
    for ns in &target.namespaces {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let listed = api
            .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={}", target.uid)))
            .await
            .map_err(Error::ListPods)?;
        let (key, value) = &target.annotation;
        pods.extend(
            listed
                .items
                .into_iter()
                .filter(|p| p.annotations().get(*key) == Some(value)),
        );
    }
    if pods.is_empty() {
        return Err(Error::Gone(format!(
            "the Pod that ran on {node} no longer exists (deleted, or garbage-collected with its Job): its whole output is gone; status keeps its beginning and end ({})",
            target.get
        )));
    }
    pods.sort_by_key(|p| p.creation_timestamp());
    let attempts = pods.len();
    let mut out = String::new();
    for (i, pod) in pods.iter().enumerate() {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let params = LogParams {
            container: Some(MAIN_CONTAINER.into()),
            ..LogParams::default()
        };
        let log = api
            .logs(&pod.name_any(), &params)
            .await
            .map_err(|source| Error::ReadLog {
                pod: pod.name_any(),
                source,
            })?;
        if attempts > 1 {
            out.push_str(&format!(
                "--- attempt {} of {attempts} (Pod {})\n",
                i + 1,
                pod.name_any()
            ));
        }
        out.push_str(&log);
    }
    Ok(out)
}

async fn target(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: &str,
    node: &str,
) -> Result<Target, Error> {
    match kind.to_lowercase().as_str() {
        "asynccommand" | "asynccommands" | "acmd" => {
            let api: Api<AsyncCommand> = Api::namespaced(client.clone(), namespace);
            let obj = api.get(name).await.map_err(|source| Error::Read {
                kind: "AsyncCommand",
                name: name.into(),
                source,
            })?;
            let addressed = obj
                .status
                .iter()
                .flat_map(|s| s.cmd_jobs.iter())
                .any(|e| e.node_name == node);
            if !addressed {
                return Err(Error::NotAddressed(format!(
                    "AsyncCommand {name} has no node {node} (nodeops get asynccommand {name} -n {namespace} lists its nodes)"
                )));
            }
            Ok(Target {
                uid: obj.metadata.uid.clone().unwrap_or_default(),
                namespaces: vec![namespace.into()],
                annotation: (NODE_ANNOTATION, node.into()),
                get: format!("nodeops get asynccommand {name} -n {namespace}"),
            })
        }
        "agentinvocation" | "agentinvocations" | "ainv" => {
            let api: Api<AgentInvocation> = Api::namespaced(client.clone(), namespace);
            let obj = api.get(name).await.map_err(|source| Error::Read {
                kind: "AgentInvocation",
                name: name.into(),
                source,
            })?;
            let Some(instance) = obj
                .status
                .iter()
                .flat_map(|s| s.invocations.iter())
                .find(|e| e.instance_id == node)
            else {
                return Err(Error::NotAddressed(format!(
                    "AgentInvocation {name} has no instance {node} (nodeops get agentinvocation {name} -n {namespace} lists them)"
                )));
            };
            // Installer Jobs run in the agent's namespace, remote installs in the
            // invocation's.
            let agents: Api<NodeAgent> = Api::all(client.clone());
            let agent = agents
                .get_opt(&obj.spec.invocation_target)
                .await
                .map_err(|source| Error::Read {
                    kind: "NodeAgent",
                    name: obj.spec.invocation_target.clone(),
                    source,
                })?;
            let mut namespaces = vec![namespace.to_string()];
            if let Some(agent) = agent
                && agent.spec.namespace != namespace
            {
                namespaces.push(agent.spec.namespace);
            }
            Ok(Target {
                uid: obj.metadata.uid.clone().unwrap_or_default(),
                namespaces,
                annotation: (INVOCATION_ID_ANNOTATION, instance.invocation_id.clone()),
                get: format!("nodeops get agentinvocation {name} -n {namespace}"),
            })
        }
        other => Err(Error::Kind(other.into())),
    }
}
