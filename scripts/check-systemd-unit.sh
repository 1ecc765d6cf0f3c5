#!/usr/bin/env bash
# Checks deploy/chouquette.service with `systemd-analyze verify` (docs/deployment.md,
# "systemd"). Any warning fails, not only a non-zero exit: systemd-analyze exits 0
# on an unknown key or a bad value and only prints it.
#
# The unit names /usr/bin/chouquette, which verify requires to be executable, so
# the copy checked here points at the binary built in target/ (any executable
# would do: verify does not run it).
#
# Without systemd-analyze (containers, macOS) the unit is NOT verified: this says
# so loudly and exits 0 so that the rest of the suite goes on.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=deploy/chouquette.service
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "!! SKIPPED: systemd-analyze not installed: unit not verified ($unit)" >&2
    exit 0
fi

binary="$PWD/target/debug/chouquette"
if [ ! -x "$binary" ]; then
    cargo build -p chouquette --locked
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

verify() { # unit file -> prints every complaint, exit status of verify
    systemd-analyze verify --man=no "$1" 2>&1
}

sed "s|/usr/bin/chouquette|$binary|" "$unit" >"$work/chouquette.service"
if ! out=$(verify "$work/chouquette.service") || [ -n "$out" ]; then
    echo "FAILED: systemd-analyze verify $unit:" >&2
    echo "$out" >&2
    exit 1
fi

# The check itself must be able to fail: a copy with a bad line is refused.
sed 's|^Type=notify$|Type=notfy|' "$work/chouquette.service" >"$work/broken.service"
if out=$(verify "$work/broken.service") && [ -z "$out" ]; then
    echo "FAILED: systemd-analyze verify did not notice a bad Type= ($unit check is vacuous)" >&2
    exit 1
fi

echo "ok: systemd-analyze verify $unit ($(systemd-analyze --version | head -1))"
