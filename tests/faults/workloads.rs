//! Workloads the scenarios run and the end states they must reach.

use super::*;

pub(crate) fn node_names(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("node-{i:04}")).collect()
}

/// A 100-node AsyncCommand at maxConcurrency 10 whose pods take 500 ms: long enough to be
/// hit mid-way. Its Jobs' deadline (timeoutSeconds + 120 s) is an hour away, so no outage a
/// scenario makes can fail a node: every node must end Succeeded.
pub(crate) fn fan_out(name: &str) -> serde_json::Value {
    manifest::<AsyncCommand>(
        name,
        json!({
            "command": "uptime",
            "nodeNames": node_names(1..=100),
            "maxConcurrency": 10,
            "timeoutSeconds": 3600,
            "podAnnotations": {sim::DELAY: "500ms"}
        }),
    )
}

pub(crate) fn succeeded_at_least(n: i32) -> impl Fn(&AsyncCommand) -> bool {
    move |c| c.status.as_ref().is_some_and(|s| s.succeeded >= n)
}

/// What a fan-out ended with, for the report.
pub(crate) struct FanOutReport {
    pub(crate) jobs: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) lists: usize,
}

pub(crate) fn job_failed(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

/// Asserts an AsyncCommand's end: every node Succeeded, as its Job did, the counts right; one
/// Job per node, never a Job name with a second uid, at most one Pod per node (no node ran
/// twice); and no more than `max_concurrency` Jobs in flight at any point the watch saw.
pub(crate) async fn assert_fan_out_complete(
    ns: &TestNamespace,
    done: &AsyncCommand,
    nodes: usize,
    max_concurrency: usize,
    jobs: &Shared<Jobs>,
) -> FanOutReport {
    let status = done.status.clone().expect("status");
    let n = nodes as i32;
    assert_eq!(status.cmd_jobs.len(), nodes, "one entry per node");
    let not_final: Vec<_> = status
        .cmd_jobs
        .iter()
        .filter(|e| !e.phase.is_final())
        .collect();
    assert!(not_final.is_empty(), "every node final: {not_final:#?}");
    let count = |p: NodePhase| status.cmd_jobs.iter().filter(|e| e.phase == p).count() as i32;
    let (succeeded, failed) = (count(NodePhase::Succeeded), count(NodePhase::Failed));
    assert_eq!(
        (
            status.total,
            status.succeeded,
            status.failed,
            status.running,
            status.pending,
            status.cancelled
        ),
        (n, succeeded, failed, 0, 0, count(NodePhase::Cancelled)),
        "the counts"
    );
    assert_eq!(status.progress, Some(format!("{succeeded}/{n}")));
    let all = succeeded == n;
    assert_eq!(
        status.phase,
        if all {
            CommandPhase::Succeeded
        } else {
            CommandPhase::Failed
        }
    );
    assert!(status.completion_time.is_some());

    let uid = done.metadata.uid.clone().expect("uid");
    let selector = format!("{OWNER_UID_LABEL}={uid}");
    let lp = ListParams::default().labels(&selector);
    let (job_api, pod_api) = (ns.api::<Job>(), ns.api::<Pod>());
    let list = retry("list Jobs", || job_api.list(&lp)).await.items;
    if list.len() != nodes {
        // Say which nodes have no Job, what the status says of them, and what the test's
        // own Job watch saw: a Job deleted, or one the API never listed.
        let listed: BTreeSet<String> = list
            .iter()
            .filter_map(|j| j.annotations().get(NODE_ANNOTATION).cloned())
            .collect();
        let missing: Vec<_> = status
            .cmd_jobs
            .iter()
            .filter(|e| !listed.contains(&e.node_name))
            .map(|e| {
                (
                    e.node_name.clone(),
                    e.phase,
                    e.reason.clone(),
                    e.message.clone(),
                )
            })
            .collect();
        let names: BTreeSet<String> = list.iter().map(|j| j.name_any()).collect();
        let watched = jobs
            .lock()
            .map(|w| {
                let seen = &w.ledger.uids_by_name;
                let unlisted: Vec<&String> = seen.keys().filter(|n| !names.contains(*n)).collect();
                format!("{} Job names, not listed now: {unlisted:?}", seen.len())
            })
            .unwrap_or_default();
        panic!(
            "exactly one Job per node: {} listed for {nodes}; without a Job: {missing:?}; the Job watch saw: {watched}",
            list.len()
        );
    }
    let by_node: BTreeMap<String, &Job> = list
        .iter()
        .filter_map(|j| Some((j.annotations().get(NODE_ANNOTATION)?.clone(), j)))
        .collect();
    assert_eq!(by_node.len(), nodes, "the Jobs cover every node once");
    let pods = retry("list Pods", || pod_api.list(&lp)).await.items;
    let mut pods_per_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &pods {
        pods_per_node
            .entry(
                p.annotations()
                    .get(NODE_ANNOTATION)
                    .cloned()
                    .unwrap_or_default(),
            )
            .or_default()
            .push(p);
    }
    let twice: Vec<_> = pods_per_node
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .map(|(n, p)| (n, p.len()))
        .collect();
    assert!(twice.is_empty(), "a node ran more than once: {twice:?}");

    // Each result is what the cluster says happened to the node's Job.
    let mut not_succeeded = Vec::new();
    for e in &status.cmd_jobs {
        let job = by_node[&e.node_name];
        if e.phase == NodePhase::Succeeded && e.exit_code == Some(0) && job_finished(job) {
            assert_eq!(job_failed(job), None, "{}: {job:?}", e.node_name);
            continue;
        }
        let pods: Vec<String> = pods_per_node
            .get(&e.node_name)
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "Pod {} created {:?} phase {:?}",
                    p.name_any(),
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.status.as_ref().and_then(|s| s.phase.clone())
                )
            })
            .collect();
        let why = format!(
            "{} {:?} {:?} ({:?}); Job {} created {:?}, conditions {:?}; {pods:?}",
            e.node_name,
            e.phase,
            e.reason,
            e.message,
            job.name_any(),
            job.metadata.creation_timestamp.as_ref().map(|t| t.0),
            job.status.as_ref().and_then(|s| s.conditions.clone()),
        );
        println!("not Succeeded: {why}");
        for line in component_log_lines(&job.name_any()) {
            println!("    {line}");
        }
        not_succeeded.push(why);
    }
    // Nothing in any scenario scripts a failure, and no outage can reach a Job's deadline
    // (an hour away): every node, exactly, Succeeded.
    assert!(
        not_succeeded.is_empty(),
        "every node Succeeded: {not_succeeded:#?}"
    );
    assert_eq!(pods_per_node.len(), nodes, "one Pod per node");

    let ledger = jobs.lock().expect("ledger");
    let w = &ledger.ledger;
    assert_eq!(w.duplicates(), Vec::<String>::new(), "no duplicate Job");
    for j in &list {
        let seen = w
            .uids_by_name
            .get(&j.name_any())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            seen,
            BTreeSet::from([uid_of(j)]),
            "Job {} is the one the watch saw created",
            j.name_any()
        );
    }
    assert_eq!(w.runs_of(&uid), nodes);
    let max = w.max_in_flight.get(&uid).copied().unwrap_or(0);
    assert!(
        max <= max_concurrency,
        "maxConcurrency {max_concurrency} exceeded: {max} Jobs in flight"
    );
    assert!(max >= 2, "the fan-out ran in parallel ({max})");
    FanOutReport {
        jobs: list.len(),
        max_in_flight: max,
        lists: ledger.lists,
    }
}

