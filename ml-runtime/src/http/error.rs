//! Maps the crate's [`Error`] to HTTP: a status code and a JSON body with an
//! `error` message (what Open Inference Protocol clients read) plus RFC 9457
//! problem fields. Internal details are logged, not returned.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::Error;

impl Error {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::UnknownModel(_) => StatusCode::NOT_FOUND,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Config(_)
            | Error::ModelFile { .. }
            | Error::ChecksumMismatch { .. }
            | Error::Fetch { .. }
            | Error::Inference(_)
            | Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
            "internal error while running the model".to_owned()
        } else {
            self.to_string()
        };
        let body = serde_json::json!({
            "error": message,
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": message,
        });
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Error::QueueFull { .. }) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
