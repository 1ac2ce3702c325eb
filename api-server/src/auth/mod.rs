//! Who is calling: a bearer JWT from the configured identity provider, or a
//! bearer API key (`ek_...`, see `keys`).
//!
//! The resulting [`Principal`] carries the user name and groups in the same
//! form Tenants name their owners and members (`{kind: User, name}`,
//! `{kind: Group, name}`), so authorisation can compare them directly; an
//! API key's principal carries its grant (one tenant, one role) instead.

pub mod jwks;
pub mod jwt;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Serialize;

use crate::audit::{AuditLog, Event};
use crate::error::Error;
use crate::keys::{KeyGrant, KeyStore, is_api_key};
pub use jwt::{JwtSettings, JwtVerifier};

/// How an API key's principal is named (`apikey:<id>`); reserved, so no
/// token can claim such a user name.
pub const API_KEY_USER_PREFIX: &str = "apikey:";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// User name (the configured username claim, `sub` by default), or
    /// `apikey:<id>` for an API key.
    pub user: String,
    /// Group names from the configured groups claim; empty when absent.
    pub groups: Vec<String>,
    /// Set for API keys: the only tenant and role the caller has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<KeyGrant>,
}

/// Checks credentials of either kind.
#[derive(Debug)]
pub struct Authenticator {
    pub jwt: Arc<JwtVerifier>,
    /// API keys work only with a platform database.
    pub keys: Option<(KeyStore, AuditLog)>,
}

impl Authenticator {
    pub fn jwt_only(jwt: Arc<JwtVerifier>) -> Self {
        Self { jwt, keys: None }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Principal, Error> {
        if !is_api_key(token) {
            return self.jwt.verify(token).await;
        }
        let Some((keys, audit)) = &self.keys else {
            return Err(Error::Unauthenticated("API keys are not enabled on this server".into()));
        };
        match keys.authenticate(token).await? {
            Ok(grant) => Ok(Principal {
                user: format!("{API_KEY_USER_PREFIX}{}", grant.id),
                groups: Vec::new(),
                api_key: Some(grant),
            }),
            Err(refusal) => {
                let actor = format!("{API_KEY_USER_PREFIX}{}", refusal.id.as_deref().unwrap_or("?"));
                audit
                    .record(Event {
                        tenant: None,
                        actor: &actor,
                        action: "authenticate",
                        target: None,
                        outcome: refusal.reason,
                    })
                    .await;
                Err(Error::Unauthenticated(refusal.reason.into()))
            }
        }
    }
}

/// Extracts the caller from `Authorization: Bearer <jwt or API key>`;
/// anything else is a 401 problem.
impl<S> FromRequestParts<S> for Principal
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authenticator = Arc::<Authenticator>::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| Error::Unauthenticated("missing Authorization header".into()))?;
        let value = header.to_str().map_err(|_| Error::Unauthenticated("malformed Authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Error::Unauthenticated("Authorization must use the Bearer scheme".into()))?;
        authenticator.authenticate(token.trim()).await
    }
}