/// The fault cluster's component log lines that mention `needle` (the last 20): what
/// kube-controller-manager, the scheduler and kwok did with a Job that did not succeed.
pub(crate) fn component_log_lines(needle: &str) -> Vec<String> {
    let Some(dir) = fault_cluster() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for name in [
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "kube-apiserver",
    ] {
        let text =
            std::fs::read_to_string(dir.join(format!("logs/{name}.log"))).unwrap_or_default();
        lines.extend(
            text.lines()
                .filter(|l| l.contains(needle))
                .map(|l| format!("{name}: {}", l.chars().take(300).collect::<String>())),
        );
    }
    let skip = lines.len().saturating_sub(20);
    lines.split_off(skip)
}

/// A DaemonSet-mode agent at 1.0.0 on `nodes`.
pub(crate) async fn agent_installed(ns: &TestNamespace, nodes: &[String]) -> Agent {
    let spec = json!({
        "mode": "DaemonSet",
        "image": "registry.example.com/telescope",
        "basicVersion": "1.0.0",
        "readyTimeoutSeconds": 90,
    });
    Agent::installed(ns, spec, nodes).await
}

pub(crate) async fn disk_usage_command(ns: &TestNamespace) {
    apply(
        &ns.api::<Command>(),
        manifest::<Command>(
            "disk-usage",
            json!({"content": "df -h {{path}}", "enableParameters": true, "defaultParameters": {"path": "/"}}),
        ),
    )
    .await;
}

pub(crate) fn upgrade_done(j: &AgentUpgradeJob) -> bool {
    j.status.as_ref().is_some_and(|s| s.completed_at.is_some())
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}
