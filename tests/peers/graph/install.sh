#!/usr/bin/env bash
# Installs the npm packages that check-mermaid.mjs needs (mermaid's parser, happy-dom), exactly
# as package-lock.json pins them. Needs Node >= 20.19 and npm. Graphviz (the DOT peer) is a Debian
# package: `apt-get update && apt-get install -y graphviz`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
npm ci --no-audit --no-fund --loglevel=error
node check-mermaid.mjs --version
