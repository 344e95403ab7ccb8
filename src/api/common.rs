//! Pieces shared by several kinds: node targeting, execution mode, rate limits, Secret
//! references, and the validation patterns they carry.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// A Kubernetes node name: a DNS subdomain (lower-case alphanumerics, `-` and `.`).
pub const NODE_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The name of a namespaced object this one refers to (a DNS subdomain).
pub const OBJECT_NAME_PATTERN: &str = NODE_NAME_PATTERN;
/// A POSIX user name as `useradd` accepts it; anything else is refused at apply.
pub const USERNAME_PATTERN: &str = r"^[a-z_][a-z0-9_-]*\$?$";
/// The seeds' version string: letters, digits, `_`, `-` and `.`.
pub const VERSION_PATTERN: &str = r"^[0-9A-Za-z][0-9A-Za-z_.-]*$";
/// An image reference: registry, path, tag and digest characters only (no whitespace,
/// no shell metacharacters).
pub const IMAGE_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$";
/// An agent invocation id, as the seed's result defines it.
pub const INVOCATION_ID_PATTERN: &str = r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,63}$";
/// Environment-variable-safe parameter names (they reach scripts as variables).
pub const PARAMETER_NAME_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";
/// Free text a person reads (a display name): any characters but control characters, which
/// would break or spoof the terminal tables it is shown in.
pub const DISPLAY_NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

/// CEL rule for a `maxConcurrency`-style field: a positive count or a percentage 1%-100%.
/// (`string()` of an int or a string, so one pattern covers both forms.)
pub const COUNT_OR_PERCENT_RULE: &str =
    "string(self).matches('^([1-9][0-9]{0,8}|(100|[1-9][0-9]?)%)$')";
/// CEL rule for a `maxErrors`-style field: a count from zero or a percentage 0%-100%.
pub const ZERO_COUNT_OR_PERCENT_RULE: &str =
    "string(self).matches('^([0-9]{1,9}|(100|[1-9]?[0-9])%)$')";

/// How a node operation is run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutionMode {
    #[default]
    Container,
    Host,
}

/// How much a Container-mode run may do, by the Pod Security Standards' levels. Host mode
/// is always `privileged`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodSecurity {
    /// The `restricted` level: user 65534 (nobody), no privilege escalation, every
    /// capability dropped, the runtime's default seccomp profile. Runs in any namespace.
    #[default]
    Restricted,
    /// The `baseline` level: the image's user (often root) with the runtime's default
    /// capabilities, for a command that needs them; refused (AdmissionRefused) in a
    /// namespace that enforces `restricted`.
    Baseline,
}

/// A key of a Secret in the object's own namespace.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    #[schemars(length(min = 1, max = 253), regex(pattern = NODE_NAME_PATTERN))]
    pub name: String,
    /// Key within the Secret. When omitted, the kind's documented default key is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// Parses a count-or-percentage limit against a total, rounding percentages up (as
/// Kubernetes does for maxUnavailable-style fields) and never returning less than `floor`.
pub fn scaled_limit(value: &IntOrString, total: usize, floor: usize) -> Option<usize> {
    let n = match value {
        IntOrString::Int(i) => usize::try_from(*i).ok()?,
        IntOrString::String(s) => {
            let pct: usize = s.strip_suffix('%')?.parse().ok()?;
            if pct > 100 {
                return None;
            }
            (total * pct).div_ceil(100)
        }
    };
    Some(n.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_limit_counts_and_percentages() {
        assert_eq!(scaled_limit(&IntOrString::Int(5), 100, 1), Some(5));
        assert_eq!(
            scaled_limit(&IntOrString::String("10%".into()), 100, 1),
            Some(10)
        );
        assert_eq!(
            scaled_limit(&IntOrString::String("10%".into()), 15, 1),
            Some(2)
        );
        assert_eq!(
            scaled_limit(&IntOrString::String("1%".into()), 3, 1),
            Some(1)
        );
        assert_eq!(
            scaled_limit(&IntOrString::String("0%".into()), 3, 0),
            Some(0)
        );
        assert_eq!(
            scaled_limit(&IntOrString::String("0%".into()), 3, 1),
            Some(1)
        );
        assert_eq!(
            scaled_limit(&IntOrString::String("101%".into()), 3, 1),
            None
        );
        assert_eq!(scaled_limit(&IntOrString::String("ten".into()), 3, 1), None);
        assert_eq!(scaled_limit(&IntOrString::Int(-1), 3, 1), None);
    }
}
