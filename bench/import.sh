#!/usr/bin/env bash
# Import throughput: `imgate import` of a generated file (LINES, default
# 100,000: 10 groups first, then private and group messages) into a
# release gateway on the embedded store, started here on spare loopback
# ports. Prints the CLI's summary (with its msg/s) and the wall time; run
# twice (RUNS=2) to see the idempotent re-import. An absolute figure: no
# peer server is compared (no other IM server's import is measured here).
# Usage: bash bench/import.sh   (LINES=, RUNS=, PARALLEL=, BATCH= to vary)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
LINES=${LINES:-100000}
RUNS=${RUNS:-1}
PARALLEL=${PARALLEL:-4}
BATCH=${BATCH:-1000}
cargo build --release -q -p imgate --bin imgate
bin=$CARGO_TARGET_DIR/release/imgate
work=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
python3 bench/gen_import.py "$LINES" "$work/import.jsonl" bench 10 100
export IMGATE_DATA_DIR=$work/data
for l in PB MQTT XMPP HTTP ADMIN WS; do export "IMGATE_${l}_ADDR=127.0.0.1:0"; done
"$bin" serve >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q '^ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$work/out" || { cat "$work/err" >&2; exit 1; }
export IMGATE_ADMIN_URL=http://$(awk '$1=="listening" && $2=="admin" {print $3}' "$work/out")
echo "imgate import: $LINES lines ($(du -h "$work/import.jsonl" | cut -f1)), embedded store, batch $BATCH, $PARALLEL in flight, $(nproc) cores" >&2
for run in $(seq "$RUNS"); do
  start=$(date +%s.%N)
  "$bin" import --batch "$BATCH" --parallel "$PARALLEL" --id-map "$work/ids.jsonl" "$work/import.jsonl"
  end=$(date +%s.%N)
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'run {sys.argv[3]}: {int(sys.argv[4])/s:.0f} lines/s end to end ({s:.2f} s wall, process start included)')" \
    "$start" "$end" "$run" "$LINES" >&2
done
