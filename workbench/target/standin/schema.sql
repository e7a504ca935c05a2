-- Schema of the workbench's stand-in certctl server.
--
-- Tables, columns, types, defaults, NOT NULLs, unique constraints and foreign keys follow
-- certctl's migrations (000001..000028, in their final shape after every ALTER), so that the
-- same seed fixtures load into the stand-in's database and into a real certctl database.
-- Only the tables the load scenarios touch are here. Every statement is idempotent because the
-- stand-in applies this file on each start, as certctl re-applies its migrations on each boot;
-- against a database certctl already migrated, it changes nothing.
-- Not reproduced: renewal_policies.agent_group_id (it needs certctl's agent_groups table).

CREATE TABLE IF NOT EXISTS teams (
    id          TEXT PRIMARY KEY,
    name        VARCHAR(255) NOT NULL UNIQUE,
    description TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_teams_name ON teams (name);

CREATE TABLE IF NOT EXISTS owners (
    id         TEXT PRIMARY KEY,
    name       VARCHAR(255) NOT NULL,
    email      VARCHAR(255) NOT NULL,
    team_id    TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_owners_email ON owners (email);
CREATE INDEX IF NOT EXISTS idx_owners_team_id ON owners (team_id);

-- Profiles come before renewal_policies and managed_certificates, which both point at them.
CREATE TABLE IF NOT EXISTS certificate_profiles (
    id                      TEXT PRIMARY KEY,
    name                    VARCHAR(255) NOT NULL UNIQUE,
    description             TEXT DEFAULT '',
    allowed_key_algorithms  JSONB NOT NULL
        DEFAULT '[{"algorithm": "ECDSA", "min_size": 256}, {"algorithm": "RSA", "min_size": 2048}]',
    max_ttl_seconds         INT NOT NULL DEFAULT 0,
    allowed_ekus            JSONB NOT NULL DEFAULT '["serverAuth"]',
    required_san_patterns   JSONB NOT NULL DEFAULT '[]',
    spiffe_uri_pattern      VARCHAR(512) DEFAULT '',
    allow_short_lived       BOOLEAN NOT NULL DEFAULT false,
    enabled                 BOOLEAN NOT NULL DEFAULT true,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    required_csr_attributes JSONB NOT NULL DEFAULT '[]',
    must_staple             BOOLEAN NOT NULL DEFAULT false,
    acme_auth_mode          TEXT NOT NULL DEFAULT 'trust_authenticated'
        CONSTRAINT certificate_profiles_acme_auth_mode_chk
        CHECK (acme_auth_mode IN ('trust_authenticated', 'challenge')),
    requires_approval       BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS idx_certificate_profiles_name ON certificate_profiles (name);
CREATE INDEX IF NOT EXISTS idx_certificate_profiles_enabled ON certificate_profiles (enabled);

-- certctl renamed retry_interval_minutes to retry_interval_seconds (values were always seconds).
CREATE TABLE IF NOT EXISTS renewal_policies (
    id                     TEXT PRIMARY KEY,
    name                   VARCHAR(255) NOT NULL UNIQUE,
    renewal_window_days    INT NOT NULL,
    auto_renew             BOOLEAN NOT NULL DEFAULT true,
    max_retries            INT NOT NULL DEFAULT 3,
    retry_interval_seconds INT NOT NULL DEFAULT 60,
    alert_thresholds_days  JSONB NOT NULL DEFAULT '[30, 14, 7, 0]',
    created_at             TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    certificate_profile_id TEXT REFERENCES certificate_profiles (id) ON DELETE SET NULL,
    alert_channels         JSONB NOT NULL DEFAULT '{}'::jsonb,
    alert_severity_map     JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS idx_renewal_policies_name ON renewal_policies (name);

CREATE TABLE IF NOT EXISTS issuers (
    id               TEXT PRIMARY KEY,
    name             VARCHAR(255) NOT NULL UNIQUE,
    type             VARCHAR(255) NOT NULL,
    config           JSONB,
    enabled          BOOLEAN NOT NULL DEFAULT true,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    encrypted_config BYTEA,
    last_tested_at   TIMESTAMPTZ,
    test_status      TEXT NOT NULL DEFAULT 'untested',
    source           TEXT NOT NULL DEFAULT 'database',
    hierarchy_mode   VARCHAR(20) NOT NULL DEFAULT 'single'
);
CREATE INDEX IF NOT EXISTS idx_issuers_name ON issuers (name);
CREATE INDEX IF NOT EXISTS idx_issuers_enabled ON issuers (enabled);

-- os/architecture/ip_address/version are nullable with '' defaults, as in certctl; a NULL there
-- makes certctl's row scan fail, and the stand-in answers 500 in that case too.
CREATE TABLE IF NOT EXISTS agents (
    id                TEXT PRIMARY KEY,
    name              VARCHAR(255) NOT NULL UNIQUE,
    hostname          VARCHAR(255) NOT NULL,
    status            VARCHAR(50) NOT NULL DEFAULT 'offline',
    last_heartbeat_at TIMESTAMPTZ,
    registered_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    api_key_hash      VARCHAR(255) NOT NULL,
    os                VARCHAR(100) DEFAULT '',
    architecture      VARCHAR(100) DEFAULT '',
    ip_address        VARCHAR(45) DEFAULT '',
    version           VARCHAR(50) DEFAULT '',
    retired_at        TIMESTAMPTZ,
    retired_reason    TEXT
);
-- Same index set as certctl: every heartbeat UPDATE pays for all of them (non-HOT updates).
CREATE INDEX IF NOT EXISTS idx_agents_status ON agents (status);
CREATE INDEX IF NOT EXISTS idx_agents_hostname ON agents (hostname);
CREATE INDEX IF NOT EXISTS idx_agents_last_heartbeat_at ON agents (last_heartbeat_at);
-- Lowercase 'online' is certctl's (it never matches the 'Online' rows); kept for equal write cost.
CREATE INDEX IF NOT EXISTS idx_agents_online_heartbeat
    ON agents (status, last_heartbeat_at) WHERE status = 'online';
CREATE INDEX IF NOT EXISTS idx_agents_os ON agents (os);
CREATE INDEX IF NOT EXISTS idx_agents_architecture ON agents (architecture);
CREATE INDEX IF NOT EXISTS idx_agents_retired_at ON agents (retired_at) WHERE retired_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS managed_certificates (
    id                     TEXT PRIMARY KEY,
    name                   VARCHAR(255) NOT NULL UNIQUE,
    common_name            VARCHAR(255) NOT NULL,
    sans                   TEXT[] DEFAULT ARRAY[]::TEXT[],
    environment            VARCHAR(50),
    owner_id               TEXT NOT NULL REFERENCES owners (id) ON DELETE RESTRICT,
    team_id                TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    issuer_id              TEXT NOT NULL REFERENCES issuers (id) ON DELETE RESTRICT,
    renewal_policy_id      TEXT NOT NULL REFERENCES renewal_policies (id) ON DELETE RESTRICT,
    status                 VARCHAR(50) NOT NULL DEFAULT 'pending',
    expires_at             TIMESTAMPTZ,
    tags                   JSONB NOT NULL DEFAULT '{}',
    last_renewal_at        TIMESTAMPTZ,
    last_deployment_at     TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    certificate_profile_id TEXT REFERENCES certificate_profiles (id) ON DELETE SET NULL,
    revoked_at             TIMESTAMPTZ,
    revocation_reason      VARCHAR(50),
    source                 TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS idx_managed_certificates_status ON managed_certificates (status);
CREATE INDEX IF NOT EXISTS idx_managed_certificates_expires_at ON managed_certificates (expires_at);
CREATE INDEX IF NOT EXISTS idx_managed_certificates_owner_id ON managed_certificates (owner_id);
CREATE INDEX IF NOT EXISTS idx_managed_certificates_team_id ON managed_certificates (team_id);
CREATE INDEX IF NOT EXISTS idx_managed_certificates_issuer_id ON managed_certificates (issuer_id);
CREATE INDEX IF NOT EXISTS idx_managed_certificates_name ON managed_certificates (name);
CREATE INDEX IF NOT EXISTS idx_managed_certificates_profile_id
    ON managed_certificates (certificate_profile_id);

-- agent_id is RESTRICT (certctl flipped it from CASCADE when agents became retirable).
CREATE TABLE IF NOT EXISTS deployment_targets (
    id               TEXT PRIMARY KEY,
    name             VARCHAR(255) NOT NULL,
    type             VARCHAR(255) NOT NULL,
    agent_id         TEXT NOT NULL
        CONSTRAINT deployment_targets_agent_id_fkey REFERENCES agents (id) ON DELETE RESTRICT,
    config           JSONB,
    enabled          BOOLEAN NOT NULL DEFAULT true,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    encrypted_config BYTEA,
    last_tested_at   TIMESTAMPTZ,
    test_status      TEXT NOT NULL DEFAULT 'untested',
    source           TEXT NOT NULL DEFAULT 'database',
    retired_at       TIMESTAMPTZ,
    retired_reason   TEXT
);
CREATE INDEX IF NOT EXISTS idx_deployment_targets_agent_id ON deployment_targets (agent_id);
CREATE INDEX IF NOT EXISTS idx_deployment_targets_enabled ON deployment_targets (enabled);
CREATE INDEX IF NOT EXISTS idx_deployment_targets_name ON deployment_targets (name);
CREATE UNIQUE INDEX IF NOT EXISTS idx_deployment_targets_agent_name
    ON deployment_targets (agent_id, name);
CREATE INDEX IF NOT EXISTS idx_deployment_targets_retired_at
    ON deployment_targets (retired_at) WHERE retired_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS certificate_target_mappings (
    certificate_id TEXT NOT NULL REFERENCES managed_certificates (id) ON DELETE CASCADE,
    target_id      TEXT NOT NULL REFERENCES deployment_targets (id) ON DELETE CASCADE,
    PRIMARY KEY (certificate_id, target_id)
);
CREATE INDEX IF NOT EXISTS idx_certificate_target_mappings_target_id
    ON certificate_target_mappings (target_id);

-- serial_number has no index in certctl; ARI lookups scan, and so do the stand-in's.
CREATE TABLE IF NOT EXISTS certificate_versions (
    id                 TEXT PRIMARY KEY,
    certificate_id     TEXT NOT NULL REFERENCES managed_certificates (id) ON DELETE CASCADE,
    serial_number      VARCHAR(255) NOT NULL,
    not_before         TIMESTAMPTZ NOT NULL,
    not_after          TIMESTAMPTZ NOT NULL,
    fingerprint_sha256 VARCHAR(255) NOT NULL UNIQUE,
    pem_chain          TEXT NOT NULL,
    csr_pem            TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    key_algorithm      VARCHAR(50) DEFAULT '',
    key_size           INT DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_certificate_versions_certificate_id
    ON certificate_versions (certificate_id);
CREATE INDEX IF NOT EXISTS idx_certificate_versions_fingerprint
    ON certificate_versions (fingerprint_sha256);
CREATE INDEX IF NOT EXISTS idx_certificate_versions_cert_created
    ON certificate_versions (certificate_id, created_at DESC);

CREATE TABLE IF NOT EXISTS jobs (
    id                       TEXT PRIMARY KEY,
    type                     VARCHAR(255) NOT NULL,
    certificate_id           TEXT REFERENCES managed_certificates (id) ON DELETE CASCADE,
    target_id                TEXT REFERENCES deployment_targets (id) ON DELETE SET NULL,
    agent_id                 TEXT REFERENCES agents (id) ON DELETE SET NULL,
    status                   VARCHAR(50) NOT NULL DEFAULT 'pending',
    attempts                 INT NOT NULL DEFAULT 0,
    max_attempts             INT NOT NULL DEFAULT 3,
    last_error               TEXT,
    deployment_result        JSONB,
    scheduled_at             TIMESTAMPTZ,
    started_at               TIMESTAMPTZ,
    completed_at             TIMESTAMPTZ,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    verification_status      TEXT DEFAULT 'pending',
    verified_at              TIMESTAMPTZ,
    verification_fingerprint TEXT,
    verification_error       TEXT
);
CREATE INDEX IF NOT EXISTS idx_jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS idx_jobs_certificate_id ON jobs (certificate_id);
CREATE INDEX IF NOT EXISTS idx_jobs_scheduled_at ON jobs (scheduled_at);
CREATE INDEX IF NOT EXISTS idx_jobs_agent_id ON jobs (agent_id);
CREATE INDEX IF NOT EXISTS idx_jobs_status_scheduled_at ON jobs (status, scheduled_at);
CREATE INDEX IF NOT EXISTS idx_jobs_verification_status ON jobs (verification_status);
CREATE INDEX IF NOT EXISTS idx_jobs_verified_at ON jobs (verified_at);

CREATE TABLE IF NOT EXISTS audit_events (
    id            TEXT PRIMARY KEY,
    actor         VARCHAR(255) NOT NULL,
    actor_type    VARCHAR(50) NOT NULL,
    action        VARCHAR(255) NOT NULL,
    resource_type VARCHAR(255) NOT NULL,
    resource_id   VARCHAR(255) NOT NULL,
    details       JSONB,
    timestamp     TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_audit_events_resource_type_id
    ON audit_events (resource_type, resource_id);
CREATE INDEX IF NOT EXISTS idx_audit_events_actor ON audit_events (actor);
CREATE INDEX IF NOT EXISTS idx_audit_events_timestamp ON audit_events (timestamp);
CREATE INDEX IF NOT EXISTS idx_audit_events_action ON audit_events (action);
CREATE INDEX IF NOT EXISTS idx_audit_events_timestamp_desc ON audit_events (timestamp DESC);

-- audit_events is write-once in certctl (a row trigger rejects UPDATE and DELETE; TRUNCATE still
-- works). Reproduced so cleanup code that works here also works against the real server.
CREATE OR REPLACE FUNCTION audit_events_block_modification() RETURNS TRIGGER AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only' USING ERRCODE = 'check_violation';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_events_worm_trigger ON audit_events;
CREATE TRIGGER audit_events_worm_trigger
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_block_modification();

-- Parent rows the load-test fixtures reference (certctl's demo seed and seed.sql have them).
INSERT INTO teams (id, name, description)
VALUES ('t-platform', 'Platform Engineering', 'Core infrastructure and platform services')
ON CONFLICT (id) DO NOTHING;

INSERT INTO owners (id, name, email, team_id)
VALUES ('o-alice', 'Alice Chen', 'alice@example.com', 't-platform')
ON CONFLICT (id) DO NOTHING;

INSERT INTO renewal_policies
    (id, name, renewal_window_days, auto_renew, max_retries, retry_interval_seconds,
     alert_thresholds_days)
VALUES
    ('rp-standard', 'Standard 30-day', 30, true, 3, 60, '[30, 14, 7, 0]'::jsonb),
    ('rp-default', 'default', 30, true, 3, 60, '[30, 14, 7, 0]'::jsonb)
ON CONFLICT (id) DO NOTHING;

INSERT INTO issuers (id, name, type, config, enabled)
VALUES ('iss-local', 'Local Dev CA', 'GenericCA',
        '{"ca_common_name": "CertCtl Demo CA", "validity_days": 90}'::jsonb, true)
ON CONFLICT (id) DO NOTHING;

INSERT INTO certificate_profiles
    (id, name, description, allowed_key_algorithms, max_ttl_seconds, allowed_ekus,
     required_san_patterns, spiffe_uri_pattern, allow_short_lived, enabled)
VALUES ('prof-standard-tls', 'Standard TLS', 'Default profile for web-facing TLS certificates.',
        '[{"algorithm": "ECDSA", "min_size": 256}, {"algorithm": "RSA", "min_size": 2048}]'::jsonb,
        7776000, '["serverAuth"]'::jsonb, '[]'::jsonb, '', false, true)
ON CONFLICT (id) DO NOTHING;

-- certctl's ACME server tables (migration 000025). None of the foreign keys cascade.
CREATE TABLE IF NOT EXISTS acme_accounts (
    account_id     TEXT PRIMARY KEY,
    jwk_thumbprint TEXT NOT NULL,
    jwk_pem        TEXT NOT NULL,
    contact        TEXT[],
    status         TEXT NOT NULL,
    profile_id     TEXT NOT NULL REFERENCES certificate_profiles (id),
    owner_id       TEXT REFERENCES owners (id),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (profile_id, jwk_thumbprint)
);
CREATE INDEX IF NOT EXISTS idx_acme_accounts_jwk_thumb ON acme_accounts (profile_id, jwk_thumbprint);
CREATE INDEX IF NOT EXISTS idx_acme_accounts_status ON acme_accounts (status) WHERE status = 'valid';

CREATE TABLE IF NOT EXISTS acme_orders (
    order_id       TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES acme_accounts (account_id),
    identifiers    JSONB NOT NULL,
    status         TEXT NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    not_before     TIMESTAMPTZ,
    not_after      TIMESTAMPTZ,
    error          JSONB,
    csr_pem        TEXT,
    certificate_id TEXT REFERENCES managed_certificates (id),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_acme_orders_account ON acme_orders (account_id);
CREATE INDEX IF NOT EXISTS idx_acme_orders_status
    ON acme_orders (status) WHERE status IN ('pending', 'ready', 'processing');
CREATE INDEX IF NOT EXISTS idx_acme_orders_expires ON acme_orders (expires_at);

CREATE TABLE IF NOT EXISTS acme_authorizations (
    authz_id   TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL REFERENCES acme_orders (order_id),
    identifier JSONB NOT NULL,
    status     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    wildcard   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_acme_authz_order ON acme_authorizations (order_id);
CREATE INDEX IF NOT EXISTS idx_acme_authz_status
    ON acme_authorizations (status) WHERE status IN ('pending', 'processing');

CREATE TABLE IF NOT EXISTS acme_challenges (
    challenge_id TEXT PRIMARY KEY,
    authz_id     TEXT NOT NULL REFERENCES acme_authorizations (authz_id),
    type         TEXT NOT NULL,
    status       TEXT NOT NULL,
    token        TEXT NOT NULL,
    validated_at TIMESTAMPTZ,
    error        JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_acme_challenges_authz ON acme_challenges (authz_id);

-- Nonces are global across profiles; used or expired rows stay until certctl's GC (which runs
-- only with CERTCTL_ACME_SERVER_ENABLED=true) deletes them. The stand-in has no GC.
CREATE TABLE IF NOT EXISTS acme_nonces (
    nonce      TEXT PRIMARY KEY,
    issued_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMPTZ NOT NULL,
    used       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS idx_acme_nonces_expires ON acme_nonces (expires_at) WHERE used = FALSE;
