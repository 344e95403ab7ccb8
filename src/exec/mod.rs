//! The node-side runner behind `nodeops-exec`: runs an argv (never through a shell it was
//! not meant for), optionally on the host (entering the namespaces of a host process, PID
//! 1 unless told otherwise) and as a given user, enforces the timeout, keeps the tail of
//! the combined output, and reports `{exitCode, output, ...}` as the container's
//! termination message, where the operator reads it from the Pod status without a log
//! request per node. `remote` is the SSH mode: the same report for a script run on a host
//! outside the cluster (agent RemoteInstall). `stage` copies an installer image's payload
//! to the host before the runner enters it (HostInstaller agents).

pub mod host;
pub mod remote;
pub mod stage;
pub mod tail;

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use tail::HeadTail;

/// Exit code reported when the timeout killed the command (as coreutils `timeout`).
pub const TIMEOUT_EXIT_CODE: i32 = 124;
/// Exit code reported when the command could not be started at all.
pub const START_FAILED_EXIT_CODE: i32 = 127;
/// The kubelet keeps at most 4096 bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;
/// PATH of the command's clean environment.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Grace between SIGTERM and SIGKILL when the timeout fires.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    pub argv: Vec<String>,
    /// Run as this user (looked up in the passwd database the runner sees).
    pub user: Option<String>,
    pub timeout: Duration,
    pub workdir: Option<PathBuf>,
    /// Bytes of the output's end to keep.
    pub output_limit: usize,
    /// Bytes of the output's beginning to keep when it is too long to keep whole.
    pub head_limit: usize,
    /// The command's environment besides PATH, LANG and the user's HOME, USER, LOGNAME
    /// (parameters).
    pub env: Vec<(String, String)>,
    /// Copy the output to the runner's stdout as it comes (for `kubectl logs`).
    pub echo: bool,
}

/// The result, as written to the termination message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub exit_code: i32,
    /// The output, or its end when it was too long (`truncated`).
    pub output: String,
    /// The output shown is not all of it: `head`, then `droppedBytes` not kept, then
    /// `output`.
    #[serde(default)]
    pub truncated: bool,
    /// The output's beginning, when it was too long to keep whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Bytes between `head` and `output` that were not kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_bytes: u64,
    #[serde(default)]
    pub timed_out: bool,
    /// The signal that killed the command (not our timeout kill); `exit_code` is then
    /// 128 + signal, as shells report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why the command could not be run, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A machine reason for `error`, where the runner can name one (`HostKeyUnknown`,
    /// `HostKeyMismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Something the outcome should say even when it succeeded (a host key accepted
    /// without verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a command could not be started.
#[derive(Debug, Error)]
pub enum Error {
    #[error("no command given")]
    EmptyArgv,
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("looking up user {0:?}: {1}")]
    UserLookup(String, nix::Error),
    #[error("looking up the groups of user {0:?}: {1}")]
    GroupLookup(String, nix::Error),
    #[error("creating the output pipe: {0}")]
    Pipe(std::io::Error),
    #[error("starting {0:?}: {1}")]
    Spawn(String, std::io::Error),
    #[error("waiting for the command: {0}")]
    Wait(std::io::Error),
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RunReport {
    /// Bytes the command printed in all (shown or not).
    pub fn printed(&self) -> u64 {
        (self.head.as_ref().map_or(0, String::len) + self.output.len()) as u64 + self.dropped_bytes
    }

    /// The report of a command that never started.
    pub fn start_failed(error: &Error) -> Self {
        Self {
            exit_code: START_FAILED_EXIT_CODE,
            error: Some(error.to_string()),
            ..Default::default()
        }
    }

    /// JSON for the termination message, at most `TERMINATION_MESSAGE_LIMIT` bytes: the
    /// output's end is cut from its front, then the head from its end, until it fits; what
    /// is cut is counted in `droppedBytes` (the head, empty if need be, stays in front).
    pub fn to_termination_message(&self) -> String {
        let mut report = self.clone();
        loop {
            let json = serde_json::to_string(&report)
                .unwrap_or_else(|_| format!("{{\"exitCode\":{}}}", report.exit_code));
            let head_len = report.head.as_ref().map_or(0, String::len);
            if json.len() <= TERMINATION_MESSAGE_LIMIT || report.output.len() + head_len == 0 {
                return json;
            }
            // Cut whole characters until what they cost in JSON (up to 6 bytes for one
            // escaped byte) covers the excess: no more, so the message stays as full as
            // it can be however much of the output needs escaping.
            let excess = json.len() - TERMINATION_MESSAGE_LIMIT;
            let head = report.head.get_or_insert_with(String::new);
            let cut = if !report.output.is_empty() {
                let cut = json_front(&report.output, excess);
                report.output.drain(..cut);
                cut
            } else {
                let keep = json_back(head, excess);
                let cut = head.len() - keep;
                head.truncate(keep);
                cut
            };
            report.dropped_bytes += cut as u64;
            report.truncated = true;
        }
    }
}

