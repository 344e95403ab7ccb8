//! c. Other writers on the same status.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn conflicting_status_writers_leave_a_complete_and_correct_status() {
    let _cluster = required_fault_cluster!();
    let (ns, op) = TestNamespace::with_operator("fault-writers").await;
    let (jobs, jobs_watch) = watch(ns.api::<Job>(), watcher::Config::default(), Jobs::default());
    listed(&[&jobs]).await;
    let api: Api<AsyncCommand> = ns.api();
    let started = Instant::now();
    let created = apply(&api, fan_out("contested")).await;
    let owner = created.metadata.uid.clone().expect("uid");
    let (regressions, regressions_watch) = watch(
        api.clone(),
        watcher::Config::default().fields("metadata.name=contested"),
        Regressions::default(),
    );
    // A snapshot that goes stale as soon as the operator writes again.
    let stale = eventually(
        &api,
        "contested",
        FINISH,
        "10 nodes done",
        succeeded_at_least(10),
    )
    .await;
    // ... once the operator has written since.
    let snapshot_rv = stale.metadata.resource_version.clone();
    eventually(
        &api,
        "contested",
        FINISH,
        "a write after the snapshot",
        |c: &AsyncCommand| c.metadata.resource_version != snapshot_rv,
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicUsize; 5]> = Arc::new(Default::default());
    const SSA_WRITES: usize = 0;
    const STALE_REFUSED: usize = 1;
    const STALE_ACCEPTED: usize = 2;
    const RMW_WRITTEN: usize = 3;
    const RMW_CONFLICT: usize = 4;

    // Another field manager (a dashboard, say) applies its view of the status, forcing
    // ownership: the counts and phase reset, node-0001's entry rolled back to Pending, and
    // a condition of its own.
    let dashboard = {
        let (api, stop, counts) = (api.clone(), stop.clone(), counts.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let current = api.get("contested").await.ok();
                let job_id = current
                    .as_ref()
                    .and_then(|c| c.status.as_ref())
                    .and_then(|s| s.cmd_jobs.iter().find(|e| e.node_name == "node-0001"))
                    .map(|e| e.job_id.clone());
                let mut status = json!({
                    "succeeded": 0, "running": 0, "pending": 100, "progress": "0/100", "phase": "Pending",
                    "conditions": [{"type": "DashboardSynced", "status": "True", "reason": "Polled",
                                    "message": "seen by the dashboard",
                                    "lastTransitionTime": jiff::Timestamp::now().round(jiff::Unit::Second).expect("round").to_string()}]
                });
                if let Some(id) = job_id {
                    status["cmdJobs"] =
                        json!([{"nodeName": "node-0001", "jobId": id, "phase": "Pending"}]);
                }
                let patch = json!({"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand", "status": status});
                if api
                    .patch_status(
                        "contested",
                        &PatchParams::apply("status-dashboard").force(),
                        &Patch::Apply(&patch),
                    )
                    .await
                    .is_ok()
                {
                    counts[SSA_WRITES].fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    // Plain updates: one replaying the stale snapshot (its resourceVersion long gone), one
    // reading, zeroing the counters and writing back (sometimes between the operator's
    // writes, sometimes refused).
    let updater = {
        let (api, stop, counts) = (api.clone(), stop.clone(), counts.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match api
                    .replace_status("contested", &PostParams::default(), &stale)
                    .await
                {
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        counts[STALE_REFUSED].fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        counts[STALE_ACCEPTED].fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {}
                }
                if let Ok(mut fresh) = api.get("contested").await {
                    if let Some(s) = fresh.status.as_mut() {
                        s.succeeded = 0;
                        s.progress = Some("0/100".into());
                        s.phase = CommandPhase::Pending;
                    }
                    match api
                        .replace_status("contested", &PostParams::default(), &fresh)
                        .await
                    {
                        Ok(_) => {
                            counts[RMW_WRITTEN].fetch_add(1, Ordering::SeqCst);
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            counts[RMW_CONFLICT].fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // The writers keep at it until every node's Job is final, a little beyond.
    let t = Instant::now();
    while jobs.lock().expect("ledger").ledger.finished_of(&owner) < 100 {
        assert!(
            t.elapsed() < FINISH,
            "the fan-out did not finish under the other writers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    dashboard.await.expect("dashboard");
    updater.await.expect("updater");
    let c: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    println!(
        "other writers: {} forced applies by status-dashboard, stale updates {} refused / {} accepted, \
         read-modify-write updates {} written / {} conflicts",
        c[SSA_WRITES], c[STALE_REFUSED], c[STALE_ACCEPTED], c[RMW_WRITTEN], c[RMW_CONFLICT]
    );
    assert_eq!(
        c[STALE_ACCEPTED], 0,
        "an update with a stale resourceVersion was accepted"
    );
    assert!(
        c[STALE_REFUSED] > 0 && c[SSA_WRITES] > 0,
        "the other writers did write"
    );

    // The operator re-derives its status from the cluster: complete and correct.
    let done = eventually(
        &api,
        "contested",
        Duration::from_secs(60),
        "a correct final status",
        |c| {
            c.status.as_ref().is_some_and(|s| {
                s.completion_time.is_some()
                    && s.succeeded == 100
                    && s.phase == CommandPhase::Succeeded
                    && s.progress.as_deref() == Some("100/100")
                    && s.cmd_jobs.iter().all(|e| e.phase == NodePhase::Succeeded)
            })
        },
    )
    .await;
    let elapsed = started.elapsed();
    let report = assert_fan_out_complete(&ns, &done, 100, 10, &jobs).await;
    let managers: BTreeSet<String> = done
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains("status-dashboard"), "{managers:?}");
    jobs_watch.abort();
    regressions_watch.abort();
    let (dropped, rolled_back) = {
        let r = regressions.lock().expect("ledger");
        (r.ledger.count_dropped, r.ledger.node_rolled_back)
    };
    assert!(
        dropped > 0,
        "the other writers did make the status wrong for a while"
    );
    println!(
        "RESULT conflicting writers: {} forced applies + {} stale updates (all refused) + {} \
         read-modify-write updates landed; the watch saw the succeeded count go backwards \
         {dropped} times and node-0001's result rolled back to Pending {rolled_back} times; final \
         status 100/100 Succeeded, counts right, {} Jobs, max {} in flight, duplicates 0; {}",
        c[SSA_WRITES],
        c[STALE_REFUSED],
        c[RMW_WRITTEN],
        report.jobs,
        report.max_in_flight,
        secs(elapsed)
    );
    drop(op);
}
