//! Holds of the credit wallet (`ai_holds`, bridge-and-ai.md §8): created at admission, moved
//! out of `open` exactly once by a conditional update. The ledger side is `store/ledger.rs`.
//!
//! The wallet writer's statements run on [`WalletDb`], a synchronous connection of its own
//! (rusqlite over the same SQLite library sqlx links): a request costs one statement at
//! reserve and two at settle, and through sqlx each would be a round trip to the connection's
//! worker thread, tens of µs apiece on these machines, where the statement itself takes a few.

use super::{Db, LedgerRow, Store, StoreError};
use rusqlite::{params, OptionalExtension};
use sqlx::{Executor, FromRow};
use std::time::Duration;

/// An `ai_holds` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct HoldRow {
    /// The request ID.
    pub id: String,
    pub user_id: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub node_id: String,
    pub incarnation: String,
    pub endpoint: String,
    pub model: Option<String>,
    pub subject: Option<String>,
    pub amount_micro: i64,
    /// `open`, `settled` or `released`.
    pub state: String,
    pub created_at: i64,
    pub closed_at: Option<i64>,
}

/// The columns of [`HoldRow`], in order (a macro so statements are `&'static str`, for the
/// statement cache without a `format!` per call).
macro_rules! hold_cols {
    () => {
        "id, user_id, workspace_id, workspace_name, node_id, incarnation, endpoint, model, \
         subject, amount_micro, state, created_at, closed_at"
    };
}

impl HoldRow {
    /// The row of a hold admitted at `now`.
    pub fn open(h: &rigbox_types::wallet::Hold, now: i64) -> Self {
        HoldRow {
            id: h.request_id.clone(),
            user_id: h.user_id.clone(),
            workspace_id: h.workspace_id.clone(),
            workspace_name: h.workspace_name.clone(),
            node_id: h.node_id.clone(),
            incarnation: h.incarnation.clone(),
            endpoint: h.endpoint.clone(),
            model: h.model.clone(),
            subject: h.subject.clone(),
            amount_micro: h.amount_micro.max(0),
            state: "open".into(),
            created_at: now,
            closed_at: None,
        }
    }
}

impl Store {
    /// Open holds that `node_id` admitted in another incarnation, or that were created before
    /// `before` (µs) by anyone, oldest first.
    pub async fn orphaned_holds(
        &self,
        exec: impl Executor<'_, Database = Db>,
        node_id: &str,
        incarnation: &str,
        before: i64,
    ) -> Result<Vec<HoldRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            hold_cols!(),
            " FROM ai_holds WHERE state = 'open' \
             AND ((node_id = $1 AND incarnation <> $2) OR created_at < $3) ORDER BY created_at"
        ))
        .bind(node_id)
        .bind(incarnation)
        .bind(before)
        .fetch_all(exec)
        .await?)
    }

    /// Requests admitted for `subject` of `user_id` since `since` (µs), in any state.
    pub async fn subject_admitted(
        &self,
        user_id: &str,
        subject: &str,
        since: i64,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM ai_holds WHERE user_id = $1 AND subject = $2 \
             AND created_at >= $3",
        )
        .bind(user_id)
        .bind(subject)
        .bind(since)
        .fetch_one(self.pool())
        .await?)
    }
}

/// The wallet writer's own connection to the database file: synchronous, so its statements run
/// on the caller's thread. It never waits for the write lock itself (`busy_timeout = 0`:
/// [`WalletDb::begin`] reports [`WalletDb::is_busy`] and the caller retries when it sees fit,
/// sooner than SQLite's own busy handler would) and never checkpoints inside a commit
/// (`wal_autocheckpoint = 0`; see [`Store::checkpoint`]). Its page cache (64 MiB) stays warm
/// between its transactions.
pub struct WalletDb {
    conn: rusqlite::Connection,
}

impl std::fmt::Debug for WalletDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WalletDb")
    }
}

impl Store {
    /// Opens the wallet writer's connection; `None` for an in-memory database, which no second
    /// connection can reach.
    pub fn wallet_db(&self) -> Result<Option<WalletDb>, StoreError> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::ZERO)?;
        // A 64 MiB page cache: the pages the writer touches stay in it between transactions.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -65536;",
        )?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Some(WalletDb { conn }))
    }
}

/// Ledger entries written by one statement of [`WalletDb::insert_ledger`].
const LEDGER_ROWS: usize = 8;
/// The columns of `ledger_cols!`.
const LEDGER_COLS: usize = 19;

/// `INSERT INTO ledger` of `rows` entries, their parameters numbered in order.
fn ledger_insert(rows: usize) -> String {
    let mut sql = concat!("INSERT INTO ledger (", ledger_cols!(), ") VALUES ").to_owned();
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..LEDGER_COLS {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", r * LEDGER_COLS + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// Binds `e`'s columns, in `ledger_cols!` order, from parameter `at + 1`.
fn bind_entry(
    stmt: &mut rusqlite::CachedStatement<'_>,
    at: usize,
    e: &LedgerRow,
) -> rusqlite::Result<()> {
    let values: [&dyn rusqlite::ToSql; LEDGER_COLS] = [
        &e.id,
        &e.user_id,
        &e.seq,
        &e.kind,
        &e.amount_micro,
        &e.balance_after_micro,
        &e.period_start,
        &e.note,
        &e.created_at,
        &e.workspace_id,
        &e.workspace_name,
        &e.request_id,
        &e.endpoint,
        &e.model,
        &e.input_tokens,
        &e.output_tokens,
        &e.cost_usd,
        &e.estimated,
        &e.subject,
    ];
    for (i, v) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(at + i + 1, v)?;
    }
    Ok(())
}

fn write_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict
        }
        _ => StoreError::Sqlite(e),
    }
}

