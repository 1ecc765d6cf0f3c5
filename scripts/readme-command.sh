#!/usr/bin/env bash
# Prints the Nth command (1: run the demo, 2: run the tests) of the first
# ```sh block of README.md, without its comment: .ci/run runs the README's
# commands as written, so the README cannot drift from what CI proves.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: readme-command.sh N}
awk '/^```sh$/ {inside=1; next} inside && /^```/ {exit} inside' README.md \
  | sed -e 's/[[:space:]]*#.*$//' -e '/^[[:space:]]*$/d' \
  | sed -n "${n}p"
