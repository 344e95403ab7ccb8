//! A Job and a Pod as nodeops reads them back: their metadata (without managed fields) and
//! the parts of their status a run's outcome and an agent's readiness read, and nothing
//! else. The Job and Pod caches hold these, and a reconcile's lists of Jobs and Pods from
//! the API parse into them.
//!
//! Parsing skips the rest without building it: a hundred Jobs parsed whole are a hundred
//! pod templates and managed fields, which were most of the operator's peak memory in a
//! fan-out (heaptrack under `make bench`: 38 of 51 MiB). And k8s-openapi's `Job` and `Pod`
//! keep room for every field inline, set or not (2688 and 2440 bytes, each container
//! status 752 more): with a cache entry for every node run, 2500 finished one-node
//! AsyncCommands at 5000 nodes held 6.5 KiB per Pod and 5.0 KiB per Job (heaptrack).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::{ContainerState, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use serde::{Deserialize, Deserializer};

/// A Job's metadata and status.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Job {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<JobStatus>,
}

/// A Pod's metadata, node and status.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    #[serde(default, deserialize_with = "lean_pod_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodSpec>,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

/// The node a Pod is bound to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
}

/// What the kubelet says of a Pod: its phase, the reason and message of a Pod it rejected,
/// its conditions (Ready) and its containers' states (the runner's report is a terminated
/// state's message).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// The Ready condition alone (an agent's readiness), without its reason and message.
    #[serde(default, deserialize_with = "ready_only")]
    pub conditions: Option<Vec<PodCondition>>,
    #[serde(default)]
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default)]
    pub container_statuses: Option<Vec<ContainerStatus>>,
}

/// A container's name, image (named in the message of an image the kubelet cannot get),
/// readiness, restarts and states.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
    /// Boxed: a state is some 200 bytes inline, and a container often has no last state.
    #[serde(default)]
    pub state: Option<Box<ContainerState>>,
    #[serde(default)]
    pub last_state: Option<Box<ContainerState>>,
}

impl From<&k8s_openapi::api::batch::v1::Job> for Job {
    /// A Job as the API server returned it from its creation.
    fn from(job: &k8s_openapi::api::batch::v1::Job) -> Self {
        Job {
            metadata: ObjectMeta {
                managed_fields: None,
                ..job.metadata.clone()
            },
            status: job.status.clone(),
        }
    }
}

/// A Pod's conditions as kept: Ready's type, status and transition time. The other four a
/// kubelet writes, each in a list with room for eight, were about 1 KiB of every Pod.
fn ready_only<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PodCondition>>, D::Error> {
    let all: Option<Vec<PodCondition>> = Option::deserialize(d)?;
    Ok(all.map(|conditions| {
        let mut ready: Vec<PodCondition> = conditions
            .into_iter()
            .filter(|c| c.type_ == "Ready")
            .map(|c| PodCondition {
                type_: c.type_,
                status: c.status,
                last_transition_time: c.last_transition_time,
                ..Default::default()
            })
            .collect();
        ready.shrink_to_fit();
        ready
    }))
}

/// The metadata nodeops reads; managed fields and the rest are skipped unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    owner_references: Option<Vec<OwnerReference>>,
}

fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        generation: m.generation,
        labels: m.labels,
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        owner_references: m.owner_references,
        ..ObjectMeta::default()
    })
}

/// A Pod's metadata without the labels its Job or DaemonSet controller added
/// ([`crate::keys::CONTROLLER_POD_LABELS`]): four on every run's Pod (the Job's uid and
/// name, each twice), kept in the Pod cache for every node run and read by nothing.
fn lean_pod_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let mut meta = lean_meta(d)?;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|key, _| !crate::keys::CONTROLLER_POD_LABELS.contains(&key.as_str()));
    }
    Ok(meta)
}

