//! The tables of the command kinds: AsyncCommand (a row per node), Invoker (its runs),
//! Command (its runs through AsyncCommands).

use std::fmt::Write;

use super::{preview, table};
use crate::api::{AsyncCommand, Command, Invoker};

/// The per-node table of an AsyncCommand, with a summary line.
pub fn async_command(obj: &AsyncCommand) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let Some(status) = &obj.status else {
        return format!("AsyncCommand {name}: no status yet\n");
    };
    let mut out = format!(
        "AsyncCommand {name}  task {}  phase {:?}  succeeded {}  failed {}  cancelled {}\n",
        status.task_id.as_deref().unwrap_or("-"),
        status.phase,
        status.progress.as_deref().unwrap_or("-"),
        status.failed,
        status.cancelled
    );
    out.push_str(&super::held(&status.conditions));
    let rows: Vec<Vec<String>> = status
        .cmd_jobs
        .iter()
        .map(|e| {
            vec![
                e.node_name.clone(),
                format!("{:?}", e.phase),
                e.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.reason.clone().unwrap_or_else(|| "-".into()),
                e.job_id.clone(),
                format!(
                    "{}{}",
                    if e.output_truncated {
                        "[truncated] "
                    } else {
                        ""
                    },
                    preview(e.output.as_deref().or(e.message.as_deref()))
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NODE", "PHASE", "EXIT", "REASON", "JOB ID", "OUTPUT"],
        &rows,
    ));
    out
}

/// A fleet: its summary, a row per batch, then every node's row from the batches (in
/// batch order), as [`async_command`] shows one object's.
pub fn fleet(obj: &AsyncCommand, batches: &[AsyncCommand]) -> String {
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            let s = b.status.clone().unwrap_or_default();
            vec![
                b.metadata.name.clone().unwrap_or_default(),
                b.spec.node_names.as_ref().map_or(0, Vec::len).to_string(),
                format!("{:?}", s.phase),
                s.progress.unwrap_or_else(|| "-".into()),
                s.failed.to_string(),
                s.cancelled.to_string(),
                s.running.to_string(),
            ]
        })
        .collect();
    let mut whole = obj.clone();
    if let Some(status) = whole.status.as_mut() {
        status.cmd_jobs = batches
            .iter()
            .filter_map(|b| b.status.as_ref())
            .flat_map(|s| s.cmd_jobs.iter().cloned())
            .collect();
    }
    let text = async_command(&whole);
    let (head, nodes) = text.split_at(text.find('\n').map_or(text.len(), |i| i + 1));
    let mut out = head.to_string();
    let _ = writeln!(out, "fleet of {} batches:", batches.len());
    out.push_str(&table(
        &[
            "BATCH",
            "NODES",
            "PHASE",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
            "RUNNING",
        ],
        &rows,
    ));
    out.push_str(nodes);
    out
}

/// The runs of an Invoker: each scheduled time, its AsyncCommand and how it went.
pub fn invoker(obj: &Invoker) -> String {
    let mut name = obj.metadata.name.clone().unwrap_or_default();
    if let Some(display) = &obj.spec.display_name {
        name = format!("{name} ({display})");
    }
    let Some(status) = &obj.status else {
        return format!("Invoker {name}: no status yet\n");
    };
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string()).unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "Invoker {name}  {:?}  last run {}  next run {}{}\n",
        obj.spec.schedule_settings.policy,
        time(status.last_invoke_time.as_ref()),
        time(status.next_invoke_time.as_ref()),
        if obj.spec.suspend {
            "  (suspended)"
        } else {
            ""
        }
    );
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::conditions::STALLED && c.status == "True")
    {
        let _ = writeln!(out, "stalled: {}: {}", c.reason, c.message);
    }
    let rows: Vec<Vec<String>> = status
        .recent_runs
        .iter()
        .map(|r| {
            vec![
                r.scheduled_time.0.to_string(),
                r.async_command.clone(),
                r.phase.clone().unwrap_or_else(|| "-".into()),
                r.succeeded.to_string(),
                r.failed.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SCHEDULED", "ASYNCCOMMAND", "PHASE", "SUCCEEDED", "FAILED"],
        &rows,
    ));
    out
}

/// A Command (a template: it runs only through AsyncCommands and Invokers): whether it is
/// usable, its parameters, and the AsyncCommands that ran it, newest first, with how each
/// went. `runs` are the namespace's AsyncCommands; those naming another Command are left out.
pub fn command(obj: &Command, runs: &[AsyncCommand]) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let ready = obj
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == crate::conditions::READY)
        .map(|c| format!("{} ({}: {})", c.status, c.reason, c.message))
        .unwrap_or_else(|| "no status yet".into());
    let params = obj
        .status
        .as_ref()
        .map(|s| s.parameters.join(", "))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "-".into());
    let mut out = format!(
        "Command {name}  {:?}  timeout {}s  ready {ready}\nparameters: {params}\n",
        obj.spec.interpreter, obj.spec.timeout_seconds
    );
    let mut mine: Vec<&AsyncCommand> = runs
        .iter()
        .filter(|r| r.spec.command_ref.as_deref() == Some(name.as_str()))
        .collect();
    mine.sort_by_key(|r| {
        std::cmp::Reverse((
            r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            r.metadata.name.clone(),
        ))
    });
    let rows: Vec<Vec<String>> = mine
        .iter()
        .map(|r| {
            let s = r.status.as_ref();
            vec![
                r.metadata.name.clone().unwrap_or_default(),
                r.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.map(|s| format!("{:?}", s.phase))
                    .unwrap_or_else(|| "-".into()),
                s.and_then(|s| s.progress.clone())
                    .unwrap_or_else(|| "-".into()),
                s.map(|s| s.failed.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ASYNCCOMMAND", "CREATED", "PHASE", "SUCCEEDED", "FAILED"],
        &rows,
    ));
    if let Some(latest) = mine.first() {
        out.push_str("\nlatest run, per node:\n");
        out.push_str(&async_command(latest));
    }
    out
}
