#!/usr/bin/env bash
# Create (or refresh) the virtualenv with the real protocol clients the
# conformance tests drive (paho-mqtt, slixmpp). Idempotent and quick when
# nothing changed; prints the interpreter path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${IMGATE_VENV:-.venv}
req=conformance/python/requirements.txt
stamp="$venv/.requirements.sha"
want=$(sha1sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi
echo "$(cd "$venv" && pwd)/bin/python"
