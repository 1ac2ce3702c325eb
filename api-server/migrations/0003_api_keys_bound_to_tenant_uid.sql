-- API keys are bound to the Tenant object (its UID), not only its name, and
-- remember the groups their creator had: a key stops working when its
-- Tenant is deleted (even if one of the same name is created again) and
-- when its creator no longer administers the tenant. Keys issued before
-- this have no UID and are refused; issue new ones.
ALTER TABLE api_keys
    ADD COLUMN tenant_uid text,
    ADD COLUMN creator_groups text[] NOT NULL DEFAULT '{}',
    ADD COLUMN revoked_reason text;
