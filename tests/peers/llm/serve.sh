#!/usr/bin/env bash
# Serves the model install.sh fetched (SmolLM2-135M-Instruct, as `smollm2`) with
# llama-cpp-python's OpenAI-compatible server at http://127.0.0.1:PORT/v1 (default 8088), in
# the background: returns once the server answers, printing its base URL; the server's pid is
# in $dir/server-PORT.pid and its log in $dir/server-PORT.log.
#   tests/peers/llm/serve.sh [PORT]          start (or find running) and wait until it answers
#   tests/peers/llm/serve.sh --stop [PORT]   stop the one this script started
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${NANOVM_LLM_DIR:-$here/.work}"
stop=0
if [ "${1:-}" = "--stop" ]; then stop=1; shift; fi
port="${1:-8088}"
pidfile="$dir/server-$port.pid"
log="$dir/server-$port.log"
running() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

if [ "$stop" = 1 ]; then
  if running; then
    kill "$(cat "$pidfile")"
    echo "stopped the model server on port $port"
  fi
  rm -f "$pidfile"
  exit 0
fi

python="$dir/venv/bin/python"
model="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -x "$python" ] || [ ! -s "$model" ]; then
  echo "error: no model server installed in $dir; run tests/peers/llm/install.sh first" >&2
  exit 1
fi
answers() {
  "$python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" 2>/dev/null
}
if ! running; then
  # One thread: the machine is shared; a 135M model answers in well under a second anyway.
  nohup "$python" -m llama_cpp.server --model "$model" --model_alias smollm2 \
    --host 127.0.0.1 --port "$port" --seed 42 --n_threads 1 --n_ctx 2048 --logits_all true \
    >"$log" 2>&1 &
  echo $! >"$pidfile"
fi
for _ in $(seq 1 240); do
  if answers; then
    echo "http://127.0.0.1:$port/v1"
    exit 0
  fi
  if ! running; then
    echo "error: the model server exited; its log ($log) ends with:" >&2
    tail -n 20 "$log" >&2
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.5
done
echo "error: the model server did not answer on port $port within 120 s" >&2
exit 1
