//! The operator's one error type, with a short category for metric labels
//! and Event reasons, and a split between "the user must change something"
//! and "try again later" that drives the controllers' error policy.

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "namespace {namespace} already exists and does not belong to this tenant; pick another tenant name or remove the namespace"
    )]
    NamespaceConflict { namespace: String },
    #[error("database server {0:?} is not in the operator's configuration")]
    UnknownDatabaseServer(String),
    #[error("no database server is configured")]
    NoDatabaseServers,
    #[error("database: {0}")]
    Database(#[from] crate::database::DatabaseError),
    #[error("waiting for the controller-manager to compute the status of ResourceQuota {0}")]
    QuotaPending(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("configuration: {0}")]
    Config(String),
    #[error(
        "namespace {namespace} does not belong to a Tenant; ModelDeployments are served only in the namespace the operator created for a Tenant (tenant-<name>)"
    )]
    NotATenantNamespace { namespace: String },
    #[error("invalid ModelDeployment: {0}")]
    InvalidModelDeployment(String),
    #[error("could not encode {kind} {name} for the API server: {source}")]
    Encode { kind: String, name: String, source: serde_json::Error },
    #[error("{kind} {name} was changed by someone else while the operator applied it")]
    ChangedWhileApplying { kind: String, name: String },
}

impl Error {
    /// A bounded, CamelCase category: metric label and Event/condition reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::NamespaceConflict { .. } => "NamespaceConflict",
            Error::UnknownDatabaseServer(_) => "UnknownDatabaseServer",
            Error::NoDatabaseServers => "NoDatabaseServers",
            Error::Database(e) => e.category(),
            Error::QuotaPending(_) => "QuotaPending",
            Error::Finalizer(_) => "FinalizerError",
            Error::MissingField(_) => "InvalidObject",
            Error::Config(_) => "ConfigurationError",
            Error::NotATenantNamespace { .. } => "NotATenantNamespace",
            Error::InvalidModelDeployment(_) => "InvalidSpec",
            Error::Encode { .. } => "EncodingError",
            Error::ChangedWhileApplying { .. } => "Conflict",
        }
    }

    /// Expected while things settle: retried quietly, without a Warning Event.
    pub fn is_transitional(&self) -> bool {
        matches!(self, Error::QuotaPending(_))
    }

    /// A write lost a race with another writer (HTTP 409): worth an
    /// immediate retry with what is current.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
            || matches!(self, Error::ChangedWhileApplying { .. })
    }

    /// True when retrying cannot help until the user changes the spec (or
    /// the platform team the configuration): the object is `Stalled`.
    pub fn needs_user_action(&self) -> bool {
        if let Error::Database(e) = self {
            return e.needs_user_action();
        }
        matches!(
            self,
            Error::NamespaceConflict { .. }
                | Error::UnknownDatabaseServer(_)
                | Error::NoDatabaseServers
                | Error::MissingField(_)
                | Error::Config(_)
                | Error::NotATenantNamespace { .. }
                | Error::InvalidModelDeployment(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
