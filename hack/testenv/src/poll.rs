//! Waiting with a deadline: the only way tests and fixtures synchronise.

use std::time::{Duration, Instant};

use crate::Error;

/// How long to wait between two checks.
const INTERVAL: Duration = Duration::from_millis(100);

/// Runs `check` until it yields `Ok(Some(_))` or `timeout` passes.
/// `Ok(None)` means "not yet"; an `Err` aborts at once.
pub async fn until_async<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout { what: what.to_owned(), after: timeout });
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Blocking variant of [`until_async`] for code outside a runtime.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout { what: what.to_owned(), after: timeout });
        }
        std::thread::sleep(INTERVAL);
    }
}
