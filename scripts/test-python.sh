#!/usr/bin/env bash
# The Python backend package (clients/python) and the Django example:
# a virtual environment with the package installed editable and its test
# extras (pytest, mypy, ruff, websockets, redis) plus Django, then ruff and
# mypy in strict mode, then pytest against a real gateway process and the real Redis.
#
# Needs the gateway binary (target/debug/chouquette, or $CHOUQUETTE_BIN;
# scripts/test.sh runs this after the Rust build) and Redis at
# 127.0.0.1:6379 (or $CHOUQUETTE_TEST_REDIS). Either missing is a failure,
# never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
    || { echo "test-python.sh: Python 3.9 or newer is required" >&2; exit 1; }

export CHOUQUETTE_BIN=${CHOUQUETTE_BIN:-$ROOT/target/debug/chouquette}
if [ ! -x "$CHOUQUETTE_BIN" ]; then
    echo "test-python.sh: no gateway binary at $CHOUQUETTE_BIN (run cargo build -p chouquette)" >&2
    exit 1
fi

export CHOUQUETTE_TEST_REDIS=${CHOUQUETTE_TEST_REDIS:-redis://127.0.0.1:6379}
"$PYTHON" - "$CHOUQUETTE_TEST_REDIS" <<'PY' || { echo "test-python.sh: Redis is required" >&2; exit 1; }
import socket, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=5) as s:
    s.sendall(b"PING\r\n")
    answer = s.recv(64)
    if not answer.startswith(b"+PONG"):
        sys.exit(f"Redis at {sys.argv[1]} answered {answer!r}")
PY

VENV="$ROOT/clients/python/.venv"
echo "== Python virtual environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$ROOT/clients/python[test]" -r "$ROOT/examples/django/requirements.txt"

cd "$ROOT/clients/python"
echo "== ruff (package, tests, Django example)"
"$VENV/bin/python" -m ruff check src tests "$ROOT/examples/django"

echo "== mypy --strict (package and tests)"
"$VENV/bin/python" -m mypy --strict src tests

echo "== pytest (real gateway, real Redis)"
"$VENV/bin/python" -m pytest tests
