//! The Tenant controller against a real control plane and real PostgreSQL,
//! running with exactly the operator's ClusterRole.
//!
//! One test function walks through the lifecycle: the controller watches
//! every Tenant in the shared cluster, so scenarios run one after another
//! against a single controller instead of racing several.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ember_crds::tenant::Tenant;
use ember_operator::config::OperatorConfig;
use ember_testenv::{Postgres, poll};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sqlx::{Connection, PgConnection};

fn tenant(name: &str, spec: serde_json::Value) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn secret_value(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

async fn schema_exists(pg: &Postgres, schema: &str) -> bool {
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_lifecycle() {
    let admin = admin_client().await;
    let mut pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    let server = database_server(&admin, "pg-main", &pg).await;
    // The per-tenant reader roles on until the restart, which turns them off.
    let with_readers = OperatorConfig { tenant_reader_roles: true, ..config_with(vec![server.clone()]) };
    let operator = RunningOperator::start_with(operator_client().await, with_readers);
    let tenants: Api<Tenant> = Api::all(admin.clone());

    create_makes_every_child(&admin, &tenants, &pg).await;
    updates_and_hand_edits_converge(&admin, &tenants).await;
    let operator = members_removed_while_it_was_down_lose_access(&admin, &tenants, operator, server).await;
    reader_roles_turned_off_are_deleted(&admin).await;
    squatted_namespace_is_never_adopted(&admin, &tenants).await;
    database_outage_degrades_and_heals(&admin, &tenants, &mut pg).await;
    deletion_follows_the_policy(&admin, &tenants, &pg).await;

    operator.stop().await;
}

async fn create_makes_every_child(admin: &Client, tenants: &Api<Tenant>, pg: &Postgres) {
    let spec = json!({
        "owners": [{"kind": "User", "name": "alice@acme.example"}],
        "members": [{"kind": "Group", "name": "acme-ds", "role": "edit"}],
        "quota": {"cpu": "8", "memory": "32Gi", "gpus": 1, "pods": 30, "modelDeployments": 4},
        "network": {"allowFromNamespaces": ["ingress-nginx"]},
    });
    tenants.create(&PostParams::default(), &tenant("acme", spec)).await.unwrap();
    let ready = wait_for_tenant(admin, "acme", "acme Ready", is_ready).await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.namespace.as_deref(), Some("tenant-acme"));
    let database = status.database.clone().unwrap();
    assert_eq!((database.server.as_str(), database.schema.as_str()), ("pg-main", "tenant_acme"));
    for condition in ["NamespaceReady", "QuotaReady", "DatabaseReady"] {
        assert!(has_condition(&ready, condition, "True", None), "{condition} not True: {status:#?}");
    }
    assert!(has_condition(&ready, "Reconciling", "False", None));
    assert!(has_condition(&ready, "Stalled", "False", None));

    let ns = Api::<Namespace>::all(admin.clone()).get("tenant-acme").await.unwrap();
    assert_eq!(ns.labels()["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(ns.labels()["ember.dev/tenant"], "acme");
    assert_eq!(ns.owner_references()[0].uid, ready.metadata.uid.clone().unwrap());

    let quota = Api::<ResourceQuota>::namespaced(admin.clone(), "tenant-acme").get("ember-quota").await.unwrap();
    let hard = quota.spec.unwrap().hard.unwrap();
    assert_eq!(hard["requests.cpu"].0, "8");
    assert_eq!(hard["requests.nvidia.com/gpu"].0, "1");
    assert_eq!(hard["count/modeldeployments.ember.dev"].0, "4");

    let policies =
        Api::<NetworkPolicy>::namespaced(admin.clone(), "tenant-acme").list(&Default::default()).await.unwrap();
    let names: Vec<_> = policies.items.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["ember-network"], "one policy per tenant namespace");
    let policy = serde_json::to_string(&policies.items[0].spec).unwrap();
    assert!(policy.contains(r#""policyTypes":["Ingress","Egress"]"#), "{policy}");
    assert!(policy.contains("kube-dns") && policy.contains("ember-system"), "DNS and the platform: {policy}");

    let owners = Api::<RoleBinding>::namespaced(admin.clone(), "tenant-acme").get("ember-owners").await.unwrap();
    assert_eq!(owners.role_ref.name, "ember-tenant-admin");
    assert_eq!(owners.subjects.unwrap()[0].name, "alice@acme.example");
    // The one member edits; nobody views, so no viewers' binding is made.
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), "tenant-acme");
    let editors = bindings.get("ember-editors").await.unwrap();
    assert_eq!(
        (editors.role_ref.name.as_str(), editors.subjects.unwrap()[0].name.as_str()),
        ("ember-tenant-edit", "acme-ds")
    );
    assert!(bindings.get_opt("ember-viewers").await.unwrap().is_none(), "a binding without subjects was made");

    // The credentials Secret works against the real server, and the role lands in its own schema.
    let secret = Api::<Secret>::namespaced(admin.clone(), "tenant-acme").get("ember-database").await.unwrap();
    assert_eq!(secret_value(&secret, "username"), "tenant_acme");
    assert_eq!(secret_value(&secret, "port"), pg.port().to_string());
    let mut conn = PgConnection::connect(&secret_value(&secret, "url")).await.unwrap();
    sqlx::query("CREATE TABLE embeddings (id int)").execute(&mut conn).await.unwrap();
    let schema: String =
        sqlx::query_scalar("SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'embeddings'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(schema, "tenant_acme");

    // Steady state: reconciling again rewrites no child. A spec change that
    // touches no child forces a reconcile; every child keeps its resourceVersion.
    let before = child_versions(admin).await;
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"displayName": "ACME"}})))
        .await
        .unwrap();
    wait_for_tenant(admin, "acme", "acme Ready after a no-op change", is_ready).await;
    assert_eq!(child_versions(admin).await, before, "a reconcile without changes rewrote children");
}

