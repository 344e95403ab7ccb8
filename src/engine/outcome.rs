//! Reads a node run back from its Job and Pods: phase, exit code, output and a machine
//! reason, from the Job's conditions and the runner's report in the Pod's termination
//! message.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::MAIN_CONTAINER;
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
}

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
    pub output: Option<String>,
    pub truncated: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub start_time: Option<Time>,
    pub completion_time: Option<Time>,
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

/// The last terminated state of the main container among `pods` (the newest pod first).
fn last_termination(pods: &[&Pod]) -> Option<ContainerStateTerminated> {
    let mut pods: Vec<&&Pod> = pods.iter().collect();
    pods.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
    });
    pods.iter().find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        let main = statuses
            .iter()
            .find(|s| s.name == MAIN_CONTAINER)
            .or(statuses.first())?;
        main.state.as_ref()?.terminated.clone()
    })
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
    let (output, truncated) = match report.as_ref().and_then(|r| r.output.clone()) {
        Some(out) => bound(
            &out,
            output_limit,
            report.as_ref().is_some_and(|r| r.truncated),
        ),
        None => (None, false),
    };
    let mut observed = Observed {
        state: RunState::Active { pods: pods.len() },
        exit_code,
        output,
        truncated,
        reason: None,
        message: None,
        start_time,
        completion_time: None,
    };
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
        let (reason, message) =
            if job_reason == "DeadlineExceeded" || report.as_ref().is_some_and(|r| r.timed_out) {
                (
                    reason::TIMEOUT,
                    format!("the command did not finish in time: {job_message}")
                        .trim_end_matches(": ")
                        .to_string(),
                )
            } else if let Some(error) = report.as_ref().and_then(|r| r.error.clone()) {
                (reason::START_FAILED, error)
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
    }
    observed
}

/// The parts of a termination message nodeops uses. The runner writes a JSON `RunReport`;
/// anything else (an image that does not run `nodeops-exec`, a simulated kubelet) is
/// taken as plain output.
#[derive(Debug, Default)]
struct Report {
    exit_code: Option<i32>,
    output: Option<String>,
    truncated: bool,
    timed_out: bool,
    error: Option<String>,
}

fn parse_report(message: &str) -> Report {
    match serde_json::from_str::<RunReport>(message) {
        Ok(r) => Report {
            exit_code: Some(r.exit_code),
            output: Some(r.output),
            truncated: r.truncated,
            timed_out: r.timed_out,
            error: r.error,
        },
        Err(_) => Report {
            output: (!message.is_empty()).then(|| message.to_string()),
            ..Default::default()
        },
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
}
