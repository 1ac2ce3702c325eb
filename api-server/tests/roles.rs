//! The roles table (`ember_api::authz`, shown in docs/architecture.md) holds
//! on both paths a user has: every capability of every role is tried over
//! REST against ember-api, and asked of the real API server's authoriser
//! for the same person (a SubjectAccessReview), with the RoleBindings the
//! operator — running here in-process — made from the Tenant that a
//! platform admin onboarded over REST.
//!
//! One test in its own binary: the operator reconciles every Tenant of the
//! control plane, which would fight the hand-written statuses other tests use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use ember_api::authz::{Capability, Role, allows, kubectl_allows, kubectl_check};
use ember_crds::tenant::Tenant;
use ember_operator::config::{DatabaseServerConfig, OperatorConfig};
use ember_operator::context::Context;
use ember_operator::metrics::Metrics;
use ember_testenv::{Postgres, poll};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use support::cluster::{Harness, PLATFORM_ADMINS, SERVICE_ENDPOINTS, TIMEOUT};

const TENANT: &str = "acme-roles";
const NAMESPACE: &str = "tenant-acme-roles";

/// Who holds each role: a user name and the groups in their token.
fn person(role: Role) -> (&'static str, Vec<&'static str>) {
    match role {
        Role::Viewer => ("vera", vec![]),
        Role::Editor => ("ed", vec!["acme-ds"]),
        Role::Owner => ("olga", vec![]),
        Role::PlatformAdmin => ("pat", vec![PLATFORM_ADMINS]),
    }
}

fn admin_spec(cpu: &str) -> String {
    json!({
        "owners": [{"kind": "User", "name": "olga"}],
        "members": [{"kind": "User", "name": "vera", "role": "view"}, {"kind": "Group", "name": "acme-ds", "role": "edit"}],
        "quota": {"cpu": cpu, "memory": "8Gi"},
    })
    .to_string()
}

fn deployment_spec() -> String {
    json!({"model": {"architecture": "mlp", "task": "regression",
                     "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)},
                     "source": {"uri": "https://models.example/m.safetensors", "sha256": "c".repeat(64)}}})
    .to_string()
}

/// One REST call standing for `capability`; the answer is 403 exactly when
/// the role may not (every role here can see the tenant, so never 404).
async fn try_over_rest(h: &Harness, token: &str, capability: Capability) -> u16 {
    let tenant = format!("/v1/tenants/{TENANT}");
    let (method, path, body) = match capability {
        Capability::ReadTenant => ("GET", tenant, None),
        Capability::ReadDeployments => ("GET", format!("{tenant}/deployments"), None),
        Capability::CallModels => ("POST", format!("{tenant}/deployments/scorer/embeddings"), Some("{}".to_owned())),
        Capability::WriteDeployments => ("PUT", format!("{tenant}/deployments/scorer"), Some(deployment_spec())),
        Capability::ManageApiKeys => ("GET", format!("{tenant}/api-keys"), None),
        Capability::ReadRecords => ("GET", format!("{tenant}/audit"), None),
        Capability::EditBranding => {
            ("PUT", format!("{tenant}/branding"), Some(json!({"displayName": "Acme"}).to_string()))
        }
        Capability::ManageTenants => ("PUT", tenant, Some(admin_spec("4"))),
    };
    h.call(method, &path, Some(token), body.as_deref()).await.0
}

