#!/usr/bin/env bash
# The test suite: unit tests beside the protocol code, integration tests in
# test/ against real memcached processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
need_debian memcached memcached
need_debian /usr/sbin/nutcracker nutcracker   # twemproxy; by path: /usr/sbin is not on every user's PATH
need_debian memccapable libmemcached-tools
need_debian openssl openssl
need_debian promtool prometheus
need_debian docker-compose docker-compose   # v1: validates docker-compose.yml without an engine
need_node_modules
build
# Lint and formatting (eslint, prettier; `npm run format` fixes the latter): the full run only.
if [ $# -eq 0 ]; then npm run --silent lint; fi
# Only *.test.js files: node --test given a directory would also run everything under
# test/ (helpers, and the long fault-injection suite, which has its own npm script).
if [ $# -gt 0 ]; then exec node --test --test-concurrency=2 --test-timeout=600000 "$@"; fi
node --test --test-concurrency=2 --test-timeout=600000 $(find dist/src dist/test -name '*.test.js' ! -name '*.timing.test.js' | sort)
# Tests that compare latencies within one run (a ratio, never an absolute time) run alone:
# another test's processes on the same CPUs in one window and not the other would skew them.
node --test --test-concurrency=1 --test-timeout=600000 $(find dist/test -name '*.timing.test.js' | sort)
# Then a short run of the fault-injection suite (the long one: npm run test:faults -- --seconds 600).
# Every fault, and the workload parts that pass today (the README's "Faults" lists what the others still find).
node dist/test/faults/fault-suite.js --seconds "${FAULT_SECONDS:-45}" --seed "${FAULT_SEED:-1}" --workload "${FAULT_WORKLOAD:-set,noreply-close,shared,readers}"
