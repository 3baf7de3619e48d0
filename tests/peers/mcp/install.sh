#!/usr/bin/env bash
# Installs the real MCP clients the server's MCP tests drive: the Python SDK (PyPI `mcp` 2.3.0,
# in a venv at tests/peers/mcp/.venv) and the TypeScript SDK (npm `@modelcontextprotocol/sdk`
# 1.32.2, pinned by package-lock.json). pip's and npm's caches make a second run quick.
# Needs python3 with venv, node >= 20 and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check 'mcp==2.3.0'
.venv/bin/python -c 'import mcp, importlib.metadata as m; print("python mcp", m.version("mcp"))'
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
node -p "\"ts sdk \" + JSON.parse(require(\"fs\").readFileSync(\"node_modules/@modelcontextprotocol/sdk/package.json\")).version"
