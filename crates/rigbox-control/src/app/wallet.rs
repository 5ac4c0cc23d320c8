//! The credit wallet's write side for the AI proxy (bridge-and-ai.md §8): holds at admission,
//! settlement with its ledger charge, release, and the reconciler of orphaned holds.
//!
//! One writer thread applies every hold operation to the store, in batches: it takes what is
//! queued, runs it all in one `BEGIN IMMEDIATE` transaction and answers each caller after the
//! commit (group commit).
//!
//! **The journal.** A request is admitted in its own task, with no round trip to the writer:
//! against the books the writer keeps in memory (each user's balance, last ledger `seq` and sum
//! of open holds, `Shared`), less what callers admitted that the writer has not applied yet
//! (`pending`). The admitted hold is made durable by one `write` to an append-only journal file
//! beside the database, the same durability as SQLite's WAL at `synchronous = NORMAL` (the page
//! cache, no `fsync`), and queued for the writer; settlements and releases are journaled the
//! same way. The writer applies journaled operations in batches: operations nobody waits for
//! wait up to `BATCH_WAIT` for company, so requests sent one at a time no longer cost a
//! transaction each. There are two journal files: when the writer takes a batch it switches
//! the callers to the other file, under the same lock under which callers append and queue, so
//! the file it leaves holds exactly the batch's records and is emptied once the batch is
//! committed. At start-up, before the journal is used, the writer replays both files in their
//! order: a hold is inserted unless it exists or its request is charged already, a settlement or
//! release applies only to an open hold, so a record already applied changes nothing.
//!
//! **A hold settled in the batch that applies it is not written**: its charge, in the same
//! transaction, records it (the ledger's `request_id` is unique), which saves an `INSERT` and
//! the `UPDATE` that would close it (`Writer::write`).
//!
//! **The writer decides everything else.** A caller only admits on its own while the books are
//! fresh: nothing but the writer has committed since the writer's last commit (SQLite's
//! WAL-index header, which every commit rewrites, reads as the writer left it: one `pread`,
//! [`WalIndex`]). When the books are not fresh,
//! not known, or do not cover the request, the writer decides it under the write lock
//! (answering at once, before the commit; it reads the books again when another connection
//! has committed) and the hold commits beside the upstream call, as before the journal. So a
//! top-up, a monthly reset or an adjustment by the API or by `rigboxd admin` in another process
//! is seen by the next decision after its commit. (One window remains: a commit of another
//! connection that lands between the writer's commit and its reading of the header right after is
//! noted as the writer's own; the writer's next transaction, at most a batch later, still sees
//! it and reads the books again.) This assumes one wallet writer per database (one control
//! plane, as in the one-machine mode).
//!
//! The writer is a thread of its own with a synchronous connection ([`WalletDb`]): a commit
//! writes a dozen WAL pages, which on a runtime worker would hold up every task queued behind
//! it. A hold moves out of `open` through a conditional update, so it is settled or released
//! exactly once whoever tries.

use super::credits::period_of;
use super::{App, Clock};
use crate::store::{HoldRow, LedgerRow, Store, StoreError, WalHeader, WalIndex, WalletDb};
use rigbox_types::wallet::{
    Account, Admission, Charge, Hold, Reservation, Settlement, SubjectUse, Wallet, WalletError,
};
use rigbox_types::WorkspaceId;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a batch of operations nobody waits for (journaled holds, settlements) waits for
/// company before the writer applies it: their callers have answered, or are answering, their
/// clients, and the journal has them. An operation somebody waits for (a hold the writer
/// decides, a release, a sync) ends the wait when it is queued.
const BATCH_WAIT: Duration = Duration::from_millis(10);
/// The writer steps off its core for [`PAUSE`] after this many operations, or ledger entries,
/// of a batch, so that a request's thread woken onto that core waits for a slice of the batch
/// at most, not for all of it. A batch of 10 ms of requests is ~1 ms of work on one core, and
/// the scheduler lets a running thread finish its time slice before a woken one runs: `perf
/// sched` showed requests sent one at a time waiting up to 1.2 ms behind the writer (1% of
/// them: bench/ai-proxy's p99 in the machine's slow phases); with the pauses, 0.45 ms at most.
const PAUSE_EVERY: usize = 16;
const PAUSE: Duration = Duration::from_micros(20);
/// How long the writer waits before trying again for the write lock another connection holds.
const BUSY_RETRY: Duration = Duration::from_micros(500);
/// A passive WAL checkpoint runs beside the writer once it has been idle this long, or after
/// [`CHECKPOINT_EVERY`] operations at the latest. A checkpoint competes with the requests for
/// the CPU and the disk while it runs: every 200 operations it slowed 1% of requests by 1–2 ms
/// (the p99); in a pause it slows none.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(20);
/// Most operations between checkpoints, under load that leaves no pause (two per request; the
/// WAL grows to ~100 MB at most). A page rewritten by many commits is copied to the database
/// once per checkpoint.
const CHECKPOINT_EVERY: usize = 4_000;
/// Open holds remembered at most (more are read back from the store when they close).
const MAX_KNOWN_HOLDS: usize = 100_000;
/// How long a workspace → owner answer is reused (the owner of a workspace never changes; its
/// name may, and the ledger records the name at most this stale). A change of AI mode made
/// through this process's API drops it at once ([`App::ai_generation`]); one made by another
/// process is seen within this time.
const ACCOUNT_TTL: Duration = Duration::from_secs(2);

