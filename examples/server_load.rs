//! A bounded load test of the HTTP server on loopback: the `server` example in one process on
//! SQLite, or in two processes on one PostgreSQL database, driven through HTTP.
//!
//! ```sh
//! cargo build --example server --example server_load
//! cargo run --example server_load -- --store sqlite
//! cargo run --example server_load -- --store postgres --postgres "$DATABASE_URL"   # two processes
//! ```
//!
//! 1. **Starts**: 1,000 concurrent starts of `customer_refund`, 20 % of them repeating the run id
//!    (and the input) of another start: 800 runs. 350 of them (over 5,000 cents) wait for an
//!    `approval`, the others refund at once.
//! 2. **Webhooks**: once the 350 wait, 500 concurrent deliveries of `approval`, 30 % of them
//!    repeating another delivery's event id (and payload). A delivery told the run is busy (409
//!    `busy`: another process holds its lease) is retried.
//! 3. **Checks**, once every run ended: the store holds exactly 800 runs, all `success`; every
//!    run's trace (verified by the server) has exactly one `run_ended`, and each waiting run
//!    exactly one `delivered`; every server's effect ledger (one line per real execution of an
//!    effect tool, written by the mock tools) has each effect id at most once, 800 in all.
//!
//! It prints starts/s and deliveries/s, p50/p99 latency of each, and exits 1 on any violated
//! check. The figures depend on the machine and its load; they are printed, never asserted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

const TOKEN: &str = "load-token";

struct Args {
    store: String,
    postgres: Option<String>,
    processes: usize,
    starts: usize,
    dup_starts: f64,
    deliveries: usize,
    dup_deliveries: f64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        store: "sqlite".into(),
        postgres: std::env::var("DATABASE_URL").ok(),
        processes: 0,
        starts: 1000,
        dup_starts: 0.2,
        deliveries: 500,
        dup_deliveries: 0.3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => a.store = value()?,
            "--postgres" => a.postgres = Some(value()?),
            "--processes" => a.processes = value()?.parse().map_err(|e| format!("{e}"))?,
            "--starts" => a.starts = value()?.parse().map_err(|e| format!("{e}"))?,
            "--deliveries" => a.deliveries = value()?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.processes == 0 {
        a.processes = if a.store == "postgres" { 2 } else { 1 };
    }
    if a.store != "sqlite" && a.store != "postgres" {
        return Err("--store sqlite|postgres".into());
    }
    if a.store == "postgres" && a.postgres.is_none() {
        return Err("--store postgres needs --postgres URL or DATABASE_URL".into());
    }
    if a.store == "sqlite" && a.processes != 1 {
        return Err("SQLite is one process (use --store postgres for several)".into());
    }
    Ok(a)
}

/// A deterministic shuffle (xorshift), so runs of the benchmark are comparable.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().expect("examples dir").join("server")
}

fn spawn(a: &Args, dir: &Path, i: usize, schema: &str) -> Proc {
    let mut cmd = Command::new(server_bin());
    cmd.args(["--addr", "127.0.0.1:0", "--token", TOKEN, "--workers", "4"])
        .arg("--ledger")
        .arg(dir.join(format!("ledger-{i}.txt")));
    match a.store.as_str() {
        "postgres" => {
            cmd.args([
                "--postgres",
                a.postgres.as_deref().unwrap(),
                "--pg-schema",
                schema,
            ]);
        }
        _ => {
            cmd.arg("--db").arg(dir.join("runs.db"));
        }
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build it first: cargo build --example server)",
                server_bin().display()
            )
        });
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    // Keep reading what it prints, so its stdout never breaks.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("server {i} said {first:?}"))
        .to_string();
    Proc { child, url }
}

