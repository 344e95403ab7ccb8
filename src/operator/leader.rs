//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go does it: replicas
//! race to write themselves as holder (optimistic concurrency on the Lease's
//! resourceVersion decides), the holder renews, and a replica takes over a Lease whose
//! record has not changed for `leaseDurationSeconds` by its own clock (never by comparing
//! another machine's timestamps, so clock skew cannot steal a live lease).
//!
//! The holder that cannot renew within the lease duration must stop reconciling at once:
//! [`Leader::hold`] cancels its token then, and the operator exits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a candidate tries.
    pub retry_every: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, renew every 5 s (it gives up after 10), retry 2 s.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// Whether this replica may act as leader now, by its own monotonic clock: until its last
/// renewal plus the renew deadline (two thirds of the lease). A replica frozen past that (a
/// SIGSTOP, a paused VM) finds on waking that it may no longer act, before its renew loop
/// has run and stopped it: a standby may lead by then, and this replica's caches are as
/// old as the freeze.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    /// None: no leader election, always.
    until: Arc<Mutex<Option<Instant>>>,
}

impl Fence {
    /// Records a renewal made at `at` of a lease renewed within `deadline`.
    fn renewed(&self, at: Instant, deadline: Duration) {
        if let Ok(mut until) = self.until.lock() {
            *until = Some(at + deadline);
        }
    }

    /// Whether a reconcile may change anything at `now`.
    pub fn open(&self, now: Instant) -> bool {
        self.until
            .lock()
            .map(|until| until.is_none_or(|u| now < u))
            .unwrap_or(false)
    }
}

/// Why an attempt failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading Lease {0}: {1}")]
    Read(String, #[source] kube::Error),
    #[error("writing Lease {0}: {1}")]
    Write(String, #[source] kube::Error),
}

/// What a candidate remembers of the Lease: the last record it saw and when it saw it
/// change, by its own clock.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(Option<String>, Option<String>)>,
    since: Option<Instant>,
}

/// A replica taking part in the election.
pub struct Leader {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Observed,
    fence: Fence,
}

/// The result of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Holding,
    /// Someone else holds a live lease.
    Held(String),
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Leader {
    /// A candidate whose holding opens `fence` (closed until the lease is acquired).
    pub fn new(client: Client, config: LeaseConfig, fence: Fence) -> Self {
        fence.renewed(Instant::now(), Duration::ZERO);
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observed::default(),
            fence,
        }
    }

    /// One acquire-or-renew attempt; holding opens the fence until the renew deadline,
    /// counted from before the request went out.
    pub async fn try_acquire(&mut self) -> Result<Attempt, Error> {
        let sent = Instant::now();
        let attempt = self.attempt().await;
        if attempt.as_ref().is_ok_and(|a| *a == Attempt::Holding) {
            self.fence.renewed(sent, self.config.duration * 2 / 3);
        }
        attempt
    }

    async fn attempt(&mut self) -> Result<Attempt, Error> {
        let name = &self.config.name;
        let me = &self.config.identity;
        let duration = i32::try_from(self.config.duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| Error::Read(name.clone(), e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    labels: Some(
                        [(
                            crate::keys::NAME_LABEL.to_string(),
                            crate::keys::MANAGED_BY.to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(micro_now()),
                    renew_time: Some(micro_now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Holding),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Held("?".into())),
                Err(e) => Err(Error::Write(name.clone(), e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (
            holder.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
        );
        if self.observed.record.as_ref() != Some(&record) {
            self.observed.record = Some(record);
            self.observed.since = Some(Instant::now());
        }
        let lease_for = Duration::from_secs(
            spec.lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(15),
        );
        let expired = self
            .observed
            .since
            .is_none_or(|since| since.elapsed() > lease_for);
        let mine = holder.as_deref() == Some(me.as_str());
        if !(mine || holder.is_none() || expired) {
            return Ok(Attempt::Held(holder.unwrap_or_default()));
        }
        let mut next = spec;
        if !mine {
            next.acquire_time = Some(micro_now());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(me.clone());
        next.lease_duration_seconds = Some(duration);
        next.renew_time = Some(micro_now());
        lease.spec = Some(next);
        // replace carries the resourceVersion we read: a concurrent writer makes this a 409.
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Holding),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(Attempt::Held(holder.unwrap_or_else(|| "?".into())))
            }
            Err(e) => Err(Error::Write(name.clone(), e)),
        }
    }

    /// Waits until this replica holds the lease (or `stop` is cancelled: `false`).
    pub async fn acquire(&mut self, stop: &CancellationToken) -> bool {
        let mut last_holder = None;
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Holding) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired the leader Lease");
                    return true;
                }
                Ok(Attempt::Held(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.config.name, %holder, "another replica leads; standing by");
                        last_holder = Some(holder);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(self.config.retry_every) => {}
            }
        }
    }

    /// Renews the lease until `stop` is cancelled; cancels `lost` (and returns) when the
    /// lease could not be renewed for longer than its duration, or another replica took it.
    pub async fn hold(mut self, stop: CancellationToken, lost: CancellationToken) -> Self {
        let mut last_renewed = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return self,
                _ = tokio::time::sleep(self.config.renew_every) => {}
            }
            match self.try_acquire().await {
                Ok(Attempt::Holding) => last_renewed = Instant::now(),
                Ok(Attempt::Held(holder)) => {
                    tracing::error!(%holder, "another replica took the leader Lease");
                    lost.cancel();
                    return self;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader Lease failed");
                    // Stop before the lease can expire for the others: renew deadline
                    // is two thirds of the duration, as client-go's default.
                    if last_renewed.elapsed() > self.config.duration * 2 / 3 {
                        tracing::error!("could not renew the leader Lease in time");
                        lost.cancel();
                        return self;
                    }
                }
            }
        }
    }

    /// Gives the lease up (on a clean shutdown), so a standby takes over at once.
    pub async fn release(&self) {
        let name = &self.config.name;
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro_now());
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %name, "released the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the leader Lease failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_opens_with_a_renewal_and_closes_at_its_deadline() {
        // No leader election: always open.
        let t0 = Instant::now();
        assert!(Fence::default().open(t0));
        // A candidate's fence is closed until it holds the lease.
        let fence = Fence::default();
        fence.renewed(t0, Duration::ZERO);
        assert!(!fence.open(t0));
        fence.renewed(t0, Duration::from_secs(10));
        assert!(fence.open(t0 + Duration::from_secs(9)));
        // Frozen past the renew deadline: closed on waking, whatever it was doing.
        assert!(!fence.open(t0 + Duration::from_secs(10)));
        // Clones share one fence (the context's and the leader's).
        let shared = fence.clone();
        fence.renewed(t0 + Duration::from_secs(10), Duration::from_secs(10));
        assert!(shared.open(t0 + Duration::from_secs(15)));
    }
}
