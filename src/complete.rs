//! Completion of `nodeops get|logs` words, for `kubectl nodeops` (kubectl 1.26+ runs
//! `kubectl_complete-nodeops ARGS... PARTIAL` and reads cobra's format: one candidate a
//! line, then `:DIRECTIVE`). What a word can be is decided from the words before it
//! ([`want`], pure); objects and nodes come from the cluster.

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api::{AgentInvocation, AgentUpgradeJob, AsyncCommand, Command, Invoker, NodeAgent};

/// cobra's ShellCompDirectiveNoFileComp: no file names as a fallback.
const NO_FILES: u8 = 4;

/// The kinds `get` reads, with their short names.
pub const GET_KINDS: [&str; 12] = [
    "asynccommand",
    "acmd",
    "command",
    "ncmd",
    "invoker",
    "ivk",
    "nodeagent",
    "nagent",
    "agentinvocation",
    "ainv",
    "agentupgradejob",
    "aupj",
];
/// The kinds `logs` reads.
pub const LOGS_KINDS: [&str; 4] = ["asynccommand", "acmd", "agentinvocation", "ainv"];

/// What the word being completed can be.
#[derive(Debug, PartialEq, Eq)]
pub enum Want {
    Subcommand,
    Kind {
        logs: bool,
    },
    Name {
        kind: String,
        namespace: Option<String>,
    },
    /// `logs --node`: the object's nodes (instances).
    Node {
        kind: String,
        name: String,
        namespace: Option<String>,
    },
    Flag {
        logs: bool,
    },
    Nothing,
}

/// What the last of `words` (the partial word) can be, from the words before it.
pub fn want(words: &[String]) -> Want {
    let Some((partial, before)) = words.split_last() else {
        return Want::Subcommand;
    };
    let Some((sub, rest)) = before.split_first() else {
        return Want::Subcommand;
    };
    let logs = match sub.as_str() {
        "get" => false,
        "logs" => true,
        _ => return Want::Nothing,
    };
    let mut positional = Vec::new();
    let mut namespace = None;
    let mut iter = rest.iter().peekable();
    while let Some(w) = iter.next() {
        match w.as_str() {
            "-n" | "--namespace" => namespace = iter.next().cloned(),
            "--node" => {
                iter.next();
            }
            _ if w.starts_with("--namespace=") => {
                namespace = w.strip_prefix("--namespace=").map(str::to_string)
            }
            _ if w.starts_with('-') => {}
            _ => positional.push(w.clone()),
        }
    }
    match before.last().map(String::as_str) {
        Some("-n" | "--namespace") => return Want::Nothing,
        Some("--node") if logs => {
            return match positional.as_slice() {
                [kind, name, ..] => Want::Node {
                    kind: kind.clone(),
                    name: name.clone(),
                    namespace,
                },
                _ => Want::Nothing,
            };
        }
        _ => {}
    }
    if partial.starts_with('-') {
        return Want::Flag { logs };
    }
    match positional.as_slice() {
        [] => Want::Kind { logs },
        [kind] => Want::Name {
            kind: kind.clone(),
            namespace,
        },
        _ => Want::Nothing,
    }
}

/// The candidates for `words`' last word, in cobra's format. Without a client (no
/// kubeconfig) objects and nodes are not offered; the rest is.
pub async fn complete(client: Option<&Client>, words: &[String]) -> String {
    let partial = words.last().map(String::as_str).unwrap_or("");
    let candidates: Vec<String> = match want(words) {
        Want::Subcommand => vec!["get".into(), "logs".into()],
        Want::Kind { logs } => {
            let kinds: &[&str] = if logs { &LOGS_KINDS } else { &GET_KINDS };
            kinds.iter().map(|k| k.to_string()).collect()
        }
        Want::Flag { logs } => {
            let flags: &[&str] = if logs {
                &["--node", "--namespace"]
            } else {
                &["--namespace", "--watch"]
            };
            flags.iter().map(|f| f.to_string()).collect()
        }
        Want::Name { kind, namespace } => match client {
            Some(client) => {
                let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
                names(client, &kind, &ns).await
            }
            None => vec![],
        },
        Want::Node {
            kind,
            name,
            namespace,
        } => match client {
            Some(client) => {
                let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
                nodes(client, &kind, &name, &ns).await
            }
            None => vec![],
        },
        Want::Nothing => vec![],
    };
    render(&candidates, partial)
}