/// One request: status, body, latency.
async fn post(http: &reqwest::Client, url: String, body: Json) -> (u16, Json, Duration) {
    let t0 = Instant::now();
    let res = http.post(url).bearer_auth(TOKEN).json(&body).send().await;
    match res {
        Ok(r) => {
            let s = r.status().as_u16();
            let b = r.json().await.unwrap_or(Json::Null);
            (s, b, t0.elapsed())
        }
        Err(e) => (0, json!({ "transport": e.to_string() }), t0.elapsed()),
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Result<reqwest::Response, String> {
    http.get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())
}

async fn count(http: &reqwest::Client, base: &str, status: &str) -> usize {
    let url = format!("{base}/v1/runs?status={status}&limit=1000");
    match get(http, &url).await {
        Ok(r) => r
            .json::<Json>()
            .await
            .ok()
            .and_then(|j| j["runs"].as_array().map(Vec::len))
            .unwrap_or(0),
        Err(_) => 0,
    }
}

async fn wait_for(
    http: &reqwest::Client,
    base: &str,
    what: &[(&str, usize)],
    limit: Duration,
) -> bool {
    let t0 = Instant::now();
    loop {
        let mut all = true;
        for (status, n) in what {
            if count(http, base, status).await != *n {
                all = false;
            }
        }
        if all {
            return true;
        }
        if t0.elapsed() > limit {
            for (status, n) in what {
                eprintln!("  {status}: {} (want {n})", count(http, base, status).await);
            }
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(name: &str, n: usize, wall: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{name}: {n} in {:.2} s = {:.0}/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let a = args().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    let schema = format!("load_{}", std::process::id());
    let procs: Vec<Proc> = (0..a.processes)
        .map(|i| spawn(&a, dir.path(), i, &schema))
        .collect();
    let urls: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
    println!(
        "store {}, {} server process(es): {}",
        a.store,
        procs.len(),
        urls.join(" ")
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let mut failures = Vec::new();

    // ----- starts -----
    let unique = a.starts - (a.starts as f64 * a.dup_starts).round() as usize;
    let waiting = a.deliveries - (a.deliveries as f64 * a.dup_deliveries).round() as usize;
    assert!(waiting <= unique, "more deliveries than runs");
    let body = |i: usize| {
        json!({
            "run_id": format!("load-{i}"),
            "input": {
                "request": "It arrived broken, refund please.",
                "order_id": format!("o-{i}"),
                "amount_cents": if i < waiting { 9000 } else { 1200 },
                "email": format!("c{i}@example.com"),
            }
        })
    };
    let mut plan: Vec<usize> = (0..unique).collect();
    for k in 0..(a.starts - unique) {
        plan.push((k * 7919) % unique);
    }
    shuffle(&mut plan, 0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    let tasks: Vec<_> = plan
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let url = format!("{}/v1/programs/customer_refund/runs", urls[k % urls.len()]);
            let http = http.clone();
            let b = body(i);
            tokio::spawn(async move { post(&http, url, b).await })
        })
        .collect();
    let mut lat = Vec::new();
    let (mut created, mut repeated, mut other) = (0, 0, Vec::new());
    for t in tasks {
        let (s, b, d) = t.await.unwrap();
        lat.push(d);
        match s {
            201 => created += 1,
            200 => repeated += 1,
            _ => other.push(format!("{s} {b}")),
        }
    }
    report("starts", a.starts, t0.elapsed(), lat);
    println!(
        "  201 created: {created}, 200 existing: {repeated}, other: {}",
        other.len()
    );
    if !other.is_empty() {
        failures.push(format!("{} starts failed, e.g. {}", other.len(), other[0]));
    }
    if !wait_for(
        &http,
        &urls[0],
        &[("success", unique - waiting), ("suspended", waiting)],
        Duration::from_secs(300),
    )
    .await
    {
        failures.push("the runs did not all reach success / suspended".into());
    }
    println!(
        "  all started runs settled after {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    // ----- webhooks -----
    let mut hooks: Vec<usize> = (0..waiting).collect();
    for k in 0..(a.deliveries - waiting) {
        hooks.push((k * 104_729) % waiting);
    }
    shuffle(&mut hooks, 0x2545_f491_4f6c_dd1d);
    let t1 = Instant::now();
    let tasks: Vec<_> = hooks
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let urls = urls.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let mut retries = 0;
                let t = Instant::now();
                loop {
                    let url = format!(
                        "{}/v1/runs/load-{i}/events/approval",
                        urls[(k + retries) % urls.len()]
                    );
                    let b =
                        json!({ "event_id": format!("evt-{i}"), "payload": { "approved": true } });
                    let (s, body, _) = post(&http, url, b).await;
                    if (s == 409 && body["error"]["code"] == "busy") || s == 503 {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    return (s, body, t.elapsed(), retries);
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    let (mut delivered, mut duplicate, mut retried, mut other) = (0, 0, 0, Vec::new());
    for t in tasks {
        let (s, b, d, r) = t.await.unwrap();
        lat.push(d);
        retried += r;
        match (s, b["outcome"].as_str()) {
            (200, Some("delivered")) => delivered += 1,
            (200, Some("duplicate")) => duplicate += 1,
            _ => other.push(format!("{s} {b}")),
        }
    }
    report("deliveries", a.deliveries, t1.elapsed(), lat);
    println!(
        "  delivered: {delivered}, duplicate: {duplicate}, retried after busy: {retried}, other: {}",
        other.len()
    );
    if delivered != waiting {
        failures.push(format!(
            "{delivered} deliveries applied, expected {waiting}"
        ));
    }
    if !other.is_empty() {
        failures.push(format!(
            "{} deliveries failed, e.g. {}",
            other.len(),
            other[0]
        ));
    }
    if !wait_for(
        &http,
        &urls[0],
        &[("success", unique)],
        Duration::from_secs(300),
    )
    .await
    {
        failures.push("not every run ended in success".into());
    }

    // ----- checks -----
    let total = {
        let r = get(&http, &format!("{}/v1/runs?limit=1000", urls[0]))
            .await
            .unwrap();
        r.json::<Json>().await.unwrap()["runs"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };
    if total != unique {
        failures.push(format!("the store holds {total} runs, expected {unique}"));
    }
    let mut bad_traces = 0;
    for i in 0..unique {
        let r = get(
            &http,
            &format!("{}/v1/runs/load-{i}/trace", urls[i % urls.len()]),
        )
        .await;
        let Ok(r) = r else {
            bad_traces += 1;
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        let kinds: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .filter_map(|e| e["event"]["type"].as_str().map(str::to_string))
            .collect();
        let ended = kinds.iter().filter(|k| *k == "run_ended").count();
        let deliveries = kinds.iter().filter(|k| *k == "delivered").count();
        let want_deliveries = usize::from(i < waiting);
        if ended != 1 || deliveries != want_deliveries {
            bad_traces += 1;
            if bad_traces <= 3 {
                eprintln!("  load-{i}: {ended} run_ended, {deliveries} delivered");
            }
        }
    }
    if bad_traces > 0 {
        failures.push(format!(
            "{bad_traces} runs did not end exactly once / apply their delivery once"
        ));
    }
    drop(procs);
    let mut effects = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..a.processes {
        let text =
            std::fs::read_to_string(dir.path().join(format!("ledger-{i}.txt"))).unwrap_or_default();
        for line in text.lines() {
            let id = line.split(' ').next().unwrap_or("").to_string();
            *effects.entry(id).or_default() += 1;
        }
    }
    let executions: usize = effects.values().sum();
    let twice = effects.values().filter(|n| **n > 1).count();
    println!(
        "effects: {executions} executions of {} effect ids, {twice} executed more than once; traces checked: {unique}",
        effects.len()
    );
    if twice > 0 || executions != unique {
        failures.push(format!(
            "{executions} effect executions for {unique} runs, {twice} effect ids executed twice"
        ));
    }
    if a.store == "postgres" {
        println!(
            "(schema {schema} in the database is left for inspection; drop it with DROP SCHEMA {schema} CASCADE)"
        );
    }
    if failures.is_empty() {
        println!(
            "ok: every run ended exactly once, no effect id executed twice, no delivery applied twice"
        );
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        std::process::exit(1);
    }
}