/// resourceVersion of every namespaced child of tenant acme.
async fn child_versions(admin: &Client) -> Vec<(String, Option<String>)> {
    let mut versions = versions_of::<ResourceQuota>(admin, "quota").await;
    versions.extend(versions_of::<NetworkPolicy>(admin, "policy").await);
    versions.extend(versions_of::<RoleBinding>(admin, "binding").await);
    versions.extend(versions_of::<Secret>(admin, "secret").await);
    versions.sort();
    versions
}

async fn versions_of<K>(admin: &Client, kind: &str) -> Vec<(String, Option<String>)>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let operator_owned = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=ember-operator");
    Api::<K>::namespaced(admin.clone(), "tenant-acme")
        .list_metadata(&operator_owned)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| (format!("{kind}/{}", o.metadata.name.unwrap_or_default()), o.metadata.resource_version))
        .collect()
}

async fn updates_and_hand_edits_converge(admin: &Client, tenants: &Api<Tenant>) {
    let quotas = Api::<ResourceQuota>::namespaced(admin.clone(), "tenant-acme");
    let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), "tenant-acme");

    // Spec change → children follow.
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"quota": {"cpu": "12"}}})))
        .await
        .unwrap();
    wait_for_quota_cpu(&quotas, "12", "quota follows the spec").await;
    wait_for_tenant(admin, "acme", "acme Ready at new generation", is_ready).await;

    // Owners and network follow too: a second owner gets the admin binding and
    // can read the Tenant; the extra ingress namespaces are replaced, not merged.
    let change = json!({"spec": {
        "owners": [{"kind": "User", "name": "alice@acme.example"}, {"kind": "User", "name": "bob@acme.example"}],
        "network": {"allowFromNamespaces": ["monitoring"]},
    }});
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(change)).await.unwrap();
    wait_for_tenant(admin, "acme", "acme Ready after owners and network changed", is_ready).await;
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), "tenant-acme");
    let subjects: Vec<String> =
        bindings.get("ember-owners").await.unwrap().subjects.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(subjects, ["alice@acme.example", "bob@acme.example"]);
    let bob = client_as("bob@acme.example", &[]).await;
    poll::until_async("bob reads his Tenant with kubectl", TIMEOUT, async || {
        Ok(Api::<Tenant>::all(bob.clone()).get("acme").await.ok())
    })
    .await
    .unwrap();
    let policy = policies.get("ember-network").await.unwrap();
    let rendered = serde_json::to_string(&policy.spec.unwrap().ingress).unwrap();
    assert!(rendered.contains("monitoring") && !rendered.contains("ingress-nginx"), "extra namespaces: {rendered}");

    // The member removed: the editors' binding that exists is emptied, so
    // the group loses its access (an empty binding is only never made).
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"members": []}}))).await.unwrap();
    wait_until(
        &bindings,
        "ember-editors",
        "editors' binding emptied",
        TIMEOUT,
        |b: &RoleBinding| b.subjects.as_ref().is_none_or(Vec::is_empty),
        |b| b.subjects,
    )
    .await;

    // A hand edit of a child is reverted.
    quotas
        .patch(
            "ember-quota",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"requests.cpu": "999"}}})),
        )
        .await
        .unwrap();
    wait_for_quota_cpu(&quotas, "12", "hand-edited quota restored").await;

    // A deleted child comes back.
    policies.delete("ember-network", &DeleteParams::default()).await.unwrap();
    poll::until_async("deleted policy restored", TIMEOUT, async || {
        Ok(policies.get_opt("ember-network").await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?.map(|_| ()))
    })
    .await
    .unwrap();

    // A per-purpose policy of an earlier version (one that allowed every
    // namespace in) is removed; the one policy stays.
    let uid = tenants.get("acme").await.unwrap().uid().unwrap();
    let legacy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {
            "name": "ember-allow-extra-namespaces", "namespace": "tenant-acme",
            "labels": {"app.kubernetes.io/managed-by": "ember-operator", "app.kubernetes.io/part-of": "ember",
                       "ember.dev/tenant": "acme"},
            "ownerReferences": [{"apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "name": "acme", "uid": uid,
                                 "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": {}}]}]},
    }))
    .unwrap();
    policies.create(&PostParams::default(), &legacy).await.unwrap();
    poll::until_async("legacy policy removed", TIMEOUT, async || {
        let gone = policies
            .get_opt("ember-allow-extra-namespaces")
            .await
            .map_err(|e| ember_testenv::Error::Kube(e.to_string()))?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await
    .unwrap();
    let names: Vec<_> = policies.list(&Default::default()).await.unwrap().items.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["ember-network"]);
}

