# Sourced by bench/compare.sh: the XMPP and PB sender workloads.
# XMPP -> XMPP against prosody (started by bench/peers/prosody.sh), and on
# imgate alone XMPP -> MQTT and PB -> MQTT (their ratio is against the IM
# path's MQTT -> MQTT flood). Both loaders (`imgate-bench xmpp`,
# `imgate-bench pb`) and prosody.sh come with this tree; a missing piece
# gives "not run: <reason>" rows, never numbers.
#
# Uses from compare.sh: bench_bin, imgate_pid, im_xmpp, im_mqtt, im_pb,
# imgate_admin, work, RUNS, SIZE, WINDOW, WAIT_SECS, SENDERS, RECEIVERS,
# XMPP_*, CROSS_MESSAGES, measure, record, unavailable, free_ports, pids.

has_subcommand() { "$bench_bin" "$1" --help >/dev/null 2>&1; }
imgate_xmpp_domain=${IMGATE_XMPP_DOMAIN:-localhost}

xmpp_load() { # workload server run host:port domain pid [extra...]
  local workload=$1 server=$2 run=$3 addr=$4 domain=$5 pid=$6; shift 6
  measure "$workload" "$server" "$run" -- "$bench_bin" xmpp --label "$server" \
    --host "${addr%:*}" --port "${addr##*:}" --domain "$domain" \
    --size "$SIZE" --window "$WINDOW" --wait-secs "$WAIT_SECS" \
    ${pid:+--server-pid "$pid"} "$@"
}

# ---------------------------------------------------------------- prosody
prosody_addr= ; prosody_domain= ; prosody_password= ; prosody_pid= ; prosody_prefix=
if [[ -n ${SKIP_PROSODY:-} ]]; then
  unavailable prosody "SKIP_PROSODY set"
elif ! has_subcommand xmpp; then
  unavailable prosody "imgate-bench has no xmpp subcommand in this tree"
elif [[ ! -f $root/bench/peers/prosody.sh ]]; then
  unavailable prosody "bench/peers/prosody.sh not in this tree"
elif assignments=$(bash "$root/bench/peers/prosody.sh" --senders "$XMPP_SENDERS" \
    --receivers "$XMPP_RECEIVERS" --prefix bench --password bench-secret 2>"$work/prosody.err"); then
  # prosody_port, prosody_pid, prosody_domain, prosody_password, prosody_stop
  # (compare.sh's cleanup evals prosody_stop).
  eval "$assignments"
  prosody_addr=127.0.0.1:$prosody_port
  prosody_prefix=bench
  log "prosody pid $prosody_pid: $prosody_addr (domain $prosody_domain)"
else
  unavailable prosody "bench/peers/prosody.sh failed: $(tail -c 200 "$work/prosody.err")"
fi

# ---------------------------------------------------------------- runs
if has_subcommand xmpp; then
  for run in $(seq 1 "$RUNS"); do
    flood=(--senders "$XMPP_SENDERS" --receivers "$XMPP_RECEIVERS" --messages "$XMPP_MESSAGES")
    paced=(--senders "$XMPP_SENDERS" --receivers "$XMPP_RECEIVERS" --messages "$XMPP_PACED_MESSAGES" --rate "$XMPP_RATE")
    if [[ -n $prosody_addr ]]; then
      plain=(--password "$prosody_password" --account-prefix "$prosody_prefix")
      xmpp_load xmpp-flood prosody "$run" "$prosody_addr" "$prosody_domain" "$prosody_pid" "${plain[@]}" "${flood[@]}"
    fi
    xmpp_load xmpp-flood imgate "$run" "$im_xmpp" "$imgate_xmpp_domain" "$imgate_pid" "${imgate_admin[@]}" "${flood[@]}"
    if [[ -n $prosody_addr ]]; then
      xmpp_load xmpp-paced prosody "$run" "$prosody_addr" "$prosody_domain" "$prosody_pid" "${plain[@]}" "${paced[@]}"
    fi
    xmpp_load xmpp-paced imgate "$run" "$im_xmpp" "$imgate_xmpp_domain" "$imgate_pid" "${imgate_admin[@]}" "${paced[@]}"
    # Same shape as the IM flood (SENDERS -> RECEIVERS), fewer messages.
    xmpp_load xmpp-mqtt-flood imgate "$run" "$im_xmpp" "$imgate_xmpp_domain" "$imgate_pid" "${imgate_admin[@]}" \
      --receiver-protocol mqtt --mqtt-port "${im_mqtt##*:}" \
      --senders "$SENDERS" --receivers "$RECEIVERS" --messages "$CROSS_MESSAGES"
  done
else
  for w in xmpp-flood xmpp-paced xmpp-mqtt-flood; do
    record "$w" imgate 1 "" "imgate-bench has no xmpp subcommand in this tree"
  done
fi

if has_subcommand pb; then
  for run in $(seq 1 "$RUNS"); do
    measure pb-mqtt-flood imgate "$run" -- "$bench_bin" pb --label imgate \
      --host 127.0.0.1 --port "${im_pb##*:}" --mqtt-port "${im_mqtt##*:}" "${imgate_admin[@]}" \
      --senders "$SENDERS" --receivers "$RECEIVERS" --messages "$CROSS_MESSAGES" \
      --size "$SIZE" --window "$WINDOW" --wait-secs "$WAIT_SECS" --server-pid "$imgate_pid"
  done
else
  record pb-mqtt-flood imgate 1 "" "imgate-bench has no pb subcommand in this tree"
fi
