//! The controllers and what they share: the reconcile shell ([`shell`]), the context every
//! reconcile gets (the client, the settings, reflector stores of Nodes and nodeops Pods, the
//! Event publisher), watch backoff and runtime configuration. Each kind's module holds its
//! reconciler (what it reads) and its pure decisions (`plan`).

pub mod agent_invocation;
pub mod agent_upgrade_job;
pub mod async_command;
pub mod command;
pub mod events;
pub mod expect;
pub mod gates;
pub mod index;
pub mod invoker;
pub mod node_agent;
pub mod shell;
pub mod writes;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event as CoreEvent, Node};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};

use crate::engine::seen::{Job, Pod};

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub config: crate::settings::Settings,
    pub events: events::Publisher,
    /// Every Node of the cluster.
    pub nodes: Store<Node>,
    /// Pods nodeops created (node runs and agent pods), as [`crate::engine::seen`] keeps
    /// them.
    pub pods: Store<Pod>,
    /// The AsyncCommands' Jobs, metadata and status ([`crate::engine::seen`]; filled by
    /// that controller's watch).
    pub jobs: Store<Job>,
    /// The Job controller's FailedCreate Events about Jobs (admission refused a Pod).
    pub refusals: Store<CoreEvent>,
    /// Every Command, without managed fields (filled by the AsyncCommand controller's
    /// watch): what an AsyncCommand's `commandRef` or an Invoker names is read here.
    pub commands: Store<crate::api::Command>,
    /// Every NodeAgent (filled by the NodeAgent controller's watch): what an
    /// AgentInvocation or an AgentUpgradeJob names is read here.
    pub agents: Store<crate::api::NodeAgent>,
    /// `jobs` by their owner's uid (followed by the same watch).
    pub jobs_by_owner: index::Index<Job>,
    /// `pods` by their owner's uid (followed by the same watch).
    pub pods_by_owner: index::Index<Pod>,
    /// Agent pods bound to a node by [`crate::agent::pod_key`] (agent and node): an
    /// invocation reads its own nodes' pods, not every pod of its agent.
    pub agent_pods_by_node: index::Index<Pod>,
    /// Jobs the AsyncCommand controller created that `jobs` does not show yet.
    pub job_expectations: expect::Expectations<Job>,
    /// The last status each object was written with, until its cache catches up.
    pub writes: writes::OwnWrites,
    /// The node labels this operator set, until the Node cache shows them.
    pub node_labels: writes::OwnLabels,
    /// Whether this replica may change anything now (its leader Lease is fresh).
    pub fence: crate::operator::leader::Fence,
    /// Ticks on every Node and nodeops Pod change: wakes the agent controllers, whose
    /// objects depend on node labels and agent pods fleet-wide.
    pub activity: tokio::sync::watch::Sender<u64>,
    /// The node of each such change (none: any node, as when a watch starts over): wakes
    /// only the AgentInvocations with an instance there, not every one.
    pub node_changes: tokio::sync::broadcast::Sender<Option<String>>,
    /// The resources of the health gates' kinds, by group/version/kind, with whether
    /// they are namespaced: discovered once.
    pub gate_kinds:
        std::sync::Mutex<std::collections::BTreeMap<String, (kube::api::ApiResource, bool)>>,
}

/// Node changes kept for a controller that is busy; beyond, it looks at every object.
const NODE_CHANGES_BUFFERED: usize = 8192;

/// The caches the controllers share, each filled by one watch (see [`Context`]).
pub struct Caches {
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub jobs: Store<Job>,
    pub refusals: Store<CoreEvent>,
    pub commands: Store<crate::api::Command>,
    pub agents: Store<crate::api::NodeAgent>,
}

