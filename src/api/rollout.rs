//! When a rollout may start nodes: maintenance windows, a soak time between batches and
//! health gates, shared by AgentUpgradeJob, AsyncCommand and Invoker (which hands its
//! policy to each run it creates). Nodes already started always finish; the policy only
//! decides when the next node may start.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A cron expression: five fields of cron's characters (checked fully by the controller).
pub const CRON_PATTERN: &str = r"^\S+( \S+){4}$";
/// An IANA time zone name.
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";
/// A duration as hours, minutes and seconds, for example `2h`, `90m` or `1h30m20s`:
/// the form both Go (`kubectl`, CEL) and the operator read the same.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,4}h)?([0-9]{1,5}m)?([0-9]{1,6}s)?$";

/// When and how fast new nodes start. Every part is optional; an empty policy starts
/// nodes as soon as `maxConcurrency` allows.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// Windows in which new nodes may start (at most 10; none: any time). Outside every
    /// window no node starts; nodes already running finish; the rollout resumes where it
    /// stopped when the next window opens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub maintenance_windows: Vec<MaintenanceWindow>,

    /// Seconds to wait after a batch has finished before the next batch starts (0 to
    /// 86400, default 0). With a soak time the rollout goes in batches of
    /// `maxConcurrency` nodes: a batch starts only when the previous one has finished and
    /// soaked.
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub soak_seconds: i64,

    /// No new node starts while any of these is unhealthy (at most 8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub health_gates: Vec<HealthGate>,
}

/// A recurring window: opens at each time of `schedule` and stays open for `duration`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// When the window opens: a 5-field cron expression (minute hour day-of-month month
    /// day-of-week), read in `timeZone`. A time that does not exist on the day clocks go
    /// forward opens the window at the first minute after the gap.
    #[schemars(length(min = 9, max = 128), regex(pattern = CRON_PATTERN))]
    pub schedule: String,

    /// How long the window stays open: hours, minutes and seconds such as `4h`, `90m`,
    /// `1h30m`, from 1s to 168h. Elapsed time: on the night clocks change, a window lasts
    /// as long as on any other night.
    #[schemars(length(min = 2, max = 20), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('168h')").message("duration must be from 1s to 168h"))]
    pub duration: String,

    /// IANA time zone the schedule is read in (for example `Europe/Berlin`); default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: Option<String>,
}

/// One health signal. Exactly one of `nodeCondition` and `object` is set.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.nodeCondition) != has(self.object)").message("exactly one of nodeCondition and object must be set"))]
pub struct HealthGate {
    /// Unhealthy while any node of the rollout has this condition with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_condition: Option<NodeConditionGate>,
    /// Unhealthy unless this object's `Ready` condition is `True`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectGate>,
}

/// A Node condition that marks a node unhealthy, such as `DiskPressure` `True` or
/// `Ready` `False`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeConditionGate {
    /// The condition type.
    #[schemars(
        length(min = 1, max = 316),
        regex(pattern = r"^[A-Za-z0-9][-A-Za-z0-9_./]*$")
    )]
    #[serde(rename = "type")]
    pub type_: String,
    /// The status that is unhealthy: `True` (default), `False` or `Unknown`.
    #[serde(default = "default_bad_status")]
    #[schemars(regex(pattern = r"^(True|False|Unknown)$"))]
    pub status: String,
}

fn default_bad_status() -> String {
    "True".into()
}

/// An object whose `Ready` condition must be `True`: cluster-scoped, or in the rollout's
/// own namespace. The operator reads it with its own service account, which needs `get`
/// on its resource (nodeops kinds and Nodes are readable already).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectGate {
    /// The object's apiVersion, for example `nodeops.io/v1alpha1` or
    /// `kustomize.toolkit.fluxcd.io/v1`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^([a-z0-9.-]+/)?v[0-9a-z]+$")
    )]
    pub api_version: String,
    /// The object's kind, for example `AsyncCommand`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Z][A-Za-z0-9]*$"))]
    pub kind: String,
    /// The object's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}
