//! Routes that need both an authenticated caller and the cluster.

pub mod api_keys;
pub mod audit;
pub mod deployments;
pub mod inference;
pub mod table;
pub mod tenants;
pub mod usage;

pub use table::{RouteTable, Served};

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Query};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kube::Client;

use crate::audit::{AuditLog, Event};
use crate::auth::{Authenticator, Principal};
use crate::authz::{Capability, Role, allows, roles_in};
use crate::cache::Caches;
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::metering::Metering;
use crate::ratelimit::RateLimits;
use crate::usage::UsageRecorder;
use ember_crds::conditions::{find_condition, types};
use ember_crds::tenant::Tenant;

/// What tenant routes work with.
#[derive(Clone)]
pub struct Tenancy {
    pub auth: Arc<Authenticator>,
    /// API keys and audit log; absent without a platform database.
    pub platform: Option<Platform>,
    pub client: Client,
    pub caches: Caches,
    pub upstream: inference::Upstream,
    pub metering: Arc<Metering>,
    pub limits: Arc<RateLimits>,
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // kube::Client has no Debug; the caches say enough.
        f.debug_struct("Tenancy").field("caches", &self.caches).finish_non_exhaustive()
    }
}

impl FromRef<Tenancy> for Arc<Authenticator> {
    fn from_ref(state: &Tenancy) -> Self {
        state.auth.clone()
    }
}

/// What lives in ember-api's own database.
#[derive(Debug, Clone)]
pub struct Platform {
    pub keys: KeyStore,
    pub audit: AuditLog,
    /// Usage for billing (`crate::usage`).
    pub usage: Arc<UsageRecorder>,
}

impl Tenancy {
    /// The platform database's parts, or 501 when none is configured.
    pub fn required_platform(&self) -> Result<&Platform> {
        self.platform.as_ref().ok_or_else(|| {
            Error::NotImplemented("this needs ember-api's database (--database-url); none is configured".into())
        })
    }

    /// Revokes, every `interval`, the API keys that no longer hold (their
    /// Tenant deleted, their creator no longer an admin; see
    /// `authz::key_holds`), recording each revocation in the audit log.
    /// Such keys are refused from the moment the cache sees the change;
    /// this makes the revocation durable and visible.
    pub fn spawn_key_sweeper(&self, interval: std::time::Duration) {
        let tenancy = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if let Err(error) = tenancy.sweep_keys().await {
                    tracing::warn!(%error, "API key sweep failed; next time");
                }
            }
        });
    }

    /// One pass of [`spawn_key_sweeper`](Self::spawn_key_sweeper); returns how many keys it revoked.
    pub async fn sweep_keys(&self) -> Result<usize> {
        let Some(platform) = &self.platform else { return Ok(0) };
        if !self.caches.is_synced() {
            return Ok(0); // an empty cache would look like every tenant was deleted
        }
        let revoked = platform
            .keys
            .revoke_invalid(|grant| match self.caches.tenant(&grant.tenant) {
                Some(tenant) => crate::authz::key_holds(&tenant, grant),
                None => Err("its tenant was deleted"),
            })
            .await?;
        for (id, tenant, reason) in &revoked {
            let target = format!("apikey:{id}");
            let event =
                Event { tenant: Some(tenant), actor: "ember-api", action: "api-key.revoke", target: Some(&target) };
            let pending = platform.audit.begin(&event).await?;
            platform.audit.finish(pending, &format!("ok ({reason})")).await;
        }
        Ok(revoked.len())
    }

    /// Runs `action` on the record: with an audit log, the entry is written
    /// first (if that fails, 503 and the action does not run) and completed
    /// with the outcome afterwards.
    pub async fn audited<T>(&self, event: Event<'_>, action: impl Future<Output = Result<T>>) -> Result<T> {
        let Some(platform) = &self.platform else { return action.await };
        let pending = platform.audit.begin(&event).await?;
        let result = action.await;
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(error) => format!("failed ({})", error.status().as_u16()),
        };
        platform.audit.finish(pending, &outcome).await;
        result
    }
}

/// A tenant the caller may act in, with the caller's roles there.
#[derive(Debug)]
pub struct TenantAccess {
    pub tenant: Arc<Tenant>,
    pub roles: Vec<Role>,
}

impl TenantAccess {
    pub fn name(&self) -> &str {
        self.tenant.metadata.name.as_deref().unwrap_or_default()
    }

    /// The Tenant object's UID (what API keys are bound to).
    pub fn uid(&self) -> Result<&str> {
        self.tenant.metadata.uid.as_deref().ok_or_else(|| Error::NotReady("the tenant has no UID yet".into()))
    }

    /// The tenant's namespace as the operator recorded it in the Tenant's
    /// status, which it does only for a namespace it created or verified as
    /// the tenant's own. Never derived from the name: a namespace of that
    /// name may belong to someone else (the operator then reports
    /// `NamespaceConflict` and records none), and nothing of it may be read.
    pub fn namespace(&self) -> Option<&str> {
        self.tenant.status.as_ref().and_then(|s| s.namespace.as_deref())
    }

    /// Where writes go: the recorded namespace of a `Ready` Tenant (its
    /// quota, network policies and RBAC are in place). 409 otherwise.
    pub fn writable_namespace(&self) -> Result<&str> {
        let conditions = self.tenant.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let ready = find_condition(conditions, types::READY);
        match (self.namespace(), ready) {
            (Some(namespace), Some(ready)) if ready.status == "True" => Ok(namespace),
            (_, ready) => {
                let why = ready.map_or_else(
                    || "the operator has not reported on it yet".to_owned(),
                    |c| format!("{}: {}", c.reason, c.message),
                );
                Err(Error::Conflict(format!("tenant '{}' is not Ready ({why}); changes wait until it is", self.name())))
            }
        }
    }
}

