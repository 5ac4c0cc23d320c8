//! The credit wallet's write side for the AI proxy (bridge-and-ai.md §8): holds at admission,
//! settlement with its ledger charge, release, and the reconciler of orphaned holds.
//!
//! One writer task applies every hold operation, in batches: it takes what is queued, runs it
//! all in one `BEGIN IMMEDIATE` transaction and answers each caller after the commit (group
//! commit). Admission reads `balance − open holds` inside that transaction, so concurrent
//! requests can never reserve the same funds twice, and a hold moves out of `open` through a
//! conditional update, so it is settled or released exactly once whoever tries.

use super::credits::period_of;
use super::App;
use crate::store::{HoldRow, LedgerRow, StoreError};
use rigbox_types::wallet::{Account, Admission, Charge, Hold, SubjectUse, Wallet, WalletError};
use rigbox_types::WorkspaceId;
use sqlx::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 256;
/// Operations between passive WAL checkpoints (a request writes ~15 WAL pages).
const CHECKPOINT_EVERY: usize = 200;

enum Op {
    Reserve(Hold, oneshot::Sender<Result<Admission, WalletError>>),
    Settle(Charge, oneshot::Sender<Result<bool, WalletError>>),
    Release(String, oneshot::Sender<Result<bool, WalletError>>),
}

/// How long a workspace → owner answer is reused (the owner of a workspace never changes; its
/// name may, and the ledger records the name at most this stale).
const ACCOUNT_TTL: Duration = Duration::from_secs(2);

/// The wallet as the AI proxy sees it (implements [`Wallet`]).
#[derive(Clone)]
pub struct WalletHandle {
    app: Arc<App>,
    ops: mpsc::Sender<Op>,
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

impl App {
    /// Starts the wallet's writer task; it ends when every handle is dropped.
    pub fn start_wallet(self: &Arc<Self>) -> WalletHandle {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(self.clone().wallet_writer(rx));
        WalletHandle {
            app: self.clone(),
            ops: tx,
            accounts: Arc::default(),
        }
    }

