//! What every kind's decisions share, free of any client: the [`Decide`] trait (validate,
//! plan, stall), the [`Plan`] of typed changes it returns, the Events a plan asks for
//! ([`Note`]), why a spec cannot run ([`Invalid`]), and facts read off cached objects.
//! Plans import this and [`crate::conditions`]; only `controller` holds the client.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{AgentInvocation, AsyncCommand};
use crate::conditions::STALLED;

/// An Event worth emitting: something transitioned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    /// A Warning Event.
    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// Why a spec cannot run: the Stalled condition's machine reason and human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// `text` cut to at most `limit` bytes on a character boundary, ending in `...` when cut:
/// a message in status keeps its beginning, where the reason is.
pub fn clip(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    format!("{}...", clip_to(text, limit.saturating_sub(3)))
}

/// The first at most `limit` bytes of `text`, cut on a character boundary (no marker).
pub fn clip_to(text: &str, limit: usize) -> String {
    let mut end = limit.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Whether a Node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How long a Stalled object waits before it is looked at again: it is fixed by a spec
/// change (an event) or by the world (a Command or NodeAgent created, which is not one).
pub const STALLED_RECHECK: Duration = Duration::from_secs(30);

/// A kind's decisions, pure: whether its spec can run in the world its controller read,
/// what to change, and the status that records it. `controller::shell` does the I/O.
pub trait Decide {
    /// The custom resource.
    type Kind: Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static;
    /// Its status.
    type Status: Clone + PartialEq + Serialize + Send + Sync;
    /// Everything the decisions read, the time included.
    type World: Send + Sync;
    /// What validation establishes for the plan (a resolved template, target nodes).
    type Valid: Send;
    /// The kind's name, for spans, metrics and logs.
    const KIND: &'static str;

    fn status(obj: &Self::Kind) -> Option<&Self::Status>;
    fn conditions(status: &Self::Status) -> &[Condition];
    /// Whether the spec can run in this world, and if not why.
    fn validate(obj: &Self::Kind, world: &Self::World) -> Result<Self::Valid, Invalid>;
    /// What to change and the status that records it.
    fn plan(obj: &Self::Kind, world: &Self::World, valid: Self::Valid) -> Plan<Self::Status>;
    /// The status of an object that cannot run, Stalled with the reason and message.
    fn stalled(obj: &Self::Kind, world: &Self::World, invalid: &Invalid) -> Self::Status;
    /// The final outcomes a status holds, `(key, phase, reason)`; each is counted once.
    fn outcomes(_status: &Self::Status) -> Vec<(String, String, String)> {
        Vec::new()
    }

    /// Validate, then plan, or stall.
    fn decide(obj: &Self::Kind, world: &Self::World) -> Plan<Self::Status> {
        match Self::validate(obj, world) {
            Ok(valid) => Self::plan(obj, world, valid),
            Err(invalid) => Self::stall(obj, world, &invalid),
        }
    }

    /// The plan of an object that cannot run: its Stalled status, a Warning Event when it
    /// was not already Stalled for this reason, and a look again later.
    fn stall(obj: &Self::Kind, world: &Self::World, invalid: &Invalid) -> Plan<Self::Status> {
        let already = Self::status(obj).is_some_and(|s| {
            Self::conditions(s)
                .iter()
                .any(|c| c.type_ == STALLED && c.status == "True" && c.reason == invalid.reason)
        });
        let mut plan = Plan::status(Self::stalled(obj, world, invalid));
        if !already {
            plan.notes
                .push(Note::warning(invalid.reason, invalid.message.clone()));
        }
        plan.requeue = Some(STALLED_RECHECK);
        plan
    }
}

/// What one reconcile decided.
#[derive(Clone, Debug)]
pub struct Plan<S> {
    /// Made first, in order (consecutive creations together): the status records them, so
    /// a crash before the status write finds them by their names and adopts them.
    pub before: Vec<Change>,
    pub status: S,
    /// Made after the status that records why (a Job deleted first and a status write that
    /// then failed would read as a lost Job); a plan asks again until they are done.
    pub after: Vec<Change>,
    pub notes: Vec<Note>,
    /// When to look again without an event; none: on the next event.
    pub requeue: Option<Duration>,
}

impl<S> Plan<S> {
    /// A plan that only writes `status`.
    pub fn status(status: S) -> Self {
        Self {
            before: Vec::new(),
            status,
            after: Vec::new(),
            notes: Vec::new(),
            requeue: None,
        }
    }

    /// The children this plan creates.
    pub fn created(&self) -> impl Iterator<Item = &Child> {
        self.before.iter().filter_map(|c| match c {
            Change::Create(child) | Change::Apply(child) => Some(child),
            _ => None,
        })
    }

    /// The names of the objects of `kind` this plan deletes, before and after the status.
    pub fn deleted(&self, kind: ChildKind) -> Vec<String> {
        self.before
            .iter()
            .chain(&self.after)
            .filter_map(|c| match c {
                Change::Delete { kind: k, name, .. } if *k == kind => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A child object, typed.
#[derive(Clone, Debug)]
pub enum Child {
    Job(Box<Job>),
    DaemonSet(Box<DaemonSet>),
    AsyncCommand(Box<AsyncCommand>),
    AgentInvocation(Box<AgentInvocation>),
    /// Part of a large AgentUpgradeJob's plan.
    ConfigMap(Box<ConfigMap>),
}

impl Child {
    pub fn name(&self) -> String {
        match self {
            Child::Job(o) => o.name_any(),
            Child::DaemonSet(o) => o.name_any(),
            Child::AsyncCommand(o) => o.name_any(),
            Child::AgentInvocation(o) => o.name_any(),
            Child::ConfigMap(o) => o.name_any(),
        }
    }

    pub fn namespace(&self) -> Option<String> {
        match self {
            Child::Job(o) => o.namespace(),
            Child::DaemonSet(o) => o.namespace(),
            Child::AsyncCommand(o) => o.namespace(),
            Child::AgentInvocation(o) => o.namespace(),
            Child::ConfigMap(o) => o.namespace(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Child::Job(_) => "Job",
            Child::DaemonSet(_) => "DaemonSet",
            Child::AsyncCommand(_) => "AsyncCommand",
            Child::AgentInvocation(_) => "AgentInvocation",
            Child::ConfigMap(_) => "ConfigMap",
        }
    }
}

/// The kinds a plan deletes or patches by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    Job,
    DaemonSet,
    AsyncCommand,
    NodeAgent,
    ConfigMap,
    /// The reconciled object itself (an AsyncCommand past its TTL).
    Itself,
}

/// One change a plan asks for.
#[derive(Clone, Debug)]
pub enum Change {
    /// Create; an object of the same name is this one, created before a restart.
    Create(Child),
    /// Server-side apply of the whole child, forcing its fields: nodeops owns it.
    Apply(Child),
    /// Server-side apply of some fields of an object others own, under `manager`, so the
    /// owner of the rest (a GitOps tool) keeps it. `fields` is the body without apiVersion
    /// and kind.
    ApplyFields {
        kind: ChildKind,
        name: String,
        manager: &'static str,
        fields: serde_json::Value,
    },
    /// Delete in the background; one already gone is deleted.
    Delete {
        kind: ChildKind,
        namespace: String,
        name: String,
    },
    /// A JSON Patch (RFC 6902) of a namespaced child, `test` operations included: the API
    /// server refuses the whole patch when a test fails, so a decision taken on a stale
    /// read is never applied.
    PatchJson {
        kind: ChildKind,
        namespace: String,
        name: String,
        patch: serde_json::Value,
    },
    /// Set (`Some`) or remove (`None`) a label of a Node.
    LabelNode {
        node: String,
        key: String,
        value: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_the_beginning_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdefghij", 8), "abcde...");
        // "é" is two bytes: a cut inside it moves back to before it.
        assert_eq!(clip("abcdé fin", 8), "abcd...");
        assert!(clip(&"é".repeat(100), 64).len() <= 64);
    }
}
