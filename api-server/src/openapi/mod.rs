//! The API's OpenAPI 3.1 description, served at `/openapi.json`, and a page
//! that renders it (`/docs`).
//!
//! Schemas are generated from the very types the handlers serialise and
//! the CRD types the API server validates against (schemars, JSON Schema
//! 2020-12, which OpenAPI 3.1 uses as is), so a field added to a view or a
//! bound added to the CRD appears here without anyone writing it twice.
//! Operations are described in [`operations`], one entry per route; who
//! may call each is derived from the roles table (`crate::authz::allows`).
//! A test holds the description and the routes together
//! (`crate::routes::table`), and CI fuzzes the running API from this
//! document with schemathesis (`api-server/tests/openapi_fuzz.rs`).

mod builder;
mod operations;
mod page;

use std::sync::LazyLock;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

pub use builder::Operation;
pub use page::routes;

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// The document as served.
pub fn document_text() -> &'static str {
    &DOCUMENT
}

/// Builds the OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut schemas = Schemas::new();
    let operations = operations::all(&mut schemas);
    let mut paths = Map::new();
    for operation in &operations {
        let item = paths.entry(operation.path).or_insert_with(|| json!({}));
        item[operation.method] = operation.to_json();
    }
    let mut components = schemas.into_components();
    components.insert("responses".into(), builder::error_responses());
    components.insert("headers".into(), builder::headers());
    components.insert(
        "securitySchemes".into(),
        json!({
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A JWT from the configured identity provider (its username and groups \
                    claims name the caller), or an API key (`ek_...`) issued in one tenant.",
            }
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Ember API",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "Multi-tenant ML inference: tenants, model deployments, API keys, inference, usage and audit.",
            "description": "ember-api, the REST API of the Ember platform. Tenants and ModelDeployments \
                are Kubernetes objects: what this API writes, kubectl and GitOps see, and the reverse. \
                Every error is an RFC 9457 problem document. Every response carries `X-Request-Id`: the \
                caller's own when it sent a sane one, otherwise a generated one.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"bearer": []}],
        "tags": operations::tags(),
        "paths": paths,
        "components": components,
    })
}

/// Schemas for the document's components, generated from Rust types.
pub struct Schemas {
    generator: SchemaGenerator,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").field("named", &self.generator.definitions().len()).finish()
    }
}

impl Schemas {
    fn new() -> Self {
        let settings = SchemaSettings::draft2020_12().with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        });
        Self { generator: settings.into_generator() }
    }

    /// `T`'s schema: a `$ref` into the components for a named type.
    pub fn of<T: schemars::JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// A component schema made of some of `T`'s properties (`T` must be a
    /// named object type): for routes that take part of a spec.
    pub fn part_of<T: schemars::JsonSchema>(&mut self, name: &str, fields: &[&str], description: &str) -> Value {
        let whole = self.whole::<T>();
        let properties: Map<String, Value> = whole["properties"]
            .as_object()
            .map(|all| all.iter().filter(|(k, _)| fields.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())))
            .into_iter()
            .flatten()
            .collect();
        let required: Vec<&Value> =
            whole["required"].as_array().into_iter().flatten().filter(|f| fields.iter().any(|n| *f == *n)).collect();
        let mut part = json!({
            "type": "object",
            "description": description,
            "properties": properties,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            part["required"] = json!(required);
        }
        if let Some(rules) = whole.get("x-kubernetes-validations") {
            part["x-kubernetes-validations"] = rules.clone();
        }
        self.generator.definitions_mut().insert(name.to_owned(), part);
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// `T`'s schema as a named component even where schemars inlines it
    /// (the CRD spec types are inlined: Kubernetes needs them that way).
    pub fn component<T: schemars::JsonSchema>(&mut self) -> Value {
        let schema = self.whole::<T>();
        self.named(&T::schema_name(), schema)
    }

    /// `T`'s own schema, never a `$ref`.
    fn whole<T: schemars::JsonSchema>(&mut self) -> Value {
        let schema = self.generator.subschema_for::<T>().to_value();
        match schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
            Some(name) => self.generator.definitions().get(name).cloned().unwrap_or_default(),
            None => schema,
        }
    }

    /// Adds a schema written by hand (for bodies ember-api passes through
    /// without reading, such as inference requests).
    pub fn named(&mut self, name: &str, schema: Value) -> Value {
        self.generator.definitions_mut().insert(name.to_owned(), schema);
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn into_components(mut self) -> Map<String, Value> {
        self.of::<crate::error::Problem>();
        let mut schemas = self.generator.take_definitions(true);
        schemas.values_mut().for_each(spell_out_int_or_string);
        let mut components = Map::new();
        components.insert("schemas".into(), Value::Object(schemas));
        components
    }
}

/// Kubernetes marks a value that may be a number or a string with
/// `x-kubernetes-int-or-string` alone (quantities); JSON Schema needs it
/// spelled out, or clients and fuzzers take any JSON value.
fn spell_out_int_or_string(schema: &mut Value) {
    if let Value::Object(map) = schema {
        if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            && !map.contains_key("type")
            && !map.contains_key("anyOf")
        {
            map.insert("anyOf".into(), json!([{"type": "string"}, {"type": "integer"}]));
        }
        map.values_mut().for_each(spell_out_int_or_string);
    } else if let Value::Array(items) = schema {
        items.iter_mut().for_each(spell_out_int_or_string);
    }
}

#[cfg(test)]
mod tests;
