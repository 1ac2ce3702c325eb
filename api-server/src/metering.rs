//! Usage per tenant and deployment, as Prometheus metrics on `/metrics`:
//! proxied inference calls by outcome, bytes in and out, and latency. This
//! is the billing signal until usage is also recorded in PostgreSQL.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ratelimit::SharedLimitMetrics;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
pub struct Metering {
    registry: Registry,
    /// RED metrics of every route, in the same registry (`layers`).
    pub http: crate::layers::HttpMetrics,
    calls: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Health of the rate limits shared through Redis (0s without Redis).
    pub shared_limits: SharedLimitMetrics,
}

/// One finished proxied call.
#[derive(Debug)]
pub struct Call<'a> {
    pub tenant: &'a str,
    pub deployment: &'a str,
    /// HTTP status returned to the caller.
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub elapsed: Duration,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16)) // 1 ms .. ~33 s
}

impl Default for Metering {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ember_api");
        let calls = Family::<Labels, Counter>::default();
        let bytes_in = Family::<Labels, Counter>::default();
        let bytes_out = Family::<Labels, Counter>::default();
        let seconds = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register("inference_calls", "Proxied inference calls by tenant, deployment and status", calls.clone());
        registry.register("inference_request_bytes", "Request body bytes proxied", bytes_in.clone());
        registry.register("inference_response_bytes", "Response body bytes proxied", bytes_out.clone());
        registry.register("inference_duration_seconds", "Latency of proxied inference calls", seconds.clone());
        let http = crate::layers::HttpMetrics::registered(&mut registry);
        let shared_limits = SharedLimitMetrics::default();
        registry.register(
            "ratelimit_shared_fallbacks",
            "Rate-limit checks answered by this replica's own bucket because Redis failed",
            shared_limits.fallbacks.clone(),
        );
        registry.register(
            "ratelimit_shared_up",
            "1 while Redis answered the last rate-limit check",
            shared_limits.up.clone(),
        );
        Self { registry, http, calls, bytes_in, bytes_out, seconds, shared_limits }
    }
}

impl Metering {
    pub fn record(&self, call: &Call<'_>) {
        let who = vec![("tenant", call.tenant.to_owned()), ("deployment", call.deployment.to_owned())];
        let mut with_status = who.clone();
        with_status.push(("status", call.status.to_string()));
        self.calls.get_or_create(&with_status).inc();
        self.bytes_in.get_or_create(&who).inc_by(call.bytes_in);
        self.bytes_out.get_or_create(&who).inc_by(call.bytes_out);
        self.seconds.get_or_create(&who).observe(call.elapsed.as_secs_f64());
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
