//! ember-operator: reconciles Tenants and ModelDeployments.
//!
//! Flow: `main` parses [`args`], loads the YAML [`config`], starts the
//! health/metrics server and, once leader, the controllers.

pub mod database;
