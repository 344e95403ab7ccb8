//! `nodeops`: the operator binary.

use clap::Parser;
use std::collections::BTreeSet;

use nodeops::operator::{self, Config};
use nodeops::settings::Settings;
use nodeops::telemetry::{self, LogFormat};

/// Runs nodeops' controllers against the cluster in the kubeconfig or in-cluster config;
/// `nodeops get` prints an object's per-node table, `nodeops logs` a node's whole output.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Log format.
    #[arg(long, env = "NODEOPS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, in RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info,kube=warn")]
    log_filter: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "NODEOPS_NAMESPACE")]
    namespace: Option<String>,
    /// Namespaces where executionMode Host is allowed (comma-separated; default none).
    #[arg(long, env = "NODEOPS_HOST_MODE_NAMESPACES", value_delimiter = ',')]
    host_mode_namespaces: Vec<String>,
    /// Image that carries nodeops-exec.
    #[arg(long, env = "NODEOPS_RUNNER_IMAGE", default_value = nodeops::engine::job::DEFAULT_RUNNER_IMAGE)]
    runner_image: String,
    /// Host mode: the process whose namespaces the runner joins, a PID or a name as in
    /// /proc/PID/comm (e.g. kubelet where PID 1's namespaces cannot be opened).
    #[arg(long, env = "NODEOPS_HOST_PROCESS", value_name = "TARGET", default_value = nodeops::engine::job::DEFAULT_HOST_PROCESS)]
    host_process: String,
    /// imagePullPolicy of the node runs' containers (Always, IfNotPresent or Never; default:
    /// the API server's, IfNotPresent for tagged images). Never suits nodes that get their
    /// images some other way than from a registry.
    #[arg(long, env = "NODEOPS_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    image_pull_policy: Option<String>,
    /// Image of Container-mode commands that name none.
    #[arg(long, env = "NODEOPS_DEFAULT_IMAGE", default_value = nodeops::engine::job::DEFAULT_IMAGE)]
    default_image: String,
    /// Agents an AgentUpgradeJob's status lists: all of a job with at most this many; a
    /// larger job keeps its plan in ConfigMaps and lists only those in flight and the
    /// failures, this many at most.
    #[arg(long, env = "NODEOPS_UPGRADE_STATUS_AGENTS", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=100))]
    upgrade_status_agents: u16,
    /// Agents per plan ConfigMap of a large AgentUpgradeJob.
    #[arg(long, env = "NODEOPS_UPGRADE_PLAN_PART_AGENTS", default_value_t = 400, value_parser = clap::value_parser!(u16).range(1..=400))]
    upgrade_plan_part_agents: u16,
    /// Nodes per batch of a fleet: an AsyncCommand whose nodeSelector matches more nodes is
    /// split into batch AsyncCommands of this many.
    #[arg(long, env = "NODEOPS_FLEET_BATCH_NODES", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=100))]
    fleet_batch_nodes: u16,
    /// Reconcile only while holding a coordination.k8s.io Lease (run several replicas).
    #[arg(long, env = "NODEOPS_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else nodeops-system).
    #[arg(long, env = "POD_NAMESPACE", default_value = "nodeops-system")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "nodeops")]
    leader_election_lease: String,
    /// Address of /metrics, /healthz and /readyz ("off" to serve none).
    #[arg(long, env = "NODEOPS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Print the per-node table of an object: `nodeops get KIND NAME -n NAMESPACE`.
    Get {
        /// Kind: asynccommand (acmd), command (ncmd), invoker (ivk), nodeagent (nagent),
        /// agentinvocation (ainv) or agentupgradejob (aupj).
        kind: String,
        name: String,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Print each node's result as it arrives, then the table once the object is
        /// finished (asynccommand, agentinvocation, agentupgradejob).
        #[arg(short, long)]
        watch: bool,
    },
    /// Print a node's whole output from its Pod: `nodeops logs KIND NAME --node NODE`
    /// (status keeps only its beginning and end). Says so when the Pod is gone.
    Logs {
        /// Kind: asynccommand (acmd) or agentinvocation (ainv).
        kind: String,
        name: String,
        /// The node (an AgentInvocation's instance id).
        #[arg(long)]
        node: String,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Print a shell completion script: `source <(nodeops completion bash)`.
    Completion {
        shell: clap_complete::Shell,
        /// The command name to complete (`kubectl-nodeops` for the plugin).
        #[arg(long, default_value = "nodeops")]
        name: String,
    },
    /// Completion candidates for `kubectl nodeops` (what `kubectl_complete-nodeops` runs).
    #[command(name = "__complete", hide = true)]
    Complete {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

/// Follows one object: each node's final result as it arrives, then its table once it is
/// finished. Watch errors are retried with backoff (the API server may restart).
async fn follow<K>(api: kube::Api<K>, name: &str) -> anyhow::Result<String>
where
    K: nodeops::view::Follow
        + kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let start = std::time::Instant::now();
    let mut printed = BTreeSet::new();
    let stream = kube::runtime::watcher::watch_object(api, name).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let obj = match event {
            Ok(Some(obj)) => obj,
            Ok(None) => anyhow::bail!("{name} does not exist (or was deleted)"),
            Err(e) => {
                eprintln!("watch: {e}; retrying");
                continue;
            }
        };
        for (key, line) in obj.arrived() {
            if printed.insert(key) {
                println!("{:>6.1}s  {line}", start.elapsed().as_secs_f64());
            }
        }
        if obj.finished() {
            return Ok(format!("\n{}", obj.render()));
        }
    }
    anyhow::bail!("the watch of {name} ended")
}

