//! `nodeops-exec`: the runner nodeops puts on nodes. It runs `ARGV` (exec'd directly, no
//! shell), on the host with `--host` (in the namespaces of `--host-process`, PID 1 unless
//! told), as `--user`, killed after `--timeout` seconds, and writes `{exitCode, output,
//! truncated, timedOut, signal}` to the termination-message file so the result arrives in
//! the Pod status. It exits with the command's exit code.
//!
//! `--stage-payload DIR` (with `--host`; the installer Jobs of HostInstaller agents) first
//! copies the image's `--payload` directory to DIR, a host directory mounted at the same
//! path, so the command finds it on the host as `$NODEOPS_PAYLOAD` (also its working
//! directory unless `--workdir`); DIR is removed after the command, however it ended.
//!
//! `nodeops-exec --install-to PATH` copies the runner to PATH (the init container of
//! Container mode, which then runs it inside the user's image).
//!
//! `nodeops-exec --ssh-host IP --ssh-port PORT --ssh-user USER (--ssh-password-file F |
//! --ssh-key-file F) [--ssh-known-hosts-file F]` runs the script in `$NODEOPS_SCRIPT` with
//! `sh -s` on a host outside the cluster over SSH (an agent's RemoteInstall), the
//! parameters exported in front of it, and reports it the same way; 255 when SSH failed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use nodeops::exec::remote::{self, Credentials, RemoteSpec};
use nodeops::exec::{self, RunReport, RunSpec};

/// The variable naming the staged payload on the host.
const PAYLOAD_ENV: &str = "NODEOPS_PAYLOAD";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Runs a command on a node and reports its outcome as the termination message"
)]
#[command(group(ArgGroup::new("ssh_auth").args(["ssh_password_file", "ssh_key_file"])))]
struct Args {
    /// Join the host's namespaces (those of --host-process) before running: needs a
    /// privileged hostPID pod.
    #[arg(long)]
    host: bool,
    /// With --host, the process whose namespaces are joined: a PID, or a name matched
    /// exactly against /proc/PID/comm (the earliest started of several), e.g. kubelet
    /// where PID 1's namespaces cannot be opened.
    #[arg(long, value_name = "TARGET", default_value = "1", requires = "host")]
    host_process: String,
    /// With --host, copy the --payload directory to this host directory (mounted at the
    /// same path in the container) before entering the host; the command gets it as
    /// $NODEOPS_PAYLOAD and as its working directory; removed afterwards.
    #[arg(long, value_name = "DIR", requires = "host")]
    stage_payload: Option<PathBuf>,
    /// The directory of the image that --stage-payload copies.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/payload",
        requires = "stage_payload"
    )]
    payload: PathBuf,
    /// User to run as.
    #[arg(long)]
    user: Option<String>,
    /// Seconds before the command is killed (exit code 124).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Working directory.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Bytes of the output's end to keep in the report.
    #[arg(long, default_value_t = 2048)]
    output_limit: usize,
    /// Bytes of the output's beginning to keep in the report when it is too long to keep
    /// whole (the bytes between the two ends are counted, not kept).
    #[arg(long, default_value_t = 1024)]
    output_head_limit: usize,
    /// Where the report goes (the container's terminationMessagePath).
    #[arg(long, default_value = "/dev/termination-log")]
    termination_log: PathBuf,
    /// Pass environment variables with this prefix to the command (parameters).
    #[arg(long, default_value = "NODEOPS_PARAM_")]
    env_prefix: String,
    /// Copy this binary to PATH and exit.
    #[arg(long, value_name = "PATH", conflicts_with = "argv")]
    install_to: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true)]
    argv: Vec<String>,
    /// Run the script in $NODEOPS_SCRIPT with `sh -s` on this host over SSH instead.
    #[arg(
        long,
        value_name = "IP",
        conflicts_with_all = ["argv", "host", "user", "install_to", "workdir"],
        requires_all = ["ssh_user", "ssh_auth"]
    )]
    ssh_host: Option<String>,
    /// SSH port of the host.
    #[arg(long, value_name = "PORT", default_value_t = 22, requires = "ssh_host")]
    ssh_port: u16,
    /// User to log in as on the host.
    #[arg(long, value_name = "USER", requires = "ssh_host")]
    ssh_user: Option<String>,
    /// File holding the SSH password (a Secret's `password` key).
    #[arg(long, value_name = "FILE", requires = "ssh_host")]
    ssh_password_file: Option<PathBuf>,
    /// Unencrypted OpenSSH or PEM private key (a Secret's `ssh-privatekey` key).
    #[arg(long, value_name = "FILE", requires = "ssh_host")]
    ssh_key_file: Option<PathBuf>,
    /// Verify the host key against this file. Without it (or when it does not exist) the
    /// host key is refused, unless --ssh-accept-unknown-host-key.
    #[arg(long, value_name = "FILE", requires = "ssh_host")]
    ssh_known_hosts_file: Option<PathBuf>,
    /// With no known_hosts file, accept the host key unverified; the report says so.
    #[arg(long, requires = "ssh_host")]
    ssh_accept_unknown_host_key: bool,
}

