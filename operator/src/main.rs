//! ember-operator binary: wires configuration, health server, leader
//! election and controllers together. A replica that loses leadership exits
//! so it can never act alongside a new leader; its restart campaigns again.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use ember_operator::args::Args;
use ember_operator::config::OperatorConfig;
use ember_operator::context::Context;
use ember_operator::health::{self, HealthState};
use ember_operator::leader::{self, LeaseConfig};
use ember_operator::metrics::Metrics;
use ember_operator::{controllers, telemetry};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let config = OperatorConfig::load(args.config.as_deref()).context("loading the configuration")?;
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let metrics = Metrics::default();
    let health = HealthState::new(metrics.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let health_server = tokio::spawn(health::serve(args.health_addr, health.clone(), wait_for(stop_rx.clone())));
    health.set_ready(true);

    let campaign = args.leader_election.then(|| {
        let identity = args.identity.clone().unwrap_or_else(default_identity);
        let lease = LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(u64::from(args.lease_seconds)),
        };
        tracing::info!(%identity, lease = %args.lease_name, "campaigning for leadership");
        leader::campaign(client.clone(), lease)
    });
    let mut leading = match &campaign {
        Some(campaign) => campaign.leading.clone(),
        None => {
            // Without election this replica always leads; the sender must outlive
            // the run, or the closed channel would read as "leadership lost".
            let (always, leading) = watch::channel(true);
            std::mem::forget(always);
            leading
        }
    };

    // Wait to lead (or to be told to stop).
    let mut stop = stop_rx.clone();
    while !*leading.borrow() {
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
    }
    let outcome = if *stop_rx.borrow() || !*leading.borrow() {
        Ok(())
    } else {
        lead(client, config, &args, &metrics, leading, stop_rx.clone()).await
    };
    // Only now, with reconciling over, may a successor start.
    if let Some(campaign) = campaign {
        campaign.resign().await;
    }
    outcome?;
    let _ = health_server.await;
    Ok(())
}

/// Runs the controllers until shutdown (Ok) or until leadership is lost (Err).
async fn lead(
    client: kube::Client,
    config: OperatorConfig,
    args: &Args,
    metrics: &Metrics,
    leading: watch::Receiver<bool>,
    stop_rx: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    metrics.is_leader.set(1);
    tracing::info!(platform_namespace = %config.platform_namespace, servers = config.database_servers.len(), "leading: starting controllers");

    let ctx = Arc::new(Context::new(client, config, metrics.clone()));
    let mut lost = leading;
    let lost_leadership = async move {
        while *lost.borrow() {
            if lost.changed().await.is_err() {
                break;
            }
        }
    };
    let stopping = wait_for(stop_rx);
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let controllers_shutdown = async move {
        tokio::select! {
            _ = stopping => {}
            _ = lost_leadership => { let _ = lost_tx.send(true); }
        }
    };
    controllers::run(ctx, args.concurrency, controllers_shutdown).await;
    metrics.is_leader.set(0);
    if *lost_rx.borrow_and_update() {
        anyhow::bail!("lost leadership; exiting so a restart campaigns again");
    }
    Ok(())
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "ember-operator".into());
    format!("{}-{}", host.trim(), std::process::id())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
