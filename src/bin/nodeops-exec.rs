//! `nodeops-exec`: the runner nodeops puts on nodes. It runs `ARGV` (exec'd directly, no
//! shell), on the host with `--host`, as `--user`, killed after `--timeout` seconds, and
//! writes `{exitCode, output, truncated, timedOut}` to the termination-message file so the
//! result arrives in the Pod status. It exits with the command's exit code.
//!
//! `nodeops-exec --install-to PATH` copies the runner to PATH (the init container of
//! Container mode, which then runs it inside the user's image).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nodeops::exec::{self, RunReport, RunSpec};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Runs a command on a node and reports its outcome as the termination message"
)]
struct Args {
    /// Join the host's namespaces (PID 1's) before running: needs a privileged hostPID pod.
    #[arg(long)]
    host: bool,
    /// User to run as.
    #[arg(long)]
    user: Option<String>,
    /// Seconds before the command is killed (exit code 124).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Working directory.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Bytes of output tail to keep in the report.
    #[arg(long, default_value_t = 2048)]
    output_limit: usize,
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
    let report = match prepare_and_run(&args) {
        Ok(report) => report,
        Err(message) => RunReport {
            exit_code: exec::START_FAILED_EXIT_CODE,
            error: Some(message),
            ..Default::default()
        },
    };
    if let Some(error) = &report.error {
        eprintln!("nodeops-exec: {error}");
    }
    if let Some(file) = log.as_mut() {
        let _ = file.write_all(report.to_termination_message().as_bytes());
    }
    std::process::exit(report.exit_code);
}

fn prepare_and_run(args: &Args) -> Result<RunReport, String> {
    if args.host {
        exec::host::enter_namespaces_of(1).map_err(|e| e.to_string())?;
    }
    let env = std::env::vars()
        .filter(|(k, _)| k.starts_with(&args.env_prefix))
        .collect();
    let spec = RunSpec {
        argv: args.argv.clone(),
        user: args.user.clone(),
        timeout: Duration::from_secs(args.timeout),
        workdir: args.workdir.clone(),
        output_limit: args.output_limit,
        env,
        echo: true,
    };
    match exec::run(&spec) {
        Ok(report) => Ok(report),
        Err(e) => Ok(RunReport::start_failed(&e)),
    }
}
