//! `AgentUpgradeJob`: upgrade agents to a target version in a controlled rollout, with a
//! dry run (`simulated`) and a result per agent (the seed's TokenBatchUpgrade).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{COUNT_OR_PERCENT_RULE, Condition, NODE_NAME_PATTERN, VERSION_PATTERN};
use super::rollout::RolloutPolicy;

/// An agent UUID as NodeAgent status reports it.
pub const AGENT_UUID_PATTERN: &str =
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// Upgrades a set of agents to `targetVersion`, at most `maxConcurrency` nodes at a time.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodeops.io",
    version = "v1alpha1",
    kind = "AgentUpgradeJob",
    namespaced,
    status = "AgentUpgradeJobStatus",
    shortname = "aupj",
    category = "nodeops",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetVersion"),
    printcolumn(name = "Upgraded", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(name = "Simulated", type_ = "boolean", json_path = ".spec.simulated"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.agents) != has(self.nodeSelector)").message("exactly one of spec.agents and spec.nodeSelector must be set").field_path(".agents"),
    validation = Rule::new("self.targetVersion == oldSelf.targetVersion").message("spec.targetVersion is immutable").field_path(".targetVersion"),
    validation = Rule::new("self.simulated == oldSelf.simulated").message("spec.simulated is immutable: create a new AgentUpgradeJob to run the plan").field_path(".simulated"),
    validation = Rule::new("self.agent == oldSelf.agent").message("spec.agent is immutable").field_path(".agent"),
    validation = Rule::new("(has(self.agents) ? self.agents : []) == (has(oldSelf.agents) ? oldSelf.agents : [])").message("spec.agents is immutable").field_path(".agents"),
    validation = Rule::new("has(self.nodeSelector) == has(oldSelf.nodeSelector) && (!has(self.nodeSelector) || self.nodeSelector == oldSelf.nodeSelector)").message("spec.nodeSelector is immutable").field_path(".nodeSelector"),
)]
pub struct AgentUpgradeJobSpec {
    /// Name of the NodeAgent whose agents to upgrade (default `telescope`).
    #[serde(default = "default_agent")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub agent: String,

    /// Agent UUIDs to upgrade (the seed's agentUuids), as `nodeops get nodeagent` lists them:
    /// 1 to 1000 distinct UUIDs. Exactly one of `agents` and `nodeSelector` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000), inner(regex(pattern = AGENT_UUID_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub agents: Option<Vec<String>>,

    /// Upgrades the agents on the nodes this selects instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Version to upgrade to (at most 64 of letters, digits, `_`, `-`, `.`).
    #[schemars(length(min = 1, max = 64), regex(pattern = VERSION_PATTERN))]
    pub target_version: String,

    /// Compute and report the whole plan (who goes from which version to which, who is
    /// current, who cannot be upgraded and why) and change nothing.
    #[serde(default)]
    pub simulated: bool,

    /// Most nodes upgrading at once: a count or a percentage of the agents (default 1).
    #[serde(default = "default_concurrency")]
    #[x_kube(validation = Rule::new(COUNT_OR_PERCENT_RULE).message("spec.maxConcurrency must be a count of at least 1 or a percentage from 1% to 100%"))]
    pub max_concurrency: IntOrString,

    /// Failed upgrades tolerated; one more stops the rollout, leaving the rest untouched
    /// (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub max_failures: i32,

    /// Holds the rollout: nodes in flight finish, no new node starts.
    #[serde(default)]
    pub paused: bool,

    /// Nodes upgraded first, in this order, before any other (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 253), regex(pattern = NODE_NAME_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub canary_nodes: Vec<String>,

    /// Roll a node whose upgrade failed back to its previous version.
    #[serde(default)]
    pub rollback_on_failure: bool,

    /// Let agents above `targetVersion` be moved down to it. Without it they are skipped
    /// with `DowngradeNotAllowed`: a target below the running version is taken for a
    /// mistake, not an intent.
    #[serde(default)]
    pub allow_downgrade: bool,

