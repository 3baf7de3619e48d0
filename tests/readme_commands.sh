#!/usr/bin/env bash
# Runs every shell command line of README.md, in order, in a fresh copy of the repository (the
# tracked files as they are in the working tree, nothing untracked, no build output), the way a
# new user types them from the repository root. Each must exit 0, or the status its comment
# announces as `# exit N: ...`. Two lines are skipped, visibly:
#   * the one ending in `# run the whole test suite` (.ci/run runs it already, and running the
#     test suite from inside a test would recurse);
#   * `benches/peer/compare.sh` (minutes of benchmarking and a Python package from PyPI; set
#     README_RUN_BENCH=1 to run it too);
#   * the real-model commands (`tests/peers/llm/...`, `--model http...`): the first builds a
#     model server for about 12 minutes. Set README_RUN_LLM=1 to run them too (.ci/run does,
#     after installing the server): they then use this repository's install
#     (tests/peers/llm/.work, or $NANOVM_LLM_DIR), and the server they start is stopped at exit.
#
# `cargo install` installs into a temporary root put first on PATH (nothing of the caller's is
# touched). Builds share this repository's target directory (only registry dependencies are
# reused: the copy's own crates are rebuilt); set README_TARGET_DIR to build elsewhere, e.g. in
# an empty directory for a build from nothing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

tmp=$(mktemp -d)
llm_port=""
cleanup() {
  if [ -n "$llm_port" ]; then "$repo/tests/peers/llm/serve.sh" --stop "$llm_port" || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
export NANOVM_LLM_DIR=${NANOVM_LLM_DIR:-$repo/tests/peers/llm/.work}

# The working tree's tracked files as a commit (HEAD when nothing is modified), exported.
snapshot=$(git stash create)
snapshot=${snapshot:-HEAD}
mkdir "$tmp/repo"
git archive "$snapshot" | tar -x -C "$tmp/repo"

export CARGO_TARGET_DIR=${README_TARGET_DIR:-$repo/target}
export CARGO_INSTALL_ROOT=$tmp/cargo-root
export PATH=$CARGO_INSTALL_ROOT/bin:$PATH
export CARGO_TERM_COLOR=never

# The command lines of the ```sh blocks, in order.
mapfile -t lines < <(awk '
  /^```/ { if (inside) { inside = 0 } else if ($0 ~ /^```(sh|bash|shell|console)[[:space:]]*$/) { inside = 1 }; next }
  inside && NF { print }
' README.md)
if [ "${#lines[@]}" -eq 0 ]; then
  echo "error: README.md has no shell command lines" >&2
  exit 1
fi

ran=0
skipped=0
for line in "${lines[@]}"; do
  if [[ "$line" =~ \#\ run\ the\ whole\ test\ suite[[:space:]]*$ ]]; then
    echo "skipped (run by .ci/run itself; here it would recurse): $line"
    skipped=$((skipped + 1))
    continue
  fi
  if [[ "$line" == benches/peer/compare.sh* ]] && [ "${README_RUN_BENCH:-0}" != 1 ]; then
    echo "skipped (a benchmark of several minutes; README_RUN_BENCH=1 runs it): $line"
    skipped=$((skipped + 1))
    continue
  fi
  if [[ "$line" == tests/peers/llm/* || "$line" == *"--model http"* ]]; then
    if [ "${README_RUN_LLM:-0}" != 1 ]; then
      echo "skipped (needs the model server tests/peers/llm/install.sh builds; README_RUN_LLM=1 runs it): $line"
      skipped=$((skipped + 1))
      continue
    fi
    if [[ "$line" =~ ^tests/peers/llm/serve\.sh[[:space:]]+([0-9]+) ]]; then
      llm_port=${BASH_REMATCH[1]}
    fi
  fi
  if [[ "$line" == "cargo run --release --example server"* ]]; then
    # A server runs until stopped: start it as written (on a free port), wait for its first
    # lines, run the curl line it prints (it must create the run), read the run, stop it.
    echo "==> $line   (in the background)"
    out=$tmp/server.out
    (cd "$tmp/repo" && NANOVM_SERVER_ADDR=127.0.0.1:0 exec setsid bash -c "exec $line" >"$out" 2>"$tmp/server.err") &
    server_pid=$!
    for _ in $(seq 1 1200); do
      grep -q '^then: curl' "$out" 2>/dev/null && break
      if ! kill -0 "$server_pid" 2>/dev/null; then cat "$tmp/server.err" >&2; echo "error: the server exited" >&2; exit 1; fi
      sleep 1
    done
    start_line=$(grep -m1 '^  curl -s -H' "$out" | sed 's/^  //')
    read_line=$(grep -m1 '^then: curl' "$out" | sed 's/^then: //')
    if [ -z "$start_line" ] || [ -z "$read_line" ]; then cat "$out" "$tmp/server.err" >&2; echo "error: no curl line printed" >&2; exit 1; fi
    echo "==> $start_line"
    created=$(eval "$start_line")
    echo "$created"
    sleep 2
    echo "==> $read_line"
    state=$(eval "$read_line")
    echo "$state"
    # The viewer line: the page is served, and its read-only token reads the run (no browser
    # here; nanovm-server/tests/viewer.rs drives the page in Chromium).
    viewer=$(grep -m1 '^live viewer' "$out" | sed 's/^[^:]*: //')
    viewer_page=$(curl -s "${viewer%%#*}" || true)
    viewer_steps=$(curl -s -H "Authorization: Bearer ${viewer##*#token=}" "${viewer%%/viewer#*}/v1/runs/refund-1/steps" || true)
    echo "==> viewer: ${viewer%%#*}"
    kill -INT -- "-$server_pid" 2>/dev/null || kill -INT "$server_pid" || true
    wait "$server_pid" || true
    if [[ "$created" != *'"created":true'* || "$state" != *'"status":"success"'* ]]; then
      echo "error: the printed curl line did not start a refund that succeeded" >&2
      exit 1
    fi
    if [[ "$viewer_page" != *'<title>nanovm viewer</title>'* || "$viewer_steps" != *'"verified":true'* ]]; then
      echo "error: the printed viewer URL did not serve the page, or its token could not read the run" >&2
      exit 1
    fi
    ran=$((ran + 1))
    continue
  fi
  expected=0
  if [[ "$line" =~ \#[[:space:]]*exit[[:space:]]+([0-9]+): ]]; then
    expected=${BASH_REMATCH[1]}
  fi
  echo "==> $line"
  set +e
  (cd "$tmp/repo" && eval "$line")
  status=$?
  set -e
  if [ "$status" -ne "$expected" ]; then
    echo "error: README command exited $status, expected $expected: $line" >&2
    exit 1
  fi
  ran=$((ran + 1))
done
echo "README commands: $ran ran as written, $skipped skipped (named above)"
