//! What every reconciliation gets: a client, the configuration, the Event
//! recorder, metrics, and per-object retry counters for backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::config::OperatorConfig;
use crate::database::{DatabaseServer, PasswordMemo};
use crate::metrics::Metrics;
use crate::present::Present;
use crate::tenant::legacy::LegacyPolicies;
use crate::tenant::quota_gate::QuotaGate;
use crate::written::Written;

/// Shared state of the controllers.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// What the controllers last wrote to each child (skips no-op applies,
    /// and filters the echoes of their own writes out of the watches).
    pub written: Arc<Written>,
    /// Which of the bindings the operator would leave empty exist.
    pub present: Arc<Present>,
    /// Tenant passes waiting for their quota to be enforced.
    pub quotas: Arc<QuotaGate>,
    /// NetworkPolicies of earlier versions still to be removed.
    pub legacy_policies: Arc<LegacyPolicies>,
    failures: Arc<Mutex<HashMap<String, u32>>>,
    /// Admin credentials per database server as last read, and when.
    admin_credentials: Arc<Mutex<HashMap<String, (Instant, DatabaseServer)>>>,
    /// Admin connection pools per database server, rebuilt when credentials change.
    #[allow(clippy::type_complexity)]
    pools: Arc<Mutex<HashMap<String, (DatabaseServer, sqlx::PgPool, Arc<PasswordMemo>)>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("config", &self.config).finish_non_exhaustive()
    }
}

/// How long admin credentials read from their Secret are used before being
/// read again. Every Tenant pass needs them; reading the Secret each time
/// was one API request per pass (tens per second while thousands of Tenants
/// are set up or resynced). A rotated admin password is picked up within
/// this time; until then, new admin connections fail and the pass retries.
pub const ADMIN_CREDENTIALS_FRESH: Duration = Duration::from_secs(30);

/// Shortest and longest retry delay after a transient failure.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(client: Client, config: OperatorConfig, metrics: Metrics) -> Self {
        let reporter = Reporter { controller: "ember-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            written: Default::default(),
            present: Default::default(),
            quotas: Default::default(),
            legacy_policies: Default::default(),
            failures: Default::default(),
            pools: Default::default(),
            admin_credentials: Default::default(),
        }
    }

    /// The admin credentials of database server `name` if read within
    /// [`ADMIN_CREDENTIALS_FRESH`].
    pub fn fresh_admin_credentials(&self, name: &str) -> Option<DatabaseServer> {
        let known = self.admin_credentials.lock().unwrap_or_else(|e| e.into_inner());
        known.get(name).filter(|(read, _)| read.elapsed() < ADMIN_CREDENTIALS_FRESH).map(|(_, server)| server.clone())
    }

    /// Remembers the admin credentials just read for `server`.
    pub fn remember_admin_credentials(&self, server: &DatabaseServer) {
        let mut known = self.admin_credentials.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(server.name.clone(), (Instant::now(), server.clone()));
    }

    /// Delay before retrying `key` after another failure: doubles each time.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        BACKOFF_MIN.saturating_mul(1 << (*count - 1).min(8)).min(BACKOFF_MAX)
    }

    /// When to look at a converged object again: the configured resync,
    /// spread by ±10 %.
    pub fn resync(&self) -> Duration {
        let base = self.config.resync_seconds.max(1) as f64;
        Duration::from_secs_f64(base * rand::random_range(0.9..1.1))
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset_backoff(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The admin pool of `server` and the operator's memory of the
    /// passwords it set there, reused while the server's connection details
    /// stay the same.
    pub fn database_pool(&self, server: &DatabaseServer) -> (sqlx::PgPool, Arc<PasswordMemo>) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        match pools.get(&server.name) {
            Some((known, pool, passwords)) if known == server => (pool.clone(), passwords.clone()),
            _ => {
                let (pool, passwords) = (server.admin_pool(), Arc::new(PasswordMemo::default()));
                pools.insert(server.name.clone(), (server.clone(), pool.clone(), passwords.clone()));
                (pool, passwords)
            }
        }
    }
}

/// Longest Event note the API server accepts, in bytes.
const MAX_EVENT_NOTE_BYTES: usize = 1024;

/// `text` cut to what an Event's note may hold (the API server refuses the
/// whole Event otherwise); long admission and API-server messages are the
/// usual reason.
pub fn event_note(mut text: String) -> String {
    if text.len() > MAX_EVENT_NOTE_BYTES {
        let mut end = MAX_EVENT_NOTE_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_event_notes_are_cut_at_a_character_boundary() {
        let note = super::event_note("é".repeat(600));
        assert!(note.len() <= 1024 && note.ends_with('…'), "{}", note.len());
        assert_eq!(super::event_note("short".into()), "short");
    }
}
