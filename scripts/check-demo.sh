#!/usr/bin/env bash
# Runs the README's demo command literally (from a fresh clone that includes
# its build), waits for the URL it prints, checks that the page answers,
# then stops it with SIGTERM (and checks it exits). Fails after a time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=$(scripts/readme-command.sh 1)
limit=${DEMO_TIME_LIMIT:-1500}
log=$(mktemp)
echo "demo command (README): $cmd"
setsid bash -c "$cmd" >"$log" 2>&1 &
pid=$!
stop() { kill -TERM -- "-$pid" 2>/dev/null || true; }
trap 'stop; sleep 1; kill -KILL -- "-$pid" 2>/dev/null || true' EXIT

url=""
for _ in $(seq "$limit"); do
  url=$(grep -o 'open http://[^ ]*' "$log" | head -1 | cut -d' ' -f2 || true)
  [ -n "$url" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "check-demo: the demo command exited before printing its URL:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  sleep 1
done
if [ -z "$url" ]; then
  echo "check-demo: no URL printed within ${limit}s:" >&2
  tail -30 "$log" >&2
  exit 1
fi
echo "demo printed $url"
page=$(curl -fsS --max-time 10 "$url")
grep -qi '<html' <<<"$page" || { echo "check-demo: $url is not an HTML page" >&2; exit 1; }
curl -fsS --max-time 10 "${url}chouquette.js" >/dev/null \
  || { echo "check-demo: ${url}chouquette.js does not answer" >&2; exit 1; }
echo "the page and the client answer"

stop
for _ in $(seq 30); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "check-demo: the demo did not stop within 30 s of SIGTERM" >&2
  exit 1
fi
trap - EXIT
echo "the demo stopped on SIGTERM"
