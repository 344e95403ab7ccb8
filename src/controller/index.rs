//! An index of a reflector's store by a key read from each object (an owner's uid label;
//! an agent pod's agent and node): a reconcile finds its own Jobs, Pods or children among
//! 10,000 without copying and walking every cached object. Walking them was most of the
//! operator's CPU with 10,000 one-node AsyncCommands at 5000 nodes, and each of 512
//! reconciles at once held a copy of the store's 20,000 pointers.
//!
//! The index follows the watch events that fill the store, in the same order: an object
//! added or changed is indexed, one deleted is not; a watch that lists again builds a new
//! index, which replaces the old one when the store's new contents do (kube-runtime swaps
//! them at the list's end). An object is read from the store itself, so the index never
//! shows one the store does not hold.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{Error, Event};
use kube::{Resource, ResourceExt};

/// Namespace and name.
type Key = (Option<String>, String);
type Entries = HashMap<String, Keys>;

/// The objects of one label value. Most owners (one-node objects) have one child: held
/// alone it costs no set, which allocates room for four keys (of 10,000 one-node
/// objects' Jobs and Pods, about 0.8 KiB per node operation for both indexes, by heaptrack).
#[derive(Debug)]
enum Keys {
    One(Key),
    Many(HashSet<Key>),
}

impl Keys {
    fn insert(&mut self, key: Key) {
        match self {
            Keys::One(one) if *one == key => {}
            Keys::One(one) => {
                let first = std::mem::take(one);
                *self = Keys::Many(HashSet::from([first, key]));
            }
            Keys::Many(set) => {
                set.insert(key);
            }
        }
    }

    /// Removes `key`; whether none is left.
    fn remove(&mut self, key: &Key) -> bool {
        match self {
            Keys::One(one) => one == key,
            Keys::Many(set) => {
                set.remove(key);
                set.is_empty()
            }
        }
    }

    fn to_vec(&self) -> Vec<Key> {
        match self {
            Keys::One(one) => vec![one.clone()],
            Keys::Many(set) => set.iter().cloned().collect(),
        }
    }
}

/// Adds `key` under `value`.
fn add(entries: &mut Entries, value: String, key: Key) {
    match entries.entry(value) {
        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().insert(key),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Keys::One(key));
        }
    }
}

/// Reads an object's index key; an object without one is not indexed. Borrowed where it
/// can be (a label's value): [`Index::get`] reads the key of every object it returns.
type KeyOf<K> = Box<dyn for<'a> Fn(&'a K) -> Option<Cow<'a, str>> + Send + Sync>;

/// The objects of one store by a key read from each.
pub struct Index<K> {
    key: KeyOf<K>,
    /// What the store holds.
    live: Mutex<Entries>,
    /// What a list in progress has delivered.
    listing: Mutex<Entries>,
}

impl<K> std::fmt::Debug for Index<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

