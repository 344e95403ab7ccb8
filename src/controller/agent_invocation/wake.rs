//! Which AgentInvocations a change on a node wakes: the unfinished ones with an instance
//! there, not all of them (at thousands of finished invocations, waking every one on every
//! agent pod change kept the controller busy with nothing to do).

use kube::runtime::reflector::ObjectRef;

use crate::api::AgentInvocation;
use crate::api::agent_invocation::AgentInvocationPhase;
use crate::controller::Context;

/// Finished at its generation: final, nothing left to do.
pub fn finished(obj: &AgentInvocation) -> bool {
    obj.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            AgentInvocationPhase::Succeeded | AgentInvocationPhase::Failed
        ) && s.observed_generation == obj.metadata.generation
    })
}

/// Whether a change on `node` may move `obj`: it names the node or has an instance there.
/// One without a status yet is not woken: its creation's own event brings its first
/// reconcile, which reads every node as it is then (woken by every change on any node, the
/// hundreds of children an upgrade creates at once were woken for nothing).
fn touches(obj: &AgentInvocation, node: &str) -> bool {
    obj.spec
        .node_names
        .as_ref()
        .is_some_and(|n| n.iter().any(|n| n == node))
        || obj
            .status
            .as_ref()
            .is_some_and(|s| s.invocations.iter().any(|e| e.instance_id == node))
}

/// The unfinished invocations each node change concerns (every one for a change on any
/// node), from the controller's own cache: 5000 finished invocations cost nothing.
pub fn woken_by_nodes(
    ctx: &Context,
    invocations: kube::runtime::reflector::Store<AgentInvocation>,
) -> impl futures::Stream<Item = ObjectRef<AgentInvocation>> + Send + 'static {
    use futures::StreamExt;
    ctx.node_changes().flat_map(move |node| {
        let refs: Vec<ObjectRef<AgentInvocation>> = invocations
            .state()
            .iter()
            .filter(|i| !finished(i) && node.as_deref().is_none_or(|n| touches(i, n)))
            .map(|i| ObjectRef::from_obj(i.as_ref()))
            .collect();
        futures::stream::iter(refs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(status: serde_json::Value) -> AgentInvocation {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nodeops.io/v1alpha1", "kind": "AgentInvocation",
            "metadata": {"name": "up", "namespace": "ops", "generation": 1},
            "spec": {"invocationType": "Rollback", "invocationTarget": "telescope", "invocationIds": ["x"]},
            "status": status,
        }))
        .expect("invocation")
    }

    #[test]
    fn a_node_change_wakes_only_the_invocations_with_an_instance_there() {
        let on_n1 = invocation(
            serde_json::json!({"observedGeneration": 1, "phase": "Running",
            "invocations": [{"instanceId": "n1", "invocationId": "i", "phase": "Running"}]}),
        );
        assert!(touches(&on_n1, "n1"));
        assert!(!touches(&on_n1, "n2"), "another node's change");
        // No status yet: its first reconcile is on its way and reads every node then.
        let mut fresh = on_n1.clone();
        fresh.status = None;
        assert!(!touches(&fresh, "n2"));
        // Named in the spec before it has an instance there.
        let mut named = on_n1.clone();
        named.spec.node_names = Some(vec!["n3".into()]);
        assert!(touches(&named, "n3"));
        let done = invocation(serde_json::json!({"observedGeneration": 1, "phase": "Succeeded"}));
        assert!(finished(&done) && !finished(&on_n1));
    }
}
