//! Prometheus metrics of the operator, one registry, prefix `ember_operator`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

/// All metrics the operator exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub is_leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ember_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let is_leader = Gauge::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register("reconcile_failures", "Reconciliations that failed, by error category", failures.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", duration.clone());
        registry.register("leader", "1 while this replica holds the leader Lease", is_leader.clone());
        Self { registry: Arc::new(registry), reconciles, failures, duration, is_leader }
    }
}

impl Metrics {
    /// Records one reconciliation of `controller`.
    pub fn observe(&self, controller: &'static str, elapsed: Duration, error: Option<&'static str>) {
        self.reconciles.get_or_create(&ControllerLabels { controller }).inc();
        self.duration.get_or_create(&ControllerLabels { controller }).observe(elapsed.as_secs_f64());
        if let Some(category) = error {
            self.failures.get_or_create(&ErrorLabels { controller, category }).inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