/// `batch/v1` Jobs and `v1` Pods, as the API serves them.
macro_rules! served_as {
    ($type:ty, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        impl Resource for $type {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
served_as!(Job, "batch", "v1", "Job", "jobs");
served_as!(Pod, "", "v1", "Pod", "pods");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::outcome::{RunState, observe, reason};
    use kube::ResourceExt;
    use serde_json::json;

    #[test]
    fn served_where_kubernetes_serves_jobs_and_pods() {
        use k8s_openapi::api::{batch::v1 as batch, core::v1 as core};
        assert_eq!(
            Job::url_path(&(), Some("a")),
            batch::Job::url_path(&(), Some("a"))
        );
        assert_eq!(
            Pod::url_path(&(), Some("a")),
            core::Pod::url_path(&(), Some("a"))
        );
        assert_eq!(Job::api_version(&()), "batch/v1");
        assert_eq!(Pod::api_version(&()), "v1");
        assert_eq!(Job::kind(&()), "Job");
        assert_eq!(Pod::kind(&()), "Pod");
    }

    #[test]
    fn a_job_keeps_its_metadata_and_status_and_drops_the_rest() {
        let job: Job = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {
                "name": "run-1", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "labels": {"a": "b"}, "annotations": {"nodeops.io/node": "n1"},
                "creationTimestamp": "2026-11-26T00:00:00Z",
                "ownerReferences": [{"apiVersion": "nodeops.io/v1alpha1", "kind": "AsyncCommand",
                    "name": "x", "uid": "o1", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:active": {}}}}]
            },
            "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}},
            "status": {"active": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .expect("parses");
        assert_eq!(job.name_any(), "run-1");
        assert_eq!(job.namespace().as_deref(), Some("ns"));
        assert_eq!(job.uid().as_deref(), Some("u1"));
        assert_eq!(job.resource_version().as_deref(), Some("7"));
        assert_eq!(job.labels().get("a").map(String::as_str), Some("b"));
        assert_eq!(
            job.annotations().get("nodeops.io/node").map(String::as_str),
            Some("n1")
        );
        assert!(job.metadata.creation_timestamp.is_some());
        assert_eq!(job.owner_references()[0].uid, "o1");
        assert!(job.metadata.managed_fields.is_none());
        let status = job.status.as_ref().expect("status");
        assert_eq!(status.active, Some(1));
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
        let bare: Job =
            serde_json::from_value(json!({"metadata": {"name": "run-2"}})).expect("parses");
        assert!(bare.status.is_none());
    }

    #[test]
    fn a_pod_keeps_its_node_and_container_states() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {"k": "v"}, "deletionTimestamp": "2026-11-26T00:00:00Z",
                "labels": {"nodeops.io/owner-uid": "o1", "app.kubernetes.io/managed-by": "nodeops",
                    "batch.kubernetes.io/controller-uid": "j1", "batch.kubernetes.io/job-name": "run-1",
                    "controller-uid": "j1", "job-name": "run-1"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "run", "image": "i"}]},
            "status": {"phase": "Failed", "reason": "OutOfpods", "message": "rejected",
                "conditions": [{"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                     "message": "containers with unready status: [run]",
                     "lastTransitionTime": "2026-11-26T00:00:01Z"},
                    {"type": "PodScheduled", "status": "True"}],
                "initContainerStatuses": [{"name": "stage", "image": "s", "imageID": "",
                    "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}}],
                "containerStatuses": [{"name": "run", "image": "i", "imageID": "x",
                    "ready": true, "restartCount": 2, "started": true,
                    "state": {"terminated": {"exitCode": 3, "message": "{}"}},
                    "lastState": {"terminated": {"exitCode": 1}}}]}
        }))
        .expect("parses");
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("n1")
        );
        assert!(pod.metadata.deletion_timestamp.is_some());
        // nodeops' own labels stay; the Job controller's are dropped.
        let labels: Vec<&str> = pod.labels().keys().map(String::as_str).collect();
        assert_eq!(
            labels,
            ["app.kubernetes.io/managed-by", "nodeops.io/owner-uid"]
        );
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("OutOfpods"));
        assert_eq!(status.message.as_deref(), Some("rejected"));
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
        let ready = &status.conditions.as_ref().expect("conditions")[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "False")
        );
        assert!(ready.last_transition_time.is_some());
        assert!(ready.message.is_none(), "only what readiness reads is kept");
        let init = &status.init_container_statuses.as_ref().expect("init")[0];
        assert_eq!(init.name, "stage");
        assert_eq!(
            init.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref()),
            Some("ErrImagePull")
        );
        let run = &status.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!((run.name.as_str(), run.image.as_str()), ("run", "i"));
        assert!(run.ready);
        assert_eq!(run.restart_count, 2);
        let exit = |s: &Option<Box<ContainerState>>| {
            s.as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
        };
        assert_eq!(exit(&run.state), Some(3));
        assert_eq!(exit(&run.last_state), Some(1));
    }

    #[test]
    fn a_created_job_is_kept_without_its_spec_and_managed_fields() {
        let created: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
            "metadata": {"name": "run-1", "labels": {"a": "b"},
                "managedFields": [{"manager": "nodeops", "operation": "Update"}]},
            "spec": {"template": {"spec": {"containers": [{"name": "run", "image": "i"}]}}}
        }))
        .expect("parses");
        let kept = Job::from(&created);
        assert_eq!(kept.name_any(), "run-1");
        assert_eq!(kept.labels().get("a").map(String::as_str), Some("b"));
        assert!(kept.metadata.managed_fields.is_none());
    }

    #[test]
    fn each_is_a_fraction_of_the_full_type() {
        use k8s_openapi::api::{batch::v1 as batch, core::v1 as core};
        // 568 of 2688 bytes, 528 of 2440, and 72 of 752 with its states boxed (k8s-openapi
        // 0.29, Kubernetes 1.35).
        assert!(std::mem::size_of::<Job>() * 4 < std::mem::size_of::<batch::Job>());
        assert!(std::mem::size_of::<Pod>() * 4 < std::mem::size_of::<core::Pod>());
        let container = std::mem::size_of::<core::ContainerStatus>();
        assert!(std::mem::size_of::<ContainerStatus>() * 8 < container);
    }

    fn active_job() -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"active": 1}
        }))
        .expect("job")
    }

    fn kept(pod: serde_json::Value) -> Pod {
        serde_json::from_value(pod).expect("pod")
    }

    /// A Pod as the cache keeps it shows what `observe` reads the kubelet's verdicts from.
    #[test]
    fn a_pod_as_kept_still_shows_what_the_kubelet_said() {
        let pulling = kept(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:01Z",
                "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "run", "image": "busybox"}]},
            "status": {"phase": "Pending",
                "initContainerStatuses": [{"name": "install-runner", "image": "exec:nope",
                    "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}],
                "containerStatuses": [{"name": "run", "image": "busybox", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}]}
        }));
        assert!(pulling.metadata.managed_fields.is_none());
        let o = observe(&active_job(), &[&pulling], 100);
        assert_eq!(
            (o.state, o.reason.as_deref()),
            (RunState::Failed, Some(reason::IMAGE_NOT_AVAILABLE))
        );
        assert!(o.message.expect("message").contains("exec:nope"));

        let rejected = kept(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:01Z"},
            "status": {"phase": "Failed", "reason": "OutOfpods",
                "message": "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 16, capacity: 16"}
        }));
        let o = observe(&active_job(), &[&rejected], 100);
        assert_eq!(o.reason.as_deref(), Some(reason::NODE_REJECTED));
        assert!(o.message.expect("message").contains("capacity: 16"));
    }
}