impl Context {
    pub fn new(client: Client, config: crate::settings::Settings, caches: Caches) -> Self {
        let Caches {
            nodes,
            pods,
            jobs,
            refusals,
            commands,
            agents,
        } = caches;
        let reporter = events::Reporter {
            controller: "nodeops".into(),
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "nodeops".into()),
        };
        let events = events::Publisher::new(client.clone(), reporter);
        Self {
            client,
            config,
            events,
            nodes,
            pods,
            jobs,
            refusals,
            commands,
            agents,
            jobs_by_owner: index::Index::by_label(crate::keys::OWNER_UID_LABEL),
            pods_by_owner: index::Index::by_label(crate::keys::OWNER_UID_LABEL),
            agent_pods_by_node: index::Index::by(crate::agent::pod_key_of),
            job_expectations: Default::default(),
            writes: Default::default(),
            node_labels: Default::default(),
            fence: Default::default(),
            activity: tokio::sync::watch::Sender::new(0),
            node_changes: tokio::sync::broadcast::Sender::new(NODE_CHANGES_BUFFERED),
            gate_kinds: Default::default(),
        }
    }

    /// Records that a Node or a nodeops Pod changed.
    pub fn touch(&self) {
        self.activity.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records that a Node or a nodeops Pod on `node` changed (none: any node).
    pub fn touch_node(&self, node: Option<String>) {
        self.touch();
        // No receiver yet (no controller started): nothing to wake.
        let _ = self.node_changes.send(node);
    }

    /// The nodes of changes recorded by [`Context::touch_node`]; a receiver that fell
    /// behind gets a none (any node) for what it missed.
    pub fn node_changes(&self) -> impl futures::Stream<Item = Option<String>> + Send + 'static {
        use tokio::sync::broadcast::error::RecvError;
        let rx = self.node_changes.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(node) => Some((node, rx)),
                Err(RecvError::Lagged(_)) => Some((None, rx)),
                Err(RecvError::Closed) => None,
            }
        })
    }

    /// A stream that yields after changes recorded by [`Context::touch`], at most once
    /// per `every`: the changes in between coalesce into the next item, which comes
    /// however long they go on.
    pub fn activity(&self, every: Duration) -> impl futures::Stream<Item = ()> + Send + 'static {
        throttled(self.activity.subscribe(), every)
    }

    /// An Api for a namespaced kind, scoped as configured.
    pub fn scoped<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match &self.config.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The Command `name` in `ns`: from the Command cache, from the API when the cache has
    /// not shown it (one created a moment before what names it must not be taken for
    /// missing).
    pub async fn command(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<crate::api::Command>, kube::Error> {
        use kube::runtime::reflector::ObjectRef;
        match self.commands.get(&ObjectRef::new(name).within(ns)) {
            Some(cached) => Ok(Some(cached.as_ref().clone())),
            None => {
                Api::<crate::api::Command>::namespaced(self.client.clone(), ns)
                    .get_opt(name)
                    .await
            }
        }
    }

    /// A NodeAgent's spec and identity (what its invocations and upgrade jobs read) from
    /// the cache, or from the API when the cache does not have it yet or holds a spec older
    /// than this operator's own last write of it (an invocation sets the agent's remote
    /// install host, then plans from it). The NodeAgent controller's status writes, twice a
    /// second while nodes change, leave the spec as it was; held back by resource version
    /// behind them, a 5000-agent rollout made 8789 `GET nodeagents` (`make bench`).
    pub async fn node_agent(
        &self,
        name: &str,
    ) -> Result<Option<Arc<crate::api::NodeAgent>>, kube::Error> {
        use kube::runtime::reflector::ObjectRef;
        if let Some(cached) = self.agents.get(&ObjectRef::new(name))
            && self.writes.check_spec(cached.as_ref()) == writes::Copy::Current
        {
            return Ok(Some(cached));
        }
        self.node_agent_fresh(name).await
    }

    /// A NodeAgent from the API: for a decision taken once from it.
    pub async fn node_agent_fresh(
        &self,
        name: &str,
    ) -> Result<Option<Arc<crate::api::NodeAgent>>, kube::Error> {
        let fresh = Api::<crate::api::NodeAgent>::all(self.client.clone())
            .get_opt(name)
            .await?;
        Ok(fresh.map(Arc::new))
    }

    /// Publishes an Event about `obj`; a failure to record is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let now = k8s_openapi::jiff::Timestamp::now();
        if let Err(e) = self
            .events
            .publish(obj.object_ref(&()), warning, reason, note, now)
            .await
        {
            tracing::warn!(error = %e, reason, "cannot publish Event");
        }
    }
}

/// Restart backoff of every controller's watches: client-go's 800 ms start, doubling, but
/// capped at 5 s instead of 30 s. A controller backs off all its watches together, so after
/// an API server restart (each watch failing in turn, 410 Gone) the default grew to tens of
/// seconds with no event reaching any reconcile (tests/faults/ measured about a minute).
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const MIN: Duration = Duration::from_millis(800);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// The object a watch event is about (added, changed, deleted or listed), if any.
pub fn touched<K>(
    event: &Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>,
) -> Option<&K> {
    use kube::runtime::watcher::Event;
    match event {
        Ok(Event::Apply(obj) | Event::Delete(obj) | Event::InitApply(obj)) => Some(obj),
        _ => None,
    }
}

/// Wakes of objects, debounced per object: a wake is emitted once `window` passed without
/// another of its object's, the wakes before folded into it. A burst of a fan-out's Job and
/// Pod changes is one reconcile; under changes that never pause the object waits, bounded
/// by its reconcile's requeue, which the controller schedules apart from these. (A wake
/// once per window from the first, tried at 5000 nodes, wrote a fleet's batches' status
/// twice as often.) kube-runtime's scheduler does the folding.
pub fn debounced<K>(
    wakes: impl futures::Stream<Item = ObjectRef<K>>,
    window: Duration,
) -> impl futures::Stream<Item = ObjectRef<K>>
where
    K: Resource,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::StreamExt;
    use kube::runtime::scheduler::{ScheduleRequest, debounced_scheduler};
    debounced_scheduler(
        wakes.map(|obj| ScheduleRequest {
            message: obj,
            run_at: tokio::time::Instant::now(),
        }),
        window,
    )
}