/// The namespace given, else the kubeconfig context's.
fn namespace_or_context(given: &Option<String>, client: &kube::Client) -> String {
    given
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.command {
        Some(Sub::Completion { shell, name }) => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Args::command(), name, &mut std::io::stdout());
            return Ok(());
        }
        Some(Sub::Complete { words }) => {
            // Completion must not fail loudly: without a cluster it offers the static words.
            let client = kube::Client::try_default().await.ok();
            let text = nodeops::complete::complete(client.as_ref(), words).await;
            print!("{text}");
            return Ok(());
        }
        _ => {}
    }
    if let Some(Sub::Logs {
        kind,
        name,
        node,
        namespace,
    }) = &args.command
    {
        let client = kube::Client::try_default().await?;
        let namespace = namespace_or_context(namespace, &client);
        let text = nodeops::logs::node_output(&client, kind, &namespace, name, node).await?;
        print!("{text}");
        return Ok(());
    }
    if let Some(Sub::Get {
        kind,
        name,
        namespace,
        watch,
    }) = &args.command
    {
        let client = kube::Client::try_default().await?;
        let namespace = &namespace_or_context(namespace, &client);
        let kind = kind.to_lowercase();
        let text = match kind.as_str() {
            "asynccommand" | "asynccommands" | "acmd" => {
                let api: kube::Api<nodeops::api::AsyncCommand> =
                    kube::Api::namespaced(client, namespace);
                if *watch {
                    follow(api, name).await?
                } else {
                    let obj = api.get(name).await?;
                    match obj.status.as_ref().and_then(|s| s.fleet.as_ref()) {
                        Some(_) => {
                            let uid = obj.metadata.uid.clone().unwrap_or_default();
                            let selector = format!("{}={uid}", nodeops::keys::FLEET_UID_LABEL);
                            let mut batches = api
                                .list(&kube::api::ListParams::default().labels(&selector))
                                .await?
                                .items;
                            batches.sort_by_key(|b| {
                                nodeops::controller::async_command::plan::fleet::part(b)
                            });
                            nodeops::view::fleet(&obj, &batches)
                        }
                        None => nodeops::view::async_command(&obj),
                    }
                }
            }
            "agentinvocation" | "agentinvocations" | "ainv" => {
                let api: kube::Api<nodeops::api::AgentInvocation> =
                    kube::Api::namespaced(client, namespace);
                if *watch {
                    follow(api, name).await?
                } else {
                    nodeops::view::agent_invocation(&api.get(name).await?)
                }
            }
            "agentupgradejob" | "agentupgradejobs" | "aupj" => {
                let api: kube::Api<nodeops::api::agent_upgrade_job::AgentUpgradeJob> =
                    kube::Api::namespaced(client.clone(), namespace);
                if *watch {
                    follow(api, name).await?
                } else {
                    let mut job = api.get(name).await?;
                    // A large job's status lists only some agents: every one from its plan.
                    if job.status.as_ref().is_some_and(|s| s.plan.is_some()) {
                        let every = nodeops::controller::agent_upgrade_job::fetch::every_agent(
                            &client,
                            &job,
                            jiff::Timestamp::now(),
                        )
                        .await?;
                        if let Some(s) = job.status.as_mut() {
                            s.agents = every;
                        }
                    }
                    nodeops::view::agent_upgrade_job(&job)
                }
            }
            _ if *watch => anyhow::bail!(
                "nodeops get --watch: follows asynccommand, agentinvocation and agentupgradejob, not {kind:?}"
            ),
            "nodeagent" | "nodeagents" | "nagent" => {
                let api: kube::Api<nodeops::api::NodeAgent> = kube::Api::all(client.clone());
                let mut agent = api.get(name).await?;
                // Status lists the first agents only: every one from the nodes' labels.
                if let Some(s) = agent
                    .status
                    .as_mut()
                    .filter(|s| s.installed_nodes as usize > s.agents.len())
                {
                    use nodeops::controller::node_agent::plan::{NodeView, instances};
                    let label = nodeops::keys::agent_node_label(name);
                    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
                    let listed = nodes
                        .list_metadata(&kube::api::ListParams::default().labels(&label))
                        .await?;
                    let views: Vec<NodeView> = listed
                        .items
                        .iter()
                        .map(|n| NodeView::of(&n.metadata, &label))
                        .collect();
                    s.agents = instances(agent.metadata.uid.as_deref().unwrap_or_default(), &views);
                }
                nodeops::view::node_agent(&agent)
            }
            "invoker" | "invokers" | "ivk" => {
                let api: kube::Api<nodeops::api::Invoker> =
                    kube::Api::namespaced(client.clone(), namespace);
                let inv = api.get(name).await?;
                let mut text = nodeops::view::invoker(&inv);
                // The runs are AsyncCommands: the latest one's per-node table.
                let latest = inv
                    .status
                    .as_ref()
                    .and_then(|s| s.recent_runs.iter().max_by_key(|r| r.scheduled_time.0));
                if let Some(run) = latest {
                    let runs: kube::Api<nodeops::api::AsyncCommand> =
                        kube::Api::namespaced(client, namespace);
                    if let Some(ac) = runs.get_opt(&run.async_command).await? {
                        text.push_str("\nlatest run, per node:\n");
                        text.push_str(&nodeops::view::async_command(&ac));
                    }
                }
                text
            }
            "command" | "commands" | "ncmd" => {
                let api: kube::Api<nodeops::api::Command> =
                    kube::Api::namespaced(client.clone(), namespace);
                let cmd = api.get(name).await?;
                let runs: kube::Api<nodeops::api::AsyncCommand> =
                    kube::Api::namespaced(client, namespace);
                let runs = runs.list(&Default::default()).await?.items;
                nodeops::view::command(&cmd, &runs)
            }
            other => anyhow::bail!(
                "nodeops get: unknown kind {other:?}; known: asynccommand, command, invoker, nodeagent, agentinvocation, agentupgradejob"
            ),
        };
        print!("{text}");
        return Ok(());
    }
    telemetry::init(args.log_format, &args.log_filter);
    let controllers = Settings {
        namespace: args.namespace,
        host_mode_namespaces: args
            .host_mode_namespaces
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<BTreeSet<_>>(),
        runner_image: args.runner_image,
        host_process: args.host_process,
        image_pull_policy: args.image_pull_policy,
        default_image: args.default_image,
        fleet_batch_nodes: args.fleet_batch_nodes.into(),
        upgrade_limits: nodeops::controller::agent_upgrade_job::plan::PlanLimits {
            status_agents: args.upgrade_status_agents.into(),
            part_agents: args.upgrade_plan_part_agents.into(),
        },
    };
    let config = Config {
        controllers,
        leader_election: args.leader_election.then(|| {
            // The pod name is unique among replicas; the hostname and pid otherwise.
            let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "nodeops".into());
                format!("{host}-{}", std::process::id())
            });
            operator::leader::LeaseConfig::new(
                args.leader_election_namespace.clone(),
                args.leader_election_lease.clone(),
                identity,
            )
        }),
        metrics_addr: match args.metrics_addr.as_str() {
            "off" | "" => None,
            addr => Some(
                addr.parse()
                    .map_err(|e| anyhow::anyhow!("--metrics-addr {addr:?}: {e}"))?,
            ),
        },
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), host_mode_namespaces = ?config.controllers.host_mode_namespaces, "starting nodeops");
    let client = operator::connect().await?;
    let stopped_by = operator::run(client, config, operator::shutdown::signal_received()).await?;
    tracing::info!(signal = stopped_by, "nodeops stopped");
    Ok(())
}
