//! The wallet writer (`app/wallet.rs`) against the real store and the public credit reads: the
//! balances it keeps in memory follow the other ledger writers, a settlement queued but not yet
//! awaited is seen by every read that follows, a ledger write by another control plane over the
//! same file is seen at once, a hold is closed once, one failing operation
//! does not fail the others of its batch, and waiting for another writer's lock blocks nothing.

use rigbox_control::App;
use rigbox_testkit::{Client, TestPlatform};
use rigbox_types::wallet::{Admission, Charge, Hold, Wallet, WalletError};
use serde_json::{json, Value};
use std::sync::Arc;

fn hold(user: &str, ws: &str, id: &str, amount_micro: i64) -> Hold {
    Hold {
        request_id: id.into(),
        user_id: user.into(),
        workspace_id: ws.into(),
        workspace_name: "alpha".into(),
        node_id: "node-1".into(),
        incarnation: "test".into(),
        endpoint: "/v1/chat/completions".into(),
        model: Some("openai/gpt-4o-mini".into()),
        subject: None,
        amount_micro,
    }
}

/// Reserves and waits for the hold's commit.
async fn reserve(wallet: &(impl Wallet + ?Sized), hold: Hold) -> Result<Admission, WalletError> {
    wallet.reserve(hold).await?.durable().await
}

fn charge(id: &str, cost_micro: i64) -> Charge {
    Charge {
        request_id: id.into(),
        cost_micro,
        cost_usd: Some(cost_micro as f64 / 100_000_000.0),
        input_tokens: Some(10),
        output_tokens: Some(5),
        estimated: false,
    }
}

async fn credits(c: &Client) -> Value {
    let (s, v) = c.get("/users/me/credits").await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn adjust(app: &Arc<App>, user: &str, micro: i64) {
    app.adjust_credits(user, micro as f64 / 1_000_000.0, "test".into())
        .await
        .expect("adjustment");
}

/// A platform with one user, one workspace and the wallet started.
async fn setup() -> (TestPlatform, Arc<App>, Client, String, String, impl Wallet) {
    let tp = TestPlatform::start().await;
    let app = tp.platform().app.clone();
    let me = tp.user("me@example.com").await;
    let uid = me.user_id().await;
    let (s, w) = me.post("/workspaces", json!({"name": "alpha"})).await;
    assert_eq!(s, 201, "{w}");
    let ws = w["id"].as_str().expect("id").to_owned();
    let wallet = app.wallet();
    (tp, app, me, uid, ws, wallet)
}

/// The wallet journal's file `i` beside the platform's database.
fn journal_file(tp: &TestPlatform, i: usize) -> std::path::PathBuf {
    let mut p = tp.data_dir().join("rigbox.db").into_os_string();
    p.push(format!("-wallet-journal-{i}"));
    std::path::PathBuf::from(p)
}

/// A journal record as the wallet writes it: one JSON line `[n, record]`.
fn journal_line(n: u64, record: Value) -> String {
    format!("{}\n", json!([n, record]))
}

/// Another control plane over the platform's database file (as `rigboxd admin`, or a
/// restarted rigboxd, opens it).
async fn second_control_plane(tp: &TestPlatform, app: &Arc<App>) -> Arc<App> {
    App::new(
        rigbox_control::Store::open_sqlite(&tp.data_dir().join("rigbox.db"))
            .await
            .expect("a second store on the file"),
        app.config.clone(),
        app.clock.clone(),
        Vec::new(),
    )
}

#[tokio::test]
async fn the_writer_waits_for_another_writers_lock_without_blocking_the_runtime() {
    // A one-thread runtime: were the writer to block it while waiting for the lock, the
    // transaction holding the lock could never commit.
    let (_tp, app, _me, uid, ws, wallet) = setup().await;
    let wallet = Arc::new(wallet);
    let mut tx = app.store.begin().await.expect("tx");
    app.store
        .lock_user(&mut tx, &uid)
        .await
        .expect("write lock");
    let w = wallet.clone();
    let (u, id) = (uid.clone(), ws.clone());
    let pending = tokio::spawn(async move { reserve(w.as_ref(), hold(&u, &id, "r1", 1)).await });
    let asleep = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        asleep.elapsed() < std::time::Duration::from_secs(2),
        "the thread was blocked for {:?}",
        asleep.elapsed()
    );
    assert!(
        !pending.is_finished(),
        "admitted while another writer held the lock"
    );
    tx.commit().await.expect("commit");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), pending)
        .await
        .expect("answered once the lock was free")
        .expect("task");
    assert_eq!(answer, Ok(Admission::Admitted));
    assert_eq!(wallet.settle(charge("r1", 1)).await, Ok(true));
}

