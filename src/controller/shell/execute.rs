//! The executor: makes a plan's changes, a create that finds its object done, a delete
//! that finds none done; writes the status only when it changed; counts final outcomes;
//! turns notes into Events.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use super::{KindOf, Reconciler, StatusOf};
use crate::api::{AsyncCommand, NodeAgent};
use crate::keys::FIELD_MANAGER;
use crate::plan::{Change, Child, ChildKind, Decide, Plan};

/// Creations in flight at once within one reconcile (a fan-out's Jobs), unless the kind
/// says otherwise ([`Reconciler::CREATIONS_AT_ONCE`]).
pub const CREATE_PARALLELISM: usize = 16;

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
    #[error("patching {kind:?} {name}: {source}")]
    Patch {
        kind: ChildKind,
        name: String,
        source: kube::Error,
    },
    #[error("labelling node {node}: {source}")]
    LabelNode { node: String, source: kube::Error },
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
}

/// Makes a plan's changes, writes its status if it changed, emits its Events.
pub async fn execute<R: Reconciler>(
    r: &R,
    api: &Api<KindOf<R>>,
    obj: &KindOf<R>,
    plan: Plan<StatusOf<R>>,
) -> Result<Action, ExecuteError> {
    let ctx = r.context();
    make_all(r, obj, &plan.before).await?;
    let before = R::Decide::status(obj);
    if before != Some(&plan.status) {
        let written = write_status(api, &obj.name_any(), &plan.status).await?;
        ctx.writes.wrote(&written);
        count_outcomes::<R>(before, &plan.status);
    }
    // Events go out even if a later change fails: the status that caused them is written.
    let after = make_all(r, obj, &plan.after).await;
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

/// Makes `changes` in order, stopping after the first run in which one fails (the others
/// of that run are still made). A run of creations of one kind (or of patches) goes out
/// together: the API server, not this loop, sets the pace. Kinds go one after the other: a
/// plan's parts exist before any child the plan starts.
async fn make_all<R: Reconciler>(
    r: &R,
    obj: &KindOf<R>,
    changes: &[Change],
) -> Result<(), ExecuteError> {
    let mut i = 0;
    while i < changes.len() {
        let run = match &changes[i] {
            Change::Create(first) => changes[i..]
                .iter()
                .take_while(|c| matches!(c, Change::Create(c) if c.kind() == first.kind()))
                .count(),
            // A fleet's grants or cancellations, one per batch: independent of each other.
            Change::PatchJson { .. } => changes[i..]
                .iter()
                .take_while(|c| matches!(c, Change::PatchJson { .. }))
                .count(),
            _ => 1,
        };
        if run > 1 {
            let made: Vec<_> = changes[i..i + run]
                .iter()
                .map(|change| make(r, obj, change))
                .collect();
            futures::stream::iter(made)
                .buffer_unordered(R::CREATIONS_AT_ONCE.max(1))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            i += run;
        } else {
            make(r, obj, &changes[i]).await?;
            i += 1;
        }
    }
    Ok(())
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
            // The created object as the API server returned it (its uid, its creation time).
            let result = match child {
                Child::Job(o) => create(client, o.as_ref(), &post)
                    .await
                    .map(|c| c.map(|c| Child::Job(Box::new(c)))),
                Child::DaemonSet(o) => create(client, o.as_ref(), &post)
                    .await
                    .map(|c| c.map(|c| Child::DaemonSet(Box::new(c)))),
                Child::AsyncCommand(o) => create(client, o.as_ref(), &post)
                    .await
                    .map(|c| c.map(|c| Child::AsyncCommand(Box::new(c)))),
                Child::AgentInvocation(o) => create(client, o.as_ref(), &post)
                    .await
                    .map(|c| c.map(|c| Child::AgentInvocation(Box::new(c)))),
                Child::ConfigMap(o) => create(client, o.as_ref(), &post)
                    .await
                    .map(|c| c.map(|c| Child::ConfigMap(Box::new(c)))),
            };
            match result {
                Ok(Some(created)) => r.created(&created),
                Ok(None) => {}
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
                Child::ConfigMap(o) => apply(client, o.as_ref(), &params).await,
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
                // The invocation that set them plans from the agent's cache next: it must
                // not take a copy from before this write for the current one.
                ChildKind::NodeAgent => {
                    apply_fields::<NodeAgent>(&Api::all(client.clone()), name, fields, &params)
                        .await
                        .map(|written| r.context().writes.wrote(&written))
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
                ChildKind::ConfigMap => delete::<ConfigMap>(client, namespace, name).await,
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
        Change::PatchJson {
            kind,
            namespace,
            name,
            patch,
        } => {
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let result = match (
                kind,
                serde_json::from_value::<json_patch::Patch>(patch.clone()),
            ) {
                (ChildKind::AsyncCommand, Ok(p)) => {
                    Api::<AsyncCommand>::namespaced(client.clone(), namespace)
                        .patch(name, &params, &Patch::Json::<()>(p))
                        .await
                        // What the next reconcile reads of it is never older than this.
                        .map(|patched| r.context().writes.wrote(&patched))
                }
                (_, Err(e)) => Err(kube::Error::Service(
                    format!("a malformed patch: {e}").into(),
                )),
                (other, _) => Err(kube::Error::Service(
                    format!("patching a {other:?} is not supported").into(),
                )),
            };
            result.map_err(|source| ExecuteError::Patch {
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
                Ok(labelled) => {
                    r.context()
                        .node_labels
                        .wrote(&labelled.metadata, key, value.as_deref())
                }
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

/// A namespaced object the executor creates, applies or deletes.
pub trait Namespaced:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
{
}

impl<K> Namespaced for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
{
}

/// An Api for `obj`'s kind in `obj`'s namespace.
pub fn namespaced_api<K: Namespaced>(client: &kube::Client, obj: &K) -> Api<K> {
    Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
}

/// Creates `obj`: the object created, or none when it existed (409).
async fn create<K: Namespaced>(
    client: &kube::Client,
    obj: &K,
    post: &PostParams,
) -> Result<Option<K>, kube::Error> {
    let api: Api<K> = namespaced_api(client, obj);
    match api.create(post, obj).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

async fn apply<K: Namespaced>(
    client: &kube::Client,
    obj: &K,
    params: &PatchParams,
) -> Result<(), kube::Error> {
    let api: Api<K> = namespaced_api(client, obj);
    super::apply::apply(&api, &obj.name_any(), None, params, obj)
        .await
        .map(|_| ())
}

/// Applies `fields` (the body without apiVersion and kind) to the object `name` of `K`.
async fn apply_fields<K>(
    api: &Api<K>,
    name: &str,
    fields: &serde_json::Value,
    params: &PatchParams,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let mut body = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&())});
    if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
        body.extend(fields.clone());
    }
    super::apply::apply(api, name, None, params, &body).await
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
/// nodeops' field manager; returns the object as written.
pub async fn write_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<K, ExecuteError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    super::apply::apply(api, name, Some("status"), &params, &patch)
        .await
        .map_err(ExecuteError::WriteStatus)
}
