//! Who may do what in a tenant: the Tenant's own owner and member lists,
//! the same ones the operator turns into RoleBindings, so the REST API and
//! `kubectl` grant the same rights.

use ember_crds::tenant::{MemberRole, SubjectKind, Tenant};

use crate::auth::Principal;
use crate::keys::KeyGrant;

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
        return key_holds(tenant, grant).is_ok().then_some(grant.role);
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

/// Whether an API key still holds in `tenant`: issued in this very Tenant
/// object (its UID, so not in a deleted one of the same name), and its
/// creator still administers it (with the groups they had when issuing).
pub fn key_holds(tenant: &Tenant, grant: &KeyGrant) -> Result<(), &'static str> {
    if tenant.metadata.name.as_deref() != Some(grant.tenant.as_str()) {
        return Err("another tenant");
    }
    if tenant.metadata.uid.as_deref() != Some(grant.tenant_uid.as_str()) {
        return Err("its tenant was deleted");
    }
    let creator = Principal { user: grant.created_by.clone(), groups: grant.creator_groups.clone(), api_key: None };
    if role_in(tenant, &creator) != Some(TenantRole::Admin) {
        return Err("its creator no longer administers the tenant");
    }
    Ok(())
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
    fn an_api_key_has_its_grant_in_its_own_tenant_object_while_its_creator_administers_it() {
        let mut t = tenant();
        t.metadata.uid = Some("uid-1".into());
        let key = |tenant: &str, uid: &str, creator: &str| Principal {
            user: "apikey:0123456789ab".into(),
            groups: Vec::new(),
            api_key: Some(KeyGrant {
                id: "0123456789ab".into(),
                tenant: tenant.into(),
                role: TenantRole::Edit,
                tenant_uid: uid.into(),
                created_by: creator.into(),
                creator_groups: Vec::new(),
            }),
        };
        assert_eq!(role_in(&t, &key("acme", "uid-1", "alice")), Some(TenantRole::Edit));
        assert_eq!(role_in(&t, &key("globex", "uid-1", "alice")), None);
        assert_eq!(role_in(&t, &key("acme", "uid-0", "alice")), None, "a key of a deleted tenant of this name");
        assert_eq!(role_in(&t, &key("acme", "uid-1", "bob")), None, "minted by someone who is no admin (now)");
    }
}
