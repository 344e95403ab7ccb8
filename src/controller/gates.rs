//! Reads the object health gates of a rollout (`spec.rollout.healthGates[].object`): each
//! object's `Ready` condition, by discovery of its kind. A gate that cannot be read (no
//! such kind, no such object, no permission) is unhealthy and says why: a rollout never
//! proceeds on a signal it could not see.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{self, Scope};

use super::Context;
use crate::api::rollout::{ObjectGate, RolloutPolicy};
use crate::rollout::Reading;

fn unhealthy(message: String) -> Reading {
    Reading {
        healthy: false,
        message,
    }
}

/// The kind's resource and scope, discovered once per operator run.
async fn resource(ctx: &Context, gvk: &GroupVersionKind) -> Result<(ApiResource, bool), String> {
    let key = format!("{}/{}/{}", gvk.group, gvk.version, gvk.kind);
    if let Some(found) = ctx
        .gate_kinds
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned())
    {
        return Ok(found);
    }
    let (resource, caps) = discovery::pinned_kind(&ctx.client, gvk)
        .await
        .map_err(|e| format!("kind {key} is not served: {e}"))?;
    let found = (resource, caps.scope == Scope::Namespaced);
    if let Ok(mut m) = ctx.gate_kinds.lock() {
        m.insert(key, found.clone());
    }
    Ok(found)
}

async fn read_one(ctx: &Context, namespace: &str, gate: &ObjectGate) -> Reading {
    let what = format!("{} {}", gate.kind, gate.name);
    let (group, version) = match gate.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", gate.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &gate.kind);
    let (resource, namespaced) = match resource(ctx, &gvk).await {
        Ok(found) => found,
        Err(message) => return unhealthy(format!("{what}: {message}")),
    };
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(ctx.client.clone(), namespace, &resource)
    } else {
        Api::all_with(ctx.client.clone(), &resource)
    };
    let obj = match api.get_opt(&gate.name).await {
        Ok(Some(obj)) => obj,
        Ok(None) => return unhealthy(format!("{what} does not exist")),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return unhealthy(format!(
                "{what}: the operator may not read {} (grant its service account get on them)",
                resource.plural
            ));
        }
        Err(e) => return unhealthy(format!("{what} could not be read: {e}")),
    };
    let ready = obj
        .data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    match ready {
        Some(c) if c["status"] == "True" => Reading {
            healthy: true,
            message: format!("{what} is Ready"),
        },
        Some(c) => unhealthy(format!(
            "{what} is not Ready: Ready={} ({}): {}",
            c["status"].as_str().unwrap_or("Unknown"),
            c["reason"].as_str().unwrap_or("-"),
            crate::plan::clip(c["message"].as_str().unwrap_or(""), 256)
        )),
        None => unhealthy(format!("{what} has no Ready condition yet")),
    }
}

/// Reads every object gate of `policy`, for a rollout in `namespace`.
pub async fn read(ctx: &Context, namespace: &str, policy: Option<&RolloutPolicy>) -> Vec<Reading> {
    let mut readings = Vec::new();
    for gate in policy
        .into_iter()
        .flat_map(|p| p.health_gates.iter())
        .filter_map(|g| g.object.as_ref())
    {
        readings.push(read_one(ctx, namespace, gate).await);
    }
    readings
}
