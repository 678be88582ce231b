#!/usr/bin/env bash
# A private prosody for the XMPP comparison (issue 10 item 5): its own
# config, data dir, pid file and log in a temp dir, one spare loopback c2s
# port, no TLS required, SASL PLAIN over plain TCP, internal_plain
# accounts, XEP-0198 (mod_smacks) and XEP-0199 (mod_ping) on. It never
# touches a system-wide prosody: no /etc/prosody, no service, no port
# 5222 unless it happens to be the spare one.
#
# Usage:
#   eval "$(bash bench/peers/prosody.sh [--senders N] [--receivers M]
#           [--prefix bench] [--password secret] [--domain localhost])"
#
# It installs prosody from Debian if missing (apt-get), registers the
# accounts <prefix>s0..s<N-1> and <prefix>r0..r<M-1> (the names
# `imgate-bench xmpp --password ... --account-prefix <prefix>` logs in
# as), starts prosody in the foreground as a background process of this
# script (it keeps running after the script exits), waits (bounded) until
# the port accepts connections, and prints shell assignments on stdout,
# one per line, for the caller to eval:
#   prosody_port=<port>       the c2s port on 127.0.0.1
#   prosody_pid=<pid>         the prosody process
#   prosody_domain=<domain>   its VirtualHost
#   prosody_password=<pw>     every account's password
#   prosody_dir=<dir>         config, data, log (prosody.log)
#   prosody_stop='<command>'  stops it and removes the dir (eval it)
# Progress and errors go to stderr; the exit code is non-zero (and nothing
# is left running) when prosody could not be started.
set -euo pipefail

senders=10
receivers=10
prefix=bench
password=bench-secret
domain=localhost
while (($#)); do
  case $1 in
    --senders) senders=$2; shift 2 ;;
    --receivers) receivers=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --password) password=$2; shift 2 ;;
    --domain) domain=$2; shift 2 ;;
    *) echo "prosody.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { echo "[prosody.sh] $*" >&2; }

if ! command -v prosody >/dev/null || ! command -v prosodyctl >/dev/null; then
  log "installing prosody from Debian"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody >&2
fi

# A port the kernel says is free now (closed again before prosody binds it).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/bench-prosody.XXXXXX)
mkdir -p "$dir/data" "$dir/certs"   # certs: empty, no TLS (quiets the cert scan)
cfg=$dir/prosody.cfg.lua
cat >"$cfg" <<EOF
-- Written by bench/peers/prosody.sh for one benchmark run.
run_as_root = true          -- a throwaway instance in a temp dir
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { info = "$dir/prosody.log" }
interfaces = { "127.0.0.1" }
c2s_ports = { $port }
c2s_interfaces = { "127.0.0.1" }
-- No s2s, HTTP or components: only the c2s listener.
s2s_ports = { }
http_ports = { }
https_ports = { }
c2s_direct_tls_ports = { }
modules_enabled = { "roster", "saslauth", "disco", "ping", "smacks", "carbons", "posix" }
modules_disabled = { "s2s", "offline" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
-- A load generator is not an abuser.
limits = { }
VirtualHost "$domain"
EOF

log "registering $senders sender and $receivers receiver accounts in $dir"
for kind in s r; do
  n=$senders
  [[ $kind == r ]] && n=$receivers
  for ((i = 0; i < n; i++)); do
    prosodyctl --config "$cfg" register "$prefix$kind$i" "$domain" "$password" >&2 \
      || { log "registering $prefix$kind$i failed"; rm -rf "$dir"; exit 1; }
  done
done

# -F: stay in the foreground (no daemon); & makes it our background child.
prosody --config "$cfg" -F >>"$dir/stdout.log" 2>&1 </dev/null &
pid=$!
stop="kill $pid 2>/dev/null; for _ in \$(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done; kill -9 $pid 2>/dev/null; rm -rf '$dir'"

# Bounded wait for the port (10 s), failing early if prosody exited.
for _ in $(seq 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    log "prosody exited; its log:"; cat "$dir/stdout.log" "$dir/prosody.log" >&2 2>/dev/null || true
    rm -rf "$dir"; exit 1
  fi
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2).close()" 2>/dev/null; then
    log "prosody $pid listening on 127.0.0.1:$port (domain $domain)"
    printf 'prosody_port=%s\nprosody_pid=%s\nprosody_domain=%q\nprosody_password=%q\nprosody_dir=%q\nprosody_stop=%q\n' \
      "$port" "$pid" "$domain" "$password" "$dir" "$stop"
    exit 0
  fi
  sleep 0.1
done
log "prosody did not listen on 127.0.0.1:$port within 10 s; its log:"
cat "$dir/stdout.log" "$dir/prosody.log" >&2 2>/dev/null || true
eval "$stop"
exit 1
