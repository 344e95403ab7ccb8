//! Read-your-own-writes over a cache: the resource version of each status this operator
//! wrote, until its watch delivers it; and of each node label it set ([`OwnLabels`]).
//!
//! A reconcile reads its object from the controller's cache, not the API (one request
//! fewer per reconcile, and most reconciles then make none). The status is the memory of
//! what was started, so a reconcile must never plan from a copy older than the operator's
//! own last write: the cache is compared with that write's resource version, which
//! Kubernetes 1.35 makes comparable between objects of one kind (KEP-5504, stable), and a
//! lagging copy is not acted on: the write's own watch event wakes the object again.
//!
//! A reader of another kind's spec (an AgentInvocation reading its NodeAgent) needs less: a
//! copy older than a status write has the same spec, so only a write that moved the
//! object's `generation` (its spec) holds it back ([`OwnWrites::check_spec`]).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::Resource;

/// How a cached copy stands against the operator's own last write of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copy {
    /// At or past the last write (or none was made): plan from it.
    Current,
    /// Older than the last write: wait for the watch to deliver it.
    Lags,
    /// A resource version that is not a number (not an etcd-backed API server): read fresh.
    Unknown,
}

/// The resource version (and generation) of each object's last write by this operator, by
/// uid, until a cached copy has caught up with it.
#[derive(Debug, Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<String, Written>>,
}

#[derive(Debug, Clone, Copy)]
struct Written {
    version: u64,
    generation: Option<i64>,
}

impl OwnWrites {
    /// Records that `obj` (as the API server returned it from a write) is the newest copy.
    pub fn wrote<K: Resource>(&self, obj: &K) {
        let meta = obj.meta();
        let (Some(uid), Some(rv)) = (meta.uid.clone(), version(meta.resource_version.as_deref()))
        else {
            return;
        };
        let generation = meta.generation;
        if let Ok(mut written) = self.written.lock() {
            let at = written.entry(uid).or_insert(Written {
                version: rv,
                generation,
            });
            at.version = at.version.max(rv);
            at.generation = at.generation.max(generation);
        }
    }

    /// How `cached` stands against the last write; forgets a write once caught up.
    pub fn check<K: Resource>(&self, cached: &K) -> Copy {
        let meta = cached.meta();
        let Some(uid) = meta.uid.as_deref() else {
            return Copy::Unknown;
        };
        let Some(rv) = version(meta.resource_version.as_deref()) else {
            return Copy::Unknown;
        };
        let Ok(mut written) = self.written.lock() else {
            return Copy::Unknown;
        };
        match written.get(uid) {
            Some(last) if rv < last.version => Copy::Lags,
            Some(_) => {
                written.remove(uid);
                Copy::Current
            }
            None => Copy::Current,
        }
    }

    /// How `cached`'s spec stands against the last write: it lags only behind a write that
    /// moved the generation (a status write leaves the spec as it was). Forgets nothing:
    /// [`OwnWrites::check`] of the object's own controller still waits for the write.
    pub fn check_spec<K: Resource>(&self, cached: &K) -> Copy {
        let meta = cached.meta();
        let (Some(uid), Some(generation)) = (meta.uid.as_deref(), meta.generation) else {
            return Copy::Unknown;
        };
        let Ok(written) = self.written.lock() else {
            return Copy::Unknown;
        };
        match written.get(uid).map(|w| w.generation) {
            Some(Some(last)) if generation < last => Copy::Lags,
            Some(None) => Copy::Unknown,
            _ => Copy::Current,
        }
    }

    /// Forgets `uid` (the object is gone).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut written) = self.written.lock() {
            written.remove(uid);
        }
    }
}

/// The node labels this operator set, by node and key, until the Node cache shows a copy
/// at or past the write. An invocation plans from its node's label (the agent version
/// there); read from a lagging copy, it would set the label again on every reconcile until
/// the Node watch, busy with every node's heartbeat, caught up. An entry lives until a
/// read finds the cache caught up: at most one per node and agent.
#[derive(Debug, Default)]
pub struct OwnLabels {
    /// By node name, then label key: looked up by `&str`, without allocating, for every
    /// node an invocation reads.
    written: Mutex<HashMap<String, HashMap<String, WrittenLabel>>>,
}

#[derive(Debug, Clone)]
struct WrittenLabel {
    value: Option<String>,
    version: u64,
}

impl OwnLabels {
    /// Records that `node` (as the API server returned it from the write) has `key` set
    /// to `value` (`None`: removed).
    pub fn wrote(&self, node: &kube::api::ObjectMeta, key: &str, value: Option<&str>) {
        let (Some(name), Some(rv)) = (node.name.clone(), version(node.resource_version.as_deref()))
        else {
            return;
        };
        if let Ok(mut written) = self.written.lock() {
            let keys = written.entry(name).or_default();
            if keys.get(key).is_none_or(|w| rv >= w.version) {
                let value = value.map(str::to_string);
                keys.insert(key.to_string(), WrittenLabel { value, version: rv });
            }
        }
    }

