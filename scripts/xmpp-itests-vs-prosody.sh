#!/usr/bin/env bash
# slixmpp's own integration tests (itests/ of the slixmpp source
# distribution, the version in conformance/python/requirements.txt) run
# against a local prosody (Debian's package, on a non-default port) and
# against imgate, in the same run, the same way (plain TCP, two accounts,
# one room). Prints both scores; per-test results go to $OUT.
#
# imgate's accounts log in with tokens; its rooms are groups made by the
# admin API, so the room of the MUC tests is created first with both
# accounts as members (prosody creates it on join). Run as root (installs
# prosody if missing). Usage: scripts/xmpp-itests-vs-prosody.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/xmpp-itests}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=$(scripts/python-venv.sh | tail -1)
SLIX_VERSION=$("$PY" -c 'import slixmpp; print(slixmpp.__version__)')
WORK=$(mktemp -d)
chmod 755 "$WORK" # prosody runs as its own user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The itests from the source distribution (PyPI, via pip).
"$PY" -m pip download --quiet --no-deps --no-binary :all: "slixmpp==$SLIX_VERSION" -d "$WORK/sdist"
tar xzf "$WORK"/sdist/slixmpp-*.tar.gz -C "$WORK"
ITESTS=$(echo "$WORK"/slixmpp-*/itests)
ROOM="itests-room-$$"
PASS1=pw-one-$$; PASS2=pw-two-$$

# --- prosody on 15222 -------------------------------------------------
if ! command -v prosody >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody >/dev/null
fi
PROSODY_PORT=${PROSODY_PORT:-15222}
mkdir -p "$WORK/prosody/data"
chown -R prosody:prosody "$WORK/prosody" 2>/dev/null || true
cat > "$WORK/prosody/prosody.cfg.lua" <<CFG
daemonize = false
-- The script runs as root; Debian's prosody 0.12 refuses that (mod_posix)
-- and, on a race in its shutdown path, keeps running without listening.
run_as_root = true
pidfile = "$WORK/prosody/prosody.pid"
data_path = "$WORK/prosody/data"
c2s_ports = { $PROSODY_PORT }
s2s_ports = { }
c2s_direct_tls_ports = { }
http_ports = { }
https_ports = { }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
log = { error = "$WORK/prosody/error.log" }
modules_enabled = { "disco"; "roster"; "saslauth"; "blocklist"; "bookmarks"; "carbons";
  "pep"; "private"; "smacks"; "vcard4"; "vcard_legacy"; "ping"; "time"; "version";
  "mam"; "lastactivity" }
modules_disabled = { "s2s"; "tls" }
VirtualHost "localhost"
Component "muc.localhost" "muc"
  modules_enabled = { "muc_mam" }
CFG
chown prosody:prosody "$WORK/prosody/prosody.cfg.lua" 2>/dev/null || true
prosodyctl --config "$WORK/prosody/prosody.cfg.lua" register one localhost "$PASS1" >/dev/null
prosodyctl --config "$WORK/prosody/prosody.cfg.lua" register two localhost "$PASS2" >/dev/null
if (exec 3<>/dev/tcp/127.0.0.1/$PROSODY_PORT) 2>/dev/null; then
  echo "port $PROSODY_PORT is in use (set PROSODY_PORT)" >&2
  exit 1
fi
prosody --config "$WORK/prosody/prosody.cfg.lua" > "$WORK/prosody/console.log" 2>&1 &
PROSODY_PID=$!
PIDS+=($PROSODY_PID)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PROSODY_PORT) 2>/dev/null && break
  sleep 0.1
done
kill -0 "$PROSODY_PID" || { echo "prosody did not start:" >&2; cat "$WORK/prosody/console.log" >&2; exit 1; }

run_itests() { # NAME PORT PASS1 PASS2 MUC_SERVER
  CI_ACCOUNT1=one@localhost CI_ACCOUNT1_PASSWORD=$3 \
  CI_ACCOUNT2=two@localhost CI_ACCOUNT2_PASSWORD=$4 CI_MUC_SERVER=$5 \
    timeout 1200 "$PY" scripts/xmpp_itests/run_itests.py "$ITESTS" 127.0.0.1 "$2" "$ROOM" \
      "$OUT/$1.json" > "$OUT/$1.log" 2>&1 || true
  echo "$1: $(tail -1 "$OUT/$1.log")"
}
run_itests prosody "$PROSODY_PORT" "$PASS1" "$PASS2" muc.localhost

# --- imgate on ephemeral ports ----------------------------------------
BIN=${IMGATE_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --quiet -p imgate --bin imgate
  BIN=${CARGO_TARGET_DIR:-target}/debug/imgate
fi
mkdir -p "$WORK/imgate"
IMGATE_DATA_DIR="$WORK/imgate" IMGATE_ADMIN_SECRET=itests-secret IMGATE_XMPP_DOMAIN=localhost IMGATE_MULTI_ENDPOINT=true \
IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_PB_ADDR=127.0.0.1:0 IMGATE_MQTT_ADDR=127.0.0.1:0 \
IMGATE_HTTP_ADDR=127.0.0.1:0 IMGATE_ADMIN_ADDR=127.0.0.1:0 \
  "$BIN" serve > "$WORK/imgate/stdout" 2> "$WORK/imgate/stderr" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^ready' "$WORK/imgate/stdout" 2>/dev/null && break; sleep 0.1; done
XMPP=$(awk '/^listening xmpp/ {print $3}' "$WORK/imgate/stdout")
ADMIN=$(awk '/^listening admin/ {print $3}' "$WORK/imgate/stdout")
admin() { # PATH JSON -> result JSON
  "$PY" - "$ADMIN" "$1" "$2" <<'PYADMIN'
import hashlib, sys, time, urllib.request, uuid
addr, path, body = sys.argv[1:4]
nonce, ts = uuid.uuid4().hex, str(int(time.time() * 1000))
sign = hashlib.sha1(f"{nonce}|itests-secret|{ts}".encode()).hexdigest()
req = urllib.request.Request(f"http://{addr}{path}", data=body.encode(),
    headers={"nonce": nonce, "timestamp": ts, "sign": sign, "content-type": "application/json"})
print(urllib.request.urlopen(req).read().decode())
PYADMIN
}
token() { admin /admin/user/get_token "{\"userId\":\"$1\",\"clientId\":\"*\",\"platform\":3}" \
  | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["result"]["token"])'; }
T1=$(token one); T2=$(token two)
admin /admin/group/create "{\"operator\":\"one\",\"group\":{\"targetId\":\"$ROOM\",\"name\":\"$ROOM\"},\"members\":[\"one\",\"two\"]}" >/dev/null
run_itests imgate "${XMPP##*:}" "$T1" "$T2" groups.localhost

"$PY" - "$OUT/prosody.json" "$OUT/imgate.json" <<'PYCMP'
import json, sys
p, i = (json.load(open(f)) for f in sys.argv[1:3])
names = sorted(set(p) | set(i))
print(f"{'test':70} prosody imgate")
for n in names:
    print(f"{n[-70:]:70} {p.get(n, '-'):7} {i.get(n, '-')}")
print(f"prosody: {sum(v == 'pass' for v in p.values())}/{len(p)}  imgate: {sum(v == 'pass' for v in i.values())}/{len(i)}")
PYCMP
