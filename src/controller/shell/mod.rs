//! The one reconcile shell every kind runs in: fetch -> validate -> plan -> execute.
//!
//! A kind brings its pure decisions ([`Decide`]: validate, plan, stall) and a
//! [`Reconciler`]: how to read its world, the only I/O it writes. This module does the rest
//! the same way for all six: the span and metrics around a reconcile, the cached read (never
//! older than the operator's own last write, [`crate::controller::writes`]), the finalizer, and [`execute`], which makes the plan's changes (a create that finds its
//! object is done, a delete that finds none is done), writes status only when it changed,
//! counts final outcomes, turns notes into Events and requeues.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use thiserror::Error;
use tracing::{Instrument, info_span, warn};

mod apply;
mod execute;

pub use execute::{ExecuteError, Namespaced, execute, namespaced_api, write_status};

use super::{Context, RETRY_AFTER};
use crate::controller::writes::Copy;
use crate::plan::{Child, Decide, Invalid};

/// When to look again at an object whose cached copy lags the operator's own write, should
/// the watch event of that write not come.
const CACHE_LAG_RECHECK: Duration = Duration::from_secs(2);

/// The object a reconciler reconciles.
pub type KindOf<R> = <<R as Reconciler>::Decide as Decide>::Kind;
pub(crate) type StatusOf<R> = <<R as Reconciler>::Decide as Decide>::Status;
type WorldOf<R> = <<R as Reconciler>::Decide as Decide>::World;

/// What one kind brings to the shell besides its pure decisions: how to read its world.
pub trait Reconciler: Sized + Send + Sync + 'static {
    /// The kind's pure steps.
    type Decide: Decide;
    /// The errors of `fetch` (and of `cleanup`), named after the read that failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// A finalizer to hold while the object exists; [`Reconciler::cleanup`] runs before it
    /// is removed.
    const FINALIZER: Option<&'static str> = None;
    /// Creations of one kind a reconcile has in flight at once.
    const CREATIONS_AT_ONCE: usize = execute::CREATE_PARALLELISM;

    /// The shared context.
    fn context(&self) -> &Context;
    /// An Api where `obj` lives (its namespace, or the cluster for a cluster-scoped kind).
    fn api(&self, obj: &KindOf<Self>) -> Api<KindOf<Self>>;
    /// Nothing to do for this object (finished, or not this operator's): no request made.
    fn idle(&self, _obj: &KindOf<Self>) -> bool {
        false
    }
    /// Reads the world the decisions need.
    fn fetch(
        &self,
        obj: &KindOf<Self>,
        now: Timestamp,
    ) -> impl Future<Output = Result<WorldOf<Self>, Self::Error>> + Send;
    /// Called for each child this reconcile created (not for one that already existed),
    /// as the API server returned it.
    fn created(&self, _child: &Child) {}
    /// Undoes what the object did outside its owned children, before its finalizer goes.
    fn cleanup(
        &self,
        _obj: Arc<KindOf<Self>>,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send {
        async { Ok(Action::await_change()) }
    }
}

/// Why one reconcile failed.
#[derive(Debug, Error)]
pub enum Error<E: std::error::Error + 'static> {
    #[error("fetching the object: {0}")]
    Get(#[source] kube::Error),
    #[error(transparent)]
    Fetch(E),
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    #[error("adding or removing the finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    #[error("the finalizer cannot be managed: {0}")]
    FinalizerMisuse(String),
}

/// A controller of `KindOf<R>` watching `api`, configured as every controller is. Its own
/// watch backs off alone ([`crate::controller::alone`]), as the other watches a kind adds
/// with [`watched`].
pub fn controller<R: Reconciler>(api: Api<KindOf<R>>, debounce: Duration) -> Controller<KindOf<R>> {
    controller_into::<R>(api, debounce, Default::default())
}

/// [`controller`], its cache filled through `writer`, whose store other controllers read.
pub fn controller_into<R: Reconciler>(
    api: Api<KindOf<R>>,
    debounce: Duration,
    writer: kube::runtime::reflector::store::Writer<KindOf<R>>,
) -> Controller<KindOf<R>> {
    use kube::runtime::WatchStreamExt;
    let store = writer.as_reader();
    let own = kube::runtime::reflector(writer, backing_off(api, watch_config()).modify(lean))
        .applied_objects();
    configure(
        Controller::for_stream(super::alone(R::Decide::KIND, own), store),
        debounce,
    )
}

/// What a controller's cache keeps of its objects: all but their managed fields, which no
/// reconcile reads and which grow with each writer of an object (the user's apply, the
/// operator's status writes), held for every object the operator watches.
pub fn lean<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// A watch of `api` with the operator's backoff ([`super::WatchBackoff`]).
fn backing_off<K>(
    api: Api<K>,
    config: kube::runtime::watcher::Config,
) -> impl futures::Stream<Item = Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>>
+ Send
+ 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
{
    use kube::runtime::WatchStreamExt;
    kube::runtime::watcher(api, config).backoff(super::WatchBackoff::default())
}

/// The objects `api` watched with `config` touches (changed or deleted), for a kind's
/// `owns_stream` or `watches_stream`: with the operator's backoff, and its errors kept to
/// itself ([`crate::controller::alone`]).
pub fn watched<K>(
    what: &'static str,
    api: Api<K>,
    config: kube::runtime::watcher::Config,
) -> impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
{
    use kube::runtime::WatchStreamExt;
    super::alone(what, backing_off(api, config).touched_objects())
}

