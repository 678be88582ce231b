#!/usr/bin/env bash
# End-to-end durable throughput of a real `imgate serve` on the RabbitMQ
# store (HTTP send → publisher confirm → indexed → 200, driven by
# `imgate-bench http`), next to the raw RabbitMQ publisher-confirm rate measured
# with lapin on the same broker in the same run, same record size and
# concurrency (adapters/examples/rabbit_throughput.rs --raw-only), and the
# ratio (issue 6, "Done when").
#
# Usage: IMGATE_TEST_AMQP=amqp://guest:guest@127.0.0.1:5672/%2f \
#          scripts/bench-rabbit.sh [messages] [concurrency]
# Everything it creates on the broker uses the prefix bench-e2e-<pid> (the
# gateway's log stream, exchange, device queues) or bench-<pid> (the raw
# run) and is deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-5000}
concurrency=${2:-64}
url=${IMGATE_TEST_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo build --release -q -p imgate --bin imgate -p imgate-bench
cargo build --release -q -p imgate-adapters --example rabbit_throughput
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/imgate
bench=$target/release/imgate-bench
example=$target/release/examples/rabbit_throughput
prefix="bench-e2e-$$"
sep='?'; [[ $url == *\?* ]] && sep='&'
store="${url}${sep}prefix=${prefix}"

dir=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  # The gateway's log stream and exchange (device queues are only made
  # for devices that attach; `imgate-bench http` attaches none).
  IMGATE_TEST_AMQP=$url "$example" --cleanup "$prefix" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

IMGATE_DATA_DIR=$dir IMGATE_STORE=$store IMGATE_HTTP_ADDR=127.0.0.1:0 IMGATE_ADMIN_ADDR=127.0.0.1:0 \
IMGATE_PB_ADDR=127.0.0.1:0 IMGATE_MQTT_ADDR=127.0.0.1:0 IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_WS_ADDR=127.0.0.1:0 \
IMGATE_RATE_LIMIT_MESSAGES=100000000 RUST_LOG=warn \
  "$bin" serve >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 600); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
grep -q '^ready' "$dir/out" || { echo "imgate did not start:"; cat "$dir/err"; exit 1; }
http=$(awk '$1=="listening" && $2=="http" {print $3}' "$dir/out")
admin=$(awk '$1=="listening" && $2=="admin" {print $3}' "$dir/out")
load() {
  "$bench" http --http-url "http://$http" --admin-url "http://$admin" --data-dir "$dir" \
    --messages "$1" --concurrency "$concurrency"
}
json_field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

# Warm up both paths, then: raw, gateway, raw again (the broker's rate
# drifts; the raw figure is the mean of the two runs around the gateway's).
load 500 >/dev/null
raw1=$(IMGATE_TEST_AMQP=$url "$example" --raw-only "$messages" "$concurrency")
report=$(load "$messages")
raw2=$(IMGATE_TEST_AMQP=$url "$example" --raw-only "$messages" "$concurrency")

e2e=$(json_field msgs_per_sec <<<"$report")
errors=$(json_field errors <<<"$report")
rq1=$(sed -n 's/^raw_quorum_msgs_per_sec=//p' <<<"$raw1")
rq2=$(sed -n 's/^raw_quorum_msgs_per_sec=//p' <<<"$raw2")
rs1=$(sed -n 's/^raw_quorum_stream_msgs_per_sec=//p' <<<"$raw1")
rs2=$(sed -n 's/^raw_quorum_stream_msgs_per_sec=//p' <<<"$raw2")
bytes=$(sed -n 's/^record_bytes=//p' <<<"$raw1")
awk -v e="$e2e" -v q1="$rq1" -v q2="$rq2" -v s1="$rs1" -v s2="$rs2" -v n="$messages" \
    -v c="$concurrency" -v b="$bytes" -v err="$errors" 'BEGIN {
  q = (q1 + q2) / 2; s = (s1 + s2) / 2
  printf "messages=%d concurrency=%d record_bytes=%d (100-byte text)\n", n, c, b
  printf "raw lapin confirms, durable quorum queue:          %7.0f msg/s (runs %.0f, %.0f)\n", q, q1, q2
  printf "raw lapin confirms, quorum queue + stream (CC):    %7.0f msg/s (runs %.0f, %.0f)\n", s, s1, s2
  printf "imgate serve on RabbitMQ, imgate-bench http (e2e): %7.0f msg/s (errors %d)\n", e, err
  printf "ratio e2e/raw quorum: %.2f; e2e/raw quorum+stream: %.2f\n", e / q, e / s
}'
echo "imgate-bench http report: $report"
