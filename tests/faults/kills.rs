//! a. The operator killed at seeded pseudo-random points.

use super::*;

/// What the kill loop looks at between kills (read from the API; any error counts as "not
/// yet").
pub(crate) struct Progress {
    /// The fan-out or the upgrade is still running: kill often.
    pub(crate) busy: bool,
    /// Everything finished, two slots fired and their runs finished.
    pub(crate) done: bool,
    pub(crate) text: String,
}

pub(crate) async fn workloads_done(ns: &TestNamespace, runs: &Shared<Runs>) -> Progress {
    let acmd = ns
        .api::<AsyncCommand>()
        .get_opt("fanout")
        .await
        .ok()
        .flatten();
    let fan = acmd.as_ref().and_then(|c| c.status.as_ref());
    let upgrade = ns
        .api::<AgentUpgradeJob>()
        .get_opt("upgrade")
        .await
        .ok()
        .flatten();
    let up = upgrade.as_ref().and_then(|j| j.status.as_ref());
    let upgraded = up.map_or(0, |s| {
        s.agents
            .iter()
            .filter(|a| a.status == AgentUpgradeState::Success)
            .count()
    });
    let children: Vec<String> = runs
        .lock()
        .expect("ledger")
        .ledger
        .names
        .iter()
        .cloned()
        .collect();
    let mut runs_done = 0;
    for c in &children {
        if let Ok(Some(c)) = ns.api::<AsyncCommand>().get_opt(c).await
            && finished(&c)
        {
            runs_done += 1;
        }
    }
    let busy = !(acmd.as_ref().is_some_and(finished) && upgrade.as_ref().is_some_and(upgrade_done));
    Progress {
        busy,
        done: !busy && children.len() >= 2 && runs_done == children.len(),
        text: format!(
            "fan-out {}/100, upgrade {upgraded}/50, slots fired {} ({runs_done} finished)",
            fan.map_or(0, |s| s.succeeded),
            children.len()
        ),
    }
}

