//! Standard `metav1.Condition` handling in the kstatus convention (Ready, Reconciling,
//! Stalled, plus kind-specific types): `lastTransitionTime` changes only when the status
//! really changes, so a reconcile that learns nothing new writes nothing new.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types every kind uses.
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";

/// A condition to set: type, status, machine reason, human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

impl<'a> Desired<'a> {
    pub fn new(type_: &'a str, status: bool, reason: &'a str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Sets `desired` in `conditions`, keeping `lastTransitionTime` when the status is
/// unchanged. Returns whether the status transitioned (a new condition counts), which is
/// when an Event is worth emitting.
pub fn set(
    conditions: &mut Vec<Condition>,
    desired: Desired<'_>,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = status_str(desired.status);
    let observed_generation = generation;
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(c) => {
            let transitioned = c.status != status;
            if transitioned {
                c.last_transition_time = now.clone();
            }
            c.status = status.to_string();
            c.reason = desired.reason.to_string();
            c.message = desired.message;
            c.observed_generation = observed_generation;
            transitioned
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_.to_string(),
                status: status.to_string(),
                reason: desired.reason.to_string(),
                message: desired.message,
                observed_generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// Removes a condition type; kstatus wants Reconciling and Stalled absent when false.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Marks an object that cannot be acted on: Reconciling removed, Stalled and Ready=False
/// with `reason` and `message` (the kstatus shape every kind uses).
pub fn stall(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    remove(conditions, RECONCILING);
    set(
        conditions,
        Desired::new(STALLED, true, reason, message),
        generation,
        now,
    );
    set(
        conditions,
        Desired::new(READY, false, reason, message),
        generation,
        now,
    );
}

/// Stalled for a run that ended in failure (`Some((reason, message))`), absent otherwise.
/// kstatus (Flux, kpt, cli-utils) reads Stalled=True as Failed, a terminal state; a finished
/// failure with only Ready=False and Failed=True reads as InProgress for ever, and a Flux
/// Kustomization with `wait: true` would wait for its timeout.
pub fn stalled_if_failed(
    conditions: &mut Vec<Condition>,
    failure: Option<(&str, String)>,
    generation: Option<i64>,
    now: &Time,
) {
    match failure {
        Some((reason, message)) => {
            set(
                conditions,
                Desired::new(STALLED, true, reason, message),
                generation,
                now,
            );
        }
        None => {
            remove(conditions, STALLED);
        }
    }
}

/// Whether the condition is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + s).expect("time"))
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut cs = Vec::new();
        assert!(set(
            &mut cs,
            Desired::new(READY, false, "Running", "1/3"),
            Some(1),
            &t(0)
        ));
        assert!(!set(
            &mut cs,
            Desired::new(READY, false, "Running", "2/3"),
            Some(1),
            &t(5)
        ));
        assert_eq!(cs[0].last_transition_time, t(0));
        assert_eq!(cs[0].message, "2/3");
        assert!(set(
            &mut cs,
            Desired::new(READY, true, "Succeeded", "3/3"),
            Some(2),
            &t(9)
        ));
        assert_eq!(cs[0].last_transition_time, t(9));
        assert_eq!(cs[0].observed_generation, Some(2));
        assert!(is_true(&cs, READY));
        assert!(remove(&mut cs, READY));
        assert!(!remove(&mut cs, READY));
    }
}
