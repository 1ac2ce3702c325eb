//! ember-api's own PostgreSQL database (API keys, audit log): the pool and
//! the migrations in `api-server/migrations/`, applied at start-up.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::error::{Error, Result};

/// Connects and brings the schema up to date. Fails start-up when the
/// database is unreachable, so a misconfigured URL is seen at once.
pub async fn connect(url: &str) -> Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| Error::Config(format!("platform database: {e}")))?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|e| Error::Config(format!("platform database migrations: {e}")))?;
    Ok(pool)
}

/// A query failed: the database is down or refused; the caller sees 503.
pub fn unavailable(error: sqlx::Error) -> Error {
    tracing::warn!(%error, "platform database query failed");
    Error::Upstream("ember-api's database is unavailable; retry shortly".into())
}
