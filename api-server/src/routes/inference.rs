//! Inference through the API: `POST /v1/tenants/{t}/deployments/{name}/infer`
//! (Open Inference Protocol v2, JSON or binary tensor extension) and
//! `.../embeddings` (OpenAI style), forwarded to the deployment's Service.
//!
//! The upstream address is derived from the deployment's name and namespace
//! through a template (default `http://{name}.{namespace}.svc:8080`), never
//! read from the object: nothing a tenant writes can point the API at
//! another address. Every forwarded call is metered per tenant and
//! deployment (Prometheus) and, with a platform database, recorded for
//! billing per caller too (`crate::usage`), with the items, tokens and
//! compute time the runtime states in its `x-ember-*` headers (ember-api
//! never parses bodies for them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::Response;

use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{RouteTable, Tenancy, read_body};
use crate::auth::Principal;
use crate::authz::Capability;
use crate::error::{Error, Result};
use crate::metering::{Call, Metering};
use crate::request_id;
use crate::usage::{CallUsage, UsageRecorder};

/// Headers passed through in both directions.
const INFERENCE_HEADER_LENGTH: &str = "inference-header-content-length";
/// What the runtime says a call cost (see docs/runtime.md); passed back too.
const ITEMS: &str = "x-ember-items";
const TOKENS: &str = "x-ember-tokens";
const COMPUTE_US: &str = "x-ember-compute-us";

/// Where inference calls go, and the bounds that keep ember-api's memory
/// in check whatever callers and runtimes send: at most `slots` calls in
/// flight, each holding at most `max_request_bytes`; answers are streamed.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub client: reqwest::Client,
    /// Base URL with `{name}` and `{namespace}` placeholders.
    pub endpoint_template: String,
    /// Largest inference request body (the runtime's own default limit).
    pub max_request_bytes: usize,
    /// Largest runtime answer passed back (declared larger → 502;
    /// undeclared → cut off there).
    pub max_response_bytes: usize,
    /// Calls in flight; a call waits up to `SLOT_WAIT` for one, then 503.
    pub slots: Arc<Semaphore>,
    /// Longest call (the HTTP client's own timeout; the router's layer
    /// allows a few seconds more for reading the request body).
    pub timeout: Duration,
}

/// How long a call waits for a free slot before 503 + Retry-After.
const SLOT_WAIT: Duration = Duration::from_secs(2);

impl Upstream {
    /// 8 MiB requests, 16 MiB answers, 8 calls in flight: at most 64 MiB
    /// of request bodies, inside the pod's memory limit.
    pub fn new(client: reqwest::Client, endpoint_template: impl Into<String>) -> Self {
        Self {
            client,
            endpoint_template: endpoint_template.into(),
            max_request_bytes: 8 << 20,
            max_response_bytes: 16 << 20,
            slots: Arc::new(Semaphore::new(8)),
            timeout: Duration::from_secs(60),
        }
    }

    fn base_url(&self, name: &str, namespace: &str) -> String {
        self.endpoint_template.replace("{name}", name).replace("{namespace}", namespace)
    }
}

pub fn routes() -> RouteTable<Tenancy> {
    RouteTable::new()
        .post("/v1/tenants/{tenant}/deployments/{name}/infer", infer)
        .post("/v1/tenants/{tenant}/deployments/{name}/embeddings", embeddings)
}

/// The inference routes, with their own bounds: the call's timeout plus
/// time to read the body, and the inference body limit.
pub fn router(upstream: &Upstream) -> Router<Tenancy> {
    crate::layers::bounded(routes().into_router(), upstream.timeout + BODY_READ_ALLOWANCE, upstream.max_request_bytes)
}

/// Time allowed beyond the call's timeout for the request body to arrive.
const BODY_READ_ALLOWANCE: Duration = Duration::from_secs(5);

pub async fn infer(
    state: State<Tenancy>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let path = format!("/v2/models/{name}/infer");
    forward(state, who, tenant, name, &path, headers, body).await
}

