-- Usage for billing: one row per tenant, deployment, caller, status class
-- and hour, to which every replica adds its counts in batches (see
-- api-server/src/usage/recorder.rs). Rows are only ever added to.
CREATE TABLE usage_hourly (
    -- Start of the UTC hour in which the calls finished.
    hour         timestamptz NOT NULL,
    tenant       text NOT NULL,
    deployment   text NOT NULL,
    -- `apikey:<id>` for an API key, else the user name the token proved;
    -- '*' for calls folded together while too many counters were pending.
    caller       text NOT NULL,
    -- The answer's status / 100: 2, 4 or 5 (1 and 3 do not occur in practice).
    status_class smallint NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    requests     bigint NOT NULL CHECK (requests >= 0),
    -- Texts, token rows or feature rows answered (the runtime's x-ember-items).
    items        bigint NOT NULL CHECK (items >= 0),
    -- Tokens the model read (x-ember-tokens; 0 for feature rows).
    tokens       bigint NOT NULL CHECK (tokens >= 0),
    -- The runtime's compute time in microseconds (x-ember-compute-us).
    compute_us   bigint NOT NULL CHECK (compute_us >= 0),
    PRIMARY KEY (tenant, hour, deployment, caller, status_class)
);

-- The platform-wide view reads all tenants by time.
CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour);

-- One row per batch applied: a retried batch whose commit answer was lost
-- finds its row and is not added twice. A replica id is random per process.
CREATE TABLE usage_batches (
    replica    text NOT NULL,
    sequence   bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (replica, sequence)
);

CREATE INDEX usage_batches_by_time ON usage_batches (applied_at);
