//! ember-api wired to the real control plane with exactly its own
//! ClusterRole, and callers with tokens from the local identity provider.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ember_api::audit::AuditLog;
use ember_api::auth::{Authenticator, JwtSettings, JwtVerifier};
use ember_api::cache::Caches;
use ember_api::keys::KeyStore;
use ember_api::metering::Metering;
use ember_api::platform_db;
use ember_api::ratelimit::{RateLimiter, RateLimits, SourceLimits};
use ember_api::refusals::Refusals;
use ember_api::routes::Platform;
use ember_api::routes::Tenancy;
use ember_api::routes::inference::Upstream;
use ember_api::usage::UsageRecorder;
use ember_api::{Surface, metrics_router, router};
use ember_crds::names;
use ember_crds::tenant::Tenant;
use ember_testenv::{install_crds, poll, shared_control_plane};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

use super::{AUDIENCE, ISSUER, Jwks, SigningKey, bearer, claims, spawn, spawn_stoppable, with};

/// The production endpoint template: Services in tenant namespaces.
pub const SERVICE_ENDPOINTS: &str = "http://{name}.{namespace}.svc:8080";

pub const TIMEOUT: Duration = Duration::from_secs(60);
pub const API_USER: &str = "system:serviceaccount:ember-system:ember-api";
/// The platform-admin group, as `config/rbac/platform-admin.yaml` binds it.
pub const PLATFORM_ADMINS: &str = "ember-platform-admins";

/// A running ember-api wired to the control plane, and a way to call it as
/// any user.
pub struct Harness {
    pub base: String,
    /// The separate metrics listener (`ember_api::metrics_router`).
    pub metrics_base: String,
    /// The local identity provider's JWKS document.
    pub jwks_url: String,
    key: SigningKey,
    pub admin: Client,
    http: reqwest::Client,
    /// ember-api's watch caches, to wait until they hold what a test wrote.
    caches: Caches,
    /// The state ember-api serves from (to run its background passes).
    pub tenancy: Tenancy,
    /// Stops the public listener gracefully (see [`Harness::stop`]).
    stop: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Harness {
    /// `endpoint_template`: where inference calls go (see `Upstream`).
    pub async fn start(endpoint_template: &str) -> Self {
        Self::start_with(endpoint_template, None, RateLimits::default(), SourceLimits::default()).await
    }

    /// With the given rate limits instead of the defaults.
    pub async fn start_with_limits(limits: RateLimits) -> Self {
        Self::start_with(SERVICE_ENDPOINTS, None, limits, SourceLimits::default()).await
    }

    /// Without rate limits that matter (for benchmarks that saturate it).
    pub async fn start_unthrottled(endpoint_template: &str) -> Self {
        let unlimited = || RateLimiter::new(1e9, 1e9);
        let limits = RateLimits { per_caller: unlimited(), per_tenant: unlimited() };
        let sources =
            SourceLimits { requests: unlimited(), refusals: unlimited(), trusted_proxies: Default::default() };
        Self::start_with(endpoint_template, None, limits, sources).await
    }

    /// Also with API keys and the audit log in the platform database at `database_url`.
    pub async fn start_with_platform(endpoint_template: &str, database_url: &str) -> Self {
        Self::start_with_platform_and_sources(endpoint_template, database_url, SourceLimits::default()).await
    }

    /// With the platform database and no rate limits that matter (for
    /// fuzzing, which sends thousands of requests as one caller).
    pub async fn start_with_platform_unthrottled(endpoint_template: &str, database_url: &str) -> Self {
        let unlimited = || RateLimiter::new(1e9, 1e9);
        let sources =
            SourceLimits { requests: unlimited(), refusals: unlimited(), trusted_proxies: Default::default() };
        let limits = RateLimits { per_caller: unlimited(), per_tenant: unlimited() };
        let platform = Self::platform(database_url).await;
        Self::start_with(endpoint_template, Some(platform), limits, sources).await
    }

    /// With the platform database and the given per-source limits.
    pub async fn start_with_platform_and_sources(
        endpoint_template: &str,
        database_url: &str,
        sources: SourceLimits,
    ) -> Self {
        let platform = Self::platform(database_url).await;
        Self::start_with(endpoint_template, Some(platform), RateLimits::default(), sources).await
    }

    async fn platform(database_url: &str) -> (Platform, Arc<Refusals>) {
        let pool = platform_db::connect(database_url).await.unwrap();
        let refusals = Arc::new(Refusals::new(pool.clone()));
        refusals.spawn_flusher(Duration::from_millis(200));
        let usage = Arc::new(UsageRecorder::new(pool.clone()));
        (Platform { keys: KeyStore::new(pool.clone()), audit: AuditLog::new(pool), usage }, refusals)
    }

    async fn start_with(
        endpoint_template: &str,
        platform: Option<(Platform, Arc<Refusals>)>,
        limits: RateLimits,
        sources: SourceLimits,
    ) -> Self {
        let cp = shared_control_plane().unwrap();
        let admin = cp.client().await.unwrap();
        install_crds(&admin, &ember_crds::crd_yaml::all_crds()).await.unwrap();
        ensure_namespace(&admin, "ember-system").await;
        cp.apply_kustomization(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rbac")).unwrap();

        let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).unwrap();
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        config.auth_info.impersonate = Some(API_USER.into());
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:ember-system".into(),
            "system:authenticated".into(),
        ]);
        let as_api = Client::try_from(config).unwrap();

