//! Host mode: the runner, in a privileged pod with `hostPID`, joins the namespaces of the
//! host's PID 1 (mount, UTS, IPC, network, PID), as `nsenter -t 1 -m -u -i -n -p` does, so
//! the command it starts runs on the node itself.

use std::fs::File;

use nix::sched::{CloneFlags, setns};
use thiserror::Error;

/// Namespaces joined, in order; mount last, because after it `/proc` is the host's.
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

#[derive(Debug, Error)]
pub enum Error {
    #[error("opening /proc/{pid}/ns/{ns} (is the pod privileged with hostPID?): {source}")]
    Open {
        pid: u32,
        ns: &'static str,
        source: std::io::Error,
    },
    #[error("joining the host's {ns} namespace (is the pod privileged?): {source}")]
    Join {
        ns: &'static str,
        source: nix::Error,
    },
}

/// Joins the namespaces of process `pid` (1: the host's init). Must be called while the
/// process is single-threaded: the kernel refuses a mount-namespace switch otherwise. The
/// PID namespace applies to children started afterwards. After the mount namespace switch
/// the root and working directory are the host's `/`.
pub fn enter_namespaces_of(pid: u32) -> Result<(), Error> {
    // Open every handle first: once in the host's mount namespace, /proc may differ.
    let mut handles = Vec::with_capacity(NAMESPACES.len());
    for (ns, flag) in NAMESPACES {
        let file = File::open(format!("/proc/{pid}/ns/{ns}")).map_err(|source| Error::Open {
            pid,
            ns,
            source,
        })?;
        handles.push((ns, flag, file));
    }
    for (ns, flag, file) in handles {
        setns(&file, flag).map_err(|source| Error::Join { ns, source })?;
    }
    Ok(())
}
