//! The one way request bodies become values, so every bad body gets the
//! same problem+json shape: not JSON at all (or not declared as JSON) is
//! 400 (415 for a declared other type); JSON of the wrong shape is 422
//! naming the offending field by its path.
//!
//! [`JsonBody`] is the extractor: it takes the body unread, and the
//! handler reads it with [`JsonBody::read`] only after authorising the
//! caller, so a stranger's body is never read, let alone parsed.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A JSON request body, not read yet.
#[derive(Debug)]
pub struct JsonBody {
    declared: Result<()>,
    body: Body,
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self> {
        let declared = require_json(request.headers());
        Ok(Self { declared, body: request.into_body() })
    }
}

impl JsonBody {
    /// Reads at most `limit` bytes (413 beyond) and parses them as `T`;
    /// `what` names the expected value in messages.
    pub async fn read<T: DeserializeOwned>(self, limit: usize, what: &str) -> Result<T> {
        self.declared?;
        parse(&crate::routes::read_body(self.body, limit).await?, what)
    }
}

/// Refuses a body declared as anything but JSON (`application/json` or a
/// `+json` type). A body without a declared type is taken as JSON.
pub fn require_json(headers: &HeaderMap) -> Result<()> {
    let Some(declared) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence = declared.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(format!(
            "the body must be JSON (Content-Type: application/json), not '{essence}'"
        )))
    }
}

/// Parses `body` as `T`; `what` names it in messages ("a ModelDeployment spec").
pub fn parse<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    let not_json = |error: serde_json::Error| Error::BadRequest(format!("the body is not valid JSON: {error}"));
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            return not_json(inner);
        }
        let at = if path == "." || path.is_empty() { String::new() } else { format!(" at '{path}'") };
        Error::Invalid(format!("the body is not {what}{at}: {inner}"))
    })?;
    deserializer.end().map_err(not_json)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Key {
        name: String,
        limits: Limits,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Limits {
        rate: u32,
    }

    #[test]
    fn syntax_is_400_and_shape_is_422_naming_the_field() {
        assert!(matches!(parse::<Key>(b"{\"name\": ", "a key"), Err(Error::BadRequest(_))));
        assert!(matches!(parse::<serde_json::Value>(b"{} trailing", "a key"), Err(Error::BadRequest(_))));
        let Err(Error::Invalid(message)) = parse::<Key>(br#"{"name": "a", "limits": {"rate": "fast"}}"#, "a key")
        else {
            panic!("accepted")
        };
        assert!(message.contains("limits.rate") && message.contains("a key"), "{message}");
        let Err(Error::Invalid(message)) = parse::<Key>(br#"{"name": "a", "colour": 1}"#, "a key") else {
            panic!("accepted")
        };
        assert!(message.contains("colour"), "{message}");
        assert!(parse::<Key>(br#"{"name": "a", "limits": {"rate": 3}}"#, "a key").is_ok());
    }

    #[test]
    fn only_json_content_types_pass() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap_or_else(|_| unreachable!()));
            headers
        };
        assert!(require_json(&HeaderMap::new()).is_ok());
        assert!(require_json(&with("application/json; charset=utf-8")).is_ok());
        assert!(require_json(&with("application/merge-patch+json")).is_ok());
        assert!(matches!(require_json(&with("text/plain")), Err(Error::UnsupportedMediaType(_))));
        assert!(matches!(
            require_json(&with("application/x-www-form-urlencoded")),
            Err(Error::UnsupportedMediaType(_))
        ));
    }
}
