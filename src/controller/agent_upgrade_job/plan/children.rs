//! The child AgentInvocations the rollout creates: one Update per node, and one Rollback
//! per node whose upgrade failed, each named from the job, the node and its role.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::Effect;
use crate::api::agent_invocation::{AgentInvocation, AgentInvocationSpec, InvocationType};
use crate::api::agent_upgrade_job::AgentUpgradeJob;
use crate::keys::{
    MANAGED_BY, MANAGED_BY_LABEL, NODE_ANNOTATION, ROLE_LABEL, ROLE_ROLLBACK, ROLE_UPGRADE,
    UPGRADE_JOB_UID_LABEL,
};

/// The child AgentInvocation of an effect. Its name is fixed by the job and the node (and
/// the role), so a child is created at most once.
pub fn child(job: &AgentUpgradeJob, effect: &Effect) -> AgentInvocation {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let spec = AgentInvocationSpec {
        invocation_type: InvocationType::Update,
        invocation_target: job.spec.agent.clone(),
        node_names: None,
        invocation_ids: None,
        version_type: None,
        version: None,
        origin: None,
        remote_install_meta: None,
    };
    let (node, role, key, spec) = match effect {
        Effect::Upgrade { node } => (
            node,
            ROLE_UPGRADE,
            node.clone(),
            AgentInvocationSpec {
                node_names: Some(vec![node.clone()]),
                version: Some(job.spec.target_version.clone()),
                ..spec
            },
        ),
        Effect::Rollback {
            node,
            invocation_id,
        } => (
            node,
            ROLE_ROLLBACK,
            format!("rollback/{node}"),
            AgentInvocationSpec {
                invocation_type: InvocationType::Rollback,
                invocation_ids: Some(vec![invocation_id.clone()]),
                ..spec
            },
        ),
    };
    AgentInvocation {
        metadata: ObjectMeta {
            name: Some(crate::engine::job::job_name(&name, &uid, &key)),
            namespace: job.metadata.namespace.clone(),
            labels: Some(
                [
                    (UPGRADE_JOB_UID_LABEL.to_string(), uid.clone()),
                    (ROLE_LABEL.to_string(), role.to_string()),
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                ]
                .into(),
            ),
            annotations: Some([(NODE_ANNOTATION.to_string(), node.clone())].into()),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}
