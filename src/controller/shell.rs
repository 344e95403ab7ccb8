//! The one reconcile shell every kind runs in: fetch -> validate -> plan -> execute.
//!
//! A kind brings its pure decisions ([`Decide`]: validate, plan, stall) and a
//! [`Reconciler`]: how to read its world, the only I/O it writes. This module does the rest
//! the same way for all six: the span and metrics around a reconcile, the fresh read, the
//! finalizer, and [`execute`], which makes the plan's changes (a create that finds its
//! object is done, a delete that finds none is done), writes status only when it changed,
//! counts final outcomes, turns notes into Events and requeues.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tracing::{Instrument, info_span, warn};

use super::{Context, RETRY_AFTER};
use crate::api::{AsyncCommand, NodeAgent};
use crate::keys::FIELD_MANAGER;
use crate::plan::{Change, Child, ChildKind, Decide, Invalid, Plan};

/// Creations in flight at once within one reconcile (a fan-out's Jobs).
const CREATE_PARALLELISM: usize = 16;

/// The object a reconciler reconciles.
pub type KindOf<R> = <<R as Reconciler>::Decide as Decide>::Kind;
type StatusOf<R> = <<R as Reconciler>::Decide as Decide>::Status;
type WorldOf<R> = <<R as Reconciler>::Decide as Decide>::World;

/// What one kind brings to the shell besides its pure decisions: how to read its world.
pub trait Reconciler: Sized + Send + Sync + 'static {
    /// The kind's pure steps.
    type Decide: Decide;
    /// The errors of `fetch` (and of `cleanup`), named after the read that failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Read the object fresh from the API before planning: its status is the memory of
    /// what was started, and a cached copy may predate the last write.
    const FRESH_READ: bool = true;
    /// A finalizer to hold while the object exists; [`Reconciler::cleanup`] runs before it
    /// is removed.
    const FINALIZER: Option<&'static str> = None;

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
    /// Called for each child this reconcile created (not for one that already existed).
    fn created(&self, _child: &Child) {}
    /// Undoes what the object did outside its owned children, before its finalizer goes.
    fn cleanup(
        &self,
        _obj: Arc<KindOf<Self>>,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send {
        async { Ok(Action::await_change()) }
    }
}

