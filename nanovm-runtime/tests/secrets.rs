//! Issue 10, hole 3: secrets reach tools only checked against the trace's commitment, only the
//! call's own, and every reveal is recorded.
//!
//! - A value swapped in the vault behind the runtime's back (the trace still verifies: it holds
//!   only the commitment) must never reach a tool: `reveal` recomputes `keyed_hash(salt, value)`
//!   and refuses a value that does not match. On every vault: memory, SQLite, PostgreSQL.
//! - A tool may reveal only the secrets passed as its own arguments, not another run's.
//! - Every reveal is recorded (which secret, to which tool, at which step of which run), so an
//!   audit can answer "who saw this".

mod support;

use std::sync::{Arc, Mutex};

use nanovm_runtime::testing::ScriptedModel;
use nanovm_runtime::trace::RunStatus;
use nanovm_runtime::vault::{MemoryVault, Vault};
use nanovm_runtime::{Execution, RunOptions, Runtime, SecretRef, ToolContext, ToolError};
use serde_json::json;

use support::customer_refund::{self as cr};
use support::{Host, block_on};

fn runtime(answer: &str, vault: impl Vault) -> Runtime {
    Runtime::builder()
        .model(ScriptedModel::new().always("analyze", answer))
        .vault(vault)
        .build()
}

fn input(email: SecretRef<String>, amount_cents: i64) -> cr::Input {
    cr::Input {
        request: "It broke.".into(),
        order_id: "o-7".into(),
        amount_cents,
        email,
    }
}

/// A rejection (the model says "no"): `send_rejection` reveals the email.
fn reject(rt: &Runtime, email: SecretRef<String>, host: &Host, id: &str) -> Execution {
    block_on(rt.run::<cr::Program>(
        input(email, 100),
        Arc::new(host.clone()),
        RunOptions::new().run_id(id),
    ))
    .expect("runs")
}

/// What `send_rejection` was handed, in call order.
fn mailed_to(host: &Host) -> Vec<serde_json::Value> {
    host.records()
        .into_iter()
        .filter(|c| c.tool == "send_rejection")
        .map(|c| c.args["email"].clone())
        .collect()
}

/// After the swap, the run must not mail the swapped-in address: the reveal is refused, the
/// tool is never called, and the run fails saying why.
fn assert_swap_refused(exec: &Execution, host: &Host) {
    assert_eq!(mailed_to(host), Vec::<serde_json::Value>::new(), "{exec:?}");
    assert_eq!(exec.status, RunStatus::Failed, "{exec:?}");
    let msg = exec.message.as_deref().unwrap_or_default();
    assert!(msg.contains("commitment"), "{msg}");
}

