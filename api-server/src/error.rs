//! The crate's one error type, answered as RFC 9457 problem+json.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials that do not prove who the caller is.
    /// The message names what was wrong with the token, never the token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The identity provider's keys could not be fetched or read.
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
    /// Invalid start-up configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The resource does not exist, or the caller may not know it does.
    #[error("{0}")]
    NotFound(String),
    /// The caller is known to the tenant but its role is too weak.
    #[error("{0}")]
    Forbidden(String),
    /// The request body is not what the route takes.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than the route takes.
    #[error("{0}")]
    TooLarge(String),
    /// The body is declared as something other than what the route takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests of this kind in flight; retry shortly.
    #[error("{0}")]
    Busy(String),
    /// Well-formed but refused by validation (ours or the API server's CRD
    /// schema and CEL rules, whose message names the field).
    #[error("{0}")]
    Invalid(String),
    /// Another field manager (kubectl, Argo CD, Flux) owns what the request
    /// would change, or the tenant is not ready for it.
    #[error("{0}")]
    Conflict(String),
    /// A service ember-api depends on (the Kubernetes API server, its own
    /// database) failed or could not be reached. The message is ours,
    /// never the dependency's.
    #[error("{0}")]
    Upstream(String),
    /// Caches not synced yet.
    #[error("{0}")]
    NotReady(String),
    /// Over a rate limit; retry after this many seconds.
    #[error("rate limit exceeded for {what}; retry after {retry_after_seconds} s")]
    RateLimited { what: String, retry_after_seconds: u64 },
    /// A feature this server was not configured for.
    #[error("{0}")]
    NotImplemented(String),
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Upstream(_) | Error::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// An RFC 9457 problem document: the body of every error ember-api
/// answers (`application/problem+json`).
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Problem<'a> {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The status's reason phrase.
    pub title: &'a str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person; names the field or parameter at fault.
    pub detail: &'a str,
}

/// Writes an RFC 9457 problem document.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let body = Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

impl From<kube::Error> for Error {
    /// API-server answers become the matching problem; its message (which
    /// names the offending field for schema and CEL failures) is passed on.
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => match status.code {
                404 => Error::NotFound(status.message),
                409 => Error::Conflict(status.message),
                400 | 422 => Error::Invalid(status.message),
                // Server-side apply reports a body that does not fit the
                // schema's types (a field not declared, an object where a
                // boolean goes) as a 500 "failed to create typed patch
                // object ... <field path>: <what is wrong>"; it is the
                // caller's input, so answer it as such.
                500 if status.message.contains("failed to create typed patch object") => Error::Invalid(status.message),
                403 => {
                    // Our own ServiceAccount lacks a right: a deployment bug,
                    // not the caller's fault, so do not pass the detail on.
                    tracing::error!(message = %status.message, "ember-api was refused by the API server");
                    Error::Upstream("ember-api is not permitted to do this; check its RBAC".into())
                }
                // The API server's own failures are logged, never passed on
                // raw: they can name internals (etcd, webhooks, addresses).
                code => {
                    tracing::warn!(code, message = %status.message, "the Kubernetes API server failed");
                    Error::Upstream("the Kubernetes API server could not complete the request; retry shortly".into())
                }
            },
            other => {
                tracing::warn!(error = %other, "the Kubernetes API server is unreachable");
                Error::Upstream("the Kubernetes API server is unreachable; retry shortly".into())
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = problem(status, &self.to_string());
        if let Error::RateLimited { retry_after_seconds, .. } = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
        }
        if let Error::Busy(_) = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tell the client which scheme and that the token failed.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
        }
        response
    }
}
