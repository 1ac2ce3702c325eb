//! Who is calling: bearer JWTs from the configured identity provider.
//!
//! The resulting [`Principal`] carries the user name and groups in the same
//! form Tenants name their owners and members (`{kind: User, name}`,
//! `{kind: Group, name}`), so authorisation can compare them directly.

pub mod jwks;
pub mod jwt;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Serialize;

use crate::error::Error;
pub use jwt::{JwtSettings, JwtVerifier};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// User name (the configured username claim, `sub` by default).
    pub user: String,
    /// Group names from the configured groups claim; empty when absent.
    pub groups: Vec<String>,
}

/// Extracts the caller from `Authorization: Bearer <jwt>`; anything else is
/// a 401 problem.
impl<S> FromRequestParts<S> for Principal
where
    Arc<JwtVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<JwtVerifier>::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| Error::Unauthenticated("missing Authorization header".into()))?;
        let value = header.to_str().map_err(|_| Error::Unauthenticated("malformed Authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Error::Unauthenticated("Authorization must use the Bearer scheme".into()))?;
        verifier.verify(token.trim()).await
    }
}
