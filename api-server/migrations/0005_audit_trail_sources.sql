-- The audit trail also records changes made through the Kubernetes API
-- (kubectl, Argo CD, Flux), seen on ember-api's watches: where an entry
-- came from, and for those the object's UID and generation. Every replica
-- watches, and a restart sees every object again: one row per object,
-- generation and action, whoever inserts it first.
ALTER TABLE audit_log
    ADD COLUMN source text NOT NULL DEFAULT 'rest' CHECK (source IN ('rest', 'kubernetes')),
    ADD COLUMN object_uid text,
    ADD COLUMN generation bigint;
CREATE UNIQUE INDEX audit_log_one_row_per_observed_change
    ON audit_log (object_uid, generation, action) WHERE source = 'kubernetes';
-- Platform-wide reading pages by id across all tenants.
CREATE INDEX audit_log_by_action ON audit_log (action, id DESC);
