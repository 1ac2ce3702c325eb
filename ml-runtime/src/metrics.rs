//! Prometheus metrics for the server: requests, latency, batch sizes, queue
//! depth, load shedding and readiness, in one registry with the `ember`
//! prefix, rendered as text for `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric the runtime exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: HistogramFamily,
    batch_size: Histogram,
    inference_seconds: Histogram,
    queue_depth: Gauge,
    shed: Counter,
    ready: Gauge,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ember");
        let requests = Family::<Labels, Counter>::default();
        let request_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        let inference_seconds = latency_histogram();
        let queue_depth = Gauge::default();
        let shed = Counter::default();
        let ready = Gauge::default();
        let in_flight = Gauge::default();
        registry.register("http_requests", "HTTP requests by route and status code", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", request_seconds.clone());
        registry.register("batch_size", "Items per model invocation", batch_size.clone());
        registry.register("inference_duration_seconds", "Time the model spent on one batch", inference_seconds.clone());
        registry.register("queue_depth", "Requests waiting for the inference thread", queue_depth.clone());
        registry.register("load_shed", "Requests refused because the queue was full", shed.clone());
        registry.register("http_requests_in_flight", "HTTP requests being handled", in_flight.clone());
        registry.register("model_ready", "1 once the model is loaded and warmed up", ready.clone());
        Self { registry, requests, request_seconds, batch_size, inference_seconds, queue_depth, shed, ready, in_flight }
    }

    /// Counts a request in until the returned guard is dropped.
    pub fn track_in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        self.requests.get_or_create(&vec![("route", route.to_owned()), ("code", status.to_string())]).inc();
        self.request_seconds.get_or_create(&vec![("route", route.to_owned())]).observe(seconds);
    }

    pub fn observe_batch(&self, items: usize, seconds: f64) {
        self.batch_size.observe(items as f64);
        self.inference_seconds.observe(seconds);
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }

    pub fn count_shed(&self) {
        self.shed.inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Decrements the in-flight gauge when the request is done (or dropped).
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
