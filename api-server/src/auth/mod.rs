//! Who is calling: a bearer JWT from the configured identity provider, or a
//! bearer API key (`ek_...`, see `keys`).
//!
//! The resulting [`Principal`] carries the user name and groups in the same
//! form Tenants name their owners and members (`{kind: User, name}`,
//! `{kind: Group, name}`), so authorisation can compare them directly; an
//! API key's principal carries its grant (one tenant, one role) instead.

pub mod jwks;
pub mod jwt;
pub mod verified;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Serialize;

use crate::client_address::TrustedProxies;
use crate::error::Error;
use crate::keys::{KeyGrant, KeyStore, is_api_key};
use crate::ratelimit::SourceLimits;
use crate::refusals::Refusals;
pub use jwt::{JwtSettings, JwtVerifier};

/// How an API key's principal is named (`apikey:<id>`); reserved, so no
/// token can claim such a user name.
pub const API_KEY_USER_PREFIX: &str = "apikey:";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
    /// Member of the configured platform-admin group (never an API key).
    pub platform_admin: bool,
}

/// Checks credentials of either kind.
#[derive(Debug)]
pub struct Authenticator {
    pub jwt: Arc<JwtVerifier>,
    /// API keys work only with a platform database; refused keys are
    /// counted there.
    pub keys: Option<(KeyStore, Arc<Refusals>)>,
    /// Checked per source before any credential is.
    pub sources: SourceLimits,
    /// The group whose members are platform admins (`authz::Role`); none:
    /// nobody is, Tenants are administered with kubectl only.
    pub platform_admin_group: Option<String>,
}

impl Authenticator {
    pub fn new(jwt: Arc<JwtVerifier>, keys: Option<(KeyStore, Arc<Refusals>)>) -> Self {
        Self { jwt, keys, sources: SourceLimits::default(), platform_admin_group: None }
    }

    pub fn jwt_only(jwt: Arc<JwtVerifier>) -> Self {
        Self::new(jwt, None)
    }

    /// Authenticates a request from `source`: throttled per source first,
    /// and a refusal counts against the source.
    pub async fn authenticate_from(&self, source: &str, token: &str) -> Result<Principal, Error> {
        let throttled = |wait: std::time::Duration| Error::RateLimited {
            what: format!("address {source}"),
            retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
        };
        self.sources.requests.check(source).map_err(throttled)?;
        self.sources.refusals.peek(source).map_err(throttled)?;
        let result = self.authenticate(source, token).await;
        if matches!(result, Err(Error::Unauthenticated(_))) {
            let _ = self.sources.refusals.check(source);
        }
        result
    }

    async fn authenticate(&self, source: &str, token: &str) -> Result<Principal, Error> {
        if !is_api_key(token) {
            let mut principal = self.jwt.verify(token).await?;
            principal.platform_admin =
                self.platform_admin_group.as_ref().is_some_and(|group| principal.groups.contains(group));
            return Ok(principal);
        }
        let Some((keys, refusals)) = &self.keys else {
            return Err(Error::Unauthenticated("API keys are not enabled on this server".into()));
        };
        match keys.authenticate(token).await? {
            Ok(grant) => Ok(Principal {
                user: format!("{API_KEY_USER_PREFIX}{}", grant.id),
                groups: Vec::new(),
                api_key: Some(grant),
                platform_admin: false,
            }),
            Err(refusal) => {
                tracing::info!(source, key_id = ?refusal.id, reason = refusal.reason, "API key refused");
                refusals.count(source, refusal.id.as_deref(), refusal.reason);
                Err(Error::Unauthenticated(refusal.reason.into()))
            }
        }
    }
}

/// The caller's address: the TCP peer, or the client a trusted proxy names
/// (`unknown` when the server was not started with connection info).
fn source_of(parts: &Parts, trusted: &TrustedProxies) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| trusted.client(c.0.ip(), &parts.headers).to_string())
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
        let source = source_of(parts, &authenticator.sources.trusted_proxies);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| Error::Unauthenticated("missing Authorization header".into()))?;
        let value = header.to_str().map_err(|_| Error::Unauthenticated("malformed Authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Error::Unauthenticated("Authorization must use the Bearer scheme".into()))?;
        authenticator.authenticate_from(&source, token.trim()).await
    }
}
