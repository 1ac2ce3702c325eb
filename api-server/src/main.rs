//! ember-api binary: flags, logging, serving [`ember_api::router`].

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ember_api::Surface;
use ember_api::audit::{AuditLog, Retention};
use ember_api::auth::{Authenticator, JwtSettings, JwtVerifier};
use ember_api::cache::Caches;
use ember_api::keys::KeyStore;
use ember_api::metering::Metering;
use ember_api::platform_db;
use ember_api::ratelimit::{RateLimiter, RateLimits, SharedBuckets, SourceLimits};
use ember_api::refusals::Refusals;
use ember_api::routes::Platform;
use ember_api::routes::Tenancy;
use ember_api::routes::inference::Upstream;
use ember_api::shutdown::{DRAIN_DEADLINE, Shutdown};
use ember_api::usage::UsageRecorder;
use jsonwebtoken::Algorithm;

/// How long the last usage flush may take after the drain.
const USAGE_FLUSH_DEADLINE: Duration = Duration::from_secs(4);

/// Ember's REST API.
#[derive(Debug, Parser)]
#[command(name = "ember-api", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "EMBER_API_ADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,
    /// Address of the metrics listener (`/metrics`): apart from the public
    /// one, because the counters name every tenant and deployment.
    #[arg(long, env = "EMBER_API_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Identity provider: required `iss` of bearer tokens. Without it only
    /// the probes are served.
    #[arg(long, env = "EMBER_API_JWT_ISSUER", requires_all = ["jwt_audience", "jwks_uri"])]
    jwt_issuer: Option<String>,
    /// Required `aud` of bearer tokens.
    #[arg(long, env = "EMBER_API_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// The issuer's JWKS document (https; http only on loopback).
    #[arg(long, env = "EMBER_API_JWKS_URI")]
    jwks_uri: Option<String>,
    /// PEM file of private CAs to trust for the JWKS URI (an identity
    /// provider behind an internal CA), besides the public roots.
    #[arg(long, env = "EMBER_API_JWKS_CA_FILE")]
    jwks_ca_file: Option<std::path::PathBuf>,
    /// Accepted token algorithms (asymmetric only), comma-separated.
    #[arg(long, env = "EMBER_API_JWT_ALGORITHMS", value_delimiter = ',', default_value = "RS256,ES256")]
    jwt_algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    #[arg(long, env = "EMBER_API_JWT_LEEWAY_SECONDS", default_value_t = 30)]
    jwt_leeway_seconds: u64,
    /// Claim naming the user (as Tenants list owners and members); with
    /// `email`, tokens must also carry `email_verified: true`.
    #[arg(long, env = "EMBER_API_JWT_USERNAME_CLAIM", default_value = "sub")]
    jwt_username_claim: String,
    /// Signing keys older than this are refetched, in seconds: a key
    /// withdrawn at the identity provider stops working within this time.
    #[arg(long, env = "EMBER_API_JWKS_MAX_AGE_SECONDS", default_value_t = 300)]
    jwks_max_age_seconds: u64,
    /// Claim listing the user's groups.
    #[arg(long, env = "EMBER_API_JWT_GROUPS_CLAIM", default_value = "groups")]
    jwt_groups_claim: String,
    /// Group (in the groups claim) whose members are platform admins: they
    /// create, change and delete Tenants and read every tenant. Bind the
    /// same group for kubectl (`config/rbac/platform-admin.yaml`). Unset:
    /// nobody is a platform admin over REST.
    #[arg(long, env = "EMBER_API_PLATFORM_ADMIN_GROUP")]
    platform_admin_group: Option<String>,
    /// Base URL of a deployment's runtime, from its name and namespace.
    #[arg(long, env = "EMBER_API_INFERENCE_ENDPOINT", default_value = "http://{name}.{namespace}.svc:8080")]
    inference_endpoint: String,
    /// ember-api's own PostgreSQL database (API keys, audit log), e.g.
    /// `postgres://ember_api:...@db:5432/ember_api`. Without it API keys and
    /// the audit log are off.
    #[arg(long, env = "EMBER_API_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Requests per second one caller (user or API key) may make, on average.
    #[arg(long, env = "EMBER_API_RATE_PER_CALLER", default_value_t = 50.0)]
    rate_per_caller: f64,
    /// Requests per second all callers of one tenant may make together.
    #[arg(long, env = "EMBER_API_RATE_PER_TENANT", default_value_t = 200.0)]
    rate_per_tenant: f64,
    /// Redis holding the rate-limit buckets all replicas share, e.g.
    /// `redis://ember-redis:6379`. Without it (or while it is unreachable)
    /// each replica limits on its own.
    #[arg(long, env = "EMBER_API_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Requests per second one source address may make, before any
    /// credential is checked.
    #[arg(long, env = "EMBER_API_RATE_PER_SOURCE", default_value_t = 200.0)]
    rate_per_source: f64,
    /// Refused credentials per second one source address may present; past
    /// the burst (4x) its requests get 429 without being checked.
    #[arg(long, env = "EMBER_API_REFUSALS_PER_SOURCE", default_value_t = 5.0)]
    refusals_per_source: f64,
    /// Proxies (ingress, load balancer) whose `X-Forwarded-For` names the
    /// client for the per-source limits: comma-separated CIDRs. Without
    /// them the TCP peer is the source.
    #[arg(long, env = "EMBER_API_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
    /// Days audit entries are kept.
    #[arg(long, env = "EMBER_API_AUDIT_RETENTION_DAYS", default_value_t = 400)]
    audit_retention_days: u64,
    /// Days the counts of refused credentials are kept.
    #[arg(long, env = "EMBER_API_REFUSAL_RETENTION_DAYS", default_value_t = 30)]
    refusal_retention_days: u64,
    /// Largest inference request body in bytes (keep it at the runtime's
    /// `--max-request-bytes`); larger → 413.
    #[arg(long, env = "EMBER_API_MAX_INFERENCE_REQUEST_BYTES", default_value_t = 8 << 20)]
    max_inference_request_bytes: usize,
    /// Largest runtime answer passed back, in bytes (streamed, not held);
    /// declared larger → 502, undeclared → cut off there.
    #[arg(long, env = "EMBER_API_MAX_INFERENCE_RESPONSE_BYTES", default_value_t = 16 << 20)]
    max_inference_response_bytes: usize,
    /// Inference calls in flight per replica; more wait briefly, then 503.
    /// Memory for request bodies is at most this × the request limit.
    #[arg(long, env = "EMBER_API_MAX_INFERENCE_CALLS", default_value_t = 8)]
    max_inference_calls: usize,
    /// Longest a proxied inference call may take, in seconds.
    #[arg(long, env = "EMBER_API_INFERENCE_TIMEOUT_SECONDS", default_value_t = 60)]
    inference_timeout_seconds: u64,
}

