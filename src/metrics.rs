//! Prometheus metrics and the operator's small HTTP endpoint: `/metrics` (text format),
//! `/healthz` (the process serves) and `/readyz` (its caches are filled). The series are
//! listed in docs/observability.md; a test scrapes them from a running operator.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Labels of per-kind series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Labels of a reconcile's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: String,
    pub result: String,
}

/// Labels of a node's (or instance's, or agent's) final outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub kind: String,
    pub phase: String,
    pub reason: String,
}

/// Every series nodeops exports.
pub struct Metrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub node_outcomes: Family<OutcomeLabels, Counter>,
    pub node_runs_in_flight: Gauge,
    pub schedule_lag: Histogram,
    pub api_requests: Counter,
    pub leader: Gauge,
    registry: Registry,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("nodeops");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result (ok or error)",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by kind",
            reconcile_duration.clone(),
        );
        let node_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "node_outcomes",
            "Final outcomes of node runs (AsyncCommand), agent instances (AgentInvocation) and agent upgrades (AgentUpgradeJob), by phase and reason",
            node_outcomes.clone(),
        );
        let node_runs_in_flight = Gauge::default();
        registry.register(
            "node_runs_in_flight",
            "Pods of nodeops node runs (command, installer and remote-install Jobs) not yet finished",
            node_runs_in_flight.clone(),
        );
        let schedule_lag = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "schedule_lag_seconds",
            "Delay between an Invoker's scheduled time and the creation of its run",
            schedule_lag.clone(),
        );
        let api_requests = Counter::default();
        registry.register(
            "api_requests",
            "Requests made to the Kubernetes API",
            api_requests.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        Self {
            reconciles,
            reconcile_duration,
            node_outcomes,
            node_runs_in_flight,
            schedule_lag,
            api_requests,
            leader,
            registry,
        }
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a final outcome.
    pub fn outcome(&self, kind: &str, phase: &str, reason: &str) {
        self.node_outcomes
            .get_or_create(&OutcomeLabels {
                kind: kind.into(),
                phase: phase.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Runs one reconcile, counting it and timing it under `kind`; called inside the
/// reconcile's span, so its debug line carries kind, namespace and object.
pub async fn measure<T, E>(kind: &str, fut: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let started = Instant::now();
    let result = fut.await;
    let seconds = started.elapsed().as_secs_f64();
    // Inside the caller's reconcile span: the line carries kind, namespace and object.
    tracing::debug!(ok = result.is_ok(), seconds, "reconciled");
    let m = &*METRICS;
    m.reconcile_duration
        .get_or_create(&KindLabels { kind: kind.into() })
        .observe(seconds);
    m.reconciles
        .get_or_create(&ResultLabels {
            kind: kind.into(),
            result: if result.is_ok() { "ok" } else { "error" }.into(),
        })
        .inc();
    result
}

/// Whether the operator is ready (its caches are filled); `/readyz` says so.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn route(path: &str, ready: &Readiness) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            METRICS.encode(),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if ready.is_ready() => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "caches not filled yet\n".into(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Binds `addr` (so a port in use fails the start, not a later scrape).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, ready: Readiness, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = route(req.uri().path(), &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_and_typed() {
        let m = Metrics::new();
        m.outcome("AsyncCommand", "Failed", "ExitCode");
        m.reconciles
            .get_or_create(&ResultLabels {
                kind: "Invoker".into(),
                result: "ok".into(),
            })
            .inc();
        m.reconcile_duration
            .get_or_create(&KindLabels {
                kind: "Invoker".into(),
            })
            .observe(0.02);
        let text = m.encode();
        for line in [
            "# TYPE nodeops_reconciles counter",
            "nodeops_reconciles_total{kind=\"Invoker\",result=\"ok\"} 1",
            "nodeops_node_outcomes_total{kind=\"AsyncCommand\",phase=\"Failed\",reason=\"ExitCode\"} 1",
            "# TYPE nodeops_reconcile_duration_seconds histogram",
            "nodeops_reconcile_duration_seconds_count{kind=\"Invoker\"} 1",
            "# TYPE nodeops_node_runs_in_flight gauge",
            "# TYPE nodeops_schedule_lag_seconds histogram",
            "# TYPE nodeops_api_requests counter",
            "# TYPE nodeops_leader gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn routes() {
        let ready = Readiness::default();
        assert_eq!(route("/healthz", &ready).status(), StatusCode::OK);
        assert_eq!(
            route("/readyz", &ready).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.set();
        assert_eq!(route("/readyz", &ready).status(), StatusCode::OK);
        assert_eq!(route("/metrics", &ready).status(), StatusCode::OK);
        assert_eq!(route("/nope", &ready).status(), StatusCode::NOT_FOUND);
    }
}
