#!/usr/bin/env bash
# The browser client (clients/js): dependencies from the lockfile, type check,
# unit tests, the committed dist/ against a fresh build, the package installed
# from its packed tarball (as the README says), then the gateway and
# the end-to-end tests in headless Chromium. Any failure fails the script;
# nothing is skipped (no Chromium is a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

echo "== browser (Chromium)"
scripts/install-browser.sh

for tool in node npm cargo; do
  command -v "$tool" >/dev/null || { echo "test-js.sh: $tool is required" >&2; exit 1; }
done
echo "node $(node --version), npm $(npm --version)"

cd "$ROOT/clients/js"
echo "== npm ci"
npm ci --no-audit --no-fund

echo "== type check"
npm run typecheck

echo "== unit tests"
npm run test:unit

echo "== dist/ is up to date (it is committed: the demo embeds dist/chouquette.js)"
npm run check-dist

echo "== install as the README says (npm pack, then npm install the tarball offline)"
npm run check-install

echo "== gateway build"
(cd "$ROOT" && cargo build -p chouquette --locked)

echo "== end-to-end tests (headless Chromium, real gateway)"
npm run test:e2e
