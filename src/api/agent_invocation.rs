//! `AgentInvocation`: one Cloud Eye agent maintenance task (INSTALL, UPDATE, ROLLBACK, RETRY,
//! SET_REMOTE_INSTALL_HOST, REMOTE_INSTALL) with a result per instance.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, INVOCATION_ID_PATTERN, NODE_NAME_PATTERN, SecretKeyRef, VERSION_PATTERN,
};

/// An agent maintenance task on nodes, with one invocation id and result per instance.
/// The spec is immutable: create a new AgentInvocation for a new task.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodeops.io",
    version = "v1alpha1",
    kind = "AgentInvocation",
    namespaced,
    status = "AgentInvocationStatus",
    shortname = "ainv",
    category = "nodeops",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.invocationType"),
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.invocationTarget"),
    printcolumn(name = "Succeeded", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("spec is immutable: create a new AgentInvocation for a new task"),
    validation = Rule::new("!(self.invocationType in ['Install', 'Update']) || has(self.nodeNames)").message("spec.nodeNames is required when invocationType is Install or Update").field_path(".nodeNames"),
    validation = Rule::new("!(self.invocationType in ['Rollback', 'Retry']) || has(self.invocationIds)").message("spec.invocationIds is required when invocationType is Rollback or Retry").field_path(".invocationIds"),
    validation = Rule::new("self.invocationType != 'SetRemoteInstallHost' || (has(self.nodeNames) && size(self.nodeNames) == 1)").message("spec.nodeNames must name exactly one node when invocationType is SetRemoteInstallHost").field_path(".nodeNames"),
    validation = Rule::new("self.invocationType != 'RemoteInstall' || (has(self.remoteInstallMeta) && size(self.remoteInstallMeta) > 0)").message("spec.remoteInstallMeta is required when invocationType is RemoteInstall").field_path(".remoteInstallMeta"),
    validation = Rule::new("self.invocationType == 'RemoteInstall' || !has(self.remoteInstallMeta) || size(self.remoteInstallMeta) == 0").message("spec.remoteInstallMeta is only used when invocationType is RemoteInstall").field_path(".remoteInstallMeta"),
    validation = Rule::new("self.invocationType in ['Rollback', 'Retry'] || !has(self.invocationIds)").message("spec.invocationIds is only used when invocationType is Rollback or Retry").field_path(".invocationIds"),
    validation = Rule::new("!(self.invocationType in ['Rollback', 'Retry', 'RemoteInstall']) || !has(self.nodeNames)").message("spec.nodeNames is not used when invocationType is Rollback, Retry or RemoteInstall").field_path(".nodeNames"),
    validation = Rule::new("!has(self.version) || !has(self.versionType)").message("spec.version and spec.versionType are mutually exclusive").field_path(".version"),
)]
pub struct AgentInvocationSpec {
    /// Task type: Install, Update, Rollback, Retry, SetRemoteInstallHost or RemoteInstall.
    pub invocation_type: InvocationType,

    /// Name of the NodeAgent to act on (default `telescope`).
    #[serde(default = "default_target")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub invocation_target: String,

    /// The nodes (the seed's instance_ids): 1 to 100 distinct names. Required for Install
    /// and Update; exactly one for SetRemoteInstallHost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 253), regex(pattern = NODE_NAME_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub node_names: Option<Vec<String>>,

    /// Earlier invocation ids to roll back or retry: 1 to 100 distinct ids. Required for
    /// Rollback and Retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(regex(pattern = INVOCATION_ID_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub invocation_ids: Option<Vec<String>>,

    /// Which of the NodeAgent's versions to install or update to: BasicVersion (default)
    /// or AdvanceVersion. Exclusive with `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_type: Option<VersionType>,

    /// An explicit version to install or update to (1 to 64 of letters, digits, `_`, `-`,
    /// `.`). Exclusive with `versionType`; omitted, the NodeAgent's version of
    /// `versionType` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = VERSION_PATTERN))]
    pub version: Option<String>,

    /// Who asked (the seed's origin): CES (the console), APICOM_BMS (bare metal) or
    /// ADMIN_SERVER (the O&M platform). Recorded, not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,

    /// Hosts outside the cluster to install on over SSH from the remote install host
    /// (0 to 100). Required, and not empty, for RemoteInstall; other types take none (an
    /// empty list, as the seed allows, is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["remoteIp"]))]
    pub remote_install_meta: Option<Vec<RemoteInstallHost>>,
}

