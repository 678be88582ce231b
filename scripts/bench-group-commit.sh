#!/usr/bin/env bash
# HTTP send → durable ack throughput on the embedded store, with group
# commit (default) and with one fsync per message (IMGATE_EMBEDDED_MAX_BATCH=1),
# measured in the same run on this machine with `imgate-bench http`.
#
# Usage: scripts/bench-group-commit.sh [messages] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-4000}
concurrency=${2:-64}
cargo build --release -q -p imgate -p imgate-bench
bin=${CARGO_TARGET_DIR:-target}/release/imgate
bench=${CARGO_TARGET_DIR:-target}/release/imgate-bench

run() {
  local label=$1 batch=$2
  local dir; dir=$(mktemp -d)
  IMGATE_DATA_DIR=$dir IMGATE_HTTP_ADDR=127.0.0.1:0 IMGATE_ADMIN_ADDR=127.0.0.1:0 \
  IMGATE_PB_ADDR=127.0.0.1:0 IMGATE_MQTT_ADDR=127.0.0.1:0 IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_WS_ADDR=127.0.0.1:0 \
  IMGATE_RATE_LIMIT_MESSAGES=1000000 IMGATE_EMBEDDED_MAX_BATCH=$batch IMGATE_LOG=warn \
    "$bin" serve >"$dir/out" 2>"$dir/err" &
  local pid=$!
  for _ in $(seq 1 200); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
  local http admin
  http=$(awk '$1=="listening" && $2=="http" {print $3}' "$dir/out")
  admin=$(awk '$1=="listening" && $2=="admin" {print $3}' "$dir/out")
  local report
  report=$("$bench" http --http-url "http://$http" --admin-url "http://$admin" --data-dir "$dir" \
    --messages "$messages" --concurrency "$concurrency")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  echo "$label $report"
}

run "group-commit(max_batch=512)" 512
run "fsync-per-message(max_batch=1)" 1
