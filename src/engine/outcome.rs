//! Reads a node run back from its Job and Pods: phase, exit code, output and a machine
//! reason, from the Job's conditions, the runner's report in the Pod's termination
//! message, and what the kubelet says about the Pod and its containers (an image it
//! cannot get, a Pod it rejected, a container it could not start, an OOM kill).

use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::MAIN_CONTAINER;
use super::seen::{ContainerStatus, Job, Pod, PodStatus};
use crate::exec::RunReport;

/// Machine reasons of node outcomes.
pub mod reason {
    pub const NODE_NOT_FOUND: &str = "NodeNotFound";
    pub const NODE_NOT_READY: &str = "NodeNotReady";
    pub const ADMISSION_REFUSED: &str = "AdmissionRefused";
    pub const TIMEOUT: &str = "Timeout";
    pub const EXIT_CODE: &str = "ExitCode";
    pub const START_FAILED: &str = "StartFailed";
    pub const MAX_ERRORS_REACHED: &str = "MaxErrorsReached";
    pub const JOB_LOST: &str = "JobLost";
    pub const COMPLETED: &str = "Completed";
    /// The kubelet cannot get an image of the Pod (pull error, back-off, `Never` policy
    /// without the image, invalid name).
    pub const IMAGE_NOT_AVAILABLE: &str = "ImageNotAvailable";
    /// The main container was killed by the kernel's OOM killer.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// The command was killed by a signal (the runner's report says which).
    pub const SIGNALED: &str = "Signaled";
    /// The kubelet refused the Pod at its own admission (OutOfpods, OutOfcpu, NodeAffinity,
    /// NodeShutdown, Evicted, ...) before the command ran.
    pub const NODE_REJECTED: &str = "NodeRejected";
    /// A remote install's host key could not be verified (no known_hosts for the host).
    pub const HOST_KEY_UNKNOWN: &str = "HostKeyUnknown";
    /// A remote install's host presented a key other than the one known_hosts pins.
    pub const HOST_KEY_MISMATCH: &str = "HostKeyMismatch";
}

/// Waiting reasons of a container whose image the kubelet cannot get. It retries pulls
/// for ever, so without this the run would wait for the Job's deadline.
const IMAGE_WAITING_REASONS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "RegistryUnavailable",
];
/// Waiting reasons of a container the runtime could not create or start.
const START_WAITING_REASONS: [&str; 3] = [
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
];
/// Terminated reasons of a container whose process never started.
const START_TERMINATED_REASONS: [&str; 2] = ["StartError", "ContainerCannotRun"];

/// Where a node run stands according to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// The Job exists and has not finished.
    Active {
        pods: usize,
    },
    Succeeded,
    Failed,
}

/// What the cluster says about one node run.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub state: RunState,
    pub exit_code: Option<i32>,
    /// The output, or its end when it is too long to keep whole (`truncated`).
    pub output: Option<String>,
    pub truncated: bool,
    /// The output's beginning, when it is too long to keep whole.
    pub output_head: Option<String>,
    /// Bytes between `output_head` and `output` that are not kept.
    pub dropped_bytes: u64,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub start_time: Option<Time>,
    pub completion_time: Option<Time>,
    /// What the runner said beside the outcome (a host key accepted unverified).
    pub note: Option<String>,
    /// The Job has not finished (no Complete or Failed condition). With `state: Failed`
    /// the Pods showed the run cannot succeed: the Job must be deleted, or it keeps a pod
    /// slot on the node until its deadline.
    pub job_active: bool,
}

fn condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.last_transition_time.as_ref())?
}

fn job_condition_reason(job: &Job, type_: &str) -> Option<(String, String)> {
    let c = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")?;
    Some((
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

/// `pods`, the newest first.
fn newest_first<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    let mut pods = pods.to_vec();
    pods.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
    });
    pods
}

fn main_status(status: &PodStatus) -> Option<&ContainerStatus> {
    let statuses = status.container_statuses.as_ref()?;
    statuses
        .iter()
        .find(|s| s.name == MAIN_CONTAINER)
        .or(statuses.first())
}

