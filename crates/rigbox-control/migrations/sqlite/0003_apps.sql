-- Apps: `<name>.<base-domain>` routed to a port of a workspace (apps-and-routing.md).
CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    -- Globally unique: it is the host label.
    name TEXT NOT NULL UNIQUE,
    port BIGINT NOT NULL,
    protocol TEXT NOT NULL,
    visibility TEXT NOT NULL,
    -- JSON array of lowercased emails.
    allowed_emails TEXT NOT NULL,
    status TEXT NOT NULL,
    description TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX apps_user ON apps(user_id, created_at, id);
CREATE INDEX apps_workspace ON apps(workspace_id);
