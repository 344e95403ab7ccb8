//! The Invoker controller: fetch (its Command; its child AsyncCommands from a cache of
//! them, with those created and not yet in it) -> [`plan`]
//! (validate the schedule and Command, decide whether a slot fires) -> execute (delete
//! replaced or pruned children, create the slot's child) -> status. It requeues to the
//! exact next fire time; no polling interval decides when a run starts.

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::expect::Owned;
use super::shell::{self, KindOf};
use crate::api::{AsyncCommand, Invoker};
use crate::keys::{INVOKER_UID_LABEL, SCHEDULED_TIME_ANNOTATION};
use crate::plan::Child as ChildObject;
use plan::{Child, World};

/// Errors of reading an Invoker's world, named after the read that failed; all are retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading Command {name}: {source}")]
    ReadCommand { name: String, source: kube::Error },
    #[error("listing the child AsyncCommands: {0}")]
    ListChildren(#[source] kube::Error),
}

/// Invoker reconciles at once (see `run`).
const SLOT_RECONCILES: u16 = 1024;

/// The Invoker's place in the shell.
pub struct Reconciler {
    pub ctx: Arc<Context>,
    /// Every Invoker's children, without their per-node results and managed fields, with
    /// those created and not yet cached.
    pub children: Owned<AsyncCommand>,
}

impl shell::Reconciler for Reconciler {
    type Decide = plan::Decisions;
    type Error = Error;

    fn context(&self) -> &Context {
        &self.ctx
    }
    fn api(&self, obj: &KindOf<Self>) -> Api<Invoker> {
        shell::namespaced_api(&self.ctx.client, obj)
    }
    async fn fetch(&self, inv: &Invoker, now: Timestamp) -> Result<World, Error> {
        let ns = inv.namespace().unwrap_or_default();
        let uid = inv.metadata.uid.clone().unwrap_or_default();
        let name = inv.spec.command_ref.clone();
        let command = self
            .ctx
            .command(&ns, &name)
            .await
            .map_err(|source| Error::ReadCommand { name, source })?;
        let children = self
            .children
            .of(&self.ctx.client, &ns, &uid)
            .await
            .map_err(Error::ListChildren)?
            .iter()
            .filter_map(|c| Child::from(c))
            .collect();
        Ok(World {
            now,
            command: command.map(|c| c.spec),
            children,
        })
    }
    /// How late the run started against its slot; the child counts as there until the
    /// cache shows it.
    fn created(&self, child: &ChildObject) {
        let ChildObject::AsyncCommand(child) = child else {
            return;
        };
        self.children.created(child);
        let slot = child
            .annotations()
            .get(SCHEDULED_TIME_ANNOTATION)
            .and_then(|t| t.parse::<Timestamp>().ok());
        if let Some(slot) = slot {
            let lag = Timestamp::now().duration_since(slot).as_secs_f64();
            crate::metrics::METRICS.schedule_lag.observe(lag.max(0.0));
        }
    }
}

/// Keeps what [`Child::from`] reads of a child: its per-node results are most of its bytes.
fn trim_child(child: &mut AsyncCommand) {
    child.metadata.managed_fields = None;
    if let Some(status) = child.status.as_mut() {
        status.cmd_jobs = Vec::new();
        status.conditions = Vec::new();
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // The children's watch fills the cache the Invokers read them from, marks creations
    // seen, and wakes a child's Invoker once the cache holds the change.
    let (children, child_stream) =
        Owned::watch(ctx.scoped::<AsyncCommand>(), INVOKER_UID_LABEL, trim_child);
    // Every Invoker on a schedule is due at the same instant, and its reconcile is a few
    // small requests: more at once than other controllers, or the last of a hundred fires
    // seconds late (`make bench`: p99 3.6 s at 32, against the CronJob controller's 5.2 s).
    // The client still bounds the requests in flight, and serves creations of AsyncCommands
    // before the requests waiting (`operator/inflight.rs`): the slot's later children are
    // not held behind the Invokers' status writes or the runs of its first children.
    let controller = shell::controller::<Reconciler>(ctx.scoped(), Duration::ZERO)
        .with_config(super::runtime_config(Duration::ZERO).concurrency(SLOT_RECONCILES))
        .owns_stream(child_stream);
    let reconciler = Reconciler { ctx, children };
    shell::drive(controller, Arc::new(reconciler), shutdown).await;
}
