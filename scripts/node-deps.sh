#!/usr/bin/env bash
# Install what the browser and xmpp.js conformance tests drive: the npm
# packages pinned in conformance/node/package-lock.json (MQTT.js, xmpp.js,
# Converse.js, ws, playwright-core) into conformance/node/node_modules with
# `npm ci`, and Debian's `chromium` when no `chromium` is on PATH (apt-get;
# sudo only when not root). Idempotent and quick when nothing changed (a stamp of the lock
# file); playwright-core downloads no browser of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=conformance/node
lock="$dir/package-lock.json"
stamp="$dir/node_modules/.lock.sha"
want=$(sha1sum "$lock" | cut -d' ' -f1)

if ! command -v npm >/dev/null 2>&1; then
  echo "node-deps: npm is not installed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

if ! command -v chromium >/dev/null 2>&1; then
  sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
fi
command -v chromium
