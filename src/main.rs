//! `nodeops`: the operator binary.

use clap::Parser;
use nodeops::operator;
use nodeops::telemetry::{self, LogFormat};

/// Runs nodeops' controllers against the cluster in the kubeconfig or in-cluster config.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Log format.
    #[arg(long, env = "NODEOPS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, in RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info,kube=warn")]
    log_filter: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, &args.log_filter);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting nodeops");
    let client = operator::connect().await?;
    let stopped_by = operator::run(client, operator::shutdown::signal_received()).await?;
    tracing::info!(signal = stopped_by, "nodeops stopped");
    Ok(())
}