fn main() {
    let args = Args::parse();
    if let Some(dest) = &args.install_to {
        let result = std::env::current_exe().and_then(|me| std::fs::copy(me, dest));
        if let Err(e) = result {
            eprintln!("nodeops-exec: installing to {}: {e}", dest.display());
            std::process::exit(1);
        }
        return;
    }
    // Open the report file before entering the host: afterwards /dev is the host's.
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&args.termination_log)
        .ok();
    let report = match remote_spec(&args) {
        Some(Ok(spec)) => remote::run(&spec),
        Some(Err(message)) => RunReport {
            exit_code: exec::START_FAILED_EXIT_CODE,
            error: Some(message),
            ..Default::default()
        },
        None => match prepare_and_run(&args) {
            Ok(report) => report,
            Err(message) => RunReport {
                exit_code: exec::START_FAILED_EXIT_CODE,
                error: Some(message),
                ..Default::default()
            },
        },
    };
    if let Some(error) = &report.error {
        eprintln!("nodeops-exec: {error}");
    }
    if let Some(file) = log.as_mut() {
        let _ = file.write_all(report.to_termination_message().as_bytes());
    }
    // The Pod's log is the only whole copy of the output (`nodeops logs`).
    exec::drain_stdout(std::time::Duration::from_secs(10), report.printed());
    std::process::exit(report.exit_code);
}

/// The SSH run the flags ask for, if any (clap has checked they are complete).
fn remote_spec(args: &Args) -> Option<Result<RemoteSpec, String>> {
    let host = args.ssh_host.clone()?;
    let Some(script) = std::env::var_os("NODEOPS_SCRIPT") else {
        return Some(Err("NODEOPS_SCRIPT is not set: no script to run".into()));
    };
    let credentials = match (&args.ssh_password_file, &args.ssh_key_file) {
        (Some(file), _) => Credentials::PasswordFile(file.clone()),
        (None, file) => Credentials::KeyFile(file.clone()?),
    };
    let prefix = args.env_prefix.as_bytes();
    Some(Ok(RemoteSpec {
        host,
        port: args.ssh_port,
        user: args.ssh_user.clone()?,
        credentials,
        known_hosts: args.ssh_known_hosts_file.clone(),
        accept_unknown_host_key: args.ssh_accept_unknown_host_key,
        script: script.into_encoded_bytes(),
        params: std::env::vars_os()
            .filter(|(k, _)| k.as_encoded_bytes().starts_with(prefix))
            .collect(),
        timeout: Duration::from_secs(args.timeout),
        output_limit: args.output_limit,
        echo: true,
    }))
}

fn prepare_and_run(args: &Args) -> Result<RunReport, String> {
    let Some(staged) = &args.stage_payload else {
        return host_and_run(args, None);
    };
    // Copied while the image's files are still visible: the host's mount namespace hides
    // them. The same path names the copy on the host (a hostPath mounted there).
    exec::stage::stage(&args.payload, staged).map_err(|e| e.to_string())?;
    let result = host_and_run(args, Some(staged));
    if let Err(e) = exec::stage::remove(staged) {
        eprintln!("nodeops-exec: {e}");
    }
    result
}

fn host_and_run(args: &Args, staged: Option<&PathBuf>) -> Result<RunReport, String> {
    if args.host {
        exec::host::resolve(&args.host_process)
            .and_then(exec::host::enter_namespaces_of)
            .map_err(|e| e.to_string())?;
    }
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with(&args.env_prefix))
        .collect();
    if let Some(dir) = staged {
        env.push((PAYLOAD_ENV.into(), dir.display().to_string()));
    }
    let spec = RunSpec {
        argv: args.argv.clone(),
        user: args.user.clone(),
        timeout: Duration::from_secs(args.timeout),
        workdir: args.workdir.clone().or_else(|| staged.cloned()),
        output_limit: args.output_limit,
        head_limit: args.output_head_limit,
        env,
        echo: true,
    };
    match exec::run(&spec) {
        Ok(report) => Ok(report),
        Err(e) => Ok(RunReport::start_failed(&e)),
    }
}
