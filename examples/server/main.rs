//! The demo as a service: the three example workflows (`customer_refund`, `order_pipeline`,
//! `payment_recovery`) served over HTTP by `nanovm-server`, with mock tools, on 127.0.0.1,
//! journaled in SQLite.
//!
//! ```sh
//! cargo run --release --example server                 # prints its URL, a token, one curl line, the viewer's URL
//! cargo run --release --example server -- --model http://127.0.0.1:8088/v1 --constrain grammar
//! cargo run --release --example server -- --postgres postgres://user:pw@127.0.0.1/db
//! ```
//!
//! Options: `--addr ADDR` (default `127.0.0.1:8080`, or `$NANOVM_SERVER_ADDR`; port 0 picks a
//! free one), `--db FILE`
//! (default `nanovm-server.db`), `--postgres URL [--pg-schema NAME]` instead of SQLite (several
//! processes may serve one database), `--token TOKEN` (default: a fresh random one, printed),
//! `--answer yes|no|...` (the scripted model's answer to `analyze`; default `yes`), `--model URL
//! [--model-name N] [--constrain off|json_schema|json_object|grammar]` for any OpenAI-compatible
//! server instead of the scripted model, `--workers N`, `--ledger FILE` (every effect execution
//! appended as `effect_id tool`). The first line on stdout is `listening on URL`.
//!
//! MCP: the same server answers MCP over Streamable HTTP at `URL/mcp` (with the token), and
//! `--mcp-stdio` serves MCP over stdin/stdout instead of HTTP, for clients that start the
//! server themselves.

mod shop;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nanovm::Runtime;
use nanovm::model::Model;
use nanovm::openai::{ChoiceConstraint, OpenAiModel};
use nanovm::store::SqliteStore;
use nanovm::testing::ScriptedModel;
use nanovm_server::{Scope, Server};

use shop::{MockShop, customer_refund, order_pipeline, payment_recovery};

const USAGE: &str = "usage: server [--addr ADDR] [--db FILE | --postgres URL [--pg-schema NAME]] \
[--token TOKEN] [--answer TEXT] [--model URL [--model-name N] [--constrain MODE]] [--workers N] \
[--ledger FILE] [--mcp-stdio]";

struct Args {
    addr: SocketAddr,
    db: PathBuf,
    postgres: Option<String>,
    pg_schema: Option<String>,
    token: Option<String>,
    answer: String,
    model: Option<String>,
    model_name: String,
    constrain: ChoiceConstraint,
    workers: usize,
    ledger: Option<PathBuf>,
    mcp_stdio: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        // NANOVM_SERVER_ADDR overrides the default (tests/readme_commands.sh picks a free port).
        addr: match std::env::var("NANOVM_SERVER_ADDR") {
            Ok(v) => v.parse().map_err(|e| format!("NANOVM_SERVER_ADDR: {e}"))?,
            Err(_) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        },
        db: PathBuf::from("nanovm-server.db"),
        postgres: None,
        pg_schema: None,
        token: None,
        answer: "yes".into(),
        model: None,
        model_name: "smollm2".into(),
        constrain: ChoiceConstraint::Off,
        workers: 2,
        ledger: None,
        mcp_stdio: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--addr" => a.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--db" => a.db = PathBuf::from(value()?),
            "--postgres" => a.postgres = Some(value()?),
            "--pg-schema" => a.pg_schema = Some(value()?),
            "--token" => a.token = Some(value()?),
            "--answer" => a.answer = value()?,
            "--model" => a.model = Some(value()?),
            "--model-name" => a.model_name = value()?,
            "--constrain" => {
                a.constrain = value()?.parse().map_err(|e| format!("--constrain: {e}"))?;
            }
            "--workers" => a.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--ledger" => a.ledger = Some(PathBuf::from(value()?)),
            "--mcp-stdio" => a.mcp_stdio = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(a)
}