/// The writer's queue (unbounded: it holds at most a few operations per request in flight)
/// and what the handles share with the writer.
#[derive(Clone)]
pub(crate) struct Queue {
    ops: mpsc::Sender<Op>,
    shared: Arc<Mutex<Shared>>,
    /// The writer thread, to wake from a batch's wait (`None`: it did not start).
    writer: Option<std::thread::Thread>,
}

impl Queue {
    /// Queues `op`; when its caller waits for the answer, wakes the writer should it be
    /// waiting for company. (A wake-up per operation nobody waits for would cost a system call
    /// each: those wait.) False when the writer has stopped (the op's answer is dropped).
    fn send(&self, op: Op) -> bool {
        let awaited = op.job.awaited();
        let sent = self.ops.send(op).is_ok();
        if let (true, Some(w)) = (awaited, &self.writer) {
            w.unpark();
        }
        sent
    }
}

/// What the handles share with the writer. Only the writer changes `books`; callers add what
/// they admit to `pending`, which the writer moves into the books as it applies each hold.
#[derive(Default)]
struct Shared {
    books: HashMap<String, Books>,
    /// Per user, the holds admitted by their callers and not yet applied by the writer.
    pending: HashMap<String, i64>,
    /// `None` until the writer has replayed what a previous run left (and for a database in
    /// memory): callers then leave every decision to the writer.
    journal: Option<Journal>,
    /// Tells whether anyone but the writer has committed since the writer's last commit: the
    /// WAL-index header then differs from `expected`, and callers leave decisions to the
    /// writer, which reads the books again.
    watch: Option<WalIndex>,
    /// The header right after the writer's last commit (`None`: not known).
    expected: Option<WalHeader>,
}

impl Shared {
    /// Whether the books still hold what is committed: nothing but the writer has committed
    /// since its last commit.
    fn fresh(&self) -> bool {
        match (&self.watch, self.expected) {
            (Some(w), Some(e)) => w.header().is_ok_and(|h| h == e),
            _ => false,
        }
    }

