//! Command line and environment of the operator binary.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Reconciles Ember Tenants and ModelDeployments.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ember-operator", version, about)]
pub struct Args {
    /// YAML configuration file (platform namespace, database servers).
    #[arg(long, env = "EMBER_OPERATOR_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "EMBER_OPERATOR_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,

    /// Elect a leader through a Lease so only one replica reconciles.
    #[arg(long, env = "EMBER_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "EMBER_OPERATOR_LEASE_NAMESPACE", default_value = "ember-system")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, env = "EMBER_OPERATOR_LEASE_NAME", default_value = "ember-operator")]
    pub lease_name: String,

    /// Identity of this replica in the Lease; the pod name in clusters.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, env = "EMBER_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u32,

    /// Tenants reconciled in parallel.
    #[arg(long, env = "EMBER_OPERATOR_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Log format: `json` (clusters) or `text` (terminals).
    #[arg(long, env = "EMBER_LOG_FORMAT", default_value = "json")]
    pub log_format: crate::telemetry::LogFormat,
}
