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
//! ```
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
    fn the_shipped_configuration_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/operator/config.yaml");
        let config = OperatorConfig::load(Some(&path)).unwrap();
        assert!(config.runtime_image.starts_with("ghcr.io/ember-dev/ember-runtime:"));
        assert!(config.runtime_wgpu_image.ends_with("-wgpu"));
    }
}