    /// Notes, after a commit of the writer, what `watch` sees.
    fn committed(&mut self) {
        self.expected = self.watch.as_ref().and_then(|w| w.header().ok());
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A user's committed money, as the writer tracks it.
#[derive(Debug, Clone, Copy)]
struct Books {
    balance: i64,
    /// The `seq` of the user's newest ledger entry (0: none yet).
    seq: i64,
    /// Sum of the user's open holds.
    reserved: i64,
}

impl Books {
    /// The admission of `amount` against these books, with `pending` more admitted already.
    fn admit(&self, amount: i64, pending: i64) -> Admission {
        let available = self.balance - self.reserved - pending;
        if amount == 0 {
            Admission::Admitted
        } else if available <= 0 {
            Admission::Exhausted {
                available_micro: available,
            }
        } else if available < amount {
            Admission::Insufficient {
                available_micro: available,
                estimate_micro: amount,
            }
        } else {
            Admission::Admitted
        }
    }
}

/// The journal's two files (see the module docs). Each record is one JSON line `[n, record]`,
/// `n` counting across both files, written with one `pwrite` after the last. A file is emptied
/// by writing zeros over its records, not by truncating it: its pages stay in the page cache,
/// and the next records are copied into them instead of into pages the kernel allocates anew
/// (a truncation per batch, and a new page every few records, cost ~2 µs per request). A
/// reader stops at the zeros.
struct Journal {
    files: [std::fs::File; 2],
    /// Bytes of records in each file.
    len: [u64; 2],
    active: usize,
    next: u64,
    line: Vec<u8>,
}

/// A journal record, as written.
#[derive(serde::Serialize)]
enum RecordRef<'a> {
    Hold { hold: &'a Hold, at: i64 },
    Settle(&'a Charge),
    Release(&'a str),
}

/// A journal record, as read back.
#[derive(serde::Deserialize)]
enum Record {
    Hold { hold: Hold, at: i64 },
    Settle(Charge),
    Release(String),
}

impl Journal {
    fn paths(db: &Path) -> [PathBuf; 2] {
        let name = |i: usize| {
            let mut s = db.as_os_str().to_owned();
            s.push(format!("-wallet-journal-{i}"));
            PathBuf::from(s)
        };
        [name(0), name(1)]
    }

    fn open(db: &Path) -> std::io::Result<Self> {
        let [a, b] = Self::paths(db);
        // Like the database (0600): the records name users, workspaces and amounts.
        let open = |p: PathBuf| {
            std::os::unix::fs::OpenOptionsExt::mode(
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .read(true),
                0o600,
            )
            .open(p)
        };
        Ok(Journal {
            files: [open(a)?, open(b)?],
            len: [0; 2],
            active: 0,
            next: 0,
            line: Vec::with_capacity(512),
        })
    }

    /// Every record both files hold, in the order they were written; a torn record (a crash
    /// mid-`write`) is skipped.
    fn read(&self) -> std::io::Result<Vec<Record>> {
        let mut records = Vec::new();
        for f in &self.files {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut &*f, &mut text)?;
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            for line in text[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<(u64, Record)>(line) {
                    Ok(r) => records.push(r),
                    Err(e) => tracing::warn!(error = %e, "wallet journal: skipping a torn record"),
                }
            }
        }
        records.sort_by_key(|(n, _)| *n);
        Ok(records.into_iter().map(|(_, r)| r).collect())
    }

    fn append(&mut self, record: &RecordRef<'_>) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &(self.next, record))?;
        self.line.push(b'\n');
        let i = self.active;
        self.files[i].write_all_at(&self.line, self.len[i])?;
        self.len[i] += self.line.len() as u64;
        self.next += 1;
        Ok(())
    }

    /// Sends further records to the other file; returns the one left, to empty once its
    /// records are applied.
    fn switch(&mut self) -> usize {
        let left = self.active;
        self.active = 1 - left;
        left
    }

    /// Writes zeros over the records of file `i`.
    fn empty(&mut self, i: usize) -> std::io::Result<()> {
        const ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];
        let mut at = 0;
        while at < self.len[i] {
            let n = (self.len[i] - at).min(ZEROS.len() as u64);
            self.files[i].write_all_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        self.len[i] = 0;
        Ok(())
    }

    /// Empties both files, whatever they hold (at start-up, once replayed).
    fn clear(&mut self) -> std::io::Result<()> {
        for (f, len) in self.files.iter().zip(&mut self.len) {
            f.set_len(0)?;
            *len = 0;
        }
        Ok(())
    }
}

/// One queued operation and where its answer goes.
pub(crate) struct Op {
    job: Job,
    answer: Answer,
}

enum Job {
    /// For the writer to decide. `admitted` once decided: a hold retried after its batch
    /// failed is written without deciding again (its caller may be calling the upstream).
    Reserve {
        hold: Hold,
        admitted: Option<bool>,
    },
    /// Admitted by its caller and journaled at `at`. `counted` once its amount has moved from
    /// `pending` into the books in the current transaction (back to `pending` if it rolls back).
    Journaled {
        hold: Hold,
        at: i64,
        counted: bool,
    },
    Settle(Charge),
    Release(String),
    /// Nothing to write: answered once everything queued before it is committed.
    Sync,
}

impl Job {
    /// Whether its caller waits for the answer: all but journaled holds and settlements, which
    /// wait for company in a batch (`BATCH_WAIT`).
    fn awaited(&self) -> bool {
        !matches!(self, Job::Journaled { .. } | Job::Settle(_))
    }

    /// The request the job is about (`None` for a sync).
    fn request_id(&self) -> Option<&str> {
        match self {
            Job::Reserve { hold, .. } | Job::Journaled { hold, .. } => Some(&hold.request_id),
            Job::Settle(c) => Some(&c.request_id),
            Job::Release(id) => Some(id),
            Job::Sync => None,
        }
    }
}

enum Answer {
    /// The decision, sent before the commit, and the commit.
    Admission {
        decided: Option<oneshot::Sender<Result<Admission, WalletError>>>,
        committed: oneshot::Sender<Result<(), WalletError>>,
    },
    Closed(oneshot::Sender<Result<bool, WalletError>>),
    Synced(oneshot::Sender<Result<(), WalletError>>),
    /// Nobody waits (a journaled hold).
    Nobody,
}

enum Outcome {
    Committed,
    Closed(bool),
    Synced,
}

impl Answer {
    fn send(self, outcome: Outcome) {
        // A caller that went away does not need its answer.
        match (self, outcome) {
            (Answer::Admission { committed, .. }, Outcome::Committed) => {
                drop(committed.send(Ok(())))
            }
            (Answer::Closed(tx), Outcome::Closed(b)) => drop(tx.send(Ok(b))),
            (Answer::Synced(tx), Outcome::Synced) => drop(tx.send(Ok(()))),
            (Answer::Nobody, _) => {}
            _ => unreachable!("every job has its own kind of answer"),
        }
    }
}

/// The writer thread's state; `known` is a cache of the store.
struct Writer {
    clock: Arc<dyn Clock>,
    db: WalletDb,
    shared: Arc<Mutex<Shared>>,
    /// The database's `data_version` the books were read at.
    books_version: i64,
    /// Open holds by request ID, as written at reserve.
    known: HashMap<String, HoldRow>,
    /// Holds of the transaction under way that are not written: their settlement follows in
    /// the same batch (see [`Writer::write`]). Empty between transactions.
    unwritten: HashMap<String, HoldRow>,
    /// Charges of the transaction under way, written together as it commits (several rows to
    /// a statement). Empty between transactions.
    charges: Vec<LedgerRow>,
}

/// The wallet as the AI proxy sees it (implements [`Wallet`]).
#[derive(Clone)]
pub struct WalletHandle {
    app: Arc<App>,
    queue: Queue,
    accounts: Arc<Mutex<HashMap<WorkspaceId, CachedAccount>>>,
}

/// A cached account answer: when it was read, [`App::ai_generation`] before the read, the answer.
type CachedAccount = (Instant, u64, Account);

impl std::fmt::Debug for WalletHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WalletHandle")
    }
}

fn store_err(e: StoreError) -> WalletError {
    WalletError(format!("{e}: {:?}", std::error::Error::source(&e)))
}

fn failed() -> WalletError {
    WalletError("the wallet transaction failed (see the rigboxd log)".into())
}

fn stopped() -> WalletError {
    WalletError("the wallet writer has stopped".into())
}

impl App {
    /// The wallet. Its writer thread starts on the first call (within a Tokio runtime, which
    /// runs its WAL checkpoints) and stops once every handle and the App are gone; every
    /// handle shares it (one writer per App, which keeps its queue for [`App::wallet_synced`]).
    pub fn wallet(self: &Arc<Self>) -> WalletHandle {
        let queue = self
            .wallet_queue
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel();
                let shared = Arc::new(Mutex::new(Shared::default()));
                let (store, clock) = (self.store.clone(), self.clock.clone());
                let rt = tokio::runtime::Handle::current();
                let for_writer = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("rigbox-wallet".into())
                    .spawn(move || Writer::run(store, clock, for_writer, rt, rx));
                let writer = match spawned {
                    Ok(handle) => Some(handle.thread().clone()),
                    Err(e) => {
                        // Every operation then fails (its answer is dropped with the queue).
                        tracing::error!(error = %e, "wallet: cannot start its writer thread");
                        None
                    }
                };
                Queue {
                    ops: tx,
                    shared,
                    writer,
                }
            })
            .clone();
        WalletHandle {
            app: self.clone(),
            queue,
            accounts: Arc::default(),
        }
    }

    /// Waits until every wallet operation queued so far is committed, so that a read that
    /// follows sees every charge settled before it was called (a proxied answer can reach its
    /// client before its charge is committed). A no-op without a wallet.
    pub async fn wallet_synced(&self) -> Result<(), WalletError> {
        let Some(queue) = self.wallet_queue.get() else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        let sent = queue.send(Op {
            job: Job::Sync,
            answer: Answer::Synced(tx),
        });
        if !sent {
            return Err(stopped());
        }
        rx.await.map_err(|_| failed())?
    }
}

