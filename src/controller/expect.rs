//! Creation expectations, as kube-controller-manager's Job and ReplicaSet controllers keep
//! them: the children this operator created that its watch has not delivered yet.
//!
//! A reconcile reads its children from a cache. A child created a moment ago may not be
//! there yet; counted as absent, it would be created again (harmless: names are
//! deterministic) but also not counted as in flight (a concurrency bound exceeded) or,
//! once the status records it, taken for a child deleted before it finished. So what was
//! created counts as there until the watch shows it. Should the watch not show it within
//! [`EXPECTATION_TIMEOUT`] (kube-controller-manager's bound), the child is read from the
//! API ([`Counted::confirmed`]): one that exists counts again for another timeout, one that is gone is
//! forgotten. A cache can lag that long: at 5000 nodes a Job watch listing 6000 Jobs again
//! did, and nodes whose Jobs existed were taken for nodes whose Jobs were deleted.

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

    /// The children of `owner_uid` created and not yet seen at `now`, and those past
    /// [`EXPECTATION_TIMEOUT`] (forgotten here; the caller reads them from the API).
    pub fn pending(&self, owner_uid: &str, now: Instant) -> Pending<K> {
        let mut pending = Pending {
            waiting: Vec::new(),
            expired: Vec::new(),
        };
        let Ok(mut created) = self.created.lock() else {
            return pending;
        };
        let Some(children) = created.get_mut(owner_uid) else {
            return pending;
        };
        children.retain(|name, (child, at)| {
            let waiting = now.duration_since(*at) < EXPECTATION_TIMEOUT;
            if waiting {
                pending.waiting.push(child.clone());
            } else {
                pending.expired.push(name.clone());
            }
            waiting
        });
        if children.is_empty() {
            created.remove(owner_uid);
        }
        pending
    }
}

/// One owner's creations the watch has not shown.
#[derive(Debug)]
pub struct Pending<K> {
    /// Created less than [`EXPECTATION_TIMEOUT`] ago: they count as there.
    pub waiting: Vec<Arc<K>>,
    /// Created longer ago, by name: to be read from the API.
    pub expired: Vec<String>,
}

/// An owner's children as a reconcile counts them, and the names of those it should have
/// that the cache does not show: creations whose expectation expired, and children the
/// owner's status records ([`Counted::recorded`]). [`Counted::confirmed`] reads those.
#[derive(Debug)]
pub struct Counted<K> {
    pub children: Vec<Arc<K>>,
    pub unconfirmed: Vec<String>,
}

impl<K> Counted<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    /// `names`, children the owner's status records as there, are to be read from the API
    /// unless counted already: a child with no expectation left (created by the operator's
    /// previous process while this one's cache lags) is taken for gone only when it is.
    pub fn recorded<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        for name in names {
            let counted = self
                .children
                .iter()
                .any(|c| c.meta().name.as_deref() == Some(name))
                || self.unconfirmed.iter().any(|n| n == name);
            if !counted {
                self.unconfirmed.push(name.to_string());
            }
        }
        self
    }

    /// The children, with the unconfirmed ones of `owner_uid` read from `api`: those that
    /// exist are added (kept as `trim` leaves them) and count as created at `now` again;
    /// those gone stay forgotten.
    pub async fn confirmed(
        self,
        api: &kube::Api<K>,
        expected: &Expectations<K>,
        owner_uid: &str,
        trim: fn(&mut K),
        now: Instant,
    ) -> Result<Vec<Arc<K>>, kube::Error> {
        let mut children = self.children;
        for name in self.unconfirmed {
            if let Some(mut child) = api.get_opt(&name).await? {
                trim(&mut child);
                tracing::debug!(
                    owner = owner_uid,
                    child = name,
                    "a child the cache does not show exists"
                );
                expected.created(owner_uid, child.clone(), now);
                children.push(Arc::new(child));
            }
        }
        Ok(children)
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
    /// The cache by owner.
    index: Arc<crate::controller::index::Index<K>>,
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
        let index = Arc::new(crate::controller::index::Index::by_label(label));
        let following = index.clone();
        let config = crate::controller::shell::watch_config().labels(label);
        let stream = kube::runtime::reflector(
            writer,
            kube::runtime::watcher(api, config)
                .modify(trim)
                .backoff(crate::controller::WatchBackoff::default()),
        )
        .inspect(move |event| {
            following.follow(event);
            if let Some(child) = crate::controller::touched(event)
                && let Some(owner) = child.labels().get(label)
            {
                seen.observed(owner, &child.name_any());
            }
        })
        .touched_objects();
        let owned = Self {
            cache,
            index,
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
        let now = Instant::now();
        let api: kube::Api<K> = kube::Api::namespaced(client.clone(), ns);
        children(
            self.index.get(&self.cache, owner_uid),
            &self.expected,
            self.label,
            owner_uid,
            ns,
            now,
        )
        .confirmed(&api, &self.expected, owner_uid, self.trim, now)
        .await
    }
}