fn default_target() -> String {
    "telescope".into()
}

/// Agent maintenance task type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvocationType {
    Install,
    Update,
    Rollback,
    Retry,
    SetRemoteInstallHost,
    RemoteInstall,
}

/// Which configured version of the agent.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionType {
    BasicVersion,
    AdvanceVersion,
}

/// The caller of the task, as the seed names it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum Origin {
    CES,
    APICOM_BMS,
    ADMIN_SERVER,
}

/// A host outside the cluster to install the agent on (the seed's RemoteInstallHostInfo).
/// The password or key is never in the spec: it is read from `credentialsSecretRef`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteInstallHost {
    /// Name of the host (1 to 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub instance_name: Option<String>,

    /// IPv4 address of the host.
    #[schemars(length(min = 7, max = 15))]
    #[x_kube(validation = Rule::new("isIP(self) && ip(self).family() == 4").message("remoteIp must be an IPv4 address"))]
    pub remote_ip: String,

    /// User to log in as (1 to 32 characters).
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z_][a-z0-9_-]*\$?$"))]
    pub user_name: String,

    /// SSH port (1 to 65535, default 22).
    #[serde(default = "default_ssh_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Log in with a private key (the Secret's `ssh-privatekey` key) instead of a password
    /// (the Secret's `password` key).
    #[serde(default)]
    pub use_pem: bool,

    /// Secret in this namespace holding the password or private key.
    pub credentials_secret_ref: SecretKeyRef,

    /// Accept the host's key unverified when the Secret has no `known_hosts` (default
    /// false: such a host is refused with `HostKeyUnknown` before anything is sent to
    /// it). The instance's message then says the key was not verified. A `known_hosts`
    /// in the Secret is always checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_accept_unknown_host_key: bool,
}

fn default_ssh_port() -> i32 {
    22
}

/// What one instance's invocation does to its node or host.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceAction {
    Install,
    Update,
    Rollback,
    SetRemoteInstallHost,
    RemoteInstall,
}

/// Where an instance's invocation stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvocationPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl InvocationPhase {
    /// Whether the instance's outcome is final.
    pub fn is_final(self) -> bool {
        matches!(self, InvocationPhase::Succeeded | InvocationPhase::Failed)
    }
}

/// The seed's final result of an instance: successful or error.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RetStatus {
    Successful,
    Error,
}

/// One instance's invocation (the seed's BatchCreateInvocationInfo).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InvocationResult {
    /// The node, or the remote host's instanceName (or IP) for RemoteInstall.
    pub instance_id: String,
    /// The remote host's address, for RemoteInstall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    /// Stable, unique id of this instance's invocation; Rollback and Retry take it.
    pub invocation_id: String,
    /// What this instance does: Install, Update, Rollback, SetRemoteInstallHost or
    /// RemoteInstall (a Retry repeats its source's action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<InstanceAction>,
    /// The version this instance installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Pending, Running, Succeeded or Failed.
    pub phase: InvocationPhase,
    /// successful or error, once final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret_status: Option<RetStatus>,
    /// `invocationmgr.NNNN` error code of a failure (see docs/error-codes.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Machine reason of a failure (NodeNotFound, NodeNotReady, AgentNotInstalled, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable outcome of a success (for example that the node was already at the
    /// version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Human-readable detail of a failure (at most 128 characters, as in the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Version installed before this invocation (none if the agent was not installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_before: Option<String>,
    /// Version installed after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_after: Option<String>,
    /// The installer or remote-install Job (HostInstaller mode and RemoteInstall), once
    /// created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The invocation this one retries or rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_invocation_id: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it became final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// Overall phase of an AgentInvocation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentInvocationPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    /// Finished with at least one instance in error.
    Failed,
    /// The spec cannot be acted on (see the Stalled condition).
    Invalid,
}

/// Observed state of an AgentInvocation.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentInvocationStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Overall phase.
    #[serde(default)]
    pub phase: AgentInvocationPhase,
    /// Successful over instances, for example `19/20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// One entry per instance (the seed's invocations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["invocationId"]))]
    pub invocations: Vec<InvocationResult>,
    /// When every instance was final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Ready, Reconciling, Stalled, Complete, Failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
