//! A real `ember-operator` process killed in the middle of a reconcile: the
//! next process converges the Tenant without losing or duplicating anything,
//! and a SIGTERM ends a process gracefully. Both runs log JSON lines that
//! carry the tenant as a field and never the database password.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use ember_crds::tenant::Tenant;
use ember_testenv::{Postgres, poll};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use sqlx::{Connection, PgConnection};

const LEASE: &str = "ember-operator-crash-test";
/// Class of the operator's per-tenant advisory lock (`database::provision`).
const TENANT_LOCK_CLASS: i32 = 0x454D_4252;

fn start(kubeconfig: &std::path::Path, config: &std::path::Path, identity: &str) -> OperatorProcess {
    let config = config.to_str().unwrap();
    OperatorProcess::start(kubeconfig, identity, &["--config", config, "--lease-name", LEASE, "--lease-seconds", "3"])
}

async fn scalar_i64(pg: &Postgres, sql: &str) -> i64 {
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await.unwrap()
}

fn password_of(secret: &Secret) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()["password"].0.clone()).unwrap()
}

/// Creates Tenant `name` (policy Delete) while its provisioning lock is held,
/// waits until `operator` blocks on that lock — the credentials Secret
/// written, the role not yet — and kills it there. Returns the Secret's
/// password and the dead process's log.
async fn kill_while_provisioning(
    admin: &kube::Client,
    pg: &Postgres,
    operator: OperatorProcess,
    name: &str,
) -> (String, std::path::PathBuf) {
    let role = format!("tenant_{name}");
    let mut blocker = PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(TENANT_LOCK_CLASS)
        .bind(&role)
        .execute(&mut blocker)
        .await
        .unwrap();
    let tenant = serde_json::json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
        "spec": {"database": {"deletionPolicy": "Delete"}},
    });
    Api::<Tenant>::all(admin.clone())
        .create(&PostParams::default(), &serde_json::from_value(tenant).unwrap())
        .await
        .unwrap();
    let waiting = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = {TENANT_LOCK_CLASS}::oid"
    );
    poll::until_async("operator waits on the tenant lock", TIMEOUT, async || {
        Ok((scalar_i64(pg, &waiting).await == 1).then_some(()))
    })
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &format!("tenant-{name}"));
    let password = password_of(&secrets.get("ember-database").await.unwrap());
    let log = operator.kill();
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert_eq!(scalar_i64(pg, &count_roles(name)).await, 0, "the kill did not land mid-reconcile");
    (password, log)
}

fn count_roles(tenant: &str) -> String {
    format!("SELECT count(*) FROM pg_roles WHERE rolname = 'tenant_{tenant}'")
}

fn count_schemas(tenant: &str) -> String {
    format!("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_{tenant}'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reconcile_the_next_operator_converges() {
    let admin = admin_client().await;
    let pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    let server = database_server(&admin, "pg-crash", &pg).await;
    let config = operator_config_file(&[server], "crash");
    let kubeconfig = operator_kubeconfig("crash");
    let tenants: Api<Tenant> = Api::all(admin.clone());

    // 1. Killed while provisioning; a new process (a new identity: it must
    // wait out the dead one's Lease) converges, keeping the password.
    let (password, first_log) =
        kill_while_provisioning(&admin, &pg, start(&kubeconfig, &config, "crash-a"), "crashy").await;
    assert!(!is_ready(&tenants.get("crashy").await.unwrap()), "tenant Ready before its database exists");
    let second = start(&kubeconfig, &config, "crash-b");
    wait_for_tenant(&admin, "crashy", "tenant Ready after the restart", is_ready).await;
    assert_eq!(scalar_i64(&pg, &count_roles("crashy")).await, 1, "exactly one role");
    assert_eq!(scalar_i64(&pg, &count_schemas("crashy")).await, 1, "exactly one schema");
    let secret = Api::<Secret>::namespaced(admin.clone(), "tenant-crashy").get("ember-database").await.unwrap();
    assert_eq!(password_of(&secret), password, "the password written before the crash was replaced");
    let url = String::from_utf8(secret.data.as_ref().unwrap()["url"].0.clone()).unwrap();
    let mut tenant_conn = PgConnection::connect(&url).await.expect("the Secret's credentials log in");
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text").fetch_one(&mut tenant_conn).await.unwrap();
    assert_eq!(schema, "tenant_crashy");
    tenant_conn.close().await.unwrap();

    // 2. Killed after provisioning committed but before the status recorded
    // it (the committed transaction is played by hand), then deleted while no
    // operator runs: the next operator still drops what was made.
    let (_, second_log) = kill_while_provisioning(&admin, &pg, second, "orphan").await;
    let mut superuser = PgConnection::connect(&pg.url()).await.unwrap();
    let uid = tenants.get("orphan").await.unwrap().metadata.uid.unwrap();
    let marker = ember_operator::database::marker(&uid);
    sqlx::Executor::execute(
        &mut superuser,
        format!(
            "CREATE ROLE tenant_orphan LOGIN; CREATE SCHEMA tenant_orphan AUTHORIZATION tenant_orphan;
             COMMENT ON ROLE tenant_orphan IS '{marker}'; COMMENT ON SCHEMA tenant_orphan IS '{marker}'"
        )
        .as_str(),
    )
    .await
    .unwrap();
    assert!(tenants.get("orphan").await.unwrap().status.and_then(|s| s.database).is_none());
    for name in ["crashy", "orphan"] {
        tenants.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let third = start(&kubeconfig, &config, "crash-c");
    for name in ["crashy", "orphan"] {
        wait_gone(&tenants, name, &format!("{name} deleted")).await;
        assert_eq!(scalar_i64(&pg, &count_roles(name)).await, 0, "deletionPolicy Delete drops role of {name}");
        assert_eq!(scalar_i64(&pg, &count_schemas(name)).await, 0, "deletionPolicy Delete drops schema of {name}");
    }

    // 3. SIGTERM: exit status 0 and the Lease released for the next leader.
    let third_log = third.log.clone();
    let graceful = tokio::task::spawn_blocking(move || third.terminate(Duration::from_secs(20))).await.unwrap();
    assert!(graceful, "SIGTERM must end the operator with exit status 0");
    let leases: Api<Lease> = Api::namespaced(admin.clone(), PLATFORM_NAMESPACE);
    let holder = leases.get(LEASE).await.unwrap().spec.and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "a gracefully stopped leader releases its Lease");

    // 4. Logs: JSON lines, the tenant as a field, never the password.
    let mut ready_lines = 0;
    for log in [&first_log, &second_log, &third_log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains(&password), "{} contains the database password", log.display());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let entry: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            for field in ["timestamp", "level", "message"] {
                assert!(entry.get(field).is_some(), "log line without {field}: {line}");
            }
            if entry["tenant"] == "crashy" && entry["message"] == "tenant is ready" {
                ready_lines += 1;
            }
        }
    }
    assert_eq!(ready_lines, 1, "expected one `tenant is ready` line with tenant=crashy in {}", second_log.display());
    for file in [&first_log, &second_log, &third_log, &config, &kubeconfig] {
        let _ = std::fs::remove_file(file);
    }
}
