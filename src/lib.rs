//! nodeops: a Kubernetes operator that runs commands on a cluster's nodes, now or on a
//! schedule, and installs, updates, rolls back and upgrades node agents, writing every
//! node's outcome into the object's status.
//!
//! Without the default feature `operator` only [`exec`], the node-side runner, is built.

#[cfg(feature = "operator")]
pub mod agent;
#[cfg(feature = "operator")]
pub mod api;
#[cfg(feature = "operator")]
pub mod complete;
#[cfg(feature = "operator")]
pub mod conditions;
#[cfg(feature = "operator")]
pub mod controller;
#[cfg(feature = "operator")]
pub mod engine;
pub mod exec;
#[cfg(feature = "operator")]
pub mod keys;
#[cfg(feature = "operator")]
pub mod logs;
#[cfg(feature = "operator")]
pub mod metrics;
#[cfg(feature = "operator")]
pub mod operator;
#[cfg(feature = "operator")]
pub mod plan;
#[cfg(feature = "operator")]
pub mod rollout;
#[cfg(feature = "operator")]
pub mod schedule;
#[cfg(feature = "operator")]
pub mod settings;
#[cfg(feature = "operator")]
pub mod telemetry;
#[cfg(feature = "operator")]
pub mod view;
