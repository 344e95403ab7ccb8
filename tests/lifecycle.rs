//! The operator process: a shutdown signal ends it cleanly, also while it is working.

mod support;

use std::time::Duration;

use kube::Api;
use nodeops::api::AsyncCommand;
use nodeops::keys::sim;
use serde_json::json;
use support::{TestNamespace, apply, manifest, wait_for};

#[tokio::test]
async fn sigterm_stops_the_operator_cleanly() {
    let (ns, mut op) = TestNamespace::with_operator("lifecycle").await;
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "busy",
            json!({"command": "uptime", "nodeNames": ["node-0001", "node-0002"],
                   "podAnnotations": {sim::OUTCOME: "running"}}),
        ),
    )
    .await;
    wait_for(
        &api,
        "busy",
        Duration::from_secs(60),
        "nodes running",
        |c: &AsyncCommand| c.status.as_ref().is_some_and(|s| s.running == 2),
    )
    .await;
    let status = op
        .terminate(Duration::from_secs(25))
        .expect("the operator exits after SIGTERM");
    assert!(status.success(), "clean exit, got {status:?}");
    let log = op.log();
    assert!(
        log.contains("nodeops stopped"),
        "the shutdown is logged:\n{log}"
    );
}
