//! Who may do what in and around the tenant: RoleBindings of its owners
//! and members to the tenant ClusterRoles, and the per-tenant ClusterRole
//! and binding that let them read their own Tenant object.

use ember_crds::tenant::{MemberRole, Subject, SubjectKind, Tenant};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject as RbacSubject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use super::meta;
use crate::tenant_namespace::child_names;

/// Aggregated ClusterRoles shipped in `config/rbac/tenant-roles.yaml`.
pub mod tenant_cluster_roles {
    pub const ADMIN: &str = "ember-tenant-admin";
    pub const EDIT: &str = "ember-tenant-edit";
    pub const VIEW: &str = "ember-tenant-view";
}

/// Name of the per-tenant ClusterRole (and binding) that lets the tenant's
/// users read their own Tenant object, and nothing else cluster-wide.
pub fn tenant_reader_name(tenant: &str) -> String {
    format!("ember-tenant-{tenant}-reader")
}

/// Whether a binding with these subjects grants anybody anything.
pub fn binds_anybody(subjects: &Option<Vec<RbacSubject>>) -> bool {
    subjects.as_ref().is_some_and(|s| !s.is_empty())
}

fn rbac_subject(kind: SubjectKind, name: &str) -> RbacSubject {
    RbacSubject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: match kind {
            SubjectKind::User => "User".into(),
            SubjectKind::Group => "Group".into(),
        },
        name: name.to_owned(),
        namespace: None,
    }
}

fn owners(tenant: &Tenant) -> Vec<RbacSubject> {
    tenant.spec.owners.iter().map(|Subject { kind, name }| rbac_subject(*kind, name)).collect()
}

fn members_with(tenant: &Tenant, role: MemberRole) -> Vec<RbacSubject> {
    tenant.spec.members.iter().filter(|m| m.role == role).map(|m| rbac_subject(m.kind, &m.name)).collect()
}

pub(super) fn role_bindings(tenant: &Tenant, ns: &str, owner: &OwnerReference) -> Vec<RoleBinding> {
    let name = tenant.name_any();
    let binding = |binding_name: &str, cluster_role: &str, subjects: Vec<RbacSubject>| RoleBinding {
        metadata: meta(binding_name, Some(ns), &name, owner),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        },
        subjects: Some(subjects),
    };
    vec![
        binding(child_names::BINDING_OWNERS, tenant_cluster_roles::ADMIN, owners(tenant)),
        binding(child_names::BINDING_EDITORS, tenant_cluster_roles::EDIT, members_with(tenant, MemberRole::Edit)),
        binding(child_names::BINDING_VIEWERS, tenant_cluster_roles::VIEW, members_with(tenant, MemberRole::View)),
    ]
}

pub(super) fn reader_role(tenant: &str, owner: &OwnerReference) -> ClusterRole {
    ClusterRole {
        metadata: meta(&tenant_reader_name(tenant), None, tenant, owner),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![ember_crds::GROUP.into()]),
            resources: Some(vec!["tenants".into(), "tenants/status".into()]),
            resource_names: Some(vec![tenant.to_owned()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
        ..Default::default()
    }
}

pub(super) fn reader_binding(tenant: &Tenant, owner: &OwnerReference) -> ClusterRoleBinding {
    let name = tenant.name_any();
    let mut subjects = owners(tenant);
    subjects.extend(tenant.spec.members.iter().map(|m| rbac_subject(m.kind, &m.name)));
    ClusterRoleBinding {
        metadata: meta(&tenant_reader_name(&name), None, &name, owner),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: tenant_reader_name(&name),
        },
        subjects: Some(subjects),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::desired_children;
    use super::super::fixtures::{NO_EGRESS, tenant};
    use super::*;

    #[test]
    fn role_bindings_map_owners_and_members_to_cluster_roles() {
        let bindings = desired_children(&tenant(), "p", NO_EGRESS).unwrap().role_bindings;
        let subjects = |i: usize| -> Vec<String> {
            bindings[i].subjects.clone().unwrap().into_iter().map(|s| format!("{}:{}", s.kind, s.name)).collect()
        };
        assert_eq!(bindings[0].role_ref.name, tenant_cluster_roles::ADMIN);
        assert_eq!(subjects(0), vec!["User:alice"]);
        assert_eq!(bindings[1].role_ref.name, tenant_cluster_roles::EDIT);
        assert_eq!(subjects(1), vec!["Group:ds"]);
        assert_eq!(bindings[2].role_ref.name, tenant_cluster_roles::VIEW);
        assert_eq!(subjects(2), vec!["User:bob"]);
    }

    #[test]
    fn reader_role_grants_get_on_the_own_tenant_only() {
        let children = desired_children(&tenant(), "p", NO_EGRESS).unwrap();
        let rule = &children.reader_role.rules.unwrap()[0];
        assert_eq!(rule.resource_names.as_deref(), Some(&["acme".to_owned()][..]));
        assert_eq!(rule.verbs, vec!["get"]);
        assert_eq!(children.reader_binding.subjects.unwrap().len(), 3);
    }
}
