//! Migrations that rebuild a table keep what an older schema holds.

use rigbox_control::Store;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::Row;

/// The columns of a ledger entry, as written before `0008_ledger_clustered.sql`.
const COLS: &str = "id, user_id, seq, kind, amount_micro, balance_after_micro, period_start, \
    note, created_at, workspace_id, workspace_name, request_id, endpoint, model, input_tokens, \
    output_tokens, cost_usd, estimated, subject";

async fn entries(pool: &SqlitePool) -> Vec<String> {
    // Every column of every entry, as text (NULLs included), in a stable order.
    sqlx::query(&format!(
        "SELECT json_array({COLS}) FROM ledger ORDER BY user_id, seq"
    ))
    .fetch_all(pool)
    .await
    .expect("entries")
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect()
}

#[tokio::test]
async fn the_clustered_ledger_keeps_every_entry_and_its_guards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("rigbox.db");
    let opts = SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .foreign_keys(true);

    // A database at the schema before the rebuild (the migrations before 0008, as shipped),
    // with entries of two users: a reset, charges with and without details, an adjustment.
    let before = dir.path().join("before");
    std::fs::create_dir(&before).expect("dir");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for f in std::fs::read_dir(&shipped).expect("migrations") {
        let f = f.expect("entry").path();
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        if name.as_str() < "0008" {
            std::fs::copy(&f, before.join(&name)).expect("copy");
        }
    }
    let pool = SqlitePool::connect_with(opts.clone()).await.expect("pool");
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .expect("migrator")
        .run(&pool)
        .await
        .expect("older schema");
    for u in ["u1", "u2"] {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, email_verified, plan, \
             settings_updated_at, created_at) VALUES (?, ?, 'x', TRUE, 'free', 0, 0)",
        )
        .bind(u)
        .bind(format!("{u}@example.com"))
        .execute(&pool)
        .await
        .expect("user");
    }
    let rows = [
        "('e1', 'u1', 1, 'monthly_reset', 5000000, 5000000, 100, NULL, 100, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, FALSE, NULL)",
        "('e2', 'u1', 2, 'charge', -1234, 4998766, 100, NULL, 200, 'ws-1', 'dev', 'r1', '/v1/chat/completions', 'openai/gpt-4o-mini', 12, 34, 0.001234, FALSE, 'alice')",
        "('e3', 'u2', 1, 'adjustment', 700, 700, 100, 'goodwill', 300, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, FALSE, NULL)",
        "('e4', 'u1', 3, 'charge', -10, 4998756, 100, NULL, 400, 'ws-1', 'dev', 'r2', '/brave', NULL, NULL, NULL, 0.00001, TRUE, NULL)",
    ];
    for r in rows {
        sqlx::query(&format!("INSERT INTO ledger ({COLS}) VALUES {r}"))
            .execute(&pool)
            .await
            .expect("entry");
    }
    let old = entries(&pool).await;
    assert_eq!(old.len(), 4);
    pool.close().await;

    // Opening it applies the rest.
    let store = Store::open_sqlite(&db).await.expect("migrated");
    drop(store);
    let pool = SqlitePool::connect_with(opts).await.expect("pool");
    assert_eq!(entries(&pool).await, old, "every entry, every column");
    let clustered: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ledger'",
    )
    .fetch_one(&pool)
    .await
    .expect("schema");
    assert!(clustered.contains("WITHOUT ROWID"), "{clustered}");

    // Its guards: one charge per request, one entry per (user, seq), entries of users only.
    let insert = |id: &str, user: &str, seq: i64, request: &str| {
        format!(
            "INSERT INTO ledger ({COLS}) VALUES ('{id}', '{user}', {seq}, 'charge', -1, 0, 100, \
             NULL, 500, NULL, NULL, '{request}', NULL, NULL, NULL, NULL, NULL, FALSE, NULL)"
        )
    };
    for (sql, what) in [
        (insert("e5", "u2", 2, "r1"), "a second charge of r1"),
        (insert("e6", "u1", 3, "r9"), "a second entry at (u1, 3)"),
        (insert("e7", "nobody", 1, "r8"), "an entry of no user"),
    ] {
        let err = sqlx::query(&sql).execute(&pool).await;
        assert!(err.is_err(), "{what} was written");
    }
    sqlx::query(&insert("e8", "u2", 2, "r3"))
        .execute(&pool)
        .await
        .expect("a new entry");
    // Deleting a user deletes their entries.
    sqlx::query("DELETE FROM users WHERE id = 'u1'")
        .execute(&pool)
        .await
        .expect("delete");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 2);
}
