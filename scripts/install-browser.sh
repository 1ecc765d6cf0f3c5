#!/usr/bin/env bash
# Installs what the browser tests need (Debian's Chromium) when it is missing.
# Idempotent and non-interactive; `apt-get update` only when the package
# lists do not know chromium yet. Needs root (or sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ -x /usr/bin/chromium ]; then
  echo "chromium: already installed ($(dpkg-query -W -f='${Version}' chromium 2>/dev/null || echo unknown version))"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-browser.sh: run as root (or install sudo)" >&2; exit 1; }
  SUDO=(sudo -n)
fi

if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  "${SUDO[@]}" apt-get update
fi
"${SUDO[@]}" apt-get install -y chromium

if [ ! -x /usr/bin/chromium ]; then
  echo "install-browser.sh: /usr/bin/chromium is still missing after apt-get install" >&2
  exit 1
fi
echo "chromium: installed ($(dpkg-query -W -f='${Version}' chromium))"
