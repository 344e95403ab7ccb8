//! Read-your-own-writes over a cache: the resource version of each status this operator
//! wrote, until its watch delivers it.
//!
//! A reconcile reads its object from the controller's cache, not the API (one request
//! fewer per reconcile, and most reconciles then make none). The status is the memory of
//! what was started, so a reconcile must never plan from a copy older than the operator's
//! own last write: the cache is compared with that write's resource version, which
//! Kubernetes 1.35 makes comparable between objects of one kind (KEP-5504, stable), and a
//! lagging copy is not acted on: the write's own watch event wakes the object again.

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

/// The resource version of each object's last write by this operator, by uid, until a
/// cached copy has caught up with it.
#[derive(Debug, Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<String, u64>>,
}

impl OwnWrites {
    /// Records that `obj` (as the API server returned it from a write) is the newest copy.
    pub fn wrote<K: Resource>(&self, obj: &K) {
        let meta = obj.meta();
        let (Some(uid), Some(rv)) = (meta.uid.clone(), version(meta.resource_version.as_deref()))
        else {
            return;
        };
        if let Ok(mut written) = self.written.lock() {
            let at = written.entry(uid).or_insert(rv);
            *at = (*at).max(rv);
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
            Some(&last) if rv < last => Copy::Lags,
            Some(_) => {
                written.remove(uid);
                Copy::Current
            }
            None => Copy::Current,
        }
    }

    /// Forgets `uid` (the object is gone).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut written) = self.written.lock() {
            written.remove(uid);
        }
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
}
