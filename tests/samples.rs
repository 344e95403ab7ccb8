//! `kubectl apply -f config/samples/` on the local cluster: applied twice, once with the
//! files in reverse order (dependents after what they depend on: the NodeAgent before its
//! namespace, the Invokers before their Command) and once as a directory (dependents
//! first: the AgentInvocation and the upgrade job before the NodeAgent), kubectl reports
//! no error, and every sample ends where it means to: the runs succeeded, the agent is
//! installed and Ready, the schedules wait for their time, the dry run is planned, and no
//! object is Stalled.

mod support;

use std::time::Duration;

use kube::Api;
use kube::api::DeleteParams;
use kube::runtime::wait::{await_condition, conditions};
use nodeops::api::agent_upgrade_job::UpgradeJobState;
use nodeops::api::async_command::CommandPhase;
use nodeops::api::{AgentInvocation, AgentUpgradeJob, AsyncCommand, Command, Invoker, NodeAgent};
use nodeops::conditions::{READY, STALLED};
use support::{Operator, client, install_crds, kubectl, repo_root, wait_for};

/// The samples' NodeAgent runs its DaemonSets here (config/samples/namespace.yaml), and an
/// operator confined to a namespace manages the agents of that namespace: the samples are
/// applied here, with an operator confined to it.
const NS: &str = "nodeops-agents";
const AGENT: &str = "telescope";
const FINISH: Duration = Duration::from_secs(300);

type Conditions = [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition];

fn settled(conditions: &Conditions, generation: Option<i64>, observed: Option<i64>) -> bool {
    observed.is_some()
        && observed == generation
        && !conditions
            .iter()
            .any(|c| c.type_ == STALLED && c.status == "True")
}

fn ready(conditions: &Conditions) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// Deletes `name` if it exists and waits, from a watch, until it is gone.
async fn delete_and_wait<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let Some(obj) = api.get_opt(name).await.expect("read") else {
        return;
    };
    let uid = obj.meta().uid.clone().unwrap_or_default();
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    let gone = await_condition(api.clone(), name, conditions::is_deleted(&uid));
    match tokio::time::timeout(FINISH, gone).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("watching {name} go: {e}"),
        Err(_) => panic!("{name} still there after {FINISH:?}"),
    }
}

/// Removes what an earlier run (or `make demo`) left: the NodeAgent, whose finalizer takes
/// its labels off the nodes (run by an operator confined to its namespace), and the
/// namespace; waits until both are gone.
async fn clean(client: &kube::Client) {
    {
        let _op = Operator::start(NS, &[]);
        delete_and_wait(&Api::<NodeAgent>::all(client.clone()), AGENT).await;
    }
    delete_and_wait(
        &Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()),
        NS,
    )
    .await;
}

#[tokio::test]
async fn the_samples_apply_cleanly_twice_in_any_order() {
    // The sample AgentInvocation installs the agent on the real node, too.
    let _node = support::real_node_shared().await;
    let client = client().await;
    install_crds(&client).await;
    clean(&client).await;
    let _op = Operator::start(NS, &[]);

    let dir = repo_root().join("config/samples");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("config/samples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files.reverse();
    let mut args = vec!["apply", "-n", NS];
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    kubectl(&args);
    let second = kubectl(&["apply", "-n", NS, "-f", "config/samples/"]);
    assert!(
        !second.contains("created"),
        "the second apply created something: {second}"
    );

    let commands: Api<Command> = Api::namespaced(client.clone(), NS);
    wait_for(&commands, "disk-usage", FINISH, "the Command Ready", |c| {
        let s = c.status.clone().unwrap_or_default();
        settled(&s.conditions, c.metadata.generation, s.observed_generation) && ready(&s.conditions)
    })
    .await;
    let invokers: Api<Invoker> = Api::namespaced(client.clone(), NS);
    for name in ["test-invoker", "cron-invoker"] {
        let i = wait_for(
            &invokers,
            name,
            FINISH,
            "the Invoker waiting for its time",
            |i| {
                let s = i.status.clone().unwrap_or_default();
                settled(&s.conditions, i.metadata.generation, s.observed_generation)
                    && ready(&s.conditions)
                    && s.next_invoke_time.is_some()
            },
        )
        .await;
        assert!(
            i.status.expect("status").last_invoke_time.is_none(),
            "{name} ran"
        );
    }
    let commands: Api<AsyncCommand> = Api::namespaced(client.clone(), NS);
    for name in ["list-system", "uptime-fleet"] {
        let c = wait_for(
            &commands,
            name,
            FINISH,
            "the run finished",
            support::finished,
        )
        .await;
        let s = c.status.expect("status");
        assert_eq!(s.phase, CommandPhase::Succeeded, "{name}: {s:#?}");
        assert!(settled(
            &s.conditions,
            c.metadata.generation,
            s.observed_generation
        ));
    }
    let invocations: Api<AgentInvocation> = Api::namespaced(client.clone(), NS);
    let inv = wait_for(
        &invocations,
        "install-telescope",
        FINISH,
        "the install finished",
        support::agents::is_final,
    )
    .await;
    let results = support::agents::results(&inv);
    assert_eq!(results.len(), 3);
    assert!(results.values().all(support::agents::ok), "{results:#?}");
    let agents: Api<NodeAgent> = Api::all(client.clone());
    wait_for(&agents, AGENT, FINISH, "the NodeAgent Ready", |a| {
        let s = a.status.clone().unwrap_or_default();
        settled(&s.conditions, a.metadata.generation, s.observed_generation) && ready(&s.conditions)
    })
    .await;
    let jobs: Api<AgentUpgradeJob> = Api::namespaced(client.clone(), NS);
    let job = wait_for(
        &jobs,
        "upgrade-telescope",
        FINISH,
        "the dry run planned",
        |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.status == UpgradeJobState::Planned)
        },
    )
    .await;
    let s = job.status.expect("status");
    assert!(
        settled(
            &s.conditions,
            job.metadata.generation,
            s.observed_generation
        ),
        "{s:#?}"
    );

    // Applied once more, now that everything has settled: nothing changes.
    let third = kubectl(&["apply", "-n", NS, "-f", "config/samples/"]);
    assert!(
        third.lines().all(|l| l.ends_with("unchanged")),
        "a settled apply changed something: {third}"
    );
    clean(&client).await;
}
