#!/usr/bin/env bash
# imgate on the RabbitMQ store against RabbitMQ's own MQTT plugin, same
# machine, same broker, same run (issue "RabbitMQ scale"; how to read it:
# bench/README.md).
#
# Starts two imgate nodes (release build of this tree) on the machine's
# RabbitMQ with a prefix of their own, and RabbitMQ's MQTT plugin on a
# spare port (bench/peers/rabbitmq_mqtt.sh; disabled again at exit if it
# was off). Then, RUNS times:
#   - rabbitmq-mqtt  QoS 1 flood, each message to one subscriber
#                    (`imgate-bench mqtt --routing one`): the peer;
#   - imgate-rabbit  the durable IM path on one node (`imgate-bench im`:
#                    MQTT senders publish to im/send, receivers PUBACK
#                    their im/inbox deliveries), same sizes;
#   - imgate-rabbit-2nodes  the same with the senders on node A and the
#                    receivers on node B.
# Once: the store with DEVICES attached devices on one node (broker
# queues/channels with 10 and with DEVICES, attach rate, RSS per device),
# and a fresh node indexing a log of INDEX_MESSAGES messages (both through
# `cargo run --release -p imgate-adapters --example rabbit_throughput`).
# Prints one table; raw JSON lines go to $RESULTS
# (default bench/results/compare-rabbit-<time>.jsonl).
#
# Usage: bash bench/compare_rabbit.sh
# Sizes (env): RUNS=3, SENDERS=50, RECEIVERS=10, PER_SENDER=400, SIZE=256,
# WINDOW=32, DEVICES=50000, INDEX_MESSAGES=1000000, WAIT_SECS=15,
# RUN_TIMEOUT=600; SKIP_DEVICES=1, SKIP_INDEX=1 leave parts out;
# AMQP (default amqp://guest:guest@127.0.0.1:5672/%2f).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

