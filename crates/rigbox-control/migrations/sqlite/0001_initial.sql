-- Rigbox control-plane schema, version 1.
-- Portable SQL: the same statements run on SQLite and PostgreSQL. Times are Unix microseconds
-- (BIGINT) so that ordering and arithmetic are exact on both engines.

CREATE TABLE users (
    id                   TEXT PRIMARY KEY,
    email                TEXT NOT NULL UNIQUE,
    name                 TEXT,
    password_hash        TEXT NOT NULL,
    email_verified       BOOLEAN NOT NULL,
    plan                 TEXT NOT NULL,
    limit_overrides      TEXT,
    disabled             BOOLEAN NOT NULL DEFAULT FALSE,
    default_region       TEXT,
    settings_updated_at  BIGINT NOT NULL,
    -- Bumped by every quota-checked mutation: taking the user's row first serializes them.
    quota_version        BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    key_preview   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);
CREATE INDEX api_keys_user ON api_keys(user_id, created_at);

CREATE TABLE ssh_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    key_type      TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    comment       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    UNIQUE (user_id, fingerprint)
);

CREATE TABLE cli_sessions (
    code              TEXT PRIMARY KEY,
    user_code         TEXT NOT NULL,
    poll_secret_hash  TEXT NOT NULL,
    client_name       TEXT,
    status            TEXT NOT NULL,
    user_id           TEXT REFERENCES users(id) ON DELETE CASCADE,
    -- The approved key's plaintext lives here only until the first poll consumes it.
    api_key_plain     TEXT,
    api_key_id        TEXT,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    status             TEXT NOT NULL,
    template_id        TEXT NOT NULL,
    image              TEXT NOT NULL,
    region             TEXT NOT NULL,
    node_id            TEXT NOT NULL,
    ip_address         TEXT,
    ram_mb             BIGINT NOT NULL,
    vcpu_count         BIGINT NOT NULL,
    disk_size_mb       BIGINT NOT NULL,
    -- Desired state for the node (rigbox_types::node::DesiredState) and its generation.
    desired_state      TEXT NOT NULL,
    generation         BIGINT NOT NULL,
    force_delete       BOOLEAN NOT NULL DEFAULT FALSE,
    failure_code       TEXT,
    failure_message    TEXT,
    failure_retryable  BOOLEAN,
    failure_at         BIGINT,
    failure_attempts   BIGINT NOT NULL DEFAULT 0,
    -- 'provision' or 'start': the step a retry repeats.
    failed_step        TEXT,
    stop_reason        TEXT,
    -- Status a start came from, restored by cancel.
    start_from         TEXT,
    restart_pending    BOOLEAN NOT NULL DEFAULT FALSE,
    status_changed_at  BIGINT NOT NULL,
    env_updated_at     BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    started_at         BIGINT,
    stopped_at         BIGINT,
    UNIQUE (user_id, name)
);
CREATE INDEX workspaces_user ON workspaces(user_id, created_at);
CREATE INDEX workspaces_node ON workspaces(node_id);

CREATE TABLE workspace_env (
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);

CREATE TABLE ledger (
    id                   TEXT PRIMARY KEY,
    user_id              TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq                  BIGINT NOT NULL,
    kind                 TEXT NOT NULL,
    amount_micro         BIGINT NOT NULL,
    balance_after_micro  BIGINT NOT NULL,
    period_start         BIGINT NOT NULL,
    note                 TEXT,
    created_at           BIGINT NOT NULL,
    UNIQUE (user_id, seq)
);
