//! What the operator's caches keep of an object.
//!
//! Watch caches hold every Tenant, every ModelDeployment and the
//! operator's own Deployments, autoscalers and budgets for as long as the
//! operator runs, so their size per object is the operator's memory per
//! tenant. Two parts of an object are never read here and are often larger
//! than the rest of it: `managedFields` (one record per field manager) and
//! kubectl's client-side-apply copy of the whole object in an annotation.

use kube::Resource;

/// The annotation `kubectl apply` (client-side) keeps the last applied
/// object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no controller reads before an object enters a cache (use
/// with `watcher(..).modify(slim)`).
pub fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn slim_objects_keep_everything_a_controller_reads() {
        let mut object: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "c", "namespace": "n", "generation": 2, "resourceVersion": "9",
                "labels": {"a": "b"},
                "annotations": {"ember.dev/adopt-database": "x", LAST_APPLIED: "{\"big\": true}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "data": {"k": "v"},
        }))
        .unwrap_or_default();
        let mut expected = object.clone();
        slim(&mut object);
        assert_eq!(object.metadata.managed_fields, None);
        expected.metadata.managed_fields = None;
        expected.metadata.annotations.as_mut().map(|a| a.remove(LAST_APPLIED));
        assert_eq!(object, expected);
        assert_eq!(object.metadata.annotations.unwrap_or_default().len(), 1);
    }
}
