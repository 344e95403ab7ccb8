//! `AsyncCommand`: run one command on a set of nodes now, with a job id and an outcome per
//! node (the seed's "Executing an Asynchronous Command": `task_id`, `cmd_jobs[]`). A
//! selector over more nodes than one batch (100) makes a fleet: the operator splits it into
//! batch AsyncCommands ([`FleetBatch`]) that carry the per-node results.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    COUNT_OR_PERCENT_RULE, Condition, ExecutionMode, IMAGE_PATTERN, NODE_NAME_PATTERN, PodSecurity,
    USERNAME_PATTERN, ZERO_COUNT_OR_PERCENT_RULE,
};
use super::rollout::RolloutPolicy;

/// The seed's command charset plus space: letters, digits, `_ . / : -`. The command is split
/// into argv on spaces and exec'd; no shell ever sees it.
pub const COMMAND_PATTERN: &str = r"^[A-Za-z0-9_./: -]+$";
/// Most nodes one AsyncCommand lists in status (the seed's instance list limit): a batch of
/// a fleet has at most this many.
pub const MAX_NODES: usize = 100;
/// Failed nodes a fleet lists in its own status; the rest are in its batches.
pub const FLEET_FAILURES_SHOWN: usize = 20;

/// Runs a command on a set of nodes, once, and records every node's outcome in status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodeops.io",
    version = "v1alpha1",
    kind = "AsyncCommand",
    namespaced,
    status = "AsyncCommandStatus",
    shortname = "acmd",
    category = "nodeops",
    printcolumn(
        name = "Succeeded",
        type_ = "string",
        json_path = ".status.progress",
        description = "nodes succeeded / nodes addressed"
    ),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.executionMode",
        priority = "1"
    ),
    printcolumn(
        name = "Task",
        type_ = "string",
        json_path = ".status.taskId",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".status.phase"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.command) != has(self.commandRef)").message("exactly one of spec.command and spec.commandRef must be set").field_path(".command"),
    validation = Rule::new("!has(self.parameters) || has(self.commandRef)").message("spec.parameters can only be given with spec.commandRef").field_path(".parameters"),
    validation = Rule::new("has(self.nodeNames) != has(self.nodeSelector)").message("exactly one of spec.nodeNames and spec.nodeSelector must be set").field_path(".nodeNames"),
    validation = Rule::new("!has(self.username) || self.executionMode == 'Host'").message("spec.username is only used in Host mode").field_path(".username"),
    validation = Rule::new("!has(self.image) || self.executionMode == 'Container'").message("spec.image is only used in Container mode").field_path(".image"),
    validation = Rule::new("(has(self.command) ? self.command : '') == (has(oldSelf.command) ? oldSelf.command : '')").message("spec.command is immutable").field_path(".command"),
    validation = Rule::new("(has(self.commandRef) ? self.commandRef : '') == (has(oldSelf.commandRef) ? oldSelf.commandRef : '')").message("spec.commandRef is immutable").field_path(".commandRef"),
    validation = Rule::new("(has(self.nodeNames) ? self.nodeNames : []) == (has(oldSelf.nodeNames) ? oldSelf.nodeNames : [])").message("spec.nodeNames is immutable").field_path(".nodeNames"),
    validation = Rule::new("has(self.nodeSelector) == has(oldSelf.nodeSelector) && (!has(self.nodeSelector) || self.nodeSelector == oldSelf.nodeSelector)").message("spec.nodeSelector is immutable").field_path(".nodeSelector"),
    validation = Rule::new("self.executionMode == oldSelf.executionMode").message("spec.executionMode is immutable").field_path(".executionMode"),
    validation = Rule::new("has(self.parameters) == has(oldSelf.parameters) && (!has(self.parameters) || self.parameters == oldSelf.parameters)").message("spec.parameters is immutable").field_path(".parameters"),
    validation = Rule::new("(has(self.username) ? self.username : '') == (has(oldSelf.username) ? oldSelf.username : '')").message("spec.username is immutable").field_path(".username"),
    validation = Rule::new("!has(self.batch) || has(self.nodeNames)").message("spec.batch is set only on a fleet's batch, which names its nodes").field_path(".batch"),
    validation = Rule::new("has(self.batch) == has(oldSelf.batch)").message("spec.batch cannot be added or removed").field_path(".batch"),
    validation = Rule::new("!has(self.batch) || !has(oldSelf.batch) || self.batch.starts >= oldSelf.batch.starts").message("spec.batch.starts only grows").field_path(".batch.starts"),
)]
pub struct AsyncCommandSpec {
    /// The command line to run on each node, at most 1024 bytes of letters, digits, `_ . / : -`
    /// and spaces (for example `ls -l /system`). It is split on spaces into argv and executed
    /// directly: no shell interprets it. Exactly one of `command` and `commandRef` is set.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = COMMAND_PATTERN))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("spec.command must contain a program to run"))]
    pub command: Option<String>,