/// The shortest front of `text` that costs at least `excess` bytes in JSON: its length.
fn json_front(text: &str, excess: usize) -> usize {
    let mut cost = 0;
    for (i, c) in text.char_indices() {
        cost += json_len(c);
        if cost >= excess {
            return i + c.len_utf8();
        }
    }
    text.len()
}

/// Where the shortest end of `text` that costs at least `excess` bytes in JSON begins.
fn json_back(text: &str, excess: usize) -> usize {
    let mut cost = 0;
    for (i, c) in text.char_indices().rev() {
        cost += json_len(c);
        if cost >= excess {
            return i;
        }
    }
    0
}

/// What serde_json writes for `c` inside a string: 1 to 6 bytes.
fn json_len(c: char) -> usize {
    let mut buf = [0u8; 4];
    serde_json::to_string(c.encode_utf8(&mut buf) as &str).map_or(6, |j| j.len() - 2)
}

/// Waits (at most `limit`) until what this process wrote to its stdout has been read, then
/// a moment more. A container's stdout is a pipe the runtime's shim copies into a second
/// pipe that containerd's CRI logger copies into the Pod's log; when the container's first
/// process exits, containerd deletes the task and closes both, and whatever is still in
/// them is lost (seen: the last 22 to 76 KB of 289 KB; with a 500 ms settle, 3 runs of 3 kept all of it). The first pipe is visible here
/// (FIONREAD) and is waited for; the second is not, and the logger empties it within
/// milliseconds once nothing more arrives, so `SETTLE` stands in for it, after an output
/// (`printed` bytes) larger than a pipe holds: a smaller one is long copied by then.
pub fn drain_stdout(limit: Duration, printed: u64) {
    const SETTLE: Duration = Duration::from_secs(1);
    const PIPE_BUFFER: u64 = 64 * 1024;
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let mut pending: nix::libc::c_int = 0;
        // SAFETY: FIONREAD writes one int to `pending`; on an fd that is no pipe it
        // fails, and we stop.
        let ok = unsafe { nix::libc::ioctl(1, nix::libc::FIONREAD, &mut pending) } == 0;
        if !ok {
            return;
        }
        if pending <= 0 {
            if printed > PIPE_BUFFER {
                std::thread::sleep(SETTLE);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the command to completion (or timeout) and reports how it ended.
pub fn run(spec: &RunSpec) -> Result<RunReport, Error> {
    let (program, args) = spec.argv.split_first().ok_or(Error::EmptyArgv)?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).process_group(0);
    if let Some(dir) = &spec.workdir {
        cmd.current_dir(dir);
    }
    // A clean environment: the pod's variables are not the command's business.
    cmd.env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("LANG", "C.UTF-8");
    cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(name) = &spec.user {
        let user = User::from_name(name)
            .map_err(|e| Error::UserLookup(name.clone(), e))?
            .ok_or_else(|| Error::UnknownUser(name.clone()))?;
        cmd.env("HOME", &user.dir)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
        if user.uid != nix::unistd::getuid() {
            let cname = std::ffi::CString::new(user.name.clone())
                .map_err(|_| Error::UnknownUser(name.clone()))?;
            // What initgroups would set, looked up here: the group database read (NSS,
            // malloc) stays out of the forked child.
            let groups = nix::unistd::getgrouplist(&cname, user.gid)
                .map_err(|e| Error::GroupLookup(name.clone(), e))?;
            let (uid, gid) = (user.uid, user.gid);
            // Not cmd.uid()/gid(): std switches those before running pre_exec closures, and
            // setting the groups needs root. Groups, then gid, then uid, which drops root.
            // SAFETY: three syscalls on data prepared beforehand; nothing allocates.
            unsafe {
                cmd.pre_exec(move || {
                    nix::unistd::setgroups(&groups)?;
                    nix::unistd::setgid(gid)?;
                    nix::unistd::setuid(uid)?;
                    Ok(())
                });
            }
        }
    }
    let (mut reader, writer) = std::io::pipe().map_err(Error::Pipe)?;
    let writer2 = writer.try_clone().map_err(Error::Pipe)?;
    cmd.stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().map_err(|e| Error::Spawn(program.clone(), e))?;
    // Drop our copies of the write end so the reader sees EOF when the command exits.
    drop(cmd);

    let (head_limit, limit) = (spec.head_limit, spec.output_limit);
    let echo = spec.echo;
    let collector = std::thread::spawn(move || {
        let mut tail = HeadTail::new(head_limit, limit);
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo {
                        let _ = stdout.write_all(&buf[..n]);
                    }
                    tail.push(&buf[..n]);
                }
            }
        }
        tail
    });

    let pgid = Pid::from_raw(child.id() as i32);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let timeout = spec.timeout;
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout).is_ok() {
            return false;
        }
        let _ = killpg(pgid, Signal::SIGTERM);
        if done_rx.recv_timeout(KILL_GRACE).is_err() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        true
    });
    let status = child.wait().map_err(Error::Wait);
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    // A process the command left behind may hold the pipe open; end the group so the
    // output collector finishes.
    let _ = killpg(pgid, Signal::SIGKILL);
    let status = status?;
    let ends = collector
        .join()
        .unwrap_or_else(|_| HeadTail::new(0, 0))
        .into_ends();
    let signal = if timed_out { None } else { status.signal() };
    let exit_code = if timed_out {
        TIMEOUT_EXIT_CODE
    } else {
        status
            .code()
            .or_else(|| signal.map(|s| 128 + s))
            .unwrap_or(1)
    };
    Ok(RunReport {
        exit_code,
        truncated: ends.dropped > 0,
        output: ends.tail,
        head: ends.head,
        dropped_bytes: ends.dropped,
        timed_out,
        signal,
        ..RunReport::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> RunSpec {
        RunSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(10),
            output_limit: 1024,
            ..Default::default()
        }
    }

    #[test]
    fn reports_exit_code_and_combined_output() {
        let r = run(&spec(&["sh", "-c", "echo out; echo err >&2; exit 3"])).expect("run");
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.output, "out\nerr\n");
        assert!(!r.truncated && !r.timed_out);
    }

    #[test]
    fn argv_is_not_given_to_a_shell() {
        let r = run(&spec(&["echo", "$(id)", ";", "rm", "-rf", "/"])).expect("run");
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.output, "$(id) ; rm -rf /\n");
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let mut s = spec(&["sh", "-c", "echo started; sleep 30 & sleep 30"]);
        s.timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let r = run(&s).expect("run");
        assert!(r.timed_out);
        assert_eq!(r.exit_code, TIMEOUT_EXIT_CODE);
        assert_eq!(r.output, "started\n");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the runner returned after the kill, not after sleep"
        );
    }

    #[test]
    fn keeps_only_the_tail_of_long_output() {
        let mut s = spec(&[
            "sh",
            "-c",
            "i=0; while [ $i -lt 1000 ]; do echo line-$i; i=$((i+1)); done",
        ]);
        s.output_limit = 64;
        let r = run(&s).expect("run");
        assert!(r.truncated);
        assert!(r.output.len() <= 64);
        assert!(r.output.ends_with("line-999\n"), "{:?}", r.output);
    }

    #[test]
    fn signal_death_is_128_plus_signal() {
        let r = run(&spec(&["sh", "-c", "kill -9 $$"])).expect("run");
        assert_eq!(r.exit_code, 128 + 9);
        assert_eq!(r.signal, Some(9));
        let json = r.to_termination_message();
        assert!(json.contains("\"signal\":9"), "{json}");
        let clean = run(&spec(&["true"])).expect("run");
        assert_eq!(clean.signal, None);
        assert!(!clean.to_termination_message().contains("signal"));
    }

    #[test]
    fn missing_program_is_a_start_failure() {
        let err = run(&spec(&["/nonexistent/program"])).expect_err("cannot start");
        let report = RunReport::start_failed(&err);
        assert_eq!(report.exit_code, START_FAILED_EXIT_CODE);
        assert!(
            report
                .error
                .expect("error")
                .contains("/nonexistent/program")
        );
    }

    #[test]
    fn unknown_user_is_refused() {
        let mut s = spec(&["true"]);
        s.user = Some("no-such-user-nodeops".into());
        assert!(matches!(run(&s), Err(Error::UnknownUser(_))));
    }

    /// The switch to a non-root user: the command has exactly the user's uid, gid and
    /// groups (as the group database lists them), and the user's HOME, USER, LOGNAME.
    #[test]
    fn runs_as_the_user_with_its_groups() {
        // Switching users needs root: a non-root run must not pass silently.
        assert!(
            nix::unistd::geteuid().is_root(),
            "runs_as_the_user_with_its_groups must run as root (it switches to nobody)"
        );
        let user = User::from_name("nobody")
            .expect("passwd lookup")
            .expect("user nobody exists");
        let cname = std::ffi::CString::new(user.name.clone()).expect("name");
        let groups = nix::unistd::getgrouplist(&cname, user.gid).expect("getgrouplist");
        // `id -G` prints the gid first, then the other groups in the kernel's (sorted) order.
        let mut others: Vec<u32> = groups
            .iter()
            .map(|g| g.as_raw())
            .filter(|&g| g != user.gid.as_raw())
            .collect();
        others.sort_unstable();
        others.dedup();
        let id_groups: Vec<String> = std::iter::once(user.gid.as_raw())
            .chain(others)
            .map(|g| g.to_string())
            .collect();
        let mut s = spec(&[
            "sh",
            "-c",
            "id -u; id -g; id -G; printf '%s %s %s\\n' \"$HOME\" \"$USER\" \"$LOGNAME\"",
        ]);
        s.user = Some("nobody".into());
        let r = run(&s).expect("run as nobody");
        let expected = format!(
            "{}\n{}\n{}\n{} {} {}\n",
            user.uid,
            user.gid,
            id_groups.join(" "),
            user.dir.display(),
            user.name,
            user.name
        );
        assert_eq!((r.exit_code, r.output.as_str()), (0, expected.as_str()));
    }

    #[test]
    fn parameters_arrive_as_environment() {
        let mut s = spec(&["sh", "-c", "printf '%s' \"$NODEOPS_PARAM_path\""]);
        s.env = vec![("NODEOPS_PARAM_path".into(), "/var; rm -rf /".into())];
        let r = run(&s).expect("run");
        assert_eq!(r.output, "/var; rm -rf /");
    }

    #[test]
    fn termination_message_fits_the_kubelet_limit() {
        let report = RunReport {
            exit_code: 1,
            output: "\"\u{1}".repeat(3000),
            ..Default::default()
        };
        let msg = report.to_termination_message();
        assert!(msg.len() <= TERMINATION_MESSAGE_LIMIT, "{}", msg.len());
        let back: RunReport = serde_json::from_str(&msg).expect("json");
        assert!(back.truncated);
        assert_eq!(back.exit_code, 1);
        // Output that is mostly escapes still fills the message: the cut is measured in
        // JSON bytes, not in the output's bytes (one 6-byte escape is the most left over).
        for (output, head) in [("\"\u{1}", None), ("𝄞\\\u{0}", Some("\u{7}".repeat(900)))] {
            let report = RunReport {
                output: output.repeat(3000),
                head,
                truncated: true,
                ..Default::default()
            };
            let msg = report.to_termination_message();
            assert!(
                msg.len() > TERMINATION_MESSAGE_LIMIT - 6,
                "{} bytes",
                msg.len()
            );
            assert!(
                msg.len() <= TERMINATION_MESSAGE_LIMIT,
                "{} bytes",
                msg.len()
            );
        }
        let small = RunReport {
            exit_code: 0,
            output: "ok\n".into(),
            ..Default::default()
        };
        let back: RunReport = serde_json::from_str(&small.to_termination_message()).expect("json");
        assert_eq!(back, small);
    }

    #[test]
    fn keeps_both_ends_of_long_output_and_counts_the_middle() {
        let mut s = spec(&[
            "sh",
            "-c",
            "i=0; while [ $i -lt 1000 ]; do echo line-$i; i=$((i+1)); done",
        ]);
        s.output_limit = 64;
        s.head_limit = 32;
        let r = run(&s).expect("run");
        let total: usize = (0..1000).map(|i| format!("line-{i}\n").len()).sum();
        let head = r.head.as_deref().expect("head");
        assert!(head.starts_with("line-0\nline-1\n"), "{head:?}");
        assert!(r.output.ends_with("line-999\n"), "{:?}", r.output);
        assert!(r.truncated);
        assert_eq!(
            head.len() + r.dropped_bytes as usize + r.output.len(),
            total,
            "head, dropped and tail add up to the whole output"
        );
    }

    #[test]
    fn a_cut_termination_message_still_adds_up() {
        let report = RunReport {
            exit_code: 1,
            head: Some("h".repeat(1024)),
            output: "\"".repeat(3000),
            dropped_bytes: 10,
            truncated: true,
            ..Default::default()
        };
        let msg = report.to_termination_message();
        assert!(msg.len() <= TERMINATION_MESSAGE_LIMIT, "{}", msg.len());
        let back: RunReport = serde_json::from_str(&msg).expect("json");
        let shown = back.head.as_ref().map_or(0, String::len) + back.output.len();
        assert_eq!(
            shown as u64 + back.dropped_bytes,
            1024 + 3000 + 10,
            "what was cut is counted"
        );
        assert_eq!(
            back.head.as_deref(),
            Some("h".repeat(1024).as_str()),
            "the head stays"
        );
    }
}