#[tokio::test]
async fn the_writer_keeps_books_that_every_read_and_writer_agrees_with() {
    let (tp, app, me, uid, ws, wallet) = setup().await;
    let start = credits(&me).await["remaining_micro"]
        .as_i64()
        .expect("remaining");
    assert!(start > 1_000, "the plan gives credits: {start}");

    // Everything available is reserved; nothing is left for another hold.
    assert_eq!(
        reserve(&wallet, hold(&uid, &ws, "r1", start)).await,
        Ok(Admission::Admitted)
    );
    assert_eq!(
        reserve(&wallet, hold(&uid, &ws, "r2", 1)).await,
        Ok(Admission::Exhausted { available_micro: 0 })
    );
    let c = credits(&me).await;
    assert_eq!(c["reserved_micro"], start, "{c}");

    // A settlement queued and not yet awaited is seen by the read that follows.
    let pending = wallet.settle(charge("r1", 1_000));
    let c = credits(&me).await;
    assert_eq!(c["reserved_micro"], 0, "{c}");
    assert_eq!(c["balance_micro"], start - 1_000, "{c}");
    assert_eq!(pending.await, Ok(true));
    assert_eq!(wallet.settle(charge("r1", 1_000)).await, Ok(false));
    assert_eq!(wallet.release("r1").await, Ok(false));

    // Another ledger writer moves the balance the writer admits from: an operator adjustment
    // by another control plane over the same file (as `rigboxd admin` does from its own
    // process), then one by this one.
    let other = second_control_plane(&tp, &app).await;
    adjust(&other, &uid, -(start - 1_000)).await;
    assert_eq!(
        reserve(&wallet, hold(&uid, &ws, "r3", 1)).await,
        Ok(Admission::Exhausted { available_micro: 0 })
    );
    adjust(&app, &uid, 500).await;
    assert_eq!(
        reserve(&wallet, hold(&uid, &ws, "r4", 501)).await,
        Ok(Admission::Insufficient {
            available_micro: 500,
            estimate_micro: 501
        })
    );
    assert_eq!(
        reserve(&wallet, hold(&uid, &ws, "r5", 500)).await,
        Ok(Admission::Admitted)
    );
    // A released hold gives its funds back; a settlement above the hold takes the balance
    // below zero.
    assert_eq!(wallet.release("r5").await, Ok(true));
    assert_eq!(
        reserve(&wallet, hold(&uid, &ws, "r6", 500)).await,
        Ok(Admission::Admitted)
    );
    assert_eq!(wallet.settle(charge("r6", 800)).await, Ok(true));
    let c = credits(&me).await;
    assert_eq!(c["balance_micro"], -300, "{c}");
    assert_eq!(c["reserved_micro"], 0, "{c}");

    // One operation that fails (a hold for a user that does not exist) fails alone, even
    // queued in the same batch as others.
    // Admission is answered before the hold commits: the bad hold is admitted (it reserves
    // nothing) and its commit fails.
    let (bad, good) = tokio::join!(
        wallet.reserve(hold("no-such-user", &ws, "r7", 0)),
        reserve(&wallet, hold(&uid, &ws, "r8", 0)),
    );
    let bad = bad.expect("decided");
    assert_eq!(bad.admission, Admission::Admitted);
    assert!(bad.committed.await.is_err(), "the hold was written");
    assert_eq!(good, Ok(Admission::Admitted));
    assert_eq!(wallet.settle(charge("r8", 0)).await, Ok(true));

    // The ledger: one entry per change, in sequence, each balance following from the last.
    let (s, l) = me.get("/users/me/credits/ledger?limit=200").await;
    assert_eq!(s, 200, "{l}");
    let mut items: Vec<Value> = l["items"].as_array().expect("items").clone();
    items.reverse();
    let kinds: Vec<&str> = items
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "monthly_reset",
            "charge",
            "adjustment",
            "adjustment",
            "charge",
            "charge"
        ],
        "{l}"
    );
    let mut balance = 0;
    for e in &items {
        balance += e["amount_micro"].as_i64().expect("amount");
        assert_eq!(e["balance_after_micro"], balance, "{e}");
    }
    assert_eq!(balance, -300);
    let charged: Vec<&str> = items
        .iter()
        .filter_map(|e| e["request_id"].as_str())
        .collect();
    assert_eq!(charged, ["r1", "r6", "r8"]);
}

