//! Correlation ids: every request has one, kept from the caller's
//! `X-Request-Id` when it is a sane token or made here otherwise. It is on
//! the request (so the inference proxy passes it to the runtime), on the
//! response, in the span every log line of the request carries, and in
//! each audit row the request writes (read through [`current`]).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

/// Longest id kept from a caller; longer (or odd) ones are replaced, so an
/// id cannot bloat logs or audit rows or smuggle control characters.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request this task serves, if it runs inside one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Whether a caller's id is kept: 1 to 128 visible ASCII characters without
/// quotes or backslashes.
fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// A random 128-bit id in hex.
pub fn generate() -> String {
    use std::fmt::Write;
    let bytes: [u8; 16] = rand::random();
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Middleware: settles the id, runs the rest of the stack with it, and
/// returns it on the response.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(generate, str::to_owned);
    // Checked above or generated: always a valid header value.
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(HEADER, value.clone());
    let mut response = CURRENT.scope(id, next.run(request)).await;
    response.headers_mut().insert(HEADER, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(acceptable("req-42_abc.DEF:1"));
        assert!(!acceptable(""));
        assert!(!acceptable(&"a".repeat(129)));
        assert!(!acceptable("has space"));
        assert!(!acceptable("quote\"d"));
        assert!(!acceptable("ünïcode"));
        assert_eq!(generate().len(), 32);
        assert_ne!(generate(), generate());
    }
}
