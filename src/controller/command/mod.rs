//! The Command controller: fetch (nothing: a Command's status follows from its spec) ->
//! [`plan`] -> status, with an Event when its readiness changes.

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::Api;

use super::Context;
use super::shell::{self, KindOf};
use crate::api::Command;

/// The Command's place in the shell.
pub struct Reconciler {
    pub ctx: Arc<Context>,
}

impl shell::Reconciler for Reconciler {
    type Decide = plan::Decisions;
    type Error = std::convert::Infallible;

    fn context(&self) -> &Context {
        &self.ctx
    }
    fn api(&self, obj: &KindOf<Self>) -> Api<Command> {
        shell::namespaced_api(&self.ctx.client, obj)
    }
    async fn fetch(&self, _: &Command, now: Timestamp) -> Result<Timestamp, Self::Error> {
        Ok(now)
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = shell::controller::<Reconciler>(ctx.scoped(), Duration::ZERO);
    shell::drive(controller, Arc::new(Reconciler { ctx }), shutdown).await;
}
