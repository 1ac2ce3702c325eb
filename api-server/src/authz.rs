//! Who may do what: the platform's roles ([`Role`]), what each may do
//! ([`allows`]) and what the same person may do with `kubectl`
//! ([`kubectl_allows`]) — the table `docs/architecture.md` shows and
//! `tests/roles.rs` checks against both the REST API and the API server.
//!
//! Tenant roles come from the Tenant's own owner and member lists, the same
//! ones the operator turns into RoleBindings; the platform-admin role from a
//! configured group in the token, the same group `config/rbac/platform-admin.yaml`
//! binds for kubectl.

use ember_crds::tenant::{MemberRole, SubjectKind, Tenant};

use crate::auth::Principal;
use crate::keys::KeyGrant;

/// A caller's rights in one tenant, weakest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
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

/// The roles of the platform, as the documented table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// A tenant member with `view`.
    Viewer,
    /// A tenant member with `edit`.
    Editor,
    /// A tenant owner.
    Owner,
    /// A member of the configured platform-admin group: administers Tenants
    /// (onboarding, quota, access, database policy, suspension, deletion)
    /// and reads every tenant, but does not act inside one. To deploy or
    /// call models in a tenant, a platform admin adds themselves as a
    /// member, which is itself recorded.
    PlatformAdmin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Editor, Role::Owner, Role::PlatformAdmin];

    fn of_tenant_role(role: TenantRole) -> Self {
        match role {
            TenantRole::View => Role::Viewer,
            TenantRole::Edit => Role::Editor,
            TenantRole::Admin => Role::Owner,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
            Role::PlatformAdmin => "platform admin",
        })
    }
}

/// What a caller may ask for. Each REST route needs exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// See the tenant: `GET /v1/tenants`, `GET /v1/tenants/{t}`.
    ReadTenant,
    /// `GET /v1/tenants/{t}/deployments[/{name}]`.
    ReadDeployments,
    /// `POST /v1/tenants/{t}/deployments/{name}/infer|embeddings`.
    CallModels,
    /// `PUT`/`DELETE /v1/tenants/{t}/deployments/{name}`.
    WriteDeployments,
    /// `/v1/tenants/{t}/api-keys`: issue, list, revoke.
    ManageApiKeys,
    /// The tenant's audit trail and usage.
    ReadRecords,
    /// `PUT /v1/tenants/{t}/branding`: display name and branding.
    EditBranding,
    /// Create, change (quota, owners, members, database, network,
    /// suspension) and delete Tenants.
    ManageTenants,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::ReadTenant,
        Capability::ReadDeployments,
        Capability::CallModels,
        Capability::WriteDeployments,
        Capability::ManageApiKeys,
        Capability::ReadRecords,
        Capability::EditBranding,
        Capability::ManageTenants,
    ];
}

/// Whether `role` may do `capability` through the REST API: the table.
pub fn allows(role: Role, capability: Capability) -> bool {
    use Capability::*;
    use Role::*;
    match capability {
        ReadTenant | ReadDeployments => true,
        CallModels => role != PlatformAdmin,
        WriteDeployments => matches!(role, Editor | Owner),
        ManageApiKeys => role == Owner,
        ReadRecords | EditBranding => matches!(role, Owner | PlatformAdmin),
        ManageTenants => role == PlatformAdmin,
    }
}

/// One question to the API server's authoriser standing for a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubectlCheck {
    pub verb: &'static str,
    pub resource: &'static str,
    /// In the tenant's namespace; otherwise cluster-scoped (the Tenant
    /// object itself, by name).
    pub in_tenant_namespace: bool,
}

/// What the same capability is with kubectl, or `None` where it has no
/// Kubernetes object (API keys, audit and usage live in ember-api's
/// database; model calls go through ember-api).
pub fn kubectl_check(capability: Capability) -> Option<KubectlCheck> {
    let check = |verb, resource, in_tenant_namespace| Some(KubectlCheck { verb, resource, in_tenant_namespace });
    match capability {
        Capability::ReadTenant => check("get", "tenants", false),
        Capability::ReadDeployments => check("list", "modeldeployments", true),
        Capability::WriteDeployments => check("create", "modeldeployments", true),
        // RBAC cannot limit a write to some fields of an object: owners
        // edit branding through the REST API only (see `kubectl_allows`).
        Capability::EditBranding | Capability::ManageTenants => check("patch", "tenants", false),
        Capability::CallModels | Capability::ManageApiKeys | Capability::ReadRecords => None,
    }
}

/// Whether `role` may do `capability` with kubectl (the RBAC in
/// `config/rbac` and the bindings the operator makes, its per-tenant reader
/// roles included: `tenantReaderRoles`, off by default, without which tenant
/// roles read their Tenant over REST only), where it can be done with
/// kubectl at all. The same as [`allows`] with one deliberate
/// exception: owners may edit branding over REST, which checks the fields,
/// but may not patch the Tenant with kubectl, where RBAC could only grant
/// the whole object.
pub fn kubectl_allows(role: Role, capability: Capability) -> Option<bool> {
    kubectl_check(capability)?;
    Some(match capability {
        Capability::EditBranding => role == Role::PlatformAdmin,
        other => allows(role, other),
    })
}

/// The roles `who` holds in `tenant`: its tenant role, if any, and platform
/// admin, if it is one. Empty: the tenant is none of the caller's business.
pub fn roles_in(tenant: &Tenant, who: &Principal) -> Vec<Role> {
    let mut roles: Vec<Role> = role_in(tenant, who).map(Role::of_tenant_role).into_iter().collect();
    if who.platform_admin {
        roles.push(Role::PlatformAdmin);
    }
    roles
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
    let creator = Principal {
        user: grant.created_by.clone(),
        groups: grant.creator_groups.clone(),
        api_key: None,
        platform_admin: false,
    };
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
        Principal {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            api_key: None,
            platform_admin: false,
        }
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
            platform_admin: false,
        };
        assert_eq!(role_in(&t, &key("acme", "uid-1", "alice")), Some(TenantRole::Edit));
        assert_eq!(role_in(&t, &key("globex", "uid-1", "alice")), None);
        assert_eq!(role_in(&t, &key("acme", "uid-0", "alice")), None, "a key of a deleted tenant of this name");
        assert_eq!(role_in(&t, &key("acme", "uid-1", "bob")), None, "minted by someone who is no admin (now)");
    }

    #[test]
    fn kubectl_grants_what_rest_grants_except_owners_editing_branding() {
        for capability in Capability::ALL {
            for role in Role::ALL {
                let Some(kubectl) = kubectl_allows(role, capability) else { continue };
                let exception = capability == Capability::EditBranding && role == Role::Owner;
                assert_eq!(kubectl != allows(role, capability), exception, "{role} {capability:?}");
            }
        }
    }

    #[test]
    fn a_platform_admin_reads_every_tenant_but_acts_in_none_unless_a_member() {
        let t = tenant();
        let mut admin = who("root", &["platform"]);
        admin.platform_admin = true;
        assert_eq!(roles_in(&t, &admin), vec![Role::PlatformAdmin]);
        assert!(allows(Role::PlatformAdmin, Capability::ReadDeployments));
        assert!(!allows(Role::PlatformAdmin, Capability::WriteDeployments));
        assert!(!allows(Role::PlatformAdmin, Capability::CallModels));
        let mut member = who("bob", &["acme-ds"]);
        member.platform_admin = true;
        assert_eq!(roles_in(&t, &member), vec![Role::Editor, Role::PlatformAdmin]);
        assert!(roles_in(&t, &who("mallory", &[])).is_empty());
    }
}
