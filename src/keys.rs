//! The vocabulary nodeops writes on objects: every label, annotation, finalizer and field
//! manager key, and the selectors built from them. `src` and `tests` import them from here;
//! nowhere else spells a key.

// --- app.kubernetes.io (the recommended labels) ---------------------------------------

/// `app.kubernetes.io/managed-by`, set to [`MANAGED_BY`] on everything nodeops creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/name`.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/component`.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/version`.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// `app.kubernetes.io/part-of`.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "nodeops";
/// [`NAME_LABEL`] of node-run Jobs and Pods.
pub const NODE_RUN_NAME: &str = "nodeops-exec";
/// [`COMPONENT_LABEL`] of node-run Jobs and Pods.
pub const NODE_RUN_COMPONENT: &str = "node-run";
/// [`COMPONENT_LABEL`] of remote-install Jobs and Pods.
pub const REMOTE_INSTALL_COMPONENT: &str = "remote-install";
/// [`COMPONENT_LABEL`] of agent DaemonSets and pods.
pub const AGENT_COMPONENT: &str = "node-agent";

// --- node runs (Jobs and their Pods) ---------------------------------------------------

/// Label carrying the uid of the object a Job runs for.
pub const OWNER_UID_LABEL: &str = "nodeops.io/owner-uid";
/// Label carrying the kind (lowercase) of the object a Job runs for.
pub const OWNER_KIND_LABEL: &str = "nodeops.io/owner-kind";
/// Annotation carrying the owner's name (names can exceed a label value's 63 characters).
pub const OWNER_NAME_ANNOTATION: &str = "nodeops.io/owner-name";
/// Annotation carrying the owner's namespace, where it differs from the Job's (installer
/// Jobs run in the agent's namespace).
pub const OWNER_NAMESPACE_ANNOTATION: &str = "nodeops.io/owner-namespace";
/// Annotation carrying the node a Job (or an upgrade job's child) runs on.
pub const NODE_ANNOTATION: &str = "nodeops.io/node";
/// Annotation carrying the node run's job id.
pub const JOB_ID_ANNOTATION: &str = "nodeops.io/job-id";
/// Annotation on an installer or remote-install Job: the instance's invocation id.
pub const INVOCATION_ID_ANNOTATION: &str = "nodeops.io/invocation-id";

// --- agents ----------------------------------------------------------------------------

/// Label on an agent's DaemonSets and pods: the NodeAgent's name.
pub const AGENT_LABEL: &str = "nodeops.io/agent";
/// Label on an agent's DaemonSets and pods: the version they run.
pub const AGENT_VERSION_LABEL: &str = "nodeops.io/agent-version";
/// Node label prefix that records an agent's installed version on each node:
/// `agent.nodeops.io/<agent>=<version>`.
pub const AGENT_NODE_LABEL_PREFIX: &str = "agent.nodeops.io/";
/// Annotation on an agent DaemonSet: the hash of the template it was applied with.
pub const TEMPLATE_HASH_ANNOTATION: &str = "nodeops.io/template-hash";
/// Finalizer of NodeAgents in DaemonSet mode: deleting one deletes its DaemonSets (owner
/// references), so the node labels that say the agent runs there must go too.
pub const AGENT_LABELS_FINALIZER: &str = "nodeops.io/agent-labels";

// --- children of schedules and rollouts ------------------------------------------------

/// Label on an Invoker's child AsyncCommands: the Invoker's uid.
pub const INVOKER_UID_LABEL: &str = "nodeops.io/invoker-uid";
/// Annotation on an Invoker's child: the slot (RFC 3339) it runs for.
pub const SCHEDULED_TIME_ANNOTATION: &str = "nodeops.io/scheduled-time";
/// Label on an AgentUpgradeJob's child AgentInvocations: the job's uid.
pub const UPGRADE_JOB_UID_LABEL: &str = "nodeops.io/upgrade-job-uid";
/// Label on an AgentUpgradeJob's child AgentInvocations: [`ROLE_UPGRADE`] or
/// [`ROLE_ROLLBACK`].
pub const ROLE_LABEL: &str = "nodeops.io/upgrade-role";
/// [`ROLE_LABEL`] of a child that upgrades one node.
pub const ROLE_UPGRADE: &str = "upgrade";
/// [`ROLE_LABEL`] of a child that rolls one node back.
pub const ROLE_ROLLBACK: &str = "rollback";
/// [`ROLE_LABEL`] of a ConfigMap holding part of a large AgentUpgradeJob's plan.
pub const ROLE_PLAN: &str = "plan";
/// Annotation on a plan ConfigMap: `<index>/<count>`, so a plan missing a part (a crash
/// while it was written) is seen as incomplete.
pub const PLAN_PART_ANNOTATION: &str = "nodeops.io/plan-part";
/// Label on a fleet's batch AsyncCommands: the fleet's uid.
pub const FLEET_UID_LABEL: &str = "nodeops.io/fleet-uid";
/// Annotation on a fleet's batch: `<index>/<count>`, so a fleet missing a batch (a crash
/// while they were created) is seen as incomplete.
pub const FLEET_PART_ANNOTATION: &str = "nodeops.io/fleet-part";

