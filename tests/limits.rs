//! Status size under the worst output: 100 nodes whose runner reports the largest
//! termination message the kubelet keeps (4096 bytes, multi-byte text included) fit in one
//! AsyncCommand status far below the API server's request limit, each output cut to its
//! tail on a character boundary and marked truncated. Output that JSON must escape
//! (quotes, backslashes, every control character) and 4-byte UTF-8 comes back byte for
//! byte: the report the real runner writes for it, through the Pod and the operator, into
//! status.

mod support;

use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use nodeops::api::AsyncCommand;
use nodeops::api::async_command::NodePhase;
use nodeops::keys::sim;
use serde_json::json;
use support::{TestNamespace, apply, finished, manifest, wait_for};

use nodeops::exec::{RunReport, TERMINATION_MESSAGE_LIMIT};

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
    let nodes = support::node_names(1..=100);
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

/// One cycle of output a naive encoder gets wrong: quotes, backslashes, every C0 control
/// character, 4-byte UTF-8 and a byte-order mark. (DEL, the C1 controls, U+FFFE and the
/// line separators U+2028/U+2029 cannot pass kwok, which reads its stages as YAML; the
/// real-node test `container_mode_reports_real_output_exactly` runs them through a real
/// kubelet.)
fn hostile_cycle() -> String {
    let mut s = String::from("say \"hi\" 'there' \\\\server\\share \\u0041 \\\" ");
    s.extend((0u8..0x20).map(char::from));
    s.push_str(" 𝄞😀🀄𐍈 \u{feff} {\"k\": [1]}\n");
    s
}

/// The report the real runner (`nodeops-exec`, run here as the Pod runs it) writes for a
/// command that printed `output`, as the raw termination message.
fn runner_report(output: &str) -> String {
    let dir = std::env::temp_dir().join(format!("nodeops-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let (out, log) = (dir.join("output"), dir.join("termination-log"));
    std::fs::write(&out, output).expect("write output");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_nodeops-exec"))
        .arg("--termination-log")
        .arg(&log)
        .args(["--", "cat"])
        .arg(&out)
        .output()
        .expect("run nodeops-exec");
    assert!(status.status.success(), "{status:?}");
    let message = std::fs::read_to_string(&log).expect("report written");
    let _ = std::fs::remove_dir_all(&dir);
    message
}

#[tokio::test]
async fn hostile_outputs_at_the_maximum_size_come_back_byte_for_byte() {
    let (ns, _op) = TestNamespace::with_operator("limits-hostile").await;
    let cycle = hostile_cycle();
    let output = cycle.repeat(256 * 1024 / cycle.len());
    let message = runner_report(&output);
    // The runner filled the termination message (escapes cost up to 6 bytes each).
    assert!(
        message.len() <= TERMINATION_MESSAGE_LIMIT && message.len() > TERMINATION_MESSAGE_LIMIT - 6,
        "{} bytes",
        message.len()
    );
    let report: RunReport = serde_json::from_str(&message).expect("the runner's report");
    assert!(report.truncated);

    let nodes = support::node_names(1..=100);
    let api: Api<AsyncCommand> = ns.api();
    // A Pod annotation holds the hostile text too: it reaches the Jobs the operator applies.
    let obj: AsyncCommand = serde_json::from_value(manifest::<AsyncCommand>(
        "hostile",
        json!({"command": "cat /var/log/hostile", "nodeNames": nodes,
               "podAnnotations": {sim::MESSAGE: message, "example.com/hostile": cycle}}),
    ))
    .expect("an AsyncCommand");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");
    let done = wait_for(
        &api,
        "hostile",
        Duration::from_secs(180),
        "every node final",
        finished,
    )
    .await;
    let size = serde_json::to_vec(&done).expect("json").len();
    println!("AsyncCommand with 100 hostile maximal outputs: {size} bytes");
    assert!(size < ETCD_VALUE_LIMIT / 4, "{size} bytes");
    let status = done.status.expect("status");
    assert_eq!(status.cmd_jobs.len(), 100);
    type Class = (&'static str, fn(char) -> bool);
    let classes: [Class; 4] = [
        ("quote", |c| c == '"'),
        ("backslash", |c| c == '\\'),
        ("control", |c| c.is_control() && c != '\n'),
        ("4-byte UTF-8", |c| c.len_utf8() == 4),
    ];
    for e in &status.cmd_jobs {
        assert_eq!(e.phase, NodePhase::Succeeded, "{e:?}");
        let head = e.output_head.as_deref().expect("the output's beginning");
        let tail = e.output.as_deref().expect("the output's end");
        assert!(e.output_truncated, "the cut is marked");
        // Exactly what was printed: a prefix, a suffix, and the bytes between counted.
        assert!(
            output.starts_with(head),
            "head changed on the way: {head:?}"
        );
        assert!(output.ends_with(tail), "tail changed on the way: {tail:?}");
        assert_eq!(
            head.len() as u64 + e.output_bytes_dropped.unwrap_or(0) as u64 + tail.len() as u64,
            output.len() as u64,
            "{}: every byte is shown or counted",
            e.node_name
        );
        assert_eq!(tail, report.output, "status keeps all the runner kept");
        for (class, is) in &classes {
            assert!(head.chars().any(is), "no {class} in the head");
            assert!(tail.chars().any(is), "no {class} in the tail");
        }
    }
}
