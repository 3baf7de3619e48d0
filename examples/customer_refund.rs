//! The main example: `workflows/customer_refund.nvm`, compiled into Rust by `include_program!`,
//! run with a scripted model and in-process mock tools.
//!
//! ```sh
//! cargo run --release --example customer_refund -- --trace-out refund.jsonl
//! cargo run --release --example customer_refund -- --answer no
//! cargo run --release --example customer_refund -- --answer maybe   # invalid -> manual review
//!
//! # Durable: a SQLite store and vault in one file. Kill it mid-way (Ctrl-C), then run the
//! # same command again: it continues the run, whenever the kill came.
//! cargo run --example customer_refund -- --db r.db --run-id r1 --tool-delay-ms 500 --ledger l.txt
//!
//! # A real model: any OpenAI-compatible server (tests/peers/llm/serve.sh serves SmolLM2-135M).
//! cargo run --example customer_refund -- --model http://127.0.0.1:8088/v1 --model-name smollm2 \
//!     --constrain grammar --cache llm-cache.jsonl --request "It arrived broken, refund please."
//! ```
//!
//! With `--model`, the `analyze` step asks that server (`--constrain off|json_schema|
//! json_object|grammar` says how the answer is constrained, docs/models.md says which server
//! understands which); with `--cache FILE` its answers are kept in a file, so a second run with
//! the same request makes no call. A configuration mistake (no scheme in the URL, an unknown
//! mode) is reported before anything runs.
//!
//! It prints each recorded event, the final status and the trace's root hash, and writes the
//! trace as JSON Lines (check it with `nanovm verify FILE`).
//!
//! The exit status says how the run ended, so a script can tell (see [`exit_code`]):
//!
//! | code | outcome |
//! |---|---|
//! | 0 | `success`, or `suspended` (the run waits for an event, e.g. `--answer maybe`) |
//! | 1 | an error: the run could not be run (store, vault, trace file) |
//! | 2 | a usage mistake |
//! | 3 | `failed` (the refund tool failed, no reviewer answered) |
//! | 4 | `needs_reconciliation`: an operator must reconcile an effect |
//! | 5 | `budget_exceeded` |
//! | 6 | `stalled` (the stalled-steps budget) |
//! | 7 | `cancelled` |
//!
//! With `--db`, the run is journaled in a SQLite file (and the email lives in the SQLite vault
//! in the same file), so it survives the process. Starting a run id the store holds is a
//! duplicate start: a run a crash left mid-way is continued (the recorded prefix is replayed
//! without calling anything again), a finished one is answered as recorded; a run id the store
//! does not hold (the process died before its first write) starts. A run is owned by the
//! process that started it, under a lease, until it ends: the same command while that process
//! runs is told `run ... is in progress`, says so on stderr, waits and then answers the
//! outcome, executing nothing; after a crash it waits until the dead process's lease expired
//! (`--lease-ms`, 5 s in this example) and continues the run. So the way to restart a crashed run is
//! the command that started it. The mock bank's `--ledger` gets one fsynced line
//! `effect_id tool` per real execution; the refund tool is idempotent like a payment API (a key
//! it has executed returns the saved answer), the rejection mailer is not. A resumed run whose
//! rejection mail was in flight needs reconciliation; with `--ledger` this example is also the
//! operator and reconciles it from the ledger.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nanovm::evidence::KeySigner;
use nanovm::model::Model;
use nanovm::openai::{ChoiceConstraint, OpenAiModel};
use nanovm::store::SqliteStore;
use nanovm::testing::ScriptedModel;
use nanovm::trace::RunStatus;
use nanovm::vault::{MemoryVault, Vault};
use nanovm::{
    CachedModel, Clock, Execution, ReconcileError, Resolution, RunError, RunOptions, Runtime,
    SystemClock,
};
use nanovm::{Digest, Json, Secret};
use nanovm::{ToolContext, ToolError};
use serde_json::json;

nanovm::include_program!("workflows/customer_refund.nvm");

/// In-process stand-ins for the shop's services.
#[derive(Default)]
struct MockShop {
    refunds: AtomicUsize,
    rejections: AtomicUsize,
    /// Each tool call sleeps this long first (a slow payment API).
    delay: Duration,
    /// The bank's ledger of real executions (`effect_id tool` per line).
    ledger: Option<PathBuf>,
}

impl MockShop {
    /// The refund's answer for an idempotency key (the same for a repeated key).
    fn refund_answer(key: &Digest, order_id: &str, amount_cents: i64) -> Json {
        json!({
            "refund_id": format!("rf_{}", &key.to_hex()[..12]),
            "order_id": order_id,
            "amount_cents": amount_cents,
        })
    }