impl Writer {
    fn run(
        store: Store,
        clock: Arc<dyn Clock>,
        shared: Arc<Mutex<Shared>>,
        rt: tokio::runtime::Handle,
        rx: mpsc::Receiver<Op>,
    ) {
        let db = match store.wallet_db() {
            Ok(Some(db)) => db,
            outcome => {
                match outcome {
                    Err(e) => {
                        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "wallet: cannot open its connection")
                    }
                    _ => tracing::error!("wallet: needs a database file, not an in-memory one"),
                }
                // Every hold operation gets an error (its answer is dropped); a read's sync
                // has nothing to wait for.
                while let Ok(op) = rx.recv() {
                    if let Answer::Synced(tx) = op.answer {
                        let _ = tx.send(Ok(()));
                    }
                }
                return;
            }
        };
        let mut w = Writer {
            clock,
            db,
            shared,
            books_version: i64::MIN,
            known: HashMap::new(),
            unwritten: HashMap::new(),
            charges: Vec::new(),
        };
        if let Some(file) = store.file() {
            match w.replay(file) {
                Ok(journal) => {
                    // Without it, callers leave every decision to the writer.
                    let watch = WalIndex::open(file)
                        .inspect_err(
                            |e| tracing::warn!(error = %e, "wallet: cannot read the WAL index"),
                        )
                        .ok();
                    let mut shared = w.lock();
                    shared.journal = Some(journal);
                    shared.watch = watch;
                }
                // Callers then leave every decision to the writer, whose transactions need no
                // journal; the records stay for the next start.
                Err(e) => {
                    tracing::error!(error = %e, "wallet: cannot replay its journal; running without it")
                }
            }
        }
        let mut batch = Vec::new();
        let mut since_checkpoint = 0usize;
        let checkpointing = Arc::new(AtomicBool::new(false));
        let checkpoint = |since_checkpoint: &mut usize| {
            if !checkpointing.swap(true, Ordering::AcqRel) {
                *since_checkpoint = 0;
                let store = store.clone();
                let flag = checkpointing.clone();
                rt.spawn(async move {
                    if let Err(e) = store.checkpoint().await {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                    flag.store(false, Ordering::Release);
                });
            }
        };
        loop {
            // The writer never checkpoints in its commits: a passive checkpoint runs beside it,
            // one at a time, in the first pause after a write (or after too many).
            let op = if since_checkpoint > 0 {
                match rx.recv_timeout(CHECKPOINT_IDLE) {
                    Ok(op) => op,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        checkpoint(&mut since_checkpoint);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                }
            };
            if !op.job.awaited() {
                // Company, until an operation somebody waits for is queued (`Queue::send`). A
                // wake-up left over from one already taken only ends a wait early.
                std::thread::park_timeout(BATCH_WAIT);
            }
            batch.push(op);
            // Everything queued, and with it the journal file holding exactly its records
            // (callers append and queue under this lock).
            let left = {
                let mut shared = w.lock();
                while let Ok(op) = rx.try_recv() {
                    batch.push(op);
                }
                shared.journal.as_mut().map(Journal::switch)
            };
            since_checkpoint += batch.len();
            w.apply_batch(std::mem::take(&mut batch));
            if let Some(i) = left {
                if let Some(Err(e)) = w.lock().journal.as_mut().map(|j| j.empty(i)) {
                    tracing::warn!(error = %e, "wallet journal: cannot empty a file");
                }
            }
            if since_checkpoint >= CHECKPOINT_EVERY {
                checkpoint(&mut since_checkpoint);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Applies what a previous run journaled and the store may lack, in one transaction, and
    /// empties the journal.
    fn replay(&mut self, db_file: &Path) -> Result<Journal, Box<dyn std::error::Error>> {
        let mut journal = Journal::open(db_file)?;
        let records = journal.read()?;
        if !records.is_empty() {
            self.begin()?;
            let now = self.clock.now_micros();
            let result = records.iter().try_for_each(|r| match r {
                // Charged already: settled in the batch that applied it, with no row of its own.
                Record::Hold { hold, .. } if self.charged(&hold.request_id)? => Ok(()),
                Record::Hold { hold, at } => match self.db.insert_hold(&HoldRow::open(hold, *at)) {
                    Ok(()) | Err(StoreError::Conflict) => Ok(()),
                    Err(e) => Err(e),
                },
                Record::Settle(c) => self.settle(c, now).map(drop),
                Record::Release(id) => self.release(id, now).map(drop),
            });
            match result.and_then(|()| self.commit()) {
                Ok(()) => tracing::info!(records = records.len(), "wallet journal replayed"),
                Err(e) => {
                    self.rollback();
                    return Err(e.into());
                }
            }
            self.lock().books.clear();
            self.known.clear();
        }
        journal.clear()?;
        Ok(journal)
    }

    /// Applies a batch in one transaction and answers after the commit. When it fails, each
    /// operation is tried again in a transaction of its own, so one bad operation (a hold for a
    /// user deleted meanwhile) fails alone; its caller gets an error.
    fn apply_batch(&mut self, mut batch: Vec<Op>) {
        match self.apply(&mut batch) {
            Ok(outcomes) => {
                self.lock().committed();
                batch
                    .into_iter()
                    .zip(outcomes)
                    .for_each(|(op, o)| op.answer.send(o))
            }
            Err(e) => {
                // One operation alone: its request is named (its caller may not be waiting).
                let request_id = match &batch[..] {
                    [op] => op.job.request_id(),
                    _ => None,
                };
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), ops = batch.len(), request_id, "wallet transaction failed");
                if batch.len() > 1 {
                    for op in batch {
                        let mut one = [op];
                        match self.apply(&mut one) {
                            Ok(mut o) => {
                                self.lock().committed();
                                let [op] = one;
                                op.answer.send(o.remove(0))
                            }
                            Err(e) => {
                                let [op] = one;
                                tracing::error!(error = %e, source = ?std::error::Error::source(&e), request_id = op.job.request_id(), "wallet operation failed")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Waits for the write lock.
    fn begin(&mut self) -> Result<(), StoreError> {
        loop {
            match self.db.begin() {
                Ok(()) => return Ok(()),
                Err(e) if WalletDb::is_busy(&e) => std::thread::sleep(BUSY_RETRY),
                Err(e) => return Err(e),
            }
        }
    }

    /// One transaction: waits for the write lock, decides the holds, writes and commits. On
    /// failure it is rolled back and the caches are dropped with it.
    fn apply(&mut self, ops: &mut [Op]) -> Result<Vec<Outcome>, StoreError> {
        self.begin()?;
        let result = self.decide(ops).and_then(|()| self.write(ops));
        if result.is_err() {
            self.rollback();
            let mut shared = lock(&self.shared);
            shared.books.clear();
            // Journaled holds rolled back are pending again.
            for op in ops.iter_mut() {
                if let Job::Journaled { hold, counted, .. } = &mut op.job {
                    if std::mem::take(counted) {
                        *shared.pending.entry(hold.user_id.clone()).or_default() +=
                            hold.amount_micro.max(0);
                    }
                }
            }
            drop(shared);
            self.known.clear();
        }
        result
    }

    /// Decides every hold of the batch its caller left to the writer, under the write lock,
    /// and answers each at once.
    fn decide(&mut self, ops: &mut [Op]) -> Result<(), StoreError> {
        // Read under the write lock: whatever another connection wrote is committed.
        let version = self.db.data_version()?;
        if version != self.books_version {
            self.lock().books.clear();
            self.books_version = version;
        }
        for op in ops.iter_mut() {
            if let Job::Reserve { hold, admitted } = &mut op.job {
                if *admitted == Some(false) {
                    // Refused in a batch that failed since: its caller has the answer.
                    continue;
                }
                let admission = self.admit(hold, admitted.is_some())?;
                *admitted = Some(admission == Admission::Admitted);
                if let Answer::Admission { decided, .. } = &mut op.answer {
                    if let Some(tx) = decided.take() {
                        let _ = tx.send(Ok(admission));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every write of the batch, in queue order, and the commit.
    ///
    /// A journaled hold whose settlement comes later in the same batch is not written: its
    /// charge, in the same transaction, is its record (the ledger's `request_id` is unique),
    /// which saves the hold's insert and the update that would close it. Holds with a subject
    /// are written all the same: a subject's request rate counts them.
    fn write(&mut self, ops: &mut [Op]) -> Result<Vec<Outcome>, StoreError> {
        let now = self.clock.now_micros();
        let settled_later = settled_later(ops);
        let mut outcomes = Vec::with_capacity(ops.len());
        for (i, (op, settled_later)) in ops.iter_mut().zip(settled_later).enumerate() {
            if i % PAUSE_EVERY == PAUSE_EVERY - 1 {
                std::thread::sleep(PAUSE);
            }
            outcomes.push(match &mut op.job {
                Job::Reserve { hold, admitted } => {
                    if *admitted == Some(true) {
                        self.write_hold(hold, now)?;
                    }
                    Outcome::Committed
                }
                Job::Journaled { hold, at, counted } => {
                    if settled_later {
                        // Its books are counted here, where a written hold's would be read
                        // from the store, which will not have it.
                        self.load_books(&hold.user_id)?;
                        self.unwritten
                            .insert(hold.request_id.clone(), HoldRow::open(hold, *at));
                    } else {
                        match self.write_hold(hold, *at) {
                            // Already there: written before a failed batch's retry.
                            Ok(()) | Err(StoreError::Conflict) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    // The amount moves from the callers' pending sum into the books (books
                    // read later read it from the store).
                    let amount = hold.amount_micro.max(0);
                    let mut shared = self.lock();
                    if let Some(p) = shared.pending.get_mut(&hold.user_id) {
                        *p -= amount;
                        if *p == 0 {
                            shared.pending.remove(&hold.user_id);
                        }
                    }
                    if let Some(b) = shared.books.get_mut(&hold.user_id) {
                        b.reserved += amount;
                    }
                    *counted = true;
                    Outcome::Committed
                }
                Job::Settle(c) => {
                    let settled = self.settle(c, now)?;
                    if !settled {
                        // Its caller may not wait for the answer (the proxy does not).
                        tracing::warn!(request_id = %c.request_id, "settlement of a hold already closed");
                    }
                    Outcome::Closed(settled)
                }
                Job::Release(id) => Outcome::Closed(self.release(id, now)?),
                Job::Sync => Outcome::Synced,
            });
        }
        // Every unwritten hold met its settlement above; should one not have, it is written
        // open rather than lost.
        for (_, row) in self.unwritten.drain() {
            self.db.insert_hold(&row)?;
        }
        self.commit()?;
        Ok(outcomes)
    }

    /// Writes the transaction's charges and commits it.
    fn commit(&mut self) -> Result<(), StoreError> {
        for (i, chunk) in self.charges.chunks(PAUSE_EVERY).enumerate() {
            if i > 0 {
                std::thread::sleep(PAUSE);
            }
            self.db.insert_ledger(chunk)?;
        }
        self.charges.clear();
        self.db.commit()
    }

    /// Ends the transaction under way, discarding its writes and what it kept for its commit.
    fn rollback(&mut self) {
        self.charges.clear();
        self.unwritten.clear();
        self.db.rollback();
    }

    /// Whether request `id` is charged: in the store, or in the transaction under way.
    fn charged(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .charges
            .iter()
            .any(|c| c.request_id.as_deref() == Some(id))
            || self.db.charged(id)?)
    }

    /// Reads the user's books from the store unless they are known (within the transaction, so
    /// they include its own writes).
    fn load_books(&mut self, user: &str) -> Result<(), StoreError> {
        if !self.lock().books.contains_key(user) {
            let (balance, seq) = self.db.balance(user)?;
            let reserved = self.db.reserved(user)?;
            self.lock().books.insert(
                user.to_owned(),
                Books {
                    balance,
                    seq,
                    reserved,
                },
            );
        }
        Ok(())
    }

    /// The open hold `id`: remembered, else read from the store (another incarnation's).
    fn open_hold(&mut self, id: &str) -> Result<Option<HoldRow>, StoreError> {
        match self.known.remove(id) {
            Some(h) => Ok(Some(h)),
            None => self.db.open_hold(id),
        }
    }

    /// Decides a hold and counts it as reserved when admitted. `admitted_before`: it was
    /// admitted in a batch that failed since; that decision stands (its caller may be calling
    /// the upstream already).
    fn admit(&mut self, h: &Hold, admitted_before: bool) -> Result<Admission, StoreError> {
        let amount = h.amount_micro.max(0);
        if amount == 0 {
            return Ok(Admission::Admitted);
        }
        self.load_books(&h.user_id)?;
        let mut shared = self.lock();
        let pending = shared.pending.get(&h.user_id).copied().unwrap_or(0);
        let b = shared.books.get_mut(&h.user_id).expect("loaded above");
        if !admitted_before {
            let admission = b.admit(amount, pending);
            if admission != Admission::Admitted {
                return Ok(admission);
            }
        }
        b.reserved += amount;
        Ok(Admission::Admitted)
    }

    /// Writes an admitted hold.
    fn write_hold(&mut self, h: &Hold, at: i64) -> Result<(), StoreError> {
        let row = HoldRow::open(h, at);
        self.db.insert_hold(&row)?;
        if self.known.len() >= MAX_KNOWN_HOLDS {
            self.known.clear();
        }
        self.known.insert(row.id.clone(), row);
        Ok(())
    }

    /// Settles an open hold and writes its charge; false when it was not open.
    fn settle(&mut self, c: &Charge, now: i64) -> Result<bool, StoreError> {
        let hold = match self.unwritten.remove(&c.request_id) {
            // Admitted in this transaction and not written: nothing to close; its books were
            // loaded when it was counted.
            Some(hold) => hold,
            None => {
                let Some(hold) = self.open_hold(&c.request_id)? else {
                    return Ok(false);
                };
                // Read before the hold closes: the books then count it as reserved.
                self.load_books(&hold.user_id)?;
                if !self.db.close_hold(&hold.id, "settled", now)? {
                    return Ok(false);
                }
                hold
            }
        };
        let cost = c.cost_micro.max(0);
        let (seq, balance) = {
            let mut shared = self.lock();
            let b = shared.books.get_mut(&hold.user_id).expect("loaded above");
            b.reserved -= hold.amount_micro;
            b.balance -= cost;
            b.seq += 1;
            (b.seq, b.balance)
        };
        let entry = LedgerRow {
            input_tokens: c.input_tokens.map(|t| t as i64),
            output_tokens: c.output_tokens.map(|t| t as i64),
            cost_usd: c.cost_usd,
            estimated: c.estimated,
            workspace_id: Some(hold.workspace_id),
            workspace_name: Some(hold.workspace_name),
            request_id: Some(hold.id),
            endpoint: Some(hold.endpoint),
            model: hold.model,
            subject: hold.subject,
            ..LedgerRow::entry(&hold.user_id, seq, "charge", -cost, balance, now)
        };
        self.charges.push(entry);
        Ok(true)
    }

    fn release(&mut self, id: &str, now: i64) -> Result<bool, StoreError> {
        let Some(hold) = self.open_hold(id)? else {
            return Ok(false);
        };
        if !self.db.close_hold(id, "released", now)? {
            return Ok(false);
        }
        if let Some(b) = self.lock().books.get_mut(&hold.user_id) {
            b.reserved -= hold.amount_micro;
        }
        Ok(true)
    }
}

/// For each operation of a batch, whether it is a journaled hold without a subject whose
/// settlement comes later in the batch.
fn settled_later(ops: &[Op]) -> Vec<bool> {
    let mut settles = std::collections::HashSet::new();
    let mut later = vec![false; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        match &op.job {
            Job::Settle(c) => {
                settles.insert(c.request_id.as_str());
            }
            Job::Journaled { hold, .. } => {
                later[i] = hold.subject.is_none() && settles.contains(hold.request_id.as_str());
            }
            _ => {}
        }
    }
    later
}

impl LedgerRow {
    /// A new entry: `seq` follows the user's newest entry, `balance_after` is the balance
    /// with `amount` applied.
    pub fn entry(
        user_id: &str,
        seq: i64,
        kind: &str,
        amount_micro: i64,
        balance_after_micro: i64,
        now: i64,
    ) -> Self {
        LedgerRow {
            // Time-ordered: the ledger's primary key grows at one end.
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            seq,
            kind: kind.to_owned(),
            amount_micro,
            balance_after_micro,
            period_start: period_of(now).0,
            note: None,
            created_at: now,
            ..Default::default()
        }
    }
}

impl WalletHandle {
    /// Queues a settlement or a release, journaled first (see the module docs).
    fn queue<T>(
        &self,
        job: Job,
        answer: impl FnOnce(oneshot::Sender<Result<T, WalletError>>) -> Answer,
    ) -> oneshot::Receiver<Result<T, WalletError>> {
        let (tx, rx) = oneshot::channel();
        let mut shared = lock(&self.queue.shared);
        let record = match &job {
            Job::Settle(c) => Some(RecordRef::Settle(c)),
            Job::Release(id) => Some(RecordRef::Release(id)),
            _ => None,
        };
        if let (Some(journal), Some(record)) = (shared.journal.as_mut(), record) {
            if let Err(e) = journal.append(&record) {
                // The writer's commit makes it durable, a moment later.
                tracing::error!(error = %e, "wallet journal: cannot append");
            }
        }
        // When the writer has stopped, `rx` reports it (its sender is dropped with the op).
        let _ = self.queue.send(Op {
            job,
            answer: answer(tx),
        });
        drop(shared);
        rx
    }

    /// Admits `hold` in the caller's task when the writer's books cover it, journaled (see
    /// the module docs); gives it back when the writer must decide.
    fn admit_here(&self, hold: Hold) -> Result<Reservation, Box<Hold>> {
        let at = self.app.now();
        let mut shared = lock(&self.queue.shared);
        // The WAL index read last: only when the writer could not be left out otherwise.
        if shared.journal.is_none() || !shared.books.contains_key(&hold.user_id) || !shared.fresh()
        {
            return Err(Box::new(hold));
        }
        let Shared {
            books,
            pending,
            journal: Some(journal),
            ..
        } = &mut *shared
        else {
            return Err(Box::new(hold));
        };
        let b = &books[&hold.user_id];
        let amount = hold.amount_micro.max(0);
        let already = pending.get(&hold.user_id).copied().unwrap_or(0);
        if b.admit(amount, already) != Admission::Admitted {
            return Err(Box::new(hold));
        }
        if let Err(e) = journal.append(&RecordRef::Hold { hold: &hold, at }) {
            tracing::error!(error = %e, "wallet journal: cannot append; the writer decides");
            return Err(Box::new(hold));
        }
        *pending.entry(hold.user_id.clone()).or_default() += amount;
        let _ = self.queue.send(Op {
            job: Job::Journaled {
                hold,
                at,
                counted: false,
            },
            answer: Answer::Nobody,
        });
        Ok(Reservation {
            admission: Admission::Admitted,
            committed: Box::pin(std::future::ready(Ok(()))),
        })
    }
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, WalletError>>) -> Result<T, WalletError> {
    rx.await.map_err(|_| failed())?
}

#[async_trait::async_trait]
impl Wallet for WalletHandle {
    async fn account(&self, workspace: &WorkspaceId) -> Result<Option<Account>, WalletError> {
        // A change of AI mode in this process moves the generation after its commit: the next
        // call reads again (an atomic load, no query). Other processes' changes: the TTL.
        let generation = self.app.ai_generation();
        if let Some((at, seen, a)) = self
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(workspace)
        {
            if at.elapsed() < ACCOUNT_TTL && *seen == generation {
                return Ok(Some(a.clone()));
            }
        }
        let row = self
            .app
            .store
            .ai_account(workspace.as_str())
            .await
            .map_err(store_err)?;
        let account = row.map(|w| Account {
            managed: super::byok::effective_mode(w.workspace_mode.as_deref(), &w.account_mode)
                == rigbox_types::api::AiMode::Managed,
            user_id: w.user_id,
            workspace_name: w.workspace_name,
        });
        let mut cache = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        match &account {
            Some(a) => {
                if cache.len() > 10_000 {
                    cache.retain(|_, (at, _, _)| at.elapsed() < ACCOUNT_TTL);
                }
                cache.insert(workspace.clone(), (Instant::now(), generation, a.clone()));
            }
            None => {
                cache.remove(workspace);
            }
        }
        Ok(account)
    }

    async fn reserve(&self, hold: Hold) -> Result<Reservation, WalletError> {
        let hold = match self.admit_here(hold) {
            Ok(admitted) => return Ok(admitted),
            Err(hold) => *hold,
        };
        let (decided, decision) = oneshot::channel();
        let (committed, commit) = oneshot::channel();
        // When the writer has stopped, `decision` reports it (its sender is dropped with the op).
        let _ = self.queue.send(Op {
            job: Job::Reserve {
                hold,
                admitted: None,
            },
            answer: Answer::Admission {
                decided: Some(decided),
                committed,
            },
        });
        Ok(Reservation {
            admission: answer(decision).await?,
            committed: Box::pin(answer(commit)),
        })
    }

    fn settle(&self, charge: Charge) -> Settlement {
        Box::pin(answer(self.queue(Job::Settle(charge), Answer::Closed)))
    }

    async fn release(&self, request_id: &str) -> Result<bool, WalletError> {
        answer(self.queue(Job::Release(request_id.to_owned()), Answer::Closed)).await
    }

    async fn reconcile(
        &self,
        node_id: &str,
        incarnation: &str,
        max_age_secs: u64,
    ) -> Result<u64, WalletError> {
        // What the journal held at start-up is in the store once the writer has replayed it.
        self.app.wallet_synced().await?;
        let before = self.app.now() - (max_age_secs as i64) * 1_000_000;
        let holds = self
            .app
            .store
            .orphaned_holds(self.app.store.pool(), node_id, incarnation, before)
            .await
            .map_err(store_err)?;
        // All queued first: they commit together.
        let pending: Vec<Settlement> = holds
            .into_iter()
            .map(|hold| {
                self.settle(Charge {
                    request_id: hold.id,
                    cost_micro: hold.amount_micro,
                    cost_usd: None,
                    input_tokens: None,
                    output_tokens: None,
                    estimated: true,
                })
            })
            .collect();
        let mut settled = 0;
        for p in pending {
            if p.await? {
                settled += 1;
            }
        }
        Ok(settled)
    }

    async fn subject_use(
        &self,
        user_id: &str,
        subject: &str,
        window_secs: u64,
    ) -> Result<SubjectUse, WalletError> {
        // What was admitted and settled before is in the store once the writer has applied
        // what it holds (journaled operations wait up to `BATCH_WAIT` for company otherwise).
        self.app.wallet_synced().await?;
        let since = self.app.now() - (window_secs as i64) * 1_000_000;
        let charges = self
            .app
            .store
            .subject_charges(user_id, subject, since)
            .await
            .map_err(store_err)?;
        let admitted = self
            .app
            .store
            .subject_admitted(user_id, subject, since)
            .await
            .map_err(store_err)?;
        Ok(SubjectUse {
            credits_micro: charges.credits_micro,
            requests: admitted.max(0) as u64,
        })
    }
}
