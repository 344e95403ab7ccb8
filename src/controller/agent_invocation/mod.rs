//! The AgentInvocation controller: fetch (the invocation's NodeAgent, the earlier
//! invocations it names, its Jobs; Nodes and agent Pods from the shared caches) -> plan
//! ([`plan`] per instance, [`decide`] for the changes) -> execute (node labels, installer
//! and remote-install Jobs, the remote install host) -> status (one result per instance,
//! with its invocation id).

pub mod codes;
pub mod decide;
pub mod jobs;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;

use super::Context;
use super::shell::{self, KindOf};
use crate::agent::pod_ready;
use crate::api::agent_invocation::{
    AgentInvocationPhase, InstanceAction, InvocationPhase, InvocationType,
};
use crate::api::{AgentInvocation, Command, NodeAgent};
use crate::engine::outcome::{RunState, observe};
use crate::keys::{
    AGENT_LABEL, AGENT_VERSION_LABEL, INVOCATION_ID_ANNOTATION, OWNER_NAME_ANNOTATION,
    OWNER_NAMESPACE_ANNOTATION, agent_node_label,
};
use decide::{Fetched, Found};
use plan::{Installer, NodeFacts, Source, World};

/// Output kept from an installer's report.
const OUTPUT_LIMIT: usize = 512;

