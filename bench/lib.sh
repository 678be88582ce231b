# Shared by bench/compare.sh and bench/compare_rabbit.sh (sourced, not
# run): results file, work dir, logging, the release build, cleanup at
# exit (started pids, prosody, the RabbitMQ MQTT plugin), spare ports, and
# measure/record/unavailable, which write one JSON line per run.
# Expects: $root (the repository), $RESULTS_NAME (file name stem).

mkdir -p bench/results
RESULTS=${RESULTS:-$root/bench/results/${RESULTS_NAME:-compare}-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
: >"$RESULTS"
work=$(mktemp -d)
log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- build
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
log "building imgate and imgate-bench (release)"
cargo build --release -q -p imgate -p imgate-bench || { log "build failed"; exit 1; }
imgate_bin=$CARGO_TARGET_DIR/release/imgate
bench_bin=$CARGO_TARGET_DIR/release/imgate-bench

# This process opens thousands of idle connections: the soft limit up to
# the hard one (peers started from here inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- cleanup
pids=()
rabbit_enabled_here=
plugins_file_existed=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  [[ -n ${prosody_stop:-} ]] && eval "$prosody_stop" >/dev/null 2>&1
  if [[ -n $rabbit_enabled_here ]]; then
    log "disabling rabbitmq_mqtt again (it was off before this run)"
    rabbitmq-plugins disable rabbitmq_mqtt >/dev/null 2>&1
    [[ -z $plugins_file_existed ]] && rm -f /etc/rabbitmq/enabled_plugins
    rabbitmqctl status >/dev/null 2>&1 && log "RabbitMQ status: ok" || log "WARNING: rabbitmqctl status failed"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Spare loopback ports, asked of the kernel.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# One result line: {"workload","server","run","report"} or an error.
record() { # workload server run report-or-empty error-text
  local workload=$1 server=$2 run=$3 report=$4 err=$5
  if [[ -n $report ]] && python3 -c 'import json,sys; json.loads(sys.argv[1])' "$report" 2>/dev/null; then
    printf '{"workload":"%s","server":"%s","run":%s,"report":%s}\n' "$workload" "$server" "$run" "$report" >>"$RESULTS"
  else
    python3 -c 'import json,sys; print(json.dumps({"workload":sys.argv[1],"server":sys.argv[2],"run":int(sys.argv[3]),"error":sys.argv[4][-400:]}))' \
      "$workload" "$server" "$run" "${err:-no report}" >>"$RESULTS"
  fi
}

# Run a load tool (at most RUN_TIMEOUT seconds, default 600); record its
# report (last JSON line) or its error.
measure() { # workload server run -- command...
  local workload=$1 server=$2 run=$3; shift 4
  log "$workload / $server (run $run)"
  local out err
  out=$(timeout "${RUN_TIMEOUT:-600}" "$@" 2>"$work/stderr") ; local rc=$?
  [[ $rc -eq 124 ]] && echo "timed out after ${RUN_TIMEOUT:-600} s" >>"$work/stderr"
  err=$(tail -c 400 "$work/stderr")
  [[ $rc -ne 0 ]] && { record "$workload" "$server" "$run" "" "exit $rc: $err"; return; }
  record "$workload" "$server" "$run" "$(tail -n 1 <<<"$out")" "$err"
}

# A server that did not start: one error line per workload it was meant for.
unavailable() { # server reason
  python3 -c 'import json,sys; print(json.dumps({"server":sys.argv[1],"unavailable":sys.argv[2]}))' "$1" "$2" >>"$RESULTS"
  log "$1 not available: $2"
}

