//! The per-node engine: "run this on node N" as one `batch/v1` Job per node, shared by
//! AsyncCommand, HostInstaller agents and remote installs.
//!
//! - [`argv`] and [`script`] turn a command line or a Command's script into an argv and
//!   environment, never into shell text built from user values.
//! - [`job`] renders the Job: a deterministic name from owner and node (so a restarted
//!   operator finds, never duplicates, what it created), the node pinned, every taint
//!   tolerated, a controller owner reference, labels the operator watches by.
//! - [`outcome`] reads a Job and its Pods back into a node's phase, exit code and output;
//!   [`seen`] is what of them is read back (and what the caches keep).

pub mod argv;
pub mod job;
pub mod outcome;
pub mod script;
pub mod seen;

/// Name of the container that runs the command.
pub const MAIN_CONTAINER: &str = "run";
