//! Inference through the API: `POST /v1/tenants/{t}/deployments/{name}/infer`
//! (Open Inference Protocol v2, JSON or binary tensor extension) and
//! `.../embeddings` (OpenAI style), forwarded to the deployment's Service.
//!
//! The upstream address is derived from the deployment's name and namespace
//! through a template (default `http://{name}.{namespace}.svc:8080`), never
//! read from the object: nothing a tenant writes can point the API at
//! another address. Every call is metered per tenant and deployment.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::Tenancy;
use crate::auth::Principal;
use crate::authz::TenantRole;
use crate::error::{Error, Result};
use crate::metering::Call;

/// Headers passed through in both directions.
const INFERENCE_HEADER_LENGTH: &str = "inference-header-content-length";
const REQUEST_ID: &str = "x-request-id";

/// Where inference calls go and how long they may take.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub client: reqwest::Client,
    /// Base URL with `{name}` and `{namespace}` placeholders.
    pub endpoint_template: String,
}

impl Upstream {
    fn base_url(&self, name: &str, namespace: &str) -> String {
        self.endpoint_template.replace("{name}", name).replace("{namespace}", namespace)
    }
}

pub async fn infer(
    state: State<Tenancy>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let path = format!("/v2/models/{name}/infer");
    forward(state, who, tenant, name, &path, headers, body).await
}

pub async fn embeddings(
    state: State<Tenancy>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    forward(state, who, tenant, name, "/v1/embeddings", headers, body).await
}

async fn forward(
    State(state): State<Tenancy>,
    who: Principal,
    tenant: String,
    name: String,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    // Calling a model is reading it: viewers may.
    let access = state.access(&tenant, &who, TenantRole::View)?;
    let namespace = access
        .namespace()
        .filter(|namespace| state.caches.deployment(namespace, &name).is_some())
        .ok_or_else(|| Error::NotFound(format!("deployment '{name}' not found in tenant '{tenant}'")))?
        .to_owned();
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(new_request_id, str::to_owned);
    let url = format!("{}{path}", state.upstream.base_url(&name, &namespace));
    let started = Instant::now();
    let bytes_in = body.len() as u64;

    let mut request = state.upstream.client.post(&url).header(REQUEST_ID, &request_id).body(body);
    for passed in [header::CONTENT_TYPE.as_str(), INFERENCE_HEADER_LENGTH] {
        if let Some(value) = headers.get(passed) {
            request = request.header(passed, value);
        }
    }
    let outcome = async {
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    }
    .await;

    let (status, response) = match outcome {
        Ok((status, upstream_headers, body)) => {
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            for passed in [header::CONTENT_TYPE.as_str(), INFERENCE_HEADER_LENGTH, header::RETRY_AFTER.as_str()] {
                if let Some(value) = upstream_headers.get(passed) {
                    response.headers_mut().insert(HeaderName::from_static(passed), value.clone());
                }
            }
            (status, response)
        }
        Err(error) => {
            tracing::warn!(%error, tenant = %tenant, deployment = %name, request_id = %request_id, "inference upstream failed");
            let (status, detail) = if error.is_timeout() {
                (StatusCode::GATEWAY_TIMEOUT, format!("deployment '{name}' did not answer in time"))
            } else {
                (StatusCode::BAD_GATEWAY, format!("deployment '{name}' is not reachable; is it Ready?"))
            };
            (status, crate::error::problem(status, &detail))
        }
    };
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let bytes_out = axum::body::HttpBody::size_hint(response.body()).exact().unwrap_or(0);
    state.metering.record(&Call {
        tenant: access.name(),
        deployment: &name,
        status: status.as_u16(),
        bytes_in,
        bytes_out,
        elapsed: started.elapsed(),
    });
    tracing::info!(tenant = %tenant, deployment = %name, user = %who.user, request_id = %request_id, status = status.as_u16(), "inference proxied");
    Ok(response)
}

/// A random correlation id when the caller sent none.
fn new_request_id() -> String {
    use std::fmt::Write;
    let bytes: [u8; 16] = rand::random();
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
