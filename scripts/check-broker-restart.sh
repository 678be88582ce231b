#!/usr/bin/env bash
# By-hand check of issue 6's promise "lossless across broker restarts":
# a real `imgate serve` on the RabbitMQ store, a sender posting messages
# over HTTP and an MQTT device (mosquitto_sub, persistent session) reading
# its inbox, while RabbitMQ itself is stopped and started again
# (`rabbitmqctl stop_app` / `start_app`). Then: every message the gateway
# acked is in sync, and reached the device; the gateway recovered without
# a restart.
#
# The same check runs in the test suite, safely, as
# conformance/tests/rabbit_broker_restart.rs: it starts a private RabbitMQ
# node (conformance/src/private_rabbit.rs) and restarts that one:
#   IMGATE_TEST_AMQP=amqp://guest:guest@127.0.0.1:5672/%2f \
#     cargo test -p imgate-conformance --test rabbit_broker_restart
#
# This script is the by-hand variant, with mosquitto_sub as the device and
# `stop_app`/`start_app` on the broker `rabbitmqctl` reaches by default:
# the machine's shared broker, so it breaks every other test running at
# the same time. Never run it while tests run.
#
# Usage: IMGATE_TEST_AMQP=amqp://guest:guest@127.0.0.1:5672/%2f \
#          scripts/check-broker-restart.sh [messages] [outage-seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-600}
outage=${2:-5}
url=${IMGATE_TEST_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo build -q -p imgate --bin imgate
bin=${CARGO_TARGET_DIR:-target}/debug/imgate
prefix="restart-$$"
sep='?'; [[ $url == *\?* ]] && sep='&'

dir=$(mktemp -d)
pid= sub=
cleanup() {
  [[ -n $sub ]] && kill "$sub" 2>/dev/null || true
  [[ -n $pid ]] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  rabbitmqctl -q await_startup >/dev/null 2>&1 || rabbitmqctl -q start_app || true
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$prefix\." || true); do
    rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT

IMGATE_DATA_DIR=$dir IMGATE_STORE="${url}${sep}prefix=${prefix}" IMGATE_HTTP_ADDR=127.0.0.1:0 \
IMGATE_ADMIN_ADDR=127.0.0.1:0 IMGATE_PB_ADDR=127.0.0.1:0 IMGATE_MQTT_ADDR=127.0.0.1:0 \
IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_WS_ADDR=127.0.0.1:0 IMGATE_RATE_LIMIT_MESSAGES=100000000 RUST_LOG=info \
  "$bin" serve >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 600); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
grep -q '^ready' "$dir/out" || { echo "imgate did not start:"; cat "$dir/err"; exit 1; }
http=$(awk '$1=="listening" && $2=="http" {print $3}' "$dir/out")
admin=$(awk '$1=="listening" && $2=="admin" {print $3}' "$dir/out")
mqtt=$(awk '$1=="listening" && $2=="mqtt" {print $3}' "$dir/out")
token() { "$bin" admin --admin-url "http://$admin" --data-dir "$dir" get-token "$1" --client-id "$2"; }
alice=$(token alice alice-http)
bob=$(token bob bob-mqtt)

mosquitto_sub -h "${mqtt%:*}" -p "${mqtt##*:}" -V mqttv311 -c -i bob-mqtt -u bob -P "$bob" \
  -q 1 -t im/inbox/bob >"$dir/device" 2>"$dir/device.err" &
sub=$!

# Send in the background; write every acked messageUid to $dir/acked.
python3 - "$http" "$alice" "$messages" "$dir" <<'PY' &
import json, sys, time, urllib.request
http, token, total, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
acked, failed, i = [], 0, 0
deadline = time.time() + 180
while len(acked) < total and time.time() < deadline:
    body = json.dumps({"conv": {"type": 0, "target": "bob", "line": 0},
                       "payload": {"type": 1, "searchableContent": f"m{i}"},
                       "clientMsgId": f"restart-{i}"}).encode()
    req = urllib.request.Request(f"http://{http}/v1/messages", body, method="POST", headers={
        "Authorization": f"Bearer {token}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            out = json.load(r)
        if out.get("code") == 0:
            acked.append(str(out["result"]["messageUid"]))
        else:
            failed += 1
    except Exception:
        failed += 1
        time.sleep(0.05)
    i += 1
    with open(f"{d}/acked.tmp", "w") as f:
        f.write("\n".join(acked))
open(f"{d}/acked", "w").write("\n".join(acked) + "\n")
print(f"sender: {len(acked)} acked, {failed} failed")
PY
sender=$!

until [[ -s $dir/acked.tmp ]] && (( $(wc -w <"$dir/acked.tmp") >= messages / 4 )); do sleep 0.1; done
echo "stopping RabbitMQ for ${outage}s after $(wc -w <"$dir/acked.tmp") acks"
rabbitmqctl -q stop_app
sleep "$outage"
rabbitmqctl -q start_app
rabbitmqctl -q await_startup
echo "RabbitMQ is back"
wait "$sender"

# Every acked message is in bob's sync...
python3 - "$http" "$bob" "$dir" <<'PY'
import json, sys, urllib.request
http, token, d = sys.argv[1], sys.argv[2], sys.argv[3]
acked = set(open(f"{d}/acked").read().split())
seen, since = set(), "0"
while True:
    req = urllib.request.Request(f"http://{http}/v1/sync?since={since}",
                                 headers={"Authorization": f"Bearer {token}"})
    page = json.load(urllib.request.urlopen(req, timeout=15))["result"]
    for m in page["messages"]:
        seen.add(str(m["messageUid"]))
        since = str(m["messageUid"])
    if not page["hasMore"]:
        break
lost = acked - seen
print(f"sync: {len(acked)} acked, {len(lost)} missing")
sys.exit(1 if lost else 0)
PY
# ...and reached the MQTT device (bounded wait).
for _ in $(seq 1 300); do
  missing=$(grep -v -F -f <(grep -o '"messageUid":"\?[0-9]*' "$dir/device" | grep -o '[0-9]*$') "$dir/acked" | wc -l || true)
  (( missing == 0 )) && break
  sleep 0.1
done
echo "device: $(grep -c messageUid "$dir/device" || true) deliveries, $missing acked messages not delivered"
grep -E "connection lost|re-established|re-consume|consumer lost" "$dir/err" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-200 | head -12
(( missing == 0 ))
echo "broker restart: nothing acked lost"
