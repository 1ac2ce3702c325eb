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
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Writes an RFC 9457 problem document.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = problem(status, &self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tell the client which scheme and that the token failed.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
        }
        response
    }
}