/// Waits until the tenant quota's `requests.cpu` is `cpu`.
/// A viewer removed from the spec while no operator runs loses access once
/// one runs again: the new operator knows nothing yet (no memory of its
/// writes, no bindings listed), and an empty binding is one it does not make
/// — but one that exists it finds through its watch and empties.
async fn members_removed_while_it_was_down_lose_access(
    admin: &Client,
    tenants: &Api<Tenant>,
    operator: RunningOperator,
    server: ember_operator::config::DatabaseServerConfig,
) -> RunningOperator {
    let viewers = Api::<RoleBinding>::namespaced(admin.clone(), "tenant-acme");
    let carol = json!({"spec": {"members": [{"kind": "User", "name": "carol@acme.example", "role": "view"}]}});
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(carol)).await.unwrap();
    let bound = |b: &RoleBinding| b.subjects.iter().flatten().any(|s| s.name == "carol@acme.example");
    wait_until(&viewers, "ember-viewers", "carol bound as a viewer", TIMEOUT, bound, |b| b.subjects).await;

    operator.stop().await;
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"members": []}}))).await.unwrap();
    let operator = RunningOperator::start(vec![server]).await;
    let emptied = |b: &RoleBinding| b.subjects.as_ref().is_none_or(Vec::is_empty);
    wait_until(&viewers, "ember-viewers", "viewers' binding emptied after a restart", TIMEOUT, emptied, |b| b.subjects)
        .await;
    wait_for_tenant(admin, "acme", "acme Ready after the restart", is_ready).await;
    operator
}

