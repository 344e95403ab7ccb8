//! The Invoker controller: fetch (its Command; its child AsyncCommands from a cache of
//! them, with those created and not yet in it) -> [`plan`]
//! (validate the schedule and Command, decide whether a slot fires) -> execute (delete
//! replaced or pruned children, create the slot's child) -> status. It requeues to the
//! exact next fire time; no polling interval decides when a run starts.

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::expect::Expectations;
use super::shell::{self, KindOf};
use crate::api::{AsyncCommand, Command, Invoker};
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
const SLOT_RECONCILES: u16 = 256;

/// The Invoker's place in the shell.
pub struct Reconciler {
    pub ctx: Arc<Context>,
    /// Every Invoker's children, without their per-node results and managed fields (the
    /// controller's watch of its children fills it).
    pub children: Store<AsyncCommand>,
    /// Children this controller created that `children` does not show yet.
    pub expected: Arc<Expectations<AsyncCommand>>,
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
        // A Command not (yet) in the cache is read from the API: one created a moment
        // before the Invoker naming it must not be taken for missing.
        let name = inv.spec.command_ref.clone();
        let command = match self.ctx.commands.get(&ObjectRef::new(&name).within(&ns)) {
            Some(cached) => Some(cached.as_ref().clone()),
            None => Api::<Command>::namespaced(self.ctx.client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(|source| Error::ReadCommand { name, source })?,
        };
        let children = self
            .children(&ns, &uid)
            .await?
            .iter()
            .filter_map(Child::from)
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
        if let Some(owner) = child.labels().get(INVOKER_UID_LABEL) {
            let mut kept = child.as_ref().clone();
            trim_child(&mut kept);
            self.expected
                .created(owner, kept, std::time::Instant::now());
        }
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

impl Reconciler {
    /// The Invoker's children: from the cache once it has filled, with those created and
    /// not yet in it ([`crate::controller::expect`]); before that, from the API.
    async fn children(&self, ns: &str, uid: &str) -> Result<Vec<AsyncCommand>, Error> {
        if !crate::controller::filled(&self.children) {
            return Ok(Api::<AsyncCommand>::namespaced(self.ctx.client.clone(), ns)
                .list(&ListParams::default().labels(&format!("{INVOKER_UID_LABEL}={uid}")))
                .await
                .map_err(Error::ListChildren)?
                .items);
        }
        Ok(crate::controller::expect::children(
            self.children.state(),
            &self.expected,
            INVOKER_UID_LABEL,
            uid,
            ns,
            std::time::Instant::now(),
        )
        .iter()
        .map(|c| c.as_ref().clone())
        .collect())
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
    let (children, writer) = kube::runtime::reflector::store::<AsyncCommand>();
    let expected: Arc<Expectations<AsyncCommand>> = Arc::default();
    let seen = expected.clone();
    let child_stream = reflector(
        writer,
        watcher(
            ctx.scoped::<AsyncCommand>(),
            shell::watch_config().labels(INVOKER_UID_LABEL),
        )
        .modify(trim_child)
        .backoff(crate::controller::WatchBackoff::default()),
    )
    .inspect(move |event| {
        if let Some(child) = crate::controller::touched(event)
            && let Some(owner) = child.labels().get(INVOKER_UID_LABEL)
        {
            seen.observed(owner, &child.name_any());
        }
    })
    .touched_objects();
    // Every Invoker on a schedule is due at the same instant, and its reconcile is a few
    // small requests: more at once than other controllers, or the last of a hundred fires
    // seconds late (`make bench`: p99 3.6 s at 32, against the CronJob controller's 5.2 s).
    // The client still bounds the requests in flight.
    let controller = shell::controller::<Reconciler>(ctx.scoped(), Duration::ZERO)
        .with_config(super::runtime_config(Duration::ZERO).concurrency(SLOT_RECONCILES))
        .owns_stream(crate::controller::alone("asynccommands", child_stream));
    let reconciler = Reconciler {
        ctx,
        children,
        expected,
    };
    shell::drive(controller, Arc::new(reconciler), shutdown).await;
}
