//! What the controllers are configured with: read by the decisions (which namespaces may
//! run on the host, which images run) and by the controllers (which namespace to watch).
//! The process's own settings, leader election and the metrics endpoint, are
//! [`crate::operator::Config`].

use std::collections::BTreeSet;

/// The controllers' settings.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Watch only this namespace (all namespaces when unset).
    pub namespace: Option<String>,
    /// Namespaces where `executionMode: Host` is allowed; empty means nowhere.
    pub host_mode_namespaces: BTreeSet<String>,
    /// Image that carries `nodeops-exec`.
    pub runner_image: String,
    /// The host process Host-mode runners join the namespaces of: a PID or a process name.
    pub host_process: String,
    /// `imagePullPolicy` of node runs' containers (none: the API server's default).
    pub image_pull_policy: Option<String>,
    /// Image of Container-mode commands that name none.
    pub default_image: String,
    /// Nodes per batch of a fleet (1 to 100; 0 reads as 100): an AsyncCommand whose
    /// selector matches more is split into batches of this many.
    pub fleet_batch_nodes: usize,
    /// The bounds of what an AgentUpgradeJob writes.
    pub upgrade_limits: crate::controller::agent_upgrade_job::plan::PlanLimits,
}

impl Settings {
    /// Nodes per batch of a fleet.
    pub fn batch_nodes(&self) -> usize {
        match self.fleet_batch_nodes {
            0 => crate::api::async_command::MAX_NODES,
            n => n.min(crate::api::async_command::MAX_NODES),
        }
    }

    /// The namespaces Host mode is allowed in, for a message.
    pub fn host_mode_allowed_in(&self) -> String {
        if self.host_mode_namespaces.is_empty() {
            "no namespace".into()
        } else {
            self.host_mode_namespaces
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}