/// The restart in [`members_removed_while_it_was_down_lose_access`] turned
/// `tenantReaderRoles` off (the default): the pair made before goes, binding
/// and role, so no ClusterRoleBinding per tenant is left for RBAC to scan.
async fn reader_roles_turned_off_are_deleted(admin: &Client) {
    let name = ember_operator::tenant::build::rbac::tenant_reader_name("acme");
    wait_gone(&Api::<ClusterRoleBinding>::all(admin.clone()), &name, "acme's reader binding deleted").await;
    wait_gone(&Api::<ClusterRole>::all(admin.clone()), &name, "acme's reader role deleted").await;
    let bob = Api::<Tenant>::all(client_as("bob@acme.example", &[]).await);
    poll::until_async("bob refused his Tenant with kubectl", TIMEOUT, async || {
        Ok(matches!(bob.get("acme").await, Err(kube::Error::Api(status)) if status.code == 403).then_some(()))
    })
    .await
    .unwrap();
}

async fn wait_for_quota_cpu(quotas: &Api<ResourceQuota>, cpu: &str, what: &str) {
    poll::until_async(what, TIMEOUT, async || {
        let q = quotas.get("ember-quota").await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
        Ok((q.spec.unwrap().hard.unwrap()["requests.cpu"].0 == cpu).then_some(()))
    })
    .await
    .unwrap();
}

async fn squatted_namespace_is_never_adopted(admin: &Client, tenants: &Api<Tenant>) {
    let namespaces = Api::<Namespace>::all(admin.clone());
    let squatter: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "tenant-squat", "labels": {"owner": "someone-else"}}}))
            .unwrap();
    namespaces.create(&PostParams::default(), &squatter).await.unwrap();
    tenants.create(&PostParams::default(), &tenant("squat", json!({}))).await.unwrap();
    let stalled = wait_for_tenant(admin, "squat", "squat Stalled", |t| {
        has_condition(t, "Ready", "False", Some("NamespaceConflict"))
            && has_condition(t, "Stalled", "True", Some("NamespaceConflict"))
    })
    .await;
    assert!(has_condition(&stalled, "NamespaceReady", "False", Some("NamespaceConflict")));
    let ns = namespaces.get("tenant-squat").await.unwrap();
    assert!(ns.owner_references().is_empty(), "squatted namespace got an owner");
    assert!(!ns.labels().contains_key("ember.dev/tenant"), "squatted namespace got relabelled");
    tenants.delete("squat", &DeleteParams::default()).await.unwrap();
    wait_gone(tenants, "squat", "squat tenant deleted").await;
    assert!(namespaces.get_opt("tenant-squat").await.unwrap().is_some(), "squatted namespace was deleted");
}

async fn database_outage_degrades_and_heals(admin: &Client, tenants: &Api<Tenant>, pg: &mut Postgres) {
    let pg_owned = std::mem::replace(pg, tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap());
    let mut stopped = tokio::task::spawn_blocking(move || {
        let mut pg = pg_owned;
        pg.stop();
        pg
    })
    .await
    .unwrap();
    // A spec change forces a reconcile that needs the database.
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"database": {"connectionLimit": 7}}})))
        .await
        .unwrap();
    wait_for_tenant(admin, "acme", "acme DatabaseReady=False while PostgreSQL is down", |t| {
        has_condition(t, "DatabaseReady", "False", Some("DatabaseUnreachable"))
            && has_condition(t, "Ready", "False", None)
            && has_condition(t, "Reconciling", "True", None)
    })
    .await;
    stopped = tokio::task::spawn_blocking(move || {
        stopped.start_again().unwrap();
        stopped
    })
    .await
    .unwrap();
    wait_for_tenant(admin, "acme", "acme Ready after PostgreSQL is back", is_ready).await;
    let mut conn = PgConnection::connect(&stopped.url()).await.unwrap();
    let (roles, limit): (i64, i32) =
        sqlx::query_as("SELECT count(*), max(rolconnlimit) FROM pg_roles WHERE rolname = 'tenant_acme'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((roles, limit), (1, 7), "exactly one role with the new limit");
    drop(std::mem::replace(pg, stopped));
}