    /// The rejection mail's answer.
    fn rejection_answer(domain: &str) -> Json {
        json!({ "sent": true, "domain": domain })
    }

    /// True if the ledger records an execution of `key`.
    fn executed(&self, key: &Digest) -> bool {
        let Some(path) = &self.ledger else {
            return false;
        };
        let hex = key.to_hex();
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').next() == Some(hex.as_str()))
    }

    /// Records a real execution, durably, before the tool answers.
    fn record(&self, key: &Digest, tool: &str) -> Result<(), ToolError> {
        let Some(path) = &self.ledger else {
            return Ok(());
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ToolError::transient(format!("ledger: {e}")))?;
        writeln!(f, "{} {tool}", key.to_hex())
            .and_then(|()| f.sync_all())
            .map_err(|e| ToolError::transient(format!("ledger: {e}")))
    }
}

impl customer_refund::Tools for MockShop {
    async fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> Result<Json, ToolError> {
        tokio::time::sleep(self.delay).await;
        // Like a payment API, the key decides: a key already executed gets the saved answer.
        let key = ctx.idempotency_key;
        if !self.executed(&key) {
            self.record(&key, "issue_refund")?;
            self.refunds.fetch_add(1, Ordering::SeqCst);
        }
        Ok(MockShop::refund_answer(&key, &order_id, amount_cents))
    }

    async fn send_rejection(
        &self,
        ctx: &ToolContext,
        email: Secret<String>,
    ) -> Result<Json, ToolError> {
        tokio::time::sleep(self.delay).await;
        // Not idempotent: every call sends a mail.
        self.record(&ctx.idempotency_key, "send_rejection")?;
        self.rejections.fetch_add(1, Ordering::SeqCst);
        // The plaintext reaches the tool, and only the tool.
        let domain = email
            .expose()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string();
        Ok(MockShop::rejection_answer(&domain))
    }
}

/// The example's lease on a run it executes (`--lease-ms`); renewed every third of it.
const EXAMPLE_LEASE_MS: u64 = 5_000;

struct Args {
    answer: String,
    model: Option<String>,
    model_name: String,
    constrain: ChoiceConstraint,
    cache: Option<PathBuf>,
    request: String,
    amount_cents: i64,
    trace_out: Option<String>,
    run_id: Option<String>,
    db: Option<PathBuf>,
    tool_delay_ms: u64,
    ledger: Option<PathBuf>,
    lease_ms: Option<u64>,
    signing_key: Option<PathBuf>,
    subject: Option<String>,
}

const USAGE: &str = "usage: customer_refund [--answer yes|no|maybe] [--trace-out FILE] [--run-id ID] \
     [--db PATH [--lease-ms N (default 5000)] [--signing-key FILE] [--subject ID]] [--tool-delay-ms N] [--ledger FILE]\n\
     \x20      [--model URL [--model-name N (default smollm2)] [--constrain off|json_schema|json_object|grammar] \
     [--cache FILE]] [--request TEXT] [--amount-cents N]\n\
     With --db and --run-id, the same command starts the run or continues it after a crash.\n\
     With --model, a real OpenAI-compatible server answers the `analyze` step instead of --answer.\n\
     With --signing-key (an Ed25519 key: hex seed or PKCS#8), every execution end is checkpointed\n\
     and signed into the store's evidence log, for `nanovm audit`. With --subject, the run is tied\n\
     to that data subject in the store's erasure index, for `nanovm erase --subject`.\n\
     Exit status: 0 success or suspended (waits for an event), 1 error, 2 usage, 3 failed,\n\
     4 needs_reconciliation, 5 budget_exceeded, 6 stalled, 7 cancelled.";

/// The request the example files unless `--request` says otherwise.
const DEFAULT_REQUEST: &str = "My parcel arrived broken. Please refund it.";