/// The step of [`execute`] that failed; the reconcile is retried.
#[derive(Debug, Error)]
pub enum ExecuteError {
    #[error("creating {kind} {name}: {source}")]
    Create {
        kind: &'static str,
        namespace: Option<String>,
        name: String,
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        namespace: Option<String>,
        name: String,
        source: kube::Error,
    },
    #[error("deleting {kind:?} {name}: {source}")]
    Delete {
        kind: ChildKind,
        name: String,
        source: kube::Error,
    },
    #[error("labelling node {node}: {source}")]
    LabelNode { node: String, source: kube::Error },
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
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

/// A controller of `KindOf<R>` watching `api`, configured as every controller is.
pub fn controller<R: Reconciler>(api: Api<KindOf<R>>, debounce: Duration) -> Controller<KindOf<R>> {
    Controller::new(api, kube::runtime::watcher::Config::default())
        .trigger_backoff(super::WatchBackoff::default())
        .with_config(super::runtime_config(debounce))
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
    let obj = if R::FRESH_READ {
        match api.get_opt(&cached.name_any()).await.map_err(Error::Get)? {
            Some(obj) => obj,
            None => return Ok(Action::await_change()),
        }
    } else {
        cached.as_ref().clone()
    };
    if obj.meta().deletion_timestamp.is_some() || r.idle(&obj) {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let world = r.fetch(&obj, now).await.map_err(Error::Fetch)?;
    let plan = R::Decide::decide(&obj, &world);
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
fn namespace_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Makes a plan's changes, writes its status if it changed, emits its Events.
pub async fn execute<R: Reconciler>(
    r: &R,
    api: &Api<KindOf<R>>,
    obj: &KindOf<R>,
    plan: Plan<StatusOf<R>>,
) -> Result<Action, ExecuteError> {
    let ctx = r.context();
    let mut i = 0;
    while i < plan.before.len() {
        // A run of creations goes out together: the API server, not this loop, sets the pace.
        let run = plan.before[i..]
            .iter()
            .take_while(|c| matches!(c, Change::Create(_)))
            .count();
        if run > 1 {
            let creations: Vec<_> = plan.before[i..i + run]
                .iter()
                .map(|change| make(r, obj, change))
                .collect();
            futures::stream::iter(creations)
                .buffer_unordered(CREATE_PARALLELISM)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            i += run;
        } else {
            make(r, obj, &plan.before[i]).await?;
            i += 1;
        }
    }
    let before = R::Decide::status(obj);
    if before != Some(&plan.status) {
        write_status(api, &obj.name_any(), &plan.status).await?;
        count_outcomes::<R>(before, &plan.status);
    }
    // Events go out even if a later change fails: the status that caused them is written.
    let mut after = Ok(());
    for change in &plan.after {
        if let Err(e) = make(r, obj, change).await {
            after = Err(e);
            break;
        }
    }
    for note in &plan.notes {
        ctx.event(obj, note.warning, note.reason, note.message.clone())
            .await;
    }
    after?;
    if plan.after.iter().any(|c| {
        matches!(
            c,
            Change::Delete {
                kind: ChildKind::Itself,
                ..
            }
        )
    }) {
        return Ok(Action::await_change());
    }
    Ok(plan
        .requeue
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// Counts each outcome that became final with this status write.
fn count_outcomes<R: Reconciler>(before: Option<&StatusOf<R>>, after: &StatusOf<R>) {
    let was: std::collections::BTreeSet<(String, String, String)> = before
        .map(R::Decide::outcomes)
        .unwrap_or_default()
        .into_iter()
        .collect();
    for (key, phase, reason) in R::Decide::outcomes(after) {
        let seen = was.iter().any(|(k, p, _)| *k == key && *p == phase);
        if !seen {
            crate::metrics::METRICS.outcome(R::Decide::KIND, &phase, &reason);
        }
    }
}

async fn make<R: Reconciler>(r: &R, obj: &KindOf<R>, change: &Change) -> Result<(), ExecuteError> {
    let client = &r.context().client;
    let post = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match change {
        Change::Create(child) => {
            let result = match child {
                Child::Job(o) => create(client, o.as_ref(), &post).await,
                Child::DaemonSet(o) => create(client, o.as_ref(), &post).await,
                Child::AsyncCommand(o) => create(client, o.as_ref(), &post).await,
                Child::AgentInvocation(o) => create(client, o.as_ref(), &post).await,
            };
            match result {
                Ok(true) => r.created(child),
                Ok(false) => {}
                Err(source) => {
                    return Err(ExecuteError::Create {
                        kind: child.kind(),
                        namespace: child.namespace(),
                        name: child.name(),
                        source,
                    });
                }
            }
        }
        Change::Apply(child) => {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let result = match child {
                Child::Job(o) => apply(client, o.as_ref(), &params).await,
                Child::DaemonSet(o) => apply(client, o.as_ref(), &params).await,
                Child::AsyncCommand(o) => apply(client, o.as_ref(), &params).await,
                Child::AgentInvocation(o) => apply(client, o.as_ref(), &params).await,
            };
            result.map_err(|source| ExecuteError::Apply {
                kind: child.kind(),
                namespace: child.namespace(),
                name: child.name(),
                source,
            })?;
        }
        Change::ApplyFields {
            kind,
            name,
            manager,
            fields,
        } => {
            let params = PatchParams::apply(manager).force();
            let result = match kind {
                ChildKind::NodeAgent => {
                    apply_fields::<NodeAgent>(&Api::all(client.clone()), name, fields, &params)
                        .await
                }
                other => Err(kube::Error::Service(
                    format!("applying fields of a {other:?} is not supported").into(),
                )),
            };
            result.map_err(|source| ExecuteError::Apply {
                kind: "object",
                namespace: None,
                name: name.clone(),
                source,
            })?;
        }
        Change::Delete {
            kind,
            namespace,
            name,
        } => {
            let result = match kind {
                ChildKind::Job => delete::<Job>(client, namespace, name).await,
                ChildKind::DaemonSet => delete::<DaemonSet>(client, namespace, name).await,
                ChildKind::AsyncCommand => delete::<AsyncCommand>(client, namespace, name).await,
                ChildKind::NodeAgent => Api::<NodeAgent>::all(client.clone())
                    .delete(name, &DeleteParams::background())
                    .await
                    .map(|_| ()),
                ChildKind::Itself => r
                    .api(obj)
                    .delete(name, &DeleteParams::background())
                    .await
                    .map(|_| ()),
            };
            result.map_err(|source| ExecuteError::Delete {
                kind: *kind,
                name: name.clone(),
                source,
            })?;
        }
        Change::LabelNode { node, key, value } => {
            let nodes: Api<Node> = Api::all(client.clone());
            let patch = serde_json::json!({"metadata": {"labels": {key.as_str(): value}}});
            match nodes
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                // Removing a label from a node that is gone: nothing left to remove.
                Err(kube::Error::Api(e)) if e.code == 404 && value.is_none() => {}
                Err(source) => {
                    return Err(ExecuteError::LabelNode {
                        node: node.clone(),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Creates `obj`: `Ok(true)` when created, `Ok(false)` when it existed (409).
async fn create<K>(client: &kube::Client, obj: &K, post: &PostParams) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    match api.create(post, obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn apply<K>(client: &kube::Client, obj: &K, params: &PatchParams) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch(&obj.name_any(), params, &Patch::Apply(obj))
        .await
        .map(|_| ())
}

/// Applies `fields` (the body without apiVersion and kind) to the object `name` of `K`.
async fn apply_fields<K>(
    api: &Api<K>,
    name: &str,
    fields: &serde_json::Value,
    params: &PatchParams,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let mut body = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&())});
    if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
        body.extend(fields.clone());
    }
    api.patch(name, params, &Patch::Apply(&body))
        .await
        .map(|_| ())
}

/// Deletes in the background: `Ok` when deleted or already gone (404).
async fn delete<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `status` to the status subresource of `name` with server-side apply under
/// nodeops' field manager.
pub async fn write_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), ExecuteError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&patch))
        .await
        .map(|_| ())
        .map_err(ExecuteError::WriteStatus)
}
