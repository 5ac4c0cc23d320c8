//! The credit wallet's write side for the AI proxy (bridge-and-ai.md §8): holds at admission,
//! settlement with its ledger charge, release, and the reconciler of orphaned holds.
//!
//! One writer applies every hold operation, in batches: it takes what is queued, runs it all
//! in one `BEGIN IMMEDIATE` transaction and answers each caller after the commit (group
//! commit). Admission is the exception: it is decided first, under the write lock, and answered
//! at once, so the proxy calls the upstream while the hold commits; the proxy relays nothing
//! before that commit. Settlements alone wait up to `SETTLE_WAIT` for company (the next
//! request's hold, usually), so a client sending one request at a time costs one commit per
//! request. A hold moves out of `open` through a conditional update, so it is settled or
//! released exactly once whoever tries.
//!
//! The writer is a thread of its own with a synchronous connection ([`WalletDb`]): a commit
//! writes a dozen WAL pages (~0.1 ms here), which on a runtime worker would hold up every task
//! queued behind it, the proxied requests' own included.
//!
//! The writer keeps each user's books (balance, last ledger `seq`, sum of open holds) and the
//! open holds it knows in memory, so admission is decided without a query and a request costs
//! one statement at reserve and two at settle. The books are a cache of committed state: they
//! are dropped when a transaction fails, and when any other connection has committed since the
//! writer's last transaction (SQLite's `data_version`, read once its own `BEGIN IMMEDIATE` holds
//! the write lock): another ledger writer (monthly reset, plan change, an adjustment by the API
//! or by `rigboxd admin` in another process) is never missed, so the writer never builds on a
//! stale balance. This assumes one wallet writer per database (one control plane, as in the
//! one-machine mode): the open-hold sums are the writer's alone.

use super::credits::period_of;
use super::{App, Clock};
use crate::store::{HoldRow, LedgerRow, Store, StoreError, WalletDb};
use rigbox_types::wallet::{
    Account, Admission, Charge, Hold, Reservation, Settlement, SubjectUse, Wallet, WalletError,
};
use rigbox_types::WorkspaceId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 256;
/// How long a batch of settlements alone waits for more operations before it commits (its
/// callers have answered their clients; the holds it closes are durable meanwhile).
const SETTLE_WAIT: Duration = Duration::from_millis(1);
/// How long the writer waits before trying again for the write lock another connection holds.
const BUSY_RETRY: Duration = Duration::from_micros(500);
/// A passive WAL checkpoint runs beside the writer once it has been idle this long, or after
/// [`CHECKPOINT_EVERY`] operations at the latest. A checkpoint competes with the requests for
/// the CPU and the disk while it runs: every 200 operations it slowed 1% of requests by 1–2 ms
/// (the p99); in a pause it slows none.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(20);
/// Most operations between checkpoints, under load that leaves no pause (two per request; a
/// request writes ~12 WAL pages when alone in its commit, fewer when batched, so the WAL grows to
/// ~100 MB at most). A page rewritten by many commits is copied to the database once per
/// checkpoint.
const CHECKPOINT_EVERY: usize = 4_000;
/// Open holds remembered at most (more are read back from the store when they close).
const MAX_KNOWN_HOLDS: usize = 100_000;
/// How long a workspace → owner answer is reused (the owner of a workspace never changes; its
/// name may, and the ledger records the name at most this stale).
const ACCOUNT_TTL: Duration = Duration::from_secs(2);

/// The writer's queue (unbounded: every caller waits for its answer, so it holds at most one
/// operation per request in flight).
pub(crate) type Queue = mpsc::Sender<Op>;

/// One queued operation and where its answer goes.
pub(crate) struct Op {
    job: Job,
    answer: Answer,
}

enum Job {
    /// `admitted` once decided: a hold retried after its batch failed is written without
    /// deciding again (its caller may be calling the upstream already).
    Reserve {
        hold: Hold,
        admitted: Option<bool>,
    },
    Settle(Charge),
    Release(String),
    /// Nothing to write: answered once everything queued before it is committed.
    Sync,
}

enum Answer {
    /// The decision, sent before the commit, and the commit.
    Admission {
        decided: Option<oneshot::Sender<Result<Admission, WalletError>>>,
        committed: oneshot::Sender<Result<(), WalletError>>,
    },
    Closed(oneshot::Sender<Result<bool, WalletError>>),
    Synced(oneshot::Sender<Result<(), WalletError>>),
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
            _ => unreachable!("every job has its own kind of answer"),
        }
    }
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

