//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go does it: replicas
//! race to write themselves as holder (optimistic concurrency on the Lease's
//! resourceVersion decides), the holder renews, and a replica takes over a Lease whose
//! record has not changed for `leaseDurationSeconds` by its own clock (never by comparing
//! another machine's timestamps, so clock skew cannot steal a live lease).
//!
//! The holder that cannot renew within the lease duration must stop reconciling at once:
//! [`Leader::hold`] cancels its token then, and the operator exits.

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
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observed::default(),
        }
    }

    /// One acquire-or-renew attempt.
    pub async fn try_acquire(&mut self) -> Result<Attempt, Error> {
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
