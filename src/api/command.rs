//! `Command`: a reusable script (Tencent TAT's CommandId) that Invokers and AsyncCommands
//! refer to, with `{{name}}` parameters delivered as environment variables.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, USERNAME_PATTERN};

/// A reusable script run on nodes by AsyncCommands and Invokers that refer to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodeops.io",
    version = "v1alpha1",
    kind = "Command",
    namespaced,
    status = "CommandStatus",
    shortname = "ncmd",
    category = "nodeops",
    printcolumn(
        name = "Interpreter",
        type_ = "string",
        json_path = ".spec.interpreter"
    ),
    printcolumn(
        name = "Parameters",
        type_ = "boolean",
        json_path = ".spec.enableParameters"
    ),
    printcolumn(
        name = "Timeout",
        type_ = "integer",
        json_path = ".spec.timeoutSeconds"
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
    validation = Rule::new("!has(self.defaultParameters) || self.enableParameters").message("spec.defaultParameters requires spec.enableParameters: true").field_path(".defaultParameters"),
)]
pub struct CommandSpec {
    /// What the command does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,

    /// The script, at most 64 KiB. With `enableParameters`, `{{name}}` placeholders are
    /// replaced by a reference to the environment variable that carries the value, so a
    /// value can never become script text.
    #[schemars(length(min = 1, max = 65536))]
    pub content: String,

    /// The program that runs `content`: `Shell` (/bin/sh, default), `Bash` or `Python3`.
    #[serde(default)]
    pub interpreter: Interpreter,

    /// Absolute working directory (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\x00]*$"))]
    pub working_directory: Option<String>,

    /// Seconds the script may run on a node (1 to 86400, default 60).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i64,

    /// Default user to run as in Host mode (default `root`); an Invoker may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = USERNAME_PATTERN))]
    pub username: Option<String>,

    /// Whether the script has `{{name}}` parameters. Parameters given to a command that
    /// does not enable them are refused.
    #[serde(default)]
    pub enable_parameters: bool,

    /// Values used for parameters a caller does not give (at most 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$') && k.size() <= 64)").message("spec.defaultParameters names must be letters, digits and _ (at most 64), not starting with a digit"))]
    #[x_kube(validation = Rule::new("self.all(k, self[k].size() <= 4096)").message("spec.defaultParameters values must be at most 4096 bytes"))]
    pub default_parameters: Option<BTreeMap<String, String>>,
}

fn default_timeout() -> i64 {
    60
}

/// The program that runs a Command's script.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Interpreter {
    #[default]
    Shell,
    Bash,
    Python3,
}

/// Observed state of a Command: whether its script and parameters are usable.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommandStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Parameter names found in `content`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
    /// Ready (usable) or Stalled with reason ParameterInvalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
