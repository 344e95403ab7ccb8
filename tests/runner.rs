//! `nodeops-exec` as the Pod runs it, on this machine, without entering namespaces: the
//! exit code is its own, and the report lands in the termination-message file.

use std::process::Command;

use nodeops::exec::RunReport;

fn run(args: &[&str]) -> (i32, RunReport) {
    // A directory per call: tests run in parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("nodeops-exec-test-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let log = dir.join("termination-log");
    let status = Command::new(env!("CARGO_BIN_EXE_nodeops-exec"))
        .arg("--termination-log")
        .arg(&log)
        .args(args)
        .env("NODEOPS_PARAM_target", "$(reboot)")
        .env("UNRELATED_SECRET", "s3cret")
        .output()
        .expect("run nodeops-exec");
    let report: RunReport =
        serde_json::from_str(&std::fs::read_to_string(&log).expect("report written"))
            .expect("json");
    let _ = std::fs::remove_dir_all(&dir);
    (status.status.code().expect("exit code"), report)
}

#[test]
fn success_failure_and_timeout_reach_the_termination_message() {
    let (code, report) = run(&["--", "echo", "hello"]);
    assert_eq!(
        (code, report.exit_code, report.output.as_str()),
        (0, 0, "hello\n")
    );

    let (code, report) = run(&["--", "sh", "-c", "echo boom >&2; exit 7"]);
    assert_eq!(
        (code, report.exit_code, report.output.as_str()),
        (7, 7, "boom\n")
    );

    let (code, report) = run(&["--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(code, 124);
    assert!(report.timed_out);
}

#[test]
fn only_parameters_reach_the_command_environment() {
    let (_, report) = run(&[
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"$NODEOPS_PARAM_target\" \"$UNRELATED_SECRET\"",
    ]);
    assert_eq!(
        report.output, "$(reboot)|",
        "parameters pass verbatim; the runner's own environment does not"
    );
}

#[test]
fn a_program_that_does_not_exist_is_reported() {
    let (code, report) = run(&["--", "/no/such/program"]);
    assert_eq!(code, 127);
    assert!(report.error.expect("error").contains("/no/such/program"));
}

#[test]
fn a_staged_payload_is_the_command_s_directory_and_is_removed_after() {
    let dir = std::env::temp_dir().join(format!("nodeops-exec-stage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let payload = dir.join("payload");
    std::fs::create_dir_all(&payload).expect("payload dir");
    std::fs::write(payload.join("install.sh"), "echo installing $1\n").expect("write");
    let staged = dir.join("staging/job-1");
    // Entering the namespaces of this very process: the host is where the test runs.
    let me = std::process::id().to_string();
    let (code, report) = run(&[
        "--host",
        "--host-process",
        &me,
        "--stage-payload",
        staged.to_str().expect("utf-8"),
        "--payload",
        payload.to_str().expect("utf-8"),
        "--",
        "sh",
        "-c",
        "sh \"$NODEOPS_PAYLOAD/install.sh\" 1.0.0 && pwd",
    ]);
    assert_eq!(code, 0, "{report:?}");
    assert_eq!(
        report.output,
        format!("installing 1.0.0\n{}\n", staged.display())
    );
    assert!(!staged.exists(), "the staged payload is removed");
    assert!(payload.join("install.sh").exists(), "the source is kept");

    // No payload in the image: a start failure that names the directory.
    let (code, report) = run(&[
        "--host",
        "--host-process",
        &me,
        "--stage-payload",
        staged.to_str().expect("utf-8"),
        "--payload",
        dir.join("missing").to_str().expect("utf-8"),
        "--",
        "true",
    ]);
    assert_eq!(code, nodeops::exec::START_FAILED_EXIT_CODE);
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no payload directory")),
        "{report:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
