//! Creating, retaining and dropping one tenant's role and schema.
//!
//! Each function is a short sequence of DDL statements that converges from any starting state:
//! nothing, a complete tenant, or whatever a crash in the middle of an earlier run left behind.
//! PostgreSQL's DDL is transactional, so each function's changes commit together; and every
//! statement is written to be harmless when repeated (`IF [NOT] EXISTS`, `ALTER` to the full set of
//! attributes rather than a delta), so a retry after any failure simply runs it again.
//!
//! Concurrency: every transaction first takes a transaction-scoped advisory lock keyed by the
//! role name, so two operator replicas (or a retry overlapping a slow first attempt) never
//! interleave on one tenant. Changes to objects all tenants share (the database's ACL, the `public`
//! schema's ACL) take a second, server-wide advisory lock: PostgreSQL updates an object's whole ACL
//! row, and two concurrent transactions granting on the same object fail with "tuple concurrently
//! updated". Locks are always taken tenant first, then shared, so they cannot deadlock.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool};

use super::DatabaseError;
use super::identifiers::{TenantIdentifiers, quote_identifier, quote_literal};
use super::passwords::PasswordMemo;
use super::scram;

/// First key of Ember's advisory locks ("EMBR"), so they never collide with another
/// application's locks on the same server.
const LOCK_CLASS_TENANT: i32 = 0x454D_4252;
/// Lock class for changes to objects every tenant shares.
const LOCK_CLASS_SHARED: i32 = 0x454D_4253;

/// Longest wait for a lock (advisory or on a catalog object) before giving up and letting the
/// caller retry: better than a reconcile hanging behind a stuck session.
const LOCK_TIMEOUT: &str = "10s";

/// Upper bound for one whole call. The pool bounds connecting, `lock_timeout` bounds waiting for
/// locks; this also covers a server that accepted the connection and then went silent (a network
/// partition sends no reset), which would otherwise hang the reconcile.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Which Tenant object a role and schema belong to.
///
/// The operator stamps every role and schema it creates with a comment
/// carrying the Tenant's UID ([`marker`]), and touches only those: a role of
/// the tenant's name made by someone else, or kept (`deletionPolicy: Retain`)
/// from an earlier Tenant of the same name, is refused with
/// [`DatabaseError::NotOurs`] rather than taken over, so a Tenant's owners
/// can never receive the password of a role, or the data of a schema, that
/// was not made for their Tenant.
#[derive(Debug, Clone, Copy)]
pub struct Ownership<'a> {
    /// The Tenant's `metadata.uid`.
    pub uid: &'a str,
    /// The UID of an earlier Tenant whose retained role and schema this one
    /// may take over: a platform admin's explicit decision (the Tenant
    /// annotation `ember.dev/adopt-database`).
    pub adopt: Option<&'a str>,
    /// Unmarked objects are this Tenant's: its status already records the
    /// placement, so the operator provisioned them before markers existed.
    pub unmarked_are_ours: bool,
}

/// The comment on a role and schema made for the Tenant with `uid`.
pub fn marker(uid: &str) -> String {
    format!("{MARKER_PREFIX}{uid}")
}

const MARKER_PREFIX: &str = "ember.dev/tenant-uid=";

impl Ownership<'_> {
    /// Whether an existing object with `comment` may be used by this Tenant.
    fn owns(&self, comment: Option<&str>) -> bool {
        match comment.and_then(|c| c.strip_prefix(MARKER_PREFIX)) {
            Some(uid) => uid == self.uid || self.adopt == Some(uid),
            None => self.unmarked_are_ours,
        }
    }
}

/// What [`ensure_tenant_database`] provisioned: the names the tenant's Secret needs. The password is
/// the caller's (it stored it first), so it is not repeated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSchema {
    /// Login role (the user name in the connection URL).
    pub role: String,
    /// Schema the role owns; also its `search_path`.
    pub schema: String,
}

