//! Desired Kubernetes objects of a Tenant, computed from its spec alone.
//!
//! Pure: no client, no clock. Everything here is unit-tested from small
//! fixtures; `apply` sends the result with server-side apply. Children carry
//! our own labels (never copies of the Tenant's, see the GitOps checklist)
//! and a controller owner reference to the Tenant, so garbage collection
//! removes them with it.
//!
//! By concern: [`namespace`] (the namespace with its quota and limit
//! range), [`network`] (the NetworkPolicy), [`rbac`] (who may do what: the
//! RoleBindings and the Tenant reader role). This module holds what they
//! share: metadata, and [`desired_children`], which puts them
//! together.

pub mod namespace;
pub mod network;
pub mod rbac;

#[cfg(test)]
mod fixtures;

use ember_crds::labels;
use ember_crds::names::namespace_for;
use ember_crds::tenant::Tenant;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::config::ModelStoreConfig;
use crate::error::{Error, Result};
use crate::tenant_namespace::child_names;

/// Where the tenant's database server is, for the egress policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEndpoint {
    pub cidr: String,
    pub port: u16,
}

/// Where tenant pods may reach beyond their namespace: the tenant's
/// database server and the platform's model stores.
#[derive(Debug, Clone, Copy)]
pub struct Egress<'a> {
    pub database: Option<&'a DatabaseEndpoint>,
    pub model_stores: &'a [ModelStoreConfig],
}

/// Everything the operator keeps in sync for one Tenant.
#[derive(Debug, Clone)]
pub struct TenantChildren {
    pub namespace: Namespace,
    pub quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policy: NetworkPolicy,
    pub service_account: ServiceAccount,
    pub role_bindings: Vec<RoleBinding>,
    pub reader_role: ClusterRole,
    pub reader_binding: ClusterRoleBinding,
}

fn owner_reference(tenant: &Tenant) -> Result<OwnerReference> {
    tenant.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))
}

fn meta(name: &str, namespace: Option<&str>, tenant: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels::child_labels(tenant)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// Computes all children of `tenant`.
pub fn desired_children(tenant: &Tenant, platform_namespace: &str, egress: Egress<'_>) -> Result<TenantChildren> {
    let name = tenant.name_any();
    let owner = owner_reference(tenant)?;
    let ns = namespace_for(&name);
    Ok(TenantChildren {
        namespace: namespace::namespace(&name, &owner),
        quota: namespace::quota(tenant, &ns, &owner),
        limit_range: namespace::limit_range(&name, &ns, &owner),
        network_policy: network::network_policy(tenant, &ns, platform_namespace, egress, &owner),
        service_account: ServiceAccount {
            metadata: meta(child_names::WORKLOAD_SERVICE_ACCOUNT, Some(&ns), &name, &owner),
            // Model pods never talk to the Kubernetes API.
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        role_bindings: rbac::role_bindings(tenant, &ns, &owner),
        reader_role: rbac::reader_role(&name, &owner),
        reader_binding: rbac::reader_binding(tenant, &owner),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::fixtures::{NO_EGRESS, tenant};
    use super::*;

    #[test]
    fn tenant_labels_are_not_copied_to_children() {
        let mut t = tenant();
        t.metadata.labels = Some(BTreeMap::from([("argocd.argoproj.io/instance".into(), "x".into())]));
        let children = desired_children(&t, "ember-system", NO_EGRESS).unwrap();
        assert!(!children.namespace.metadata.labels.unwrap().contains_key("argocd.argoproj.io/instance"));
    }

    #[test]
    fn workload_service_account_has_no_token() {
        let sa = desired_children(&tenant(), "p", NO_EGRESS).unwrap().service_account;
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}
