//! A PostgreSQL schema and login role per tenant: the part of a Tenant that lives outside Kubernetes.
//!
//! The Tenant reconciler calls, per tenant and database server:
//! * [`random_password`] once, storing the result in the tenant's Secret (the source of truth);
//! * [`ensure_tenant_database`] on every reconcile, with the password from that Secret — idempotent,
//!   crash-safe, and the way a rotated password reaches the server;
//! * [`connection_url`] to fill the Secret's `url` key;
//! * from the finalizer, [`retain_tenant_database`] (`deletionPolicy: Retain`, keeps the data, disables
//!   login) or [`drop_tenant_database`] (`Delete`).
//!
//! Each takes the Tenant's [`Ownership`]: roles and schemas are stamped with the Tenant's UID and
//! only the Tenant's own are ever changed, handed over or dropped.
//!
//! Every failure is a [`DatabaseError`]; [`DatabaseError::Unreachable`] means "server down or slow,
//! retry" and becomes `DatabaseReady=False` with reason `DatabaseUnreachable`.
//!
//! What a tenant role can do: log in (up to its connection limit) to the configured database,
//! create and use objects in its own schema (its `search_path`), read the system catalogs like
//! every role, and use `public` only as far as `PUBLIC` may (on PostgreSQL 15+: `USAGE`, no
//! `CREATE`). It has no rights on any other tenant's schema. `CONNECT`/`TEMPORARY` on the database
//! for `PUBLIC` are left as the server admin set them (see [`ensure_tenant_database`]).
//!
//! Roles are cluster-wide in PostgreSQL: two configured "servers" that are really two databases of
//! one cluster would share tenant roles. Configure one entry per PostgreSQL cluster.
//!
//! Secrets: passwords never appear in errors or logs. The admin password is redacted from
//! [`DatabaseServer`]'s `Debug`; tenant passwords only leave this module as SCRAM verifiers inside
//! DDL, with sqlx's statement logging off.

mod identifiers;
mod passwords;
mod provision;
mod scram;
mod server;

use rand::Rng;
use rand::distr::Alphanumeric;

pub use identifiers::{MAX_IDENTIFIER_BYTES, TenantIdentifiers, quote_identifier, quote_literal};
pub use passwords::PasswordMemo;
pub use provision::{
    OPERATION_TIMEOUT, Ownership, TENANTS_GROUP, TenantSchema, drop_tenant_database, ensure_tenant_database,
    ensure_tenant_database_remembered, marker, retain_tenant_database,
};
pub use server::{CONNECT_TIMEOUT, DatabaseServer};

/// Length of generated passwords: 32 characters from 62 symbols, about 190 bits.
pub const PASSWORD_LENGTH: usize = 32;

/// Everything this module can fail with. Messages never contain passwords.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The server could not be reached, or dropped the connection (down, restarting, network):
    /// retry with backoff.
    #[error("database server unreachable while {step}: {message}")]
    Unreachable { step: &'static str, message: String },
    /// The server answered with an error (permissions, a conflicting object, ...).
    #[error("SQL error while {step}{}: {message}", code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Sql { step: &'static str, code: Option<String>, message: String },
    /// A name that must not reach SQL: invalid tenant name, or an identifier PostgreSQL would mangle.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// A literal (a password) that cannot be used; the value itself is never included.
    #[error("invalid value: {reason}")]
    InvalidLiteral { reason: &'static str },
    /// The tenant's role or schema exists but was not made for this Tenant
    /// (by someone else, or for an earlier Tenant of the same name).
    #[error(
        "{kind} {name} exists and was not created for this Tenant ({}); Ember will not take it over",
        match holder {
            Some(uid) => format!("it belongs to the earlier Tenant with UID {uid}; a platform admin may hand it over with the annotation ember.dev/adopt-database={uid}"),
            None => "it was not created by Ember; rename or drop it, or choose another tenant name".to_owned(),
        }
    )]
    NotOurs { kind: &'static str, name: String, holder: Option<String> },
    /// A connection limit that is not a limit (below 1).
    #[error("connection limit must be at least 1, got {0}")]
    InvalidConnectionLimit(i32),
}

