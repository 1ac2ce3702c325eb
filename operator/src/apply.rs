//! Server-side apply with the operator's field manager, for both
//! controllers. `force` takes fields back from anyone who edited them by
//! hand, which is how hand edits get reverted.
//!
//! The `*_remembered` forms consult [`Written`]: a child whose desired body
//! was applied before, and that nobody changed since, is not sent again —
//! an idle operator writes nothing.
//!
//! [`delete_if_present`] is the one way both controllers remove a child.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use ember_crds::labels::FIELD_MANAGER_OPERATOR;

use crate::error::{Error, Result};
use crate::written::{ChildKey, Written, live_fingerprint, sent_fingerprint};

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER_OPERATOR).force()
}

/// The apply body: the object with the apiVersion and kind server-side
/// apply needs (k8s-openapi types leave them to serialisation). An object
/// that cannot be encoded is an error, never an empty body.
fn body<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> Result<Value> {
    let encode_error = |source| Error::Encode { kind: K::kind(&()).into_owned(), name: object.name_any(), source };
    let mut value = serde_json::to_value(object).map_err(encode_error)?;
    let Some(fields) = value.as_object_mut() else {
        return Err(encode_error(serde::ser::Error::custom("not a JSON object")));
    };
    fields.insert("apiVersion".into(), K::api_version(&()).into());
    fields.insert("kind".into(), K::kind(&()).into());
    Ok(value)
}

/// Applies one namespaced object; returns it as the API server now has it.
pub async fn apply_namespaced<K>(client: &Client, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    send(namespaced_api(client, object), object, body(object)?).await
}

/// Applies one cluster-scoped object; returns it as the API server now has it.
pub async fn apply_cluster<K>(client: &Client, object: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    send(Api::all(client.clone()), object, body(object)?).await
}

/// [`apply_namespaced`] unless `written` shows it would change nothing.
/// Returns the applied object, or `None` when nothing was sent.
pub async fn apply_namespaced_remembered<K>(client: &Client, written: &Written, object: &K) -> Result<Option<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    apply_remembered(namespaced_api(client, object), written, object, live_fingerprint).await
}

/// [`apply_cluster`] unless `written` shows it would change nothing.
pub async fn apply_cluster_remembered<K>(client: &Client, written: &Written, object: &K) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    apply_remembered(Api::all(client.clone()), written, object, live_fingerprint).await
}

/// Whether `object` is what was last applied and nobody changed it since
/// (so the live object is the operator's own, as it sent it).
pub fn is_unchanged_since_applied<K>(written: &Written, object: &K) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    Ok(written.is_current(&ChildKey::of(object), sent_fingerprint(&body(object)?)))
}

/// Applies `object` through `api` unless `written` shows it would change
/// nothing, remembering the result under the live fingerprint `live` (a
/// child whose status matters to its owner brings its own).
pub async fn apply_remembered<K>(api: Api<K>, written: &Written, object: &K, live: fn(&K) -> u64) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let key = ChildKey::of(object);
    let body = body(object)?;
    let sent = sent_fingerprint(&body);
    if written.is_current(&key, sent) {
        return Ok(None);
    }
    written.begin(key.clone(), sent);
    let applied = match send(api, object, body).await {
        Ok(applied) => applied,
        Err(error) => {
            written.forget(&key);
            return Err(error);
        }
    };
    if !written.record(key, sent, live(&applied)) {
        return Err(Error::ChangedWhileApplying { kind: K::kind(&()).into_owned(), name: object.name_any() });
    }
    Ok(Some(applied))
}

/// The API of `object`'s own namespace.
pub fn namespaced_api<K>(client: &Client, object: &K) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(client.clone(), &object.namespace().unwrap_or_default())
}

async fn send<K>(api: Api<K>, object: &K, body: Value) -> Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug,
{
    Ok(api.patch(&object.name_any(), &params(), &Patch::Apply(body)).await?)
}

/// Deletes `name` through `api`; one already gone counts as deleted. True
/// when this call deleted it (false: it was gone).
pub async fn delete_if_present<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error.into()),
    }
}
