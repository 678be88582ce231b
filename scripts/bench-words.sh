#!/usr/bin/env bash
# Does a 20,000-word sensitive list slow sending? HTTP send → durable ack
# with `imgate-bench http` on one gateway: first with an empty word list, then
# after adding 20,000 random 2–4 character CJK words through the admin API
# (no restart), in the same run.
#
# Usage: scripts/bench-words.sh [messages] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-6000}
concurrency=${2:-64}
cargo build --release -q -p imgate -p imgate-bench
bin=${CARGO_TARGET_DIR:-target}/release/imgate
bench=${CARGO_TARGET_DIR:-target}/release/imgate-bench
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
IMGATE_DATA_DIR=$dir IMGATE_HTTP_ADDR=127.0.0.1:0 IMGATE_ADMIN_ADDR=127.0.0.1:0 \
IMGATE_PB_ADDR=127.0.0.1:0 IMGATE_MQTT_ADDR=127.0.0.1:0 IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_WS_ADDR=127.0.0.1:0 \
IMGATE_RATE_LIMIT_MESSAGES=100000000 IMGATE_CONN_RATE_PER_IP=100000 IMGATE_MAX_CONNECTIONS_PER_IP=0 IMGATE_LOG=warn \
  "$bin" serve >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 200); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
http=$(awk '$1=="listening" && $2=="http" {print $3}' "$dir/out")
admin=$(awk '$1=="listening" && $2=="admin" {print $3}' "$dir/out")
load() {
  "$bench" http --http-url "http://$http" --admin-url "http://$admin" --data-dir "$dir" \
    --messages "$messages" --concurrency "$concurrency"
}
echo "no-words $(load)"
python3 - "$dir/words.json" <<'PY'
import json, random, sys
random.seed(7)
words = {"".join(chr(0x4E00 + random.randrange(0x1400)) for _ in range(random.randint(2, 4))) for _ in range(20000)}
json.dump({"words": sorted(words)}, open(sys.argv[1], "w"), ensure_ascii=False)
PY
nonce=n$RANDOM; ts=$(($(date +%s%N) / 1000000)); secret=$(cat "$dir/admin-secret")
sign=$(printf '%s|%s|%s' "$nonce" "$secret" "$ts" | sha1sum | cut -d' ' -f1)
added=$(curl -s -H "nonce: $nonce" -H "timestamp: $ts" -H "sign: $sign" -H 'content-type: application/json' \
  --data-binary @"$dir/words.json" "http://$admin/admin/sensitive/add")
echo "added: $added"
echo "20000-words $(load)"
