-- The browser login round-trip of private apps (apps-and-routing.md §5).
-- One-time codes: minted by the console for one user, app host and return URL; 60 s, single use.
CREATE TABLE app_auth_codes (
    code_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- The console session that minted it; app sessions die with it.
    session_id TEXT NOT NULL,
    app_host TEXT NOT NULL,
    return_to TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- App-host sessions behind the `rigbox_app_session` cookie: 12 h, host-bound.
CREATE TABLE app_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    app_host TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX app_sessions_session ON app_sessions(session_id);
