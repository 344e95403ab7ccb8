//! The operator process: configuration, the shared client, and the lifecycle of the
//! controllers (start, run until a shutdown signal, stop cleanly).

pub mod heap;
mod inflight;
pub mod leader;
pub mod shutdown;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::controller::{Context, async_command};
use crate::engine::seen::{Job, Pod};
use crate::metrics::Readiness;
use crate::settings::Settings;
use leader::Leader;

/// The operator process's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// What the controllers are configured with.
    pub controllers: Settings,
    /// Hold this Lease to reconcile (several replicas, one active); none: always active.
    pub leader_election: Option<leader::LeaseConfig>,
    /// Where to serve /metrics, /healthz and /readyz; none: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Errors that stop the operator from starting.
#[derive(Debug, Error)]
pub enum Error {
    #[error("connecting to the Kubernetes API: {0}")]
    Connect(#[source] kube::Error),
    #[error("reading the API server version: {0}")]
    ServerVersion(#[source] kube::Error),
    #[error("the Node cache could not be filled")]
    NodeCache,
    #[error("serving metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("lost the leader Lease: stopped reconciling")]
    LostLease,
}

/// Idle API connections kept for reuse (a burst opens more; they close when it ends).
const IDLE_CONNECTIONS: usize = 8;

/// API requests waiting for their response headers at once. A watch holds its slot only
/// until its response starts, so this bounds the short requests (and the connections they
/// open, each with its TLS state and buffers), not the watches. The Lease and the creations of
/// AsyncCommands take a freed slot before the other requests waiting ([`inflight`]).
const REQUESTS_IN_FLIGHT: usize = 96;

/// API requests this process has made (every verb, every resource).
pub static API_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// API requests this process has made, by verb and resource (`GET jobs`, `WATCH pods`,
/// `PATCH asynccommands/status`): where a figure of requests per node operation comes from.
static REQUESTS_BY: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts a request by its kind, and returns the kind.
fn count_request(method: &str, path: &str, query: Option<&str>) -> inflight::Kind {
    let key = request_kind(method, path, query);
    if let Ok(mut by) = REQUESTS_BY.lock() {
        *by.entry(key.clone()).or_default() += 1;
    }
    inflight::Kind(key)
}

/// `VERB resource[/subresource]` of a request path: `/apis/batch/v1/namespaces/a/jobs/j`
/// is `GET jobs`; a GET with `watch=true` is a WATCH, one without a name a LIST.
fn request_kind(method: &str, path: &str, query: Option<&str>) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // After the group and version: [namespaces, ns,] resource [, name [, subresource]].
    let rest: &[&str] = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or_default(),
        Some(&"apis") => parts.get(3..).unwrap_or_default(),
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, resource, more @ ..] => (resource, more),
        [resource, more @ ..] => (resource, more),
        [] => (&"?", &[][..]),
    };
    let (resource, more) = rest;
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match (method, more.is_empty(), watch) {
        ("GET", _, true) => "WATCH",
        ("GET", true, false) => "LIST",
        (m, _, _) => m,
    };
    match more.get(1) {
        Some(sub) => format!("{verb} {resource}/{sub}"),
        None => format!("{verb} {resource}"),
    }
}

