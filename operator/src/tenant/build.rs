//! Desired Kubernetes objects of a Tenant, computed from its spec alone.
//!
//! Pure: no client, no clock. Everything here is unit-tested from small
//! fixtures; `apply` sends the result with server-side apply. Children carry
//! our own labels (never copies of the Tenant's, see the GitOps checklist)
//! and a controller owner reference to the Tenant, so garbage collection
//! removes them with it.

use std::collections::BTreeMap;

use ember_crds::labels;
use ember_crds::names::namespace_for;
use ember_crds::tenant::{MemberRole, Subject, SubjectKind, Tenant};
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject as RbacSubject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::config::ModelStoreConfig;
use crate::error::{Error, Result};

/// Names of the objects the operator puts into a tenant namespace.
pub mod child_names {
    pub const QUOTA: &str = "ember-quota";
    pub const LIMIT_RANGE: &str = "ember-defaults";
    pub const WORKLOAD_SERVICE_ACCOUNT: &str = "ember-workload";
    pub const NETWORK_POLICY: &str = "ember-network";
    /// The per-purpose policies of earlier versions, which
    /// [`NETWORK_POLICY`] replaced; removed where found
    /// ([`crate::tenant::legacy`]).
    pub const LEGACY_POLICIES: [&str; 7] = [
        "ember-default-deny",
        "ember-allow-same-namespace",
        "ember-allow-dns",
        "ember-allow-platform",
        "ember-allow-extra-namespaces",
        "ember-allow-database",
        "ember-allow-model-stores",
    ];
    pub const BINDING_OWNERS: &str = "ember-owners";
    pub const BINDING_EDITORS: &str = "ember-editors";
    pub const BINDING_VIEWERS: &str = "ember-viewers";
}

/// Aggregated ClusterRoles shipped in `config/rbac/tenant-roles.yaml`.
pub mod tenant_cluster_roles {
    pub const ADMIN: &str = "ember-tenant-admin";
    pub const EDIT: &str = "ember-tenant-edit";
    pub const VIEW: &str = "ember-tenant-view";
}

/// Where the tenant's database server is, for the egress policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEndpoint {
    pub cidr: String,
    pub port: u16,
}

/// Where tenant pods may reach beyond their namespace: the tenant's
/// database server and the platform's model stores.
#[derive(Debug, Clone, Copy)]
pub struct Egress<'a> {
    pub database: Option<&'a DatabaseEndpoint>,
    pub model_stores: &'a [ModelStoreConfig],
}

/// Everything the operator keeps in sync for one Tenant.
#[derive(Debug, Clone)]
pub struct TenantChildren {
    pub namespace: Namespace,
    pub quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policy: NetworkPolicy,
    pub service_account: ServiceAccount,
    pub role_bindings: Vec<RoleBinding>,
    pub reader_role: ClusterRole,
    pub reader_binding: ClusterRoleBinding,
}

/// Name of the per-tenant ClusterRole (and binding) that lets the tenant's
/// users read their own Tenant object, and nothing else cluster-wide.
pub fn tenant_reader_name(tenant: &str) -> String {
    format!("ember-tenant-{tenant}-reader")
}

/// Labels on every child of `tenant`.
pub fn child_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::TENANT.to_owned(), tenant.to_owned()),
        (labels::APP_MANAGED_BY.to_owned(), labels::MANAGED_BY_OPERATOR.to_owned()),
        (labels::APP_PART_OF.to_owned(), labels::PART_OF_EMBER.to_owned()),
    ])
}

fn owner_reference(tenant: &Tenant) -> Result<OwnerReference> {
    tenant.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))
}

