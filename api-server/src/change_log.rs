//! The audit trail's second source: changes to Tenants and ModelDeployments
//! made through the Kubernetes API by anyone but ember-api — kubectl, Argo
//! CD, Flux, scripts — seen on watches, so the trail is complete whatever
//! path a change took. ember-api's own writes are audited where they are
//! made (`audit`, with the caller and request id) and skipped here.
//!
//! Who changed an object is the field manager that wrote its spec: the one
//! whose `managedFields` entry is new or newer than at the previous event
//! (their times have one-second resolution, so two writers in the same
//! second are told apart by what changed, not by time alone), else the
//! latest by time; what changed is the new generation. Every
//! replica watches and a restart sees every object again: the database
//! keeps one row per object, generation and action (a unique index), so
//! nothing is recorded twice. A change made while no replica ran is
//! recorded when one starts, as the object's current generation (the
//! generations in between are not seen). A deletion does not say who asked
//! for it; it is recorded with the actor `unknown`, unless ember-api itself
//! deleted the object (a REST entry for it exists).

use std::time::Duration;

use ember_crds::labels::{FIELD_MANAGER_API, FIELD_MANAGER_API_BRANDING};
use ember_crds::model_deployment::ModelDeployment;
use ember_crds::names;
use ember_crds::tenant::Tenant;
use futures::StreamExt;
use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use crate::audit::{AuditLog, Observed};

/// Starts following both kinds for as long as the process runs.
pub fn spawn(client: Client, audit: AuditLog) {
    tokio::spawn(follow(Api::<DeserializeGuard<Tenant>>::all(client.clone()), "tenant", audit.clone()));
    tokio::spawn(follow(Api::<DeserializeGuard<ModelDeployment>>::all(client), "deployment", audit));
}

/// The kinds followed: how an object names its tenant and itself, from its
/// metadata alone — so a change to an object this version cannot decode
/// (a newer release's fields) is recorded too, and stops no other.
trait Followed: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + 'static {
    fn tenant(meta: &ObjectMeta) -> Option<String>;
    fn target(meta: &ObjectMeta) -> String;
}

impl Followed for Tenant {
    fn tenant(meta: &ObjectMeta) -> Option<String> {
        meta.name.clone()
    }
    fn target(meta: &ObjectMeta) -> String {
        format!("tenant:{}", meta.name.as_deref().unwrap_or_default())
    }
}

impl Followed for ModelDeployment {
    fn tenant(meta: &ObjectMeta) -> Option<String> {
        meta.namespace.as_deref().and_then(names::tenant_for_namespace).map(str::to_owned)
    }
    fn target(meta: &ObjectMeta) -> String {
        format!("modeldeployment:{}", meta.name.as_deref().unwrap_or_default())
    }
}

async fn follow<K>(api: Api<DeserializeGuard<K>>, kind: &'static str, audit: AuditLog)
where
    K: Followed + serde::de::DeserializeOwned,
{
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut writers = Writers::default();
    while let Some(event) = events.next().await {
        let (object, deleted) = match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => (object, false),
            Ok(watcher::Event::Delete(object)) => (object, true),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(error) => {
                tracing::warn!(%error, kind, "change watch failed; retrying");
                continue;
            }
        };
        let actor = writers.actor(object.meta(), deleted);
        let Some(change) = observed::<K>(object.meta(), kind, deleted, actor) else { continue };
        record_until_stored(&audit, &change).await;
    }
}