/// The requests made so far by verb and resource, most first: `PATCH asynccommands/status 2000, ...`.
pub fn requests_by() -> String {
    let Ok(by) = REQUESTS_BY.lock() else {
        return String::new();
    };
    let mut by: Vec<(&String, &u64)> = by.iter().collect();
    by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    by.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Connects with the in-cluster configuration or the kubeconfig (`KUBECONFIG`, then
/// `~/.kube/config`), and checks the API server answers. Every request is counted in
/// [`API_REQUESTS`].
pub async fn connect() -> Result<Client, Error> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Connect(kube::Error::InferConfig(e)))?;
    // The kind travels in the request's extensions to the bound below, which queues by it.
    let count = tower::util::MapRequestLayer::new(|mut req: http::Request<kube::client::Body>| {
        API_REQUESTS.fetch_add(1, Ordering::Relaxed);
        let kind = count_request(req.method().as_str(), req.uri().path(), req.uri().query());
        req.extensions_mut().insert(kind);
        crate::metrics::METRICS.api_requests.inc();
        req
    });
    // kube's default stack keeps every connection a burst opened idle for 90 s, each with
    // its TLS buffers: after a fan-out of hundreds of parallel requests that is most of the
    // operator's memory. The same stack with a bounded idle pool.
    use kube::client::ConfigExt;
    let https = config.rustls_https_connector().map_err(Error::Connect)?;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .pool_idle_timeout(Duration::from_secs(30))
        .build::<_, kube::client::Body>(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(config.auth_layer().map_err(Error::Connect)?)
        .layer(config.extra_headers_layer().map_err(Error::Connect)?)
        .layer(count)
        .layer(inflight::InFlightLayer::new(REQUESTS_IN_FLIGHT))
        .map_err(tower::BoxError::from)
        .service(http);
    let client = kube::Client::new(service, config.default_namespace.clone());
    let version = client
        .apiserver_version()
        .await
        .map_err(Error::ServerVersion)?;
    tracing::info!(server = %version.git_version, platform = %version.platform, "connected to the Kubernetes API");
    Ok(client)
}

/// Runs the controllers until `shutdown` resolves, then stops them gracefully (reconciles
/// in progress finish); returns what `shutdown` returned. Missing CRDs are reported (the
/// operator does not install them).
pub async fn run<S: std::future::Future>(
    client: Client,
    config: Config,
    shutdown: S,
) -> Result<S::Output, Error> {
    report_missing_crds(&client).await;
    let stop = CancellationToken::new();
    let ready = Readiness::default();
    if let Some(addr) = config.metrics_addr {
        let listener = crate::metrics::bind(addr)
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
        tokio::spawn(crate::metrics::serve(listener, ready.clone(), stop.clone()));
    }

    // Shared caches: every Node (readiness, labels) and the Pods nodeops created.
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (jobs, jobs_writer) = reflector::store::<Job>();
    let (refusals, refusals_writer) = reflector::store::<k8s_openapi::api::core::v1::Event>();
    let (commands, commands_writer) = reflector::store::<crate::api::Command>();
    let (agents, agents_writer) = reflector::store::<crate::api::NodeAgent>();
    let leader_election = config.leader_election.clone();
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.controllers,
        crate::controller::Caches {
            nodes: nodes.clone(),
            pods,
            jobs,
            refusals,
            commands,
            agents,
        },
    ));
    let config = &ctx.config;
    let touch_nodes = ctx.clone();
    let node_stream = reflector(
        nodes_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            // Keep what the controllers read (labels, Ready) and drop the rest: 1000
            // nodes' images, addresses and capacities are most of a Node's bytes.
            .modify(|n| {
                n.managed_fields_mut().clear();
                n.annotations_mut().clear();
                n.spec = None;
                if let Some(s) = n.status.as_mut() {
                    *s = k8s_openapi::api::core::v1::NodeStatus {
                        conditions: s.conditions.take(),
                        ..Default::default()
                    };
                }
            })
            .backoff(crate::controller::WatchBackoff::default()),
    )
    .inspect(move |event| {
        touch_nodes.touch_node(crate::controller::touched(event).map(|n| n.name_any()))
    });
    tokio::spawn(node_stream.for_each(|_| futures::future::ready(())));
    let touch_pods = ctx.clone();
    let pods_api: Api<Pod> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let pod_stream = reflector(
        pods_writer,
        watcher(
            pods_api,
            watcher::Config::default().labels(crate::keys::MANAGED_SELECTOR),
        )
        // A Pod's owner is found by its labels.
        .modify(|p| p.metadata.owner_references = None)
        .backoff(crate::controller::WatchBackoff::default()),
    )
    .inspect(move |event| {
        touch_pods.pods_by_owner.follow(event);
        touch_pods.agent_pods_by_node.follow(event);
        // Only agent pods and agent installers move NodeAgents and AgentInvocations; a
        // command fan-out's thousand pods must not wake them.
        match (crate::controller::touched(event), event) {
            (Some(p), _) if concerns_agents(p) => {
                touch_pods.touch_node(p.spec.as_ref().and_then(|s| s.node_name.clone()))
            }
            (_, Ok(watcher::Event::Init | watcher::Event::InitDone)) => touch_pods.touch_node(None),
            _ => {}
        }
    })
    .applied_objects();
    nodes
        .wait_until_ready()
        .await
        .map_err(|_| Error::NodeCache)?;
    tracing::info!(nodes = nodes.state().len(), namespace = ?config.namespace, "caches ready");
    ready.set();
    tokio::spawn(count_runs_in_flight(ctx.clone(), stop.clone()));
    tokio::spawn(heap::trim_periodically(stop.clone()));

    // With leader election, only the holder of the Lease reconciles; a standby keeps the
    // Node cache filled (and serves /readyz); the controllers' watches start on takeover.
    let mut shutdown = std::pin::pin!(shutdown);
    let lost = CancellationToken::new();
    let mut holding = None;
    if let Some(lease) = leader_election {
        let mut leader = Leader::new(client.clone(), lease, ctx.fence.clone());
        let never = CancellationToken::new();
        tokio::select! {
            output = &mut shutdown => {
                tracing::info!("shut down while standing by");
                stop.cancel();
                return Ok(output);
            }
            _ = leader.acquire(&never) => {}
        }
        holding = Some(tokio::spawn(leader.hold(stop.clone(), lost.clone())));
    }
    crate::metrics::METRICS.leader.set(1);
    tracing::info!("starting controllers");

    let controllers = [
        tokio::spawn(async_command::run(
            ctx.clone(),
            pod_stream,
            jobs_writer,
            refusals_writer,
            commands_writer,
            stop.clone().cancelled_owned(),
        )),
        tokio::spawn(crate::controller::invoker::run(
            ctx.clone(),
            stop.clone().cancelled_owned(),
        )),
        tokio::spawn(crate::controller::command::run(
            ctx.clone(),
            stop.clone().cancelled_owned(),
        )),
        tokio::spawn(crate::controller::node_agent::run(
            ctx.clone(),
            agents_writer,
            stop.clone().cancelled_owned(),
        )),
        tokio::spawn(crate::controller::agent_invocation::run(
            ctx.clone(),
            stop.clone().cancelled_owned(),
        )),
        tokio::spawn(crate::controller::agent_upgrade_job::run(
            ctx,
            stop.clone().cancelled_owned(),
        )),
    ];
    let result = tokio::select! {
        output = &mut shutdown => output,
        _ = lost.cancelled() => {
            // Another replica may be reconciling already: stop now, without draining.
            stop.cancel();
            crate::metrics::METRICS.leader.set(0);
            return Err(Error::LostLease);
        }
    };
    let (heap_in_use, heap_free) = heap::stats().unwrap_or_default();
    tracing::info!(
        api_requests = API_REQUESTS.load(Ordering::Relaxed),
        heap_in_use,
        heap_free,
        "shutting down: letting reconciles in progress finish"
    );
    tracing::info!("API requests by verb and resource: {}", requests_by());
    stop.cancel();
    // A controller whose cache never filled (its CRD missing, the API unreachable) never
    // drains: bound the wait so a shutdown signal always ends the process.
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(controllers)).await;
    match drained {
        Ok(results) => {
            for e in results.into_iter().filter_map(Result::err) {
                tracing::error!(error = %e, "a controller task failed");
            }
        }
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "controllers did not stop in time; exiting anyway")
        }
    }
    // Hand the Lease over at once rather than after it expires.
    if let Some(holding) = holding
        && let Ok(leader) = holding.await
    {
        leader.release().await;
    }
    Ok(result)
}

