//! `NodeAgent` (cluster-scoped): what a node agent is (the seeds' `telescope`) and how it is
//! realised on nodes: one DaemonSet per live version, or installer Jobs on the host.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, IMAGE_PATTERN, NODE_NAME_PATTERN, OBJECT_NAME_PATTERN, VERSION_PATTERN,
};

/// A node agent nodeops installs, updates and rolls back on nodes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodeops.io",
    version = "v1alpha1",
    kind = "NodeAgent",
    status = "NodeAgentStatus",
    shortname = "nagent",
    category = "nodeops",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Basic", type_ = "string", json_path = ".spec.basicVersion"),
    printcolumn(name = "Advance", type_ = "string", json_path = ".spec.advanceVersion"),
    printcolumn(name = "Installed", type_ = "integer", json_path = ".status.installedNodes"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63").message("a NodeAgent name must be at most 63 characters: it becomes the node label agent.nodeops.io/<name>")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.mode != 'HostInstaller' || has(self.installer)").message("spec.installer is required when mode is HostInstaller").field_path(".installer"),
    validation = Rule::new("self.mode != 'DaemonSet' || !has(self.installer)").message("spec.installer is only used when mode is HostInstaller").field_path(".installer"),
    validation = Rule::new("self.__namespace__ == oldSelf.__namespace__").message("spec.namespace is immutable").field_path(".namespace"),
)]
pub struct NodeAgentSpec {
    /// Namespace that holds the agent's DaemonSets or installer Jobs. Immutable.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,

    /// `DaemonSet`: a containerised agent, one DaemonSet per live version selecting on the
    /// node label. `HostInstaller`: an installer Job on each node's host.
    #[serde(default)]
    pub mode: AgentMode,

    /// Image repository of the agent (DaemonSet mode) without a tag; a version is used as
    /// the tag.
    #[schemars(
        length(min = 1, max = 512),
        regex(pattern = r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9]$")
    )]
    pub image: String,

    /// The version `versionType: BasicVersion` means.
    #[schemars(length(min = 1, max = 64), regex(pattern = VERSION_PATTERN))]
    pub basic_version: String,

    /// The version `versionType: AdvanceVersion` means (default: the basic version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = VERSION_PATTERN))]
    pub advance_version: Option<String>,

    /// How the HostInstaller runs the installer on a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<InstallerSpec>,

    /// Seconds an install, update or rollback may take on one node before it is reported
    /// failed (10 to 3600, default 300). In DaemonSet mode the agent counts as running once
    /// its pod has stayed Ready for 3 s (a crash-looping agent is Ready for an instant).
    #[serde(default = "default_ready_timeout")]
    #[schemars(range(min = 10, max = 3600))]
    pub ready_timeout_seconds: i64,

    /// Node that reaches machines outside the cluster for RemoteInstall; set by an
    /// AgentInvocation of type SetRemoteInstallHost or directly here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NODE_NAME_PATTERN))]
    pub remote_install_host: Option<String>,

    /// How RemoteInstall installs the agent on a host outside the cluster over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_installer: Option<RemoteInstallerSpec>,

    /// Annotations added to the agent's pods (DaemonSet mode) and to its installer and
    /// remote-install pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<std::collections::BTreeMap<String, String>>,
}

fn default_ready_timeout() -> i64 {
    300
}

/// How an agent is realised on nodes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentMode {
    #[default]
    DaemonSet,
    HostInstaller,
}

/// The installer that HostInstaller mode runs on a node's host.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstallerSpec {
    /// Installer image: its `/payload` directory is staged on the host, where the Command
    /// finds it as `$NODEOPS_PAYLOAD` (docs/installers.md). It needs no shell and no
    /// runner: the Job copies the runner in.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: String,
    /// Name of a `Command` (in the agent's namespace) whose script installs, updates or
    /// rolls back the agent, run on the host. It receives the parameters `action`,
    /// `version` and `previousVersion` as environment variables (`NODEOPS_PARAM_<name>`)
    /// and the staged payload as `$NODEOPS_PAYLOAD`.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub command_ref: String,
}

/// The script RemoteInstall runs, as `sh`, on each remote host over SSH.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteInstallerSpec {
    /// Name of a `Command` (in the agent's namespace) whose script installs the agent on
    /// a host. It receives the parameters `action` (`install`) and `version` as
    /// environment variables (`NODEOPS_PARAM_action`, `NODEOPS_PARAM_version`).
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub command_ref: String,
    /// Seconds the SSH session may take, connection included (10 to 3600, default 600).
    #[serde(default = "default_remote_timeout")]
    #[schemars(range(min = 10, max = 3600))]
    pub timeout_seconds: i64,
}

fn default_remote_timeout() -> i64 {
    600
}

/// How many nodes run one version.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionCount {
    /// The version.
    pub version: String,
    /// Nodes labelled with it.
    pub nodes: i32,
    /// Of those, nodes where the agent is running and ready (DaemonSet mode).
    #[serde(default)]
    pub ready: i32,
}

/// One installed agent, with the stable UUID AgentUpgradeJob addresses it by.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentInstance {
    /// Stable id of the agent on this node: a UUID (version 5) of the NodeAgent's and the
    /// node's uids, so it survives renames of neither and reinstalls of the agent.
    pub agent_uuid: String,
    /// The node.
    pub node_name: String,
    /// The installed version.
    pub version: String,
}

/// Observed state of a NodeAgent.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeAgentStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes with any version installed.
    #[serde(default)]
    pub installed_nodes: i32,
    /// Nodes per installed version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionCount>,
    /// The installed agents with their UUIDs, the first 100 by node name (all of them on
    /// up to 100 nodes; `installedNodes` counts them all, and `nodeops get nodeagent`
    /// lists every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentInstance>,
    /// Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