/// The last terminated state of the main container among `pods` (the newest pod first).
fn last_termination(pods: &[&Pod]) -> Option<ContainerStateTerminated> {
    newest_first(pods).iter().find_map(|p| {
        let main = main_status(p.status.as_ref()?)?;
        main.state.as_ref()?.terminated.clone()
    })
}

/// Whether the main container never started: no status, waiting, or terminated without
/// a start (the kubelet marks containers of a Pod it gave up on `ContainerStatusUnknown`
/// without one).
fn main_never_ran(status: &PodStatus) -> bool {
    match main_status(status).and_then(|c| c.state.as_ref()) {
        None => true,
        Some(s) => {
            s.running.is_none() && s.terminated.as_ref().is_none_or(|t| t.started_at.is_none())
        }
    }
}

/// What the kubelet says makes the run fail whatever the Job does next: (reason, message).
/// Pods are bound with `spec.nodeName`, so the scheduler never checked that the node can
/// take them, and the kubelet's verdict is the only one. Pods are looked at the newest
/// first, down to the newest one whose command ran (its report speaks for the run); the
/// Job controller may already have replaced the Pod that showed the failure.
fn pod_failure(pods: &[&Pod]) -> Option<(&'static str, String)> {
    for pod in newest_first(pods) {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if status.phase.as_deref() == Some("Failed")
            && let Some(why) = status.reason.as_deref().filter(|r| !r.is_empty())
            // A Pod's own deadline is not a rejection (nodeops sets none; the Job's is read
            // from the Job).
            && why != "DeadlineExceeded"
            && main_never_ran(status)
        {
            let message = status.message.as_deref().unwrap_or_default();
            return Some((
                reason::NODE_REJECTED,
                format!("the kubelet rejected the Pod ({why}): {message}")
                    .trim_end_matches(": ")
                    .to_string(),
            ));
        }
        let found = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .find_map(container_failure);
        if found.is_some() {
            return found;
        }
        if !main_never_ran(status) {
            return None;
        }
    }
    None
}

fn container_failure(c: &ContainerStatus) -> Option<(&'static str, String)> {
    let state = c.state.as_ref()?;
    if let Some(w) = &state.waiting {
        let why = w.reason.as_deref().unwrap_or_default();
        let detail = w.message.as_deref().unwrap_or_default();
        if IMAGE_WAITING_REASONS.contains(&why) {
            return Some((
                reason::IMAGE_NOT_AVAILABLE,
                format!(
                    "image {:?} of container {} is not available ({why}): {detail}",
                    c.image, c.name
                )
                .trim_end_matches(": ")
                .to_string(),
            ));
        }
        if START_WAITING_REASONS.contains(&why) {
            return Some(start_failed(&c.name, why, detail));
        }
    }
    if let Some(t) = &state.terminated {
        let why = t.reason.as_deref().unwrap_or_default();
        if START_TERMINATED_REASONS.contains(&why) {
            let detail = t.message.as_deref().unwrap_or_default();
            return Some(start_failed(&c.name, why, detail));
        }
    }
    None
}

/// A container the runtime could not create or start.
fn start_failed(container: &str, why: &str, detail: &str) -> (&'static str, String) {
    (
        reason::START_FAILED,
        format!("container {container} could not be started ({why}): {detail}")
            .trim_end_matches(": ")
            .to_string(),
    )
}

/// `SIGKILL (9)`, or the bare number of a signal this platform does not name.
fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("{} ({signal})", s.as_str()),
        Err(_) => signal.to_string(),
    }
}