/// Makes the tenant's role and schema exist exactly as specified. Idempotent and crash-safe.
///
/// * The role is `LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS`, with
///   `CONNECTION LIMIT connection_limit`, no expiry, and `password` stored as a SCRAM-SHA-256
///   verifier computed here (the plain password never reaches the server, its logs or
///   `pg_stat_statements`). An existing role is altered to exactly these attributes, which also
///   re-enables login after a [`retain_tenant_database`].
/// * The password is set whenever the stored verifier was not made from it. The Kubernetes Secret
///   is the source of truth: the caller passes what it stored, which repairs drift and makes
///   rotation "write a new Secret, reconcile".
/// * When everything already is as described here (one read-only query, see [`in_order`]), nothing
///   is written at all. An admin that may not read `pg_authid` cannot check the password; it
///   relies on the operator's memory of what it set ([`PasswordMemo`]), so it sets each password
///   once per operator start.
/// * The schema exists, is owned by the role, and nobody else (not `PUBLIC`, not a role the owner
///   shared it with) has rights on it, so no other tenant can use it. The role is a member of no
///   other role than [`TENANTS_GROUP`]. Its `search_path` is its schema alone.
/// * Nobody but the owner may create in `public` (PostgreSQL 15's default, enforced here for older
///   servers and for servers where someone granted it), and the role holds no rights of its own there.
/// * The role holds `CONNECT` on the database through [`TENANTS_GROUP`], so the server admin may
///   revoke `CONNECT` and `TEMPORARY` from `PUBLIC` (recommended for a database dedicated to
///   tenants) without breaking tenants. This function leaves `PUBLIC`'s database privileges alone: they decide who
///   else may use the database, which is the server admin's call, not one tenant's.
pub async fn ensure_tenant_database(
    pool: &PgPool,
    owner: &Ownership<'_>,
    tenant: &str,
    connection_limit: i32,
    password: &str,
) -> Result<TenantSchema, DatabaseError> {
    ensure_tenant_database_remembered(pool, &PasswordMemo::default(), owner, tenant, connection_limit, password).await
}

/// [`ensure_tenant_database`] with the operator's memory of the passwords
/// it set on this server ([`PasswordMemo`]): the password check of the
/// steady state then costs no PBKDF2 run, and with an admin that may not
/// read `pg_authid`, no write.
pub async fn ensure_tenant_database_remembered(
    pool: &PgPool,
    passwords: &PasswordMemo,
    owner: &Ownership<'_>,
    tenant: &str,
    connection_limit: i32,
    password: &str,
) -> Result<TenantSchema, DatabaseError> {
    bounded(ensure(pool, passwords, owner, tenant, connection_limit, password)).await
}