    async fn wallet_writer(self: Arc<Self>, mut rx: mpsc::Receiver<Op>) {
        let mut own = match self.store.dedicated_writer().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "wallet: no dedicated connection, sharing the pool");
                None
            }
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut since_checkpoint = 0usize;
        let checkpointing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            since_checkpoint += batch.len();
            self.apply_batch(own.as_mut(), std::mem::take(&mut batch))
                .await;
            // The writer never checkpoints in its commits: a passive checkpoint runs beside it
            // every few hundred operations, one at a time.
            if own.is_some()
                && since_checkpoint >= CHECKPOINT_EVERY
                && !checkpointing.swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                since_checkpoint = 0;
                let app = self.clone();
                let flag = checkpointing.clone();
                tokio::spawn(async move {
                    if let Err(e) = app.store.checkpoint().await {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                    flag.store(false, std::sync::atomic::Ordering::Release);
                });
            }
        }
    }

    /// Applies a batch in one transaction (on `own`, else a pooled connection) and answers after
    /// the commit. On a failure every caller of the batch gets an error (its answer channel is
    /// dropped) and nothing of the batch is kept.
    async fn apply_batch(&self, own: Option<&mut sqlx::SqliteConnection>, batch: Vec<Op>) {
        let n = batch.len();
        let outcome: Result<Vec<Reply>, StoreError> = async {
            let mut pooled;
            let conn: &mut sqlx::SqliteConnection = match own {
                Some(c) => c,
                None => {
                    pooled = self.store.pool().acquire().await?;
                    &mut pooled
                }
            };
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let now = self.now();
            let mut replies = Vec::with_capacity(n);
            for op in batch {
                replies.push(match op {
                    Op::Reserve(h, reply) => {
                        Reply::Reserve(reply, self.reserve_in(&mut tx, &h, now).await?)
                    }
                    Op::Settle(c, reply) => {
                        Reply::Closed(reply, self.settle_in(&mut tx, &c, now).await?)
                    }
                    Op::Release(id, reply) => Reply::Closed(
                        reply,
                        self.store
                            .close_hold(&mut *tx, &id, "released", now)
                            .await?
                            .is_some(),
                    ),
                });
            }
            tx.commit().await?;
            Ok(replies)
        }
        .await;
        match outcome {
            Ok(replies) => {
                for r in replies {
                    match r {
                        Reply::Reserve(tx, a) => {
                            let _ = tx.send(Ok(a));
                        }
                        Reply::Closed(tx, b) => {
                            let _ = tx.send(Ok(b));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), ops = n, "wallet transaction failed")
            }
        }
    }

    async fn balance_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        user: &str,
    ) -> Result<(i64, i64), StoreError> {
        let last = self.store.last_ledger_entry(&mut *conn, user).await?;
        let balance = last.map_or(0, |l| l.balance_after_micro);
        let reserved = self.store.sum_open_holds_micro(&mut *conn, user).await?;
        Ok((balance, reserved))
    }

    async fn reserve_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        h: &Hold,
        now: i64,
    ) -> Result<Admission, StoreError> {
        if h.amount_micro > 0 {
            let (balance, reserved) = self.balance_in(conn, &h.user_id).await?;
            let available = balance - reserved;
            if available <= 0 {
                return Ok(Admission::Exhausted {
                    available_micro: available,
                });
            }
            if available < h.amount_micro {
                return Ok(Admission::Insufficient {
                    available_micro: available,
                    estimate_micro: h.amount_micro,
                });
            }
        }
        self.store
            .insert_hold(
                &mut *conn,
                &HoldRow {
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
                },
            )
            .await?;
        Ok(Admission::Admitted)
    }

    /// Settles an open hold and writes its charge; false when it was not open.
    async fn settle_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        c: &Charge,
        now: i64,
    ) -> Result<bool, StoreError> {
        let Some(hold) = self
            .store
            .close_hold(&mut *conn, &c.request_id, "settled", now)
            .await?
        else {
            return Ok(false);
        };
        let last = self
            .store
            .last_ledger_entry(&mut *conn, &hold.user_id)
            .await?;
        let old = last.as_ref().map_or(0, |l| l.balance_after_micro);
        let cost = c.cost_micro.max(0);
        self.store
            .insert_ledger(
                &mut *conn,
                &LedgerRow {
                    id: uuid::Uuid::new_v4().to_string(),
                    user_id: hold.user_id.clone(),
                    seq: last.map_or(1, |l| l.seq + 1),
                    kind: "charge".into(),
                    amount_micro: -cost,
                    balance_after_micro: old - cost,
                    period_start: period_of(now).0,
                    note: None,
                    created_at: now,
                    workspace_id: Some(hold.workspace_id),
                    workspace_name: Some(hold.workspace_name),
                    request_id: Some(hold.id),
                    endpoint: Some(hold.endpoint),
                    model: hold.model,
                    input_tokens: c.input_tokens.map(|t| t as i64),
                    output_tokens: c.output_tokens.map(|t| t as i64),
                    cost_usd: c.cost_usd,
                    estimated: c.estimated,
                    subject: hold.subject,
                },
            )
            .await?;
        Ok(true)
    }
}

/// An answer to send once the batch is committed.
enum Reply {
    Reserve(oneshot::Sender<Result<Admission, WalletError>>, Admission),
    Closed(oneshot::Sender<Result<bool, WalletError>>, bool),
}

impl WalletHandle {
    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, WalletError>>) -> Op,
    ) -> Result<T, WalletError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(op(tx))
            .await
            .map_err(|_| WalletError("the wallet writer has stopped".into()))?;
        rx.await.map_err(|_| {
            WalletError("the wallet transaction failed (see the rigboxd log)".into())
        })?
    }
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
        self.call(|tx| Op::Reserve(hold, tx)).await
    }

    async fn settle(&self, charge: Charge) -> Result<bool, WalletError> {
        self.call(|tx| Op::Settle(charge, tx)).await
    }

    async fn release(&self, request_id: &str) -> Result<bool, WalletError> {
        let id = request_id.to_owned();
        self.call(|tx| Op::Release(id, tx)).await
    }

    async fn reconcile(
        &self,
        node_id: &str,
        incarnation: &str,
        max_age_secs: u64,
    ) -> Result<u64, WalletError> {
        let before = self.app.now() - (max_age_secs as i64) * 1_000_000;
        let ids = self
            .app
            .store
            .orphaned_holds(self.app.store.pool(), node_id, incarnation, before)
            .await
            .map_err(store_err)?;
        let mut settled = 0;
        for id in ids {
            let Some(hold) = self.app.store.hold(&id).await.map_err(store_err)? else {
                continue;
            };
            let charge = Charge {
                request_id: id,
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
