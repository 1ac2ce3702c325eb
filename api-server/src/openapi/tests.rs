#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde_json::Value;

use super::builder::path_parameters;
use super::document;

fn operations(document: &Value) -> impl Iterator<Item = (&str, &str, &Value)> {
    document["paths"].as_object().unwrap().iter().flat_map(|(path, item)| {
        item.as_object().unwrap().iter().map(move |(method, operation)| (path.as_str(), method.as_str(), operation))
    })
}

#[test]
fn every_route_served_is_described_and_nothing_else() {
    let document = document();
    let described: BTreeSet<(String, String)> =
        operations(&document).map(|(path, method, _)| (method.to_owned(), path.to_owned())).collect();
    let served: BTreeSet<(String, String)> =
        crate::served().into_iter().map(|s| (s.method.to_owned(), s.path.to_owned())).collect();
    let undocumented: Vec<_> = served.difference(&described).collect();
    let missing: Vec<_> = described.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not described: {undocumented:?}");
    assert!(missing.is_empty(), "described but not served: {missing:?}");
}

/// Every `$ref` anywhere in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(target.clone());
            }
            map.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let document = document();
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(found.iter().any(|r| r == "#/components/schemas/TenantView"), "{found:?}");
    for target in found {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{target} is not local"));
        assert!(document.pointer(pointer).is_some(), "{target} does not resolve");
    }
}

#[test]
fn operations_are_complete() {
    let document = document();
    let mut ids = BTreeSet::new();
    for (path, method, operation) in operations(&document) {
        let id = operation["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_template: BTreeSet<&str> = path_parameters(path).collect();
        assert_eq!(declared, in_template, "{method} {path}: path parameters");
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} has no success answer");
        if operation.get("security").is_none() {
            // Authenticated: every refusal of credentials is described.
            assert!(responses.contains_key("401"), "{method} {path} does not describe 401");
        }
    }
}

#[test]
fn schemas_come_from_the_types_and_the_crds() {
    let document = document();
    let schemas = &document["components"]["schemas"];
    // A CRD bound (schemars attribute on the Tenant type) reaches the API's description.
    let branding = serde_json::to_string(&schemas["TenantBranding"]).unwrap();
    assert!(branding.contains("^#[0-9a-fA-F]{6}$"), "colour format missing: {branding}");
    // The admin part does not offer the presentation fields, and the reverse.
    let admin = schemas["TenantAdministration"]["properties"].as_object().unwrap();
    assert!(admin.contains_key("quota") && !admin.contains_key("branding"));
    assert_eq!(schemas["TenantAdministration"]["additionalProperties"], false);
    // Views are the serialised types: a field of DeploymentView is described.
    assert!(schemas["DeploymentView"]["properties"]["spec"].is_object());
    assert_eq!(schemas["Problem"]["required"], serde_json::json!(["type", "title", "status", "detail"]));
    // Quantities are numbers or strings, as the API server takes them.
    let quantity = &schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"];
    assert_eq!(quantity["anyOf"], serde_json::json!([{"type": "string"}, {"type": "integer"}]));
}

#[test]
fn who_may_call_comes_from_the_roles_table() {
    let document = document();
    let put = &document["paths"]["/v1/tenants/{tenant}/deployments/{name}"]["put"];
    let description = put["description"].as_str().unwrap();
    assert!(description.contains("Allowed for: editor, owner."), "{description}");
    let probe = &document["paths"]["/healthz"]["get"];
    assert_eq!(probe["security"], serde_json::json!([]));
}
