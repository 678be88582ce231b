#!/usr/bin/env bash
# imgate against named peers, same machine, same run, one table
# (issue 10 item 5; how to read it: bench/README.md).
#
# Starts everything itself on spare loopback ports: imgate (release build
# of this tree, embedded store, temp data dir), two Mosquitto instances
# with their own config files (default, and `max_queued_messages 0` for a
# lossless QoS 1 flood), RabbitMQ's MQTT plugin on the machine's running
# RabbitMQ (listener on a spare port; disabled again at exit, see the
# README), and prosody through bench/peers/prosody.sh. Then runs the same
# workloads against each with imgate-bench and prints one table. Raw JSON
# lines go to $RESULTS (default bench/results/compare-<time>.jsonl).
#
# Usage: bash bench/compare.sh
# Sizes (env): RUNS=3 (median of RUNS per row), SENDERS=100, RECEIVERS=10,
# PER_SENDER=1000 (messages per sender per flood), SIZE=256, WINDOW=32,
# PACED_MESSAGES=20000, MQTT_RATE=10000, IM_RATE=10000, XMPP_SENDERS=10,
# XMPP_RECEIVERS=10, XMPP_PER_SENDER=1000, XMPP_RATE=1000,
# XMPP_PACED_MESSAGES=5000, CROSS_MESSAGES=20000 (XMPP/PB -> MQTT floods),
# IDLE=15000, IDLE_XMPP=5000, RSS_RUNS=3 (IM floods whose RSS is reported, at least RUNS),
# WAIT_SECS=15, RUN_TIMEOUT=600 (per tool run); SKIP_RABBIT=1,
# SKIP_PROSODY=1, SKIP_IDLE=1 leave parts out.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

RUNS=${RUNS:-3}
SENDERS=${SENDERS:-100}
RECEIVERS=${RECEIVERS:-10}
PER_SENDER=${PER_SENDER:-1000}
SIZE=${SIZE:-256}
WINDOW=${WINDOW:-32}
PACED_MESSAGES=${PACED_MESSAGES:-20000}
MQTT_RATE=${MQTT_RATE:-10000}
IM_RATE=${IM_RATE:-10000}
XMPP_SENDERS=${XMPP_SENDERS:-10}
XMPP_RECEIVERS=${XMPP_RECEIVERS:-10}
XMPP_PER_SENDER=${XMPP_PER_SENDER:-1000}
XMPP_RATE=${XMPP_RATE:-1000}
XMPP_PACED_MESSAGES=${XMPP_PACED_MESSAGES:-5000}
CROSS_MESSAGES=${CROSS_MESSAGES:-20000}
IDLE=${IDLE:-15000}
RSS_RUNS=${RSS_RUNS:-3}
IDLE_XMPP=${IDLE_XMPP:-5000}
WAIT_SECS=${WAIT_SECS:-15}
MESSAGES=$((SENDERS * PER_SENDER))
XMPP_MESSAGES=$((XMPP_SENDERS * XMPP_PER_SENDER))
(( RSS_RUNS < RUNS )) && RSS_RUNS=$RUNS

source "$root/bench/lib.sh"

# ---------------------------------------------------------------- imgate
read -r im_http im_admin im_pb im_mqtt im_xmpp <<<"0 0 0 0 0"
imgate_dir=$work/imgate
mkdir -p "$imgate_dir/data"
IMGATE_DATA_DIR=$imgate_dir/data IMGATE_STORE=embedded \
IMGATE_HTTP_ADDR=127.0.0.1:0 IMGATE_ADMIN_ADDR=127.0.0.1:0 IMGATE_PB_ADDR=127.0.0.1:0 \
IMGATE_MQTT_ADDR=127.0.0.1:0 IMGATE_XMPP_ADDR=127.0.0.1:0 IMGATE_WS_ADDR=127.0.0.1:0 \
IMGATE_RATE_LIMIT_MESSAGES=100000000 IMGATE_CONN_RATE_PER_IP=100000 IMGATE_MAX_CONNECTIONS_PER_IP=0 \
IMGATE_MAX_CONNECTIONS=${IMGATE_MAX_CONNECTIONS:-20000} \
IMGATE_MQTT_MAX_QUEUED=${IMGATE_MQTT_MAX_QUEUED:-100000} IMGATE_LOG=${IMGATE_LOG:-warn} \
  "$imgate_bin" serve >"$imgate_dir/out" 2>"$imgate_dir/err" &