// --- field managers --------------------------------------------------------------------

/// Field manager of every create and server-side apply nodeops makes.
pub const FIELD_MANAGER: &str = "nodeops";
/// Field manager of the remote install host nodeops sets on a NodeAgent's spec (its own,
/// so the GitOps tool that owns the rest of the spec keeps owning it).
pub const REMOTE_HOST_FIELD_MANAGER: &str = "nodeops-remote-install-host";

// --- selectors -------------------------------------------------------------------------

/// Selects everything nodeops created (node runs, agent DaemonSets and pods).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=nodeops";
/// Selects every agent pod nodeops manages.
pub const AGENT_POD_SELECTOR: &str =
    "app.kubernetes.io/managed-by=nodeops,app.kubernetes.io/component=node-agent";

/// The node label that records `agent`'s installed version.
pub fn agent_node_label(agent: &str) -> String {
    format!("{AGENT_NODE_LABEL_PREFIX}{agent}")
}

/// Selects the Jobs and Pods run for the object with `uid`.
pub fn owner_selector(uid: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{OWNER_UID_LABEL}={uid}")
}

/// Selects the Jobs and Pods run for objects of `kind` (lowercase).
pub fn owner_kind_selector(kind: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{OWNER_KIND_LABEL}={kind}")
}

// --- Kubernetes' own --------------------------------------------------------------------

/// Labels the Job and DaemonSet controllers put on the Pods they create, which nodeops
/// never reads (it finds a Pod by its own labels and its owner): its Pod cache drops them.
pub const CONTROLLER_POD_LABELS: [&str; 6] = [
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "controller-uid",
    "job-name",
    "controller-revision-hash",
    "pod-template-generation",
];

// --- the local cluster's simulation (kwok stages in hack/kwok-stages.yaml) -------------

/// Annotations the simulated nodes' stages read (docs/local-cluster.md): they set what a
/// pod on a kwok node does. Never read by the operator.
pub mod sim {
    /// `fail` (or unset): how the pod ends.
    pub const OUTCOME: &str = "sim.nodeops.io/outcome";
    /// The pod's termination message.
    pub const MESSAGE: &str = "sim.nodeops.io/message";
    /// How long the pod runs.
    pub const DELAY: &str = "sim.nodeops.io/delay";
    /// Prefix: `<prefix><node>` gives the exit code on that node.
    pub const EXIT_CODE_NODE_PREFIX: &str = "sim.nodeops.io/exit-code-";
    /// The exit code on every node.
    pub const EXIT_CODE: &str = "sim.nodeops.io/exit-code";
    /// Prefix: `<prefix><node>[-<version>]` keeps the pod unready there.
    pub const UNREADY_PREFIX: &str = "sim.nodeops.io/unready-";
}

/// Taint of the local cluster's real node (hack/real-node.sh), so that simulated
/// workloads stay off it unless they tolerate it.
pub const REAL_NODE_TAINT: &str = "nodeops.io/real-node";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_built_from_the_keys() {
        assert_eq!(
            owner_selector("u1"),
            "app.kubernetes.io/managed-by=nodeops,nodeops.io/owner-uid=u1"
        );
        assert_eq!(
            AGENT_POD_SELECTOR,
            format!("{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={AGENT_COMPONENT}")
        );
        assert_eq!(MANAGED_SELECTOR, format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        assert_eq!(agent_node_label("telescope"), "agent.nodeops.io/telescope");
    }
}
