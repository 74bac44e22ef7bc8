#!/usr/bin/env bash
# `npm run test:faults -- [--seconds N] [--seed S]`: the fault-injection suite (test/faults/fault-suite.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
need_debian memcached memcached
need_node_modules
build
# A 600 s run keeps every write of a few million in its history (near 1 GB as JSON): with node's default heap
# (4 GiB) the suite's own process, which relays the link, stalled for 15-20 s at a time (seed 41, session 16).
exec node --max-old-space-size=8192 dist/test/faults/fault-suite.js "$@"