/// Reads a node run. `output_limit` bounds the output kept (its tail).
pub fn observe(job: &Job, pods: &[&Pod], output_limit: usize) -> Observed {
    let start_time = job
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .or_else(|| job.metadata.creation_timestamp.clone());
    let succeeded = condition(job, "Complete").is_some();
    let failed = condition(job, "Failed").is_some();
    let terminated = last_termination(pods);
    let report = terminated
        .as_ref()
        .and_then(|t| t.message.as_deref())
        .map(parse_report);
    let exit_code = report
        .as_ref()
        .and_then(|r| r.exit_code)
        .or(terminated.as_ref().map(|t| t.exit_code));
    let ends = match &report {
        Some(r) if r.output.is_some() => ends(r, output_limit),
        _ => Ends::default(),
    };
    let mut observed = Observed {
        state: RunState::Active { pods: pods.len() },
        exit_code,
        output: ends.output,
        truncated: ends.truncated,
        output_head: ends.head,
        dropped_bytes: ends.dropped,
        reason: None,
        message: None,
        start_time,
        completion_time: None,
        note: report.as_ref().and_then(|r| r.note.clone()),
        job_active: !succeeded && !failed,
    };
    let pod_failure = pod_failure(pods);
    let oom_killed = terminated
        .as_ref()
        .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    if succeeded {
        observed.state = RunState::Succeeded;
        observed.reason = Some(reason::COMPLETED.into());
        observed.completion_time = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.clone())
            .or_else(|| condition(job, "Complete").cloned());
    } else if failed {
        observed.state = RunState::Failed;
        observed.completion_time = condition(job, "Failed").cloned();
        let (job_reason, job_message) = job_condition_reason(job, "Failed").unwrap_or_default();
        // The most specific evidence first: what the kubelet saw explains a deadline (an
        // image never pulled is not a slow command), and an OOM kill explains the
        // runner's exit 137.
        let (reason, message) = if let Some((reason, message)) = pod_failure {
            (reason, message)
        } else if report.as_ref().is_some_and(|r| r.timed_out) {
            (reason::TIMEOUT, timeout_message(&job_message))
        } else if oom_killed {
            (reason::OOM_KILLED, oom_message(exit_code))
        } else if job_reason == "DeadlineExceeded" {
            (reason::TIMEOUT, timeout_message(&job_message))
        } else if let Some(error) = report.as_ref().and_then(|r| r.error.clone()) {
            // The runner's own reason where it names one (a host key refused).
            match report.as_ref().and_then(|r| r.reason.as_deref()) {
                Some(reason::HOST_KEY_UNKNOWN) => (reason::HOST_KEY_UNKNOWN, error),
                Some(reason::HOST_KEY_MISMATCH) => (reason::HOST_KEY_MISMATCH, error),
                _ => (reason::START_FAILED, error),
            }
        } else if let Some(signal) = report.as_ref().and_then(|r| r.signal) {
            (
                reason::SIGNALED,
                format!("the command was killed by signal {}", signal_name(signal)),
            )
        } else if let Some(code) = exit_code.filter(|c| *c != 0) {
            (
                reason::EXIT_CODE,
                format!("the command exited with code {code}"),
            )
        } else {
            (
                reason::EXIT_CODE,
                format!("the Job failed: {job_reason} {job_message}")
                    .trim()
                    .to_string(),
            )
        };
        observed.reason = Some(reason.into());
        observed.message = Some(message);
    } else if let Some((reason, message)) = pod_failure {
        // Final while the Job is still active: the kubelet would retry the pull (or the
        // Job would replace the Pod) until the Job's deadline, and then it would read as a
        // Timeout. The caller deletes the Job (`job_active`).
        observed.state = RunState::Failed;
        observed.reason = Some(reason.into());
        observed.message = Some(message);
    }
    observed
}

fn timeout_message(job_message: &str) -> String {
    format!("the command did not finish in time: {job_message}")
        .trim_end_matches(": ")
        .to_string()
}

fn oom_message(exit_code: Option<i32>) -> String {
    let code = exit_code
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    format!("the container ran out of memory and was killed by the kernel (OOMKilled{code})")
}

/// The parts of a termination message nodeops uses. The runner writes a JSON `RunReport`;
/// anything else (an image that does not run `nodeops-exec`, a simulated kubelet) is
/// taken as plain output.
#[derive(Debug, Default)]
struct Report {
    exit_code: Option<i32>,
    output: Option<String>,
    truncated: bool,
    head: Option<String>,
    dropped_bytes: u64,
    timed_out: bool,
    error: Option<String>,
    /// The runner's machine reason for `error`.
    reason: Option<String>,
    note: Option<String>,
    /// The signal that killed the command.
    signal: Option<i32>,
}