impl<K: Resource + 'static> Index<K> {
    /// By the value of `label`.
    pub fn by_label(label: &'static str) -> Self {
        Self::keyed(Box::new(move |obj: &K| {
            obj.labels().get(label).map(|v| Cow::Borrowed(v.as_str()))
        }))
    }

    /// By what `key` reads. An object's key must not change while the store holds it
    /// (a label value, a pod's node once bound): a stale entry would stay until deleted.
    pub fn by(key: fn(&K) -> Option<String>) -> Self {
        Self::keyed(Box::new(move |obj: &K| key(obj).map(Cow::Owned)))
    }

    fn keyed(key: KeyOf<K>) -> Self {
        Self {
            key,
            live: Mutex::default(),
            listing: Mutex::default(),
        }
    }

    /// Follows one event of the watch that fills the store (after the store applied it).
    pub fn follow(&self, event: &Result<Event<K>, Error>) {
        let key = |obj: &K| -> Option<(String, Key)> {
            let value = (self.key)(obj)?.into_owned();
            Some((value, (obj.namespace(), obj.name_any())))
        };
        match event {
            Ok(Event::Apply(obj)) => {
                if let (Some((value, k)), Ok(mut live)) = (key(obj), self.live.lock()) {
                    add(&mut live, value, k);
                }
            }
            Ok(Event::Delete(obj)) => {
                if let (Some((value, k)), Ok(mut live)) = (key(obj), self.live.lock())
                    && let Some(keys) = live.get_mut(&value)
                    && keys.remove(&k)
                {
                    live.remove(&value);
                }
            }
            Ok(Event::Init) => {
                if let Ok(mut listing) = self.listing.lock() {
                    listing.clear();
                }
            }
            Ok(Event::InitApply(obj)) => {
                if let (Some((value, k)), Ok(mut listing)) = (key(obj), self.listing.lock()) {
                    add(&mut listing, value, k);
                }
            }
            Ok(Event::InitDone) => {
                if let (Ok(mut listing), Ok(mut live)) = (self.listing.lock(), self.live.lock()) {
                    *live = std::mem::take(&mut *listing);
                }
            }
            Err(_) => {}
        }
    }

    /// The objects of `store` whose key is `value`.
    pub fn get(&self, store: &Store<K>, value: &str) -> Vec<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone,
    {
        let keys: Vec<Key> = match self.live.lock() {
            Ok(live) => live.get(value).map(Keys::to_vec).unwrap_or_default(),
            Err(_) => return Vec::new(),
        };
        keys.into_iter()
            .filter_map(|(ns, name)| {
                let mut r = ObjectRef::<K>::new(&name);
                if let Some(ns) = ns {
                    r = r.within(&ns);
                }
                store.get(&r)
            })
            .filter(|obj| (self.key)(obj).as_deref() == Some(value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector::store;

    fn job(name: &str, owner: &str) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("owner".to_string(), owner.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(jobs: Vec<Arc<Job>>) -> Vec<String> {
        let mut n: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
        n.sort();
        n
    }

    /// Agent pods by agent and node, as an invocation reads its own nodes' pods; a pod
    /// not yet bound to a node is not indexed until it is.
    #[test]
    fn agent_pods_are_found_by_agent_and_node() {
        use crate::engine::seen::Pod;
        let pod = |name: &str, agent: &str, node: Option<&str>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns",
                    "labels": {crate::keys::AGENT_LABEL: agent}},
                "spec": {"nodeName": node}
            }))
            .expect("pod")
        };
        let (reader, mut writer) = store::<Pod>();
        let index = Index::by(crate::agent::pod_key_of);
        let mut feed = |event: Event<Pod>| {
            writer.apply_watcher_event(&event);
            index.follow(&Ok(event));
        };
        feed(Event::Init);
        feed(Event::InitApply(pod("a-1", "a", Some("n1"))));
        feed(Event::InitApply(pod("a-2", "a", Some("n2"))));
        feed(Event::InitApply(pod("b-1", "b", Some("n1"))));
        feed(Event::InitApply(pod("a-3", "a", None)));
        feed(Event::InitDone);
        let on = |agent: &str, node: &str| -> Vec<String> {
            let mut n: Vec<String> = index
                .get(&reader, &crate::agent::pod_key(agent, node))
                .iter()
                .map(|p| p.name_any())
                .collect();
            n.sort();
            n
        };
        assert_eq!(on("a", "n1"), ["a-1"]);
        assert_eq!(on("a", "n2"), ["a-2"]);
        assert_eq!(on("b", "n1"), ["b-1"]);
        assert!(on("b", "n2").is_empty());
        assert!(on("a", "n3").is_empty());
        feed(Event::Apply(pod("a-3", "a", Some("n3"))));
        assert_eq!(on("a", "n3"), ["a-3"], "indexed once bound");
        feed(Event::Delete(pod("a-1", "a", Some("n1"))));
        assert!(on("a", "n1").is_empty());
    }

    #[test]
    fn the_index_follows_the_store_through_changes_deletions_and_a_new_list() {
        let (reader, mut writer) = store::<Job>();
        let index = Index::by_label("owner");
        let mut feed = |event: Event<Job>| {
            writer.apply_watcher_event(&event);
            index.follow(&Ok(event));
        };
        feed(Event::Init);
        feed(Event::InitApply(job("a", "u")));
        feed(Event::InitApply(job("x", "other")));
        // The store shows nothing until the list ends, nor does the index.
        assert!(index.get(&reader, "u").is_empty());
        feed(Event::InitDone);
        assert_eq!(names(index.get(&reader, "u")), ["a"]);
        feed(Event::Apply(job("b", "u")));
        assert_eq!(names(index.get(&reader, "u")), ["a", "b"]);
        assert_eq!(names(index.get(&reader, "other")), ["x"]);
        feed(Event::Delete(job("a", "u")));
        assert_eq!(names(index.get(&reader, "u")), ["b"]);
        // A change of a lone child, and a deletion of one that is not there.
        feed(Event::Apply(job("x", "other")));
        feed(Event::Delete(job("y", "other")));
        assert_eq!(names(index.get(&reader, "other")), ["x"]);
        // A new list: "b" was deleted while the watch was down, "c" created.
        feed(Event::Init);
        feed(Event::InitApply(job("c", "u")));
        assert_eq!(
            names(index.get(&reader, "u")),
            ["b"],
            "the old state until the list ends"
        );
        feed(Event::InitDone);
        assert_eq!(names(index.get(&reader, "u")), ["c"]);
        assert!(index.get(&reader, "other").is_empty());
        assert!(index.get(&reader, "nobody").is_empty());
    }
}