impl Args {
    fn verifier(&self) -> anyhow::Result<Option<Arc<JwtVerifier>>> {
        let (Some(issuer), Some(audience), Some(jwks_uri)) = (&self.jwt_issuer, &self.jwt_audience, &self.jwks_uri)
        else {
            return Ok(None);
        };
        let mut settings = JwtSettings::new(issuer, audience, jwks_uri);
        settings.algorithms = self
            .jwt_algorithms
            .iter()
            .map(|a| Algorithm::from_str(a.trim()).map_err(|_| anyhow::anyhow!("unknown JWT algorithm '{a}'")))
            .collect::<anyhow::Result<_>>()?;
        settings.leeway_seconds = self.jwt_leeway_seconds;
        settings.jwks_ca_file = self.jwks_ca_file.clone();
        settings.username_claim = self.jwt_username_claim.clone();
        settings.groups_claim = self.jwt_groups_claim.clone();
        settings.jwks_max_age_seconds = self.jwks_max_age_seconds;
        Ok(Some(Arc::new(JwtVerifier::new(settings)?)))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::new("info")).init();
    // With an identity provider the API serves tenants, which needs the
    // cluster (in-cluster config or KUBECONFIG); without one, probes only.
    let metering = Arc::new(Metering::default());
    let surface = match args.verifier()? {
        Some(verifier) => {
            let client = kube::Client::try_default().await?;
            let mut upstream = Upstream::new(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(args.inference_timeout_seconds))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?,
                args.inference_endpoint.clone(),
            );
            upstream.max_request_bytes = args.max_inference_request_bytes;
            upstream.max_response_bytes = args.max_inference_response_bytes;
            upstream.slots = Arc::new(tokio::sync::Semaphore::new(args.max_inference_calls.max(1)));
            upstream.timeout = Duration::from_secs(args.inference_timeout_seconds);
            let (platform, refusals) = match &args.database_url {
                Some(url) => {
                    let pool = platform_db::connect(url).await?;
                    let audit = AuditLog::new(pool.clone());
                    let day = Duration::from_secs(86_400);
                    audit.spawn_sweeper(Retention {
                        audit: day * u32::try_from(args.audit_retention_days)?,
                        refusals: day * u32::try_from(args.refusal_retention_days)?,
                    });
                    // Changes made with kubectl or GitOps join the same trail.
                    ember_api::change_log::spawn(client.clone(), audit.clone());
                    let refusals = Arc::new(Refusals::new(pool.clone()));
                    refusals.spawn_flusher(Duration::from_secs(5));
                    let usage = Arc::new(UsageRecorder::new(pool.clone()));
                    usage.spawn_flusher(Duration::from_secs(5));
                    (Some(Platform { keys: KeyStore::new(pool), audit, usage }), Some(refusals))
                }
                None => (None, None),
            };
            let mut authenticator =
                Authenticator::new(verifier, platform.as_ref().map(|p| p.keys.clone()).zip(refusals));
            authenticator.sources = SourceLimits {
                requests: RateLimiter::new(args.rate_per_source, 2.0 * args.rate_per_source),
                refusals: RateLimiter::new(args.refusals_per_source, 4.0 * args.refusals_per_source),
                trusted_proxies: args.trusted_proxies.parse()?,
            };
            authenticator.platform_admin_group = args.platform_admin_group.clone();
            let auth = Arc::new(authenticator);
            let shared = match &args.redis_url {
                Some(url) => Some(SharedBuckets::new(url, metering.shared_limits.clone())?),
                None => None,
            };
            let limit = |rate: f64, scope: &'static str| {
                // Bursts of twice the per-second rate.
                let limiter = RateLimiter::new(rate, 2.0 * rate);
                match &shared {
                    Some(buckets) => limiter.shared(buckets.clone(), scope),
                    None => limiter,
                }
            };
            let tenancy = Tenancy {
                auth,
                platform,
                caches: Caches::start(client.clone()),
                client,
                upstream,
                metering: metering.clone(),
                limits: Arc::new(RateLimits {
                    per_caller: limit(args.rate_per_caller, "caller"),
                    per_tenant: limit(args.rate_per_tenant, "tenant"),
                }),
            };
            tenancy.spawn_key_sweeper(Duration::from_secs(30));
            Surface::Full(Box::new(tenancy))
        }
        None => Surface::ProbesOnly,
    };
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(metrics_listener, ember_api::metrics_router(metering)).await {
            tracing::error!(%error, "metrics listener stopped");
        }
    });
    // Recorded usage is flushed once more after the server has drained.
    let usage = match &surface {
        Surface::Full(tenancy) => tenancy.platform.as_ref().map(|p| p.usage.clone()),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    tracing::info!(addr = %args.addr, metrics_addr = %args.metrics_addr, tenant_routes = matches!(surface, Surface::Full(_)), "ember-api listening");
    // With connection info: limits per source address need the peer.
    let app = ember_api::router(surface).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = Shutdown::on_signals();
    let mut server =
        tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().requested()).into_future());
    tokio::select! {
        served = &mut server => return Ok(served??), // stopped by itself: an error
        () = shutdown.requested() => {}
    }
    match tokio::time::timeout(DRAIN_DEADLINE, server).await {
        Ok(served) => served??,
        Err(_) => tracing::warn!("requests still in flight at the drain deadline are cut off"),
    }
    if let Some(usage) = usage {
        // Within the pod's grace period (drain deadline + this < 30 s);
        // failing here loses the pending counts, and the log says so.
        let _ = usage.close(USAGE_FLUSH_DEADLINE).await;
    }
    tracing::info!("ember-api stopped");
    Ok(())
}
