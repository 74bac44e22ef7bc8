#!/usr/bin/env bash
# The test suite: unit tests beside the protocol code, integration tests in
# test/ against real memcached processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
need_debian memcached memcached
need_debian memccapable libmemcached-tools
need_debian openssl openssl
need_node_modules
build
# Only *.test.js files: node --test given a directory would also run everything under
# test/ (helpers, and the long fault-injection suite, which has its own npm script).
if [ $# -eq 0 ]; then set -- $(find dist/src dist/test -name '*.test.js' | sort); fi
exec node --test --test-concurrency=2 --test-timeout=600000 "$@"
