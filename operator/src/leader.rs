//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! One replica holds the Lease and renews it every `lease/3`; the others
//! poll and take it over once it has not been renewed for a whole lease
//! duration. Writes use the Lease's resourceVersion, so two candidates
//! racing for an expired Lease cannot both win. A leader that fails to renew
//! before its Lease expires gives up leadership: the caller stops
//! reconciling (the binary exits and restarts as a candidate), so two
//! leaders never act at once. On shutdown the leader releases the Lease for
//! a quick handover.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Identity and timing of one candidate.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

/// A running candidacy: leadership is published on `leading`.
#[derive(Debug)]
pub struct Campaign {
    pub leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Campaign {
    /// Ends the candidacy; a leader releases the Lease for a quick handover.
    /// Call it only once this replica has stopped reconciling: a successor may
    /// start the moment the Lease is free.
    pub async fn resign(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(RESIGN_TIMEOUT, self.task).await.is_err() {
            tracing::warn!("leader election: the Lease was not released in time; it will expire");
        }
    }
}

/// Longest wait for the release on shutdown (the API server may be gone).
const RESIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts campaigning for the Lease in the background.
pub fn campaign(client: Client, config: LeaseConfig) -> Campaign {
    let (leader_tx, leader_rx) = watch::channel(false);
    let (stop_tx, mut stop) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let renew_every = config.lease_duration / 3;
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            match try_acquire_or_renew(&api, &config).await {
                Ok(true) => last_renewal = Some(tokio::time::Instant::now()),
                Ok(false) => last_renewal = None,
                Err(error) => tracing::warn!(%error, "leader election: could not read or write the Lease"),
            }
            // Leadership lasts while the last successful renewal is younger than the lease.
            let leading = last_renewal.is_some_and(|t| t.elapsed() < config.lease_duration);
            if *leader_tx.borrow() != leading {
                tracing::info!(identity = %config.identity, leading, "leadership changed");
                let _ = leader_tx.send(leading);
            }
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                if leading {
                    release(&api, &config).await;
                }
                let _ = leader_tx.send(false);
                return;
            }
        }
    });
    Campaign { leading: leader_rx, stop: stop_tx, task }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn lease_seconds(config: &LeaseConfig) -> i32 {
    i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX)
}

/// One election round. Returns whether we hold the Lease afterwards.
async fn try_acquire_or_renew(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(config.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(lease_seconds(config)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == config.identity;
    if !ours && !holder.is_empty() && !expired(spec) {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(lease_seconds(config));
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn expired(spec: &LeaseSpec) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.0.as_second() + duration < Timestamp::now().as_second()
}

async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!("released the leader Lease"),
        Err(error) => tracing::warn!(%error, "could not release the leader Lease"),
    }
}
