//! What makes a namespace a tenant's, for both controllers: the names of
//! the objects the Tenant controller keeps in it, and the ownership test
//! that tells the namespace it made from one someone else named
//! `tenant-<name>`. The Tenant controller adopts only such a namespace; the
//! ModelDeployment controller serves models only in one.

use ember_crds::labels;
use ember_crds::tenant::Tenant;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Resource, ResourceExt};

/// Names of the objects the operator puts into a tenant namespace.
pub mod child_names {
    pub const QUOTA: &str = "ember-quota";
    pub const LIMIT_RANGE: &str = "ember-defaults";
    pub const WORKLOAD_SERVICE_ACCOUNT: &str = "ember-workload";
    pub const NETWORK_POLICY: &str = "ember-network";
    /// The per-purpose policies of earlier versions, which
    /// [`NETWORK_POLICY`] replaced; removed where found
    /// ([`crate::tenant::legacy`]).
    pub const LEGACY_POLICIES: [&str; 7] = [
        "ember-default-deny",
        "ember-allow-same-namespace",
        "ember-allow-dns",
        "ember-allow-platform",
        "ember-allow-extra-namespaces",
        "ember-allow-database",
        "ember-allow-model-stores",
    ];
    pub const BINDING_OWNERS: &str = "ember-owners";
    pub const BINDING_EDITORS: &str = "ember-editors";
    pub const BINDING_VIEWERS: &str = "ember-viewers";
}

/// Whether an existing namespace was made by the operator for this Tenant.
/// A namespace with the right name but another owner is a squatter and is
/// never adopted.
pub fn belongs_to(namespace: &Namespace, tenant: &Tenant) -> bool {
    let labelled = namespace.labels().get(labels::TENANT).is_some_and(|t| *t == tenant.name_any());
    let owned = namespace
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == tenant.meta().uid.as_ref());
    labelled && owned
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use ember_crds::tenant::TenantSpec;
    use kube::api::ObjectMeta;

    use super::*;

    fn tenant(name: &str, uid: &str) -> Tenant {
        let mut t = Tenant::new(name, TenantSpec::default());
        t.metadata.uid = Some(uid.into());
        t
    }

    fn namespace(tenant_label: &str, owner: Option<&Tenant>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("tenant-acme".into()),
                labels: Some(BTreeMap::from([(labels::TENANT.into(), tenant_label.into())])),
                owner_references: owner.map(|t| vec![t.controller_owner_ref(&()).unwrap()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_namespace_belongs_to_the_tenant_that_labels_and_owns_it() {
        let acme = tenant("acme", "uid-1");
        assert!(belongs_to(&namespace("acme", Some(&acme)), &acme));
    }

    #[test]
    fn a_squatted_or_foreign_namespace_does_not_belong() {
        let acme = tenant("acme", "uid-1");
        // Named and labelled by hand, owned by no Tenant.
        assert!(!belongs_to(&namespace("acme", None), &acme));
        // A Tenant of the same name deleted and created again has a new UID.
        assert!(!belongs_to(&namespace("acme", Some(&tenant("acme", "uid-0"))), &acme));
        // Owned, but labelled for another tenant.
        assert!(!belongs_to(&namespace("other", Some(&acme)), &acme));
    }
}
