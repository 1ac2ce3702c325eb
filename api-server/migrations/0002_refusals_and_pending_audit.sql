-- Refused credentials are counted, not logged one row per attempt: a flood
-- of bogus keys adds at most one row per source, key id, reason and minute.
CREATE TABLE auth_refusals (
    minute   timestamptz NOT NULL,
    -- The peer address the attempts came from.
    source   text NOT NULL,
    -- The key id the attempt named ('' when it named none); never a secret.
    key_id   text NOT NULL,
    reason   text NOT NULL,
    attempts bigint NOT NULL CHECK (attempts > 0),
    PRIMARY KEY (minute, source, key_id, reason)
);

-- Retention sweeps delete by age.
CREATE INDEX audit_log_by_time ON audit_log (at);
