#!/usr/bin/env bash
# Side-by-side benchmark: llm-nano-vm 0.8.9 (Python peer) vs nanovm (Rust).
#
# Usage (from anywhere; paths are relative to the repo root):
#   benches/peer/compare.sh [--quick]
#
# Environment: PYTHON (default python3) is used to create target/peer-venv.
# Outputs: target/peer/peer.jsonl, target/peer/nanovm.jsonl (if the nanovm
# side exists), and a Markdown table on stdout.
set -euo pipefail

PEER_SPEC="llm-nano-vm==0.8.9"

usage() { echo "usage: $0 [--quick]" >&2; }

QUICK=()
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=(--quick) ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument: $arg" >&2; usage; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="target/peer-venv"
OUT="target/peer"
mkdir -p "$OUT"

# --- peer environment --------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "compare.sh: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("llm-nano-vm") != "0.8.9")' 2>/dev/null; then
    echo "compare.sh: pip install $PEER_SPEC" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PEER_SPEC"
fi

# --- machine -------------------------------------------------------------------
cpu_model="$(grep -m1 -E '^(model name|Hardware|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
echo "## Machine"
echo
echo "- nproc: $(nproc)"
echo "- CPU: ${cpu_model:-unknown}"
echo "- Python (peer): $("$VENV/bin/python" -c 'import platform; print(platform.python_implementation(), platform.python_version())')"
echo "- peer: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("llm-nano-vm", m.version("llm-nano-vm"))')"
if [[ ${#QUICK[@]} -gt 0 ]]; then
    echo "- mode: --quick (smoke test; numbers are NOT meaningful)"
fi
echo

# --- peer half -------------------------------------------------------------------
echo "compare.sh: running peer benchmark -> $OUT/peer.jsonl" >&2
"$VENV/bin/python" benches/peer/peer_bench.py ${QUICK[@]+"${QUICK[@]}"} > "$OUT/peer.jsonl"

# --- nanovm half -----------------------------------------------------------------
# Only if the workspace has a package `nanovm-bench` with a `compare` binary.
rm -f "$OUT/nanovm.jsonl"
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

MERGE_INPUTS=("$OUT/peer.jsonl")
if [[ -z "$nanovm_skip_reason" ]]; then
    echo "compare.sh: running nanovm benchmark -> $OUT/nanovm.jsonl" >&2
    cargo run --release -p nanovm-bench --bin compare -- --json ${QUICK[@]+"${QUICK[@]}"} > "$OUT/nanovm.jsonl"
    MERGE_INPUTS+=("$OUT/nanovm.jsonl")
else
    echo "compare.sh: NOTE: skipping the nanovm half: $nanovm_skip_reason." >&2
    echo "compare.sh: NOTE: printing the peer half only." >&2
fi

# --- table -------------------------------------------------------------------------
echo "## Results"
echo
if [[ -n "$nanovm_skip_reason" ]]; then
    echo "_nanovm half skipped: ${nanovm_skip_reason}._"
    echo
fi
"$PYTHON" benches/peer/merge_table.py "${MERGE_INPUTS[@]}"