fn args() -> Result<Args, String> {
    let mut a = Args {
        answer: "yes".into(),
        model: None,
        model_name: "smollm2".into(),
        constrain: ChoiceConstraint::Off,
        cache: None,
        request: DEFAULT_REQUEST.into(),
        amount_cents: 4200,
        trace_out: None,
        run_id: None,
        db: None,
        tool_delay_ms: 0,
        ledger: None,
        lease_ms: None,
        signing_key: None,
        subject: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--answer" => a.answer = value()?,
            "--model" => a.model = Some(value()?),
            "--model-name" => a.model_name = value()?,
            "--constrain" => {
                let v = value()?;
                a.constrain = v.parse().map_err(|e| format!("--constrain: {e}"))?;
            }
            "--cache" => a.cache = Some(PathBuf::from(value()?)),
            "--request" => a.request = value()?,
            "--amount-cents" => {
                let v = value()?;
                a.amount_cents = v
                    .parse()
                    .map_err(|_| format!("--amount-cents needs a number, not `{v}`"))?;
            }
            "--trace-out" => a.trace_out = Some(value()?),
            "--run-id" => a.run_id = Some(value()?),
            "--db" => a.db = Some(PathBuf::from(value()?)),
            "--tool-delay-ms" => {
                let v = value()?;
                a.tool_delay_ms = v.parse().map_err(|_| {
                    format!("--tool-delay-ms needs a number of milliseconds, not `{v}`")
                })?;
            }
            "--ledger" => a.ledger = Some(PathBuf::from(value()?)),
            "--signing-key" => a.signing_key = Some(PathBuf::from(value()?)),
            "--subject" => a.subject = Some(value()?),
            "--lease-ms" => {
                let v = value()?;
                a.lease_ms = Some(v.parse().map_err(|_| {
                    format!("--lease-ms needs a number of milliseconds, not `{v}`")
                })?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(a)
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };

    let model = match model(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let shop = Arc::new(MockShop {
        delay: Duration::from_millis(args.tool_delay_ms),
        ledger: args.ledger.clone(),
        ..MockShop::default()
    });

    // Secrets go into the vault first; the program only ever holds a handle and the trace only a
    // salted commitment. In memory, a seeded vault makes the example's root hash reproducible
    // (production vaults use random salts); with --db the vault is the SQLite file's, so the
    // email survives a restart.
    let (runtime, vault): (Runtime, Arc<dyn Vault>) = match &args.db {
        Some(path) => {
            let store = SqliteStore::open(path).await.unwrap_or_else(|e| fail(e));
            let vault: Arc<dyn Vault> = Arc::new(store.vault());
            // A killed process holds its run this long: short, so that restarting a crashed
            // run by hand waits seconds, not the runtime's default 30 s.
            let lease = Duration::from_millis(args.lease_ms.unwrap_or(EXAMPLE_LEASE_MS));
            let builder = Runtime::builder()
                .model(model)
                .vault(vault.clone())
                .store(store)
                .operation_lease(lease);
            let runtime = match &args.signing_key {
                Some(key) => builder
                    .signer(KeySigner::from_file(key).unwrap_or_else(|e| fail(e)))
                    .build(),
                None => builder.build(),
            };
            (runtime, vault)
        }
        None => {
            let vault: Arc<dyn Vault> = Arc::new(MemoryVault::seeded(7));
            let runtime = Runtime::builder().model(model).vault(vault.clone()).build();
            (runtime, vault)
        }
    };

    // Start or continue: a run id the store holds is a duplicate start, which continues a run
    // a crash left mid-way (and answers a finished one as recorded); one it does not hold (the
    // process died before the first write, or never ran) starts. The request is the same every
    // time; only its secret is sealed again (the store does not compare secrets).
    let email = nanovm::vault::seal(&*vault, &"ada@example.com".to_string())
        .await
        .unwrap_or_else(|e| fail(e));
    let input = customer_refund::Input {
        request: args.request.clone(),
        order_id: "ord_1042".into(),
        amount_cents: args.amount_cents,
        email,
    };
    let mut options = RunOptions::new();
    if let Some(id) = &args.run_id {
        options = options.run_id(id.as_str());
    }
    if let Some(subject) = &args.subject {
        options = options.subject(subject.as_str());
    }
    let execution = until_unleased(|| {
        runtime.run::<customer_refund::Program>(input.clone(), shop.clone(), options.clone())
    })
    .await;
    let execution = reconcile_from_ledger(&runtime, execution, &shop).await;

    for entry in execution.trace.entries() {
        println!("{:>3}  {}", entry.seq, entry.event.describe());
    }
    println!();
    println!("status:  {}", execution.status);
    if let Some(m) = &execution.message {
        println!("message: {m}");
    }
    println!("path:    {}", execution.path.join(" -> "));
    println!(
        "effects: {} refund(s), {} rejection(s)",
        shop.refunds.load(Ordering::SeqCst),
        shop.rejections.load(Ordering::SeqCst)
    );
    println!("root:    {}", execution.root());
    if let Some(path) = &args.trace_out {
        if let Err(e) = std::fs::write(path, execution.trace.to_jsonl()) {
            eprintln!("error: cannot write {path}: {e}");
            std::process::exit(1);
        }
        println!("trace:   {path} ({} entries)", execution.trace.len());
    }
    std::process::exit(exit_code(execution.status));
}

/// The exit status for how a run ended (the table in the module docs): 0 when nobody needs to
/// act (it succeeded, or waits for an event), a distinct code for each outcome that needs
/// someone. 1 and 2 stay the error and usage codes.
fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Success | RunStatus::Suspended => 0,
        RunStatus::Failed => 3,
        RunStatus::NeedsReconciliation => 4,
        RunStatus::BudgetExceeded => 5,
        RunStatus::Stalled => 6,
        RunStatus::Cancelled => 7,
        // `running` is never how a returned execution ends; a status added later is not a
        // success until this example says so.
        _ => 1,
    }
}

/// The model that answers `analyze`: the scripted `--answer`, or with `--model` a real
/// OpenAI-compatible server (behind a response cache file with `--cache`). Configuration
/// mistakes are reported here, before the run starts.
fn model(args: &Args) -> Result<Arc<dyn Model>, String> {
    let Some(url) = &args.model else {
        return Ok(Arc::new(
            ScriptedModel::new().always("analyze", args.answer.as_str()),
        ));
    };
    let real = OpenAiModel::builder(url.as_str())
        .model(args.model_name.as_str())
        .constrain_choices(args.constrain)
        .timeout(Duration::from_secs(20))
        .seed(7)
        .build()
        .map_err(|e| format!("--model: {e}"))?;
    let Some(cache) = &args.cache else {
        return Ok(Arc::new(real));
    };
    // The key sees the request, not the adapter: the namespace keeps answers of another
    // server, model or constraint mode apart in one file.
    let namespace = format!("{url} {} {}", args.model_name, args.constrain);
    let cached = CachedModel::new(real)
        .with_namespace(namespace)
        .with_file(cache)
        .map_err(|e| format!("--cache {}: {e}", cache.display()))?;
    Ok(Arc::new(cached))
}

/// Runs `attempt` until the run it touches is no longer in progress elsewhere. A run is owned
/// by one process from its first write to its end: while the owner lives, a start of the same
/// run id is told `run ... is in progress` (and executes nothing); this example then waits,
/// saying so on stderr, and asks again. A live owner ends the run (then the same start answers
/// the stored outcome); a dead one's lease expires (then the start takes the run over). Either
/// way the same command converges, which is what restarting a crashed run needs.
async fn until_unleased<F>(mut attempt: impl FnMut() -> F) -> Execution
where
    F: Future<Output = Result<Execution, RunError>>,
{
    let mut waiting = Waiting::default();
    loop {
        match attempt().await {
            Err(e @ RunError::Leased { .. }) => waiting.wait(e).await,
            Err(e) => fail(e),
            Ok(e) => return e,
        }
    }
}

/// Waiting for a run another process owns: says so once, polls, gives up after five minutes.
#[derive(Default)]
struct Waiting {
    since: Option<std::time::Instant>,
}

impl Waiting {
    async fn wait(&mut self, e: RunError) {
        let since = *self.since.get_or_insert_with(|| {
            eprintln!("{e}; waiting");
            std::time::Instant::now()
        });
        if since.elapsed() > Duration::from_secs(300) {
            fail(e);
        }
        // Until the lease would expire, but at most 50 ms: the owner may end sooner.
        let expires_ms = match e {
            RunError::Leased { expires_ms, .. } => expires_ms,
            _ => 0,
        };
        let left = expires_ms
            .saturating_sub(SystemClock.now_ms())
            .saturating_add(5);
        tokio::time::sleep(Duration::from_millis(left.min(50))).await;
    }
}

/// A run that needs reconciliation, with a ledger to look at: this example is the operator. The
/// ledger says whether the rejection mail went out; `NotDone` only when it did not.
async fn reconcile_from_ledger(runtime: &Runtime, e: Execution, shop: &Arc<MockShop>) -> Execution {
    if e.status != RunStatus::NeedsReconciliation || shop.ledger.is_none() {
        return e;
    }
    let effects =
        nanovm::RunView::of_program::<customer_refund::Program>(e.trace.entries()).to_reconcile();
    let mut e = e;
    for effect in effects {
        let resolution = if shop.executed(&effect) {
            // The mail went out; its answer is what the mock returns for the shop's domain.
            Resolution::Done(MockShop::rejection_answer("example.com"))
        } else {
            Resolution::NotDone
        };
        println!(
            "reconciled: effect {} {resolution:?} (from the ledger)",
            effect.short()
        );
        let mut waiting = Waiting::default();
        e = loop {
            let answer = runtime
                .reconcile::<customer_refund::Program>(
                    &e.run_id,
                    effect,
                    resolution.clone(),
                    shop.clone(),
                )
                .await;
            match answer {
                // Another process owns the run (it reconciles it, or died doing so): wait
                // until it is done or its lease expired, then try again.
                Err(ReconcileError::Run(e @ RunError::Leased { .. })) => waiting.wait(e).await,
                Err(err) => fail(err),
                Ok(done) => break done,
            }
        };
    }
    e
}
