#!/usr/bin/env bash
# Installs what the federation tests need when it is missing: Debian's
# `prosody` (the XMPP server the tests run their own of: own config folder,
# free ports, in the foreground). The package's own service is stopped and
# disabled where systemd runs it: the tests never use it. Idempotent and
# non-interactive; needs root (or sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ -x /usr/bin/prosody ]; then
  echo "prosody: already installed"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-prosody.sh: run as root (or install sudo)" >&2; exit 1; }
  SUDO=(sudo -n)
fi

if ! apt-cache policy prosody 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  "${SUDO[@]}" apt-get update
fi
"${SUDO[@]}" apt-get install -y prosody
if command -v systemctl >/dev/null && systemctl is-active --quiet prosody 2>/dev/null; then
  "${SUDO[@]}" systemctl disable --now prosody || true
fi

[ -x /usr/bin/prosody ] || { echo "install-prosody.sh: prosody is still missing after apt-get install" >&2; exit 1; }
echo "prosody: installed"
