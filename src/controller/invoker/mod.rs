//! The Invoker controller: fetch (the Invoker, its Command, its child AsyncCommands) ->
//! plan ([`plan`], pure) -> apply (create the slot's child, delete replaced or pruned ones)
//! -> status. It requeues to the exact next fire time; no polling interval decides when a
//! run starts.

pub mod plan;

use crate::keys::SCHEDULED_TIME_ANNOTATION;
use crate::keys::{FIELD_MANAGER, INVOKER_UID_LABEL};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use thiserror::Error;
use tracing::{Instrument, info_span, warn};

use super::{Context, RETRY_AFTER};
use crate::api::{AsyncCommand, Command, Invoker};
use plan::Child;

/// Errors of one reconcile, named after the step that failed; all are retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("fetching the Invoker: {0}")]
    Fetch(#[source] kube::Error),
    #[error("reading Command {name}: {source}")]
    ReadCommand { name: String, source: kube::Error },
    #[error("listing the child AsyncCommands: {0}")]
    ListChildren(#[source] kube::Error),
    #[error("creating child {name}: {source}")]
    CreateChild { name: String, source: kube::Error },
    #[error("the child manifest for {name} is not an AsyncCommand: {source}")]
    RenderChild {
        name: String,
        source: serde_json::Error,
    },
    #[error("deleting child {name}: {source}")]
    DeleteChild { name: String, source: kube::Error },
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
}

/// Invoker reconciles at once (see `run`).
const SLOT_RECONCILES: u16 = 256;

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let invokers: Api<Invoker> = ctx.scoped();
    let children: Api<AsyncCommand> = ctx.scoped();
    Controller::new(invokers, watcher::Config::default())
        .trigger_backoff(super::WatchBackoff::default())
        // Every Invoker on a schedule is due at the same instant, and its reconcile is a few
        // small requests: more at once than other controllers, or the last of a hundred
        // fires seconds late (`make bench`: p99 3.6 s at 32, against the CronJob
        // controller's 5.2 s). The client still bounds the requests in flight.
        .with_config(super::runtime_config(Duration::ZERO).concurrency(SLOT_RECONCILES))
        .owns(
            children,
            watcher::Config::default().labels(INVOKER_UID_LABEL),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(obj: Arc<Invoker>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(kind = "Invoker", namespace = obj.namespace().unwrap_or_default(), object = obj.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER)
}

/// One reconcile of one Invoker.
pub async fn reconcile(obj: Arc<Invoker>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let span = info_span!("reconcile", kind = "Invoker", namespace = %ns, object = %name);
    crate::metrics::measure("Invoker", reconcile_inner(ns, name, ctx))
        .instrument(span)
        .await
}

async fn reconcile_inner(ns: String, name: String, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Invoker> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh: lastInvokeTime is what makes a slot fire once; never decide from a stale copy.
    let Some(inv) = api.get_opt(&name).await.map_err(Error::Fetch)? else {
        return Ok(Action::await_change());
    };
    if inv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = inv.metadata.uid.clone().unwrap_or_default();
    let commands: Api<Command> = Api::namespaced(ctx.client.clone(), &ns);
    let command_name = inv.spec.command_ref.clone();
    let command = commands
        .get_opt(&command_name)
        .await
        .map_err(|source| Error::ReadCommand {
            name: command_name,
            source,
        })?;
    let children_api: Api<AsyncCommand> = Api::namespaced(ctx.client.clone(), &ns);
    let children: Vec<Child> = children_api
        .list(&ListParams::default().labels(&format!("{INVOKER_UID_LABEL}={uid}")))
        .await
        .map_err(Error::ListChildren)?
        .items
        .iter()
        .filter_map(Child::from)
        .collect();
    let now = Timestamp::now();
    let planned = plan::plan(&inv, command.as_ref().map(|c| &c.spec), &children, now);

    // The slot's child first, then the status that records the slot: a crash in between
    // finds the child by its name and adopts it.
    for child in &planned.delete {
        match children_api
            .delete(child, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::DeleteChild {
                    name: child.clone(),
                    source,
                });
            }
        }
    }
    if let Some((child, manifest)) = &planned.create {
        let obj: AsyncCommand =
            serde_json::from_value(manifest.clone()).map_err(|source| Error::RenderChild {
                name: child.clone(),
                source,
            })?;
        match children_api
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &obj,
            )
            .await
        {
            Ok(created) => {
                // How late the run started against its slot.
                let slot = created
                    .annotations()
                    .get(SCHEDULED_TIME_ANNOTATION)
                    .and_then(|t| t.parse::<Timestamp>().ok());
                if let Some(slot) = slot {
                    let lag = Timestamp::now().duration_since(slot).as_secs_f64();
                    crate::metrics::METRICS.schedule_lag.observe(lag.max(0.0));
                }
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => {
                return Err(Error::CreateChild {
                    name: child.clone(),
                    source,
                });
            }
        }
    }
    if inv.status.as_ref() != Some(&planned.status) {
        super::apply_status(&api, &name, &planned.status)
            .await
            .map_err(Error::WriteStatus)?;
    }
    for note in &planned.notes {
        ctx.event(&inv, note.warning, note.reason, note.message.clone())
            .await;
    }
    let stalled =
        crate::conditions::is_true(&planned.status.conditions, crate::conditions::STALLED);
    Ok(match planned.requeue_after {
        Some(after) => Action::requeue(after),
        // A missing Command can appear without an event on the Invoker.
        None if stalled => Action::requeue(Duration::from_secs(30)),
        None => Action::await_change(),
    })
}
