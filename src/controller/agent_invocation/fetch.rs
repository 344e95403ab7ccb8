//! What the AgentInvocation controller reads: its NodeAgent, the Commands of its
//! installers when it may need them, the earlier invocations it names, its Jobs and their
//! Pods, and from the shared caches the Nodes, the agent Pods and the other invocations.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

use super::decide::{Fetched, Found};
use super::plan::{self, Installer, NodeFacts, Source, World};
use super::{Error, OUTPUT_LIMIT, Reconciler, jobs};
use crate::agent::pod_ready_for;
use crate::api::agent_invocation::{InstanceAction, InvocationPhase, InvocationType};
use crate::api::node_agent::AgentMode;
use crate::api::{AgentInvocation, Command, NodeAgent};
use crate::controller::Context;
use crate::engine::outcome::{RunState, observe};
use crate::engine::seen::{Job, Pod};
use crate::keys::{AGENT_VERSION_LABEL, INVOCATION_ID_ANNOTATION, agent_node_label};

/// What an invocation's decisions read.
pub async fn world(
    r: &Reconciler,
    obj: &AgentInvocation,
    now: Timestamp,
) -> Result<Fetched, Error> {
    let base = &r.base;
    let target = obj.spec.invocation_target.clone();
    // The first reconcile resolves each instance's target version from the agent (unless
    // the invocation names one, as an AgentUpgradeJob's children do) and keeps it in the
    // status: read fresh, so an agent changed a moment before the invocation was applied
    // is not taken as it was. Later ones read the cache.
    let agent = if obj.status.is_none() && obj.spec.version.is_none() {
        base.node_agent_fresh(&target).await
    } else {
        base.node_agent(&target).await
    };
    let agent = agent.map_err(|source| Error::ReadAgent {
        name: target.clone(),
        source,
    })?;
    let Some(agent) = agent else {
        return Ok(Fetched { now, found: None });
    };
    let sources = sources(obj, r).await?;
    let remote_hosts = plan::remote_hosts(obj, &sources);
    let (installer_command, installer) = installer(base, &agent, obj).await?;
    let (remote_command, remote_installer) = remote_installer(base, &agent, obj).await?;
    let job_list = list_jobs(base, obj, &agent).await?;
    let nodes = nodes(base, &agent, obj);
    let (ready_pods, ready_soon) = ready_pods(base, &target, &nodes, now);
    let world = World {
        now,
        agent: agent.spec.clone(),
        nodes,
        ready_pods,
        ready_soon,
        runs: runs(base, obj, &job_list).await?,
        sources,
        host_mode_allowed: base
            .config
            .host_mode_namespaces
            .contains(&agent.spec.namespace),
        installer,
        remote_installer,
        busy: busy(&r.invocations, obj),
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
    let command = base
        .command(ns, name)
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
/// its own), fresh from the API: what exists decides what is created. Read only while an
/// instance runs one: a remote install, or a node action of a HostInstaller agent (a
/// DaemonSet agent's node actions change a label and run no Job).
async fn list_jobs(
    base: &Context,
    obj: &AgentInvocation,
    agent: &NodeAgent,
) -> Result<Vec<Job>, Error> {
    let host = agent.spec.mode == AgentMode::HostInstaller;
    let with_jobs = |a| match a {
        InstanceAction::RemoteInstall => true,
        InstanceAction::Install | InstanceAction::Update | InstanceAction::Rollback => host,
        InstanceAction::SetRemoteInstallHost => false,
    };
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
            Api::<Job>::namespaced(base.client.clone(), &ns)
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::ListJobs)?
                .items,
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
    // No Job, no Pod to read. (Before the Pods were indexed by owner, a walk of every
    // cached Pod here was about half of the operator's CPU samples in a 5000-agent
    // rollout, by `perf`.)
    if jobs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let mut pods_by_id: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in base.pods_by_owner.get(&base.pods, &uid) {
        if let Some(id) = pod.annotations().get(INVOCATION_ID_ANNOTATION) {
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
            let pods: Vec<Pod> = Api::<Pod>::namespaced(base.client.clone(), &ns)
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::ListPods)?
                .items;
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

/// The nodes the invocation's steps read: those of its instances, the remote install host
/// and the nodes it names, looked up in the cache; every node only before the instances of
/// one with a selector are known.
fn nodes(base: &Context, agent: &NodeAgent, obj: &AgentInvocation) -> BTreeMap<String, NodeFacts> {
    let key = agent_node_label(&agent.name_any());
    let facts = |n: &k8s_openapi::api::core::v1::Node| NodeFacts {
        ready: crate::plan::node_ready(n),
        // As this operator last set it, when the cached Node is older than that write.
        version: base.node_labels.label(&n.metadata, &key),
    };
    let instances = obj.status.iter().flat_map(|s| s.invocations.iter());
    if instances.clone().next().is_none() && obj.spec.node_names.is_none() {
        return base
            .nodes
            .state()
            .iter()
            .map(|n| (n.name_any(), facts(n)))
            .collect();
    }
    instances
        .map(|e| e.instance_id.clone())
        .chain(agent.spec.remote_install_host.clone())
        .chain(obj.spec.node_names.iter().flatten().cloned())
        .filter_map(|name| {
            let node = base.nodes.get(&ObjectRef::new(&name))?;
            Some((name, facts(&node)))
        })
        .collect()
}

/// (node, version) of the agent's pods on `nodes` that have stayed Ready for
/// [`crate::agent::AGENT_MIN_READY`], and of those Ready for less, with when they will
/// have been (the invocation looks again then, [`plan::next_look`]). Only the nodes the
/// invocation reads, each looked up in the index by agent and node: in a rollout over
/// 5000 nodes, every reconcile of every invocation collected all 5000 agent pods, and
/// then walked them (`perf` of a 1000-agent upgrade under `make bench`: 12% of the
/// operator's CPU time, more than any other function of its own, growing with the fleet).
#[allow(clippy::type_complexity)]
fn ready_pods(
    base: &Context,
    agent: &str,
    nodes: &BTreeMap<String, NodeFacts>,
    now: Timestamp,
) -> (
    BTreeSet<(String, String)>,
    BTreeMap<(String, String), Timestamp>,
) {
    let mut ready = BTreeSet::new();
    let mut soon = BTreeMap::new();
    let min = jiff::SignedDuration::try_from(crate::agent::AGENT_MIN_READY).unwrap_or_default();
    let pods = nodes.keys().flat_map(|node| {
        base.agent_pods_by_node
            .get(&base.pods, &crate::agent::pod_key(agent, node))
            .into_iter()
            .map(move |p| (node, p))
    });
    for (node, p) in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(version) = p.labels().get(AGENT_VERSION_LABEL) else {
            continue;
        };
        let key = (node.clone(), version.clone());
        if pod_ready_for(&p, now, crate::agent::AGENT_MIN_READY) {
            ready.insert(key);
        } else if let Some(since) = crate::agent::ready_since(&p)
            && let Ok(at) = since.checked_add(min)
        {
            soon.insert(key, at);
        }
    }
    (ready, soon)
}
