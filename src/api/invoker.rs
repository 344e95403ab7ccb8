//! `Invoker`: run a Command on nodes once at a set time or on a 5-field cron schedule
//! (Tencent TAT's CreateInvoker). Each firing creates one child AsyncCommand.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    COUNT_OR_PERCENT_RULE, Condition, DISPLAY_NAME_PATTERN, ExecutionMode, NODE_NAME_PATTERN,
    OBJECT_NAME_PATTERN, PodSecurity, USERNAME_PATTERN, ZERO_COUNT_OR_PERCENT_RULE,
};
use super::rollout::RolloutPolicy;

/// Runs a Command on a set of nodes on a schedule: once at `invokeTime`, or on a cron
/// `recurrence`. Each firing creates a child AsyncCommand named from its scheduled time.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodeops.io",
    version = "v1alpha1",
    kind = "Invoker",
    namespaced,
    status = "InvokerStatus",
    shortname = "ivk",
    category = "nodeops",
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".spec.scheduleSettings.policy"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.scheduleSettings.recurrence"
    ),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName",
        priority = "1"
    ),
    printcolumn(
        name = "Next Run",
        type_ = "string",
        json_path = ".status.nextInvokeTime"
    ),
    printcolumn(
        name = "Last Run",
        type_ = "date",
        json_path = ".status.lastInvokeTime"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.nodeNames) != has(self.nodeSelector)").message("exactly one of spec.nodeNames and spec.nodeSelector must be set").field_path(".nodeNames"),
    validation = Rule::new("!has(self.username) || self.executionMode == 'Host'").message("spec.username is only used in Host mode").field_path(".username"),
)]
pub struct InvokerSpec {
    /// Free-text name of the invoker (TAT's `Name`): 1 to 120 characters of any text but
    /// control characters, for people to read (`kubectl get invokers -o wide`, `nodeops get
    /// invoker`). The object's key is `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 120), regex(pattern = DISPLAY_NAME_PATTERN))]
    pub display_name: Option<String>,

    /// Invoker type; `Schedule` (TAT's SCHEDULE) is the only one.
    #[serde(default, rename = "type")]
    pub type_: InvokerType,

    /// Name of the `Command` (TAT's CommandId) in this namespace to run.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub command_ref: String,

    /// The nodes to run on (TAT's InstanceIds): 1 to 100 distinct node names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 253), regex(pattern = NODE_NAME_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub node_names: Option<Vec<String>>,

    /// Selects the nodes by label at each firing; a run over more than 100 nodes is a
    /// fleet of batches (see AsyncCommand's `nodeSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// User to run as in Host mode; overrides the Command's `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = USERNAME_PATTERN))]
    pub username: Option<String>,

    /// Values for the Command's parameters (TAT's Parameters), merged over its
    /// `defaultParameters`. Only for a Command with `enableParameters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$') && k.size() <= 64)").message("spec.parameters names must be letters, digits and _ (at most 64), not starting with a digit"))]
    #[x_kube(validation = Rule::new("self.all(k, self[k].size() <= 4096)").message("spec.parameters values must be at most 4096 bytes"))]
    pub parameters: Option<BTreeMap<String, String>>,

    /// `Container` (default) or `Host`; see AsyncCommand.
    #[serde(default)]
    pub execution_mode: ExecutionMode,

    /// When to run (TAT's ScheduleSettings).
    pub schedule_settings: ScheduleSettings,

    /// Container mode's Pod Security level of each run, as AsyncCommand's `podSecurity`.
    #[serde(default)]
    pub pod_security: PodSecurity,

    /// Most nodes of a run at once, as AsyncCommand's `maxConcurrency` (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(COUNT_OR_PERCENT_RULE).message("spec.maxConcurrency must be a count of at least 1 or a percentage from 1% to 100%"))]
    pub max_concurrency: Option<IntOrString>,

    /// Failed nodes of a run after which no further node of it starts, as AsyncCommand's
    /// `maxErrors` (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(ZERO_COUNT_OR_PERCENT_RULE).message("spec.maxErrors must be a count of at least 0 or a percentage from 0% to 100%"))]
    pub max_errors: Option<IntOrString>,

