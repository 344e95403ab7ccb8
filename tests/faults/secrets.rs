//! d. Secrets never reach a status, an Event or the log.

use super::*;

/// `.status` of every object of a kind in the namespace, as JSON.
pub(crate) async fn statuses<K>(api: &Api<K>) -> Vec<(String, String)>
where
    K: Resource + Clone + DeserializeOwned + Debug + serde::Serialize,
    K::DynamicType: Default,
{
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|o| {
            let v = serde_json::to_value(o).expect("json");
            (
                format!("{}/{}", K::kind(&Default::default()), o.name_any()),
                v["status"].to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn secrets_never_reach_status_events_or_logs() {
    let _cluster = required_fault_cluster!();
    let ns = TestNamespace::new("fault-secrets").await;
    install_crds(&ns.client).await;
    // The most a troubleshooter would turn on: every crate at debug, as JSON (the chart's
    // format, with the reconcile's span fields).
    let op = Operator::start(&ns.name, &["--log-format", "json", "--log-filter", "debug"]);
    let suffix = ns.name.rsplit('-').next().expect("suffix").to_string();
    let password = format!("pw-{suffix}-correct-horse-battery-staple");
    let token = format!("tok-{suffix}-9f2c41d07ab3e6");

    // A remote install: the password in a Secret, the host set first.
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "legacy-creds"}, "stringData": {"password": password}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret");
    let commands: Api<Command> = ns.api();
    apply(
        &commands,
        manifest::<Command>(
            "remote-install",
            json!({"content": "curl -fsS https://repo.example.com/telescope-{{version}}.sh | sh", "enableParameters": true}),
        ),
    )
    .await;
    let agent = Agent::create(
        &ns,
        json!({"mode": "DaemonSet", "image": "registry.example.com/telescope", "basicVersion": "3.2.1",
               "remoteInstaller": {"commandRef": "remote-install"}}),
    )
    .await;
    let set = invoke(
        &ns,
        "set-host",
        json!({"invocationType": "SetRemoteInstallHost", "invocationTarget": agent.name, "nodeNames": ["node-0050"]}),
    )
    .await;
    assert!(ok(&results(&set)["node-0050"]));
    let hosts = json!([
        {"instanceName": "legacy-db-01", "remoteIp": "192.0.2.10", "userName": "root", "credentialsSecretRef": {"name": "legacy-creds"}},
    ]);
    let remote = invoke(
        &ns,
        "remote",
        json!({"invocationType": "RemoteInstall", "invocationTarget": agent.name, "remoteInstallMeta": hosts}),
    )
    .await;
    assert!(
        ok(&results(&remote)["legacy-db-01"]),
        "{:?}",
        results(&remote)
    );

    // A Command whose parameter carries a token: one run that partly fails (a NodeFailed
    // Event, per-node messages), and one refused for a parameter it does not know (a
    // Stalled condition and Event that name the parameter).
    apply(
        &commands,
        manifest::<Command>(
            "rotate",
            json!({"content": "rotate-credentials --token {{token}}", "enableParameters": true}),
        ),
    )
    .await;
    let acmds: Api<AsyncCommand> = ns.api();
    apply(
        &acmds,
        manifest::<AsyncCommand>(
            "rotate",
            json!({"commandRef": "rotate", "parameters": {"token": token},
                   "nodeNames": ["node-0011", "node-0012", "node-0013"],
                   "podAnnotations": {format!("{}node-0012", sim::EXIT_CODE_NODE_PREFIX): "3"}}),
        ),
    )
    .await;
    apply(
        &acmds,
        manifest::<AsyncCommand>(
            "rotate-unknown",
            json!({"commandRef": "rotate", "parameters": {"token": token, "tokenCopy": token},
                   "nodeNames": ["node-0014"]}),
        ),
    )
    .await;
    let rotated = eventually(&acmds, "rotate", FINISH, "the rotation final", finished).await;
    let s = rotated.status.expect("status");
    assert_eq!((s.succeeded, s.failed), (2, 1), "{s:?}");
    let refused = eventually(
        &acmds,
        "rotate-unknown",
        FINISH,
        "Stalled",
        |c: &AsyncCommand| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True")
            })
        },
    )
    .await;
    let stalled = refused
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(stalled.reason, "ParameterInvalid");
    assert!(stalled.message.contains("tokenCopy"), "{}", stalled.message);
    // The token did go where it belongs: the node's environment.
    let job = ns
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .into_iter()
        .find(|j| j.annotations().get(NODE_ANNOTATION).map(String::as_str) == Some("node-0011"))
        .expect("a Job on node-0011");
    assert!(
        serde_json::to_string(&job.spec)
            .expect("json")
            .contains(&token),
        "the token reaches the run as a parameter"
    );
    // Events are written after the status: wait for the failure's.
    let events: Api<CoreEvent> = ns.api();
    let t = Instant::now();
    loop {
        let list = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items;
        if list
            .iter()
            .any(|e| e.reason.as_deref() == Some("ParameterInvalid"))
            && list
                .iter()
                .any(|e| e.reason.as_deref() == Some("NodeFailed"))
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "Events: {list:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Scan: every nodeops status in the namespace, the NodeAgent whole, every Event, the
    // operator's whole log.
    let mut texts: Vec<(String, String)> = Vec::new();
    texts.extend(statuses(&acmds).await);
    texts.extend(statuses(&commands).await);
    texts.extend(statuses(&ns.api::<Invoker>()).await);
    texts.extend(statuses(&ns.api::<AgentInvocation>()).await);
    texts.extend(statuses(&ns.api::<AgentUpgradeJob>()).await);
    let invocations = ns
        .api::<AgentInvocation>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    texts.push((
        "AgentInvocation objects".into(),
        serde_json::to_string(&invocations).expect("json"),
    ));
    let a = agent.api().get(&agent.name).await.expect("agent");
    texts.push((
        format!("NodeAgent/{}", agent.name),
        serde_json::to_string(&a).expect("json"),
    ));
    let all_events = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    let event_count = all_events.len();
    texts.push((
        "Events".into(),
        serde_json::to_string(&all_events).expect("json"),
    ));
    let log = op.log();
    assert!(log.contains("caches ready"), "the log is the operator's");
    texts.push(("operator log".into(), log.clone()));
    let scanned: usize = texts.iter().map(|(_, t)| t.len()).sum();
    for (what, text) in &texts {
        assert!(!text.contains(&password), "the password leaked into {what}");
        assert!(!text.contains(&token), "the token leaked into {what}");
    }
    println!(
        "RESULT secrets: {} statuses and objects, {event_count} Events and {} operator log lines \
         (debug, JSON; {} bytes scanned in all) hold neither the Secret's password nor the \
         parameter token",
        texts.len() - 2,
        log.lines().count(),
        scanned
    );
    drop(op);
}
