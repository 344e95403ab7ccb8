//! Host mode: the runner, in a privileged pod with `hostPID`, joins the namespaces of a
//! host process (mount, UTS, IPC, network, PID), as `nsenter -t PID -m -u -i -n -p` does,
//! so the command it starts runs on the node itself. The process is PID 1 by default, or
//! the one `--host-process` names (a PID, or a name such as `kubelet`): on sandboxed nodes
//! even root cannot open PID 1's namespaces, while the kubelet's are the host's too.

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
    #[error("no process named {0:?} (--host-process takes a PID or a name as in /proc/PID/comm)")]
    NoProcess(String),
    #[error("listing /proc: {0}")]
    ListProc(std::io::Error),
}

/// A process as `/proc` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// `/proc/PID/comm`: the name, at most 15 bytes.
    pub comm: String,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot.
    pub start_time: u64,
}

/// The PID `target` means: a PID as is, else the process whose comm is exactly `target`;
/// of several, the one started first (the longest-running one is the node's own, not a
/// short-lived namesake; the PID breaks ties, as PIDs wrap).
pub fn pick(target: &str, processes: &[Process]) -> Result<u32, Error> {
    if let Ok(pid) = target.parse::<u32>() {
        return Ok(pid);
    }
    processes
        .iter()
        .filter(|p| p.comm == target)
        .min_by_key(|p| (p.start_time, p.pid))
        .map(|p| p.pid)
        .ok_or_else(|| Error::NoProcess(target.to_string()))
}

/// The PID `target` means (see [`pick`]), looking names up in `/proc`.
pub fn resolve(target: &str) -> Result<u32, Error> {
    if let Ok(pid) = target.parse::<u32>() {
        return Ok(pid);
    }
    pick(target, &processes()?)
}

/// Every process of `/proc` (the host's, with `hostPID`); processes that exit while it is
/// read are left out.
pub fn processes() -> Result<Vec<Process>, Error> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(Error::ListProc)? {
        let entry = entry.map_err(Error::ListProc)?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        if let Some(start_time) = start_time(&stat) {
            found.push(Process {
                pid,
                comm: comm.trim_end_matches('\n').to_string(),
                start_time,
            });
        }
    }
    Ok(found)
}

/// Field 22 of a `/proc/PID/stat` line. The name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after the last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state).
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Joins the namespaces of process `pid` (e.g. 1: the host's init). Must be called while the
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, comm: &str, start_time: u64) -> Process {
        Process {
            pid,
            comm: comm.into(),
            start_time,
        }
    }

    #[test]
    fn a_pid_is_taken_as_is() {
        assert_eq!(pick("1", &[]).expect("pid"), 1);
        assert_eq!(pick("4242", &[p(1, "systemd", 1)]).expect("pid"), 4242);
    }

    #[test]
    fn a_name_picks_the_earliest_started_exact_match() {
        let procs = [
            p(1, "systemd", 1),
            p(900, "kubelet", 500),
            p(300, "kubelet", 200),
            p(50, "kubelet-helper", 10),
            p(800, "kubelet", 200),
        ];
        assert_eq!(pick("kubelet", &procs).expect("kubelet"), 300);
        assert_eq!(pick("systemd", &procs).expect("systemd"), 1);
    }

    #[test]
    fn no_match_names_the_target() {
        let err =
            pick("kubelet", &[p(1, "systemd", 1), p(7, "Kubelet", 2)]).expect_err("no kubelet");
        assert!(err.to_string().contains("\"kubelet\""), "{err}");
    }

    #[test]
    fn start_time_is_field_22_even_with_odd_names() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        assert_eq!(start_time(stat), Some(98765));
        assert_eq!(start_time("garbage"), None);
    }

    #[test]
    fn this_process_is_found_by_its_name() {
        let me = std::process::id();
        let procs = processes().expect("/proc");
        let mine = procs.iter().find(|p| p.pid == me).expect("own entry");
        assert!(!mine.comm.is_empty() && !mine.comm.ends_with('\n'));
        let first = pick(&mine.comm, &procs).expect("own name");
        let chosen = procs.iter().find(|p| p.pid == first).expect("chosen");
        assert!(chosen.start_time <= mine.start_time);
    }
}
