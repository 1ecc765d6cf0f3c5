#!/usr/bin/env bash
# Installs what the Postgres source's tests need when it is missing: the
# PostgreSQL server binaries (Debian's `postgresql`: initdb, pg_ctl under
# /usr/lib/postgresql/<version>/bin, and the `postgres` user the tests run
# their own cluster as when they run as root). The tests never use the
# machine's running cluster. Idempotent and non-interactive; needs root (or sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "postgresql: already installed ($(ls /usr/lib/postgresql | tr '\n' ' '))"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-postgres.sh: run as root (or install sudo)" >&2; exit 1; }
  SUDO=(sudo -n)
fi

if ! apt-cache policy postgresql 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  "${SUDO[@]}" apt-get update
fi
"${SUDO[@]}" apt-get install -y postgresql

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "install-postgres.sh: initdb is still missing after apt-get install" >&2
  exit 1
fi
echo "postgresql: installed ($(ls /usr/lib/postgresql | tr '\n' ' '))"
