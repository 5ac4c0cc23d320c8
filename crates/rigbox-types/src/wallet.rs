//! What the AI proxy needs from the credit wallet (bridge-and-ai.md §8), as a trait: the
//! control plane implements it over its store (in-process in one-machine mode), the proxy
//! (`rigbox-ai`) calls it.
//!
//! Contract: every admitted request has exactly one hold, named by its request ID; `settle`
//! and `release` move it out of `open` at most once (a second call is a no-op answering
//! `false`), and a settle writes its ledger charge in the same transaction.

use crate::WorkspaceId;
use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;

/// The outcome of a queued settlement (see [`Wallet::settle`]).
pub type Settlement = Pin<Box<dyn Future<Output = Result<bool, WalletError>> + Send>>;

/// The commit of an admitted hold (see [`Wallet::reserve`]).
pub type Committed = Pin<Box<dyn Future<Output = Result<(), WalletError>> + Send>>;

/// An admission decision and the commit of its hold (see [`Wallet::reserve`]).
pub struct Reservation {
    pub admission: Admission,
    /// Resolves once the hold is committed (at once when the request was refused).
    pub committed: Committed,
}

impl Reservation {
    /// Waits for the hold's commit: the admission, once it is durable.
    pub async fn durable(self) -> Result<Admission, WalletError> {
        self.committed.await?;
        Ok(self.admission)
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

/// Who pays for a workspace's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: String,
    pub workspace_name: String,
    /// `false` in BYOK mode: the proxy answers 403 `managed_ai_disabled`.
    pub managed: bool,
}

/// A hold to create at admission.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    /// The request ID (`X-Rigbox-Request-Id`), also the hold's ID.
    pub request_id: String,
    pub user_id: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub node_id: String,
    /// The proxy process admitting it; open holds of another incarnation are orphans.
    pub incarnation: String,
    pub endpoint: String,
    pub model: Option<String>,
    pub subject: Option<String>,
    pub amount_micro: i64,
}

/// The wallet's answer to a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// `available ≤ 0`.
    Exhausted {
        available_micro: i64,
    },
    /// `available < estimate`.
    Insufficient {
        available_micro: i64,
        estimate_micro: i64,
    },
}

/// The final cost of a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Charge {
    pub request_id: String,
    pub cost_micro: i64,
    pub cost_usd: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Computed without the upstream's usage.
    pub estimated: bool,
}

/// A subject's recorded use in a trailing window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubjectUse {
    /// Settled charges, microcredits.
    pub credits_micro: i64,
    /// Admitted requests (settled, released or open).
    pub requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("wallet: {0}")]
pub struct WalletError(pub String);

#[async_trait]
pub trait Wallet: Send + Sync + 'static {
    /// The owner of `workspace`, or `None` when it does not exist (any more).
    async fn account(&self, workspace: &WorkspaceId) -> Result<Option<Account>, WalletError>;
    /// Creates the hold if the owner's available funds cover it (an amount of 0 is always
    /// admitted), atomically with respect to every other hold. Returns once admission is
    /// decided; the hold is durable when the reservation's `committed` resolves. The caller
    /// may call the upstream meanwhile (the commit overlaps the upstream's round trip) but
    /// relays nothing of its answer before the hold is committed: a client never gets an
    /// answer whose hold a crash could lose.
    async fn reserve(&self, hold: Hold) -> Result<Reservation, WalletError>;
    /// Settles an open hold at `charge.cost_micro` and writes its ledger entry. The settlement
    /// is queued before this returns, so the caller can answer its client without waiting for
    /// the commit while every wallet read ordered after the call still sees the charge; the
    /// returned future gives the outcome: `false` when the hold was already settled or
    /// released. Dropping the future does not cancel the settlement; the wallet then logs its
    /// failure or a hold found closed itself.
    fn settle(&self, charge: Charge) -> Settlement;
    /// Releases an open hold without a charge; `false` when it was not open.
    async fn release(&self, request_id: &str) -> Result<bool, WalletError>;
    /// Settles at their reserved amount (`estimated`) the open holds of `node_id` admitted by
    /// another incarnation, and any open hold older than `max_age_secs`; returns how many.
    async fn reconcile(
        &self,
        node_id: &str,
        incarnation: &str,
        max_age_secs: u64,
    ) -> Result<u64, WalletError>;
    /// A subject's settled spend and admitted requests over the last `window_secs`.
    async fn subject_use(
        &self,
        user_id: &str,
        subject: &str,
        window_secs: u64,
    ) -> Result<SubjectUse, WalletError>;
}