fn model(a: &Args) -> Result<Arc<dyn Model>, String> {
    let Some(url) = &a.model else {
        return Ok(Arc::new(
            ScriptedModel::new()
                .always("analyze", a.answer.as_str())
                .always("classify", "funds")
                // One script for three programs.
                .shared(),
        ));
    };
    let real = OpenAiModel::builder(url.as_str())
        .model(a.model_name.as_str())
        .constrain_choices(a.constrain)
        .timeout(Duration::from_secs(20))
        .seed(7)
        .build()
        .map_err(|e| format!("--model: {e}"))?;
    Ok(Arc::new(real))
}

/// A fresh random token: 32 hex digits of the OS's randomness (through blake3 of fresh state).
fn fresh_token() -> String {
    let seed = format!(
        "{:?} {} {:p}",
        std::time::SystemTime::now(),
        std::process::id(),
        &USAGE
    );
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut bytes);
    }
    let mut h = nanovm::Digest::of(seed.as_bytes()).to_hex();
    h.push_str(&nanovm::Digest::of(&bytes).to_hex());
    nanovm::Digest::of(h.as_bytes()).to_hex()[..32].to_string()
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let a = args().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let model = model(&a).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let (runtime, store_name) = match &a.postgres {
        Some(url) => {
            let mut opts = nanovm::store::PostgresOptions::default();
            if let Some(s) = &a.pg_schema {
                opts.schema = s.clone();
            }
            let store = nanovm::store::PostgresStore::connect_with(url, opts)
                .await
                .unwrap_or_else(|e| fail(e));
            let rt = Runtime::builder()
                .model(model)
                .vault(store.vault())
                .store(store)
                .build();
            (rt, "PostgreSQL".to_string())
        }
        None => {
            let store = SqliteStore::open(&a.db).await.unwrap_or_else(|e| fail(e));
            let rt = Runtime::builder()
                .model(model)
                .vault(store.vault())
                .store(store)
                .build();
            (rt, format!("SQLite {}", a.db.display()))
        }
    };
    let shop = Arc::new(MockShop::with_ledger(a.ledger.clone()).unwrap_or_else(|e| fail(e)));
    let token = a.token.clone().unwrap_or_else(fresh_token);
    if a.mcp_stdio {
        // stdout belongs to the protocol.
        Server::new(runtime)
            .program::<customer_refund::Program>(shop.clone())
            .program::<order_pipeline::Program>(shop.clone())
            .program::<payment_recovery::Program>(shop)
            .workers(a.workers)
            .serve_stdio()
            .await
            .unwrap_or_else(|e| fail(e));
        return;
    }
    let viewer_token = fresh_token();
    let running = Server::new(runtime)
        .program::<customer_refund::Program>(shop.clone())
        .program::<order_pipeline::Program>(shop.clone())
        .program::<payment_recovery::Program>(shop)
        .token(&token, "demo", &[Scope::Read, Scope::Start, Scope::Operate])
        // The live viewer gets a token of its own that can only read.
        .token(&viewer_token, "viewer", &[Scope::Read])
        .workers(a.workers)
        .bind(a.addr)
        .await
        .unwrap_or_else(|e| fail(e));
    let url = running.url();
    println!("listening on {url}");
    println!("store: {store_name}; programs: customer_refund, order_pipeline, payment_recovery");
    println!("token: {token}");
    println!("start a refund:");
    println!(
        "  curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \
-d '{{\"run_id\":\"refund-1\",\"input\":{{\"request\":\"It arrived broken, refund please.\",\
\"order_id\":\"o-1\",\"amount_cents\":1200,\"email\":\"cy@example.com\"}}}}' \
{url}/v1/programs/customer_refund/runs"
    );
    println!("MCP (Streamable HTTP): {url}/mcp with the same token");
    println!("then: curl -s -H 'Authorization: Bearer {token}' {url}/v1/runs/refund-1");
    // The fragment (after `#`) never leaves the browser; the page sends it as a header.
    println!("live viewer (read-only token): {url}/viewer#token={viewer_token}");
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    running.stop().await;
}
