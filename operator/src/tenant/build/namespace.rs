//! The tenant's namespace (Pod Security `restricted`, pinned version) and
//! what bounds it: the ResourceQuota and the LimitRange that gives
//! containers without requests and limits a place inside the quota.

use std::collections::BTreeMap;

use ember_crds::labels;
use ember_crds::names::namespace_for;
use ember_crds::tenant::Tenant;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use super::meta;
use crate::tenant_namespace::child_names;

pub(super) fn namespace(tenant: &str, owner: &OwnerReference) -> Namespace {
    let mut metadata = meta(&namespace_for(tenant), None, tenant, owner);
    let labels = metadata.labels.get_or_insert_with(Default::default);
    for key in [labels::PSS_ENFORCE, labels::PSS_AUDIT, labels::PSS_WARN] {
        labels.insert(key.to_owned(), labels::PSS_LEVEL_RESTRICTED.to_owned());
    }
    labels.insert(labels::PSS_ENFORCE_VERSION.to_owned(), labels::PSS_VERSION.to_owned());
    Namespace { metadata, ..Default::default() }
}

pub(super) fn quota(tenant: &Tenant, ns: &str, owner: &OwnerReference) -> ResourceQuota {
    let q = &tenant.spec.quota;
    let hard = BTreeMap::from([
        ("requests.cpu".to_owned(), q.cpu.clone()),
        ("limits.cpu".to_owned(), q.cpu.clone()),
        ("requests.memory".to_owned(), q.memory.clone()),
        ("limits.memory".to_owned(), q.memory.clone()),
        ("requests.nvidia.com/gpu".to_owned(), Quantity(q.gpus.to_string())),
        ("pods".to_owned(), Quantity(q.pods.to_string())),
        ("requests.storage".to_owned(), q.storage.clone()),
        ("count/modeldeployments.ember.dev".to_owned(), Quantity(q.model_deployments.to_string())),
        // Tenants never expose node ports or cloud load balancers.
        ("services.nodeports".to_owned(), Quantity("0".into())),
        ("services.loadbalancers".to_owned(), Quantity("0".into())),
    ]);
    ResourceQuota {
        metadata: meta(child_names::QUOTA, Some(ns), &tenant.name_any(), owner),
        spec: Some(ResourceQuotaSpec { hard: Some(hard), ..Default::default() }),
        ..Default::default()
    }
}

pub(super) fn limit_range(tenant: &str, ns: &str, owner: &OwnerReference) -> LimitRange {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into())), ("memory".to_owned(), Quantity(memory.into()))])
    };
    LimitRange {
        metadata: meta(child_names::LIMIT_RANGE, Some(ns), tenant, owner),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                // Containers without requests/limits still fit the quota.
                default_request: Some(quantities("100m", "128Mi")),
                default: Some(quantities("500m", "512Mi")),
                ..Default::default()
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::desired_children;
    use super::super::fixtures::{NO_EGRESS, tenant};
    use super::*;
    use crate::tenant_namespace::belongs_to;

    #[test]
    fn namespace_is_restricted_labelled_and_owned() {
        let children = desired_children(&tenant(), "ember-system", NO_EGRESS).unwrap();
        let ns = &children.namespace;
        assert_eq!(ns.metadata.name.as_deref(), Some("tenant-acme"));
        let labels = ns.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(labels["pod-security.kubernetes.io/enforce-version"], "v1.37");
        assert_eq!(labels["ember.dev/tenant"], "acme");
        let owner = &ns.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Tenant", "uid-1", Some(true)));
        assert!(belongs_to(ns, &tenant()));
    }

    #[test]
    fn quota_follows_spec_and_forbids_exposed_services() {
        let mut t = tenant();
        t.spec.quota.cpu = Quantity("7".into());
        t.spec.quota.gpus = 2;
        t.spec.quota.model_deployments = 3;
        let hard = desired_children(&t, "p", NO_EGRESS).unwrap().quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"].0, "7");
        assert_eq!(hard["requests.nvidia.com/gpu"].0, "2");
        assert_eq!(hard["count/modeldeployments.ember.dev"].0, "3");
        assert_eq!(hard["services.nodeports"].0, "0");
        assert_eq!(hard["services.loadbalancers"].0, "0");
    }
}
