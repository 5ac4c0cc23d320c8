//! All SQL of the control plane. The logic layer (`app/`) calls these functions and never writes
//! SQL itself. Statements are portable (SQLite today, PostgreSQL next): `$N` placeholders,
//! BIGINT microsecond times, no engine-specific functions. One exception: the credit wallet's
//! writer has a synchronous SQLite connection of its own ([`WalletDb`], rusqlite, `?N`
//! placeholders) for its per-request statements; see `wallet.rs`.

mod ai;
mod apps;
mod keys;
#[macro_use]
mod ledger;
mod users;
mod wallet;
mod workspaces;

pub use ai::*;
pub use apps::*;
pub use keys::*;
pub use ledger::*;
pub use users::*;
pub use wallet::*;
pub use workspaces::*;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The database driver in use.
pub type Db = sqlx::Sqlite;
/// A transaction on the store.
pub type Tx<'a> = sqlx::Transaction<'a, Db>;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a row with the same unique key exists")]
    Conflict,
}

impl StoreError {
    /// Maps a unique-constraint violation to [`StoreError::Conflict`].
    pub(crate) fn from_write(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Db(e),
        }
    }
}

/// Handle on the control plane's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: sqlx::Pool<Db>,
    /// The database file (None for an in-memory database).
    file: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            file: Some(path.to_owned()),
        })
    }

    /// An in-memory database (tests).
    pub async fn open_memory() -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool, file: None })
    }

    /// A passive WAL checkpoint: copies what it can into the database without blocking
    /// writers, off their commit path.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The database file; `None` in memory.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub(crate) fn pool(&self) -> &sqlx::Pool<Db> {
        &self.pool
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx<'static>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Closes the pool, flushing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Opaque keyset cursor over `(created_at, id)`.
pub fn encode_cursor(created_at: i64, id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_at}:{id}"))
}

/// Decodes a cursor made by [`encode_cursor`]; `None` when it is not one.
pub fn decode_cursor(c: &str) -> Option<(i64, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (t, id) = s.split_once(':')?;
    Some((t.parse().ok()?, id.to_owned()))
}

/// One page of a keyset-paginated list.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Turns `limit + 1` fetched rows into a page with a cursor.
pub(crate) fn paginate<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (i64, &str),
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| {
            let (t, id) = key(r);
            encode_cursor(t, id)
        })
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}
