//! The per-node engine: "run this on node N" as one `batch/v1` Job per node, shared by
//! AsyncCommand, HostInstaller agents and remote installs.
//!
//! - [`argv`] and [`script`] turn a command line or a Command's script into an argv and
//!   environment, never into shell text built from user values.
//! - [`job`] renders the Job: a deterministic name from owner and node (so a restarted
//!   operator finds, never duplicates, what it created), the node pinned, every taint
//!   tolerated, a controller owner reference, labels the operator watches by.
//! - [`outcome`] reads a Job and its Pods back into a node's phase, exit code and output.

pub mod argv;
pub mod job;
pub mod outcome;
pub mod script;

/// `app.kubernetes.io/managed-by` value on everything nodeops creates.
pub const MANAGED_BY: &str = "nodeops";
/// Label carrying the uid of the object a Job runs for.
pub const OWNER_UID_LABEL: &str = "nodeops.io/owner-uid";
/// Label carrying the kind of the object a Job runs for.
pub const OWNER_KIND_LABEL: &str = "nodeops.io/owner-kind";
/// Annotation carrying the owner's name (names can exceed a label value's 63 characters).
pub const OWNER_NAME_ANNOTATION: &str = "nodeops.io/owner-name";
/// Annotation carrying the node a Job runs on.
pub const NODE_ANNOTATION: &str = "nodeops.io/node";
/// Annotation carrying the node run's job id.
pub const JOB_ID_ANNOTATION: &str = "nodeops.io/job-id";
/// Name of the container that runs the command.
pub const MAIN_CONTAINER: &str = "run";