/// A route's query string as ordered name/value pairs, its rejection kept
/// for the handler to answer after authorising the caller
/// ([`query_pairs`]); reports check each name themselves.
pub type QueryPairs = std::result::Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The pairs, or 400 when the query string cannot be read or a value holds
/// control characters (no name or time does; the database takes no NUL).
pub fn query_pairs(query: QueryPairs) -> Result<Vec<(String, String)>> {
    let Query(pairs) = query.map_err(|e| Error::BadRequest(format!("the query string cannot be read: {e}")))?;
    if let Some((name, _)) = pairs.iter().find(|(name, value)| name.chars().chain(value.chars()).any(char::is_control))
    {
        return Err(Error::BadRequest(format!("parameter '{name}' contains control characters")));
    }
    Ok(pairs)
}

/// Largest body of a spec write (a ModelDeployment spec is a few hundred
/// bytes; room for long URIs and many env entries).
pub const MAX_SPEC_BYTES: usize = 64 << 10;

/// Reads a request body of at most `limit` bytes. Handlers call it only
/// after authorising the caller, so a stranger's body is never read.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Error::TooLarge(format!("the request body is larger than this route takes ({limit} bytes)")))
        }
        Err(error) => Err(Error::BadRequest(format!("the request body could not be read: {error}"))),
    }
}

/// Takes one request from `key`'s bucket: its `own` (rate, burst) when it
/// has one, else the limiter's default; a 429 naming `what` when empty.
async fn limit(limiter: &crate::ratelimit::RateLimiter, key: &str, own: Option<(f64, f64)>, what: &str) -> Result<()> {
    limiter.acquire_within(key, own).await.map_err(|wait| Error::RateLimited {
        what: what.to_owned(),
        retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
    })
}

impl Tenancy {
    /// What every tenant route checks first: the caches are loaded and the
    /// caller is within its rate limit. The caller's limit counts every
    /// attempt, so probing tenant names is throttled too.
    pub async fn admit(&self, who: &Principal) -> Result<()> {
        if !self.caches.is_synced() {
            return Err(Error::NotReady("ember-api is still loading its caches; retry shortly".into()));
        }
        limit(&self.limits.per_caller, &who.user, None, "this caller").await
    }

    /// Resolves `tenant` for `who`, who must hold a role there that allows
    /// `capability`. A tenant the caller has no role in is reported exactly
    /// like a missing one, so tenant names cannot be probed.
    pub async fn access(&self, tenant: &str, who: &Principal, capability: Capability) -> Result<TenantAccess> {
        self.admit(who).await?;
        let not_found = || Error::NotFound(format!("tenant '{tenant}' not found"));
        let found = self.caches.tenant(tenant).ok_or_else(not_found)?;
        let roles = roles_in(&found, who);
        if roles.is_empty() {
            return Err(not_found());
        }
        // A Tenant's own `rateLimit` replaces the default per-tenant limit.
        let own = found.spec.rate_limit.map(|l| (f64::from(l.requests_per_second), f64::from(l.burst)));
        limit(&self.limits.per_tenant, tenant, own, &format!("tenant '{tenant}'")).await?;
        if !roles.iter().any(|role| allows(*role, capability)) {
            return Err(Error::Forbidden(refusal(tenant, &roles, capability)));
        }
        Ok(TenantAccess { tenant: found, roles })
    }

    /// [`access`](Self::access) for a change: the refusal of a caller who
    /// holds a role in the tenant, but not one that allows the change (403),
    /// is itself audited as `action` on `target`, outcome `denied (403)`.
    pub async fn access_to_change(
        &self,
        tenant: &str,
        who: &Principal,
        capability: Capability,
        action: &str,
        target: &str,
    ) -> Result<TenantAccess> {
        let access = self.access(tenant, who, capability).await;
        self.audit_refusal(&access, tenant, who, action, target).await;
        access
    }

    /// [`require_platform_admin`](Self::require_platform_admin) for a
    /// change, the refusal audited like [`access_to_change`](Self::access_to_change)'s.
    pub async fn platform_admin_to_change(
        &self,
        who: &Principal,
        tenant: &str,
        action: &str,
        target: &str,
    ) -> Result<()> {
        let allowed = self.require_platform_admin(who).await;
        self.audit_refusal(&allowed, tenant, who, action, target).await;
        allowed
    }

    async fn audit_refusal<T>(&self, result: &Result<T>, tenant: &str, who: &Principal, action: &str, target: &str) {
        if let (Err(Error::Forbidden(_)), Some(platform)) = (result, &self.platform) {
            let event = Event { tenant: Some(tenant), actor: &who.user, action, target: Some(target) };
            platform.audit.refused(&event, "denied (403)").await;
        }
    }

    /// Requires `who` to be a platform admin (404 for anyone else would
    /// hide nothing: platform routes are no secret).
    pub async fn require_platform_admin(&self, who: &Principal) -> Result<()> {
        self.admit(who).await?;
        if who.platform_admin { Ok(()) } else { Err(Error::Forbidden("this needs the platform-admin role".into())) }
    }
}

/// Says which roles the caller has and which would do.
fn refusal(tenant: &str, roles: &[Role], capability: Capability) -> String {
    let list = |roles: &mut dyn Iterator<Item = Role>| roles.map(|r| r.to_string()).collect::<Vec<_>>().join(" or ");
    let needed = list(&mut Role::ALL.into_iter().filter(|r| allows(*r, capability)));
    format!("your role in tenant '{tenant}' is {}; this needs {needed}", list(&mut roles.iter().copied()))
}
