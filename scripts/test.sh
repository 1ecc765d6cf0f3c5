#!/usr/bin/env bash
# The project's test command (README, .ci/run): every Rust test, then the
# Python backend package's tests against a real gateway and Redis
# (scripts/test-python.sh installs what they need), the systemd unit checked
# by systemd-analyze where it is installed, then the browser
# client's unit tests and its end-to-end tests in headless Chromium against
# a real gateway (scripts/test-js.sh installs what they need).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Python packages of the examples (the Redis inbox test runs one)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r examples/python/requirements.txt

echo "== PostgreSQL server binaries (the Postgres source's tests run their own cluster)"
scripts/install-postgres.sh

echo "== Prosody (the federation tests run their own XMPP server)"
scripts/install-prosody.sh

echo "== Rust: unit, property and integration tests"
cargo test --workspace --locked

echo "== systemd unit (deploy/chouquette.service)"
scripts/check-systemd-unit.sh

echo "== Python backend package (clients/python) and the Django example"
cargo build -p chouquette --locked
scripts/test-python.sh

echo "== JavaScript client and browser tests"
scripts/test-js.sh