async fn ensure(
    pool: &PgPool,
    passwords: &PasswordMemo,
    owner: &Ownership<'_>,
    tenant: &str,
    connection_limit: i32,
    password: &str,
) -> Result<TenantSchema, DatabaseError> {
    let ids = TenantIdentifiers::for_tenant(tenant)?;
    if connection_limit < 1 {
        // -1 would mean unlimited and 0 would lock the tenant out; neither is a limit.
        return Err(DatabaseError::InvalidConnectionLimit(connection_limit));
    }
    if password.is_empty() {
        return Err(DatabaseError::InvalidLiteral { reason: "the password is empty" });
    }
    if !password.is_ascii() {
        // PostgreSQL would SASLprep a non-ASCII password before hashing; we do not, so refuse
        // rather than store a verifier the server's login check might not match.
        return Err(DatabaseError::InvalidLiteral { reason: "the password is not ASCII" });
    }
    // The steady state: one read-only query finds everything as it should
    // be, and nothing is written (no transaction id, no catalog row, no
    // lock), so an idle operator costs the server only that read.
    if in_order(pool, passwords, owner, &ids, connection_limit, password).await? {
        return Ok(TenantSchema { role: ids.role, schema: ids.schema });
    }
    let verifier = scram::verifier(password);
    let quoted_verifier = quote_literal(&verifier)?;
    let (role, schema) = (&ids.quoted_role, &ids.quoted_schema);

    let mut tx = pool.begin().await.map_err(|e| DatabaseError::from_sqlx("connecting", e))?;
    lock(&mut tx, LOCK_CLASS_TENANT, &ids.role).await?;

    let attributes = format!(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT \
         CONNECTION LIMIT {connection_limit} VALID UNTIL 'infinity' PASSWORD {quoted_verifier}"
    );
    let existing = Existing::read(&mut tx, &ids).await?;
    existing.check(owner, &ids)?;
    let role_exists = existing.role.is_some();
    let role_ddl = if role_exists {
        format!("ALTER ROLE {role} WITH {attributes}")
    } else {
        format!("CREATE ROLE {role} WITH {attributes}")
    };
    execute(&mut tx, "creating or updating the role", &role_ddl).await?;
    leave_other_roles(&mut tx, &ids).await?;

    execute(&mut tx, "creating the schema", &format!("CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}"))
        .await?;
    // A schema left behind by someone else (or restored from a dump) may have another owner.
    execute(&mut tx, "setting the schema owner", &format!("ALTER SCHEMA {schema} OWNER TO {role}")).await?;
    execute(&mut tx, "closing the schema to others", &format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")).await?;
    revoke_schema_grants(&mut tx, &ids).await?;
    execute(&mut tx, "setting the search path", &format!("ALTER ROLE {role} SET search_path = {schema}")).await?;

    ensure_shared_grants(&mut tx, &ids).await?;

    // Stamped in the same transaction that creates them, so no crash can
    // leave an object of ours unmarked. Written only when it differs.
    let stamp = marker(owner.uid);
    if existing.role.as_ref().and_then(Option::as_deref) != Some(stamp.as_str()) {
        let comment = format!("COMMENT ON ROLE {role} IS {}", quote_literal(&stamp)?);
        execute(&mut tx, "marking the role", &comment).await?;
    }
    if existing.schema.as_ref().and_then(Option::as_deref) != Some(stamp.as_str()) {
        let comment = format!("COMMENT ON SCHEMA {schema} IS {}", quote_literal(&stamp)?);
        execute(&mut tx, "marking the schema", &comment).await?;
    }

    tx.commit().await.map_err(|e| DatabaseError::from_sqlx("committing", e))?;
    passwords.remember(&ids.role, password, &verifier);
    Ok(TenantSchema { role: ids.role, schema: ids.schema })
}

/// The role every tenant role is a member of, and through which it holds
/// `CONNECT` on the database: one entry in the database's ACL for all
/// tenants instead of one per tenant (an ACL PostgreSQL rewrites whole, and
/// every check reads whole, on each grant). It owns nothing and holds
/// nothing else. (One text for Rust and for the SQL below.)
macro_rules! tenants_group {
    () => {
        "ember_tenants"
    };
}
pub const TENANTS_GROUP: &str = tenants_group!();

/// SQL condition, for the role `r`: the shared grants are as
/// [`ensure_shared_grants`] leaves them — the role is a member of
/// [`TENANTS_GROUP`], which holds `CONNECT` on the database; the role holds
/// nothing on the database directly (earlier versions granted it there);
/// no `CREATE` on `public` for `PUBLIC`, nothing on `public` for the role.
/// One text for the read-only check ([`in_order`]) and the write path's own.
macro_rules! shared_grants_in_order {
    () => {
        concat!(
            "(EXISTS (
                 SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                 WHERE m.member = r.oid AND g.rolname = '",
            tenants_group!(),
            "')
             AND EXISTS (
                 SELECT 1 FROM pg_database d, pg_roles g, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                 WHERE d.datname = current_database() AND g.rolname = '",
            tenants_group!(),
            "' AND a.grantee = g.oid AND a.privilege_type = 'CONNECT')
             AND NOT EXISTS (
                 SELECT 1 FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                 WHERE d.datname = current_database() AND a.grantee = r.oid)
             AND NOT EXISTS (
                 SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                 WHERE n.nspname = 'public'
                   AND ((a.grantee = 0 AND a.privilege_type = 'CREATE') OR a.grantee = r.oid)))"
        )
    };
}

/// Whether the role and schema are exactly as [`ensure_tenant_database`]
/// leaves them, read without writing anything. The password counts as in
/// order when the admin may read `pg_authid` (a superuser) and the stored
/// verifier was made from `password`; an admin that may not read it relies
/// on `passwords`, the operator's memory of what it set.
async fn in_order(
    pool: &PgPool,
    passwords: &PasswordMemo,
    owner: &Ownership<'_>,
    ids: &TenantIdentifiers,
    connection_limit: i32,
    password: &str,
) -> Result<bool, DatabaseError> {
    const IN_ORDER: &str = concat!(
        "
        SELECT r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolcreatedb AND NOT r.rolcreaterole
               AND NOT r.rolreplication AND NOT r.rolbypassrls AND r.rolinherit
               AND r.rolconnlimit = $3 AND r.rolvaliduntil = 'infinity'
               AND shobj_description(r.oid, 'pg_authid') IS NOT DISTINCT FROM $4
               AND NOT EXISTS (
                   SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                   WHERE m.member = r.oid AND g.rolname <> '",
        tenants_group!(),
        "')
               AND EXISTS (
                   SELECT 1 FROM pg_namespace n
                   WHERE n.nspname = $2 AND n.nspowner = r.oid
                     AND obj_description(n.oid, 'pg_namespace') IS NOT DISTINCT FROM $4
                     AND NOT EXISTS (
                         SELECT 1 FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                         WHERE a.grantee <> n.nspowner))
               AND EXISTS (
                   SELECT 1 FROM pg_db_role_setting s
                   WHERE s.setrole = r.oid AND s.setdatabase = 0
                     AND s.setconfig = ARRAY['search_path=' || quote_ident($2)])
               AND ",
        shared_grants_in_order!(),
        ",
               (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
        FROM pg_roles r WHERE r.rolname = $1"
    );
    let mut conn = pool.acquire().await.map_err(|e| DatabaseError::from_sqlx("connecting", e))?;
    let found: Option<(bool, bool)> = sqlx::query_as(IN_ORDER)
        .bind(&ids.role)
        .bind(&ids.schema)
        .bind(connection_limit)
        .bind(marker(owner.uid))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| DatabaseError::from_sqlx("checking the role and schema", e))?;
    let Some((true, may_read_passwords)) = found else { return Ok(false) };
    if !may_read_passwords {
        return Ok(passwords.was_set(&ids.role, password));
    }
    let stored: Option<String> = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&ids.role)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| DatabaseError::from_sqlx("checking the password", e))?
        .flatten();
    Ok(stored.is_some_and(|stored| passwords.stored_matches(&ids.role, &stored, password)))
}

