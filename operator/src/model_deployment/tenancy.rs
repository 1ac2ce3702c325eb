//! Which Tenant a ModelDeployment serves in: the validate step of the
//! reconciler. A ModelDeployment is served only in a namespace the Tenant
//! controller created for an existing Tenant — named `tenant-<name>`,
//! labelled with the tenant *and* owned by that Tenant (the same test the
//! Tenant controller uses to refuse squatted namespaces), so a namespace
//! someone named `tenant-x` by hand never gets model pods.

use ember_crds::conditions::{find_condition, types};
use ember_crds::model_deployment::ModelDeployment;
use ember_crds::names::tenant_for_namespace;
use ember_crds::tenant::Tenant;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::ModelContext;
use super::build::Serving;
use crate::error::{Error, Result};
use crate::tenant_namespace::{belongs_to, child_names};

/// The tenant `md` is served for, or [`Error::NotATenantNamespace`].
///
/// A set-up Tenant in the cache answers without a request: the Tenant
/// controller records `status.namespace` only for a namespace it verified as
/// its own, and reports `QuotaReady=True` only after applying the workload
/// ServiceAccount. Otherwise (a Tenant still being set up, or not cached
/// yet) the namespace and ServiceAccount are read.
pub async fn resolve(md: &ModelDeployment, ctx: &ModelContext) -> Result<Serving> {
    let namespace = md.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let refuse = || Error::NotATenantNamespace { namespace: namespace.clone() };
    let tenant_name = tenant_for_namespace(&namespace).ok_or_else(refuse)?;
    let tenant = match ctx.tenants.get(&ObjectRef::new(tenant_name)) {
        Some(cached) => cached.as_ref().clone(),
        None => Api::<Tenant>::all(ctx.client.clone()).get_opt(tenant_name).await?.ok_or_else(refuse)?,
    };
    if is_set_up_in(&tenant, &namespace) {
        let service_account = Some(child_names::WORKLOAD_SERVICE_ACCOUNT.to_owned());
        return Ok(Serving { tenant: tenant.name_any(), suspended: tenant.spec.suspended, service_account });
    }
    let ns = Api::<Namespace>::all(ctx.client.clone()).get_opt(&namespace).await?.ok_or_else(refuse)?;
    if !belongs_to(&ns, &tenant) {
        return Err(refuse());
    }
    // The Tenant controller makes the workload ServiceAccount; a pod naming
    // one that does not exist (yet) would be refused by admission.
    let service_account = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(child_names::WORKLOAD_SERVICE_ACCOUNT)
        .await?
        .map(|sa| sa.name_any());
    Ok(Serving { tenant: tenant.name_any(), suspended: tenant.spec.suspended, service_account })
}

fn is_set_up_in(tenant: &Tenant, namespace: &str) -> bool {
    let Some(status) = &tenant.status else { return false };
    tenant.meta().deletion_timestamp.is_none()
        && status.namespace.as_deref() == Some(namespace)
        && find_condition(&status.conditions, types::QUOTA_READY).is_some_and(|c| c.status == "True")
}
