//! Server-side apply of a Tenant's children with the operator's field
//! manager. `force` takes fields back from anyone who edited them by hand,
//! which is how hand edits get reverted.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use ember_crds::labels::FIELD_MANAGER_OPERATOR;

use super::build::TenantChildren;
use crate::error::{Error, Result};

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER_OPERATOR).force()
}

/// Server-side applies one namespaced object with the operator's field
/// manager; returns the object as the API server now has it.
pub async fn apply_namespaced<K>(client: &Client, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    Ok(api.patch(&object.name_any(), &params(), &Patch::Apply(with_type_meta(object))).await?)
}

async fn apply_cluster<K>(client: &Client, object: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    api.patch(&object.name_any(), &params(), &Patch::Apply(with_type_meta(object))).await?;
    Ok(())
}

/// Server-side apply needs apiVersion and kind in the body; k8s-openapi
/// types leave them to serialisation, so add them explicitly.
fn with_type_meta<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&()).into());
        map.insert("kind".into(), K::kind(&()).into());
    }
    value
}

/// Applies the namespace (first, everything else lives in it).
pub async fn apply_namespace(client: &Client, children: &TenantChildren) -> Result<()> {
    apply_cluster(client, &children.namespace).await
}

/// Applies everything inside the namespace plus the tenant's reader role.
pub async fn apply_namespaced_children(client: &Client, children: &TenantChildren) -> Result<()> {
    apply_namespaced(client, &children.quota).await?;
    apply_namespaced(client, &children.limit_range).await?;
    for policy in &children.network_policies {
        apply_namespaced(client, policy).await?;
    }
    apply_namespaced(client, &children.service_account).await?;
    for binding in &children.role_bindings {
        apply_namespaced(client, binding).await?;
    }
    apply_cluster(client, &children.reader_role).await?;
    apply_cluster(client, &children.reader_binding).await?;
    Ok(())
}

/// Fails with [`Error::QuotaPending`] until the controller-manager has
/// computed the quota's status for every resource it limits. Until then the
/// API server refuses every object the quota covers ("status unknown for
/// quota"), so the tenant is not ready for its users yet.
pub async fn ensure_quota_enforced(client: &Client, children: &TenantChildren) -> Result<()> {
    let desired = &children.quota;
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &desired.namespace().unwrap_or_default());
    let current = api.get(&desired.name_any()).await?;
    let wanted = desired.spec.as_ref().and_then(|s| s.hard.as_ref());
    // Admission needs `used` for every limited resource; for custom
    // resources the quota controller fills it only after its discovery
    // resync has found the CRD, which can take a while after install.
    let known = current.status.as_ref().and_then(|s| s.used.as_ref());
    let enforced = match (wanted, known) {
        (Some(wanted), Some(known)) => wanted.keys().all(|k| known.contains_key(k)),
        (None, _) => true,
        (Some(_), None) => false,
    };
    if enforced { Ok(()) } else { Err(Error::QuotaPending(desired.name_any())) }
}
