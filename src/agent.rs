//! Facts about node agents shared by the NodeAgent and AgentInvocation controllers: where a
//! node's installed version lives (a node label), which version a request means, the names
//! and ids derived from objects.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::api::agent_invocation::VersionType;
use crate::api::node_agent::NodeAgentSpec;

/// Whether `value` can be a label value (versions become label values): at most 63
/// characters, alphanumeric at both ends.
pub fn is_label_value(value: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.len() <= 63
        && alnum(value.chars().next())
        && alnum(value.chars().last())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The version an Install or Update asks for: the explicit `version`, else the NodeAgent's
/// version of `version_type` (BasicVersion by default; AdvanceVersion falls back to the
/// basic version when the agent defines none).
pub fn resolve_version(
    agent: &NodeAgentSpec,
    version: Option<&str>,
    version_type: Option<VersionType>,
) -> String {
    if let Some(v) = version {
        return v.to_string();
    }
    match version_type {
        Some(VersionType::AdvanceVersion) => agent
            .advance_version
            .clone()
            .unwrap_or_else(|| agent.basic_version.clone()),
        Some(VersionType::BasicVersion) | None => agent.basic_version.clone(),
    }
}

/// The index key of `agent`'s pod on `node` ([`crate::controller::Context::agent_pods_by_node`]).
/// Agent and node names are DNS names, which hold no `/`.
pub fn pod_key(agent: &str, node: &str) -> String {
    format!("{agent}/{node}")
}

/// [`pod_key`] of an agent pod bound to a node; none for any other pod.
pub fn pod_key_of(pod: &crate::engine::seen::Pod) -> Option<String> {
    let agent = pod
        .metadata
        .labels
        .as_ref()?
        .get(crate::keys::AGENT_LABEL)?;
    let node = pod.spec.as_ref()?.node_name.as_ref()?;
    Some(pod_key(agent, node))
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &crate::engine::seen::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How long an agent pod must have been Ready before an invocation counts the agent as
/// running: an agent that exits at start (crash-looping) can show Ready for an instant
/// between its start and its exit.
pub const AGENT_MIN_READY: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether a Pod has been Ready for at least `min` at `now` (a Ready condition without a
/// transition time counts as Ready since ever).
pub fn pod_ready_for(
    pod: &crate::engine::seen::Pod,
    now: jiff::Timestamp,
    min: std::time::Duration,
) -> bool {
    ready_condition(pod).is_some_and(|c| {
        c.last_transition_time
            .as_ref()
            .is_none_or(|t| now.duration_since(t.0).as_secs_f64() >= min.as_secs_f64())
    })
}

/// When a Pod's Ready condition last became True, if it is True and says when.
pub fn ready_since(pod: &crate::engine::seen::Pod) -> Option<jiff::Timestamp> {
    ready_condition(pod)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// A Pod's Ready condition, if it is True.
fn ready_condition(
    pod: &crate::engine::seen::Pod,
) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
}

fn uuid_v5(namespace: &str, name: &str) -> String {
    // The namespace uuid is itself derived from a string (the object's uid is a uuid, but
    // nothing guarantees it), so any uid works.
    let ns = Uuid::new_v5(&Uuid::NAMESPACE_OID, namespace.as_bytes());
    Uuid::new_v5(&ns, name.as_bytes()).to_string()
}

/// Orders two agent versions: dot-, dash- or underscore-separated parts, numeric parts as
/// numbers (1.10.0 > 1.9.0), others as text, a number below text; a version with a
/// pre-release suffix (`2.0.0-rc1`, after the first `-`) is below the same version
/// without one, as semantic versioning has it.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn parts(s: &str) -> Vec<&str> {
        s.split(['.', '_', '-']).collect()
    }
    fn part(a: &str, b: &str) -> Ordering {
        match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        }
    }
    fn list(a: &[&str], b: &[&str]) -> Ordering {
        for (x, y) in a.iter().zip(b) {
            let o = part(x, y);
            if o != Ordering::Equal {
                return o;
            }
        }
        a.len().cmp(&b.len())
    }
    let (core_a, pre_a) = a.split_once('-').map_or((a, None), |(c, p)| (c, Some(p)));
    let (core_b, pre_b) = b.split_once('-').map_or((b, None), |(c, p)| (c, Some(p)));
    list(&parts(core_a), &parts(core_b)).then_with(|| match (pre_a, pre_b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => list(&parts(x), &parts(y)),
    })
}

/// The stable id of an agent on a node: a version-5 UUID of the NodeAgent's and the node's
/// uids.
pub fn agent_uuid(agent_uid: &str, node_uid: &str) -> String {
    uuid_v5(agent_uid, node_uid)
}

/// The stable id of one instance of an AgentInvocation: a version-5 UUID of the
/// invocation's uid and the instance's key, the same on every reconcile and distinct
/// across invocations.
pub fn invocation_id(invocation_uid: &str, instance_key: &str) -> String {
    uuid_v5(invocation_uid, instance_key)
}