/// Retries while the database is down: a change is never dropped, the
/// watch waits (its events queue) until the row is in.
async fn record_until_stored(audit: &AuditLog, change: &Observed) {
    let mut wait = Duration::from_millis(500);
    while let Err(error) = audit.record_observed(change).await {
        tracing::warn!(%error, target = %change.target, "observed change not recorded yet; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// What an event says happened, or nothing for ember-api's own writes and
/// for events that change no generation.
fn observed<K: Followed>(
    meta: &ObjectMeta,
    kind: &'static str,
    deleted: bool,
    writer: Option<String>,
) -> Option<Observed> {
    let generation = meta.generation?;
    let uid = meta.uid.clone()?;
    let deleting = deleted || meta.deletion_timestamp.is_some();
    let (action, actor) = if deleting {
        (format!("{kind}.delete"), "unknown".to_owned())
    } else {
        let actor = writer?;
        if actor == FIELD_MANAGER_API || actor == FIELD_MANAGER_API_BRANDING {
            return None;
        }
        let verb = if generation == 1 { "create" } else { "update" };
        (format!("{kind}.{verb}"), actor)
    };
    Some(Observed { tenant: K::tenant(meta), actor, action, target: K::target(meta), uid, generation })
}

/// Each followed object's spec writers as last seen: manager and time.
#[derive(Debug, Default)]
struct Writers {
    seen: HashMap<String, Vec<(String, Option<Time>)>>,
}

impl Writers {
    /// Who wrote the spec in the change `meta` shows; forgets a deleted object.
    fn actor(&mut self, meta: &ObjectMeta, deleted: bool) -> Option<String> {
        let uid = meta.uid.clone()?;
        if deleted {
            self.seen.remove(&uid);
            return None;
        }
        let now = spec_writers(meta);
        let before = self.seen.insert(uid, now.clone()).unwrap_or_default();
        let newer = now.iter().filter(|(manager, time)| {
            !before.iter().any(|(m, t)| m == manager && t.as_ref().map(|t| t.0) >= time.as_ref().map(|t| t.0))
        });
        let latest = |entries: &mut dyn Iterator<Item = &(String, Option<Time>)>| {
            entries.max_by_key(|(_, time)| time.as_ref().map(|t| t.0)).map(|(manager, _)| manager.clone())
        };
        latest(&mut newer.clone()).or_else(|| latest(&mut now.iter()))
    }
}

/// The managers whose entry owns part of the spec, with their times.
fn spec_writers(meta: &ObjectMeta) -> Vec<(String, Option<Time>)> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.fields_v1.as_ref().is_some_and(|fields| fields.0.get("f:spec").is_some()))
        .filter_map(|entry| Some((entry.manager.clone()?, entry.time.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant(managed: serde_json::Value, generation: i64) -> Tenant {
        serde_json::from_value(json!({
            "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "uid": "u1", "generation": generation, "managedFields": managed},
            "spec": {}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn entry(manager: &str, time: &str, spec: bool) -> serde_json::Value {
        let fields = if spec { json!({"f:spec": {"f:quota": {}}}) } else { json!({"f:status": {}}) };
        json!({"manager": manager, "operation": "Apply", "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields})
    }

    #[test]
    fn the_writer_is_the_manager_new_since_the_last_event_even_within_the_same_second() {
        let mut writers = Writers::default();
        let created = tenant(json!([entry("kubectl", "2026-01-01T00:00:00Z", true)]), 1);
        let actor = writers.actor(&created.metadata, false);
        assert_eq!(actor.as_deref(), Some("kubectl"));
        // Argo CD takes over in the same second: same time, but its entry is new.
        let argo = tenant(
            json!([
                entry("argocd-controller", "2026-01-01T00:00:00Z", true),
                entry("kubectl", "2026-01-01T00:00:00Z", true),
                entry("ember-operator", "2026-01-01T00:00:05Z", false)
            ]),
            2,
        );
        let actor = writers.actor(&argo.metadata, false);
        let change =
            observed::<Tenant>(&argo.metadata, "tenant", false, actor).unwrap_or_else(|| panic!("not observed"));
        assert_eq!(
            (change.actor.as_str(), change.action.as_str(), change.generation),
            ("argocd-controller", "tenant.update", 2)
        );
        // kubectl again, later: its time moved.
        let again = tenant(
            json!([
                entry("argocd-controller", "2026-01-01T00:00:00Z", true),
                entry("kubectl", "2026-01-01T00:01:00Z", true)
            ]),
            3,
        );
        assert_eq!(writers.actor(&again.metadata, false).as_deref(), Some("kubectl"));
        // ember-api's own writes are audited where they are made.
        let ours = tenant(
            json!([entry("kubectl", "2026-01-01T00:01:00Z", true), entry("ember-api", "2026-01-01T00:02:00Z", true)]),
            4,
        );
        let actor = writers.actor(&ours.metadata, false);
        assert!(observed::<Tenant>(&ours.metadata, "tenant", false, actor).is_none());
        let gone = observed::<Tenant>(&ours.metadata, "tenant", true, writers.actor(&ours.metadata, true))
            .unwrap_or_else(|| panic!("deletion"));
        assert_eq!((gone.actor.as_str(), gone.action.as_str()), ("unknown", "tenant.delete"));
        assert!(writers.seen.is_empty(), "a deleted object is forgotten");
    }
}
