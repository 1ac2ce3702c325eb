//! One operation of the document, built step by step, and the responses
//! and headers every operation shares.

use serde_json::{Map, Value, json};

use ember_crds::names;

use crate::authz::{Capability, Role, allows};

/// An operation: a method on a path template, with what it takes and
/// what it answers.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    json: Value,
    responses: Map<String, Value>,
}

/// Where the caller's role comes from: a tenant (membership) or the
/// platform-admin group.
#[derive(Debug, Clone, Copy)]
pub enum Needs {
    /// No credentials at all (probes, this document).
    Nothing,
    /// Any authenticated caller.
    Authentication,
    /// A role in the tenant named in the path that allows this.
    InTenant(Capability),
    /// The platform-admin role.
    PlatformAdmin,
}

impl Operation {
    /// `method` in lowercase, `path` exactly as the router has it.
    pub fn new(method: &'static str, path: &'static str, id: &str, tag: &str, summary: &str) -> Self {
        let parameters: Vec<Value> = path_parameters(path).map(path_parameter).collect();
        let mut json = json!({"operationId": id, "tags": [tag], "summary": summary});
        if !parameters.is_empty() {
            json["parameters"] = json!(parameters);
        }
        Self { method, path, json, responses: Map::new() }
    }

    pub fn describe(mut self, description: &str) -> Self {
        self.json["description"] = json!(description);
        self
    }

    /// Who may call it: sets the security requirement, says which roles
    /// may (from `authz::allows`), and adds the refusals that follow.
    pub fn needs(mut self, needs: Needs) -> Self {
        let who = match needs {
            Needs::Nothing => {
                self.json["security"] = json!([]);
                return self.errors(&[408, 429]);
            }
            Needs::Authentication => "Any authenticated caller.".to_owned(),
            Needs::InTenant(capability) => {
                let roles: Vec<String> =
                    Role::ALL.into_iter().filter(|role| allows(*role, capability)).map(|r| r.to_string()).collect();
                self.json["x-ember-capability"] = json!(format!("{capability:?}"));
                self = self.errors(&[403, 404]);
                format!(
                    "Allowed for: {}. A tenant the caller holds no role in answers 404, like one that does not exist.",
                    roles.join(", ")
                )
            }
            Needs::PlatformAdmin => {
                self = self.errors(&[403]);
                format!("Allowed for: {}.", Role::PlatformAdmin)
            }
        };
        let description = match self.json["description"].as_str() {
            Some(text) => format!("{text}\n\n{who}"),
            None => who,
        };
        self.json["description"] = json!(description);
        // Every authenticated route: no or bad credentials, the caller's
        // rate limit, caches still loading or a dependency down.
        self.errors(&[401, 408, 413, 429, 503])
    }

    /// A query parameter (never required: every one has a default).
    pub fn query(self, name: &str, description: &str, schema: Value) -> Self {
        self.parameter("query", name, description, schema).errors(&[400])
    }

    /// A request header the operation reads.
    pub fn header(self, name: &str, description: &str, schema: Value) -> Self {
        self.parameter("header", name, description, schema)
    }

    fn parameter(mut self, location: &str, name: &str, description: &str, schema: Value) -> Self {
        let parameter = json!({"name": name, "in": location, "description": description, "schema": schema});
        match self.json["parameters"].as_array_mut() {
            Some(parameters) => parameters.push(parameter),
            None => self.json["parameters"] = json!([parameter]),
        }
        self
    }

    /// A required JSON body, and the refusals of a bad one.
    pub fn json_body(self, description: &str, schema: Value) -> Self {
        self.body(description, &[("application/json", schema)]).errors(&[400, 415, 422])
    }

    /// A required body in any of the given media types.
    pub fn body(mut self, description: &str, content: &[(&str, Value)]) -> Self {
        let content = content_map(content);
        self.json["requestBody"] = json!({"description": description, "required": true, "content": content});
        self
    }

    /// A success answer with a body in any of the given media types.
    pub fn answer(mut self, status: u16, description: &str, content: &[(&str, Value)]) -> Self {
        let content = content_map(content);
        let mut response = json!({"description": description, "headers": request_id_header()});
        if !content.is_empty() {
            response["content"] = json!(content);
        }
        self.responses.insert(status.to_string(), response);
        self
    }

    /// A success answer without a body.
    pub fn empty(self, status: u16, description: &str) -> Self {
        self.answer(status, description, &[])
    }