/// The DaemonSet of one version of an agent: `<agent>-<version>`, lowercased, with a short
/// hash of the version when lowercasing or cutting changed it (so `1.0_A` and `1.0-a`
/// never share a DaemonSet).
pub fn daemonset_name(agent: &str, version: &str) -> String {
    let mut clean: String = version
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '-',
        })
        .collect();
    let budget = 63usize.saturating_sub(agent.len() + 1);
    let exact = clean == version && clean.len() <= budget;
    if !exact {
        let hash = Sha256::digest(version.as_bytes());
        let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
        clean.truncate(budget.saturating_sub(9));
        clean = format!("{clean}-{hex}");
    }
    let mut name = format!("{agent}-{clean}");
    // A DNS label ends alphanumeric.
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    name.replace("..", ".")
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_order_as_people_read_them() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        for (a, b, want) in [
            ("1.10.0", "1.9.0", Greater),
            ("3.2.1", "1.5.0", Less.reverse()),
            ("1.5.0", "3.2.1", Less),
            ("2.0.0", "2.0.0", Equal),
            ("2.0", "2.0.0", Less),
            ("2.0.0-rc1", "2.0.0", Less),
            ("2.0.0-rc.2", "2.0.0-rc.10", Less),
            ("1.0.0", "1.0.0-rc1", Greater),
            ("v2", "10", Greater),
            ("2024_05_01", "2024_04_30", Greater),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    use super::*;

    fn spec(advance: Option<&str>) -> NodeAgentSpec {
        serde_json::from_value(serde_json::json!({
            "namespace": "nodeops-agents",
            "image": "registry.example.com/telescope",
            "basicVersion": "3.2.1",
            "advanceVersion": advance,
        }))
        .expect("spec")
    }

    #[test]
    fn version_resolution() {
        let s = spec(Some("3.3.0"));
        assert_eq!(resolve_version(&s, None, None), "3.2.1");
        assert_eq!(
            resolve_version(&s, None, Some(VersionType::BasicVersion)),
            "3.2.1"
        );
        assert_eq!(
            resolve_version(&s, None, Some(VersionType::AdvanceVersion)),
            "3.3.0"
        );
        assert_eq!(resolve_version(&s, Some("9.9"), None), "9.9");
        assert_eq!(
            resolve_version(&spec(None), None, Some(VersionType::AdvanceVersion)),
            "3.2.1",
            "no advance version defined: the basic one"
        );
    }

    #[test]
    fn label_values() {
        assert!(is_label_value("3.2.1"));
        assert!(is_label_value("v1_2-rc.1"));
        assert!(!is_label_value(".3"));
        assert!(!is_label_value("3-"));
        assert!(!is_label_value(&"1".repeat(64)));
        assert!(!is_label_value(""));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = invocation_id("uid-1", "node-0001");
        assert_eq!(a, invocation_id("uid-1", "node-0001"));
        assert_ne!(a, invocation_id("uid-2", "node-0001"));
        assert_ne!(a, invocation_id("uid-1", "node-0002"));
        assert_eq!(a.len(), 36);
        let re = regex_free_check(&a);
        assert!(re, "{a} matches the invocation id pattern");
        assert_ne!(agent_uuid("a", "n1"), agent_uuid("a", "n2"));
    }

    fn regex_free_check(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    }

    #[test]
    fn daemonset_names() {
        assert_eq!(daemonset_name("telescope", "3.2.1"), "telescope-3.2.1");
        let upper = daemonset_name("telescope", "3.2_A");
        assert!(upper.starts_with("telescope-3.2-a-"), "{upper}");
        assert_ne!(upper, daemonset_name("telescope", "3.2-a"));
        let long = daemonset_name(&"a".repeat(40), &"1".repeat(64));
        assert!(long.len() <= 63, "{long}");
        assert!(!daemonset_name("t", "1.-").ends_with('-'));
    }

    #[test]
    fn an_agent_pod_counts_once_it_stayed_ready() {
        let pod = |status: &str, since: &str| -> crate::engine::seen::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "status": {"conditions": [{"type": "Ready", "status": status, "lastTransitionTime": since}]}
            }))
            .expect("pod")
        };
        let now: jiff::Timestamp = "2026-11-29T06:00:10Z".parse().expect("now");
        assert!(pod_ready_for(
            &pod("True", "2026-11-29T06:00:05Z"),
            now,
            AGENT_MIN_READY
        ));
        assert!(
            !pod_ready_for(&pod("True", "2026-11-29T06:00:09Z"), now, AGENT_MIN_READY),
            "Ready for an instant (a crash-looping agent's start) is not running"
        );
        assert!(!pod_ready_for(
            &pod("False", "2026-11-29T06:00:00Z"),
            now,
            AGENT_MIN_READY
        ));
    }
}
