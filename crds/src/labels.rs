//! Label and annotation keys, finalizers and field managers, each defined once.
//!
//! Children get these labels (never copies of the parent's labels: Argo CD's
//! tracking label on a child would make Argo prune it in a loop).

use std::collections::BTreeMap;

/// Tenant an object belongs to.
pub const TENANT: &str = "ember.dev/tenant";
/// ModelDeployment an object belongs to.
pub const MODEL_DEPLOYMENT: &str = "ember.dev/model-deployment";

/// Standard recommended labels.
pub const APP_NAME: &str = "app.kubernetes.io/name";
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
pub const APP_COMPONENT: &str = "app.kubernetes.io/component";
pub const APP_PART_OF: &str = "app.kubernetes.io/part-of";
pub const APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Value of `app.kubernetes.io/part-of` on everything Ember makes.
pub const PART_OF_EMBER: &str = "ember";
/// Value of `app.kubernetes.io/managed-by` on everything the operator makes.
pub const MANAGED_BY_OPERATOR: &str = "ember-operator";

/// Labels on every object the operator makes for `tenant`, whichever
/// controller makes it: the tenant it belongs to and that the operator
/// manages it, which the operator's watches and the admission policies
/// select on. A controller may add its own labels beside these (model
/// objects add their selector, instance and component), never change them:
/// a changed value would re-label every existing child.
pub fn child_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT.to_owned(), tenant.to_owned()),
        (APP_MANAGED_BY.to_owned(), MANAGED_BY_OPERATOR.to_owned()),
        (APP_PART_OF.to_owned(), PART_OF_EMBER.to_owned()),
    ])
}

/// Pod Security Standards admission labels on tenant namespaces.
pub const PSS_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const PSS_ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";
pub const PSS_AUDIT: &str = "pod-security.kubernetes.io/audit";
pub const PSS_WARN: &str = "pod-security.kubernetes.io/warn";
/// The PSS level tenant namespaces enforce.
pub const PSS_LEVEL_RESTRICTED: &str = "restricted";
/// Pinned PSS version, so a cluster upgrade never silently changes the rules.
pub const PSS_VERSION: &str = "v1.37";

/// Tenant annotation by which a platform admin hands a retained database
/// role and schema of an earlier Tenant (its UID is the value) to this one.
pub const ADOPT_DATABASE: &str = "ember.dev/adopt-database";

/// Finalizer the operator puts on Tenants to clean up the database part.
pub const TENANT_FINALIZER: &str = "ember.dev/tenant-cleanup";

/// Server-side apply field managers.
pub const FIELD_MANAGER_OPERATOR: &str = "ember-operator";
pub const FIELD_MANAGER_API: &str = "ember-api";
/// ember-api's manager for a Tenant's display name and branding, which
/// owners may edit: apart from `ember-api`, which applies what platform
/// admins set, so the two never release each other's fields.
pub const FIELD_MANAGER_API_BRANDING: &str = "ember-api-branding";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_labelled_with_their_tenant_and_the_operator() {
        // The values existing children carry: the watches select on
        // managed-by, the admission policy on the tenant and managed-by.
        let labels = child_labels("acme");
        let expected = [
            ("app.kubernetes.io/managed-by", "ember-operator"),
            ("app.kubernetes.io/part-of", "ember"),
            ("ember.dev/tenant", "acme"),
        ];
        let actual: Vec<_> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(actual, expected);
    }
}