impl DatabaseError {
    /// A bounded, CamelCase category for metric labels and condition/Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            DatabaseError::Unreachable { .. } => "DatabaseUnreachable",
            // SQLSTATE class 28: the admin credentials are wrong; 42501: the admin role lacks a right.
            DatabaseError::Sql { code: Some(code), .. } if code.starts_with("28") => "DatabaseAuthenticationFailed",
            DatabaseError::Sql { code: Some(code), .. } if code == "42501" => "DatabasePermissionDenied",
            DatabaseError::Sql { .. } => "DatabaseError",
            DatabaseError::InvalidName { .. } => "InvalidDatabaseName",
            DatabaseError::InvalidLiteral { .. } => "InvalidDatabasePassword",
            DatabaseError::InvalidConnectionLimit(_) => "InvalidConnectionLimit",
            DatabaseError::NotOurs { .. } => "DatabaseConflict",
        }
    }

    /// True when retrying cannot help until the input changes.
    pub fn needs_user_action(&self) -> bool {
        matches!(
            self,
            DatabaseError::InvalidName { .. }
                | DatabaseError::InvalidLiteral { .. }
                | DatabaseError::InvalidConnectionLimit(_)
                | DatabaseError::NotOurs { .. }
        )
    }

    /// Sorts a sqlx error into "unreachable" (connection-level: retry) or "SQL" (the server said no).
    ///
    /// Only the server's message and SQLSTATE are kept, not the statement; statements carrying a
    /// secret only ever carry its SCRAM verifier.
    pub(crate) fn from_sqlx(step: &'static str, error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned());
                // Class 08: connection exceptions. 57P01-57P03: the server is shutting down, crashed
                // or still starting — all mean "come back later".
                let connection_level =
                    code.as_deref().is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"));
                if connection_level {
                    DatabaseError::Unreachable { step, message: db.message().to_owned() }
                } else {
                    DatabaseError::Sql { step, code, message: db.message().to_owned() }
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DatabaseError::Unreachable { step, message: error.to_string() },
            other => DatabaseError::Sql { step, code: None, message: other.to_string() },
        }
    }
}

/// A fresh tenant password: [`PASSWORD_LENGTH`] ASCII letters and digits from the thread-local
/// CSPRNG (ChaCha, seeded from the OS). Letters and digits only, so it goes into a `postgres://` URL,
/// an environment variable or a shell without escaping, and SASLprep leaves it unchanged.
pub fn random_password() -> String {
    rand::rng().sample_iter(Alphanumeric).take(PASSWORD_LENGTH).map(char::from).collect()
}

/// The tenant's `postgres://user:password@host:port/database` URL, for its Secret.
///
/// The password and database name are percent-encoded, so any value round-trips (generated
/// passwords need none); an IPv6 host is bracketed.
pub fn connection_url(server: &DatabaseServer, tenant: &str, password: &str) -> Result<String, DatabaseError> {
    let ids = TenantIdentifiers::for_tenant(tenant)?;
    let host = if server.host.contains(':') { format!("[{}]", server.host) } else { server.host.clone() };
    Ok(format!(
        "postgres://{}:{}@{host}:{}/{}",
        percent_encode(&ids.role),
        percent_encode(password),
        server.port,
        percent_encode(&server.database)
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str) -> DatabaseServer {
        DatabaseServer {
            name: "pg-a".into(),
            host: host.into(),
            port: 5433,
            database: "ember db".into(),
            admin_user: "admin".into(),
            admin_password: "admin-secret".into(),
        }
    }

    #[test]
    fn passwords_are_long_url_safe_and_distinct() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        // 62^32 > 2^128.
        assert!((PASSWORD_LENGTH as f64) * 62f64.log2() >= 128.0);
    }

    #[test]
    fn url_names_the_tenant_role_and_escapes_what_needs_it() {
        let url = connection_url(&server("db.internal"), "data-team", "p@ss/w:rd").unwrap_or_else(|e| panic!("{e}"));
        assert!(url.starts_with("postgres://tenant_data_team:"), "{url}");
        assert!(url.contains(":p%40ss%2Fw%3Ard@db.internal:5433/"), "{url}");
        assert!(url.ends_with("/ember%20db"), "{url}");
    }

    #[test]
    fn url_brackets_ipv6_hosts() {
        let url = connection_url(&server("fd00::1"), "acme", "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(url.contains("@[fd00::1]:5433/"), "{url}");
    }

    #[test]
    fn url_refuses_invalid_tenants() {
        assert!(matches!(connection_url(&server("h"), "Bad", "x"), Err(DatabaseError::InvalidName { .. })));
    }

    #[test]
    fn categories_are_short_and_stable() {
        let unreachable = DatabaseError::from_sqlx("connecting", sqlx::Error::PoolTimedOut);
        assert_eq!(unreachable.category(), "DatabaseUnreachable");
        assert!(!unreachable.needs_user_action());
        assert!(DatabaseError::InvalidConnectionLimit(0).needs_user_action());
    }
}