/// `controller` configured as every controller is: its debounce and concurrency, and the
/// backoff of its merged watches (kube's default, for a controller made from a stream
/// too, grows to a minute after an API server restart).
pub fn configure<K>(controller: Controller<K>, debounce: Duration) -> Controller<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    controller
        .trigger_backoff(super::WatchBackoff::default())
        .with_config(super::runtime_config(debounce))
}

/// How a controller watches its own kind: a consistent list (not the API server's cache at
/// any version) when the watch starts or starts over, since reconciles plan from it.
pub fn watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default()
        .list_semantic(kube::runtime::watcher::ListSemantic::MostRecent)
}

/// Runs `controller` with the shell's reconcile until `shutdown` resolves.
pub async fn drive<R: Reconciler>(
    controller: Controller<KindOf<R>>,
    reconciler: Arc<R>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<R>, error_policy::<R>, reconciler)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind = R::Decide::KIND, error = %e, "reconcile did not complete");
            }
        })
        .await;
}

fn error_policy<R: Reconciler>(obj: Arc<KindOf<R>>, error: &Error<R::Error>, _: Arc<R>) -> Action {
    warn!(kind = R::Decide::KIND, namespace = obj.namespace().unwrap_or_default(), object = obj.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER)
}

/// One reconcile of one object, in a span that carries kind, namespace and name.
pub async fn reconcile<R: Reconciler>(
    obj: Arc<KindOf<R>>,
    r: Arc<R>,
) -> Result<Action, Error<R::Error>> {
    // Final is absorbing and a cache never runs ahead of the API: no request needed.
    if r.idle(&obj) {
        return Ok(Action::await_change());
    }
    let span = info_span!("reconcile", kind = R::Decide::KIND, namespace = %obj.namespace().unwrap_or_default(), object = %obj.name_any());
    crate::metrics::measure(R::Decide::KIND, guarded(obj, r))
        .instrument(span)
        .await
}

async fn guarded<R: Reconciler>(obj: Arc<KindOf<R>>, r: Arc<R>) -> Result<Action, Error<R::Error>> {
    let api = r.api(obj.as_ref());
    let Some(finalizer_name) = R::FINALIZER else {
        return fresh(obj, r.as_ref(), &api).await;
    };
    finalizer(&api, finalizer_name, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => fresh(obj, r.as_ref(), &api).await,
            FinalizerEvent::Cleanup(obj) => r.cleanup(obj).await.map_err(Error::Fetch),
        }
    })
    .await
    .map_err(|e| {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Finalizer(e),
            other => Error::FinalizerMisuse(other.to_string()),
        }
    })
}

async fn fresh<R: Reconciler>(
    cached: Arc<KindOf<R>>,
    r: &R,
    api: &Api<KindOf<R>>,
) -> Result<Action, Error<R::Error>> {
    // The status is the memory of what was started: never plan from a copy older than the
    // operator's own last write of it. Such a copy is left alone; the write's watch event
    // wakes the object again (the requeue is a safety net, and costs no request).
    let obj = match r.context().writes.check(cached.as_ref()) {
        Copy::Current => cached.as_ref().clone(),
        Copy::Lags => return Ok(Action::requeue(CACHE_LAG_RECHECK)),
        Copy::Unknown => match api.get_opt(&cached.name_any()).await.map_err(Error::Get)? {
            Some(obj) => obj,
            None => return Ok(Action::await_change()),
        },
    };
    if obj.meta().deletion_timestamp.is_some() || r.idle(&obj) {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let world = r.fetch(&obj, now).await.map_err(Error::Fetch)?;
    let plan = R::Decide::decide(&obj, &world);
    // Checked after the reads: a replica frozen while it read must not act on them.
    if !r.context().fence.open(std::time::Instant::now()) {
        tracing::warn!("the leader Lease was not renewed in time: not acting");
        return Ok(Action::requeue(RETRY_AFTER));
    }
    match execute(r, api, &obj, plan).await {
        Err(
            ExecuteError::Create {
                kind,
                namespace: Some(ns),
                source,
                ..
            }
            | ExecuteError::Apply {
                kind,
                namespace: Some(ns),
                source,
                ..
            },
        ) if namespace_missing(&source) => {
            let message = format!(
                "namespace {ns} does not exist: create it, the {kind}s of {} live there",
                R::Decide::KIND
            );
            let invalid = Invalid::new("NamespaceNotFound", message);
            let plan = R::Decide::stall(&obj, &world, &invalid);
            Ok(execute(r, api, &obj, plan).await?)
        }
        result => Ok(result?),
    }
}

/// A create or apply refused because its namespace does not exist.
/// The API server says `namespaces "x" not found`; any other 404 is retried as an error.
fn namespace_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && s.message.starts_with("namespaces \""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "NotFound")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_a_missing_namespace_stalls() {
        assert!(namespace_missing(&api_error(
            404,
            "namespaces \"nodeops-agents\" not found"
        )));
        // Any other 404 (a transient one during a control-plane restart) is retried.
        assert!(!namespace_missing(&api_error(
            404,
            "the server could not find the requested resource"
        )));
        assert!(!namespace_missing(&api_error(
            409,
            "namespaces \"x\" not found"
        )));
    }
}