fn parse_report(message: &str) -> Report {
    match serde_json::from_str::<RunReport>(message) {
        Ok(r) => Report {
            exit_code: Some(r.exit_code),
            output: Some(r.output),
            truncated: r.truncated,
            head: r.head,
            dropped_bytes: r.dropped_bytes,
            timed_out: r.timed_out,
            error: r.error,
            reason: r.reason,
            note: r.note,
            signal: r.signal,
        },
        Err(_) => Report {
            output: (!message.is_empty()).then(|| message.to_string()),
            ..Default::default()
        },
    }
}

/// Bytes of an output's beginning kept in status when the output is too long to keep whole.
pub const HEAD_LIMIT: usize = 512;

/// Both ends of a report's output as status keeps them.
#[derive(Debug, Default, PartialEq)]
struct Ends {
    head: Option<String>,
    output: Option<String>,
    truncated: bool,
    dropped: u64,
}

/// The report's output within status' bounds: at most [`HEAD_LIMIT`] bytes of its
/// beginning and `limit` bytes of its end, with the bytes between them counted. A runner
/// older than the head (or a report that fits) gives no head; what status cuts from the
/// middle of a whole output becomes a head, the dropped bytes and the end.
fn ends(r: &Report, limit: usize) -> Ends {
    let text = r.output.as_deref().unwrap_or_default();
    // Where the beginning comes from, and how long the whole output was.
    let (head_source, total) = match &r.head {
        Some(head) => (
            head.as_str(),
            (head.len() + text.len()) as u64 + r.dropped_bytes,
        ),
        None if !r.truncated && text.len() > HEAD_LIMIT + limit => (text, text.len() as u64),
        None => {
            let (output, truncated) = bound(text, limit, r.truncated);
            return Ends {
                head: None,
                output,
                truncated,
                dropped: 0,
            };
        }
    };
    let head = crate::plan::clip_to(head_source, HEAD_LIMIT);
    let tail = bound(text, limit, true).0.unwrap_or_default();
    Ends {
        dropped: total - (head.len() + tail.len()) as u64,
        head: Some(head),
        output: Some(tail),
        truncated: true,
    }
}

