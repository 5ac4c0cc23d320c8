-- The ledger, stored in the order it is read and written: by user, then `seq` (a table
-- WITHOUT ROWID whose primary key is `(user_id, seq)`). Every read takes a user's entries by
-- `seq` (the balance is the newest entry's, pages go back from it), and every AI request
-- appends a charge: in a rowid table that charge wrote five B-trees (the rows, `id`'s
-- automatic index, `(user_id, seq)`, `ledger_request`, `ledger_charges`), now three. `id` is
-- a UUIDv7 made for the entry (app/wallet.rs `LedgerRow::entry`); it stays on every entry
-- without an index of its own: nothing looks an entry up by it. `(user_id, seq)` keeps
-- guarding the order: two writers cannot append the same `seq`.
CREATE TABLE ledger_by_user (
    id                   TEXT NOT NULL,
    user_id              TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq                  BIGINT NOT NULL,
    kind                 TEXT NOT NULL,
    amount_micro         BIGINT NOT NULL,
    balance_after_micro  BIGINT NOT NULL,
    period_start         BIGINT NOT NULL,
    note                 TEXT,
    created_at           BIGINT NOT NULL,
    workspace_id         TEXT,
    workspace_name       TEXT,
    request_id           TEXT,
    endpoint             TEXT,
    model                TEXT,
    input_tokens         BIGINT,
    output_tokens        BIGINT,
    cost_usd             DOUBLE PRECISION,
    estimated            BOOLEAN NOT NULL DEFAULT FALSE,
    subject              TEXT,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;

INSERT INTO ledger_by_user (id, user_id, seq, kind, amount_micro, balance_after_micro,
    period_start, note, created_at, workspace_id, workspace_name, request_id, endpoint, model,
    input_tokens, output_tokens, cost_usd, estimated, subject)
SELECT id, user_id, seq, kind, amount_micro, balance_after_micro, period_start, note,
    created_at, workspace_id, workspace_name, request_id, endpoint, model, input_tokens,
    output_tokens, cost_usd, estimated, subject
FROM ledger;

DROP TABLE ledger;
ALTER TABLE ledger_by_user RENAME TO ledger;

-- As in 0005_ai.sql.
CREATE UNIQUE INDEX ledger_request ON ledger(request_id) WHERE request_id IS NOT NULL;
CREATE INDEX ledger_charges ON ledger(user_id, created_at) WHERE kind = 'charge';
CREATE INDEX ledger_subjects ON ledger(user_id, subject, created_at) WHERE subject IS NOT NULL;
