//! Who may do what in a tenant: the Tenant's own owner and member lists,
//! the same ones the operator turns into RoleBindings, so the REST API and
//! `kubectl` grant the same rights.

use ember_crds::tenant::{MemberRole, SubjectKind, Tenant};

use crate::auth::Principal;

/// A caller's rights in one tenant, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TenantRole {
    /// Read ModelDeployments.
    View,
    /// Also create, change and delete them.
    Edit,
    /// Owner: everything a tenant user can do.
    Admin,
}

impl std::fmt::Display for TenantRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TenantRole::View => "view",
            TenantRole::Edit => "edit",
            TenantRole::Admin => "admin",
        })
    }
}

/// The strongest role `who` holds in `tenant`, directly or through a group;
/// for an API key, its own grant in its own tenant and nothing elsewhere.
pub fn role_in(tenant: &Tenant, who: &Principal) -> Option<TenantRole> {
    if let Some(grant) = &who.api_key {
        return (tenant.metadata.name.as_deref() == Some(grant.tenant.as_str())).then_some(grant.role);
    }
    let matches = |kind: SubjectKind, name: &str| match kind {
        SubjectKind::User => who.user == name,
        SubjectKind::Group => who.groups.iter().any(|g| g == name),
    };
    let owner = tenant.spec.owners.iter().any(|o| matches(o.kind, &o.name)).then_some(TenantRole::Admin);
    let member = tenant
        .spec
        .members
        .iter()
        .filter(|m| matches(m.kind, &m.name))
        .map(|m| match m.role {
            MemberRole::Edit => TenantRole::Edit,
            MemberRole::View => TenantRole::View,
        })
        .max();
    owner.max(member)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tenant() -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"},
            "spec": {
                "owners": [{"kind": "User", "name": "alice"}],
                "members": [
                    {"kind": "Group", "name": "acme-ds", "role": "edit"},
                    {"kind": "User", "name": "bob", "role": "view"},
                    {"kind": "Group", "name": "auditors"}
                ]
            }
        }))
        .unwrap()
    }

    fn who(user: &str, groups: &[&str]) -> Principal {
        Principal { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect(), api_key: None }
    }

    #[test]
    fn roles_come_from_owners_and_members_and_the_strongest_wins() {
        let t = tenant();
        assert_eq!(role_in(&t, &who("alice", &[])), Some(TenantRole::Admin));
        assert_eq!(role_in(&t, &who("bob", &[])), Some(TenantRole::View));
        assert_eq!(role_in(&t, &who("bob", &["acme-ds"])), Some(TenantRole::Edit));
        assert_eq!(role_in(&t, &who("carol", &["auditors"])), Some(TenantRole::View)); // default role
        assert_eq!(role_in(&t, &who("mallory", &["other"])), None);
        // A user name equal to a group name is not that group.
        assert_eq!(role_in(&t, &who("acme-ds", &[])), None);
    }

    #[test]
    fn an_api_key_has_its_grant_in_its_tenant_only() {
        let t = tenant();
        let key = |tenant: &str| Principal {
            user: "apikey:0123456789ab".into(),
            groups: Vec::new(),
            api_key: Some(crate::keys::KeyGrant {
                id: "0123456789ab".into(),
                tenant: tenant.into(),
                role: TenantRole::Edit,
            }),
        };
        assert_eq!(role_in(&t, &key("acme")), Some(TenantRole::Edit));
        assert_eq!(role_in(&t, &key("globex")), None);
    }
}