/// The writer thread's state; everything but `clock` and `db` is a cache of the store.
struct Writer {
    clock: Arc<dyn Clock>,
    db: WalletDb,
    books: HashMap<String, Books>,
    /// The database's `data_version` the books were read at.
    books_version: i64,
    /// Open holds by request ID, as written at reserve.
    known: HashMap<String, HoldRow>,
}

/// The wallet as the AI proxy sees it (implements [`Wallet`]).
#[derive(Clone)]
pub struct WalletHandle {
    app: Arc<App>,
    ops: Queue,
    accounts: Arc<Mutex<HashMap<WorkspaceId, (Instant, Account)>>>,
}

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
        let ops = self
            .wallet_queue
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel();
                let (store, clock) = (self.store.clone(), self.clock.clone());
                let rt = tokio::runtime::Handle::current();
                let spawned = std::thread::Builder::new()
                    .name("rigbox-wallet".into())
                    .spawn(move || Writer::run(store, clock, rt, rx));
                if let Err(e) = spawned {
                    // Every operation then fails (its answer is dropped with the queue).
                    tracing::error!(error = %e, "wallet: cannot start its writer thread");
                }
                tx
            })
            .clone();
        WalletHandle {
            app: self.clone(),
            ops,
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
        queue
            .send(Op {
                job: Job::Sync,
                answer: Answer::Synced(tx),
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| failed())?
    }
}

impl Writer {
    fn run(
        store: Store,
        clock: Arc<dyn Clock>,
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
            books: HashMap::new(),
            books_version: i64::MIN,
            known: HashMap::new(),
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut since_checkpoint = 0usize;
        let checkpointing = Arc::new(AtomicBool::new(false));
        let take_queued = |batch: &mut Vec<Op>| {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
        };
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
            batch.push(op);
            take_queued(&mut batch);
            if batch.len() < MAX_BATCH && batch.iter().all(|op| matches!(op.job, Job::Settle(_))) {
                if let Ok(op) = rx.recv_timeout(SETTLE_WAIT) {
                    batch.push(op);
                    take_queued(&mut batch);
                }
            }
            since_checkpoint += batch.len();
            w.apply_batch(std::mem::take(&mut batch));
            if since_checkpoint >= CHECKPOINT_EVERY {
                checkpoint(&mut since_checkpoint);
            }
        }
    }

    /// Applies a batch in one transaction and answers after the commit. When it fails, each
    /// operation is tried again in a transaction of its own, so one bad operation (a hold for a
    /// user deleted meanwhile) fails alone; its caller gets an error.
    fn apply_batch(&mut self, mut batch: Vec<Op>) {
        match self.apply(&mut batch) {
            Ok(outcomes) => batch
                .into_iter()
                .zip(outcomes)
                .for_each(|(op, o)| op.answer.send(o)),
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), ops = batch.len(), "wallet transaction failed");
                if batch.len() > 1 {
                    for op in batch {
                        let mut one = [op];
                        match self.apply(&mut one) {
                            Ok(mut o) => {
                                let [op] = one;
                                op.answer.send(o.remove(0))
                            }
                            Err(e) => {
                                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "wallet operation failed")
                            }
                        }
                    }
                }
            }
        }
    }

    /// One transaction: waits for the write lock, decides the holds, writes and commits. On
    /// failure it is rolled back and the caches are dropped with it.
    fn apply(&mut self, ops: &mut [Op]) -> Result<Vec<Outcome>, StoreError> {
        loop {
            match self.db.begin() {
                Ok(()) => break,
                Err(e) if WalletDb::is_busy(&e) => std::thread::sleep(BUSY_RETRY),
                Err(e) => return Err(e),
            }
        }
        let result = self.decide(ops).and_then(|()| self.write(ops));
        if result.is_err() {
            self.db.rollback();
            self.books.clear();
            self.known.clear();
        }
        result
    }

    /// Decides every hold of the batch, under the write lock, and answers each at once.
    fn decide(&mut self, ops: &mut [Op]) -> Result<(), StoreError> {
        // Read under the write lock: whatever another connection wrote is committed.
        let version = self.db.data_version()?;
        if version != self.books_version {
            self.books.clear();
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
    fn write(&mut self, ops: &[Op]) -> Result<Vec<Outcome>, StoreError> {
        let now = self.clock.now_micros();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(match &op.job {
                Job::Reserve { hold, admitted } => {
                    if *admitted == Some(true) {
                        self.write_hold(hold, now)?;
                    }
                    Outcome::Committed
                }
                Job::Settle(c) => Outcome::Closed(self.settle(c, now)?),
                Job::Release(id) => Outcome::Closed(self.release(id, now)?),
                Job::Sync => Outcome::Synced,
            });
        }
        self.db.commit()?;
        Ok(outcomes)
    }

    /// The user's books, read from the store the first time (within the transaction, so they
    /// include its own writes).
    fn books_of(&mut self, user: &str) -> Result<&mut Books, StoreError> {
        if !self.books.contains_key(user) {
            let (balance, seq) = self.db.balance(user)?;
            let reserved = self.db.reserved(user)?;
            self.books.insert(
                user.to_owned(),
                Books {
                    balance,
                    seq,
                    reserved,
                },
            );
        }
        Ok(self.books.get_mut(user).expect("inserted above"))
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
        let b = self.books_of(&h.user_id)?;
        let available = b.balance - b.reserved;
        if !admitted_before {
            if available <= 0 {
                return Ok(Admission::Exhausted {
                    available_micro: available,
                });
            }
            if available < amount {
                return Ok(Admission::Insufficient {
                    available_micro: available,
                    estimate_micro: amount,
                });
            }
        }
        b.reserved += amount;
        Ok(Admission::Admitted)
    }

    /// Writes an admitted hold.
    fn write_hold(&mut self, h: &Hold, now: i64) -> Result<(), StoreError> {
        let row = HoldRow::open(h, now);
        self.db.insert_hold(&row)?;
        if self.known.len() >= MAX_KNOWN_HOLDS {
            self.known.clear();
        }
        self.known.insert(row.id.clone(), row);
        Ok(())
    }

    /// Settles an open hold and writes its charge; false when it was not open.
    fn settle(&mut self, c: &Charge, now: i64) -> Result<bool, StoreError> {
        let Some(hold) = self.open_hold(&c.request_id)? else {
            return Ok(false);
        };
        // Read before the hold closes: the books then count it as reserved.
        self.books_of(&hold.user_id)?;
        if !self.db.close_hold(&hold.id, "settled", now)? {
            return Ok(false);
        }
        let cost = c.cost_micro.max(0);
        let b = self.books.get_mut(&hold.user_id).expect("read above");
        b.reserved -= hold.amount_micro;
        b.balance -= cost;
        b.seq += 1;
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
            ..LedgerRow::entry(&hold.user_id, b.seq, "charge", -cost, b.balance, now)
        };
        self.db.insert_ledger(&entry)?;
        Ok(true)
    }

    fn release(&mut self, id: &str, now: i64) -> Result<bool, StoreError> {
        let Some(hold) = self.open_hold(id)? else {
            return Ok(false);
        };
        if !self.db.close_hold(id, "released", now)? {
            return Ok(false);
        }
        if let Some(b) = self.books.get_mut(&hold.user_id) {
            b.reserved -= hold.amount_micro;
        }
        Ok(true)
    }
}

