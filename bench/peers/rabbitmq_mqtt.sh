# RabbitMQ's MQTT plugin on the machine's running RabbitMQ, as a peer
# (sourced by bench/compare.sh and bench/compare_rabbit.sh after
# bench/lib.sh): uses it if enabled, otherwise enables it with a listener
# on $rabbit_port for this run (disabled again at exit by lib.sh's
# cleanup). Sets $rabbit (host:port, empty if unavailable) and
# $rabbit_pid (the beam process).

# ---------------------------------------------------------------- rabbitmq
# The plugin's listener must be set before it starts (1883 is taken):
# load the application, set tcp_listeners, then enable it.
rabbit= ; rabbit_pid=
if [[ -n ${SKIP_RABBIT:-} ]]; then
  unavailable rabbitmq-mqtt "SKIP_RABBIT set"
elif ! command -v rabbitmqctl >/dev/null || ! rabbitmqctl status >/dev/null 2>&1; then
  unavailable rabbitmq-mqtt "no running RabbitMQ (rabbitmqctl status failed)"
else
  if rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_mqtt; then
    existing=$(rabbitmqctl eval 'application:get_env(rabbitmq_mqtt, tcp_listeners).' 2>/dev/null)
    port=$(grep -o '[0-9]\{2,5\}' <<<"$existing" | tail -n 1)
    [[ -n $port ]] && rabbit=127.0.0.1:$port
    log "rabbitmq_mqtt was already enabled (listeners $existing): using it, leaving it enabled"
  else
    [[ -e /etc/rabbitmq/enabled_plugins ]] && plugins_file_existed=1
    rabbitmqctl eval 'application:load(rabbitmq_mqtt).' >/dev/null 2>&1
    rabbitmqctl eval "application:set_env(rabbitmq_mqtt, tcp_listeners, [{\"127.0.0.1\", $rabbit_port}])." >/dev/null 2>&1
    if rabbitmq-plugins enable rabbitmq_mqtt >"$work/rabbit-enable.log" 2>&1; then
      rabbit_enabled_here=1
      rabbit=127.0.0.1:$rabbit_port
    else
      rabbit_enabled_here=1 # whatever half happened is undone at exit
      unavailable rabbitmq-mqtt "plugin did not start: $(tail -c 200 "$work/rabbit-enable.log")"
    fi
  fi
  if [[ -n $rabbit ]]; then
    for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/${rabbit/://}") 2>/dev/null && break; sleep 0.1; done
    rabbit_pid=$(rabbitmqctl eval 'os:getpid().' 2>/dev/null | tr -dc 0-9)
    log "rabbitmq-mqtt: $rabbit (beam pid $rabbit_pid)"
  fi
fi

