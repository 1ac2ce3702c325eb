//! ember-runtime binary: parse flags, set up logging, serve until SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use ember_runtime::Error;
use ember_runtime::args::Args;
use ember_runtime::server::{Runtime, termination_signal};
use ember_runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let address = SocketAddr::new(args.listen_address, args.port);
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
    tracing::info!(%address, model = %args.model_name, "ember-runtime listening");
    let runtime = match Runtime::start(&args).await {
        Ok(runtime) => runtime,
        Err(error) => {
            write_termination_message(&args.termination_log, &error);
            return Err(error).context("starting the model");
        }
    };
    runtime.serve(listener, termination_signal()).await.context("serving")?;
    tracing::info!("ember-runtime stopped");
    Ok(())
}

/// Tells Kubernetes why the model did not start: the kubelet copies this
/// file into the container's `terminated.message`, where the operator reads
/// the reason. Nothing is created when the file is not there (outside a pod).
fn write_termination_message(path: &std::path::Path, error: &Error) {
    if !path.exists() {
        return;
    }
    let message = format!("{}: {error}", error.reason());
    if let Err(write_error) = std::fs::write(path, message) {
        tracing::warn!(%write_error, path = %path.display(), "could not write the termination message");
    }
}
