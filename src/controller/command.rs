//! The Command controller: reports whether a Command's script and parameters are usable
//! (its placeholders in status, Ready or Stalled with reason ParameterInvalid).

use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use thiserror::Error;
use tracing::{Instrument, info_span, warn};

use super::{Context, RETRY_AFTER};
use crate::api::{Command, CommandStatus};
use crate::conditions::{self, Desired, READY, STALLED};
use crate::engine::script;
use crate::plan::Note;

#[derive(Debug, Error)]
pub enum Error {
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
}

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

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let commands: Api<Command> = ctx.scoped();
    Controller::new(commands, watcher::Config::default())
        .trigger_backoff(super::WatchBackoff::default())
        .with_config(super::runtime_config(std::time::Duration::ZERO))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(cmd: Arc<Command>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(kind = "Command", namespace = cmd.namespace().unwrap_or_default(), object = cmd.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER)
}

async fn reconcile(cmd: Arc<Command>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", kind = "Command", namespace = %cmd.namespace().unwrap_or_default(), object = %cmd.name_any());
    crate::metrics::measure("Command", reconcile_inner(cmd, ctx))
        .instrument(span)
        .await
}

async fn reconcile_inner(cmd: Arc<Command>, ctx: Arc<Context>) -> Result<Action, Error> {
    let new = status(&cmd, Timestamp::now());
    if cmd.status.as_ref() != Some(&new) {
        let api: Api<Command> =
            Api::namespaced(ctx.client.clone(), &cmd.namespace().unwrap_or_default());
        super::apply_status(&api, &cmd.name_any(), &new)
            .await
            .map_err(Error::WriteStatus)?;
        // After the write: a failed write is retried, and its Event comes with the retry.
        for note in notes(cmd.status.as_ref(), &new) {
            ctx.event(cmd.as_ref(), note.warning, note.reason, note.message)
                .await;
        }
    }
    Ok(Action::await_change())
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