imgate_pid=$!
pids+=("$imgate_pid")
for _ in $(seq 1 300); do grep -q '^ready' "$imgate_dir/out" 2>/dev/null && break; sleep 0.1; done
if ! grep -q '^ready' "$imgate_dir/out"; then
  log "imgate did not start:"; cat "$imgate_dir/err" >&2; exit 1
fi
listen() { awk -v n="$1" '$1=="listening" && $2==n {print $3}' "$imgate_dir/out"; }
im_mqtt=$(listen mqtt); im_admin=$(listen admin); im_xmpp=$(listen xmpp); im_pb=$(listen pb)
imgate_admin=(--admin-url "http://$im_admin" --data-dir "$imgate_dir/data")
log "imgate pid $imgate_pid: mqtt $im_mqtt xmpp $im_xmpp pb $im_pb admin $im_admin"

# ---------------------------------------------------------------- mosquitto
mosquitto_up() { # name port extra-config-line -> pid in $mosq_pid
  local name=$1 port=$2 extra=$3 conf=$work/$1.conf
  cat >"$conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest file $work/$name.log
$extra
EOF
  mosquitto -c "$conf" >/dev/null 2>&1 &
  mosq_pid=$!
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$mosq_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
if ! command -v mosquitto >/dev/null; then
  log "installing mosquitto (Debian package)"
  { apt-get update && apt-get install -y mosquitto; } >/dev/null 2>&1
fi
read -r mosq_port mosq_ll_port rabbit_port <<<"$(free_ports 3)"
mosq= ; mosq_ll=
if command -v mosquitto >/dev/null && mosquitto_up mosquitto "$mosq_port" ""; then
  mosq=127.0.0.1:$mosq_port; mosq_pid_default=$mosq_pid; pids+=("$mosq_pid")
else
  unavailable mosquitto "did not start (see its log)"
fi
if command -v mosquitto >/dev/null && mosquitto_up mosquitto-lossless "$mosq_ll_port" "max_queued_messages 0"; then
  mosq_ll=127.0.0.1:$mosq_ll_port; mosq_pid_lossless=$mosq_pid; pids+=("$mosq_pid")
else
  unavailable mosquitto-lossless "did not start"
fi
log "mosquitto: ${mosq:-none} (default), ${mosq_ll:-none} (max_queued_messages 0)"

source "$root/bench/peers/rabbitmq_mqtt.sh"

# ---------------------------------------------------------------- workloads
mqtt_load() { # workload server addr pid run qos messages [extra...]
  local workload=$1 server=$2 addr=$3 pid=$4 run=$5 qos=$6 messages=$7; shift 7
  measure "$workload" "$server" "$run" -- "$bench_bin" mqtt --label "$server" \
    --host "${addr%:*}" --port "${addr##*:}" --publishers "$SENDERS" --subscribers "$RECEIVERS" \
    --messages "$messages" --qos "$qos" --size "$SIZE" --window "$WINDOW" --routing one \
    --wait-secs "$WAIT_SECS" ${pid:+--server-pid "$pid"} "$@"
}
im_load() { # workload run [extra...]
  local workload=$1 run=$2; shift 2
  measure "$workload" imgate "$run" -- "$bench_bin" im --label imgate \
    --host 127.0.0.1 --port "${im_mqtt##*:}" "${imgate_admin[@]}" \
    --senders "$SENDERS" --receivers "$RECEIVERS" --size "$SIZE" --window "$WINDOW" \
    --wait-secs "$WAIT_SECS" --server-pid "$imgate_pid" "$@"
}
imgate_mqtt() { mqtt_load "$1" imgate "$im_mqtt" "$imgate_pid" "${@:2}" "${imgate_admin[@]}"; }

for run in $(seq 1 "$RUNS"); do
  # Plain MQTT (generic topics), each message to one subscriber.
  [[ -n $mosq ]] && mqtt_load mqtt-qos0-flood mosquitto "$mosq" "$mosq_pid_default" "$run" 0 "$MESSAGES"
  [[ -n $rabbit ]] && mqtt_load mqtt-qos0-flood rabbitmq-mqtt "$rabbit" "$rabbit_pid" "$run" 0 "$MESSAGES"
  imgate_mqtt mqtt-qos0-flood "$run" 0 "$MESSAGES"
  [[ -n $mosq_ll ]] && mqtt_load mqtt-qos1-flood mosquitto-lossless "$mosq_ll" "$mosq_pid_lossless" "$run" 1 "$MESSAGES"
  [[ -n $rabbit ]] && mqtt_load mqtt-qos1-flood rabbitmq-mqtt "$rabbit" "$rabbit_pid" "$run" 1 "$MESSAGES"
  imgate_mqtt mqtt-qos1-flood "$run" 1 "$MESSAGES"
  paced=(--rate "$MQTT_RATE")
  [[ -n $mosq_ll ]] && mqtt_load mqtt-qos1-paced mosquitto-lossless "$mosq_ll" "$mosq_pid_lossless" "$run" 1 "$PACED_MESSAGES" "${paced[@]}"
  [[ -n $rabbit ]] && mqtt_load mqtt-qos1-paced rabbitmq-mqtt "$rabbit" "$rabbit_pid" "$run" 1 "$PACED_MESSAGES" "${paced[@]}"
  imgate_mqtt mqtt-qos1-paced "$run" 1 "$PACED_MESSAGES" "${paced[@]}"
  # The durable IM path (imgate only; the peers' figures are plain QoS 1).
  im_load im-flood "$run" --messages "$MESSAGES"
  im_load im-paced "$run" --messages "$PACED_MESSAGES" --rate "$IM_RATE"
done
# More IM floods, for imgate's RSS run after run.
for run in $(seq $((RUNS + 1)) "$RSS_RUNS"); do
  im_load im-flood "$run" --messages "$MESSAGES"
done

# XMPP (and PB) senders: bench/peers/prosody.sh and `imgate-bench xmpp|pb`.
source "$root/bench/compare_xmpp.sh"

# Idle connections last (they leave the servers' allocators warm).
if [[ -z ${SKIP_IDLE:-} ]]; then
  [[ -n $mosq ]] && measure idle-mqtt mosquitto 1 -- "$bench_bin" idle --label mosquitto \
    --host 127.0.0.1 --port "$mosq_port" --connections "$IDLE" --server-pid "$mosq_pid_default"
  measure idle-mqtt imgate 1 -- "$bench_bin" idle --label imgate --host 127.0.0.1 \
    --port "${im_mqtt##*:}" --connections "$IDLE" --server-pid "$imgate_pid" "${imgate_admin[@]}"
  measure idle-pb imgate 1 -- "$bench_bin" idle --label imgate --protocol pb --host 127.0.0.1 \
    --port "${im_pb##*:}" --connections "$IDLE" --server-pid "$imgate_pid" "${imgate_admin[@]}"
  measure idle-xmpp imgate 1 -- "$bench_bin" idle --label imgate --protocol xmpp --host 127.0.0.1 \
    --port "${im_xmpp##*:}" --domain "${IMGATE_XMPP_DOMAIN:-localhost}" --connections "$IDLE_XMPP" \
    --server-pid "$imgate_pid" "${imgate_admin[@]}"
fi

echo
echo "imgate $(git -C "$root" rev-parse --short HEAD 2>/dev/null) vs peers, $(date -u +%FT%TZ), $(nproc) cores, load generator on the same machine"
echo "floods: $SENDERS senders x $PER_SENDER -> $RECEIVERS receivers ($MESSAGES msgs, each to one receiver), $SIZE B, QoS 1 window $WINDOW;" \
  "paced: $PACED_MESSAGES msgs at $MQTT_RATE/s (plain MQTT), $IM_RATE/s (IM);" \
  "XMPP: $XMPP_SENDERS x $XMPP_PER_SENDER -> $XMPP_RECEIVERS, paced $XMPP_PACED_MESSAGES at $XMPP_RATE/s;" \
  "XMPP/PB -> MQTT: $SENDERS senders, $CROSS_MESSAGES msgs; idle: $IDLE connections; runs per row: $RUNS"
echo
python3 "$root/bench/compare_table.py" "$RESULTS"
echo "raw results: $RESULTS"
