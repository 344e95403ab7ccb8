//! Status size under the worst output: 100 nodes whose runner reports the largest
//! termination message the kubelet keeps (4096 bytes, multi-byte text included) fit in one
//! AsyncCommand status far below the API server's request limit, each output cut to its
//! tail on a character boundary and marked truncated.

mod support;

use std::time::Duration;

use kube::Api;
use nodeops::api::AsyncCommand;
use nodeops::api::async_command::NodePhase;
use nodeops::keys::sim;
use serde_json::json;
use support::{TestNamespace, apply, finished, manifest, wait_for};

/// The API server refuses requests over 3 MiB and etcd values over 1.5 MiB.
const ETCD_VALUE_LIMIT: usize = 1536 * 1024;

#[tokio::test]
async fn hundred_maximal_outputs_fit_and_are_marked_truncated() {
    let (ns, _op) = TestNamespace::with_operator("limits").await;
    // A report as nodeops-exec writes it, as large as a termination message can be: a long
    // output of multi-byte characters that the runner already cut.
    let mut report = json!({"exitCode": 0, "output": "", "truncated": true, "timedOut": false});
    let line = "état: ünïcödé ✓ — ";
    let mut output = String::new();
    while serde_json::to_string(&report).expect("json").len() < 4000 {
        output.push_str(line);
        report["output"] = json!(output);
    }
    let message = serde_json::to_string(&report).expect("json");
    assert!(message.len() <= 4096);
    let nodes: Vec<String> = (1..=100).map(|i| format!("node-{i:04}")).collect();
    let api: Api<AsyncCommand> = ns.api();
    apply(
        &api,
        manifest::<AsyncCommand>(
            "big",
            json!({"command": "cat /var/log/big", "nodeNames": nodes,
                   "podAnnotations": {sim::MESSAGE: message}}),
        ),
    )
    .await;
    let done = wait_for(
        &api,
        "big",
        Duration::from_secs(180),
        "every node final",
        finished,
    )
    .await;
    let size = serde_json::to_vec(&done).expect("json").len();
    println!("AsyncCommand with 100 maximal outputs: {size} bytes");
    assert!(size < ETCD_VALUE_LIMIT / 4, "{size} bytes");
    let status = done.status.expect("status");
    assert_eq!(status.cmd_jobs.len(), 100);
    for e in &status.cmd_jobs {
        assert_eq!(e.phase, NodePhase::Succeeded, "{e:?}");
        let out = e.output.as_deref().expect("output");
        assert!(out.len() <= 2048, "{} bytes", out.len());
        assert!(e.output_truncated, "the cut is marked");
        assert!(
            output.ends_with(out),
            "the tail is kept, cut on a character boundary"
        );
    }
}
