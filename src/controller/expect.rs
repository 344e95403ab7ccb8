//! Creation expectations, as kube-controller-manager's Job and ReplicaSet controllers keep
//! them: the children this operator created that its watch has not delivered yet.
//!
//! A reconcile reads its children from a cache. A child created a moment ago may not be
//! there yet; counted as absent, it would be created again (harmless: names are
//! deterministic) but also not counted as in flight (a concurrency bound exceeded) or,
//! once the status records it, taken for a child deleted before it finished. So what was
//! created counts as there until the watch shows it (or, should the watch never show it,
//! until [`EXPECTATION_TIMEOUT`], kube-controller-manager's bound).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;

/// How long a creation counts as there without the watch showing it.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// One owner's children created and not yet seen, by name, with when each was created.
type Created<K> = HashMap<String, (Arc<K>, Instant)>;

/// Children created and not yet seen, by their owner's uid.
#[derive(Debug)]
pub struct Expectations<K> {
    created: Mutex<HashMap<String, Created<K>>>,
}

impl<K> Default for Expectations<K> {
    fn default() -> Self {
        Self {
            created: Mutex::default(),
        }
    }
}

impl<K: kube::Resource> Expectations<K> {
    /// `child` of the owner `owner_uid` was created at `at`.
    pub fn created(&self, owner_uid: &str, child: K, at: Instant) {
        if let Ok(mut created) = self.created.lock() {
            created
                .entry(owner_uid.to_string())
                .or_default()
                .insert(child.name_any(), (Arc::new(child), at));
        }
    }

    /// The watch delivered the child `name` of `owner_uid` (added, changed or deleted).
    pub fn observed(&self, owner_uid: &str, name: &str) {
        if let Ok(mut created) = self.created.lock()
            && let Some(children) = created.get_mut(owner_uid)
        {
            children.remove(name);
            if children.is_empty() {
                created.remove(owner_uid);
            }
        }
    }

    /// The children of `owner_uid` created and not yet seen at `now`; forgets those past
    /// [`EXPECTATION_TIMEOUT`].
    pub fn pending(&self, owner_uid: &str, now: Instant) -> Vec<Arc<K>> {
        let Ok(mut created) = self.created.lock() else {
            return Vec::new();
        };
        let Some(children) = created.get_mut(owner_uid) else {
            return Vec::new();
        };
        children.retain(|_, (_, at)| now.duration_since(*at) < EXPECTATION_TIMEOUT);
        let pending = children.values().map(|(c, _)| c.clone()).collect();
        if children.is_empty() {
            created.remove(owner_uid);
        }
        pending
    }
}

/// One owner kind's children as its reconciles read them: a cache filled by their watch
/// (selected by `label`, whose value is the owner's uid), and the children created that
/// the cache does not show yet.
pub struct Owned<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    cache: kube::runtime::reflector::Store<K>,
    expected: Arc<Expectations<K>>,
    label: &'static str,
    trim: fn(&mut K),
}

impl<K> Owned<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// The children of `api` labelled `label`, kept as `trim` leaves them, and the watch
    /// that fills the cache, marks creations seen and yields each child it touches once the
    /// cache holds it (for the controller's `owns_stream`): consistent lists, the
    /// operator's backoff, its errors kept to itself.
    pub fn watch(
        api: kube::Api<K>,
        label: &'static str,
        trim: fn(&mut K),
    ) -> (
        Self,
        impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
    ) {
        use futures::StreamExt;
        use kube::runtime::WatchStreamExt;
        let (cache, writer) = kube::runtime::reflector::store::<K>();
        let expected: Arc<Expectations<K>> = Arc::default();
        let seen = expected.clone();
        let config = crate::controller::shell::watch_config().labels(label);
        let stream = kube::runtime::reflector(
            writer,
            kube::runtime::watcher(api, config)
                .modify(trim)
                .backoff(crate::controller::WatchBackoff::default()),
        )
        .inspect(move |event| {
            if let Some(child) = crate::controller::touched(event)
                && let Some(owner) = child.labels().get(label)
            {
                seen.observed(owner, &child.name_any());
            }
        })
        .touched_objects();
        let owned = Self {
            cache,
            expected,
            label,
            trim,
        };
        (owned, crate::controller::alone(label, stream))
    }

    /// `child` was created (as the API server returned it): it counts until the cache
    /// shows it.
    pub fn created(&self, child: &K) {
        if let Some(owner) = child.labels().get(self.label) {
            let mut kept = child.clone();
            (self.trim)(&mut kept);
            self.expected.created(owner, kept, Instant::now());
        }
    }

    /// The children of `owner_uid` in `ns`: from the cache once it has filled, with those
    /// created and not yet in it; before that, from the API. Shared, not copied: a job of
    /// 5000 agents reads 5000 children on each reconcile.
    pub async fn of(
        &self,
        client: &kube::Client,
        ns: &str,
        owner_uid: &str,
    ) -> Result<Vec<Arc<K>>, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        if !crate::controller::filled(&self.cache) {
            let api: kube::Api<K> = kube::Api::namespaced(client.clone(), ns);
            let selector = format!("{}={owner_uid}", self.label);
            return Ok(api
                .list(&kube::api::ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .map(Arc::new)
                .collect());
        }
        Ok(children(
            self.cache.state(),
            &self.expected,
            self.label,
            owner_uid,
            ns,
            Instant::now(),
        ))
    }
}