fn meta(name: &str, namespace: Option<&str>, tenant: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(child_labels(tenant)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// Computes all children of `tenant`.
pub fn desired_children(tenant: &Tenant, platform_namespace: &str, egress: Egress<'_>) -> Result<TenantChildren> {
    let name = tenant.name_any();
    let owner = owner_reference(tenant)?;
    let ns = namespace_for(&name);
    Ok(TenantChildren {
        namespace: namespace(&name, &owner),
        quota: quota(tenant, &ns, &owner),
        limit_range: limit_range(&name, &ns, &owner),
        network_policy: network_policy(tenant, &ns, platform_namespace, egress, &owner),
        service_account: ServiceAccount {
            metadata: meta(child_names::WORKLOAD_SERVICE_ACCOUNT, Some(&ns), &name, &owner),
            // Model pods never talk to the Kubernetes API.
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        role_bindings: role_bindings(tenant, &ns, &owner),
        reader_role: reader_role(&name, &owner),
        reader_binding: reader_binding(tenant, &owner),
    })
}

fn namespace(tenant: &str, owner: &OwnerReference) -> Namespace {
    let mut metadata = meta(&namespace_for(tenant), None, tenant, owner);
    let labels = metadata.labels.get_or_insert_with(Default::default);
    for key in [labels::PSS_ENFORCE, labels::PSS_AUDIT, labels::PSS_WARN] {
        labels.insert(key.to_owned(), labels::PSS_LEVEL_RESTRICTED.to_owned());
    }
    labels.insert(labels::PSS_ENFORCE_VERSION.to_owned(), labels::PSS_VERSION.to_owned());
    Namespace { metadata, ..Default::default() }
}

fn quota(tenant: &Tenant, ns: &str, owner: &OwnerReference) -> ResourceQuota {
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

fn limit_range(tenant: &str, ns: &str, owner: &OwnerReference) -> LimitRange {
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
fn network_policy(
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

fn rbac_subject(kind: SubjectKind, name: &str) -> RbacSubject {
    RbacSubject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: match kind {
            SubjectKind::User => "User".into(),
            SubjectKind::Group => "Group".into(),
        },
        name: name.to_owned(),
        namespace: None,
    }
}

fn owners(tenant: &Tenant) -> Vec<RbacSubject> {
    tenant.spec.owners.iter().map(|Subject { kind, name }| rbac_subject(*kind, name)).collect()
}

fn members_with(tenant: &Tenant, role: MemberRole) -> Vec<RbacSubject> {
    tenant.spec.members.iter().filter(|m| m.role == role).map(|m| rbac_subject(m.kind, &m.name)).collect()
}

fn role_bindings(tenant: &Tenant, ns: &str, owner: &OwnerReference) -> Vec<RoleBinding> {
    let name = tenant.name_any();
    let binding = |binding_name: &str, cluster_role: &str, subjects: Vec<RbacSubject>| RoleBinding {
        metadata: meta(binding_name, Some(ns), &name, owner),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        },
        subjects: Some(subjects),
    };
    vec![
        binding(child_names::BINDING_OWNERS, tenant_cluster_roles::ADMIN, owners(tenant)),
        binding(child_names::BINDING_EDITORS, tenant_cluster_roles::EDIT, members_with(tenant, MemberRole::Edit)),
        binding(child_names::BINDING_VIEWERS, tenant_cluster_roles::VIEW, members_with(tenant, MemberRole::View)),
    ]
}

fn reader_role(tenant: &str, owner: &OwnerReference) -> ClusterRole {
    ClusterRole {
        metadata: meta(&tenant_reader_name(tenant), None, tenant, owner),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![ember_crds::GROUP.into()]),
            resources: Some(vec!["tenants".into(), "tenants/status".into()]),
            resource_names: Some(vec![tenant.to_owned()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn reader_binding(tenant: &Tenant, owner: &OwnerReference) -> ClusterRoleBinding {
    let name = tenant.name_any();
    let mut subjects = owners(tenant);
    subjects.extend(tenant.spec.members.iter().map(|m| rbac_subject(m.kind, &m.name)));
    ClusterRoleBinding {
        metadata: meta(&tenant_reader_name(&name), None, &name, owner),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: tenant_reader_name(&name),
        },
        subjects: Some(subjects),
    }
}

/// Whether an existing namespace was made by the operator for this Tenant.
/// A namespace with the right name but another owner is a squatter and is
/// never adopted.
pub fn namespace_belongs_to(namespace: &Namespace, tenant: &Tenant) -> bool {
    let labelled = namespace.labels().get(labels::TENANT).is_some_and(|t| *t == tenant.name_any());
    let owned = namespace
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == tenant.meta().uid.as_ref());
    labelled && owned
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ember_crds::tenant::{Member, TenantSpec};

    const NO_EGRESS: Egress<'static> = Egress { database: None, model_stores: &[] };

    fn tenant() -> Tenant {
        let mut t = Tenant::new(
            "acme",
            TenantSpec {
                owners: vec![Subject { kind: SubjectKind::User, name: "alice".into() }],
                members: vec![
                    Member { kind: SubjectKind::Group, name: "ds".into(), role: MemberRole::Edit },
                    Member { kind: SubjectKind::User, name: "bob".into(), role: MemberRole::View },
                ],
                ..Default::default()
            },
        );
        t.metadata.uid = Some("uid-1".into());
        t
    }

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
        assert!(namespace_belongs_to(ns, &tenant()));
    }

    #[test]
    fn tenant_labels_are_not_copied_to_children() {
        let mut t = tenant();
        t.metadata.labels = Some(BTreeMap::from([("argocd.argoproj.io/instance".into(), "x".into())]));
        let children = desired_children(&t, "ember-system", NO_EGRESS).unwrap();
        assert!(!children.namespace.metadata.labels.unwrap().contains_key("argocd.argoproj.io/instance"));
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

    #[test]
    fn role_bindings_map_owners_and_members_to_cluster_roles() {
        let bindings = desired_children(&tenant(), "p", NO_EGRESS).unwrap().role_bindings;
        let subjects = |i: usize| -> Vec<String> {
            bindings[i].subjects.clone().unwrap().into_iter().map(|s| format!("{}:{}", s.kind, s.name)).collect()
        };
        assert_eq!(bindings[0].role_ref.name, tenant_cluster_roles::ADMIN);
        assert_eq!(subjects(0), vec!["User:alice"]);
        assert_eq!(bindings[1].role_ref.name, tenant_cluster_roles::EDIT);
        assert_eq!(subjects(1), vec!["Group:ds"]);
        assert_eq!(bindings[2].role_ref.name, tenant_cluster_roles::VIEW);
        assert_eq!(subjects(2), vec!["User:bob"]);
    }

    #[test]
    fn reader_role_grants_get_on_the_own_tenant_only() {
        let children = desired_children(&tenant(), "p", NO_EGRESS).unwrap();
        let rule = &children.reader_role.rules.unwrap()[0];
        assert_eq!(rule.resource_names.as_deref(), Some(&["acme".to_owned()][..]));
        assert_eq!(rule.verbs, vec!["get"]);
        assert_eq!(children.reader_binding.subjects.unwrap().len(), 3);
    }

    #[test]
    fn workload_service_account_has_no_token() {
        let sa = desired_children(&tenant(), "p", NO_EGRESS).unwrap().service_account;
        assert_eq!(sa.automount_service_account_token, Some(false));
    }

    #[test]
    fn squatted_namespace_does_not_belong() {
        let squatter = Namespace {
            metadata: ObjectMeta {
                name: Some("tenant-acme".into()),
                labels: Some(BTreeMap::from([("ember.dev/tenant".into(), "acme".into())])),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!namespace_belongs_to(&squatter, &tenant()));
    }
}