impl LedgerRow {
    /// A new entry: `seq` follows the user's newest entry, `balance_after` is the balance
    /// with `amount` applied.
    pub(crate) fn entry(
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
    fn queue<T>(
        &self,
        job: Job,
        answer: impl FnOnce(oneshot::Sender<Result<T, WalletError>>) -> Answer,
    ) -> oneshot::Receiver<Result<T, WalletError>> {
        let (tx, rx) = oneshot::channel();
        // When the writer has stopped, `rx` reports it (its sender is dropped with the op).
        let _ = self.ops.send(Op {
            job,
            answer: answer(tx),
        });
        rx
    }
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, WalletError>>) -> Result<T, WalletError> {
    rx.await.map_err(|_| failed())?
}

#[async_trait::async_trait]
impl Wallet for WalletHandle {
    async fn account(&self, workspace: &WorkspaceId) -> Result<Option<Account>, WalletError> {
        if let Some((at, a)) = self
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(workspace)
        {
            if at.elapsed() < ACCOUNT_TTL {
                return Ok(Some(a.clone()));
            }
        }
        let row = self
            .app
            .store
            .workspace_by_id(self.app.store.pool(), workspace.as_str())
            .await
            .map_err(store_err)?;
        let account = row.map(|w| Account {
            user_id: w.user_id,
            workspace_name: w.name,
            // BYOK mode is not offered yet: every workspace is managed.
            managed: true,
        });
        let mut cache = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        match &account {
            Some(a) => {
                if cache.len() > 10_000 {
                    cache.retain(|_, (at, _)| at.elapsed() < ACCOUNT_TTL);
                }
                cache.insert(workspace.clone(), (Instant::now(), a.clone()));
            }
            None => {
                cache.remove(workspace);
            }
        }
        Ok(account)
    }

    async fn reserve(&self, hold: Hold) -> Result<Reservation, WalletError> {
        let (decided, decision) = oneshot::channel();
        let (committed, commit) = oneshot::channel();
        // When the writer has stopped, `decision` reports it (its sender is dropped with the op).
        let _ = self.ops.send(Op {
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
