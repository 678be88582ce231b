#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this script):
# formatting, clippy with warnings as errors, then every test — unit tests,
# crate integration tests and the black-box conformance suite that starts
# the real `imgate` binary on ephemeral ports.
#
# Tests that need RabbitMQ read IMGATE_TEST_AMQP
# (e.g. amqp://guest:guest@127.0.0.1:5672/%2f) and say they were skipped
# without it.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== fuzz targets build (one per decoder; running them is by hand, see README)"
cargo build --manifest-path codecs/fuzz/Cargo.toml --locked

echo "== build the imgate binary for the conformance suite"
cargo build --workspace --bins --locked

echo "== python clients for the conformance suite (paho-mqtt, slixmpp)"
IMGATE_TEST_PYTHON=$(bash scripts/python-venv.sh | tail -n 1)
export IMGATE_TEST_PYTHON

echo "== node clients for the conformance suite (MQTT.js in headless chromium, xmpp.js)"
IMGATE_TEST_CHROMIUM=$(bash scripts/node-deps.sh | tail -n 1)
export IMGATE_TEST_CHROMIUM

echo "== cargo test"
cargo test --workspace --locked

if [[ -n "${IMGATE_TEST_AMQP:-}" ]]; then
  echo "== cargo test -p imgate-conformance again, on the RabbitMQ store (IMGATE_CONFORMANCE_STORE=\$IMGATE_TEST_AMQP)"
  IMGATE_CONFORMANCE_STORE="$IMGATE_TEST_AMQP" cargo test -p imgate-conformance --locked
fi
