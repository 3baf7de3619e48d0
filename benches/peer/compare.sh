#!/usr/bin/env bash
# Side-by-side benchmark: llm-nano-vm 0.8.9 (Python peer), the durable engines a user would
# pick instead (DBOS on SQLite, LangGraph with SqliteSaver and without a checkpointer) vs
# nanovm (Rust).
#
# Usage (from anywhere; paths are relative to the repo root):
#   benches/peer/compare.sh [--quick] [--runs R] [--concurrency K]
#
#   --quick          smoke test: tiny samples, numbers are not meaningful
#   --runs R         samples per workload on both sides (default 5, 2 with --quick)
#   --concurrency K  also time nanovm on SQLite with K runs in flight (default 64;
#                    1 skips that pass). The main table is always one run at a time.
#   --no-durable-peers  skip DBOS and LangGraph (benches/peer/durable_peers.py)
#
# Environment: PYTHON (default python3) is used to create target/peer-venv;
# NANOVM_COMMIT names the measured nanovm revision when the tree is not a git
# checkout; TMPDIR is where nanovm's SQLite databases go.
# Outputs: target/peer/peer.jsonl, target/peer/nanovm.jsonl and
# target/peer/nanovm-concurrent.jsonl (if the nanovm side exists), and a
# Markdown report on stdout, also saved as target/peer/report.md (progress on
# stderr, also saved as target/peer/progress.log).
set -euo pipefail

PEER_SPEC="llm-nano-vm==0.8.9"
# The durable peers (benches/peer/durable_peers.py pins the same versions).
DURABLE_SPECS=("dbos==3.4.0" "langgraph==1.2.24" "langgraph-checkpoint-sqlite==3.1.2")

usage() { echo "usage: $0 [--quick] [--runs R] [--concurrency K] [--no-durable-peers]" >&2; }

QUICK=()
RUNS=()
CONCURRENCY=64
DURABLE_PEERS=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=(--quick); shift ;;
        --runs)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --runs needs a positive integer" >&2; usage; exit 2; }
            RUNS=(--runs "$2"); shift 2 ;;
        --concurrency)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --concurrency needs a positive integer" >&2; usage; exit 2; }
            CONCURRENCY="$2"; shift 2 ;;
        --no-durable-peers) DURABLE_PEERS=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument: $1" >&2; usage; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="target/peer-venv"
OUT="target/peer"
mkdir -p "$OUT"
# Everything on stdout also goes to the report file, stderr (both sides' progress, with every
# sample's min and max) to a log.
exec > >(tee "$OUT/report.md") 2> >(tee "$OUT/progress.log" >&2)

# --- peer environment --------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "compare.sh: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("llm-nano-vm") != "0.8.9")' 2>/dev/null; then
    echo "compare.sh: pip install $PEER_SPEC" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PEER_SPEC"
fi
if [[ "$DURABLE_PEERS" == 1 ]] && ! "$VENV/bin/python" -c '
import importlib.metadata as m, sys
want = dict(s.split("==") for s in sys.argv[1:])
sys.exit(any(m.version(d) != v for d, v in want.items()))' "${DURABLE_SPECS[@]}" 2>/dev/null; then
    echo "compare.sh: pip install ${DURABLE_SPECS[*]}" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${DURABLE_SPECS[@]}"
fi

# --- machine -------------------------------------------------------------------
cpu_model="$(grep -m1 -E '^(model name|Hardware|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
os_name="$( (. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}") || true)"
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown; }
nanovm_rev="${NANOVM_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
if [[ -z "${NANOVM_COMMIT:-}" ]] && ! git diff --quiet HEAD -- . 2>/dev/null; then
    nanovm_rev="$nanovm_rev (with uncommitted changes)"
fi
tmp_dir="${TMPDIR:-/tmp}"
echo "## Machine"
echo
echo "- nproc: $(nproc)"
echo "- CPU: ${cpu_model:-unknown}"
echo "- OS: ${os_name:-unknown}, $(uname -sr)"
echo "- Python (peer): $("$VENV/bin/python" -c 'import platform; print(platform.python_implementation(), platform.python_version())')"
echo "- peer: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("llm-nano-vm", m.version("llm-nano-vm"))')"
if [[ "$DURABLE_PEERS" == 1 ]]; then
    echo "- durable peers: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{d} {m.version(d)}" for d in ("dbos", "langgraph", "langgraph-checkpoint-sqlite", "SQLAlchemy")))'), SQLite $("$VENV/bin/python" -c 'import sqlite3; print(sqlite3.sqlite_version)') (Python's sqlite3)"