/// Keeps the last `limit` bytes of `text` (on a character boundary).
pub fn bound(text: &str, limit: usize, already_truncated: bool) -> (Option<String>, bool) {
    if text.len() <= limit {
        return (Some(text.to_string()), already_truncated);
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    (Some(text[start..].to_string()), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"startTime": "2026-01-01T00:00:01Z", "conditions": conditions}
        }))
        .expect("job")
    }

    fn pod(exit_code: i32, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:01Z"},
            "status": {"containerStatuses": [{
                "name": "run", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "message": message}}
            }]}
        }))
        .expect("pod")
    }

    fn cond(type_: &str, reason: &str) -> serde_json::Value {
        json!([{"type": type_, "status": "True", "reason": reason, "message": "m", "lastTransitionTime": "2026-01-01T00:00:09Z"}])
    }

    #[test]
    fn active_job_is_active() {
        let o = observe(&job(json!([])), &[], 100);
        assert_eq!(o.state, RunState::Active { pods: 0 });
        assert!(o.start_time.is_some());
    }

    #[test]
    fn success_reads_the_runner_report() {
        let p = pod(
            0,
            r#"{"exitCode":0,"output":"total 0\n","truncated":false,"timedOut":false}"#,
        );
        let o = observe(&job(cond("Complete", "")), &[&p], 100);
        assert_eq!(o.state, RunState::Succeeded);
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.output.as_deref(), Some("total 0\n"));
        assert!(o.completion_time.is_some());
    }

    #[test]
    fn failure_with_exit_code() {
        let p = pod(3, r#"{"exitCode":3,"output":"no such file\n"}"#);
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(o.state, RunState::Failed);
        assert_eq!(
            (o.exit_code, o.reason.as_deref()),
            (Some(3), Some(reason::EXIT_CODE))
        );
        assert_eq!(o.message.as_deref(), Some("the command exited with code 3"));
    }

    #[test]
    fn timeouts_from_the_runner_and_from_the_job_deadline() {
        let p = pod(124, r#"{"exitCode":124,"output":"","timedOut":true}"#);
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::TIMEOUT));
        let o = observe(&job(cond("Failed", "DeadlineExceeded")), &[], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::TIMEOUT));
        assert_eq!(o.exit_code, None);
    }

    #[test]
    fn start_failure_is_reported() {
        let p = pod(
            127,
            r#"{"exitCode":127,"output":"","error":"unknown user \"bob\""}"#,
        );
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::START_FAILED));
        assert_eq!(o.message.as_deref(), Some("unknown user \"bob\""));
    }

    #[test]
    fn plain_termination_message_is_output() {
        let p = pod(42, "disk full");
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(
            (o.exit_code, o.output.as_deref()),
            (Some(42), Some("disk full"))
        );
    }

    /// A Pod as a kubelet 1.35 writes it: `status` verbatim, created at second `created`.
    fn pod_status(created: u32, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("p{created}"),
                "creationTimestamp": format!("2026-01-01T00:00:{created:02}Z")},
            "status": status
        }))
        .expect("pod")
    }

    fn active_job() -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"startTime": "2026-01-01T00:00:01Z", "active": 1}
        }))
        .expect("job")
    }

    /// Container mode, the user's image absent with pull policy Never: the init container
    /// ran, the main container waits for ever.
    fn never_pull() -> Pod {
        pod_status(
            1,
            json!({
                "phase": "Pending",
                "initContainerStatuses": [{
                    "name": "install-runner", "image": "ghcr.io/nodeops/exec:1", "imageID": "",
                    "ready": true, "restartCount": 0, "started": false,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                        "startedAt": "2026-01-01T00:00:02Z", "finishedAt": "2026-01-01T00:00:02Z"}}
                }],
                "containerStatuses": [{
                    "name": "run", "image": "example.com/tools:missing", "imageID": "",
                    "ready": false, "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "ErrImageNeverPull",
                        "message": "Container image \"example.com/tools:missing\" is not present with pull policy of Never"}}
                }]
            }),
        )
    }

    #[test]
    fn an_image_that_cannot_be_pulled_fails_the_active_run_at_once() {
        let p = never_pull();
        let o = observe(&active_job(), &[&p], 100);
        assert_eq!(o.state, RunState::Failed);
        assert!(o.job_active, "the caller must delete the Job");
        assert_eq!(o.reason.as_deref(), Some(reason::IMAGE_NOT_AVAILABLE));
        let message = o.message.expect("message");
        for part in [
            "run",
            "example.com/tools:missing",
            "ErrImageNeverPull",
            "pull policy of Never",
        ] {
            assert!(message.contains(part), "{part} missing in {message}");
        }
        // The runner's image, in the init container, backing off.
        let p = pod_status(
            1,
            json!({
                "phase": "Pending",
                "initContainerStatuses": [{
                    "name": "install-runner", "image": "ghcr.io/nodeops/exec:nope", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff",
                        "message": "Back-off pulling image \"ghcr.io/nodeops/exec:nope\": ErrImagePull: not found"}}
                }],
                "containerStatuses": [{
                    "name": "run", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}
                }]
            }),
        );
        let o = observe(&active_job(), &[&p], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::IMAGE_NOT_AVAILABLE));
        assert!(o.message.expect("message").contains("install-runner"));
        // Still pulling is not a failure.
        let p = pod_status(
            1,
            json!({"phase": "Pending", "containerStatuses": [{
                "name": "run", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        let o = observe(&active_job(), &[&p], 100);
        assert_eq!((o.state, o.reason), (RunState::Active { pods: 1 }, None));
    }

    #[test]
    fn an_image_never_available_is_not_a_timeout() {
        let p = never_pull();
        let o = observe(&job(cond("Failed", "DeadlineExceeded")), &[&p], 100);
        assert_eq!(o.state, RunState::Failed);
        assert!(!o.job_active);
        assert_eq!(o.reason.as_deref(), Some(reason::IMAGE_NOT_AVAILABLE));
    }

    #[test]
    fn oom_kill_wins_over_the_runners_exit_137_and_keeps_the_output() {
        let p = pod_status(
            1,
            json!({"phase": "Failed", "containerStatuses": [{
                "name": "run", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                    "startedAt": "2026-01-01T00:00:02Z", "finishedAt": "2026-01-01T00:00:05Z",
                    "message": "{\"exitCode\":137,\"output\":\"allocating\\n\",\"signal\":9}"}}}]}),
        );
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::OOM_KILLED));
        assert_eq!(o.exit_code, Some(137));
        assert_eq!(o.output.as_deref(), Some("allocating\n"));
        assert!(o.message.expect("message").contains("OOMKilled"));
        // An OOM kill ends the container: it does not end an active Job early (its
        // backoffLimit may run the command again).
        let o = observe(&active_job(), &[&p], 100);
        assert_eq!(o.state, RunState::Active { pods: 1 });
    }

    #[test]
    fn a_signal_in_the_report_is_named() {
        let p = pod(137, r#"{"exitCode":137,"output":"","signal":9}"#);
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::SIGNALED));
        assert_eq!(o.exit_code, Some(137));
        assert_eq!(
            o.message.as_deref(),
            Some("the command was killed by signal SIGKILL (9)")
        );
        let p = pod(128 + 99, r#"{"exitCode":227,"output":"","signal":99}"#);
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(
            o.message.as_deref(),
            Some("the command was killed by signal 99")
        );
        // The runner's timeout kills with signals too: it stays a Timeout.
        let p = pod(
            124,
            r#"{"exitCode":124,"output":"","timedOut":true,"signal":15}"#,
        );
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::TIMEOUT));
    }

    fn rejected(created: u32) -> Pod {
        pod_status(
            created,
            json!({
                "phase": "Failed", "reason": "OutOfpods",
                "message": "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 16, capacity: 16"
            }),
        )
    }

    #[test]
    fn a_pod_the_kubelet_rejected_fails_the_run() {
        let p = rejected(1);
        let o = observe(&active_job(), &[&p], 100);
        assert_eq!(o.state, RunState::Failed);
        assert!(o.job_active);
        assert_eq!(o.reason.as_deref(), Some(reason::NODE_REJECTED));
        let message = o.message.expect("message");
        assert!(
            message.contains("OutOfpods") && message.contains("capacity: 16"),
            "{message}"
        );
        // The Job controller already made a replacement that waits: still rejected.
        let next = pod_status(2, json!({"phase": "Pending"}));
        let o = observe(&active_job(), &[&next, &p], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::NODE_REJECTED));
        // Rejected with the containers marked (NodeAffinity, main container waiting).
        let p = pod_status(
            1,
            json!({"phase": "Failed", "reason": "NodeAffinity",
                "message": "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector",
                "containerStatuses": [{"name": "run", "image": "busybox", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        let o = observe(&job(cond("Failed", "BackoffLimitExceeded")), &[&p], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::NODE_REJECTED));
        assert!(o.message.expect("message").contains("NodeAffinity"));
    }

    #[test]
    fn a_pod_evicted_after_its_command_ran_is_not_a_rejection() {
        let p = pod_status(
            1,
            json!({"phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory.",
                "containerStatuses": [{"name": "run", "image": "busybox", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "Error",
                        "startedAt": "2026-01-01T00:00:02Z", "finishedAt": "2026-01-01T00:00:09Z"}}}]}),
        );
        let o = observe(&active_job(), &[&p], 100);
        assert_eq!(o.state, RunState::Active { pods: 1 });
        // A newer attempt whose command ran speaks for the run, not an older rejection.
        let ran = pod_status(
            2,
            json!({"phase": "Failed", "containerStatuses": [{"name": "run", "image": "busybox",
                "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {
                    "exitCode": 3, "startedAt": "2026-01-01T00:00:03Z",
                    "finishedAt": "2026-01-01T00:00:04Z", "message": "{\"exitCode\":3,\"output\":\"\"}"}}}]}),
        );
        let o = observe(
            &job(cond("Failed", "BackoffLimitExceeded")),
            &[&rejected(1), &ran],
            100,
        );
        assert_eq!(o.reason.as_deref(), Some(reason::EXIT_CODE));
    }

    #[test]
    fn a_container_the_runtime_cannot_start_is_a_start_failure() {
        let p = pod_status(
            1,
            json!({"phase": "Pending", "containerStatuses": [{"name": "run", "image": "busybox",
                "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {
                    "reason": "CreateContainerConfigError",
                    "message": "container has runAsNonRoot and image will run as root (pod: \"p_ops(u)\", container: run)"}}}]}),
        );
        let o = observe(&active_job(), &[&p], 100);
        assert_eq!(
            (o.state, o.reason.as_deref()),
            (RunState::Failed, Some(reason::START_FAILED))
        );
        assert!(o.message.expect("message").contains("runAsNonRoot"));
        // containerd could not exec the runner: terminated StartError, started at the epoch.
        let p = pod_status(
            1,
            json!({"phase": "Failed", "containerStatuses": [{"name": "run", "image": "busybox",
                "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {
                    "exitCode": 128, "reason": "StartError",
                    "message": "failed to create containerd task: failed to create shim task: OCI runtime create failed: exec: \"/nodeops/nodeops-exec\": permission denied",
                    "startedAt": "1970-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:02Z"}}}]}),
        );
        let o = observe(&active_job(), &[&p], 100);
        assert_eq!(
            (o.state, o.reason.as_deref()),
            (RunState::Failed, Some(reason::START_FAILED))
        );
        assert!(o.message.expect("message").contains("permission denied"));
    }

    #[test]
    fn output_is_bounded_with_a_marker() {
        let long = "é".repeat(100);
        let p = pod(
            0,
            &serde_json::to_string(&json!({"exitCode": 0, "output": long})).expect("json"),
        );
        let o = observe(&job(cond("Complete", "")), &[&p], 9);
        assert!(o.truncated);
        assert!(o.output.expect("output").len() <= 9);
        assert_eq!(bound("abc", 3, false), (Some("abc".into()), false));
        assert_eq!(bound("abc", 3, true), (Some("abc".into()), true));
    }

    #[test]
    fn status_keeps_both_ends_of_the_output_and_counts_the_rest() {
        let sum = |o: &Observed| {
            o.output_head.as_ref().map_or(0, String::len) as u64
                + o.dropped_bytes
                + o.output.as_ref().map_or(0, String::len) as u64
        };
        // The runner's head and end, each longer than status keeps.
        let report = RunReport {
            exit_code: 0,
            head: Some("h".repeat(1000)),
            output: "t".repeat(3000),
            dropped_bytes: 7,
            truncated: true,
            ..Default::default()
        };
        let p = pod(0, &serde_json::to_string(&report).expect("json"));
        let o = observe(&job(json!([])), &[&p], 100);
        assert_eq!(o.output_head.as_deref().map(str::len), Some(HEAD_LIMIT));
        assert_eq!(o.output.as_deref().map(str::len), Some(100));
        assert!(o.truncated);
        assert_eq!(sum(&o), 1000 + 7 + 3000, "nothing unaccounted for");

        // A whole output (no head from the runner) too long for status: split.
        let whole = format!("{}{}", "a".repeat(600), "z".repeat(600));
        let p = pod(
            0,
            &serde_json::to_string(&RunReport {
                output: whole.clone(),
                ..Default::default()
            })
            .expect("json"),
        );
        let o = observe(&job(json!([])), &[&p], 100);
        assert!(
            o.output_head
                .as_deref()
                .is_some_and(|h| h.len() == HEAD_LIMIT && h.starts_with('a'))
        );
        assert!(
            o.output
                .as_deref()
                .is_some_and(|t| t.len() == 100 && t.ends_with('z'))
        );
        assert_eq!(sum(&o), whole.len() as u64);

        // What fits is kept whole; a runner without heads keeps its end only.
        let p = pod(0, r#"{"exitCode":0,"output":"short\n"}"#);
        let o = observe(&job(json!([])), &[&p], 100);
        assert_eq!(
            (o.output_head, o.output.as_deref(), o.truncated),
            (None, Some("short\n"), false)
        );
        let p = pod(
            0,
            &format!(
                r#"{{"exitCode":0,"output":"{}","truncated":true}}"#,
                "x".repeat(150)
            ),
        );
        let o = observe(&job(json!([])), &[&p], 100);
        assert_eq!(
            (o.output_head, o.output.map(|t| t.len()), o.truncated),
            (None, Some(100), true)
        );
    }
}