    /// When new nodes may start: maintenance windows, a soak time between batches and
    /// health gates that hold the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
}

fn default_agent() -> String {
    "telescope".into()
}

fn default_concurrency() -> IntOrString {
    IntOrString::Int(1)
}

/// Overall status, as the seed has it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeJobState {
    #[default]
    Pending,
    Running,
    Success,
    Failed,
    /// A simulated job: the plan is in `agents`; nothing changed.
    Planned,
}

/// One agent's upgrade status: the seed's success and failed, plus the states before and
/// besides them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AgentUpgradeState {
    /// Not started.
    #[default]
    Pending,
    /// Upgrading now.
    Running,
    /// Upgraded.
    Success,
    /// The upgrade failed (see `error`).
    Failed,
    /// Already at the target version; nothing to do.
    Current,
    /// Cannot be upgraded (see `error`), or not started because the rollout stopped.
    Skipped,
    /// Failed, then rolled back to `oldVersion`.
    RolledBack,
}

/// Which way an agent's version moves.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Upgrade,
    Downgrade,
}

/// One agent's upgrade (the seed's agents[] entry).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpgrade {
    /// The agent's UUID.
    pub agent_uuid: String,
    /// The node it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Version before the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_version: Option<String>,
    /// Version after the upgrade (in a simulated job: the version it would get).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version: Option<String>,
    /// pending, running, success, failed, current, skipped or rolledBack.
    pub status: AgentUpgradeState,
    /// Whether the change is an upgrade or a downgrade (set when the agent's version is to
    /// change; in a simulated job, what would happen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When its upgrade started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When its upgrade ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// The ConfigMaps holding a large job's plan.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentPlan {
    /// How many ConfigMaps: labelled `nodeops.io/upgrade-job-uid=<job uid>` and
    /// `nodeops.io/upgrade-role=plan`, each annotated `nodeops.io/plan-part: <i>/<n>`.
    pub config_maps: i32,
    /// How many agents they hold.
    pub agents: i32,
}

/// Agents per state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentCounts {
    pub total: i32,
    pub pending: i32,
    pub running: i32,
    pub success: i32,
    pub failed: i32,
    pub current: i32,
    pub skipped: i32,
    pub rolled_back: i32,
}

/// Observed state of an AgentUpgradeJob (the seed's response, plus conditions and counts).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpgradeJobStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Unique id of the upgrade job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The version all agents are being upgraded to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// One entry per agent while the job has at most 100 agents (the seed's response).
    /// A larger job's plan is kept in ConfigMaps (see `plan`), and this lists only the
    /// failures and the agents upgrading now, at most 100: the object stays the same size
    /// at any fleet size. `nodeops get` shows every agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["agentUuid"]))]
    pub agents: Vec<AgentUpgrade>,
    /// Where a job with more agents than its status lists keeps its plan: the agents,
    /// decided once when it started, in ConfigMaps that never change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<AgentPlan>,
    /// Agents per state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<AgentCounts>,
    /// How many of the agents the plan left pending have been started, in plan order
    /// (an agent counted here whose AgentInvocation is gone failed: it is never started
    /// twice).
    #[serde(default)]
    pub started: i32,
    /// pending, running, success or failed; planned for a simulated job.
    #[serde(default)]
    pub status: UpgradeJobState,
    /// Whether this job is a simulation that changed nothing.
    #[serde(default)]
    pub simulated: bool,
    /// Upgraded (or current) over total, for example `45/50`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Agents upgrading now.
    #[serde(default)]
    pub in_flight: i32,
    /// Agents whose upgrade failed.
    #[serde(default)]
    pub failures: i32,
    /// When the job was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// When the job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// When the next node may start, while the rollout is held by a maintenance window or
    /// a soak time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_time: Option<Time>,
    /// Ready, Reconciling, Stalled, Complete, Failed, Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