    /// The label `key` of the cached `node`, or the value this operator last wrote when
    /// the copy is older than that write. Forgets the write once a copy caught up.
    pub fn label(&self, node: &kube::api::ObjectMeta, key: &str) -> Option<String> {
        let cached = || node.labels.as_ref().and_then(|l| l.get(key)).cloned();
        let (Some(name), Some(rv)) = (
            node.name.as_deref(),
            version(node.resource_version.as_deref()),
        ) else {
            return cached();
        };
        let Ok(mut written) = self.written.lock() else {
            return cached();
        };
        let Some(keys) = written.get_mut(name) else {
            return cached();
        };
        match keys.get(key) {
            Some(w) if rv < w.version => return w.value.clone(),
            Some(_) => {
                keys.remove(key);
                if keys.is_empty() {
                    written.remove(name);
                }
            }
            None => {}
        }
        cached()
    }
}

fn version(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn at(uid: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn at_generation(uid: &str, rv: &str, generation: i64) -> ConfigMap {
        let mut obj = at(uid, rv);
        obj.metadata.generation = Some(generation);
        obj
    }

    #[test]
    fn a_spec_lags_only_behind_a_write_that_moved_the_generation() {
        let writes = OwnWrites::default();
        // A status write: the generation stays 3.
        writes.wrote(&at_generation("a", "12", 3));
        assert_eq!(
            writes.check_spec(&at_generation("a", "10", 3)),
            Copy::Current
        );
        // The object's own controller still waits for its status.
        assert_eq!(writes.check(&at_generation("a", "10", 3)), Copy::Lags);
        // A write of the spec: generation 4.
        writes.wrote(&at_generation("a", "15", 4));
        assert_eq!(writes.check_spec(&at_generation("a", "12", 3)), Copy::Lags);
        assert_eq!(
            writes.check_spec(&at_generation("a", "15", 4)),
            Copy::Current
        );
        // Nothing written: current; no generation: read fresh.
        assert_eq!(
            writes.check_spec(&at_generation("b", "1", 1)),
            Copy::Current
        );
        assert_eq!(writes.check_spec(&at("a", "15")), Copy::Unknown);
    }

    #[test]
    fn a_copy_older_than_the_last_write_lags_until_the_watch_delivers_it() {
        let writes = OwnWrites::default();
        assert_eq!(writes.check(&at("a", "10")), Copy::Current);
        writes.wrote(&at("a", "12"));
        assert_eq!(writes.check(&at("a", "10")), Copy::Lags);
        // Numerically, not as strings: "9" > "12" as text.
        assert_eq!(writes.check(&at("a", "9")), Copy::Lags);
        // Another object is not held back.
        assert_eq!(writes.check(&at("b", "3")), Copy::Current);
        // Caught up (or past: someone else wrote after): current, and forgotten.
        assert_eq!(writes.check(&at("a", "13")), Copy::Current);
        assert_eq!(writes.check(&at("a", "10")), Copy::Current);
    }

    #[test]
    fn an_older_write_answered_late_does_not_move_the_mark_back() {
        let writes = OwnWrites::default();
        writes.wrote(&at("a", "20"));
        writes.wrote(&at("a", "15"));
        assert_eq!(writes.check(&at("a", "18")), Copy::Lags);
    }

    #[test]
    fn a_version_that_is_not_a_number_is_read_fresh() {
        let writes = OwnWrites::default();
        assert_eq!(writes.check(&at("a", "abc")), Copy::Unknown);
    }

    fn node(rv: &str, label: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("n1".into()),
            resource_version: Some(rv.into()),
            labels: label.map(|v| [("agent".to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_label_reads_as_written_until_the_cache_catches_up() {
        let labels = OwnLabels::default();
        assert_eq!(
            labels.label(&node("5", Some("1.0")), "agent"),
            Some("1.0".into())
        );
        labels.wrote(&node("9", Some("2.0")), "agent", Some("2.0"));
        // A copy older than the write: the write's value, not the cached one.
        assert_eq!(
            labels.label(&node("7", Some("1.0")), "agent"),
            Some("2.0".into())
        );
        // Another key of the same node is read as cached.
        assert_eq!(labels.label(&node("7", Some("1.0")), "other"), None);
        // Caught up: the cache again, and the write is forgotten.
        assert_eq!(
            labels.label(&node("9", Some("2.0")), "agent"),
            Some("2.0".into())
        );
        assert_eq!(
            labels.label(&node("7", Some("1.0")), "agent"),
            Some("1.0".into())
        );
        // A removal reads as removed while the cache lags.
        labels.wrote(&node("12", None), "agent", None);
        assert_eq!(labels.label(&node("10", Some("1.0")), "agent"), None);
    }
}
