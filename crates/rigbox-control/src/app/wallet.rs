//! The credit wallet's write side for the AI proxy (bridge-and-ai.md §8): holds at admission,
//! settlement with its ledger charge, release, and the reconciler of orphaned holds.
//!
//! One writer task applies every hold operation, in batches: it takes what is queued, runs it
//! all in one `BEGIN IMMEDIATE` transaction and answers each caller after the commit (group
//! commit). A hold moves out of `open` through a conditional update, so it is settled or
//! released exactly once whoever tries. The statements run inline on the writer task's thread
//! ([`WalletDb`], a few µs each; a batch larger than [`INLINE_BATCH`] moves off the runtime's
//! core with `block_in_place`), so an operation costs no hand-off between threads beyond the
//! tasks' own wake-ups.
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
use super::App;
use crate::store::{HoldRow, LedgerRow, StoreError, WalletDb};
use rigbox_types::wallet::{
    Account, Admission, Charge, Hold, Settlement, SubjectUse, Wallet, WalletError,
};
use rigbox_types::WorkspaceId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 256;
/// Batches up to this size run on the writer task's thread as they are (tens of µs); larger
/// ones in `block_in_place` (on a multi-threaded runtime), so other tasks move to another core.
const INLINE_BATCH: usize = 16;
/// How long the writer waits before trying again for the write lock another connection holds.
const BUSY_RETRY: Duration = Duration::from_micros(500);
/// Operations between passive WAL checkpoints (a request writes ~12 WAL pages).
const CHECKPOINT_EVERY: usize = 200;
/// Open holds remembered at most (more are read back from the store when they close).
const MAX_KNOWN_HOLDS: usize = 100_000;
/// How long a workspace → owner answer is reused (the owner of a workspace never changes; its
/// name may, and the ledger records the name at most this stale).
const ACCOUNT_TTL: Duration = Duration::from_secs(2);

/// The writer's queue (unbounded: every caller waits for its answer, so it holds at most one
/// operation per request in flight).
pub(crate) type Queue = mpsc::UnboundedSender<Op>;

/// One queued operation and where its answer goes.
pub(crate) struct Op {
    job: Job,
    answer: Answer,
}

enum Job {
    Reserve(Hold),
    Settle(Charge),
    Release(String),
    /// Nothing to write: answered once everything queued before it is committed.
    Sync,
}

enum Answer {
    Admission(oneshot::Sender<Result<Admission, WalletError>>),
    Closed(oneshot::Sender<Result<bool, WalletError>>),
    Synced(oneshot::Sender<Result<(), WalletError>>),
}

enum Outcome {
    Admission(Admission),
    Closed(bool),
    Synced,
}

