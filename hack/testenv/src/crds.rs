//! Installing CustomResourceDefinitions and waiting until they are served.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};

use crate::{Error, poll};

/// Server-side applies `crds` and waits until each is `Established`.
pub async fn install_crds(client: &Client, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("ember-testenv").force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|e| Error::Kube(format!("applying CRD {name}: {e}")))?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        poll::until_async(&format!("CRD {name} Established"), Duration::from_secs(30), async || {
            let current = api.get(&name).await.map_err(|e| Error::Kube(e.to_string()))?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(established.then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// The ModelDeployments of `namespace` as raw JSON: the API for the objects
/// this release's types cannot decode (to delete what
/// [`create_model_of_unknown_architecture`] made, say).
pub fn raw_model_deployments(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("ember.dev", "v1alpha1", "ModelDeployment");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk_with_plural(&gvk, "modeldeployments"))
}

/// Makes a ModelDeployment `name` in `namespace` that this release's types
/// cannot decode, as a newer release could: its architecture `architecture`
/// is added to the installed CRD's enum first (an update, as a newer CRD
/// would be), then the object is created as raw JSON. Retries while the API
/// server still validates against the old schema, and while a concurrent
/// [`install_crds`] puts the old enum back.
pub async fn create_model_of_unknown_architecture(
    client: &Client,
    namespace: &str,
    name: &str,
    architecture: &str,
) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let objects = raw_model_deployments(client, namespace);
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {
            "architecture": architecture, "task": "classification",
            "source": {"uri": "https://models.example/future/model.safetensors", "sha256": "c".repeat(64)},
            "config": {"uri": "https://models.example/future/config.json", "sha256": "c".repeat(64)},
        }},
    }))
    .map_err(|e| Error::Kube(e.to_string()))?;
    let crd_name = "modeldeployments.ember.dev";
    poll::until_async(&format!("ModelDeployment {name} of architecture {architecture} created"), Duration::from_secs(30), async || {
        let crd = crds.get(crd_name).await.map_err(|e| Error::Kube(e.to_string()))?;
        let mut value = serde_json::to_value(&crd).map_err(|e| Error::Kube(e.to_string()))?;
        let known = value
            .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/model/properties/architecture/enum")
            .and_then(serde_json::Value::as_array_mut)
            .ok_or_else(|| Error::Kube(format!("{crd_name} has no architecture enum")))?;
        if !known.iter().any(|a| a == architecture) {
            known.push(architecture.into());
            let widened: CustomResourceDefinition =
                serde_json::from_value(value).map_err(|e| Error::Kube(e.to_string()))?;
            match crds.replace(crd_name, &PostParams::default(), &widened).await {
                Ok(_) => {}
                // Changed meanwhile: look again on the next poll.
                Err(kube::Error::Api(status)) if status.code == 409 => return Ok(None),
                Err(e) => return Err(Error::Kube(format!("widening {crd_name}: {e}"))),
            }
        }
        match objects.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(Some(())),
            // Still the old schema: the enum refuses the architecture.
            Err(kube::Error::Api(status)) if status.code == 422 => Ok(None),
            Err(e) => Err(Error::Kube(format!("creating {name}: {e}"))),
        }
    })
    .await
}