        let key = SigningKey::generate("k1");
        let jwks = Jwks::serve(&[&key]).await;
        let verifier = Arc::new(JwtVerifier::new(JwtSettings::new(ISSUER, AUDIENCE, &jwks.url)).unwrap());
        let (platform, refusals) = platform.unzip();
        let mut authenticator = Authenticator::new(verifier, platform.as_ref().map(|p| p.keys.clone()).zip(refusals));
        authenticator.sources = sources;
        authenticator.platform_admin_group = Some(PLATFORM_ADMINS.into());
        let auth = Arc::new(authenticator);
        let upstream = Upstream::new(reqwest::Client::new(), endpoint_template);
        let metering = Arc::new(Metering::default());
        let caches = Caches::start(as_api.clone());
        let tenancy = Tenancy {
            auth,
            platform,
            caches: caches.clone(),
            client: as_api,
            upstream,
            metering: metering.clone(),
            limits: Arc::new(limits),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (addr, server) = spawn_stoppable(router(Surface::Full(Box::new(tenancy.clone()))), stopped).await;
        let base = format!("http://{addr}");
        let metrics_base = format!("http://{}", spawn(metrics_router(metering)).await);
        let http = reqwest::Client::new();
        poll::until_async("ember-api ready", TIMEOUT, async || {
            let ready = http.get(format!("{base}/readyz")).send().await.map(|r| r.status() == 200).unwrap_or(false);
            Ok(ready.then_some(()))
        })
        .await
        .unwrap();
        let jwks_url = jwks.url.clone();
        std::mem::forget(jwks); // its server task lives as long as the test
        Self { base, metrics_base, jwks_url, key, admin, http, caches, tenancy, stop: Some((stop, server)) }
    }

    /// Stops this ember-api as its main does on a signal: the listener
    /// drains (calls in flight finish), then recorded usage is flushed.
    pub async fn stop(mut self) {
        if let Some((stop, server)) = self.stop.take() {
            let _ = stop.send(());
            server.await.unwrap();
        }
        if let Some(platform) = &self.tenancy.platform {
            platform.usage.close(TIMEOUT).await.unwrap();
        }
    }

    pub fn token(&self, user: &str, groups: &[&str]) -> String {
        bearer(&self.key.sign(&with(with(claims(), "sub", json!(user)), "groups", json!(groups))))
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.parse().unwrap(), url);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        // ember-api's own refusals are problem+json; a runtime's answers to
        // inference calls pass through in the runtime's (v2) format.
        let proxied = response.headers().get("x-request-id").is_some();
        if status >= 400 && !proxied {
            assert_eq!(response.headers()["content-type"], "application/problem+json", "{method} {path}");
        }
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls until `GET path` as `token` answers `status` (the watch cache
    /// follows writes asynchronously).
    pub async fn until_status(&self, path: &str, token: &str, status: u16) -> Value {
        poll::until_async(&format!("GET {path} -> {status}"), TIMEOUT, async || {
            let (got, body) = self.call("GET", path, Some(token), None).await;
            Ok((got == status).then_some(body))
        })
        .await
        .unwrap()
    }

    /// A Ready Tenant, with the namespace and status the operator would
    /// create and record for it (no operator runs in these tests).
    pub async fn tenant(&self, name: &str, spec: Value) {
        let namespace = names::namespace_for(name);
        ensure_namespace(&self.admin, &namespace).await;
        self.tenant_with_status(
            name,
            spec,
            json!({"namespace": namespace, "conditions": [condition("Ready", "True", "Reconciled", "all parts are in place")]}),
        )
        .await;
    }

    /// A Tenant with exactly `status`.
    pub async fn tenant_with_status(&self, name: &str, spec: Value, status: Value) {
        let tenants: Api<Tenant> = Api::all(self.admin.clone());
        let tenant: Tenant = serde_json::from_value(
            json!({"apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap();
        tenants.create(&PostParams::default(), &tenant).await.unwrap();
        let written = tenants
            .patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
            .await
            .unwrap();
        self.until_cached(name, |t| t.metadata.uid == written.metadata.uid && t.status == written.status).await;
    }

    /// Changes a Tenant's spec (a JSON merge patch) and waits until ember-api sees it.
    pub async fn patch_tenant_spec(&self, name: &str, spec: Value) {
        let tenants: Api<Tenant> = Api::all(self.admin.clone());
        let patched =
            tenants.patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec }))).await.unwrap();
        self.until_cached(name, |t| t.metadata.resource_version == patched.metadata.resource_version).await;
    }

    /// Deletes a Tenant and waits until ember-api no longer sees it.
    pub async fn delete_tenant(&self, name: &str) {
        let tenants: Api<Tenant> = Api::all(self.admin.clone());
        tenants.delete(name, &Default::default()).await.unwrap();
        poll::until_async(&format!("ember-api's cache drops tenant {name}"), TIMEOUT, async || {
            Ok(self.caches.tenant(name).is_none().then_some(()))
        })
        .await
        .unwrap();
    }

    async fn until_cached(&self, name: &str, check: impl Fn(&Tenant) -> bool) {
        poll::until_async(&format!("ember-api's cache holds tenant {name} as written"), TIMEOUT, async || {
            Ok(self.caches.tenant(name).is_some_and(|t| check(&t)).then_some(()))
        })
        .await
        .unwrap();
    }
}

/// A status condition as the operator writes it.
pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

pub async fn ensure_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
}

/// Polls `POST path` with `body` until it answers `status`.
pub async fn eventually_status(h: &Harness, path: &str, token: &str, body: &str, status: u16) -> Value {
    poll::until_async(&format!("POST {path} -> {status}"), TIMEOUT, async || {
        let (got, answer) = h.call("POST", path, Some(token), Some(body)).await;
        Ok((got == status).then_some(answer))
    })
    .await
    .unwrap()
}
