//! The `nodeops.io/v1alpha1` API: the six custom resources, their validation (OpenAPI schema
//! and CEL rules the API server enforces at apply) and the status each controller writes.
//!
//! These types are the only source of the CRD manifests in `crds/` and the Helm chart
//! (`crdgen`); `///` docs become `kubectl explain`.

// kube's derive takes repeated `printcolumn(...)` attributes, which clippy mistakes for
// duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod agent_invocation;
pub mod agent_upgrade_job;
pub mod async_command;
pub mod command;
pub mod common;
pub mod invoker;
pub mod manifests;
pub mod node_agent;
pub mod rollout;

pub use agent_invocation::{AgentInvocation, AgentInvocationSpec, AgentInvocationStatus};
pub use agent_upgrade_job::{AgentUpgradeJob, AgentUpgradeJobSpec, AgentUpgradeJobStatus};
pub use async_command::{AsyncCommand, AsyncCommandSpec, AsyncCommandStatus};
pub use command::{Command, CommandSpec, CommandStatus};
pub use invoker::{Invoker, InvokerSpec, InvokerStatus};
pub use node_agent::{NodeAgent, NodeAgentSpec, NodeAgentStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every nodeops kind.
pub const GROUP: &str = "nodeops.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get` category that lists every nodeops kind.
pub const CATEGORY: &str = "nodeops";

/// Every CRD of the API, in a stable order (the order `crds/` is written in), labelled as
/// part of nodeops.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        AsyncCommand::crd(),
        Command::crd(),
        Invoker::crd(),
        NodeAgent::crd(),
        AgentInvocation::crd(),
        AgentUpgradeJob::crd(),
    ];
    for crd in &mut crds {
        let labels = crd.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(
            crate::keys::NAME_LABEL.into(),
            crate::keys::MANAGED_BY.into(),
        );
        labels.insert(
            crate::keys::PART_OF_LABEL.into(),
            crate::keys::MANAGED_BY.into(),
        );
    }
    crds
}

#[cfg(test)]
mod cel_tests;