/// The tenant's role and schema as found: `None` when absent, else the
/// comment each carries.
struct Existing {
    role: Option<Option<String>>,
    schema: Option<Option<String>>,
}

impl Existing {
    /// One catalog round trip for both objects.
    async fn read(tx: &mut PgConnection, ids: &TenantIdentifiers) -> Result<Self, DatabaseError> {
        let (role_exists, role_comment, schema_exists, schema_comment): (bool, Option<String>, bool, Option<String>) =
            sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
                        (SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1),
                        EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $2),
                        (SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $2)",
            )
            .bind(&ids.role)
            .bind(&ids.schema)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| DatabaseError::from_sqlx("reading the role and schema", e))?;
        Ok(Self { role: role_exists.then_some(role_comment), schema: schema_exists.then_some(schema_comment) })
    }

    /// Refuses when the role or schema exists and is not the Tenant's.
    fn check(&self, owner: &Ownership<'_>, ids: &TenantIdentifiers) -> Result<(), DatabaseError> {
        for (kind, name, found) in [("role", &ids.role, &self.role), ("schema", &ids.schema, &self.schema)] {
            if let Some(comment) = found
                && !owner.owns(comment.as_deref())
            {
                return Err(DatabaseError::NotOurs {
                    kind,
                    name: name.clone(),
                    holder: comment.as_deref().and_then(|c| c.strip_prefix(MARKER_PREFIX)).map(str::to_owned),
                });
            }
        }
        Ok(())
    }

    /// True when everything that exists is the Tenant's (absent is fine).
    fn all_ours(&self, owner: &Ownership<'_>) -> bool {
        [&self.role, &self.schema].into_iter().flatten().all(|comment| owner.owns(comment.as_deref()))
    }
}