async fn deletion_follows_the_policy(admin: &Client, tenants: &Api<Tenant>, pg: &Postgres) {
    let namespaces = Api::<Namespace>::all(admin.clone());
    // Retain (the default): namespace goes, schema stays.
    let old_uid = tenants.get("acme").await.unwrap().uid().unwrap();
    tenants.delete("acme", &DeleteParams::default()).await.unwrap();
    wait_gone(tenants, "acme", "acme deleted").await;
    wait_gone(&namespaces, "tenant-acme", "tenant-acme namespace deleted").await;
    assert!(schema_exists(pg, "tenant_acme").await, "Retain must keep the schema");

    // A new Tenant of the same name does not inherit the retained role and
    // schema: Stalled, naming the earlier Tenant, until a platform admin
    // hands them over with the annotation.
    tenants.create(&PostParams::default(), &tenant("acme", json!({}))).await.unwrap();
    let stalled = wait_for_tenant(admin, "acme", "the new acme Stalled on the retained schema", |t| {
        has_condition(t, "DatabaseReady", "False", Some("DatabaseConflict"))
            && has_condition(t, "Stalled", "True", Some("DatabaseConflict"))
    })
    .await;
    let message = stalled.status.unwrap().conditions.into_iter().find(|c| c.type_ == "DatabaseReady").unwrap().message;
    assert!(message.contains(&format!("ember.dev/adopt-database={old_uid}")), "{message}");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    let can_log_in: bool = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tenant_acme'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!can_log_in, "the retained role was re-enabled for a different Tenant");
    let adopt = json!({"metadata": {"annotations": {"ember.dev/adopt-database": old_uid}}});
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(&adopt)).await.unwrap();
    wait_for_tenant(admin, "acme", "acme Ready after the platform admin handed the schema over", is_ready).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "tenant-acme");
    let url = secret_value(&secrets.get(ember_crds::names::DATABASE_SECRET_NAME).await.unwrap(), "url");
    PgConnection::connect(&url).await.expect("the adopting Tenant's credentials log in");
    tenants.delete("acme", &DeleteParams::default()).await.unwrap();
    wait_gone(tenants, "acme", "the adopting acme deleted").await;
    wait_gone(&namespaces, "tenant-acme", "tenant-acme namespace deleted again").await;

    // Delete: schema and role dropped.
    tenants
        .create(&PostParams::default(), &tenant("doomed", json!({"database": {"deletionPolicy": "Delete"}})))
        .await
        .unwrap();
    wait_for_tenant(admin, "doomed", "doomed Ready", is_ready).await;
    assert!(schema_exists(pg, "tenant_doomed").await);
    tenants.delete("doomed", &DeleteParams::default()).await.unwrap();
    wait_gone(tenants, "doomed", "doomed deleted").await;
    if schema_exists(pg, "tenant_doomed").await {
        // Say which cleanup path ran: the operator's Events carry it.
        let events =
            Api::<k8s_openapi::api::events::v1::Event>::all(admin.clone()).list(&Default::default()).await.unwrap();
        let notes: Vec<_> = events
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("doomed"))
            .map(|e| format!("{:?}: {:?}", e.reason, e.note))
            .collect();
        panic!("Delete must drop the schema; events of doomed: {notes:#?}");
    }
    wait_gone(&namespaces, "tenant-doomed", "tenant-doomed namespace deleted").await;
}
