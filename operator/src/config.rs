//! The operator's YAML configuration file: where the platform runs and which
//! PostgreSQL servers hold tenant schemas.
//!
//! ```yaml
//! platformNamespace: ember-system
//! databaseServers:
//!   - name: pg-a                   # what Tenant.spec.database.server refers to
//!     host: pg-a.databases.svc     # as seen from operator and tenant pods
//!     port: 5432
//!     database: ember
//!     adminSecret: pg-a-admin      # Secret in platformNamespace with `username` and `password`
//!     networkCidr: 10.20.0.5/32    # optional: tenant pods may reach only this address
//! runtimeImage: ghcr.io/ember-dev/ember-runtime:0.1.0           # model pods, backend cpu
//! runtimeWgpuImage: ghcr.io/ember-dev/ember-runtime:0.1.0-wgpu  # model pods, backend wgpu
//! modelStores:                     # where model pods may fetch weights from
//!   - name: models                 # for humans and error messages
//!     cidr: 10.20.0.9/32           # the store's address range
//!     ports: [443]                 # TCP ports (default 443 and 80)
//! ```
//!
//! Model pods live behind a default-deny egress policy; `modelStores` is
//! the platform team's list of what they may reach to download weights.
//! Without it a ModelDeployment can only use `file://` sources.
//!
//! Several servers shard tenants: a Tenant names one in
//! `spec.database.server`, or the operator places it (a stable hash of the
//! tenant name over the configured servers) and records the choice in
//! `status.database.server`, which wins from then on.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// Namespace of the platform (ember-api, operator); tenant pods accept traffic from it.
    #[serde(default = "default_platform_namespace")]
    pub platform_namespace: String,
    /// PostgreSQL servers that hold tenant schemas.
    #[serde(default)]
    pub database_servers: Vec<DatabaseServerConfig>,
    /// Image of ember-runtime for ModelDeployments with `backend: cpu`.
    #[serde(default = "default_runtime_image")]
    pub runtime_image: String,
    /// Image of ember-runtime built with `--features wgpu`, for `backend: wgpu`.
    /// A separate image keeps the GPU stack out of the CPU pods.
    #[serde(default = "default_runtime_wgpu_image")]
    pub runtime_wgpu_image: String,
    /// Model stores tenant pods may reach (egress NetworkPolicy of every tenant).
    #[serde(default)]
    pub model_stores: Vec<ModelStoreConfig>,
    /// Seconds between checks of a converged Tenant, ±10 % so thousands of
    /// them do not come due together. Changes made through the API server
    /// wake the operator at once; only drift outside it (a schema dropped by
    /// hand) waits for this check, which writes nothing when nothing drifted.
    #[serde(default = "default_resync_seconds")]
    pub resync_seconds: u64,
    /// Lets each Tenant's owners and members `get` their own Tenant object
    /// with kubectl, through one ClusterRole and ClusterRoleBinding per
    /// Tenant (`ember-tenant-<t>-reader`). Off by default: the API server's
    /// RBAC authorizer scans every ClusterRoleBinding on every request of
    /// every client in the cluster, so a binding per tenant taxes the whole
    /// cluster as tenants grow (a quarter to two fifths of the API server's
    /// CPU at 2,000-4,000 bindings, `docs/benchmarks.md`). Without it, tenant
    /// users read their Tenant through ember-api (`GET /v1/tenants/{t}`) and
    /// their namespace's objects with kubectl as before. Turned off, the
    /// pairs made earlier are deleted.
    #[serde(default)]
    pub tenant_reader_roles: bool,
}

fn default_resync_seconds() -> u64 {
    900
}

/// One place model weights are downloaded from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelStoreConfig {
    pub name: String,
    /// Address range of the store, e.g. `10.20.0.9/32`.
    pub cidr: String,
    /// TCP ports the store serves on.
    #[serde(default = "default_model_store_ports")]
    pub ports: Vec<u16>,
}

/// One PostgreSQL server.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseServerConfig {
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_database")]
    pub database: String,
    /// Secret in the platform namespace with keys `username` and `password`.
    pub admin_secret: String,
    /// Address range tenant pods may reach the server on; without it no database egress is opened.
    #[serde(default)]
    pub network_cidr: Option<String>,
}

fn default_platform_namespace() -> String {
    "ember-system".into()
}
fn default_runtime_image() -> String {
    "ghcr.io/ember-dev/ember-runtime:0.1.0".into()
}
fn default_runtime_wgpu_image() -> String {
    "ghcr.io/ember-dev/ember-runtime:0.1.0-wgpu".into()
}
fn default_model_store_ports() -> Vec<u16> {
    vec![443, 80]
}
fn default_port() -> u16 {
    5432
}
fn default_database() -> String {
    "postgres".into()
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            platform_namespace: default_platform_namespace(),
            database_servers: Vec::new(),
            runtime_image: default_runtime_image(),
            runtime_wgpu_image: default_runtime_wgpu_image(),
            model_stores: Vec::new(),
            resync_seconds: default_resync_seconds(),
            tenant_reader_roles: false,
        }
    }
}

