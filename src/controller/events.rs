//! Events, as kube-runtime's `Recorder` publishes them (events.k8s.io/v1, named
//! `<object>.<nanoseconds in hex>`, the same reporting controller and instance), without
//! its cache. The Recorder keeps every Event it sent for 6 minutes, to send a repeat as a
//! series, and walks that cache under one lock on every publish. nodeops sends an Event
//! only on a transition, never the same one twice, so the cache only cost: at 5000 nodes,
//! 10,000 one-node objects keep about 30 Events a second coming, some 10,000 cached.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

/// Who reports the Events.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// The reporting controller: `nodeops`.
    pub controller: String,
    /// This process (its Pod's name), else the controller.
    pub instance: String,
}

/// Publishes Events about objects.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
}

impl Publisher {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Creates the Event `reason` with `note` about `regarding`, at `now`.
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let event = event(&self.reporter, regarding, warning, reason, note, now);
        Api::<Event>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// The Event `reason` about `regarding` at `now`, in its namespace.
pub fn event(
    reporter: &Reporter,
    regarding: ObjectReference,
    warning: bool,
    reason: &str,
    note: String,
    now: Timestamp,
) -> Event {
    let object = regarding
        .name
        .clone()
        .unwrap_or_else(|| reporter.controller.clone());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{object}.{:x}", now.as_nanosecond())),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        action: Some("Reconcile".into()),
        reason: Some(reason.into()),
        note: Some(note),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_the_time_and_the_reporter() {
        let reporter = Reporter {
            controller: "nodeops".into(),
            instance: "nodeops-0".into(),
        };
        let regarding = ObjectReference {
            kind: Some("AsyncCommand".into()),
            name: Some("one".into()),
            namespace: Some("ns".into()),
            uid: Some("u".into()),
            ..Default::default()
        };
        let now = Timestamp::from_nanosecond(0x1234_5678_9abc).expect("time");
        let e = event(
            &reporter,
            regarding.clone(),
            true,
            "Failed",
            "it failed".into(),
            now,
        );
        assert_eq!(e.metadata.name.as_deref(), Some("one.123456789abc"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.regarding, Some(regarding));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("Failed"));
        assert_eq!(e.note.as_deref(), Some("it failed"));
        assert_eq!(e.reporting_controller.as_deref(), Some("nodeops"));
        assert_eq!(e.reporting_instance.as_deref(), Some("nodeops-0"));
        assert_eq!(e.event_time, Some(MicroTime(now)));
        assert!(e.series.is_none());
        let normal = event(
            &reporter,
            ObjectReference::default(),
            false,
            "Started",
            String::new(),
            now,
        );
        assert_eq!(normal.type_.as_deref(), Some("Normal"));
        assert_eq!(
            normal.metadata.name.as_deref(),
            Some("nodeops.123456789abc")
        );
    }
}
