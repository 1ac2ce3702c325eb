//! Label and annotation keys, finalizers and field managers, each defined once.
//!
//! Children get these labels (never copies of the parent's labels: Argo CD's
//! tracking label on a child would make Argo prune it in a loop).

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
