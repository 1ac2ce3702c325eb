-- ember-api's platform tables. Applied in order by sqlx at start-up; never
-- edit an applied file (sqlx checks checksums), add a new one.

CREATE TABLE api_keys (
    -- Public id, part of the key (`ek_<id>_<secret>`), safe to log.
    id            text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
    tenant        text NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role          text NOT NULL CHECK (role IN ('view', 'edit')),
    -- SHA-256 of the 256-bit random secret; the secret itself is never stored.
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant);

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    -- NULL when the request named no tenant we could attribute it to.
    tenant     text,
    -- User name, or `apikey:<id>`; never a token or secret.
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text,
    outcome    text NOT NULL,
    request_id text
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant, id DESC);
