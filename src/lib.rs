//! nodeops: a Kubernetes operator that runs commands on a cluster's nodes, now or on a
//! schedule, and installs, updates, rolls back and upgrades node agents, writing every
//! node's outcome into the object's status.

pub mod api;
pub mod operator;
pub mod telemetry;
pub mod conditions;
pub mod exec;
pub mod engine;
pub mod controller;
