//! The database step of the Tenant reconciler: placement on a server, the
//! credentials Secret in the tenant namespace, and the role + schema on
//! PostgreSQL (through [`crate::database`]), plus cleanup on deletion.
//!
//! The Secret is written before the role so the password is never lost: a
//! crash between the two leaves a Secret whose password the next
//! reconciliation sets on the role.

use std::collections::BTreeMap;

use ember_crds::labels::{ADOPT_DATABASE, child_labels};
use ember_crds::names::{DATABASE_SECRET_NAME, namespace_for};
use ember_crds::tenant::{DeletionPolicy, Tenant, TenantDatabaseStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use kube::{Resource, ResourceExt};

use super::build::DatabaseEndpoint;
use crate::config::DatabaseServerConfig;
use crate::context::Context;
use crate::database::{self, DatabaseServer, Ownership};
use crate::error::{Error, Result};

/// The server this tenant's schema lives (or will live) on.
pub fn placement(tenant: &Tenant, ctx: &Context) -> Result<DatabaseServerConfig> {
    let recorded = tenant.status.as_ref().and_then(|s| s.database.as_ref()).map(|d| d.server.as_str());
    ctx.config.place_tenant(&tenant.name_any(), tenant.spec.database.server.as_deref(), recorded).cloned()
}

/// Where tenant pods may reach their database, if the configuration says.
pub fn endpoint(server: &DatabaseServerConfig) -> Option<DatabaseEndpoint> {
    server.network_cidr.as_ref().map(|cidr| DatabaseEndpoint { cidr: cidr.clone(), port: server.port })
}

fn secret_string(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Which role and schema the Tenant may use: those stamped with its UID,
/// those of the earlier Tenant a platform admin handed over, and unmarked
/// ones only when its status shows the operator provisioned them before
/// roles and schemas carried markers.
fn ownership(tenant: &Tenant) -> Result<Ownership<'_>> {
    Ok(Ownership {
        uid: tenant.metadata.uid.as_deref().ok_or(Error::MissingField("metadata.uid"))?,
        adopt: tenant.annotations().get(ADOPT_DATABASE).map(String::as_str),
        unmarked_are_ours: tenant.status.as_ref().is_some_and(|s| s.database.is_some()),
    })
}

/// Connection details of a server, with its admin credentials from the
/// Secret named in the configuration (as read within the last
/// [`crate::context::ADMIN_CREDENTIALS_FRESH`]).
async fn server_with_credentials(config: &DatabaseServerConfig, ctx: &Context) -> Result<DatabaseServer> {
    if let Some(server) = ctx
        .fresh_admin_credentials(&config.name)
        .filter(|s| (&s.host, s.port, &s.database) == (&config.host, config.port, &config.database))
    {
        return Ok(server);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.config.platform_namespace);
    let secret = secrets.get_opt(&config.admin_secret).await?.ok_or_else(|| {
        Error::Config(format!(
            "admin Secret {}/{} of database server {} not found",
            ctx.config.platform_namespace, config.admin_secret, config.name
        ))
    })?;
    let field = |key: &str| {
        secret_string(&secret, key).ok_or_else(|| {
            Error::Config(format!(
                "admin Secret {} of database server {} lacks key {key}",
                config.admin_secret, config.name
            ))
        })
    };
    let server = DatabaseServer {
        name: config.name.clone(),
        host: config.host.clone(),
        port: config.port,
        database: config.database.clone(),
        admin_user: field("username")?,
        admin_password: field("password")?,
    };
    ctx.remember_admin_credentials(&server);
    Ok(server)
}

/// Makes the tenant's credentials Secret, role and schema exist.
pub async fn ensure(tenant: &Tenant, config: &DatabaseServerConfig, ctx: &Context) -> Result<TenantDatabaseStatus> {
    let name = tenant.name_any();
    let server = server_with_credentials(config, ctx).await?;
    let namespace = namespace_for(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let password = match secrets.get_opt(DATABASE_SECRET_NAME).await?.and_then(|s| secret_string(&s, "password")) {
        Some(existing) => existing,
        None => database::random_password(),
    };
    let schema = ember_crds::names::schema_name_for(&name);
    let role = ember_crds::names::database_role_for(&name);
    let owner = tenant.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?;
    let data: BTreeMap<String, ByteString> = [
        ("host", server.host.clone()),
        ("port", server.port.to_string()),
        ("database", server.database.clone()),
        ("username", role.clone()),
        ("password", password.clone()),
        ("schema", schema.clone()),
        ("url", database::connection_url(&server, &name, &password)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(DATABASE_SECRET_NAME.into()),
            namespace: Some(namespace.clone()),
            labels: Some(child_labels(&name)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    };
    crate::apply::apply_namespaced_remembered(&ctx.client, &ctx.written, &secret).await?;

    let (pool, passwords) = ctx.database_pool(&server);
    database::ensure_tenant_database_remembered(
        &pool,
        &passwords,
        &ownership(tenant)?,
        &name,
        tenant.spec.database.connection_limit,
        &password,
    )
    .await?;
    Ok(TenantDatabaseStatus { server: server.name, schema, secret_name: DATABASE_SECRET_NAME.into() })
}

/// Applies the deletion policy to the tenant's schema and role. Returns what
/// happened, for the Event. Fails (and so keeps the finalizer) while the
/// server is unreachable: nothing is silently orphaned.
///
/// Without a recorded placement the schema may still exist: a crash between
/// provisioning and the status write leaves it unrecorded. So the cleanup
/// runs on the server placement picks now (it is deterministic, and both
/// cleanups are no-ops for a schema that never was); only a tenant that has
/// no resolvable server cannot have been provisioned anywhere.
pub async fn clean_up(tenant: &Tenant, ctx: &Context) -> Result<String> {
    let config = match placement(tenant, ctx) {
        Ok(config) => config,
        Err(error @ (Error::NoDatabaseServers | Error::UnknownDatabaseServer(_)))
            if tenant.status.as_ref().and_then(|s| s.database.as_ref()).is_none() =>
        {
            return Ok(format!("no database schema was provisioned ({error})"));
        }
        Err(error) => return Err(error),
    };
    let server = server_with_credentials(&config, ctx).await?;
    let (pool, _) = ctx.database_pool(&server);
    let name = tenant.name_any();
    let schema = ember_crds::names::schema_name_for(&name);
    let owner = ownership(tenant)?;
    let not_ours = || {
        format!(
            "left schema {schema} and its role on server {} alone: they were not created for this Tenant",
            config.name
        )
    };
    Ok(match tenant.spec.database.deletion_policy {
        DeletionPolicy::Delete => match database::drop_tenant_database(&pool, &owner, &name).await? {
            true => format!("dropped schema {schema} and its role on server {}", config.name),
            false => not_ours(),
        },
        DeletionPolicy::Retain => match database::retain_tenant_database(&pool, &owner, &name).await? {
            true => format!(
                "kept schema {schema} on server {} (deletionPolicy Retain); its role can no longer log in; \
                 a new Tenant of this name gets it only through the annotation {ADOPT_DATABASE}={}",
                config.name, owner.uid
            ),
            false => not_ours(),
        },
    })
}
