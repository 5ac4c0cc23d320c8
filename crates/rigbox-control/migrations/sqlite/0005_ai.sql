-- Managed AI (bridge-and-ai.md §7–9): charge details on the ledger and per-request holds.

-- A `charge` entry names what was charged; `workspace_name` keeps the name a deleted workspace
-- had, for `GET /users/me/ai-usage`.
ALTER TABLE ledger ADD COLUMN workspace_id TEXT;
ALTER TABLE ledger ADD COLUMN workspace_name TEXT;
ALTER TABLE ledger ADD COLUMN request_id TEXT;
ALTER TABLE ledger ADD COLUMN endpoint TEXT;
ALTER TABLE ledger ADD COLUMN model TEXT;
ALTER TABLE ledger ADD COLUMN input_tokens BIGINT;
ALTER TABLE ledger ADD COLUMN output_tokens BIGINT;
ALTER TABLE ledger ADD COLUMN cost_usd DOUBLE PRECISION;
ALTER TABLE ledger ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE ledger ADD COLUMN subject TEXT;
-- A request is charged at most once, whatever settles it (proxy, drain, reconciler).
CREATE UNIQUE INDEX ledger_request ON ledger(request_id) WHERE request_id IS NOT NULL;
CREATE INDEX ledger_charges ON ledger(user_id, created_at) WHERE kind = 'charge';
CREATE INDEX ledger_subjects ON ledger(user_id, subject, created_at) WHERE subject IS NOT NULL;

-- One hold per metered request, created at admission: `open` until it moves exactly once to
-- `settled` (with its ledger charge, in the same transaction) or `released`.
CREATE TABLE ai_holds (
    id              TEXT PRIMARY KEY,      -- the request ID (X-Rigbox-Request-Id)
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    workspace_id    TEXT NOT NULL,
    workspace_name  TEXT NOT NULL,
    node_id         TEXT NOT NULL,
    -- The proxy process that admitted it; another incarnation's open holds are orphans.
    incarnation     TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    model           TEXT,
    subject         TEXT,
    amount_micro    BIGINT NOT NULL,
    state           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    closed_at       BIGINT
);
CREATE INDEX ai_holds_open ON ai_holds(user_id) WHERE state = 'open';
CREATE INDEX ai_holds_open_age ON ai_holds(created_at) WHERE state = 'open';
CREATE INDEX ai_holds_subject ON ai_holds(user_id, subject, created_at) WHERE subject IS NOT NULL;
