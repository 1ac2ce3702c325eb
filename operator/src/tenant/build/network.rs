//! The tenant namespace's one NetworkPolicy: default deny both ways, and
//! the few paths in and out a tenant's pods need.

use std::collections::BTreeMap;

use ember_crds::tenant::Tenant;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{Egress, meta};
use crate::tenant_namespace::child_names;

fn namespace_selector(names: &[&str]) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "In".into(),
            values: Some(names.iter().map(|n| (*n).to_owned()).collect()),
        }]),
        ..Default::default()
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some(protocol.into()), port: Some(IntOrString::Int(number)), end_port: None }
}

/// The tenant namespace's one NetworkPolicy. It selects every pod for both
/// directions, so whatever its rules do not allow is denied; its rules are
/// what the namespace may do beyond that:
/// - in: from its own pods, from the platform namespace (ember-api's
///   inference proxy), from `spec.network.allowFromNamespaces`;
/// - out: to its own pods, to cluster DNS (port 53), to its database
///   server and to the platform's model stores, each on its ports only.
///
/// One policy instead of one per purpose: NetworkPolicies add up, so the
/// union of the rules is the same, at one object (one write, one watch
/// event) per tenant instead of seven.
pub(super) fn network_policy(
    tenant: &Tenant,
    ns: &str,
    platform_namespace: &str,
    egress: Egress<'_>,
    owner: &OwnerReference,
) -> NetworkPolicy {
    let same_namespace = NetworkPolicyPeer { pod_selector: Some(LabelSelector::default()), ..Default::default() };
    let from_namespaces = |names: &[&str]| NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector(names)),
            ..Default::default()
        }]),
        ports: None,
    };
    let to_addresses = |cidr: &str, ports: Vec<NetworkPolicyPort>| NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: cidr.to_owned(), except: None }),
            ..Default::default()
        }]),
        ports: Some(ports),
    };

    let mut ingress = vec![
        NetworkPolicyIngressRule { from: Some(vec![same_namespace.clone()]), ports: None },
        from_namespaces(&[platform_namespace]),
    ];
    // Only when listed: a rule with an empty `from` would allow everything.
    let extra: Vec<&str> = tenant.spec.network.allow_from_namespaces.iter().map(String::as_str).collect();
    if !extra.is_empty() {
        ingress.push(from_namespaces(&extra));
    }

    let dns = NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(&["kube-system"])),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut egress_rules = vec![
        NetworkPolicyEgressRule { to: Some(vec![same_namespace]), ports: None },
        NetworkPolicyEgressRule { to: Some(vec![dns]), ports: Some(vec![port("UDP", 53), port("TCP", 53)]) },
    ];
    if let Some(db) = egress.database {
        egress_rules.push(to_addresses(&db.cidr, vec![port("TCP", i32::from(db.port))]));
    }
    // One rule per store: its address range on its ports only.
    for store in egress.model_stores {
        egress_rules.push(to_addresses(&store.cidr, store.ports.iter().map(|p| port("TCP", i32::from(*p))).collect()));
    }

    NetworkPolicy {
        metadata: meta(child_names::NETWORK_POLICY, Some(ns), &tenant.name_any(), owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(ingress),
            egress: Some(egress_rules),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures::{NO_EGRESS, tenant};
    use super::super::{DatabaseEndpoint, desired_children};
    use super::*;
    use crate::config::ModelStoreConfig;

    /// The peers of a policy's rules, rendered, for compact assertions.
    fn peers(rules: &[impl serde::Serialize]) -> Vec<String> {
        rules.iter().map(|r| serde_json::to_string(r).unwrap()).collect()
    }

    #[test]
    fn one_network_policy_denies_by_default_and_allows_only_what_is_listed() {
        let mut t = tenant();
        let db = DatabaseEndpoint { cidr: "10.1.2.3/32".into(), port: 5432 };
        let policy = desired_children(&t, "ember-system", Egress { database: Some(&db), model_stores: &[] })
            .unwrap()
            .network_policy;
        assert_eq!(policy.metadata.name.as_deref(), Some(child_names::NETWORK_POLICY));
        let spec = policy.spec.unwrap();
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()), "every pod of the namespace");
        assert_eq!(spec.policy_types.unwrap(), vec!["Ingress", "Egress"], "both directions denied unless allowed");
        let ingress = peers(&spec.ingress.unwrap());
        assert_eq!(ingress.len(), 2, "own pods and the platform, nothing else: {ingress:?}");
        assert!(ingress[0].contains(r#""podSelector":{}"#) && !ingress[0].contains("namespaceSelector"));
        assert!(ingress[1].contains(r#""values":["ember-system"]"#));
        let egress = peers(&spec.egress.unwrap());
        assert_eq!(egress.len(), 3, "own pods, DNS, the database: {egress:?}");
        assert!(egress[1].contains("kube-dns") && egress[1].contains(r#""port":53"#));
        assert!(egress[2].contains(r#""cidr":"10.1.2.3/32""#) && egress[2].contains(r#""port":5432"#));

        t.spec.network.allow_from_namespaces = vec!["ingress-nginx".into()];
        let spec = desired_children(&t, "ember-system", NO_EGRESS).unwrap().network_policy.spec.unwrap();
        let ingress = peers(&spec.ingress.unwrap());
        assert_eq!(ingress.len(), 3);
        assert!(ingress[2].contains(r#""values":["ingress-nginx"]"#));
        assert_eq!(peers(&spec.egress.unwrap()).len(), 2, "no database server: no database rule");
    }

    #[test]
    fn model_stores_are_the_only_other_egress() {
        let stores = [
            ModelStoreConfig { name: "a".into(), cidr: "10.89.0.1/32".into(), ports: vec![8000] },
            ModelStoreConfig { name: "b".into(), cidr: "10.2.0.0/16".into(), ports: vec![443, 80] },
        ];
        let egress = Egress { database: None, model_stores: &stores };
        let rules = desired_children(&tenant(), "ember-system", egress).unwrap().network_policy.spec.unwrap().egress;
        let rules = rules.unwrap();
        assert_eq!(rules.len(), 4, "own pods, DNS, two stores");
        assert_eq!(rules[2].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr, "10.89.0.1/32");
        let ports: Vec<_> = rules[3].ports.as_ref().unwrap().iter().map(|p| p.port.clone().unwrap()).collect();
        assert_eq!(ports, vec![IntOrString::Int(443), IntOrString::Int(80)]);
    }
}
