# Sourced by bench/compare.sh: the XMPP and PB sender workloads.
# XMPP -> XMPP against prosody (started by bench/peers/prosody.sh), and on
# imgate alone XMPP -> MQTT and PB -> MQTT (their ratio is against the IM
# path's MQTT -> MQTT flood). Both loaders (`imgate-bench xmpp`,
# `imgate-bench pb`) and prosody.sh come with this tree; a missing piece
# gives "not run: <reason>" rows, never numbers.

has_subcommand() { "$bench_bin" "$1" --help >/dev/null 2>&1; }

if ! has_subcommand xmpp; then
  for w in xmpp-flood xmpp-paced xmpp-mqtt-flood; do
    record "$w" imgate 1 "" "imgate-bench has no xmpp subcommand in this tree"
  done
  unavailable prosody "imgate-bench has no xmpp subcommand in this tree"
fi
if ! has_subcommand pb; then
  record pb-mqtt-flood imgate 1 "" "imgate-bench has no pb subcommand in this tree"
fi