impl OperatorConfig {
    /// Reads and checks the file; no file means defaults (and no database servers).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        let config: Self =
            serde_yaml::from_str(&text).map_err(|e| Error::Config(format!("parsing {}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for server in &self.database_servers {
            if !names.insert(server.name.as_str()) {
                return Err(Error::Config(format!("database server {:?} is listed twice", server.name)));
            }
        }
        for store in &self.model_stores {
            if !is_ipv4_cidr(&store.cidr) {
                return Err(Error::Config(format!(
                    "model store {:?}: cidr {:?} is not an IPv4 CIDR like 10.0.0.9/32",
                    store.name, store.cidr
                )));
            }
            if store.ports.is_empty() || store.ports.contains(&0) {
                return Err(Error::Config(format!("model store {:?}: ports must list TCP ports 1-65535", store.name)));
            }
        }
        Ok(())
    }

    /// The server a tenant's schema lives on: what status recorded, else what
    /// the spec asks for, else a stable hash placement.
    pub fn place_tenant(
        &self,
        tenant: &str,
        requested: Option<&str>,
        recorded: Option<&str>,
    ) -> Result<&DatabaseServerConfig> {
        if let Some(name) = recorded.or(requested) {
            return self
                .database_servers
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::UnknownDatabaseServer(name.to_owned()));
        }
        if self.database_servers.is_empty() {
            return Err(Error::NoDatabaseServers);
        }
        let index = stable_hash(tenant) % self.database_servers.len() as u64;
        Ok(&self.database_servers[index as usize])
    }
}

/// `a.b.c.d/n` with n in 0..=32: what a NetworkPolicy ipBlock accepts.
fn is_ipv4_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    address.parse::<std::net::Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
}

/// FNV-1a: stable across releases and platforms, unlike `std`'s hasher.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(names: &[&str]) -> OperatorConfig {
        OperatorConfig {
            platform_namespace: "ember-system".into(),
            database_servers: names
                .iter()
                .map(|n| DatabaseServerConfig {
                    name: (*n).into(),
                    host: "h".into(),
                    port: 5432,
                    database: "d".into(),
                    admin_secret: "s".into(),
                    network_cidr: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn recorded_placement_wins_over_spec_and_hash() {
        let c = config(&["a", "b"]);
        assert_eq!(c.place_tenant("acme", Some("a"), Some("b")).unwrap().name, "b");
        assert_eq!(c.place_tenant("acme", Some("a"), None).unwrap().name, "a");
    }

    #[test]
    fn automatic_placement_is_stable_and_spreads() {
        let c = config(&["a", "b", "c"]);
        let first = c.place_tenant("acme", None, None).unwrap().name.clone();
        assert_eq!(c.place_tenant("acme", None, None).unwrap().name, first);
        let used: std::collections::BTreeSet<_> =
            (0..30).map(|i| c.place_tenant(&format!("t{i}"), None, None).unwrap().name.clone()).collect();
        assert_eq!(used.len(), 3);
    }

    #[test]
    fn unknown_or_missing_servers_are_errors() {
        assert!(matches!(config(&["a"]).place_tenant("x", Some("z"), None), Err(Error::UnknownDatabaseServer(_))));
        assert!(matches!(config(&[]).place_tenant("x", None, None), Err(Error::NoDatabaseServers)));
    }

    #[test]
    fn parses_yaml_and_refuses_unknown_fields() {
        let parsed: OperatorConfig =
            serde_yaml::from_str("databaseServers:\n- {name: a, host: db, adminSecret: s, networkCidr: 10.0.0.1/32}\n")
                .unwrap();
        assert_eq!(parsed.platform_namespace, "ember-system");
        assert_eq!(parsed.database_servers[0].port, 5432);
        assert_eq!(parsed.runtime_image, OperatorConfig::default().runtime_image);
        let custom: OperatorConfig = serde_yaml::from_str("runtimeImage: registry.example/rt:1\n").unwrap();
        assert_eq!(custom.runtime_image, "registry.example/rt:1");
        assert!(serde_yaml::from_str::<OperatorConfig>("bogus: 1\n").is_err());
    }

    #[test]
    fn model_stores_parse_with_default_ports_and_bad_cidrs_are_refused() {
        let parsed: OperatorConfig = serde_yaml::from_str(
            "modelStores:\n- {name: m, cidr: 10.89.0.1/32, ports: [8000]}\n- {name: n, cidr: 10.1.0.0/16}\n",
        )
        .unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.model_stores[0].ports, vec![8000]);
        assert_eq!(parsed.model_stores[1].ports, vec![443, 80]);
        for bad in ["models.example", "10.0.0.1", "10.0.0.1/33", "::1/128"] {
            let config: OperatorConfig =
                serde_yaml::from_str(&format!("modelStores:\n- {{name: m, cidr: \"{bad}\"}}\n")).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("model store \"m\""), "{bad}: {error}");
        }
        let no_ports: OperatorConfig =
            serde_yaml::from_str("modelStores:\n- {name: m, cidr: 10.0.0.1/32, ports: []}\n").unwrap();
        assert!(no_ports.validate().is_err());
    }

    #[test]
    fn the_shipped_configuration_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/operator/config.yaml");
        let config = OperatorConfig::load(Some(&path)).unwrap();
        assert!(config.runtime_image.starts_with("ghcr.io/ember-dev/ember-runtime:"));
        assert!(config.runtime_wgpu_image.ends_with("-wgpu"));
        assert!(!config.tenant_reader_roles, "a ClusterRoleBinding per tenant is opt-in");
    }
}
