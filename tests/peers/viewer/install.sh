#!/usr/bin/env bash
# Installs playwright-core (the DevTools-protocol client the viewer test drives Chromium with),
# exactly as package-lock.json pins it. Needs Node >= 20.19 and npm. The browser is the Debian
# package, not a download: `apt-get update && apt-get install -y chromium` (/usr/bin/chromium).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
npm ci --no-audit --no-fund --loglevel=error
node drive-viewer.mjs --version
