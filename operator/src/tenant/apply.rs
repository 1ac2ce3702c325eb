//! Applying a Tenant's children: the namespace first, then everything in it
//! at once; the owners' RoleBindings only once the quota is enforced.
//! Children nobody changed since the last apply are not sent again
//! ([`crate::written`]), and bindings without subjects are not made, only
//! emptied where they exist ([`crate::present`]).

use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::rbac::v1::Subject;
use kube::api::{Api, DeleteParams};
use kube::{Client, Resource, ResourceExt};

use super::build::TenantChildren;
use super::build::rbac::binds_anybody;
use super::quota_gate::QuotaWait;
use crate::apply::{apply_cluster_remembered, apply_namespaced_remembered, delete_if_present};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::written::ChildKey;

/// Applies the namespace (first, everything else lives in it).
pub async fn apply_namespace(ctx: &Context, children: &TenantChildren) -> Result<()> {
    apply_cluster_remembered(&ctx.client, &ctx.written, &children.namespace).await?;
    Ok(())
}

/// Applies quota, limit range, network policy, service account and (when
/// the configuration grants it) the reader role concurrently. Returns the
/// quota as the API server has it when it was sent (`None` when it was
/// already in place).
pub async fn apply_base_children(ctx: &Context, children: &TenantChildren) -> Result<Option<ResourceQuota>> {
    let (client, written) = (&ctx.client, ctx.written.as_ref());
    // Old per-purpose policies go only once the one policy replacing them is in place.
    let policy = async {
        apply_namespaced_remembered(client, written, &children.network_policy).await?;
        ctx.legacy_policies.remove(client, &children.network_policy.namespace().unwrap_or_default()).await
    };
    let (quota, ..) = tokio::try_join!(
        apply_namespaced_remembered(client, written, &children.quota),
        apply_namespaced_remembered(client, written, &children.limit_range),
        policy,
        apply_namespaced_remembered(client, written, &children.service_account),
        reader_role(ctx, children),
    )?;
    Ok(quota)
}

/// The per-tenant ClusterRole and binding that let the tenant's users read
/// their own Tenant: applied when `tenantReaderRoles` is on (and there is
/// somebody to bind), deleted where they exist when it is off.
async fn reader_role(ctx: &Context, children: &TenantChildren) -> Result<()> {
    let (client, written) = (&ctx.client, ctx.written.as_ref());
    let (role, binding) = (&children.reader_role, &children.reader_binding);
    if !ctx.config.tenant_reader_roles {
        // The binding first: it is what grants; a role bound by nothing grants nothing.
        delete_cluster_child(ctx, binding).await?;
        return delete_cluster_child(ctx, role).await;
    }
    if !is_needed(binding, &binding.subjects, ctx) {
        return Ok(());
    }
    apply_cluster_remembered(client, written, role).await?;
    apply_cluster_remembered(client, written, binding).await?;
    Ok(())
}

/// Deletes a cluster-scoped child the watches show as existing; none is
/// sent for one that does not (the usual case: no request at all).
async fn delete_cluster_child<K>(ctx: &Context, child: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if !ctx.present.contains(child) {
        return Ok(());
    }
    delete_if_present(&Api::<K>::all(ctx.client.clone()), &child.name_any(), &DeleteParams::default()).await?;
    ctx.written.forget(&ChildKey::of(child));
    Ok(())
}

/// Binds the owners and members: only once the quota is enforced, so users
/// never get into a namespace whose limits do not hold yet.
pub async fn apply_role_bindings(ctx: &Context, children: &TenantChildren) -> Result<()> {
    let needed = children.role_bindings.iter().filter(|binding| is_needed(*binding, &binding.subjects, ctx));
    try_join_all(needed.map(|binding| apply_namespaced_remembered(&ctx.client, &ctx.written, binding))).await?;
    Ok(())
}

/// A binding is applied when it binds somebody, or when it exists (then
/// emptied: the spec dropped everyone it bound). An empty binding that does
/// not exist would grant nothing, so it is not made: one to three objects
/// fewer per tenant, and no ClusterRoleBinding for RBAC to scan on every
/// request for a tenant with nobody in it.
fn is_needed<K: Resource<DynamicType = ()>>(binding: &K, subjects: &Option<Vec<Subject>>, ctx: &Context) -> bool {
    binds_anybody(subjects) || ctx.present.contains(binding)
}

/// True once the controller-manager has computed `used` for every resource
/// the quota limits. Until then the API server refuses every object the
/// quota covers ("status unknown for quota"), so the tenant is not ready
/// for its users yet. For custom resources it fills `used` only after its
/// discovery resync has found the CRD, which can take a while after install.
pub fn is_enforced(quota: &ResourceQuota) -> bool {
    let wanted = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
    let known = quota.status.as_ref().and_then(|s| s.used.as_ref());
    match (wanted, known) {
        (Some(wanted), Some(known)) => wanted.keys().all(|k| known.contains_key(k)),
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// Fails with [`Error::QuotaPending`] unless the quota is enforced, or
/// becomes so within `limit` (woken by its watch event through `wait`).
/// `applied` is the quota as this pass's apply returned it; without one
/// (nothing was sent) it is read.
pub async fn ensure_quota_enforced(
    client: &Client,
    children: &TenantChildren,
    applied: Option<ResourceQuota>,
    wait: QuotaWait,
    limit: Duration,
) -> Result<()> {
    let desired = &children.quota;
    let current = match applied {
        Some(quota) => quota,
        None => {
            let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &desired.namespace().unwrap_or_default());
            api.get(&desired.name_any()).await?
        }
    };
    if is_enforced(&current) || wait.enforced_within(limit).await {
        Ok(())
    } else {
        Err(Error::QuotaPending(desired.name_any()))
    }
}