    /// When the nodes of each run may start (maintenance windows, soak time, health
    /// gates), handed to every run. A firing outside every window still creates its run,
    /// which waits for the next window; with the default `Forbid` policy later firings
    /// are skipped while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,

    /// Stops further firings while true; runs already started go on.
    #[serde(default)]
    pub suspend: bool,

    /// What a firing does while an earlier run is still active: `Forbid` (default) skips
    /// it, `Allow` runs both, `Replace` cancels the active run and starts the new one.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// Seconds after a scheduled time within which a missed firing may still start; later
    /// than that the slot is skipped and counted. Default: 60 for Recurrence; a Once
    /// invoker whose time passed while the operator was down fires if within this deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub starting_deadline_seconds: Option<i64>,

    /// Finished successful child AsyncCommands to keep (0 to 100, default 3).
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_history_limit: i32,

    /// Finished failed child AsyncCommands to keep (0 to 100, default 1).
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_history_limit: i32,
}

fn default_successful_history() -> i32 {
    3
}

fn default_failed_history() -> i32 {
    1
}

/// Invoker type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvokerType {
    #[default]
    Schedule,
}

/// What a firing does while an earlier run is active.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConcurrencyPolicy {
    Allow,
    #[default]
    Forbid,
    Replace,
}

/// Once or Recurrence.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulePolicy {
    Once,
    Recurrence,
}

/// When an Invoker fires.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.policy != 'Once' || has(self.invokeTime)").message("scheduleSettings.invokeTime is required when policy is Once").field_path(".invokeTime"),
    validation = Rule::new("self.policy != 'Recurrence' || has(self.recurrence)").message("scheduleSettings.recurrence is required when policy is Recurrence").field_path(".recurrence"),
    validation = Rule::new("self.policy != 'Once' || !has(self.recurrence)").message("scheduleSettings.recurrence is only used when policy is Recurrence").field_path(".recurrence"),
    validation = Rule::new("self.policy != 'Recurrence' || !has(self.invokeTime)").message("scheduleSettings.invokeTime is only used when policy is Once").field_path(".invokeTime"),
)]
pub struct ScheduleSettings {
    /// `Once` runs at `invokeTime`; `Recurrence` runs on the cron `recurrence`.
    pub policy: SchedulePolicy,

    /// For `Once`: the time to run, RFC 3339 with an offset (for example
    /// `2021-09-01T00:00:00+08:00`). A time already past when the Invoker is created is
    /// refused with reason InvokeTimeExpired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 20, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$')").message("scheduleSettings.invokeTime must be an RFC 3339 time with an offset, such as 2021-09-01T00:00:00+08:00"))]
    pub invoke_time: Option<String>,

    /// For `Recurrence`: a 5-field cron expression, minute hour day-of-month month
    /// day-of-week, with lists, ranges, steps and names (for example `0 0 1 * *`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 128))]
    #[x_kube(validation = Rule::new("self.trim().split(' ').filter(f, f != '').size() == 5").message("scheduleSettings.recurrence must have exactly 5 fields: minute hour day-of-month month day-of-week"))]
    pub recurrence: Option<String>,

    /// IANA time zone the recurrence is read in (for example `Asia/Shanghai`); default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")
    )]
    pub time_zone: Option<String>,
}

/// One firing of the Invoker.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InvokerRun {
    /// The scheduled time this run is for.
    pub scheduled_time: Time,
    /// The child AsyncCommand.
    pub async_command: String,
    /// The child's phase when last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Nodes succeeded.
    #[serde(default)]
    pub succeeded: i32,
    /// Nodes failed or cancelled.
    #[serde(default)]
    pub failed: i32,
}

/// Observed state of an Invoker.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InvokerStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Id of this invoker (TAT's InvokerId).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoker_id: Option<String>,
    /// The next time the invoker will fire, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_invoke_time: Option<Time>,
    /// The last scheduled time that fired (or was deliberately skipped). A slot at or before
    /// it never fires again, whatever happens to the children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_invoke_time: Option<Time>,
    /// Child AsyncCommands still running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// The most recent runs, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<InvokerRun>,
    /// Ready, Reconciling, Stalled (with reasons InvalidCronExpression, InvalidTimeFormat,
    /// InvokeTimeExpired, CommandNotFound, ParameterInvalid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