fi
echo "- nanovm: $nanovm_rev, $(rustc --version 2>/dev/null || echo 'rustc unknown')"
echo "- SQLite databases in: $tmp_dir ($(df -PT "$tmp_dir" 2>/dev/null | awk 'NR==2 {print $2}' || echo '?'))"
echo "- load average at start (1, 5, 15 min): $(load)"
if [[ ${#QUICK[@]} -gt 0 ]]; then
    echo "- mode: --quick (smoke test; numbers are NOT meaningful)"
fi
echo

# --- nanovm half: is there one? Build it before anything is timed. ---------------
# Only if the workspace has a package `nanovm-bench` with a `compare` binary.
rm -f "$OUT/nanovm.jsonl" "$OUT/nanovm-concurrent.jsonl" "$OUT/durable-peers.jsonl" "$OUT/disk.jsonl"
nanovm_skip_reason=""
if ! command -v cargo >/dev/null 2>&1; then
    nanovm_skip_reason="cargo not found on PATH"
elif ! cargo_meta="$(cargo metadata --no-deps --format-version 1 2>/dev/null)"; then
    nanovm_skip_reason="'cargo metadata' failed in $ROOT"
elif ! printf '%s' "$cargo_meta" | "$PYTHON" -c '
import json, sys
meta = json.load(sys.stdin)
ok = any(p["name"] == "nanovm-bench"
         and any(t["name"] == "compare" and "bin" in t["kind"] for t in p["targets"])
         for p in meta["packages"])
sys.exit(0 if ok else 1)'; then
    nanovm_skip_reason="the workspace has no package 'nanovm-bench' with a 'compare' binary (not written yet?)"
fi

if [[ -z "$nanovm_skip_reason" ]]; then
    echo "compare.sh: building the nanovm half (cargo build --release -p nanovm-bench --bin compare)" >&2
    cargo build --release --quiet -p nanovm-bench --bin compare
fi

# --- peer half -------------------------------------------------------------------
echo "compare.sh: running peer benchmark -> $OUT/peer.jsonl" >&2
"$VENV/bin/python" benches/peer/peer_bench.py ${QUICK[@]+"${QUICK[@]}"} ${RUNS[@]+"${RUNS[@]}"} > "$OUT/peer.jsonl"

MERGE_INPUTS=("$OUT/peer.jsonl")

# --- the disk's fsync latency, where every durable side keeps its SQLite files -----------
echo "compare.sh: measuring the fsync latency of $tmp_dir -> $OUT/disk.jsonl" >&2
"$PYTHON" benches/peer/fsync_latency.py --when "before the durable runs" "$tmp_dir" > "$OUT/disk.jsonl"
MERGE_INPUTS+=("$OUT/disk.jsonl")

# --- durable peers: DBOS, LangGraph --------------------------------------------------
if [[ "$DURABLE_PEERS" == 1 ]]; then
    echo "compare.sh: running the durable peers (DBOS, LangGraph) -> $OUT/durable-peers.jsonl" >&2
    TMPDIR="$tmp_dir" "$VENV/bin/python" benches/peer/durable_peers.py ${QUICK[@]+"${QUICK[@]}"} ${RUNS[@]+"${RUNS[@]}"} \
        > "$OUT/durable-peers.jsonl"
    MERGE_INPUTS+=("$OUT/durable-peers.jsonl")
fi

# --- nanovm half -----------------------------------------------------------------
if [[ -z "$nanovm_skip_reason" ]]; then
    echo "compare.sh: running nanovm benchmark -> $OUT/nanovm.jsonl" >&2
    cargo run --release --quiet -p nanovm-bench --bin compare -- --json ${QUICK[@]+"${QUICK[@]}"} ${RUNS[@]+"${RUNS[@]}"} > "$OUT/nanovm.jsonl"
    MERGE_INPUTS+=("$OUT/nanovm.jsonl")
    if [[ "$CONCURRENCY" -gt 1 ]]; then
        echo "compare.sh: running nanovm on SQLite with $CONCURRENCY runs in flight -> $OUT/nanovm-concurrent.jsonl" >&2
        cargo run --release --quiet -p nanovm-bench --bin compare -- --json --modes sqlite --concurrency "$CONCURRENCY" \
            ${QUICK[@]+"${QUICK[@]}"} ${RUNS[@]+"${RUNS[@]}"} > "$OUT/nanovm-concurrent.jsonl"
        MERGE_INPUTS+=("$OUT/nanovm-concurrent.jsonl")
    fi
else
    echo "compare.sh: NOTE: skipping the nanovm half: $nanovm_skip_reason." >&2
    echo "compare.sh: NOTE: printing the peer half only." >&2
fi

# The same after every durable run: on a shared disk the latency moves while we measure.
"$PYTHON" benches/peer/fsync_latency.py --when "after the durable runs" "$tmp_dir" >> "$OUT/disk.jsonl"

# --- table -------------------------------------------------------------------------
echo "## Results"
echo
if [[ -n "$nanovm_skip_reason" ]]; then
    echo "_nanovm half skipped: ${nanovm_skip_reason}._"
    echo
fi
"$PYTHON" benches/peer/merge_table.py "${MERGE_INPUTS[@]}"
echo
echo "Load average at the end (1, 5, 15 min): $(load)."
