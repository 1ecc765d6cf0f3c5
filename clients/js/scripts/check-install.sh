#!/usr/bin/env bash
# Does what the README's "Install" section says, in a throwaway folder, with
# no registry: `npm pack` the client, `npm install` the tarball offline (the
# package has no runtime dependency), then import it from Node and check
# its exports and its type declarations. Run from anywhere; needs node and
# npm, and a built dist/ (committed).
set -euo pipefail
JS_ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chouquette-install-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

VERSION=$(node -p "require('$JS_ROOT/package.json').version")
TARBALL="chouquette-client-$VERSION.tgz"

# 1. `npm pack` in clients/js (here into $WORK, so the repository stays clean).
(cd "$JS_ROOT" && npm pack --pack-destination "$WORK" --silent >/dev/null)
[ -f "$WORK/$TARBALL" ] || { echo "check-install: npm pack did not produce $TARBALL" >&2; exit 1; }

# 2. `npm install ./chouquette-client-<version>.tgz` in an app, offline, with
#    an empty cache of its own: nothing may come from a registry.
APP="$WORK/app"
mkdir -p "$APP"
cp "$WORK/$TARBALL" "$APP/"
printf '{ "name": "check-install", "private": true, "type": "module" }\n' >"$APP/package.json"
(cd "$APP" && npm install "./$TARBALL" --offline --cache "$WORK/npm-cache" \
  --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)

# 3. The app imports it by its package name, and finds its declarations.
cat >"$APP/use.mjs" <<'EOF'
import { Chouquette, Emitter, transportUrls } from '@chouquette/client';
import { existsSync } from 'node:fs';
const fail = (why) => {
  console.error(`check-install: ${why}`);
  process.exit(1);
};
if (typeof Chouquette !== 'function') fail('Chouquette is not exported');
if (typeof Emitter !== 'function' || typeof transportUrls !== 'function') fail('Emitter or transportUrls is missing');
const client = new Chouquette({ url: 'ws://gw.example/ws', subscription: { class: 'subscribe', app_id: 'a', channels: {} } });
if (typeof client.on !== 'function' || typeof client.connect !== 'function') fail('a client has no on() or connect()');
if (!existsSync('node_modules/@chouquette/client/dist/chouquette.d.ts')) fail('the type declarations are not in the package');
console.log(`check-install: @chouquette/client installs offline from ${process.argv[2]} and imports`);
EOF
(cd "$APP" && node use.mjs "$TARBALL")