/// The children of `owner_uid` in `ns` as a reconcile should count them: those of
/// `cached` labelled `label=owner_uid`, and those created and not yet cached; and the
/// names of those created whose expectation expired without the cache showing them.
pub fn children<K>(
    cached: Vec<Arc<K>>,
    expected: &Expectations<K>,
    label: &str,
    owner_uid: &str,
    ns: &str,
    now: Instant,
) -> Counted<K>
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
    let Pending { waiting, expired } = expected.pending(owner_uid, now);
    let mut unconfirmed = Vec::new();
    if !waiting.is_empty() || !expired.is_empty() {
        let cached: std::collections::HashSet<String> =
            children.iter().map(|c| c.name_any()).collect();
        children.extend(
            waiting
                .into_iter()
                .filter(|c| !cached.contains(&c.name_any())),
        );
        unconfirmed = expired
            .into_iter()
            .filter(|name| !cached.contains(name))
            .collect();
    }
    Counted {
        children,
        unconfirmed,
    }
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
            .children
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
        let names = |p: Pending<Job>| {
            let mut n: Vec<String> = p.waiting.iter().map(|j| j.name_any()).collect();
            n.sort();
            n
        };
        assert_eq!(names(e.pending("owner", t0)), ["a", "b"]);
        e.observed("owner", "a");
        assert_eq!(names(e.pending("owner", t0)), ["b"]);
        // Another owner's child is not this one's.
        e.observed("owner", "c");
        assert_eq!(names(e.pending("other", t0)), ["c"]);
        // Never shown: past the timeout it is named once, to be read from the API, and
        // forgotten.
        let late = e.pending("owner", t0 + EXPECTATION_TIMEOUT);
        assert!(late.waiting.is_empty());
        assert_eq!(late.expired, ["b"]);
        let again = e.pending("owner", t0 + EXPECTATION_TIMEOUT);
        assert!(again.waiting.is_empty() && again.expired.is_empty());
        assert!(e.pending("nobody", t0).waiting.is_empty());
    }

    #[test]
    fn an_expired_creation_the_cache_does_not_show_is_to_be_read_from_the_api() {
        let e = Expectations::<Job>::default();
        let t0 = Instant::now();
        // "a" the cache shows, "b" it does not: only "b" needs the API's word.
        e.created("u", child("a", "ns", "u").as_ref().clone(), t0);
        e.created("u", child("b", "ns", "u").as_ref().clone(), t0);
        let counted = children(
            vec![child("a", "ns", "u")],
            &e,
            "owner",
            "u",
            "ns",
            t0 + EXPECTATION_TIMEOUT,
        );
        let names: Vec<String> = counted.children.iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(counted.unconfirmed, ["b"]);
        // A child the status records and nothing counts is read too; one counted is not.
        let counted = counted.recorded(["a", "b", "r"]);
        assert_eq!(counted.unconfirmed, ["b", "r"]);
    }
}
