//! The per-agent state machine: one step of one agent, given its Update and Rollback
//! children as they stand.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::ChildView;
use crate::api::agent_invocation::{InvocationPhase, InvocationResult};
use crate::api::agent_upgrade_job::{AgentUpgrade, AgentUpgradeState as S};

fn describe(r: &InvocationResult) -> String {
    let reason = r.reason.as_deref().unwrap_or("Failed");
    let code = r.error_code.as_deref().unwrap_or("-");
    match r.error_message.as_deref() {
        Some(m) => format!("{reason} ({code}): {m}"),
        None => format!("{reason} ({code})"),
    }
}

/// One step of one agent's state machine, given its children.
pub fn step(
    a: &AgentUpgrade,
    upgrade: Option<&ChildView>,
    rollback: Option<&ChildView>,
    now: Timestamp,
) -> AgentUpgrade {
    let mut next = a.clone();
    match a.status {
        // A child that exists was created by us before a crash: the agent is running.
        S::Pending if upgrade.is_some() => {
            next.status = S::Running;
            // The child's own times, so a plan stepped again from its record each
            // reconcile (a large job's) reads the same.
            let started = upgrade
                .and_then(|c| c.result.as_ref())
                .and_then(|r| r.start_time.clone());
            next.start_time = started.or(next.start_time).or(Some(Time(now)));
            return step(&next, upgrade, rollback, now);
        }
        S::Running => {
            let Some(child) = upgrade else {
                // Running is recorded only after the child was created: it was deleted.
                next.status = S::Failed;
                next.completion_time = next.start_time.clone();
                next.error = Some(
                    "InvocationDeleted: the node's AgentInvocation was deleted before it finished"
                        .into(),
                );
                return next;
            };
            let Some(r) = child.result.as_ref().filter(|_| child.is_final()) else {
                return next;
            };
            next.completion_time = r.completion_time.clone().or(Some(Time(now)));
            if r.phase == InvocationPhase::Succeeded {
                next.status = S::Success;
                next.old_version = r.version_before.clone().or(next.old_version);
                next.new_version = r.version_after.clone();
                next.error = None;
            } else {
                next.status = S::Failed;
                next.new_version = r.version_after.clone().or(r.version_before.clone());
                next.error = Some(describe(r));
            }
        }
        S::Failed => {
            if let Some(r) = rollback
                .filter(|c| c.is_final())
                .and_then(|c| c.result.as_ref())
            {
                if r.phase == InvocationPhase::Succeeded {
                    next.status = S::RolledBack;
                    next.new_version = r.version_after.clone();
                } else if !next.error.as_deref().unwrap_or("").contains("; rollback ") {
                    next.error = Some(format!(
                        "{}; rollback failed: {}",
                        next.error.unwrap_or_default(),
                        describe(r)
                    ));
                }
            }
        }
        S::Pending | S::Success | S::Current | S::Skipped | S::RolledBack => {}
    }
    next
}
