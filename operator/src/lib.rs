//! ember-operator: reconciles Tenants and ModelDeployments.
//!
//! Flow: `main` parses [`args::Args`], loads [`config::OperatorConfig`],
//! serves [`health`], campaigns for the [`leader`] Lease and, while leader,
//! runs the [`tenant`] and [`model_deployment`] controllers
//! ([`controllers::run`]). [`database`] holds the PostgreSQL side of
//! a tenant; [`error::Error`] is the crate's one error type.

pub mod apply;
pub mod args;
pub mod cache;
pub mod config;
pub mod context;
pub mod controllers;
pub mod database;
pub mod error;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod model_deployment;
pub mod present;
pub mod telemetry;
pub mod tenant;
pub mod tenant_namespace;
pub mod tenant_watch;
pub mod written;