/// The children of `owner_uid` in `ns` as a reconcile should count them: those of
/// `cached` labelled `label=owner_uid`, and those created and not yet cached.
pub fn children<K>(
    cached: Vec<Arc<K>>,
    expected: &Expectations<K>,
    label: &str,
    owner_uid: &str,
    ns: &str,
    now: Instant,
) -> Vec<Arc<K>>
where
    K: kube::Resource,
{
    let mut children: Vec<Arc<K>> = cached
        .into_iter()
        .filter(|c| {
            c.labels().get(label).map(String::as_str) == Some(owner_uid)
                && c.namespace().as_deref() == Some(ns)
        })
        .collect();
    let pending = expected.pending(owner_uid, now);
    if !pending.is_empty() {
        let cached: std::collections::HashSet<String> =
            children.iter().map(|c| c.name_any()).collect();
        children.extend(
            pending
                .into_iter()
                .filter(|c| !cached.contains(&c.name_any())),
        );
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::ObjectMeta;

    fn job(name: &str) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn child(name: &str, ns: &str, owner: &str) -> Arc<Job> {
        let mut j = job(name);
        j.metadata.namespace = Some(ns.into());
        j.metadata.labels = Some([("owner".to_string(), owner.to_string())].into());
        Arc::new(j)
    }

    #[test]
    fn a_reconcile_counts_the_cached_children_and_those_created_not_yet_cached() {
        let e = Expectations::<Job>::default();
        let t0 = Instant::now();
        // "b" was created and the cache has it; "c" was created and it has not yet.
        e.created("u", child("b", "ns", "u").as_ref().clone(), t0);
        e.created("u", child("c", "ns", "u").as_ref().clone(), t0);
        let cached = vec![
            child("a", "ns", "u"),
            child("b", "ns", "u"),
            child("x", "ns", "other"),
            child("y", "elsewhere", "u"),
        ];
        let mut names: Vec<String> = children(cached, &e, "owner", "u", "ns", t0)
            .iter()
            .map(|c| c.name_any())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn a_creation_counts_until_the_watch_shows_it_or_it_times_out() {
        let e = Expectations::<Job>::default();
        let t0 = Instant::now();
        e.created("owner", job("a"), t0);
        e.created("owner", job("b"), t0);
        e.created("other", job("c"), t0);
        let names = |v: Vec<Arc<Job>>| {
            let mut n: Vec<String> = v.iter().map(|j| j.name_any()).collect();
            n.sort();
            n
        };
        assert_eq!(names(e.pending("owner", t0)), ["a", "b"]);
        e.observed("owner", "a");
        assert_eq!(names(e.pending("owner", t0)), ["b"]);
        // Another owner's child is not this one's.
        e.observed("owner", "c");
        assert_eq!(names(e.pending("other", t0)), ["c"]);
        // Never shown: forgotten after the timeout.
        assert!(e.pending("owner", t0 + EXPECTATION_TIMEOUT).is_empty());
        assert!(e.pending("nobody", t0).is_empty());
    }
}
