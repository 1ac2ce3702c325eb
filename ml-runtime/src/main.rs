//! ember-runtime binary: parse flags, set up logging, serve until SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
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
    let runtime = Runtime::start(&args).await.context("starting the model")?;
    runtime.serve(listener, termination_signal()).await.context("serving")?;
    tracing::info!("ember-runtime stopped");
    Ok(())
}