/// Grants and revocations on objects every tenant shares: membership in
/// [`TENANTS_GROUP`] (made, with `CONNECT` on the database, by the first
/// tenant that needs it), no direct grant on the database, no `CREATE` on
/// `public` for anyone but its owner, nothing on `public` for the role.
///
/// Each part is checked before written, so the steady state writes no
/// catalog row; the parts that change shared rows (the group, the
/// database's and `public`'s ACLs) are written only under the shared lock
/// (see the module header for why). Joining the group adds a row of its
/// own and needs no lock.
///
/// On PostgreSQL 16 and later the membership is `SET FALSE`: a tenant role
/// inherits the group's `CONNECT` but cannot act as the group. On 15 it can
/// (`SET ROLE ember_tenants`), which gives it nothing: the group may create
/// in no schema and owns nothing.
async fn ensure_shared_grants(tx: &mut PgConnection, ids: &TenantIdentifiers) -> Result<(), DatabaseError> {
    const NEEDS_WORK: &str =
        concat!("SELECT NOT (", shared_grants_in_order!(), ") FROM pg_roles r WHERE r.rolname = $1");
    if !exists(tx, NEEDS_WORK, &ids.role).await? {
        return Ok(());
    }
    const STATE: &str = concat!(
        "SELECT
           EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '",
        tenants_group!(),
        "'),
           EXISTS (SELECT 1 FROM pg_database d, pg_roles g, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                   WHERE d.datname = current_database() AND g.rolname = '",
        tenants_group!(),
        "' AND a.grantee = g.oid AND a.privilege_type = 'CONNECT'),
           EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                   WHERE m.member = r.oid AND g.rolname = '",
        tenants_group!(),
        "'),
           EXISTS (SELECT 1 FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                   WHERE d.datname = current_database() AND a.grantee = r.oid),
           EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                   WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE'),
           EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                   WHERE n.nspname = 'public' AND a.grantee = r.oid),
           current_setting('server_version_num')::int >= 160000,
           current_database()::text
         FROM pg_roles r WHERE r.rolname = $1"
    );
    #[allow(clippy::type_complexity)]
    let (group_exists, group_connects, member, direct_grant, public_create, role_on_public, set_option, database): (
        bool,
        bool,
        bool,
        bool,
        bool,
        bool,
        bool,
        String,
    ) = sqlx::query_as(STATE)
        .bind(&ids.role)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| DatabaseError::from_sqlx("reading the shared grants", e))?;
    let (role, group, database) = (&ids.quoted_role, quote_identifier(TENANTS_GROUP)?, quote_identifier(&database)?);

    if !group_exists || !group_connects || direct_grant || public_create || role_on_public {
        lock(tx, LOCK_CLASS_SHARED, "shared").await?;
    }
    if !group_exists {
        // Under the shared lock; another replica may have made it just before.
        let create = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) THEN \
             CREATE ROLE {group} NOLOGIN NOINHERIT; END IF; END $$",
            quote_literal(TENANTS_GROUP)?
        );
        execute(tx, "creating the tenants' group", &create).await?;
    }
    if !group_connects {
        execute(
            tx,
            "granting CONNECT to the tenants' group",
            &format!("GRANT CONNECT ON DATABASE {database} TO {group}"),
        )
        .await?;
    }
    if !member {
        let options = if set_option { " WITH INHERIT TRUE, SET FALSE" } else { "" };
        execute(tx, "joining the tenants' group", &format!("GRANT {group} TO {role}{options}")).await?;
    }
    if direct_grant {
        let revoke = format!("REVOKE ALL ON DATABASE {database} FROM {role}");
        execute(tx, "revoking the role's own grant on the database", &revoke).await?;
    }
    if public_create {
        execute(tx, "closing the public schema", "REVOKE CREATE ON SCHEMA public FROM PUBLIC").await?;
    }
    if role_on_public {
        execute(tx, "closing the public schema to the role", &format!("REVOKE ALL ON SCHEMA public FROM {role}"))
            .await?;
    }
    Ok(())
}

