//! Usage for billing, durable in ember-api's PostgreSQL.
//!
//! The inference proxy records every call it forwarded when its answer has
//! been streamed (`recorder`: per tenant, deployment, caller, status class
//! and hour: requests, items, tokens and the runtime's compute time, the
//! last three from the runtime's `x-ember-*` headers), and the recorder adds
//! them to `usage_hourly` in idempotent batches. `report` reads them back
//! for `GET /v1/tenants/{t}/usage` and the platform-wide `GET /v1/usage`
//! (`routes::usage`). The Prometheus counters in `metering` stay the live
//! signal; this is the billing record.

pub mod recorder;
pub mod report;

pub use recorder::{CallUsage, UsageRecorder};
