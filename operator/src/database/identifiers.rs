//! Turning tenant names into PostgreSQL identifiers and literals that are safe to splice into DDL.
//!
//! DDL (`CREATE ROLE`, `GRANT`, ...) cannot take bind parameters, so role and schema names and the
//! role's password have to be written into the statement text. Everything that goes there passes
//! through this module: names are derived from a validated tenant name by `ember_crds::names`,
//! checked against PostgreSQL's identifier limit (so nothing is silently truncated into another
//! tenant's name), and always double-quoted; literals are single-quoted with the escaping rules that
//! hold whatever `standard_conforming_strings` says. Pure functions, no I/O.

use ember_crds::names::{database_role_for, schema_name_for, validate_tenant_name};

use super::DatabaseError;

/// PostgreSQL's identifier limit in bytes (`NAMEDATALEN - 1`). Longer names are truncated by the
/// server, which could make two tenants share a role; we refuse them instead.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Writes `name` as a quoted identifier: `"name"`, with inner `"` doubled.
///
/// Quoting always (not only when needed) keeps the rule trivial to audit and stops the server from
/// case-folding. Refuses what no quoting can carry: empty names, NUL bytes and names PostgreSQL
/// would truncate.
pub fn quote_identifier(name: &str) -> Result<String, DatabaseError> {
    let invalid = |reason: &str| DatabaseError::InvalidName { name: name.to_owned(), reason: reason.to_owned() };
    if name.is_empty() {
        return Err(invalid("identifier is empty"));
    }
    if name.contains('\0') {
        return Err(invalid("identifier contains a NUL byte"));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(invalid("identifier is longer than 63 bytes and would be truncated by PostgreSQL"));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Writes `value` as a string literal: `'value'`, inner `'` doubled. A value containing a backslash
/// is written as an escape string (`E'...'`, backslashes doubled) — the same rule as the server's
/// own `quote_literal()` — so its meaning does not depend on `standard_conforming_strings`.
///
/// Used for passwords, so the error never repeats the value.
pub fn quote_literal(value: &str) -> Result<String, DatabaseError> {
    if value.contains('\0') {
        return Err(DatabaseError::InvalidLiteral { reason: "contains a NUL byte" });
    }
    let quoted = value.replace('\'', "''");
    Ok(if quoted.contains('\\') { format!("E'{}'", quoted.replace('\\', "\\\\")) } else { format!("'{quoted}'") })
}

/// The PostgreSQL names of one tenant, checked and quoted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIdentifiers {
    /// Login role, unquoted (what `pg_roles.rolname` holds).
    pub role: String,
    /// Schema, unquoted (what `pg_namespace.nspname` holds).
    pub schema: String,
    /// `role` as a quoted identifier, ready for DDL.
    pub quoted_role: String,
    /// `schema` as a quoted identifier, ready for DDL.
    pub quoted_schema: String,
}

impl TenantIdentifiers {
    /// Derives role and schema of `tenant`. The caller validated the name already (the CRD does);
    /// this checks again because a wrong name here reaches DDL.
    pub fn for_tenant(tenant: &str) -> Result<Self, DatabaseError> {
        validate_tenant_name(tenant)
            .map_err(|e| DatabaseError::InvalidName { name: tenant.to_owned(), reason: e.to_string() })?;
        let role = database_role_for(tenant);
        let schema = schema_name_for(tenant);
        // Injectivity of tenant → schema relies on the derived names being stored untruncated and
        // using only characters that survive unquoted folding; check both instead of trusting it.
        for name in [&role, &schema] {
            let plain = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !plain {
                return Err(DatabaseError::InvalidName {
                    name: name.clone(),
                    reason: "derived name has characters outside [a-z0-9_]".to_owned(),
                });
            }
        }
        Ok(Self { quoted_role: quote_identifier(&role)?, quoted_schema: quote_identifier(&schema)?, role, schema })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_double_quoted() {
        assert_eq!(quote_identifier("tenant_acme").ok(), Some("\"tenant_acme\"".to_owned()));
        assert_eq!(quote_identifier("Mixed Case").ok(), Some("\"Mixed Case\"".to_owned()));
    }

    #[test]
    fn embedded_double_quotes_are_doubled() {
        assert_eq!(quote_identifier("a\"b").ok(), Some("\"a\"\"b\"".to_owned()));
        assert_eq!(quote_identifier("\"; DROP ROLE x; --").ok(), Some("\"\"\"; DROP ROLE x; --\"".to_owned()));
    }

    #[test]
    fn identifiers_postgres_would_mangle_are_refused() {
        assert!(matches!(quote_identifier(""), Err(DatabaseError::InvalidName { .. })));
        assert!(matches!(quote_identifier("a\0b"), Err(DatabaseError::InvalidName { .. })));
        assert!(quote_identifier(&"a".repeat(63)).is_ok());
        assert!(matches!(quote_identifier(&"a".repeat(64)), Err(DatabaseError::InvalidName { .. })));
        // 63 bytes is the limit, not 63 characters: 32 two-byte characters are 64 bytes.
        assert!(matches!(quote_identifier(&"é".repeat(32)), Err(DatabaseError::InvalidName { .. })));
    }

    #[test]
    fn literals_double_single_quotes_and_escape_backslashes() {
        assert_eq!(quote_literal("secret").ok(), Some("'secret'".to_owned()));
        assert_eq!(quote_literal("it's").ok(), Some("'it''s'".to_owned()));
        assert_eq!(quote_literal("a\\b'c").ok(), Some("E'a\\\\b''c'".to_owned()));
        assert_eq!(quote_literal("").ok(), Some("''".to_owned()));
    }

    #[test]
    fn literal_errors_never_repeat_the_value() {
        let error = quote_literal("hunter2\0").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!error.is_empty());
        assert!(!error.contains("hunter2"));
    }

    #[test]
    fn tenant_identifiers_follow_the_naming_rules() {
        let ids = TenantIdentifiers::for_tenant("data-team").ok();
        let ids = ids.as_ref();
        assert_eq!(ids.map(|i| i.role.as_str()), Some("tenant_data_team"));
        assert_eq!(ids.map(|i| i.schema.as_str()), Some("tenant_data_team"));
        assert_eq!(ids.map(|i| i.quoted_schema.as_str()), Some("\"tenant_data_team\""));
        assert_eq!(ids.map(|i| i.quoted_role.as_str()), Some("\"tenant_data_team\""));
    }

    #[test]
    fn the_longest_tenant_name_still_fits_untruncated() {
        let longest = "a".repeat(ember_crds::names::MAX_TENANT_NAME_LEN);
        let ids = TenantIdentifiers::for_tenant(&longest).ok();
        assert_eq!(ids.map(|i| i.schema.len()), Some(MAX_IDENTIFIER_BYTES));
    }

    #[test]
    fn invalid_tenant_names_never_reach_sql() {
        for bad in ["", "Acme", "a\"b", "a;b", "ac_me", "x-", "1a", &"a".repeat(57), "tenant\0"] {
            assert!(
                matches!(TenantIdentifiers::for_tenant(bad), Err(DatabaseError::InvalidName { .. })),
                "{bad:?} was accepted"
            );
        }
    }
}