/// How long until the next minute boundary by the wall clock (when an every-minute slot
/// falls due).
pub(crate) fn to_next_minute() -> Duration {
    let now = jiff::Timestamp::now();
    let into = now.as_millisecond().rem_euclid(60_000) as u64;
    Duration::from_millis(60_000 - into)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn operator_killed_at_seeded_points_runs_nothing_twice_and_loses_nothing() {
    let _cluster = required_fault_cluster!();
    let (seed, mut rng) = XorShift64::from_env();
    println!("seed {seed:#018x} (NODEOPS_FAULT_SEED replays or varies it)");
    let (ns, mut op) = TestNamespace::with_operator("fault-kill").await;
    disk_usage_command(&ns).await;
    let upgrade_nodes = node_names(51..=100);
    let agent = agent_installed(&ns, &upgrade_nodes).await;

    let (jobs, jobs_watch) = watch(ns.api::<Job>(), watcher::Config::default(), Jobs::default());
    let (children, children_watch) = watch(
        ns.api::<AgentInvocation>(),
        watcher::Config::default().labels(UPGRADE_JOB_UID_LABEL),
        Children::default(),
    );
    let (labels, labels_watch) = watch(
        Api::<Node>::all(ns.client.clone()),
        watcher::Config::default().labels(&agent.label()),
        Labels::new(agent.label()),
    );
    let (runs, runs_watch) = watch(
        ns.api::<AsyncCommand>(),
        watcher::Config::default().labels(INVOKER_UID_LABEL),
        Runs::default(),
    );
    listed(&[&jobs]).await;
    listed(&[&children]).await;
    listed(&[&labels]).await;
    listed(&[&runs]).await;
    assert_eq!(
        labels.lock().expect("ledger").ledger.history.len(),
        50,
        "the watch starts from 50 nodes at 1.0.0"
    );

    // The three workloads, at once, under one operator that keeps dying.
    let started = Instant::now();
    let acmds: Api<AsyncCommand> = ns.api();
    apply(&acmds, fan_out("fanout")).await;
    let upgrades: Api<AgentUpgradeJob> = ns.api();
    apply(
        &upgrades,
        manifest::<AgentUpgradeJob>(
            "upgrade",
            json!({"agent": agent.name, "targetVersion": "2.0.0", "maxConcurrency": 5,
                   "nodeSelector": {"matchExpressions": [{"key": agent.label(), "operator": "Exists"}]}}),
        ),
    )
    .await;
    let invokers: Api<Invoker> = ns.api();
    apply(
        &invokers,
        manifest::<Invoker>(
            "every-minute",
            json!({"commandRef": "disk-usage", "nodeNames": ["node-0001", "node-0002"],
                   "scheduleSettings": {"policy": "Recurrence", "recurrence": "* * * * *"}}),
        ),
    )
    .await;

    // Kill points: a seeded gap before each kill (short while the fan-out and the upgrade
    // run, longer after), a seeded time dead; a gap that would cross a minute boundary is
    // cut to land a seeded 0-400 ms after it, when the slot is being fired.
    let mut kills: Vec<(Duration, Duration, &str)> = Vec::new();
    let (mut busy_kills, mut slot_kills) = (0, 0);
    let give_up = Duration::from_secs(330);
    loop {
        let progress = workloads_done(&ns, &runs).await;
        if progress.done && kills.len() >= MIN_KILLS {
            println!(
                "all workloads finished at +{}: {}",
                secs(started.elapsed()),
                progress.text
            );
            break;
        }
        assert!(
            started.elapsed() < give_up,
            "not finished after {give_up:?} and {} kills: {}",
            kills.len(),
            progress.text
        );
        let (busy_gap, idle_gap, after_slot, down) = (
            rng.millis(300, 2500),
            rng.millis(1500, 5000),
            rng.millis(0, 400),
            rng.millis(0, 1200),
        );
        let mut gap = if progress.busy { busy_gap } else { idle_gap };
        let mut at_slot = "";
        let boundary = to_next_minute();
        if boundary < gap {
            gap = boundary + after_slot;
            at_slot = " just after a minute boundary";
        }
        tokio::time::sleep(gap).await;
        let at = started.elapsed();
        op.kill();
        tokio::time::sleep(down).await;
        op.restart();
        kills.push((at, down, at_slot));
        busy_kills += usize::from(progress.busy);
        slot_kills += usize::from(!at_slot.is_empty());
        println!(
            "kill {:>2} at +{} (down {}){at_slot}: {}",
            kills.len(),
            secs(at),
            secs(down),
            progress.text
        );
    }
    // No new slot from here on; whatever fired before the suspension must finish.
    invokers
        .patch(
            "every-minute",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend");
    let fanout = eventually(&acmds, "fanout", FINISH, "the fan-out final", finished).await;
    let upgrade = eventually(
        &upgrades,
        "upgrade",
        FINISH,
        "the rollout final",
        upgrade_done,
    )
    .await;
    let fired: Vec<String> = runs
        .lock()
        .expect("ledger")
        .ledger
        .names
        .iter()
        .cloned()
        .collect();
    let mut run_results = Vec::new();
    for name in &fired {
        run_results
            .push(eventually(&acmds, name, FINISH, "the scheduled run final", finished).await);
    }
    let elapsed = started.elapsed();

    // The fan-out: each node's Job once, maxConcurrency 10 kept, every result present.
    let report = assert_fan_out_complete(&ns, &fanout, 100, 10, &jobs).await;

    // The upgrade: one child per node, maxConcurrency 5 kept, each node's label changed
    // exactly once, 1.0.0 -> 2.0.0, and every agent reported.
    let s = upgrade.status.clone().expect("status");
    assert_eq!(s.status, UpgradeJobState::Success, "{s:#?}");
    assert_eq!(s.progress.as_deref(), Some("50/50"));
    assert_eq!(s.agents.len(), 50);
    for a in &s.agents {
        assert_eq!(
            (a.status, a.old_version.as_deref(), a.new_version.as_deref()),
            (AgentUpgradeState::Success, Some("1.0.0"), Some("2.0.0")),
            "{a:?}"
        );
    }
    let expected: BTreeMap<String, String> = upgrade_nodes
        .iter()
        .map(|n| (n.clone(), "2.0.0".to_string()))
        .collect();
    assert_eq!(agent.versions().await, expected);
    let (child_max, child_count) = {
        let c = children.lock().expect("ledger");
        let twice: Vec<_> = c
            .ledger
            .uids_by_node
            .iter()
            .filter(|(_, u)| u.len() > 1)
            .collect();
        assert!(
            twice.is_empty(),
            "a node got two upgrade children: {twice:?}"
        );
        let roles: BTreeSet<&str> = c
            .ledger
            .uids_by_node
            .keys()
            .map(|(r, _)| r.as_str())
            .collect();
        assert_eq!(roles, BTreeSet::from([ROLE_UPGRADE]), "no rollback child");
        let nodes: BTreeSet<&String> = c.ledger.uids_by_node.keys().map(|(_, n)| n).collect();
        assert_eq!(nodes.len(), 50, "one child per node");
        (c.ledger.max_in_flight, c.ledger.uids_by_node.len())
    };
    assert!(
        child_max <= 5,
        "maxConcurrency 5 exceeded: {child_max} upgrades in flight"
    );
    assert!(child_max >= 2, "the rollout ran in parallel ({child_max})");
    {
        let l = labels.lock().expect("ledger");
        let wrong: Vec<_> = l
            .ledger
            .history
            .iter()
            .filter(|(_, h)| h.as_slice() != ["1.0.0", "2.0.0"])
            .collect();
        assert!(
            wrong.is_empty(),
            "label transitions other than one 1.0.0 -> 2.0.0: {wrong:#?}"
        );
        assert_eq!(l.ledger.history.len(), 50);
    }

    // The schedule: one child uid per slot, consecutive minutes, every run's results.
    let slots: Vec<(String, usize)> = runs
        .lock()
        .expect("ledger")
        .ledger
        .uids_by_slot
        .iter()
        .map(|(slot, uids)| (slot.clone(), uids.len()))
        .collect();
    assert!(
        slots.len() >= 2,
        "at least two minute boundaries: {slots:?}"
    );
    assert!(
        slots.iter().all(|(_, n)| *n == 1),
        "a slot fired twice: {slots:?}"
    );
    let times: Vec<jiff::Timestamp> = slots
        .iter()
        .map(|(s, _)| s.parse().expect("slot time"))
        .collect();
    for pair in times.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]).as_secs(),
            60,
            "no slot lost: {slots:?}"
        );
    }
    for run in &run_results {
        let st = run.status.as_ref().expect("status");
        assert_eq!(
            (st.succeeded, st.total),
            (2, 2),
            "run {}: {st:?}",
            run.name_any()
        );
    }
    let last = invokers.get("every-minute").await.expect("invoker");
    let last_slot = last
        .status
        .as_ref()
        .and_then(|s| s.last_invoke_time.as_ref())
        .map(|t| t.0);
    assert_eq!(
        last_slot,
        times.last().copied(),
        "lastInvokeTime is the last fired slot"
    );

    for h in [jobs_watch, children_watch, labels_watch, runs_watch] {
        h.abort();
    }
    let at: Vec<String> = kills
        .iter()
        .map(|(at, down, _)| format!("{:.1}s(+{:.1})", at.as_secs_f64(), down.as_secs_f64()))
        .collect();
    println!(
        "RESULT kill: seed {seed:#018x}, {} operator kills ({busy_kills} while the fan-out or the \
         upgrade ran, {slot_kills} just after a minute boundary) at [{}]; fan-out: {} Jobs for 100 nodes, \
         max {} in flight (limit 10); upgrade: {child_count} children for 50 nodes, max {child_max} \
         in flight (limit 5), 50 label changes 1.0.0->2.0.0; schedule: {} slots, one child each; \
         duplicates 0; {} from creation to the last result",
        kills.len(),
        at.join(" "),
        report.jobs,
        report.max_in_flight,
        slots.len(),
        secs(elapsed)
    );
    drop(op);
}