#[cfg(feature = "sqlite")]
#[test]
fn a_value_swapped_in_the_sqlite_vault_never_reaches_the_tool() {
    use nanovm_runtime::vault::SqliteVault;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("vault.db");
    let vault = block_on(SqliteVault::open(&path)).expect("opens");
    let email = block_on(nanovm_runtime::vault::seal(
        &vault,
        &"cy@example.com".to_string(),
    ))
    .expect("sealed");
    // Someone with write access to the database swaps the address.
    let c = rusqlite::Connection::open(&path).expect("a second connection");
    c.busy_timeout(std::time::Duration::from_secs(5)).ok();
    let n = c
        .execute(
            "UPDATE nanovm_vault SET value = ?1 WHERE id = ?2",
            rusqlite::params!["\"eve@evil.example\"", email.id().to_hex()],
        )
        .expect("edits the database");
    assert_eq!(n, 1);
    drop(c);
    let host = Host::new();
    let exec = reject(&runtime("no", vault), email, &host, "swap-sqlite");
    assert_swap_refused(&exec, &host);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
async fn a_value_swapped_in_the_postgres_vault_never_reaches_the_tool() {
    use nanovm_runtime::store::PostgresOptions;
    use nanovm_runtime::vault::PostgresVault;
    let url = support::peers::database_url();
    let schema = format!("nvmsecrets_{}", std::process::id());
    let vault = PostgresVault::connect_with(&url, PostgresOptions::new().schema(schema.clone()))
        .await
        .expect("connects");
    let email = nanovm_runtime::vault::seal(&vault, &"cy@example.com".to_string())
        .await
        .expect("sealed");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a second connection");
    tokio::spawn(conn);
    let n = client
        .execute(
            &format!("UPDATE {schema}.nanovm_vault SET value = $1 WHERE id = $2"),
            &[&"\"eve@evil.example\"", &email.id().to_hex()],
        )
        .await
        .expect("edits the database");
    assert_eq!(n, 1);
    let host = Host::new();
    let exec = runtime("no", vault)
        .run::<cr::Program>(
            input(email, 100),
            Arc::new(host.clone()),
            RunOptions::new().run_id("swap-pg"),
        )
        .await
        .expect("runs");
    assert_swap_refused(&exec, &host);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drops the test schema");
}

/// A tool gets a `ToolContext`; with it, it must not be able to read secrets that are not its
/// own arguments, such as another run's (`issue_refund` has no secret argument at all).
#[test]
fn a_tool_cannot_reveal_a_secret_that_is_not_its_argument() {
    let vault = Arc::new(MemoryVault::seeded(21));
    let others = vault
        .secret(&"someone-else@example.com".to_string())
        .expect("another run's secret");
    let email = vault.secret(&"cy@example.com".to_string()).expect("sealed");
    let seen: Arc<Mutex<Vec<Result<String, ToolError>>>> = Arc::default();
    let host = Host::new();
    let record = seen.clone();
    host.hook(
        "issue_refund",
        Arc::new(move |ctx: ToolContext| {
            let record = record.clone();
            Box::pin(async move {
                let r = ctx.reveal(&others).await.map(|s| s.into_inner());
                record.lock().unwrap().push(r);
                // Its own run's secret is not its argument either.
                let r = ctx.reveal(&email).await.map(|s| s.into_inner());
                record.lock().unwrap().push(r);
            })
        }),
    );
    let exec = block_on(runtime("yes", vault.clone()).run::<cr::Program>(
        input(email, 100),
        Arc::new(host.clone()),
        RunOptions::new().run_id("snoop"),
    ))
    .expect("runs");
    assert_eq!(exec.status, RunStatus::Success, "{exec:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for r in seen {
        let err = r.expect_err("refused");
        assert!(err.message.contains("not an argument"), "{}", err.message);
    }
}

#[test]
fn a_value_swapped_in_the_memory_vault_never_reaches_the_tool() {
    let vault = Arc::new(MemoryVault::seeded(22));
    let email = vault.secret(&"cy@example.com".to_string()).expect("sealed");
    vault
        .overwrite(email.id(), json!("eve@evil.example"))
        .expect("swapped");
    let host = Host::new();
    let exec = reject(&runtime("no", vault.clone()), email, &host, "swap-mem");
    assert_swap_refused(&exec, &host);
    assert_eq!(
        MemoryVault::reveals(&vault, email.id()),
        Vec::new(),
        "a refused reveal is not a reveal"
    );
}

/// The effect id of the recorded `tool_intent` of `tool`.
fn intent_of(exec: &Execution, tool: &str) -> nanovm_runtime::Digest {
    exec.trace
        .entries()
        .iter()
        .find_map(|e| match &e.event {
            nanovm_runtime::trace::Event::ToolIntent {
                tool: t, effect_id, ..
            } if t == tool => Some(*effect_id),
            _ => None,
        })
        .expect("an intent")
}

/// Every reveal is recorded by the vault: which secret, to which tool, at which step of which
/// run, with the call's idempotency key (for an effect, the effect id of its intent in the
/// trace). A replay reveals nothing and needs no vault.
async fn every_reveal_is_recorded<V: Vault>(vault: Arc<V>, run_id: &str) {
    let email = nanovm_runtime::vault::seal(vault.as_ref(), &"cy@example.com".to_string())
        .await
        .expect("sealed");
    let host = Host::new();
    let exec = runtime("no", vault.clone())
        .run::<cr::Program>(
            input(email, 100),
            Arc::new(host.clone()),
            RunOptions::new().run_id(run_id),
        )
        .await
        .expect("runs");
    assert_eq!(exec.status, RunStatus::Success, "{exec:?}");
    assert_eq!(mailed_to(&host), vec![json!("cy@example.com")]);
    let seen = vault.reveals(email.id()).await.expect("the reveal log");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let r = &seen[0].reveal;
    assert_eq!(r.vault_id, email.id());
    assert_eq!(r.commitment, email.commitment());
    assert_eq!(r.run_id, run_id);
    assert_eq!(r.step, "reject");
    assert_eq!(r.tool, "send_rejection");
    assert_eq!(r.attempt, 1);
    assert_eq!(r.key, intent_of(&exec, "send_rejection"));
    assert!(seen[0].at_ms > 0);
    // Replays call no tool, so they reveal nothing (and run without this vault).
    let report = nanovm_runtime::replay::<cr::Program>(&exec.trace).expect("replays");
    assert_eq!(report.root, exec.trace.root());
    assert_eq!(vault.reveals(email.id()).await.expect("log").len(), 1);
}

#[tokio::test]
async fn every_reveal_is_recorded_by_the_memory_vault() {
    every_reveal_is_recorded(Arc::new(MemoryVault::seeded(23)), "audit-mem").await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reveal_is_recorded_by_the_sqlite_vault() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let vault = nanovm_runtime::vault::SqliteVault::open(dir.path().join("v.db"))
        .await
        .expect("opens");
    every_reveal_is_recorded(Arc::new(vault), "audit-sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
async fn every_reveal_is_recorded_by_the_postgres_vault() {
    use nanovm_runtime::store::PostgresOptions;
    use nanovm_runtime::vault::PostgresVault;
    let url = support::peers::database_url();
    let schema = format!("nvmaudit_{}", std::process::id());
    let vault = PostgresVault::connect_with(&url, PostgresOptions::new().schema(schema.clone()))
        .await
        .expect("connects");
    every_reveal_is_recorded(Arc::new(vault), "audit-pg").await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a second connection");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drops the test schema");
}

/// A SQLite database written before the reveal log existed (schema version 1) gets it when it
/// is opened for writing, and its vault records reveals from then on.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_sqlite_database_gets_the_reveal_log() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("v1.db");
    {
        let c = rusqlite::Connection::open(&path).expect("creates");
        c.execute_batch(
            "CREATE TABLE nanovm_vault (id TEXT PRIMARY KEY, salt BLOB, value TEXT, \
             created_ms INTEGER NOT NULL, erased_ms INTEGER); PRAGMA user_version = 1;",
        )
        .expect("a version 1 vault table");
    }
    let vault = nanovm_runtime::vault::SqliteVault::open(&path)
        .await
        .expect("opens and migrates");
    every_reveal_is_recorded(Arc::new(vault), "audit-v1").await;
    let c = rusqlite::Connection::open(&path).expect("reopens");
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("a version");
    assert_eq!(version, 4, "migrated to the current schema");
}
