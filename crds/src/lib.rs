//! Ember's API types and the pure rules around them.
//!
//! This crate is the bottom of the dependency graph: the operator, the REST
//! API and the tests all use these types, names and label keys. It performs
//! no I/O; `crdgen` turns the types into the CRD YAML shipped in `config/crd/`.
//! Its one piece of watch plumbing, [`undecodable`] (feature `watch`), is a
//! pure stream adapter that the operator and ember-api share, so both read
//! the objects of a newer release the same way.

pub mod conditions;
pub mod crd_yaml;
pub mod labels;
pub mod model_deployment;
pub mod names;
pub mod tenant;
#[cfg(feature = "watch")]
pub mod undecodable;

pub use model_deployment::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
pub use tenant::{Tenant, TenantSpec, TenantStatus};

/// API group of every Ember resource.
pub const GROUP: &str = "ember.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