    /// Name of a `Command` in this namespace whose script to run instead of `command`.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NODE_NAME_PATTERN))]
    pub command_ref: Option<String>,

    /// Values for the referenced Command's `{{name}}` parameters. They reach the script as
    /// environment variables, never as script text. Only with `commandRef`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$') && k.size() <= 64)").message("spec.parameters names must be letters, digits and _ (at most 64), not starting with a digit"))]
    #[x_kube(validation = Rule::new("self.all(k, self[k].size() <= 4096)").message("spec.parameters values must be at most 4096 bytes"))]
    pub parameters: Option<BTreeMap<String, String>>,

    /// The nodes to run on: 1 to 100 distinct node names (a `nodeSelector` may match any
    /// number). Exactly one of `nodeNames` and `nodeSelector` is set. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 253), regex(pattern = NODE_NAME_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub node_names: Option<Vec<String>>,

    /// Selects the nodes to run on by label, resolved once when the command starts: nodes
    /// that join later are not added. Over more than 100 nodes the command is a fleet: the
    /// operator splits the nodes into batch AsyncCommands of at most 100 (owned by this
    /// one, labelled `nodeops.io/fleet-uid`), this status keeps the totals and the first
    /// failures, and `maxConcurrency`, `maxErrors` and `rollout` hold across the fleet.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// `Container` (default) runs the command in a container of `image` on each node.
    /// `Host` runs it on the node itself, as `username`, through the privileged
    /// `nodeops-exec` runner; it is allowed only in namespaces the operator is configured to
    /// allow. Immutable.
    #[serde(default)]
    pub execution_mode: ExecutionMode,

    /// Container image for `Container` mode; defaults to the operator's `--default-image`
    /// (`busybox:1.36` unless the operator is started with another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: Option<String>,

    /// User to run as in `Host` mode (default `root`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = USERNAME_PATTERN))]
    pub username: Option<String>,

    /// Absolute working directory for the command (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\x00]*$"))]
    pub working_directory: Option<String>,

    /// Seconds the command may run on a node before it is killed and the node reported
    /// `Timeout` (1 to 86400, default 60).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i64,

    /// Retries of a failed node before it is reported failed (0 to 10, default 0: a command
    /// is run at most once per node unless you ask otherwise).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,

    /// Seconds to wait for an addressed node that is NotReady before reporting it
    /// `NodeNotReady` (0 to 3600, default 60).
    #[serde(default = "default_node_ready_timeout")]
    #[schemars(range(min = 0, max = 3600))]
    pub node_ready_timeout_seconds: i64,

    /// Most nodes running at once: a count (`10`) or a percentage of the addressed nodes
    /// (`25%`). Default: all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(COUNT_OR_PERCENT_RULE).message("spec.maxConcurrency must be a count of at least 1 or a percentage from 1% to 100%"))]
    pub max_concurrency: Option<IntOrString>,

    /// Failed nodes after which no further node is started: a count (`0` stops at the first
    /// failure) or a percentage. Nodes never started are reported `Cancelled`. Default: no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(ZERO_COUNT_OR_PERCENT_RULE).message("spec.maxErrors must be a count of at least 0 or a percentage from 0% to 100%"))]
    pub max_errors: Option<IntOrString>,

    /// Container mode: `Restricted` (default, the Pod Security Standards' restricted level:
    /// runs as user 65534 with no capabilities) or `Baseline` (the image's user, often root,
    /// with the runtime's default capabilities) for a command that needs more.
    #[serde(default)]
    pub pod_security: PodSecurity,

    /// When new nodes may start: maintenance windows, a soak time between batches of
    /// `maxConcurrency` nodes and health gates. Nodes that have started always finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,

    /// Annotations added to every node's Pod (for example to opt out of a sidecar
    /// injector). At most 20; keys under `nodeops.io/` are reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('nodeops.io/') && k.size() <= 253)").message("spec.podAnnotations keys under nodeops.io/ are reserved"))]
    pub pod_annotations: Option<BTreeMap<String, String>>,

    /// Seconds after completion when the AsyncCommand (and with it its Jobs) is deleted.
    /// Unset: kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Set by the operator on the batches of a fleet, not by hand: the fleet (this
    /// object's owner) decides how many of the batch's nodes may start, and when the rest
    /// are cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<FleetBatch>,
}