/// Yields after each change of `rx`, at most once per `every`: the changes made in between
/// coalesce into the next item.
fn throttled<T: Send + Sync + 'static>(
    rx: tokio::sync::watch::Receiver<T>,
    every: Duration,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold((rx, false), move |(mut rx, yielded)| async move {
        if yielded {
            tokio::time::sleep(every).await;
        }
        rx.changed().await.ok()?;
        Some(((), (rx, true)))
    })
}

/// Whether a cache has been filled by its watch's first list (it stays filled after).
pub fn filled<K>(cache: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    cache
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

/// A watch merged into a controller that keeps its errors to itself (logged): it backs off
/// on its own ([`WatchBackoff`], applied before), while an error reaching the controller
/// would pause every watch of it for the backoff. After an API server restart each of a
/// controller's watches gets its 410 Gone in turn, and with six watches those pauses added
/// up to 20 s without an event (tests/faults/).
pub fn alone<K: Send + 'static>(
    what: &'static str,
    watch: impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static {
    use futures::StreamExt;
    watch.filter_map(move |item| {
        futures::future::ready(match item {
            Ok(obj) => Some(Ok(obj)),
            Err(error) => {
                tracing::debug!(watch = what, %error, "watch failed; it backs off on its own");
                None
            }
        })
    })
}

/// Reconciles one controller runs at once. Unbounded (kube-runtime's default), a thousand
/// objects applied together are a thousand reconciles each holding its reads and an API
/// connection; the API server cannot serve them faster anyway.
pub const RECONCILES_IN_FLIGHT: u16 = 32;

/// Every controller's runtime configuration: bounded reconciles, and `debounce` to fold a
/// burst of events (a fan-out's Job and Pod changes) into one reconcile.
pub fn runtime_config(debounce: Duration) -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default()
        .debounce(debounce)
        .concurrency(RECONCILES_IN_FLIGHT)
}

/// Requeue delay after a failed reconcile.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[tokio::test(start_paused = true)]
    async fn activity_that_never_stops_still_yields_once_per_period() {
        use futures::StreamExt;
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let every = Duration::from_millis(500);
        let mut ticks = Box::pin(throttled(rx, every));
        let start = tokio::time::Instant::now();
        // A change every 100 ms for 3 s, without a pause a debounce could wait for.
        let changes = tokio::spawn(async move {
            for i in 1..=30u64 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send_replace(i);
            }
        });
        let mut at = Vec::new();
        while let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(1), ticks.next()).await {
            at.push(start.elapsed().as_millis());
        }
        changes.await.expect("changes");
        // The first change at once, then one per period until the changes stop.
        assert_eq!(at, [100, 600, 1100, 1600, 2100, 2600, 3100]);
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_are_debounced_per_object() {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::ConfigMap;
        let (tx, rx) = futures::channel::mpsc::unbounded::<ObjectRef<ConfigMap>>();
        let window = Duration::from_millis(200);
        let mut out = Box::pin(debounced(rx, window));
        let start = tokio::time::Instant::now();
        let (a, b) = (
            ObjectRef::<ConfigMap>::new("a").within("ns"),
            ObjectRef::<ConfigMap>::new("b").within("ns"),
        );
        let wakes = {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                // `a` every 30 ms for a second, without a pause; `b` once, at 10 ms.
                for i in 0..34u64 {
                    tokio::time::sleep_until(start + Duration::from_millis(30 * i)).await;
                    tx.unbounded_send(a.clone()).expect("send");
                    if i == 0 {
                        tokio::time::sleep_until(start + Duration::from_millis(10)).await;
                        tx.unbounded_send(b.clone()).expect("send");
                    }
                }
                tx
            })
        };
        let mut at = Vec::new();
        while let Ok(Some(obj)) = tokio::time::timeout(Duration::from_secs(1), out.next()).await {
            at.push((obj.name, start.elapsed().as_millis()));
        }
        drop(wakes.await.expect("wakes"));
        let of = |name: &str| -> Vec<u128> {
            at.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, t)| *t)
                .collect()
        };
        // `a` once its wakes paused for a window, the last at 990 ms; `b` after its own.
        assert_eq!(of("a"), [1190]);
        assert_eq!(of("b"), [210]);
    }

    #[test]
    fn watch_backoff_doubles_to_five_seconds_and_resets() {
        let mut b = WatchBackoff::default();
        let first: Vec<u128> = (&mut b).take(5).map(|d| d.as_millis()).collect();
        assert_eq!(first, [800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next().map(|d| d.as_millis()), Some(800));
    }
}
