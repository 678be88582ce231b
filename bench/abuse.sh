#!/usr/bin/env bash
# Issue 11's abuse experiments (rows 1-4), each on a fresh release gateway
# on the embedded store, loopback only, bounded in count and time. Prints
# one JSON line per scenario (bench/abuse.py says what each measures).
#   bash bench/abuse.sh [scenario ...]   (default: all five)
# Knobs: SLOW_N (half-sent HTTP requests, default 3000), SLOW_RATE (/s,
# default 95, under the default per-IP connect rate), SLOW_HOLD (s, 40),
# QUEUE_N (300), RETAINED_N (2000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p imgate --bins
BIN="${CARGO_TARGET_DIR:-target}/release/imgate"
scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 ]] && scenarios=(slowloris xmpp-attrs xmpp-elements mqtt-queue retained)

start_gateway() { # data-dir -> sets PID, ports, SECRET
  local dir=$1 log=$1.log
  IMGATE_DATA_DIR=$dir IMGATE_PB_ADDR=127.0.0.1:0 IMGATE_MQTT_ADDR=127.0.0.1:0 \
  IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_WS_ADDR=127.0.0.1:0 IMGATE_HTTP_ADDR=127.0.0.1:0 IMGATE_ADMIN_ADDR=127.0.0.1:0 \
  IMGATE_ADMIN_SECRET=abuse-bench-secret IMGATE_RATE_LIMIT_MESSAGES=100000 \
  IMGATE_MAX_CONNECTIONS="${MAX_CONNECTIONS:-10000}" \
    "$BIN" serve >"$log" 2>"$log.err" &
  PID=$!
  local t0; t0=$(date +%s.%N)
  for _ in $(seq 1 600); do grep -q '^ready' "$log" && break; sleep 0.05; done
  READY_S=$(echo "$(date +%s.%N) - $t0" | bc)
  for p in pb mqtt xmpp http admin; do
    eval "${p^^}=$(awk -v p=$p '$1=="listening" && $2==p {print $3}' "$log")"
  done
  SECRET=abuse-bench-secret
}

for sc in "${scenarios[@]}"; do
  dir=$(mktemp -d /tmp/imgate-abuse.XXXXXX)/data
  start_gateway "$dir"
  args=$(printf '{"pid":%d,"pb":"%s","mqtt":"%s","xmpp":"%s","http":"%s","admin":"%s","secret":"%s","n":%d,"rate":%d,"hold":%d}' \
    "$PID" "$PB" "$MQTT" "$XMPP" "$HTTP" "$ADMIN" "$SECRET" \
    "$(case $sc in slowloris) echo "${SLOW_N:-3000}";; mqtt-queue) echo "${QUEUE_N:-300}";; retained) echo "${RETAINED_N:-2000}";; *) echo 1;; esac)" \
    "${SLOW_RATE:-95}" "${SLOW_HOLD:-40}")
  line=$(python3 bench/abuse.py "$sc" "$args")
  if [[ $sc == retained ]]; then
    size_mb=$(du -sm "$dir" | cut -f1)
    kill "$PID"; wait "$PID" || true
    start_gateway "$dir"
    line=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["data_dir_mb"]=int(sys.argv[2]); d["restart_ready_s"]=round(float(sys.argv[3]),2); print(json.dumps(d))' "$line" "$size_mb" "$READY_S")
  fi
  echo "$line"
  kill "$PID"; wait "$PID" || true
  rm -rf "$(dirname "$dir")"
done