/// For `deletionPolicy: Retain`: keeps schema and data, disables the role's login and ends its
/// open sessions. Idempotent; a missing role is fine. A later [`ensure_tenant_database`] brings the
/// tenant back with its data.
///
/// Returns false, touching nothing, when the role or schema is not the
/// Tenant's (see [`Ownership`]).
pub async fn retain_tenant_database(pool: &PgPool, owner: &Ownership<'_>, tenant: &str) -> Result<bool, DatabaseError> {
    let ids = TenantIdentifiers::for_tenant(tenant)?;
    bounded(async {
        if !is_ours(pool, owner, &ids).await? {
            return Ok(false);
        }
        disable_login(pool, &ids).await?;
        terminate_sessions(pool, &ids).await?;
        Ok(true)
    })
    .await
}

/// Whether the tenant's role and schema, where they exist, are `owner`'s.
async fn is_ours(pool: &PgPool, owner: &Ownership<'_>, ids: &TenantIdentifiers) -> Result<bool, DatabaseError> {
    let mut conn = pool.acquire().await.map_err(|e| DatabaseError::from_sqlx("connecting", e))?;
    Ok(Existing::read(&mut conn, ids).await?.all_ours(owner))
}

/// For `deletionPolicy: Delete`: ends the role's sessions, drops its schema with everything in it,
/// whatever else it owns or was granted in this database, and the role. Idempotent; already gone is
/// fine.
///
/// Login is disabled (and committed) before sessions are ended, so none can come back between the
/// termination and the drop. Objects and grants the role might hold in *other* databases of the
/// same server are not ours to touch; `DROP ROLE` then fails with a message naming them.
///
/// Returns false, touching nothing, when the role or schema is not the
/// Tenant's (see [`Ownership`]).
pub async fn drop_tenant_database(pool: &PgPool, owner: &Ownership<'_>, tenant: &str) -> Result<bool, DatabaseError> {
    let ids = TenantIdentifiers::for_tenant(tenant)?;
    bounded(async {
        if !is_ours(pool, owner, &ids).await? {
            return Ok(false);
        }
        drop_existing(pool, &ids).await?;
        Ok(true)
    })
    .await
}

async fn drop_existing(pool: &PgPool, ids: &TenantIdentifiers) -> Result<(), DatabaseError> {
    disable_login(pool, ids).await?;
    terminate_sessions(pool, ids).await?;

    let mut tx = pool.begin().await.map_err(|e| DatabaseError::from_sqlx("connecting", e))?;
    lock(&mut tx, LOCK_CLASS_TENANT, &ids.role).await?;
    // DROP OWNED revokes the role's grants, among them CONNECT on the shared database row.
    lock(&mut tx, LOCK_CLASS_SHARED, "shared").await?;
    let (role, schema) = (&ids.quoted_role, &ids.quoted_schema);
    execute(&mut tx, "dropping the schema", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
    if exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", &ids.role).await? {
        execute(&mut tx, "dropping what the role owns", &format!("DROP OWNED BY {role} CASCADE")).await?;
        execute(&mut tx, "dropping the role", &format!("DROP ROLE {role}")).await?;
    }
    tx.commit().await.map_err(|e| DatabaseError::from_sqlx("committing", e))
}

/// Revokes every role membership the tenant role holds besides [`TENANTS_GROUP`]. A role of that
/// name that existed before (made by hand, or restored) might carry e.g. `pg_read_all_data` or
/// another tenant's role, which would undo the isolation.
async fn leave_other_roles(tx: &mut PgConnection, ids: &TenantIdentifiers) -> Result<(), DatabaseError> {
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
         WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1) AND g.rolname <> $2",
    )
    .bind(&ids.role)
    .bind(TENANTS_GROUP)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| DatabaseError::from_sqlx("reading the role's memberships", e))?;
    for group in groups {
        let revoke = format!("REVOKE {} FROM {}", quote_identifier(&group)?, ids.quoted_role);
        execute(tx, "revoking a role membership", &revoke).await?;
    }
    Ok(())
}

