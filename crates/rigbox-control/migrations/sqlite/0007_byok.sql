-- BYOK mode (bridge-and-ai.md §12, api.md `PUT /users/me/ai-mode`, `…/ai-config`).

-- The account's AI mode: 'managed' or 'byok'.
ALTER TABLE users ADD COLUMN ai_mode TEXT NOT NULL DEFAULT 'managed';
-- A workspace's override of it; NULL = inherit the account's mode.
ALTER TABLE workspaces ADD COLUMN ai_mode TEXT;

-- A workspace's own provider, model and provider key. `api_key_sealed` is the key sealed with
-- the operator's master key (ChaCha20-Poly1305, the workspace ID as associated data; see
-- src/sealing.rs), never the plaintext. `updated_at` moves with every change of the
-- workspace's AI configuration, its mode override included.
CREATE TABLE workspace_ai (
    workspace_id    TEXT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    provider        TEXT,
    model           TEXT,
    api_key_sealed  TEXT,
    updated_at      BIGINT NOT NULL
);
