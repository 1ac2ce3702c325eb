//! A PostgreSQL server tenants can be placed on, and the admin connection pool to it.
//!
//! The operator's YAML configuration lists servers; each entry deserialises into a
//! [`DatabaseServer`]. The pool is small (the operator only runs short DDL transactions) and lazy:
//! building it does no I/O, so the operator starts while a server is down, and every acquire is
//! bounded by [`CONNECT_TIMEOUT`] so an outage surfaces as [`DatabaseError::Unreachable`] within
//! seconds instead of hanging a reconcile.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Longest wait for a connection (including connecting) before a call fails as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Admin connections per server: one per concurrent reconcile (the operator's
/// default `--concurrency`), so the read-only checks of a busy pass never
/// queue for a connection. Writes still serialise at the shared-ACL lock.
const MAX_ADMIN_CONNECTIONS: u32 = 16;

fn default_port() -> u16 {
    5432
}

/// One database server from the operator's configuration.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseServer {
    /// Name tenants refer to in `spec.database.server` and status.
    pub name: String,
    /// Host name or IP address tenants and the operator connect to.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database that holds the tenant schemas.
    pub database: String,
    /// Role the operator connects as: a superuser, or on PostgreSQL 16+ a role with CREATEROLE that
    /// owns the database and its `public` schema.
    pub admin_user: String,
    /// Password of `admin_user`. Never printed: [`fmt::Debug`] redacts it.
    pub admin_password: String,
}

impl fmt::Debug for DatabaseServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseServer")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &"<redacted>")
            .finish()
    }
}

impl DatabaseServer {
    /// Connection options for the admin role.
    ///
    /// Statement logging is off: DDL carries the tenant's password verifier in its text, and
    /// sqlx would otherwise log statements at debug level (and slow ones as warnings).
    pub fn admin_connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .database(&self.database)
            .username(&self.admin_user)
            .password(&self.admin_password)
            .application_name("ember-operator")
            .disable_statement_logging()
    }

    /// A small lazy pool of admin connections. No I/O happens here; the first query connects.
    pub fn admin_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(MAX_ADMIN_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            // Idle connections die during an outage; dropping them soon keeps the next acquire from
            // first tripping over a dead socket.
            .idle_timeout(Duration::from_secs(60))
            .test_before_acquire(true)
            .connect_lazy_with(self.admin_connect_options())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "
name: pg-a
host: db.example.internal
database: ember
adminUser: ember_admin
adminPassword: s3cr3t-admin
";

    #[test]
    fn deserialises_camel_case_yaml_with_a_default_port() {
        let server: DatabaseServer = serde_yaml::from_str(YAML).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.name, "pg-a");
        assert_eq!(server.port, 5432);
        assert_eq!(server.admin_user, "ember_admin");
        assert_eq!(server.admin_password, "s3cr3t-admin");
    }

    #[test]
    fn refuses_unknown_fields() {
        let typo = format!("{YAML}adminPasword: x\n");
        assert!(serde_yaml::from_str::<DatabaseServer>(&typo).is_err());
    }

    #[test]
    fn debug_output_redacts_the_admin_password() {
        let server: DatabaseServer = serde_yaml::from_str(YAML).unwrap_or_else(|e| panic!("{e}"));
        let printed = format!("{server:?}");
        assert!(printed.contains("db.example.internal"));
        assert!(!printed.contains("s3cr3t-admin"));
    }
}