/// Whether a Pod is an agent's (DaemonSet mode) or an agent invocation's installer.
fn concerns_agents(p: &Pod) -> bool {
    let labels = p.labels();
    labels.get(crate::keys::COMPONENT_LABEL).map(String::as_str)
        == Some(crate::keys::AGENT_COMPONENT)
        || labels
            .get(crate::keys::OWNER_KIND_LABEL)
            .map(String::as_str)
            == Some("agentinvocation")
}

/// Keeps `nodeops_node_runs_in_flight` current from the Pod cache.
async fn count_runs_in_flight(ctx: Arc<Context>, stop: CancellationToken) {
    loop {
        let n = ctx
            .pods
            .state()
            .iter()
            .filter(|p| p.labels().contains_key(crate::keys::OWNER_UID_LABEL))
            .filter(|p| {
                matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    None | Some("Pending" | "Running")
                )
            })
            .count();
        crate::metrics::METRICS
            .node_runs_in_flight
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}

/// How long reconciles in progress may take to finish after a shutdown signal (below the
/// 30 s a Pod gets by default).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Logs each nodeops CRD the cluster does not serve, with the command that installs it.
async fn report_missing_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(_)) => tracing::debug!(crd = %name, "CRD installed"),
            Ok(None) => {
                tracing::warn!(crd = %name, "CRD not installed: apply crds/ (kubectl apply -f crds/) or the Helm chart")
            }
            Err(e) => tracing::warn!(crd = %name, error = %e, "cannot read CRD"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_named_by_its_verb_and_resource() {
        let k = |m, p, q| request_kind(m, p, q);
        assert_eq!(
            k("GET", "/apis/batch/v1/namespaces/a/jobs/j", None),
            "GET jobs"
        );
        assert_eq!(
            k("GET", "/apis/batch/v1/namespaces/a/jobs", None),
            "LIST jobs"
        );
        assert_eq!(
            k("GET", "/api/v1/pods", Some("labelSelector=x&watch=true")),
            "WATCH pods"
        );
        assert_eq!(
            k(
                "PATCH",
                "/apis/nodeops.io/v1alpha1/namespaces/a/asynccommands/c/status",
                None
            ),
            "PATCH asynccommands/status"
        );
        assert_eq!(
            k("POST", "/api/v1/namespaces/a/events", None),
            "POST events"
        );
        assert_eq!(k("GET", "/api/v1/nodes/n", None), "GET nodes");
        assert_eq!(k("GET", "/version", None), "LIST ?");
    }
}
