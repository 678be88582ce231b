#!/usr/bin/env bash
# MQTT generic-topic throughput and latency: imgate's MQTT listener against
# Mosquitto (the named peer, on 127.0.0.1:1883 unless MOSQUITTO=host:port),
# same load, same machine, same run, at QoS 0 and QoS 1, with
# `imgate-bench mqtt`. Prints both reports and the imgate/Mosquitto ratios.
#
# Usage: scripts/bench-mqtt.sh [messages] [publishers] [subscribers] [size]
# (env: WINDOW=QoS 1 in-flight per publisher, MOSQUITTO=host:port,
# IMGATE_BIN=prebuilt gateway binary; IMGATE_*
# settings pass through to imgate, e.g. IMGATE_MQTT_MAX_QUEUED: imgate drops
# QoS 0 beyond a full session queue of 1000 by default, Mosquitto does not)
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-20000}
publishers=${2:-4}
subscribers=${3:-1}
size=${4:-100}
window=${WINDOW:-32}
mosquitto=${MOSQUITTO:-127.0.0.1:1883}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ -n "${IMGATE_BIN:-}" ]; then
  bin=$IMGATE_BIN # a prebuilt gateway (before/after comparisons)
  cargo build --release -q -p imgate-bench
else
  cargo build --release -q -p imgate -p imgate-bench
  bin=$CARGO_TARGET_DIR/release/imgate
fi
bench=$CARGO_TARGET_DIR/release/imgate-bench

dir=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

# imgate on ephemeral ports; rate limits out of the way of the measurement.
IMGATE_DATA_DIR=$dir IMGATE_HTTP_ADDR=127.0.0.1:0 IMGATE_ADMIN_ADDR=127.0.0.1:0 \
IMGATE_PB_ADDR=127.0.0.1:0 IMGATE_MQTT_ADDR=127.0.0.1:0 IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_WS_ADDR=127.0.0.1:0 \
IMGATE_RATE_LIMIT_MESSAGES=100000000 IMGATE_CONN_RATE_PER_IP=100000 IMGATE_MAX_CONNECTIONS_PER_IP=0 IMGATE_LOG=warn \
  "$bin" serve >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 200); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
grep -q '^ready' "$dir/out" || { echo "imgate did not start:" >&2; cat "$dir/err" >&2; exit 1; }
mqtt=$(awk '$1=="listening" && $2=="mqtt" {print $3}' "$dir/out")
admin=$(awk '$1=="listening" && $2=="admin" {print $3}' "$dir/out")

# One user per connection (username = user id, password = token, client
# id = the token's device), so the kick rule and per-user limits stay out.
run_id=$(date +%s)-$$
creds=$dir/credentials
for i in $(seq 0 $((publishers + subscribers - 1))); do
  user=bench-$run_id-$i
  token=$("$bin" admin --admin-url "http://$admin" --data-dir "$dir" get-token "$user" --client-id "d$i")
  echo "$user d$i $token" >>"$creds"
done

load() { # label host:port qos [extra args]
  local label=$1 addr=$2 qos=$3; shift 3
  "$bench" mqtt --label "$label" --host "${addr%:*}" --port "${addr##*:}" \
    --publishers "$publishers" --subscribers "$subscribers" --messages "$messages" \
    --qos "$qos" --size "$size" --window "$window" \
    --topic-prefix "bench/$run_id/$label/q$qos" "$@"
}

ratios() { # imgate-report mosquitto-report
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def r(x, y):
    return round(x / y, 2) if y else None
print(json.dumps({
    "qos": a["qos"],
    "publish_msgs_per_sec": r(a["publish_msgs_per_sec"], b["publish_msgs_per_sec"]),
    "delivery_msgs_per_sec": r(a["delivered_msgs_per_sec"], b["delivered_msgs_per_sec"]),
    "latency_p50": r(a["latency"]["p50_ms"], b["latency"]["p50_ms"]),
    "latency_p99": r(a["latency"]["p99_ms"], b["latency"]["p99_ms"]),
    "all_arrived": [a["all_arrived"], b["all_arrived"]],
}))
PY
}

echo "load: $messages messages, $publishers publishers, $subscribers subscribers, $size bytes, window $window"
for qos in 0 1; do
  im=$(load imgate "$mqtt" "$qos" --credentials "$creds")
  mo=$(load mosquitto "$mosquitto" "$qos")
  echo "imgate    $im"
  echo "mosquitto $mo"
  echo "ratio(imgate/mosquitto) $(ratios "$im" "$mo")"
done
# QoS 1 to persistent subscriber sessions: imgate saves every queued QoS 1
# message in mqtt.redb before the publisher's PUBACK (it survives kill -9);
# Mosquitto keeps them in memory (and on disk only at its autosave, if
# persistence is on), so this ratio is durable vs. in-memory.
im=$(load imgate "$mqtt" 1 --credentials "$creds" --persistent-subscribers)
mo=$(load mosquitto "$mosquitto" 1 --persistent-subscribers)
echo "persistent imgate    $im"
echo "persistent mosquitto $mo"
echo "persistent ratio(imgate/mosquitto) $(ratios "$im" "$mo")"
