//! API keys: long-lived credentials for machines, scoped to one tenant and
//! one role (`view` or `edit`; never admin, so a key cannot mint keys).
//!
//! A key reads `ek_<id>_<secret>`: `id` is 48 random bits, public, stored and
//! safe to log; `secret` is 256 random bits, shown once at creation and
//! stored only as its SHA-256 (a fast hash is enough for a secret of that
//! entropy; there is nothing to brute-force). Verification compares digests
//! in constant time. Every request reads the row, so a revocation is
//! effective for the very next request.

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::auth::Principal;
use crate::authz::TenantRole;
use crate::error::{Error, Result};
use crate::platform_db::unavailable;

const PREFIX: &str = "ek_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// What a valid key grants, and on whose authority: it holds only while
/// the Tenant it was issued in (by UID) exists and its creator still
/// administers that tenant (see `authz::role_in`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyGrant {
    pub id: String,
    pub tenant: String,
    pub role: TenantRole,
    #[serde(skip)]
    pub tenant_uid: String,
    #[serde(skip)]
    pub created_by: String,
    #[serde(skip)]
    pub creator_groups: Vec<String>,
}

/// A freshly issued key; `key` is never retrievable again.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKey {
    pub id: String,
    pub name: String,
    pub role: TenantRole,
    pub key: String,
}

/// A key as listed: no secret, no digest.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub role: TenantRole,
    pub created_by: String,
    pub created_at: String,
    pub revoked: bool,
}

/// Why a presented key proves nothing; the id (when parseable) goes to the
/// audit log, the secret never does.
#[derive(Debug)]
pub struct Refusal {
    pub id: Option<String>,
    pub reason: &'static str,
}

/// tenant, role, digest, revoked, tenant UID, creator, creator's groups.
type KeyRow = (String, String, Vec<u8>, bool, Option<String>, String, Vec<String>);

/// id, tenant, role, tenant UID, creator, creator's groups.
type LiveKeyRow = (String, String, String, Option<String>, String, Vec<String>);

#[derive(Debug, Clone)]
pub struct KeyStore {
    pool: PgPool,
}

/// True when `token` looks like an API key rather than a JWT.
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn role_name(role: TenantRole) -> &'static str {
    match role {
        TenantRole::View => "view",
        _ => "edit",
    }
}

fn role_from(name: &str) -> TenantRole {
    if name == "view" { TenantRole::View } else { TenantRole::Edit }
}

/// Constant-time equality of two digests.
fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `id` has the form of a key id (lowercase hex of `ID_BYTES`).
pub fn is_key_id(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Splits `ek_<12 hex>_<secret>`.
fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_key_id(id) && !secret.is_empty() && secret.len() <= 64).then_some((id, secret))
}

impl KeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Issues a key for `tenant` (the Tenant object `tenant_uid`) with
    /// `role` (view or edit), on the authority of `creator`.
    pub async fn issue(
        &self,
        tenant: &str,
        tenant_uid: &str,
        name: &str,
        role: TenantRole,
        creator: &Principal,
    ) -> Result<IssuedKey> {
        if role == TenantRole::Admin {
            return Err(Error::Invalid("role must be 'view' or 'edit'; keys cannot administer a tenant".into()));
        }
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(Error::Invalid("name must have 1 to 100 characters, none of them control characters".into()));
        }
        let mut id_bytes = [0u8; ID_BYTES];
        let mut secret_bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut id_bytes);
        rand::rng().fill_bytes(&mut secret_bytes);
        let id = hex::encode(id_bytes);
        let secret = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret_bytes);
        let digest = Sha256::digest(secret.as_bytes()).to_vec();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, tenant_uid, name, role, secret_sha256, created_by, creator_groups) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(tenant_uid)
        .bind(name)
        .bind(role_name(role))
        .bind(&digest)
        .bind(&creator.user)
        .bind(&creator.groups)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(IssuedKey { key: format!("{PREFIX}{id}_{secret}"), id, name: name.to_owned(), role })
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<KeyInfo>> {
        let rows: Vec<(String, String, String, String, String, bool)> = sqlx::query_as(
            "SELECT id, name, role, created_by, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
             revoked_at IS NOT NULL FROM api_keys WHERE tenant = $1 ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(id, name, role, created_by, created_at, revoked)| KeyInfo {
                id,
                name,
                role: role_from(&role),
                created_by,
                created_at,
                revoked,
            })
            .collect())
    }

    /// Revokes `id` of `tenant`; false when there is no such live key.
    pub async fn revoke(&self, tenant: &str, id: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE tenant = $1 AND id = $2 AND revoked_at IS NULL")
                .bind(tenant)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    /// What `token` grants, or why it grants nothing. Database trouble is
    /// an `Err` (503), not a refusal.
    pub async fn authenticate(&self, token: &str) -> Result<std::result::Result<KeyGrant, Refusal>> {
        let Some((id, secret)) = parse(token) else {
            return Ok(Err(Refusal { id: None, reason: "malformed API key" }));
        };
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT tenant, role, secret_sha256, revoked_at IS NOT NULL, tenant_uid, created_by, creator_groups \
             FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let refuse = |reason| Ok(Err(Refusal { id: Some(id.to_owned()), reason }));
        let Some((tenant, role, digest, revoked, tenant_uid, created_by, creator_groups)) = row else {
            return refuse("unknown API key");
        };
        // Compare before looking at revocation so both paths cost the same.
        let matches = same_digest(&Sha256::digest(secret.as_bytes()), &digest);
        if !matches {
            return refuse("API key secret does not match");
        }
        if revoked {
            return refuse("API key has been revoked");
        }
        let Some(tenant_uid) = tenant_uid else {
            return refuse("API key predates keys bound to their Tenant; issue a new one");
        };
        Ok(Ok(KeyGrant { id: id.to_owned(), tenant, role: role_from(&role), tenant_uid, created_by, creator_groups }))
    }

    /// Revokes every live key for which `still_valid` says no, with the
    /// reason it gives; returns the revoked ids and reasons.
    pub async fn revoke_invalid(
        &self,
        still_valid: impl Fn(&KeyGrant) -> std::result::Result<(), &'static str>,
    ) -> Result<Vec<(String, String, &'static str)>> {
        let live: Vec<LiveKeyRow> = sqlx::query_as(
            "SELECT id, tenant, role, tenant_uid, created_by, creator_groups FROM api_keys WHERE revoked_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut revoked = Vec::new();
        for (id, tenant, role, tenant_uid, created_by, creator_groups) in live {
            let grant = KeyGrant {
                id,
                tenant,
                role: role_from(&role),
                tenant_uid: tenant_uid.unwrap_or_default(),
                created_by,
                creator_groups,
            };
            if let Err(reason) = still_valid(&grant) {
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(&grant.id)
                .bind(reason)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                revoked.push((grant.id, grant.tenant, reason));
            }
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_parse() {
        assert_eq!(parse("ek_0123456789ab_secret"), Some(("0123456789ab", "secret")));
        for bad in ["ek_0123456789AB_s", "ek_0123_s", "ek_0123456789ab_", "xx_0123456789ab_s", "ek_0123456789ab"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn digests_compare_by_content_and_length() {
        assert!(same_digest(&[1, 2, 3], &[1, 2, 3]));
        assert!(!same_digest(&[1, 2, 3], &[1, 2, 4]));
        assert!(!same_digest(&[1, 2, 3], &[1, 2]));
    }
}
