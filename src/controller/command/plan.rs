//! The Command's decisions: whether its script and parameters are usable (its
//! placeholders in status, Ready or Stalled with reason ParameterInvalid).

use crate::api::{Command, CommandStatus};
use crate::conditions::{self, Desired, READY, STALLED};
use crate::engine::script;
use crate::plan::{Decide, Invalid, Note, Plan};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The status a Command should have: a plain function of the Command and the time.
pub fn status(cmd: &Command, now: Timestamp) -> CommandStatus {
    let generation = cmd.metadata.generation;
    let prev = cmd.status.clone().unwrap_or_default();
    let mut status = CommandStatus {
        observed_generation: generation,
        parameters: vec![],
        conditions: prev.conditions,
    };
    let now = Time(now);
    let spec = &cmd.spec;
    let verdict = if spec.enable_parameters {
        match script::placeholders(&spec.content) {
            Ok(names) => {
                status.parameters = names.iter().cloned().collect();
                let unused: Vec<&String> = spec
                    .default_parameters
                    .iter()
                    .flat_map(|d| d.keys())
                    .filter(|k| !names.contains(*k))
                    .collect();
                if unused.is_empty() {
                    Ok(format!("{} parameter(s)", names.len()))
                } else {
                    let list = unused
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    Err(format!("defaultParameters not used in the script: {list}"))
                }
            }
            Err(e) => Err(e.to_string()),
        }
    } else {
        Ok("no parameters".to_string())
    };
    match verdict {
        Ok(message) => {
            conditions::remove(&mut status.conditions, STALLED);
            conditions::set(
                &mut status.conditions,
                Desired::new(READY, true, "Valid", message),
                generation,
                &now,
            );
        }
        Err(message) => {
            conditions::set(
                &mut status.conditions,
                Desired::new(STALLED, true, "ParameterInvalid", message.clone()),
                generation,
                &now,
            );
            conditions::set(
                &mut status.conditions,
                Desired::new(READY, false, "ParameterInvalid", message),
                generation,
                &now,
            );
        }
    }
    status
}

/// The Event a status change deserves: one when the Command's readiness (its Ready
/// condition's status and reason) changes, never on a reconcile that changes nothing.
pub fn notes(prev: Option<&CommandStatus>, new: &CommandStatus) -> Vec<Note> {
    let ready = |s: Option<&CommandStatus>| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (Some(was), Some((status, reason, message))) = (ready(prev), ready(Some(new))) else {
        // The first status: only a Command that cannot be used is worth an Event.
        return match ready(Some(new)) {
            Some((status, _, message)) if status != "True" => vec![Note {
                warning: true,
                reason: "ParameterInvalid",
                message,
            }],
            _ => vec![],
        };
    };
    if (was.0.as_str(), was.1.as_str()) == (status.as_str(), reason.as_str()) {
        return vec![];
    }
    let warning = status != "True";
    vec![Note {
        warning,
        reason: if warning { "ParameterInvalid" } else { "Valid" },
        message,
    }]
}

/// The Command's decisions: nothing to create; its status is its plan.
pub struct Decisions;

impl Decide for Decisions {
    type Kind = Command;
    type Status = CommandStatus;
    type World = Timestamp;
    type Valid = ();
    const KIND: &'static str = "Command";

    fn status(obj: &Command) -> Option<&CommandStatus> {
        obj.status.as_ref()
    }
    fn conditions(status: &CommandStatus) -> &[Condition] {
        &status.conditions
    }
    // A Command that cannot be used is Ready=False and Stalled with reason
    // ParameterInvalid, with the placeholders it has: status() decides both together.
    fn validate(_: &Command, _: &Timestamp) -> Result<(), Invalid> {
        Ok(())
    }
    fn plan(cmd: &Command, now: &Timestamp, (): ()) -> Plan<CommandStatus> {
        let new = status(cmd, *now);
        let mut plan = Plan::status(new.clone());
        plan.notes = notes(cmd.status.as_ref(), &new);
        plan
    }
    fn stalled(cmd: &Command, now: &Timestamp, _: &Invalid) -> CommandStatus {
        status(cmd, *now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(spec: serde_json::Value) -> Command {
        Command::new("c", serde_json::from_value(spec).expect("spec"))
    }

    #[test]
    fn reports_placeholders_and_unused_defaults() {
        let now = Timestamp::from_second(1_800_000_000).expect("now");
        let ok = status(
            &cmd(
                json!({"content": "df {{path}} {{ top }}", "enableParameters": true, "defaultParameters": {"path": "/"}}),
            ),
            now,
        );
        assert_eq!(ok.parameters, ["path", "top"]);
        assert!(conditions::is_true(&ok.conditions, READY));
        let bad = status(
            &cmd(
                json!({"content": "df {{path}}", "enableParameters": true, "defaultParameters": {"paht": "/"}}),
            ),
            now,
        );
        assert!(conditions::is_true(&bad.conditions, STALLED));
        assert!(bad.conditions.iter().any(|c| c.message.contains("paht")));
        let broken = status(
            &cmd(json!({"content": "df {{9x}}", "enableParameters": true})),
            now,
        );
        assert!(conditions::is_true(&broken.conditions, STALLED));
    }

    #[test]
    fn events_only_when_readiness_changes() {
        let t0 = Timestamp::from_second(1_800_000_000).expect("now");
        let t1 = Timestamp::from_second(1_800_000_060).expect("later");
        let good = cmd(json!({"content": "df {{path}}", "enableParameters": true}));
        let first = status(&good, t0);
        assert!(notes(None, &first).is_empty(), "a valid new Command: quiet");
        let mut seen = good.clone();
        seen.status = Some(first.clone());
        let same = status(&seen, t1);
        assert!(notes(Some(&first), &same).is_empty(), "nothing changed");

        let mut broken = cmd(json!({"content": "df {{9x}}", "enableParameters": true}));
        broken.status = Some(first.clone());
        let bad = status(&broken, t1);
        let n = notes(Some(&first), &bad);
        assert_eq!(
            n.iter().map(|n| (n.warning, n.reason)).collect::<Vec<_>>(),
            [(true, "ParameterInvalid")]
        );
        assert_eq!(notes(None, &bad).len(), 1, "invalid from the start");
        let mut again = broken.clone();
        again.status = Some(bad.clone());
        assert!(notes(Some(&bad), &status(&again, t1)).is_empty());

        let mut fixed = good.clone();
        fixed.status = Some(bad.clone());
        let n = notes(Some(&bad), &status(&fixed, t1));
        assert_eq!(
            n.iter().map(|n| (n.warning, n.reason)).collect::<Vec<_>>(),
            [(false, "Valid")]
        );
    }
}
