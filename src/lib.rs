//! nodeops: a Kubernetes operator that runs commands on a cluster's nodes, now or on a
//! schedule, and installs, updates, rolls back and upgrades node agents, writing every
//! node's outcome into the object's status.

pub mod agent;
pub mod api;
pub mod conditions;
pub mod controller;
pub mod engine;
pub mod exec;
pub mod metrics;
pub mod operator;
pub mod schedule;
pub mod telemetry;
pub mod view;