fn hold_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<HoldRow> {
    Ok(HoldRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        workspace_id: r.get(2)?,
        workspace_name: r.get(3)?,
        node_id: r.get(4)?,
        incarnation: r.get(5)?,
        endpoint: r.get(6)?,
        model: r.get(7)?,
        subject: r.get(8)?,
        amount_micro: r.get(9)?,
        state: r.get(10)?,
        created_at: r.get(11)?,
        closed_at: r.get(12)?,
    })
}

/// SQLite's WAL-index header, read from the `-shm` file beside the database that every
/// connection to it, in any process, shares (<https://www.sqlite.org/walformat.html>, "The
/// WAL-Index Header"): every commit rewrites it (its change counter and checksums), so it reads
/// the same only while nobody has committed. Reading it is one `pread`; `PRAGMA data_version`,
/// which tells the same, takes and drops a read lock (two `fcntl` calls and a read transaction,
/// ~4 µs under load).
pub struct WalIndex(std::fs::File);

/// Both copies of the WAL-index header (SQLite writes the second first; a read that finds them
/// differing met a commit under way).
pub type WalHeader = [u8; 96];

impl WalIndex {
    /// The `-shm` file of the database at `db`, in WAL mode and opened by this process
    /// already (its connections keep the file in use, so nobody truncates it).
    pub fn open(db: &std::path::Path) -> std::io::Result<Self> {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let file = std::fs::File::open(shm)?;
        if file.metadata()?.len() < std::mem::size_of::<WalHeader>() as u64 {
            return Err(std::io::Error::other("the WAL index is not initialised"));
        }
        Ok(WalIndex(file))
    }

    /// The header as it is now.
    pub fn header(&self) -> std::io::Result<WalHeader> {
        let mut h = [0; 96];
        std::os::unix::fs::FileExt::read_exact_at(&self.0, &mut h, 0)?;
        Ok(h)
    }
}

impl WalletDb {
    /// `BEGIN IMMEDIATE`: takes the write lock now, or fails at once with
    /// [`WalletDb::is_busy`] while another connection holds it.
    pub fn begin(&self) -> Result<(), StoreError> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(())
    }

    /// Whether `e` means another connection holds the write lock (try again later).
    pub fn is_busy(e: &StoreError) -> bool {
        matches!(e, StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::DatabaseBusy)
    }

    pub fn commit(&self) -> Result<(), StoreError> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }

    /// Ends the transaction, if one is open, discarding its writes.
    pub fn rollback(&self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "wallet rollback failed");
            }
        }
    }

    /// SQLite's `data_version`: changes when another connection (of this process or another:
    /// `rigboxd admin`, the API's pool) has committed since this connection last asked.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// The user's balance and newest ledger `seq` (0, 0 without entries).
    pub fn balance(&self, user_id: &str) -> Result<(i64, i64), StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT balance_after_micro, seq FROM ledger WHERE user_id = ?1 \
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![user_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((0, 0)))
    }

    /// Sum of the user's open holds.
    pub fn reserved(&self, user_id: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COALESCE(SUM(amount_micro), 0) FROM ai_holds \
                 WHERE user_id = ?1 AND state = 'open'",
            )?
            .query_row(params![user_id], |r| r.get(0))?)
    }

    pub fn insert_hold(&self, h: &HoldRow) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(concat!(
                "INSERT INTO ai_holds (",
                hold_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?
            .execute(params![
                h.id,
                h.user_id,
                h.workspace_id,
                h.workspace_name,
                h.node_id,
                h.incarnation,
                h.endpoint,
                h.model,
                h.subject,
                h.amount_micro,
                h.state,
                h.created_at,
                h.closed_at
            ])
            .map_err(write_err)?;
        Ok(())
    }

    /// The hold `id` if it is open.
    pub fn open_hold(&self, id: &str) -> Result<Option<HoldRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                hold_cols!(),
                " FROM ai_holds WHERE id = ?1 AND state = 'open'"
            ))?
            .query_row(params![id], hold_of)
            .optional()?)
    }

    /// Whether the request `id` has its charge in the ledger.
    pub fn charged(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM ledger WHERE request_id = ?1")?
            .query_row(params![id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Moves an open hold to `state` (`settled` or `released`); false when it is not open.
    pub fn close_hold(&self, id: &str, state: &str, now: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE ai_holds SET state = ?1, closed_at = ?2 WHERE id = ?3 AND state = 'open'",
            )?
            .execute(params![state, now, id])?;
        Ok(n == 1)
    }

    /// Appends ledger entries, `LEDGER_ROWS` (eight) to a statement, since a statement costs
    /// about as much again as the rows it writes, the rest one at a time. A second charge for
    /// one request is [`StoreError::Conflict`].
    pub fn insert_ledger(&self, entries: &[LedgerRow]) -> Result<(), StoreError> {
        static SQL: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
        let [one, many] = SQL.get_or_init(|| [ledger_insert(1), ledger_insert(LEDGER_ROWS)]);
        let full = entries.chunks_exact(LEDGER_ROWS);
        let rest = full.remainder().chunks(1);
        for chunk in full.chain(rest) {
            let sql = if chunk.len() == LEDGER_ROWS {
                many
            } else {
                one
            };
            let mut stmt = self.conn.prepare_cached(sql)?;
            for (i, e) in chunk.iter().enumerate() {
                bind_entry(&mut stmt, i * LEDGER_COLS, e)?;
            }
            stmt.raw_execute().map_err(write_err)?;
        }
        Ok(())
    }
}
