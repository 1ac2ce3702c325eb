//! Verifies bearer JWTs against the configured issuer's public keys.
//!
//! What decides acceptance is configuration, never the token: the accepted
//! algorithms are a configured list of asymmetric ones (so `alg: none` and
//! HS256 "signed" with the public key are refused), the key comes from the
//! configured JWKS URI by `kid`, and `exp`, `iss`, `aud` and `sub` are
//! required. `nbf` is checked whenever present (jsonwebtoken leaves it off by
//! default); it is not required because common identity providers omit it.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::KeyCache;
use super::verified::{self, Verified, VerifiedTokens};
use super::{API_KEY_USER_PREFIX, Principal};
use crate::error::{Error, Result};

/// How ember-api trusts an identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSettings {
    /// Required `iss` value.
    pub issuer: String,
    /// Required `aud` value (one of the token's audiences).
    pub audience: String,
    /// Where the issuer publishes its signing keys (JWKS).
    pub jwks_uri: String,
    /// PEM bundle of CAs to trust for the JWKS URI besides the public
    /// roots: identity providers behind a private CA.
    #[serde(default)]
    pub jwks_ca_file: Option<std::path::PathBuf>,
    /// Accepted signature algorithms; asymmetric only.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// Claim holding the user name Tenants list as owners/members.
    pub username_claim: String,
    /// Claim holding the caller's groups (an array of strings).
    pub groups_claim: String,
    /// An unknown `kid` refreshes the keys at most this often.
    pub jwks_min_refresh_seconds: u64,
    /// Keys older than this are refetched on the next request: a key
    /// withdrawn at the identity provider stops working within this time.
    pub jwks_max_age_seconds: u64,
}

impl JwtSettings {
    /// Settings with the usual defaults: RS256 and ES256, 30 s leeway,
    /// `sub` and `groups`, key refresh at most every 60 s and at least
    /// every 5 minutes.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, jwks_uri: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_uri: jwks_uri.into(),
            jwks_ca_file: None,
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            leeway_seconds: 30,
            username_claim: "sub".to_owned(),
            groups_claim: "groups".to_owned(),
            jwks_min_refresh_seconds: 60,
            jwks_max_age_seconds: 300,
        }
    }
}

#[derive(Debug)]
pub struct JwtVerifier {
    settings: JwtSettings,
    keys: KeyCache,
    /// Tokens verified before (see `verified`).
    verified: VerifiedTokens,
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Result<Self> {
        if settings.algorithms.is_empty() {
            return Err(Error::Config("at least one JWT algorithm must be accepted".into()));
        }
        if let Some(hmac) =
            settings.algorithms.iter().find(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            return Err(Error::Config(format!(
                "JWT algorithm {hmac:?} needs a shared secret; ember-api only verifies with the issuer's public keys"
            )));
        }
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(Error::Config("JWT issuer and audience must not be empty".into()));
        }
        let keys = KeyCache::new(
            &settings.jwks_uri,
            settings.jwks_ca_file.as_deref(),
            Duration::from_secs(settings.jwks_min_refresh_seconds),
            Duration::from_secs(settings.jwks_max_age_seconds),
        )?;
        Ok(Self { settings, keys, verified: VerifiedTokens::default() })
    }

    /// The caller a token proves, or why it proves nothing.
    pub async fn verify(&self, token: &str) -> Result<Principal> {
        let digest = verified::digest(token);
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(earlier) = self.verified.get(&digest, now) {
            // Still published, unchanged, by the identity provider?
            match self.keys.key(earlier.key.common.key_id.as_deref()).await? {
                Some(current) if current == earlier.key => return Ok(earlier.principal),
                _ => self.verified.forget(&digest),
            }
        }
        let (principal, verified) = self.verify_signature(token).await?;
        if let Some(verified) = verified {
            self.verified.insert(digest, verified, now);
        }
        Ok(principal)
    }

    /// The full check; also what to remember of it.
    async fn verify_signature(&self, token: &str) -> Result<(Principal, Option<Verified>)> {
        // An unknown or `none` algorithm fails to parse here.
        let header = decode_header(token).map_err(|_| Error::Unauthenticated("malformed token".into()))?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(Error::Unauthenticated(format!("token algorithm {:?} is not accepted", header.alg)));
        }
        let jwk = self
            .keys
            .key(header.kid.as_deref())
            .await?
            .ok_or_else(|| Error::Unauthenticated("token is signed with an unknown key".into()))?;
        if let Some(key_algorithm) = jwk.common.key_algorithm {
            // Both enums print the JOSE name (`RS256`, `ES256`, ...).
            if format!("{key_algorithm:?}") != format!("{:?}", header.alg) {
                return Err(Error::Unauthenticated("token algorithm does not match its key".into()));
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| Error::Unauthenticated("token key is unusable".into()))?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Map<String, Value>>(token, &key, &validation).map_err(rejection)?.claims;
        let principal = self.principal(&claims)?;
        let remembered = claims.get("exp").and_then(Value::as_u64).map(|expires_at| Verified {
            principal: principal.clone(),
            expires_at,
            key: jwk,
        });
        Ok((principal, remembered))
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal> {
        let claim = &self.settings.username_claim;
        let user = match claims.get(claim) {
            Some(Value::String(user)) if !user.is_empty() => user.clone(),
            _ => return Err(Error::Unauthenticated(format!("token has no '{claim}' claim naming the user"))),
        };
        // Anyone can put any address in their profile at many providers;
        // only a verified one may stand for the user Tenants name.
        if claim == "email" && claims.get("email_verified") != Some(&Value::Bool(true)) {
            return Err(Error::Unauthenticated("token's email is not verified (email_verified is not true)".into()));
        }
        // `apikey:<id>` is how API keys appear in rate limits and the audit
        // log; a user of that name would share their bucket and identity.
        if user.starts_with(API_KEY_USER_PREFIX) {
            return Err(Error::Unauthenticated(format!(
                "user names starting with '{API_KEY_USER_PREFIX}' are reserved for API keys"
            )));
        }
        let groups = match claims.get(&self.settings.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.bad_groups())?,
            Some(_) => return Err(self.bad_groups()),
        };
        // Names go to the audit trail, usage rows and logs as they are.
        if std::iter::once(&user).chain(&groups).any(|name| name.chars().any(char::is_control)) {
            return Err(Error::Unauthenticated("token's user or group names contain control characters".into()));
        }
        Ok(Principal { user, groups, api_key: None, platform_admin: false })
    }

    fn bad_groups(&self) -> Error {
        Error::Unauthenticated(format!("token claim '{}' must be an array of strings", self.settings.groups_claim))
    }
}

/// Says which check failed, in words a client developer can act on.
fn rejection(error: jsonwebtoken::errors::Error) -> Error {
    let reason = match error.kind() {
        ErrorKind::ExpiredSignature => "token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "token was issued by another issuer".to_owned(),
        ErrorKind::InvalidAudience => "token is meant for another audience".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the '{claim}' claim"),
        ErrorKind::InvalidSignature => "token signature does not verify".to_owned(),
        ErrorKind::InvalidAlgorithm => "token algorithm does not match its key".to_owned(),
        _ => "malformed token".to_owned(),
    };
    Error::Unauthenticated(reason)
}