RUNS=${RUNS:-3}
SENDERS=${SENDERS:-50}
RECEIVERS=${RECEIVERS:-10}
PER_SENDER=${PER_SENDER:-400}
SIZE=${SIZE:-256}
WINDOW=${WINDOW:-32}
DEVICES=${DEVICES:-50000}
INDEX_MESSAGES=${INDEX_MESSAGES:-1000000}
WAIT_SECS=${WAIT_SECS:-15}
AMQP=${AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
MESSAGES=$((SENDERS * PER_SENDER))
RESULTS_NAME=compare-rabbit

source "$root/bench/lib.sh"

prefix=bench-cmp-$$
sep='?'; [[ $AMQP == *\?* ]] && sep='&'
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cleanup_rabbit_store() {
  for q in log state control mqtt-retained; do
    rabbitmqctl -q delete_queue "$prefix.$q" >/dev/null 2>&1 || true
  done
}
# The nodes first (they would declare their streams again), then the streams.
trap 'cleanup; cleanup_rabbit_store' EXIT

# ---------------------------------------------------------------- imgate nodes
node_up() { # node-id -> sets node_dir, node_pid, node_mqtt, node_admin
  local id=$1
  node_dir=$work/node$id
  mkdir -p "$node_dir/data"
  IMGATE_DATA_DIR=$node_dir/data IMGATE_STORE="$AMQP${sep}prefix=$prefix" IMGATE_NODE_ID=$id \
  IMGATE_ADMIN_SECRET=$secret \
  IMGATE_HTTP_ADDR=127.0.0.1:0 IMGATE_ADMIN_ADDR=127.0.0.1:0 IMGATE_PB_ADDR=127.0.0.1:0 \
  IMGATE_MQTT_ADDR=127.0.0.1:0 IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_WS_ADDR=127.0.0.1:0 \
  IMGATE_RATE_LIMIT_MESSAGES=100000000 IMGATE_CONN_RATE_PER_IP=100000 IMGATE_MAX_CONNECTIONS_PER_IP=0 \
  IMGATE_LOG=${IMGATE_LOG:-warn} \
    "$imgate_bin" serve >"$node_dir/out" 2>"$node_dir/err" &
  node_pid=$!
  pids+=("$node_pid")
  for _ in $(seq 1 600); do grep -q '^ready' "$node_dir/out" 2>/dev/null && break; sleep 0.1; done
  if ! grep -q '^ready' "$node_dir/out"; then
    log "imgate node $id did not start:"; cat "$node_dir/err" >&2; exit 1
  fi
  node_mqtt=$(awk '$1=="listening" && $2=="mqtt" {print $3}' "$node_dir/out")
  node_admin=$(awk '$1=="listening" && $2=="admin" {print $3}' "$node_dir/out")
  log "imgate node $id pid $node_pid: mqtt $node_mqtt admin $node_admin"
}
node_up 1; a_pid=$node_pid; a_mqtt=$node_mqtt; a_admin=$node_admin
node_up 2; b_pid=$node_pid; b_mqtt=$node_mqtt

# ---------------------------------------------------------------- the peer
read -r rabbit_port <<<"$(free_ports 1)"
source "$root/bench/peers/rabbitmq_mqtt.sh"

# ---------------------------------------------------------------- workloads
im_rabbit() { # workload run receiver-port
  measure "$1" imgate "$2" -- "$bench_bin" im --label "$1" \
    --host 127.0.0.1 --port "${a_mqtt##*:}" --receiver-port "$3" \
    --admin-url "http://$a_admin" --secret "$secret" \
    --senders "$SENDERS" --receivers "$RECEIVERS" --size "$SIZE" --window "$WINDOW" \
    --messages "$MESSAGES" --wait-secs "$WAIT_SECS" --server-pid "$a_pid"
}
for run in $(seq 1 "$RUNS"); do
  [[ -n $rabbit ]] && measure mqtt-qos1-flood rabbitmq-mqtt "$run" -- "$bench_bin" mqtt \
    --label rabbitmq-mqtt --host "${rabbit%:*}" --port "${rabbit##*:}" \
    --publishers "$SENDERS" --subscribers "$RECEIVERS" --messages "$MESSAGES" --qos 1 \
    --size "$SIZE" --window "$WINDOW" --routing one --wait-secs "$WAIT_SECS" \
    ${rabbit_pid:+--server-pid "$rabbit_pid"}
  im_rabbit im-flood-1node "$run" "${a_mqtt##*:}"
  im_rabbit im-flood-2nodes "$run" "${b_mqtt##*:}"
done

# key=value lines of the store example -> one JSON report.
example() { # workload -- args...
  local workload=$1; shift 2
  log "$workload (store example)"
  local out
  out=$(IMGATE_TEST_AMQP=$AMQP timeout "${RUN_TIMEOUT:-900}" cargo run --release -q -p imgate-adapters \
    --example rabbit_throughput -- "$@" 2>"$work/stderr")
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    record "$workload" imgate 1 "" "exit $rc: $(tail -c 400 "$work/stderr")"
    return
  fi
  record "$workload" imgate 1 "$(python3 -c '
import json, re, sys
r = {}
for line in sys.stdin.read().splitlines():
    for k, v in re.findall(r"([a-z_0-9]+)=([0-9.]+)", line):
        r[k] = float(v) if "." in v else int(v)
    m = re.search(r"with 10 devices: queues=(\d+) channels=(\d+); with \d+: queues=(\d+) channels=(\d+)", line)
    if m:
        r.update(queues_10=int(m[1]), channels_10=int(m[2]), queues_n=int(m[3]), channels_n=int(m[4]))
    m = re.search(r"delivered in ([0-9.]+) s", line)
    if m:
        r["deliver_all_seconds"] = float(m[1])
print(json.dumps(r))' <<<"$out")" ""
}
[[ -z ${SKIP_DEVICES:-} ]] && example devices -- --devices "$DEVICES"
[[ -z ${SKIP_INDEX:-} ]] && example index-build -- --index-build "$INDEX_MESSAGES" 256

echo
echo "imgate $(git -C "$root" rev-parse --short HEAD 2>/dev/null) on RabbitMQ vs RabbitMQ's MQTT plugin, $(date -u +%FT%TZ), $(nproc) cores, broker and load generator on the same machine"
echo "floods: $SENDERS senders -> $RECEIVERS receivers, $MESSAGES msgs (each to one receiver), $SIZE B, QoS 1 window $WINDOW; runs: $RUNS"
echo
python3 "$root/bench/compare_table.py" --rows rabbit "$RESULTS"
echo "raw results: $RESULTS"