impl Answer {
    fn send(self, outcome: Outcome) {
        // A caller that went away does not need its answer.
        match (self, outcome) {
            (Answer::Admission(tx), Outcome::Admission(a)) => drop(tx.send(Ok(a))),
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

/// The writer task's state; everything but `app` and `conn` is a cache of the store.
struct Writer {
    app: Arc<App>,
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
    /// Starts the wallet's writer task; it runs as long as the runtime (the App keeps its
    /// queue for [`App::wallet_synced`]).
    pub fn start_wallet(self: &Arc<Self>) -> WalletHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        if self.wallet_queue.set(tx.clone()).is_err() {
            tracing::warn!("a second wallet writer was started");
        }
        tokio::spawn(Writer::run(self.clone(), rx));
        WalletHandle {
            app: self.clone(),
            ops: tx,
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
    async fn run(app: Arc<App>, mut rx: mpsc::UnboundedReceiver<Op>) {
        let db = match app.store.wallet_db() {
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
                while let Some(op) = rx.recv().await {
                    if let Answer::Synced(tx) = op.answer {
                        let _ = tx.send(Ok(()));
                    }
                }
                return;
            }
        };
        let mut w = Writer {
            app,
            db,
            books: HashMap::new(),
            books_version: i64::MIN,
            known: HashMap::new(),
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut since_checkpoint = 0usize;
        let checkpointing = Arc::new(AtomicBool::new(false));
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            since_checkpoint += batch.len();
            w.apply_batch(std::mem::take(&mut batch)).await;
            // The writer never checkpoints in its commits: a passive checkpoint runs beside it
            // every few hundred operations, one at a time.
            if since_checkpoint >= CHECKPOINT_EVERY && !checkpointing.swap(true, Ordering::AcqRel) {
                since_checkpoint = 0;
                let app = w.app.clone();
                let flag = checkpointing.clone();
                tokio::spawn(async move {
                    if let Err(e) = app.store.checkpoint().await {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                    flag.store(false, Ordering::Release);
                });
            }
        }
    }

    /// Applies a batch in one transaction and answers after the commit. When it fails, each
    /// operation is tried again in a transaction of its own, so one bad operation (a hold for a
    /// user deleted meanwhile) fails alone; its caller gets an error.
    async fn apply_batch(&mut self, batch: Vec<Op>) {
        let (jobs, answers): (Vec<Job>, Vec<Answer>) =
            batch.into_iter().map(|op| (op.job, op.answer)).unzip();
        match self.apply(&jobs).await {
            Ok(outcomes) => answers
                .into_iter()
                .zip(outcomes)
                .for_each(|(a, o)| a.send(o)),
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), ops = jobs.len(), "wallet transaction failed");
                if jobs.len() > 1 {
                    for (job, answer) in jobs.into_iter().zip(answers) {
                        match self.apply(std::slice::from_ref(&job)).await {
                            Ok(mut o) => answer.send(o.remove(0)),
                            Err(e) => {
                                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "wallet operation failed")
                            }
                        }
                    }
                }
            }
        }
    }

    /// One transaction: waits (without blocking its thread) for the write lock, then runs and
    /// commits synchronously. On failure it is rolled back and the caches are dropped with it.
    async fn apply(&mut self, jobs: &[Job]) -> Result<Vec<Outcome>, StoreError> {
        loop {
            match self.db.begin() {
                Ok(()) => break,
                Err(e) if WalletDb::is_busy(&e) => tokio::time::sleep(BUSY_RETRY).await,
                Err(e) => return Err(e),
            }
        }
        let multi_threaded = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let result = if jobs.len() > INLINE_BATCH && multi_threaded {
            tokio::task::block_in_place(|| self.locked(jobs))
        } else {
            self.locked(jobs)
        };
        if result.is_err() {
            self.db.rollback();
            self.books.clear();
            self.known.clear();
        }
        result
    }

    /// The jobs and the commit, under the write lock.
    fn locked(&mut self, jobs: &[Job]) -> Result<Vec<Outcome>, StoreError> {
        // Read under the write lock: whatever another connection wrote is committed.
        let version = self.db.data_version()?;
        if version != self.books_version {
            self.books.clear();
            self.books_version = version;
        }
        let now = self.app.now();
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            outcomes.push(match job {
                Job::Reserve(h) => Outcome::Admission(self.reserve(h, now)?),
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

    fn reserve(&mut self, h: &Hold, now: i64) -> Result<Admission, StoreError> {
        let amount = h.amount_micro.max(0);
        if amount > 0 {
            let b = self.books_of(&h.user_id)?;
            let available = b.balance - b.reserved;
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
        let row = HoldRow::open(h, now);
        self.db.insert_hold(&row)?;
        if let Some(b) = self.books.get_mut(&h.user_id) {
            b.reserved += amount;
        }
        if self.known.len() >= MAX_KNOWN_HOLDS {
            self.known.clear();
        }
        self.known.insert(row.id.clone(), row);
        Ok(Admission::Admitted)
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

    async fn reserve(&self, hold: Hold) -> Result<Admission, WalletError> {
        answer(self.queue(Job::Reserve(hold), Answer::Admission)).await
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
        let mut settled = 0;
        for hold in holds {
            let charge = Charge {
                request_id: hold.id,
                cost_micro: hold.amount_micro,
                cost_usd: None,
                input_tokens: None,
                output_tokens: None,
                estimated: true,
            };
            if self.settle(charge).await? {
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
