#!/usr/bin/env bash
# `npm run test:faults -- [--seconds N] [--seed S]`: the fault-injection suite (test/faults/fault-suite.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
need_debian memcached memcached
need_node_modules
build
exec node dist/test/faults/fault-suite.js "$@"