pub async fn embeddings(
    state: State<Tenancy>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
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
    body: Body,
) -> Result<Response> {
    let access = state.access(&tenant, &who, Capability::CallModels).await?;
    let namespace = access
        .namespace()
        .filter(|namespace| state.caches.deployment(namespace, &name).is_some())
        .ok_or_else(|| Error::NotFound(format!("deployment '{name}' not found in tenant '{tenant}'")))?
        .to_owned();
    // Settled by the request-id layer (kept from the caller or made there),
    // which also puts it on the response.
    let request_id = request_id::current().unwrap_or_else(request_id::generate);
    // Only now, authorised and holding a slot, is the body read.
    let slot = tokio::time::timeout(SLOT_WAIT, state.upstream.slots.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| Error::Busy("too many inference calls in flight; retry shortly".into()))?;
    let body = read_body(body, state.upstream.max_request_bytes).await?;
    let url = format!("{}{path}", state.upstream.base_url(&name, &namespace));
    let started = Instant::now();
    let bytes_in = body.len() as u64;
    let max_response_bytes = state.upstream.max_response_bytes;

    let mut request = state.upstream.client.post(&url).header(request_id::HEADER, &request_id).body(body);
    for passed in [header::CONTENT_TYPE.as_str(), INFERENCE_HEADER_LENGTH] {
        if let Some(value) = headers.get(passed) {
            request = request.header(passed, value);
        }
    }
    let mut finish = Finished {
        metering: state.metering.clone(),
        usage: state.platform.as_ref().map(|p| p.usage.clone()),
        tenant: access.name().to_owned(),
        deployment: name.clone(),
        caller: who.user.clone(),
        status: StatusCode::BAD_GATEWAY,
        bytes_in,
        bytes_out: 0,
        stated: Stated::default(),
        started,
        _slot: slot,
    };
    let outcome = match request.send().await {
        Err(error) => Err(UpstreamFailure::Http(error)),
        // A declared length over the cap is refused unread.
        Ok(answer) if answer.content_length().is_some_and(|n| n > max_response_bytes as u64) => {
            Err(UpstreamFailure::TooLarge)
        }
        Ok(answer) => Ok(answer),
    };
    let response = match outcome {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let upstream_headers = answer.headers().clone();
            finish.status = status;
            finish.stated = Stated::from_headers(&upstream_headers);
            let mut response = Response::new(Body::from_stream(stream_capped(answer, max_response_bytes, finish)));
            *response.status_mut() = status;
            for passed in [
                header::CONTENT_TYPE.as_str(),
                header::CONTENT_LENGTH.as_str(),
                INFERENCE_HEADER_LENGTH,
                header::RETRY_AFTER.as_str(),
                ITEMS,
                TOKENS,
                COMPUTE_US,
            ] {
                if let Some(value) = upstream_headers.get(passed) {
                    response.headers_mut().insert(HeaderName::from_static(passed), value.clone());
                }
            }
            response
        }
        Err(failure) => {
            tracing::warn!(?failure, tenant = %tenant, deployment = %name, request_id = %request_id, "inference upstream failed");
            let (status, detail) = match failure {
                UpstreamFailure::Http(error) if error.is_timeout() => {
                    (StatusCode::GATEWAY_TIMEOUT, format!("deployment '{name}' did not answer in time"))
                }
                UpstreamFailure::Http(_) => {
                    (StatusCode::BAD_GATEWAY, format!("deployment '{name}' is not reachable; is it Ready?"))
                }
                UpstreamFailure::TooLarge => (
                    StatusCode::BAD_GATEWAY,
                    format!("deployment '{name}' answered with more than {max_response_bytes} bytes"),
                ),
            };
            finish.status = status;
            drop(finish);
            crate::error::problem(status, &detail)
        }
    };
    tracing::info!(tenant = %tenant, deployment = %name, user = %who.user, request_id = %request_id, status = response.status().as_u16(), "inference proxied");
    Ok(response)
}

/// The runtime's answer passed on chunk by chunk, never buffered whole:
/// memory per call stays at a few chunks whatever the answer's size. An
/// answer that grows past `max` without having declared its length is cut
/// off there (the caller sees the response abort).
fn stream_capped(
    answer: reqwest::Response,
    max: usize,
    mut finished: Finished,
) -> impl futures::Stream<Item = std::io::Result<axum::body::Bytes>> {
    answer.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        finished.bytes_out += chunk.len() as u64;
        if finished.bytes_out > max as u64 {
            return Err(std::io::Error::other(format!("the runtime's answer is larger than {max} bytes")));
        }
        Ok(chunk)
    })
}

/// What the runtime's headers say a call cost; zeros when it said nothing
/// (its refusals, or an answer ember-api made itself).
#[derive(Debug, Default, Clone, Copy)]
struct Stated {
    items: u64,
    tokens: u64,
    compute: Duration,
}

impl Stated {
    fn from_headers(headers: &reqwest::header::HeaderMap) -> Self {
        let number = |name: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
        };
        Self { items: number(ITEMS), tokens: number(TOKENS), compute: Duration::from_micros(number(COMPUTE_US)) }
    }
}

/// Meters a call when it ends: when its answer has been streamed (or the
/// caller went away), or at once for an answer ember-api made itself. It
/// holds the call's slot until then.
struct Finished {
    metering: Arc<Metering>,
    usage: Option<Arc<UsageRecorder>>,
    tenant: String,
    deployment: String,
    caller: String,
    status: StatusCode,
    bytes_in: u64,
    bytes_out: u64,
    stated: Stated,
    started: Instant,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some(usage) = &self.usage {
            usage.record(&CallUsage {
                tenant: &self.tenant,
                deployment: &self.deployment,
                caller: &self.caller,
                status: self.status.as_u16(),
                items: self.stated.items,
                tokens: self.stated.tokens,
                compute: self.stated.compute,
            });
        }
        self.metering.record(&Call {
            tenant: &self.tenant,
            deployment: &self.deployment,
            status: self.status.as_u16(),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            elapsed: self.started.elapsed(),
        });
    }
}

/// Why the runtime's answer did not come back.
#[derive(Debug)]
enum UpstreamFailure {
    Http(reqwest::Error),
    TooLarge,
}