async fn try_over_kubectl(admin: &Client, user: &str, groups: &[&str], capability: Capability) -> Option<bool> {
    let check = kubectl_check(capability)?;
    let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    groups.push("system:authenticated".into());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups),
            resource_attributes: Some(ResourceAttributes {
                group: Some("ember.dev".into()),
                resource: Some(check.resource.into()),
                verb: Some(check.verb.into()),
                namespace: check.in_tenant_namespace.then(|| NAMESPACE.into()),
                name: (!check.in_tenant_namespace).then(|| TENANT.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(admin.clone()).create(&PostParams::default(), &review).await.unwrap();
    Some(answer.status.unwrap().allowed)
}

/// The operator's controllers in-process, as its ServiceAccount, with
/// `postgres` as the one database server.
async fn start_operator(h: &Harness, postgres: &Postgres) -> tokio::task::JoinHandle<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "roles-db-admin", "namespace": "ember-system"},
        "stringData": {"username": ember_testenv::SUPERUSER, "password": postgres.password()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.admin.clone(), "ember-system")
        .patch("roles-db-admin", &PatchParams::apply("ember-tests").force(), &Patch::Apply(&secret))
        .await
        .unwrap();
    let config = OperatorConfig {
        database_servers: vec![DatabaseServerConfig {
            name: "roles-db".into(),
            host: "127.0.0.1".into(),
            port: postgres.port(),
            database: "postgres".into(),
            admin_secret: "roles-db-admin".into(),
            network_cidr: None,
        }],
        // The table's kubectl column for ReadTenant holds with the per-tenant
        // reader roles, which are opt-in; without them (the default) tenant
        // roles read their Tenant over REST only, as `tenant_isolation.rs` shows.
        tenant_reader_roles: true,
        ..Default::default()
    };
    let cp = ember_testenv::shared_control_plane().unwrap();
    let mut kube_config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(cp.kubeconfig()).unwrap(), &KubeConfigOptions::default())
            .await
            .unwrap();
    kube_config.auth_info.impersonate = Some("system:serviceaccount:ember-system:ember-operator".into());
    let ctx = Arc::new(Context::new(Client::try_from(kube_config).unwrap(), config, Metrics::default()));
    tokio::spawn(ember_operator::controllers::run(ctx, 4, std::future::pending()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_may_do_over_rest_and_kubectl_what_the_table_says() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let h = Harness::start_with_platform(SERVICE_ENDPOINTS, &postgres.url()).await;
    let operator = start_operator(&h, &postgres).await;
    let token = |role: Role| {
        let (user, groups) = person(role);
        h.token(user, &groups)
    };

    // A platform admin onboards the tenant over REST; kubectl sees that very object.
    let admin = token(Role::PlatformAdmin);
    let (status, body) = h.call("PUT", &format!("/v1/tenants/{TENANT}"), Some(&admin), Some(&admin_spec("4"))).await;
    assert_eq!(status, 201, "{body}");
    let stored = Api::<Tenant>::all(h.admin.clone()).get(TENANT).await.unwrap();
    assert_eq!(stored.spec.owners[0].name, "olga");
    assert_eq!(stored.spec.quota.cpu.0, "4");
    let managers: Vec<_> = stored.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"ember-api".to_owned()), "{managers:?}");

    // Wait for the operator's bindings: until every right the table grants
    // over kubectl is granted, so that the refusals checked below are RBAC's
    // answer and not a binding still to come.
    poll::until_async("the operator's RoleBindings", TIMEOUT, async || {
        for role in Role::ALL {
            let (user, groups) = person(role);
            for capability in Capability::ALL {
                if kubectl_allows(role, capability) == Some(true)
                    && try_over_kubectl(&h.admin, user, &groups, capability).await != Some(true)
                {
                    return Ok(None);
                }
            }
        }
        Ok(Some(()))
    })
    .await
    .unwrap();
    // A deployment to call and change (no runtime behind it: a call that
    // is let through answers 502, not 403).
    let scorer = format!("/v1/tenants/{TENANT}/deployments/scorer");
    let owner = token(Role::Owner);
    poll::until_async("the tenant is Ready and takes a deployment", TIMEOUT, async || {
        Ok((h.call("PUT", &scorer, Some(&owner), Some(&deployment_spec())).await.0 == 201).then_some(()))
    })
    .await
    .unwrap();
    h.until_status(&scorer, &token(Role::Viewer), 200).await;

    let mut table = Vec::new();
    for role in Role::ALL {
        let (user, groups) = person(role);
        for capability in Capability::ALL {
            let rest = try_over_rest(&h, &token(role), capability).await;
            assert_ne!(rest, 404, "{role} {capability:?}: the tenant must be visible to every role");
            assert_eq!(rest != 403, allows(role, capability), "{role} {capability:?} over REST answered {rest}");
            let kubectl = try_over_kubectl(&h.admin, user, &groups, capability).await;
            assert_eq!(kubectl, kubectl_allows(role, capability), "{role} {capability:?} over kubectl");
            table.push(format!("{role:>14} {capability:?}: REST {rest}, kubectl {kubectl:?}"));
        }
    }
    eprintln!("{}", table.join("\n"));

    // Somebody with no role sees no tenant at all, and cannot create one.
    let stranger = h.token("mallory", &["other"]);
    let (status, _) = h.call("GET", &format!("/v1/tenants/{TENANT}"), Some(&stranger), None).await;
    assert_eq!(status, 404);
    let (status, _) = h.call("PUT", "/v1/tenants/mallory-corp", Some(&stranger), Some(&admin_spec("1"))).await;
    assert_eq!(status, 403);
    operator.abort();
}
