//! MCP through real clients: the Python SDK (PyPI `mcp` 2.3.0) and the TypeScript SDK (npm
//! `@modelcontextprotocol/sdk` 1.32.2), each over stdio and over Streamable HTTP, against the
//! `server` example (the three example workflows, mock tools, SQLite).
//!
//! Each client (tests/peers/mcp/client.py, client.mjs) lists the tools, starts
//! `customer_refund` through `start_customer_refund`, reads its status until it ends, reads its
//! trace resource, and checks what must be refused: a wrong input type (named) and calling one
//! of the program's own tools, which no MCP client can reach (effects stay behind the compiled
//! guards).
//!
//! `#[ignore]`d: a plain `cargo test` lists them as skipped with the reason; `.ci/run` installs
//! the clients (`tests/peers/mcp/install.sh`) and runs them with `-- --ignored`, where missing
//! clients fail them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const NEEDS: &str = "needs the MCP peers: run tests/peers/mcp/install.sh";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `server` example's binary (built here if `cargo test` has not built it).
fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples")
        .join("server");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--example", "server"])
            .current_dir(root())
            .status()
            .expect("cargo build --example server");
        assert!(ok.success(), "cargo build --example server failed");
    }
    bin
}

/// The HTTP server: the child, and its base URL.
struct Served {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_http(token: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(server_bin())
        .args(["--addr", "127.0.0.1:0", "--token", token, "--db"])
        .arg(dir.path().join("runs.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server example starts");
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    // Keep reading what it prints, so its stdout never breaks.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    Served {
        child,
        url,
        _dir: dir,
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} ({NEEDS})"));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed");
}

#[test]
#[ignore = "needs the MCP peers (tests/peers/mcp/install.sh)"]
fn the_python_mcp_client_over_stdio_and_http() {
    let py = root().join("tests/peers/mcp/.venv/bin/python");
    assert!(py.exists(), "{NEEDS}");
    let client = root().join("tests/peers/mcp/client.py");
    let dir = tempfile::tempdir().unwrap();
    run(
        Command::new(&py)
            .arg(&client)
            .arg("stdio")
            .arg(server_bin())
            .arg("--mcp-stdio")
            .arg("--db")
            .arg(dir.path().join("stdio.db")),
        "python client over stdio",
    );
    let served = serve_http("py-token");
    run(
        Command::new(&py)
            .arg(&client)
            .args(["http", &format!("{}/mcp", served.url), "py-token"]),
        "python client over Streamable HTTP",
    );
}

#[test]
#[ignore = "needs the MCP peers (tests/peers/mcp/install.sh)"]
fn the_typescript_mcp_client_over_stdio_and_http() {
    let peers = root().join("tests/peers/mcp");
    assert!(
        peers
            .join("node_modules/@modelcontextprotocol/sdk")
            .exists(),
        "{NEEDS}"
    );
    let dir = tempfile::tempdir().unwrap();
    run(
        Command::new("node")
            .current_dir(&peers)
            .arg("client.mjs")
            .arg("stdio")
            .arg(server_bin())
            .arg("--mcp-stdio")
            .arg("--db")
            .arg(dir.path().join("stdio.db")),
        "TypeScript client over stdio",
    );
    let served = serve_http("ts-token");
    run(
        Command::new("node").current_dir(&peers).args([
            "client.mjs",
            "http",
            &format!("{}/mcp", served.url),
            "ts-token",
        ]),
        "TypeScript client over Streamable HTTP",
    );
}