#[tokio::test]
async fn without_a_database_file_holds_fail_and_reads_still_answer() {
    // An in-memory database has no file for the writer's own connection: every hold is
    // refused with an error, and a read's wait for queued settlements does not hang or fail.
    let app = App::new(
        rigbox_control::Store::open_memory().await.expect("store"),
        rigbox_control::ControlConfig::default(),
        Arc::new(rigbox_control::app::SystemClock),
        Vec::new(),
    );
    let wallet = app.wallet();
    assert!(reserve(&wallet, hold("u", "w", "r1", 1)).await.is_err());
    assert_eq!(app.wallet_synced().await, Ok(()));
}

#[tokio::test]
async fn the_journal_a_crashed_run_left_is_replayed_once() {
    // What a run killed before its writer applied the journal leaves beside the database: a
    // hold admitted and settled, a hold admitted and still open, a hold record repeated (a
    // record already applied) and a torn last line. A new writer over the file (here another
    // App's, as a restarted rigboxd's) applies each once before it answers anything.
    let (tp, app, me, uid, ws, _wallet) = setup().await;
    let start = credits(&me).await["balance_micro"]
        .as_i64()
        .expect("balance");
    let journal = |i: usize| journal_file(&tp, i);
    let at = app.now();
    let h1 = json!({"Hold": {"hold": hold(&uid, &ws, "j1", 500), "at": at}});
    let h2 = json!({"Hold": {"hold": hold(&uid, &ws, "j2", 200), "at": at}});
    let s1 = json!({"Settle": charge("j1", 300)});
    // The files' order is the records' numbers, not the file names.
    std::fs::write(
        journal(0),
        journal_line(2, s1) + &journal_line(3, h2) + "[4, {\"Sett",
    )
    .expect("journal 0");
    std::fs::write(
        journal(1),
        journal_line(0, h1.clone()) + &journal_line(1, h1),
    )
    .expect("journal 1");

    let other = second_control_plane(&tp, &app).await;
    let wallet = other.wallet();
    other.wallet_synced().await.expect("replayed");
    let c = credits(&me).await;
    assert_eq!(c["balance_micro"], start - 300, "{c}");
    assert_eq!(c["reserved_micro"], 200, "{c}");
    assert_eq!(
        wallet.settle(charge("j1", 300)).await,
        Ok(false),
        "settled once"
    );
    assert_eq!(
        wallet.settle(charge("j2", 150)).await,
        Ok(true),
        "j2 was open"
    );
    let (s, l) = me.get("/users/me/credits/ledger?limit=200").await;
    assert_eq!(s, 200, "{l}");
    let charged: Vec<&str> = l["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["request_id"].as_str())
        .collect();
    assert_eq!(charged, ["j2", "j1"], "{l}");
    for i in 0..2 {
        let left = std::fs::read_to_string(journal(i)).expect("journal");
        assert!(
            !left.contains("\"j1\"") && !left.contains("Hold"),
            "journal {i} still holds replayed records: {left}"
        );
    }
}

/// How many of `ids` have an `ai_holds` row, read from the database file.
fn hold_rows(tp: &TestPlatform, ids: &[&str]) -> usize {
    let db = rusqlite::Connection::open(tp.data_dir().join("rigbox.db")).expect("open");
    ids.iter()
        .filter(|id| {
            db.query_row("SELECT 1 FROM ai_holds WHERE id = ?1", [id], |_| Ok(()))
                .is_ok()
        })
        .count()
}

/// The ledger's charges, by request ID.
async fn charges(me: &Client) -> Vec<(String, i64)> {
    let (s, l) = me.get("/users/me/credits/ledger?limit=200").await;
    assert_eq!(s, 200, "{l}");
    l["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["kind"] == "charge")
        .map(|e| {
            (
                e["request_id"].as_str().expect("request_id").to_owned(),
                e["amount_micro"].as_i64().expect("amount"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_hold_settled_in_the_batch_that_applies_it_is_recorded_by_its_charge_alone() {
    // As the proxy does: admitted in the caller's task (journaled), settled at once without
    // waiting. The writer applies a hold and its settlement together, and the charge is then
    // the hold's only record: every request is charged once, nothing stays reserved, and the
    // holds table gains no row for (at least some of) them.
    let (tp, app, me, uid, ws, wallet) = setup().await;
    // Nothing else commits meanwhile (a commit by another connection leaves decisions to the
    // writer, whose holds commit before their callers go on).
    me.wait_status(&ws, "provisioned", std::time::Duration::from_secs(10))
        .await;
    let start = credits(&me).await["balance_micro"]
        .as_i64()
        .expect("balance");
    // The first one the writer decides: it does not know the books yet.
    assert_eq!(
        reserve(&wallet, hold(&uid, &ws, "first", 10)).await,
        Ok(Admission::Admitted)
    );
    assert_eq!(wallet.settle(charge("first", 10)).await, Ok(true));
    let ids: Vec<String> = (0..20).map(|i| format!("batch-{i}")).collect();
    for id in &ids {
        let r = wallet
            .reserve(hold(&uid, &ws, id, 100))
            .await
            .expect("reserve");
        assert_eq!(r.admission, Admission::Admitted);
        drop(wallet.settle(charge(id, 40)));
    }
    app.wallet_synced().await.expect("synced");
    let c = credits(&me).await;
    assert_eq!(c["balance_micro"], start - 10 - 20 * 40, "{c}");
    assert_eq!(c["reserved_micro"], 0, "{c}");
    let mut charged = charges(&me).await;
    charged.sort();
    let mut want: Vec<(String, i64)> = ids.iter().map(|id| (id.clone(), -40)).collect();
    want.push(("first".into(), -10));
    want.sort();
    assert_eq!(charged, want);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let rows = hold_rows(&tp, &ids);
    assert!(rows < ids.len(), "every hold was written ({rows})");
    // A second settlement of one of them finds it closed.
    assert_eq!(wallet.settle(charge("batch-0", 40)).await, Ok(false));
    // Applied records leave the journal (a file is emptied once its batch has answered: the
    // second sync's batch comes after the first's).
    app.wallet_synced().await.expect("synced");
    for i in 0..2 {
        let left = std::fs::read(journal_file(&tp, i)).expect("journal");
        assert!(
            left.iter().all(|&b| b == 0),
            "journal {i} still holds applied records: {}",
            String::from_utf8_lossy(&left)
        );
        // Readable by the owner alone, like the database.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(journal_file(&tp, i))
                .expect("journal")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "journal {i}");
    }
}

#[tokio::test]
async fn a_replayed_journal_does_not_reopen_a_hold_its_charge_recorded_alone() {
    // A run that committed a batch (a hold and its settlement, no hold row) and was killed
    // before emptying the journal leaves both records behind: the replay must see the charge
    // and neither reopen the hold nor charge it again, and still apply what else it holds.
    let (tp, app, me, uid, ws, wallet) = setup().await;
    assert_eq!(
        reserve(&wallet, hold(&uid, &ws, "alone", 100)).await,
        Ok(Admission::Admitted)
    );
    assert_eq!(wallet.settle(charge("alone", 40)).await, Ok(true));
    // Its charge alone records it, as when the writer applied both in one batch.
    rusqlite::Connection::open(tp.data_dir().join("rigbox.db"))
        .expect("open")
        .execute("DELETE FROM ai_holds WHERE id = 'alone'", [])
        .expect("delete");
    let start = credits(&me).await;
    let journal = |i: usize| journal_file(&tp, i);
    let at = app.now();
    let again = journal_line(
        0,
        json!({"Hold": {"hold": hold(&uid, &ws, "alone", 100), "at": at}}),
    ) + &journal_line(1, json!({"Settle": charge("alone", 40)}))
        + &journal_line(
            2,
            json!({"Hold": {"hold": hold(&uid, &ws, "open", 200), "at": at}}),
        );
    std::fs::write(journal(0), again).expect("journal 0");

    let other = second_control_plane(&tp, &app).await;
    let _wallet = other.wallet();
    other.wallet_synced().await.expect("replayed");
    let c = credits(&me).await;
    assert_eq!(c["balance_micro"], start["balance_micro"], "{c}");
    assert_eq!(c["reserved_micro"], 200, "the open hold is applied: {c}");
    let alone: Vec<_> = charges(&me)
        .await
        .into_iter()
        .filter(|(id, _)| id == "alone")
        .collect();
    assert_eq!(alone, [("alone".to_owned(), -40)]);
    assert_eq!(hold_rows(&tp, &["alone"]), 0, "reopened");
    let left = std::fs::read_to_string(journal(0)).expect("journal");
    assert!(left.is_empty(), "the journal was not replayed: {left}");
}

#[tokio::test]
async fn charges_written_together_read_back_column_for_column_and_conflict_whole() {
    use rigbox_control::store::{LedgerRow, StoreError};
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rigbox.db");
    let store = rigbox_control::Store::open_sqlite(&file)
        .await
        .expect("store");
    let conn = rusqlite::Connection::open(&file).expect("open");
    conn.execute(
        "INSERT INTO users (id, email, password_hash, email_verified, plan, \
         settings_updated_at, created_at) VALUES ('u1', 'u1@example.com', 'x', TRUE, 'free', 0, 0)",
        [],
    )
    .expect("user");
    // More than one statement's worth (8 rows each) and a rest, charge details varying.
    let entry = |seq: i64| LedgerRow {
        request_id: Some(format!("r{seq}")),
        model: (seq % 2 == 0).then(|| format!("m{seq}")),
        input_tokens: Some(seq * 10),
        output_tokens: (seq % 3 != 0).then_some(seq),
        cost_usd: Some(seq as f64 / 1000.0),
        estimated: seq % 4 == 0,
        subject: (seq == 5).then(|| "alice".to_owned()),
        workspace_name: Some(format!("ws{seq}")),
        ..LedgerRow::entry("u1", seq, "charge", -seq, 1_000 - seq, 100)
    };
    let rows: Vec<LedgerRow> = (1..=19).map(entry).collect();
    let db = store.wallet_db().expect("db").expect("file");
    db.begin().expect("begin");
    db.insert_ledger(&rows).expect("written");
    db.commit().expect("commit");
    let read = |conn: &rusqlite::Connection| -> Vec<String> {
        let mut stmt = conn
            .prepare(
                "SELECT json_array(id, user_id, seq, kind, amount_micro, balance_after_micro, \
                 request_id, model, input_tokens, output_tokens, cost_usd, estimated, subject, \
                 workspace_name) FROM ledger ORDER BY seq",
            )
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    let want: Vec<String> = rows
        .iter()
        .map(|e| {
            json!([
                e.id,
                e.user_id,
                e.seq,
                e.kind,
                e.amount_micro,
                e.balance_after_micro,
                e.request_id,
                e.model,
                e.input_tokens,
                e.output_tokens,
                e.cost_usd,
                e.estimated as i64,
                e.subject,
                e.workspace_name
            ])
            .to_string()
        })
        .collect();
    assert_eq!(read(&conn), want);

    // A statement of eight with one charge already written fails whole: nothing is added.
    let mut again: Vec<LedgerRow> = (20..28).map(entry).collect();
    again[5].request_id = Some("r3".into());
    db.begin().expect("begin");
    assert!(matches!(
        db.insert_ledger(&again),
        Err(StoreError::Conflict)
    ));
    db.rollback();
    assert_eq!(read(&conn).len(), 19);
}
