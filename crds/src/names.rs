//! Naming rules: how a tenant's name becomes the names of what it owns.
//!
//! Every derived name goes through one function here, so the operator, the
//! REST API and the tests can never disagree. The mappings are injective:
//! tenant names are DNS-1123 labels (no `_`), so replacing `-` by `_` for
//! PostgreSQL identifiers cannot make two tenants collide, and the length
//! limit keeps every derived name inside its own limit (63 for namespaces and
//! PostgreSQL identifiers) without truncation.

/// Longest tenant name: `tenant-` / `tenant_` (7 bytes) + 56 = 63, the limit of
/// both a namespace name and a PostgreSQL identifier.
pub const MAX_TENANT_NAME_LEN: usize = 56;

/// Prefix of every tenant namespace.
pub const TENANT_NAMESPACE_PREFIX: &str = "tenant-";

/// Prefix of every tenant schema and database role.
pub const TENANT_SCHEMA_PREFIX: &str = "tenant_";

/// Name of the Secret with database credentials in the tenant namespace.
pub const DATABASE_SECRET_NAME: &str = "ember-database";

/// Why a string is not a valid tenant name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTenantName {
    #[error("tenant name must not be empty")]
    Empty,
    #[error("tenant name must have at most {MAX_TENANT_NAME_LEN} characters, got {0}")]
    TooLong(usize),
    #[error("tenant name must start with a lowercase letter")]
    BadStart,
    #[error("tenant name must end with a lowercase letter or digit")]
    BadEnd,
    #[error("tenant name may only contain lowercase letters, digits and '-', found {0:?}")]
    BadCharacter(char),
}

/// Checks the same rule the CRD's CEL validation enforces, for callers that
/// take names from elsewhere (REST paths, namespace names).
pub fn validate_tenant_name(name: &str) -> Result<(), InvalidTenantName> {
    let first = name.chars().next().ok_or(InvalidTenantName::Empty)?;
    if name.len() > MAX_TENANT_NAME_LEN {
        return Err(InvalidTenantName::TooLong(name.len()));
    }
    if !first.is_ascii_lowercase() {
        return Err(InvalidTenantName::BadStart);
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(InvalidTenantName::BadCharacter(bad));
    }
    if name.ends_with('-') {
        return Err(InvalidTenantName::BadEnd);
    }
    Ok(())
}

/// Longest ModelDeployment name, as the CRD's CEL rule has it: the names
/// of its Deployment, Service and the rest derive from it.
pub const MAX_DEPLOYMENT_NAME_LEN: usize = 50;

/// Whether `name` passes the CRD's rule for ModelDeployment names: a
/// lowercase DNS label that starts with a letter, at most
/// [`MAX_DEPLOYMENT_NAME_LEN`] long.
pub fn is_valid_deployment_name(name: &str) -> bool {
    name.len() <= MAX_DEPLOYMENT_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Namespace that holds everything of tenant `tenant`.
pub fn namespace_for(tenant: &str) -> String {
    format!("{TENANT_NAMESPACE_PREFIX}{tenant}")
}

/// The tenant a namespace belongs to by name. Ownership must still be
/// confirmed through the namespace's label: a squatter can pick the name.
pub fn tenant_for_namespace(namespace: &str) -> Option<&str> {
    namespace.strip_prefix(TENANT_NAMESPACE_PREFIX).filter(|t| validate_tenant_name(t).is_ok())
}

/// PostgreSQL schema of tenant `tenant` (unquoted identifier text).
pub fn schema_name_for(tenant: &str) -> String {
    format!("{TENANT_SCHEMA_PREFIX}{}", tenant.replace('-', "_"))
}

/// PostgreSQL login role of tenant `tenant`; same text as its schema, which it owns.
pub fn database_role_for(tenant: &str) -> String {
    schema_name_for(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_follow_the_crd_rule() {
        assert!(is_valid_deployment_name("minilm-2"));
        assert!(is_valid_deployment_name(&"a".repeat(MAX_DEPLOYMENT_NAME_LEN)));
        for bad in ["", "2minilm", "minilm-", "MiniLM", "mini_lm", "mini\0lm", &"a".repeat(MAX_DEPLOYMENT_NAME_LEN + 1)]
        {
            assert!(!is_valid_deployment_name(bad), "{bad:?}");
        }
        // The CRD's CEL rule states the same bound.
        let crd = serde_json::to_string(&crate::crd_yaml::all_crds()).unwrap_or_default();
        assert!(crd.contains(&format!("self.metadata.name.size() <= {MAX_DEPLOYMENT_NAME_LEN}")));
    }

    #[test]
    fn accepts_dns_labels_up_to_the_limit() {
        assert_eq!(validate_tenant_name("acme"), Ok(()));
        assert_eq!(validate_tenant_name("a-1"), Ok(()));
        assert_eq!(validate_tenant_name(&"a".repeat(56)), Ok(()));
    }

    #[test]
    fn refuses_what_would_break_a_derived_name() {
        assert_eq!(validate_tenant_name(""), Err(InvalidTenantName::Empty));
        assert_eq!(validate_tenant_name(&"a".repeat(57)), Err(InvalidTenantName::TooLong(57)));
        assert_eq!(validate_tenant_name("1acme"), Err(InvalidTenantName::BadStart));
        assert_eq!(validate_tenant_name("acme-"), Err(InvalidTenantName::BadEnd));
        assert_eq!(validate_tenant_name("ac_me"), Err(InvalidTenantName::BadCharacter('_')));
        assert_eq!(validate_tenant_name("Acme"), Err(InvalidTenantName::BadStart));
    }

    #[test]
    fn derived_names_fit_their_limits() {
        let longest = "a".repeat(MAX_TENANT_NAME_LEN);
        assert_eq!(namespace_for(&longest).len(), 63);
        assert_eq!(schema_name_for(&longest).len(), 63);
    }

    #[test]
    fn schema_names_are_injective_over_valid_names() {
        // '-' maps to '_', which valid names never contain, so distinct names stay distinct.
        let names = ["a-b", "ab", "a-b-c", "a-bc", "ab-c"];
        let schemas: std::collections::BTreeSet<_> = names.iter().map(|n| schema_name_for(n)).collect();
        assert_eq!(schemas.len(), names.len());
        assert_eq!(schema_name_for("data-team"), "tenant_data_team");
    }

    #[test]
    fn namespace_round_trips_to_tenant() {
        assert_eq!(tenant_for_namespace(&namespace_for("acme")), Some("acme"));
        assert_eq!(tenant_for_namespace("default"), None);
        assert_eq!(tenant_for_namespace("tenant-"), None);
        assert_eq!(tenant_for_namespace("tenant-Bad"), None);
    }
}