/// How a fleet steers one of its batches.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetBatch {
    /// How many of the batch's nodes may have started, in all. The fleet raises it as its
    /// `maxConcurrency` and rollout allow; it never falls.
    #[schemars(range(min = 0, max = 100))]
    pub starts: i32,
    /// Set when the fleet stops starting nodes (its `maxErrors` reached): the batch's nodes
    /// not started are Cancelled with reason MaxErrorsReached and this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub cancel: Option<String>,
}

fn default_timeout() -> i64 {
    60
}

/// The spec the API server would default an empty one to, for building children.
impl Default for AsyncCommandSpec {
    fn default() -> Self {
        Self {
            command: None,
            command_ref: None,
            parameters: None,
            node_names: None,
            node_selector: None,
            execution_mode: ExecutionMode::default(),
            image: None,
            username: None,
            working_directory: None,
            timeout_seconds: default_timeout(),
            backoff_limit: 0,
            node_ready_timeout_seconds: default_node_ready_timeout(),
            max_concurrency: None,
            max_errors: None,
            rollout: None,
            pod_security: PodSecurity::default(),
            pod_annotations: None,
            ttl_seconds_after_finished: None,
            batch: None,
        }
    }
}

fn default_node_ready_timeout() -> i64 {
    60
}

/// Where a node's run stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NodePhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl NodePhase {
    /// Whether the node's outcome is final.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            NodePhase::Succeeded | NodePhase::Failed | NodePhase::Cancelled
        )
    }
}

/// Where the whole command stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommandPhase {
    #[default]
    Pending,
    Running,
    /// Every node succeeded.
    Succeeded,
    /// At least one node failed or was cancelled.
    Failed,
    /// The spec cannot be run (see the Stalled condition).
    Invalid,
}

/// One node's job and outcome (the seed's `CmdJob`, with the outcome added).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CmdJob {
    /// The node (the seed's `instance_id`).
    pub node_name: String,
    /// Stable id of this node's run (the seed's `job_id`), derived from the task and node.
    pub job_id: String,
    /// Name of the `batch/v1` Job that runs it, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Pending, Running, Succeeded, Failed or Cancelled.
    pub phase: NodePhase,
    /// Exit code of the command, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The command's combined output, or its end (at most 2048 bytes) when it is longer
    /// (`outputTruncated`). `nodeops logs asynccommand NAME --node NODE` prints all of it
    /// while the node's Pod exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// True when `output` holds only the end of a longer output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// The output's beginning (at most 512 bytes), when it is too long to keep whole: the
    /// output is `outputHead`, then `outputBytesDropped` bytes not kept, then `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_head: Option<String>,
    /// Bytes of the output between `outputHead` and `output` that are not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes_dropped: Option<i64>,
    /// Machine-readable reason of a failure or cancellation: NodeNotFound, NodeNotReady,
    /// AdmissionRefused, Timeout, ExitCode, MaxErrorsReached, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the node's run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the node's outcome became final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// Observed state of an AsyncCommand.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AsyncCommandStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Id of this run (the seed's `task_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Overall phase.
    #[serde(default)]
    pub phase: CommandPhase,
    /// Succeeded over addressed nodes, for example `97/100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Nodes addressed.
    #[serde(default)]
    pub total: i32,
    /// Nodes not started yet.
    #[serde(default)]
    pub pending: i32,
    /// Nodes running.
    #[serde(default)]
    pub running: i32,
    /// Nodes succeeded.
    #[serde(default)]
    pub succeeded: i32,
    /// Nodes failed.
    #[serde(default)]
    pub failed: i32,
    /// Nodes never started (maxErrors reached, or the command stopped).
    #[serde(default)]
    pub cancelled: i32,
    /// When the first node started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When every node's outcome was final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// One entry per addressed node (the seed's `cmd_jobs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["nodeName"]))]
    pub cmd_jobs: Vec<CmdJob>,
    /// When the next node may start, while `spec.rollout` holds the run (a maintenance
    /// window, a soak time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_time: Option<Time>,
    /// A fleet's batches and first failures (a fleet lists no `cmdJobs`: each node's
    /// entry is in its batch's status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
    /// Ready, Reconciling, Stalled (kstatus), Complete, Failed, and Paused while
    /// `spec.rollout` holds the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A fleet's record of its batches.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// How many batch AsyncCommands the fleet was split into when it started (labelled
    /// `nodeops.io/fleet-uid` with this object's uid, annotated `nodeops.io/fleet-part:
    /// i/n`). Their membership is fixed from then on.
    pub batches: i32,
    /// Nodes the batches have started so far (within `maxConcurrency`).
    #[serde(default)]
    pub started: i32,
    /// The first failed nodes, in batch order (at most 20); `nodeops get asynccommand`
    /// and each batch's status have every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FleetFailure>,
}

/// A failed node of a fleet.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetFailure {
    pub node_name: String,
    /// The batch AsyncCommand whose status has the node's entry.
    pub batch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
