//! How an instance ends: its final entry (refused or failed, or succeeded), and the error
//! code and message a failed installer or remote-install Job maps to.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::MESSAGE_LIMIT;
use crate::api::agent_invocation::{InvocationPhase, InvocationResult, RetStatus};
use crate::controller::agent_invocation::codes::ErrorCode;
use crate::engine::outcome::{Observed, reason};
use crate::exec::remote::SSH_FAILED_EXIT_CODE;
use crate::exec::{START_FAILED_EXIT_CODE, TIMEOUT_EXIT_CODE};

fn cut(message: &str) -> String {
    crate::plan::clip(message, MESSAGE_LIMIT)
}

pub(super) fn refuse(
    mut e: InvocationResult,
    code: ErrorCode,
    message: String,
    now: Timestamp,
) -> InvocationResult {
    e.phase = InvocationPhase::Failed;
    e.ret_status = Some(RetStatus::Error);
    e.error_code = Some(code.code().into());
    e.reason = Some(code.reason().into());
    e.error_message = Some(cut(&message));
    e.start_time.get_or_insert(Time(now));
    e.completion_time = Some(Time(now));
    e
}

pub(super) fn succeed(
    mut e: InvocationResult,
    version_after: Option<String>,
    message: Option<String>,
    now: Timestamp,
) -> InvocationResult {
    e.phase = InvocationPhase::Succeeded;
    e.ret_status = Some(RetStatus::Successful);
    e.version_after = version_after;
    e.message = message.map(|m| cut(&m));
    e.start_time.get_or_insert(Time(now));
    e.completion_time = Some(Time(now));
    e
}

/// Maps a failed Job to an error code: the runner's exit codes say which step failed.
pub fn job_failure(observed: &Observed, remote: bool) -> (ErrorCode, String) {
    let detail = observed
        .message
        .clone()
        .or_else(|| observed.output.clone())
        .unwrap_or_default();
    let detail = detail.trim();
    let with = |s: String| {
        if detail.is_empty() {
            s
        } else {
            format!("{s}: {detail}")
        }
    };
    match (observed.exit_code, observed.reason.as_deref()) {
        // What the kubelet said first: the installer never ran, whatever the exit code.
        (_, Some(reason::IMAGE_NOT_AVAILABLE)) => (ErrorCode::ImageNotAvailable, detail.into()),
        (_, Some(reason::NODE_REJECTED)) => (ErrorCode::NodeRejected, detail.into()),
        (Some(TIMEOUT_EXIT_CODE), _) | (_, Some(reason::TIMEOUT)) => {
            (ErrorCode::InstallerTimeout, with("timed out".into()))
        }
        // The host key refused: nothing was sent to the host.
        (_, Some(reason::HOST_KEY_UNKNOWN)) if remote => (ErrorCode::HostKeyUnknown, detail.into()),
        (_, Some(reason::HOST_KEY_MISMATCH)) if remote => {
            (ErrorCode::HostKeyMismatch, detail.into())
        }
        // SSH failed before the script ran (the runner reports it as its own error).
        (Some(SSH_FAILED_EXIT_CODE), _) if remote => {
            (ErrorCode::SshFailed, with("SSH failed".into()))
        }
        // The runtime could not start the container (the runner's own start error is its
        // exit code 127, an installer failure like any other).
        (code, Some(reason::START_FAILED)) if code != Some(START_FAILED_EXIT_CODE) => {
            (ErrorCode::JobLost, detail.into())
        }
        // A script that failed says why in its last words, not in the runner's exit message.
        (Some(code), _) if remote => (
            ErrorCode::RemoteScriptFailed,
            last_words(observed, format!("remote script exited {code}")),
        ),
        (Some(code), _) => (
            ErrorCode::InstallerFailed,
            last_words(observed, format!("installer exited {code}")),
        ),
        (None, r) => (
            ErrorCode::JobLost,
            with(format!("the Job failed ({})", r.unwrap_or("no exit code"))),
        ),
    }
}

/// `what`, then the last line the script printed, or the runner's message when it printed
/// nothing.
fn last_words(observed: &Observed, what: String) -> String {
    let line = observed
        .output
        .as_deref()
        .and_then(|o| o.lines().rev().map(str::trim).find(|l| !l.is_empty()));
    match line.or(observed.message.as_deref().map(str::trim)) {
        Some(detail) if !detail.is_empty() => format!("{what}: {detail}"),
        _ => what,
    }
}