/// Errors of reading an invocation's world, named after the read that failed; all are
/// retried.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading NodeAgent {name}: {source}")]
    ReadAgent { name: String, source: kube::Error },
    #[error("reading Command {name}: {source}")]
    ReadCommand { name: String, source: kube::Error },
    #[error("listing the AgentInvocations of the namespace: {0}")]
    ListInvocations(#[source] kube::Error),
    #[error("listing the Jobs: {0}")]
    ListJobs(#[source] kube::Error),
    #[error("listing the Pods: {0}")]
    ListPods(#[source] kube::Error),
}

/// The AgentInvocation's place in the shell: the shared context and the invocations' own
/// cache (Rollback and Retry look earlier invocations up in it).
pub struct Reconciler {
    pub base: Arc<Context>,
    pub invocations: Store<AgentInvocation>,
}

impl shell::Reconciler for Reconciler {
    type Decide = decide::Decisions;
    type Error = Error;

    fn context(&self) -> &Context {
        &self.base
    }
    fn api(&self, obj: &KindOf<Self>) -> Api<AgentInvocation> {
        Api::namespaced(
            self.base.client.clone(),
            &obj.namespace().unwrap_or_default(),
        )
    }
    /// Final is absorbing and a cache never runs ahead of the API: a finished invocation
    /// seen in the cache is finished, without a request.
    fn idle(&self, obj: &AgentInvocation) -> bool {
        obj.status.as_ref().is_some_and(|s| {
            matches!(
                s.phase,
                AgentInvocationPhase::Succeeded | AgentInvocationPhase::Failed
            ) && s.observed_generation == obj.metadata.generation
        })
    }
    async fn fetch(&self, obj: &AgentInvocation, now: Timestamp) -> Result<Fetched, Error> {
        let base = &self.base;
        let target = obj.spec.invocation_target.clone();
        let agent = Api::<NodeAgent>::all(base.client.clone())
            .get_opt(&target)
            .await
            .map_err(|source| Error::ReadAgent {
                name: target.clone(),
                source,
            })?;
        let Some(agent) = agent else {
            return Ok(Fetched { now, found: None });
        };
        let sources = sources(obj, self).await?;
        let remote_hosts = plan::remote_hosts(obj, &sources);
        let (installer_command, installer) = installer(base, &agent, obj).await?;
        let (remote_command, remote_installer) = remote_installer(base, &agent, obj).await?;
        let job_list = list_jobs(base, obj, &agent).await?;
        let world = World {
            now,
            agent: agent.spec.clone(),
            nodes: nodes(base, &agent),
            ready_pods: ready_pods(base, &target),
            runs: runs(base, obj, &job_list).await?,
            sources,
            host_mode_allowed: base
                .config
                .host_mode_namespaces
                .contains(&agent.spec.namespace),
            installer,
            remote_installer,
            busy: busy(&self.invocations, obj),
        };
        let jobs = job_list
            .iter()
            .map(|j| {
                (
                    j.namespace().unwrap_or_default(),
                    j.name_any(),
                    j.annotations().get(INVOCATION_ID_ANNOTATION).cloned(),
                )
            })
            .collect();
        let runner = jobs::Runner {
            image: base.config.runner_image.clone(),
            host_process: base.config.host_process.clone(),
            image_pull_policy: base.config.image_pull_policy.clone(),
        };
        Ok(Fetched {
            now,
            found: Some(Found {
                world,
                agent,
                installer_command,
                remote_command,
                remote_hosts,
                runner,
                jobs,
            }),
        })
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Installer Jobs live in agent namespaces, remote-install Jobs in the invocation's.
    let jobs: Api<PartialObjectMeta<Job>> = ctx.scoped();
    let controller = shell::controller::<Reconciler>(ctx.scoped(), Duration::from_millis(200));
    let invocations = controller.store();
    let controller = controller
        .watches_stream(
            watcher(
                jobs,
                watcher::Config::default().labels(&jobs::child_selector()),
            )
            .touched_objects()
            .default_backoff(),
            |job| {
                let name = job.annotations().get(OWNER_NAME_ANNOTATION)?;
                let ns = job.annotations().get(OWNER_NAMESPACE_ANNOTATION)?;
                Some(ObjectRef::<AgentInvocation>::new(name).within(ns))
            },
        )
        // Node labels and agent pods becoming Ready decide running instances.
        .reconcile_all_on(ctx.activity());
    let reconciler = Reconciler {
        base: ctx,
        invocations,
    };
    shell::drive(controller, Arc::new(reconciler), shutdown).await;
}

/// Earlier instances named by a Rollback or Retry, from the cache, or from the API when
/// the cache does not have one yet.
async fn sources(
    obj: &AgentInvocation,
    ctx: &Reconciler,
) -> Result<BTreeMap<String, Source>, Error> {
    let wanted = plan::wanted_sources(obj);
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ns = obj.namespace().unwrap_or_default();
    let collect = |items: &mut dyn Iterator<Item = AgentInvocation>| {
        let mut found = BTreeMap::new();
        for inv in items {
            if inv.namespace().as_deref() != Some(ns.as_str()) {
                continue;
            }
            for e in inv.status.iter().flat_map(|s| s.invocations.iter()) {
                if wanted.contains(&e.invocation_id) {
                    let remote = e.remote_ip.as_ref().and_then(|ip| {
                        inv.spec
                            .remote_install_meta
                            .iter()
                            .flatten()
                            .find(|h| &h.remote_ip == ip)
                            .cloned()
                    });
                    found.insert(
                        e.invocation_id.clone(),
                        Source {
                            agent: inv.spec.invocation_target.clone(),
                            result: e.clone(),
                            remote,
                        },
                    );
                }
            }
        }
        found
    };
    let cached = collect(&mut ctx.invocations.state().iter().map(|a| a.as_ref().clone()));
    if cached.len() == wanted.len() {
        return Ok(cached);
    }
    let api: Api<AgentInvocation> = Api::namespaced(ctx.base.client.clone(), &ns);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(Error::ListInvocations)?;
    Ok(collect(&mut list.items.into_iter()))
}

fn needs(
    obj: &AgentInvocation,
    action: impl Fn(InstanceAction) -> bool,
    pending_default: bool,
) -> bool {
    match &obj.status {
        Some(s) if !s.invocations.is_empty() => s
            .invocations
            .iter()
            .any(|e| !e.phase.is_final() && action(e.action.unwrap_or(InstanceAction::Install))),
        _ => pending_default,
    }
}

async fn read_command(
    base: &Context,
    ns: &str,
    name: &str,
) -> Result<(Option<Command>, Installer), Error> {
    let api: Api<Command> = Api::namespaced(base.client.clone(), ns);
    let command = api
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadCommand {
            name: name.to_string(),
            source,
        })?;
    Ok(match command {
        Some(c) => (Some(c), Installer::Usable),
        None => (
            None,
            Installer::Unusable(format!("Command {name} does not exist in namespace {ns}")),
        ),
    })
}

/// The HostInstaller's Command, when this invocation may need it.
async fn installer(
    base: &Context,
    agent: &NodeAgent,
    obj: &AgentInvocation,
) -> Result<(Option<Command>, Installer), Error> {
    let Some(spec) = &agent.spec.installer else {
        return Ok((None, Installer::Usable));
    };
    let node_action = |a| {
        matches!(
            a,
            InstanceAction::Install | InstanceAction::Update | InstanceAction::Rollback
        )
    };
    if !needs(
        obj,
        node_action,
        obj.spec.invocation_type != InvocationType::RemoteInstall,
    ) {
        return Ok((None, Installer::Usable));
    }
    read_command(base, &agent.spec.namespace, &spec.command_ref).await
}

/// The remote installer's Command, when this invocation may need it.
async fn remote_installer(
    base: &Context,
    agent: &NodeAgent,
    obj: &AgentInvocation,
) -> Result<(Option<Command>, Option<Installer>), Error> {
    let Some(spec) = &agent.spec.remote_installer else {
        return Ok((None, None));
    };
    let remote = |a| a == InstanceAction::RemoteInstall;
    let maybe = matches!(
        obj.spec.invocation_type,
        InvocationType::RemoteInstall | InvocationType::Retry
    );
    if !needs(obj, remote, maybe) {
        return Ok((None, Some(Installer::Usable)));
    }
    let (command, usable) = read_command(base, &agent.spec.namespace, &spec.command_ref).await?;
    Ok((command, Some(usable)))
}

/// The invocation's Jobs (installer Jobs in the agent's namespace, remote-install Jobs in
/// its own), fresh from the API: what exists decides what is created.
async fn list_jobs(
    base: &Context,
    obj: &AgentInvocation,
    agent: &NodeAgent,
) -> Result<Vec<Job>, Error> {
    let with_jobs = |a| a != InstanceAction::SetRemoteInstallHost;
    if !needs(obj, with_jobs, false) {
        return Ok(vec![]);
    }
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let selector = crate::keys::owner_selector(&uid);
    let mut namespaces = BTreeSet::new();
    namespaces.insert(agent.spec.namespace.clone());
    namespaces.insert(obj.namespace().unwrap_or_default());
    let mut out = Vec::new();
    for ns in namespaces {
        out.extend(
            crate::controller::lean::list::<Job>(
                &base.client,
                &ns,
                &ListParams::default().labels(&selector),
            )
            .await
            .map_err(Error::ListJobs)?,
        );
    }
    Ok(out)
}

/// Each Job read back with its Pods, by invocation id.
async fn runs(
    base: &Context,
    obj: &AgentInvocation,
    jobs: &[Job],
) -> Result<BTreeMap<String, crate::engine::outcome::Observed>, Error> {
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let mut pods_by_id: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in base.pods.state() {
        if pod.labels().get(crate::keys::OWNER_UID_LABEL) == Some(&uid)
            && let Some(id) = pod.annotations().get(INVOCATION_ID_ANNOTATION)
        {
            pods_by_id.entry(id.clone()).or_default().push(pod);
        }
    }
    let mut out = BTreeMap::new();
    for job in jobs {
        let Some(id) = job.annotations().get(INVOCATION_ID_ANNOTATION).cloned() else {
            continue;
        };
        let cached: Vec<Arc<Pod>> = pods_by_id.get(&id).cloned().unwrap_or_default();
        let mut observed = observe(
            job,
            &cached.iter().map(|p| p.as_ref()).collect::<Vec<_>>(),
            OUTPUT_LIMIT,
        );
        if observed.state != (RunState::Active { pods: 0 })
            && !matches!(observed.state, RunState::Active { .. })
            && observed.exit_code.is_none()
        {
            // The Pod cache lags the Job: read its Pods for the runner's report.
            let ns = job.namespace().unwrap_or_default();
            let selector = format!("job-name={}", job.name_any());
            let pods: Vec<Pod> = crate::controller::lean::list(
                &base.client,
                &ns,
                &ListParams::default().labels(&selector),
            )
            .await
            .map_err(Error::ListPods)?;
            observed = observe(job, &pods.iter().collect::<Vec<_>>(), OUTPUT_LIMIT);
        }
        out.insert(id, observed);
    }
    Ok(out)
}

/// Nodes other running invocations of the same agent are changing (from the cache: a
/// conflict the cache has not seen yet is still caught by neither, a window of
/// milliseconds, documented in docs/design.md).
fn busy(store: &Store<AgentInvocation>, obj: &AgentInvocation) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for other in store.state() {
        if other.metadata.uid == obj.metadata.uid
            || other.spec.invocation_target != obj.spec.invocation_target
        {
            continue;
        }
        for e in other.status.iter().flat_map(|s| s.invocations.iter()) {
            let on_node = matches!(
                e.action,
                Some(InstanceAction::Install | InstanceAction::Update | InstanceAction::Rollback)
            );
            if on_node && e.phase == InvocationPhase::Running {
                out.insert(
                    e.instance_id.clone(),
                    format!(
                        "{}/{}",
                        other.namespace().unwrap_or_default(),
                        other.name_any()
                    ),
                );
            }
        }
    }
    out
}

fn nodes(base: &Context, agent: &NodeAgent) -> BTreeMap<String, NodeFacts> {
    let key = agent_node_label(&agent.name_any());
    base.nodes
        .state()
        .iter()
        .map(|n| {
            let ready = crate::plan::node_ready(n);
            (
                n.name_any(),
                NodeFacts {
                    ready,
                    version: n.labels().get(&key).cloned(),
                },
            )
        })
        .collect()
}

fn ready_pods(base: &Context, agent: &str) -> BTreeSet<(String, String)> {
    base.pods
        .state()
        .iter()
        .filter(|p| p.labels().get(AGENT_LABEL).map(String::as_str) == Some(agent))
        .filter(|p| pod_ready(p) && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            Some((
                p.spec.as_ref()?.node_name.clone()?,
                p.labels().get(AGENT_VERSION_LABEL)?.clone(),
            ))
        })
        .collect()
}