    /// Adds a response header to the answer with `status` (added first).
    pub fn answer_header(mut self, status: u16, name: &str, description: &str) -> Self {
        if let Some(response) = self.responses.get_mut(&status.to_string()) {
            response["headers"][name] = json!({"description": description, "schema": {"type": "string"}});
        }
        self
    }

    /// Refusals this operation can answer with, each a problem document.
    pub fn errors(mut self, statuses: &[u16]) -> Self {
        for status in statuses {
            let reference = json!({"$ref": format!("#/components/responses/{}", error_name(*status))});
            self.responses.entry(status.to_string()).or_insert(reference);
        }
        self
    }

    /// The operation object.
    pub fn to_json(&self) -> Value {
        let mut json = self.json.clone();
        let mut responses: Vec<(&String, &Value)> = self.responses.iter().collect();
        responses.sort_by_key(|(status, _)| status.as_str());
        json["responses"] = Value::Object(responses.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        json
    }
}

/// `{name}` segments of a path template, in order.
pub fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// Tenant and deployment names: lowercase DNS labels that start with a letter.
const LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// Path parameters mean the same on every route.
fn path_parameter(name: &str) -> Value {
    let (description, schema) = match name {
        "tenant" => {
            ("The Tenant's name.", json!({"type": "string", "maxLength": names::MAX_TENANT_NAME_LEN, "pattern": LABEL}))
        }
        "name" => (
            "The ModelDeployment's name.",
            json!({"type": "string", "maxLength": names::MAX_DEPLOYMENT_NAME_LEN, "pattern": LABEL}),
        ),
        "id" => ("The API key's id (from its listing).", json!({"type": "string", "pattern": "^[0-9a-f]{12}$"})),
        _ => ("", json!({"type": "string"})),
    };
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

fn request_id_header() -> Value {
    json!({"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}})
}

/// The name of the shared response for `status`.
fn error_name(status: u16) -> String {
    format!("Problem{status}")
}

/// What each refusal means, in this API's words.
const ERRORS: [(u16, &str); 15] = [
    (400, "The request is malformed: a query parameter, or a body that is not JSON. The detail names it."),
    (401, "No credentials, or credentials that prove nothing (expired, wrong issuer or audience, revoked key)."),
    (403, "The caller's role does not allow this; the detail names the roles that would."),
    (404, "No such object, or one in a tenant the caller holds no role in."),
    (408, "The request took longer than the route allows."),
    (409, "Another field manager (kubectl, Argo CD, Flux) owns a field this would change, or the tenant is not Ready."),
    (413, "The body is larger than the route takes."),
    (415, "The body is declared as something other than JSON."),
    (
        422,
        "The body is well-formed but invalid (schema, CEL rule or ember-api's own check); the detail names the field.",
    ),
    (429, "Over a rate limit (the caller's, the tenant's or the source address's); `Retry-After` says when to retry."),
    (501, "This needs something the server was not configured with (its database)."),
    (502, "The model's runtime answered nothing usable or could not be reached."),
    (
        503,
        "ember-api is still loading its caches, or a service it depends on failed; `Retry-After` may say when to retry.",
    ),
    (504, "The model's runtime did not answer in time."),
    (500, "A fault of ember-api itself; the detail names nothing internal."),
];

/// `components.responses`: one problem response per status.
pub fn error_responses() -> Value {
    let mut responses = Map::new();
    for (status, description) in ERRORS {
        let mut headers = request_id_header();
        if matches!(status, 429 | 503) {
            headers["Retry-After"] = json!({"$ref": "#/components/headers/Retry-After"});
        }
        if status == 401 {
            headers["WWW-Authenticate"] = json!({"$ref": "#/components/headers/WWW-Authenticate"});
        }
        let problem = json!({"schema": {"$ref": "#/components/schemas/Problem"}});
        responses.insert(
            error_name(status),
            json!({
                "description": description,
                "headers": headers,
                "content": {"application/problem+json": problem},
            }),
        );
    }
    Value::Object(responses)
}

/// An OpenAPI content map: each media type with its schema.
fn content_map(content: &[(&str, Value)]) -> Map<String, Value> {
    content.iter().map(|(media, schema)| ((*media).to_owned(), json!({"schema": schema}))).collect()
}

/// `components.headers`.
pub fn headers() -> Value {
    json!({
        "X-Request-Id": {
            "description": "The request's id: the caller's own (1 to 128 visible ASCII characters) or a generated one. \
                It is in ember-api's log lines and audit rows for the request, and passed to the model's runtime.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 128},
        },
        "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}},
        "WWW-Authenticate": {"description": "`Bearer error=\"invalid_token\"` (RFC 6750).", "schema": {"type": "string"}},
    })
}