/// Revokes every right on the schema held by anyone but its owner. The owner may have shared it,
/// or the schema predates the tenant; either way tenants are isolated, and this is what keeps them
/// so. (Rights on tables inside are harmless without `USAGE` on the schema.)
async fn revoke_schema_grants(tx: &mut PgConnection, ids: &TenantIdentifiers) -> Result<(), DatabaseError> {
    let grantees: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT g.rolname::text FROM pg_namespace n, aclexplode(n.nspacl) a JOIN pg_roles g ON g.oid = a.grantee
         WHERE n.nspname = $1 AND a.grantee <> n.nspowner",
    )
    .bind(&ids.schema)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| DatabaseError::from_sqlx("reading the schema's grants", e))?;
    for grantee in grantees {
        let revoke = format!("REVOKE ALL ON SCHEMA {} FROM {} CASCADE", ids.quoted_schema, quote_identifier(&grantee)?);
        execute(tx, "revoking a schema grant", &revoke).await?;
    }
    Ok(())
}

/// Runs `work` within [`OPERATION_TIMEOUT`]; running out means the server stopped answering.
async fn bounded<T>(work: impl Future<Output = Result<T, DatabaseError>>) -> Result<T, DatabaseError> {
    tokio::time::timeout(OPERATION_TIMEOUT, work).await.unwrap_or_else(|_| {
        Err(DatabaseError::Unreachable {
            step: "waiting for the server",
            message: format!("no answer within {}s", OPERATION_TIMEOUT.as_secs()),
        })
    })
}

async fn disable_login(pool: &PgPool, ids: &TenantIdentifiers) -> Result<(), DatabaseError> {
    let mut tx = pool.begin().await.map_err(|e| DatabaseError::from_sqlx("connecting", e))?;
    lock(&mut tx, LOCK_CLASS_TENANT, &ids.role).await?;
    if exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", &ids.role).await? {
        execute(&mut tx, "disabling login", &format!("ALTER ROLE {} NOLOGIN", ids.quoted_role)).await?;
    }
    tx.commit().await.map_err(|e| DatabaseError::from_sqlx("committing", e))
}

/// Ends every session of the role, waiting (bounded) until each is gone so a following `DROP`
/// does not queue behind their locks.
async fn terminate_sessions(pool: &PgPool, ids: &TenantIdentifiers) -> Result<(), DatabaseError> {
    sqlx::query("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1")
        .bind(&ids.role)
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| DatabaseError::from_sqlx("ending the role's sessions", e))
}

/// Takes a transaction-scoped advisory lock on `(class, hashtext(key))` after bounding lock waits.
async fn lock(tx: &mut PgConnection, class: i32, key: &str) -> Result<(), DatabaseError> {
    execute(tx, "setting the lock timeout", &format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(class)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map(drop)
        .map_err(|e| DatabaseError::from_sqlx("taking the tenant lock", e))
}

/// Runs a boolean query with one text parameter; a query that returns no row counts as false.
async fn exists(tx: &mut PgConnection, sql: &str, name: &str) -> Result<bool, DatabaseError> {
    sqlx::query_scalar::<_, bool>(sql)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map(|found| found.unwrap_or(false))
        .map_err(|e| DatabaseError::from_sqlx("reading the catalog", e))
}

/// Runs one DDL statement over the simple query protocol: DDL takes no parameters, and this way the
/// statement (which may hold a password verifier) is not kept in sqlx's prepared-statement cache.
async fn execute(tx: &mut PgConnection, step: &'static str, sql: &str) -> Result<(), DatabaseError> {
    // `Executor::execute` with a plain `&str` and no arguments also uses the simple protocol, and
    // unlike `sqlx::raw_sql` its future is `Send` for every lifetime, which the controller needs.
    sqlx::Executor::execute(&mut *tx, sql).await.map(drop).map_err(|e| DatabaseError::from_sqlx(step, e))
}