/// `candidates` starting with `partial`, one a line, then the directive.
pub fn render(candidates: &[String], partial: &str) -> String {
    let mut out: String = candidates
        .iter()
        .filter(|c| c.starts_with(partial))
        .map(|c| format!("{c}\n"))
        .collect();
    out.push_str(&format!(":{NO_FILES}\n"));
    out
}

async fn names(client: &Client, kind: &str, ns: &str) -> Vec<String> {
    let c = client.clone();
    match kind {
        "asynccommand" | "acmd" => names_in(Api::<AsyncCommand>::namespaced(c, ns)).await,
        "command" | "ncmd" => names_in(Api::<Command>::namespaced(c, ns)).await,
        "invoker" | "ivk" => names_in(Api::<Invoker>::namespaced(c, ns)).await,
        "nodeagent" | "nagent" => names_in(Api::<NodeAgent>::all(c)).await,
        "agentinvocation" | "ainv" => names_in(Api::<AgentInvocation>::namespaced(c, ns)).await,
        "agentupgradejob" | "aupj" => names_in(Api::<AgentUpgradeJob>::namespaced(c, ns)).await,
        _ => vec![],
    }
}

/// The names of the objects `api` lists; completion offers what it can read, and an
/// error offers nothing rather than noise.
async fn names_in<K>(api: Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.list_metadata(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|o| o.name_any()).collect())
        .unwrap_or_default()
}

async fn nodes(client: &Client, kind: &str, name: &str, ns: &str) -> Vec<String> {
    match kind {
        "asynccommand" | "acmd" => Api::<AsyncCommand>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|o| o.status)
            .map(|s| s.cmd_jobs.into_iter().map(|e| e.node_name).collect())
            .unwrap_or_default(),
        "agentinvocation" | "ainv" => Api::<AgentInvocation>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|o| o.status)
            .map(|s| s.invocations.into_iter().map(|e| e.instance_id).collect())
            .unwrap_or_default(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(words: &[&str]) -> Want {
        want(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn each_word_is_completed_from_the_words_before_it() {
        assert_eq!(w(&[""]), Want::Subcommand);
        assert_eq!(w(&["get", ""]), Want::Kind { logs: false });
        assert_eq!(w(&["logs", "a"]), Want::Kind { logs: true });
        assert_eq!(
            w(&["get", "acmd", "-n", "ops", ""]),
            Want::Name {
                kind: "acmd".into(),
                namespace: Some("ops".into())
            }
        );
        assert_eq!(
            w(&["logs", "acmd", "disk", "--namespace=ops", "--node", "n"]),
            Want::Node {
                kind: "acmd".into(),
                name: "disk".into(),
                namespace: Some("ops".into())
            }
        );
        assert_eq!(w(&["get", "acmd", "-"]), Want::Flag { logs: false });
        assert_eq!(w(&["get", "acmd", "-n", ""]), Want::Nothing, "a namespace");
        assert_eq!(w(&["get", "acmd", "disk", ""]), Want::Nothing);
        assert_eq!(w(&["run", ""]), Want::Nothing);
    }

    #[test]
    fn candidates_are_filtered_and_end_with_the_directive() {
        let c: Vec<String> = LOGS_KINDS.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            render(&c, "a"),
            "asynccommand\nacmd\nagentinvocation\nainv\n:4\n"
        );
        assert_eq!(render(&c, "x"), ":4\n");
    }
}
