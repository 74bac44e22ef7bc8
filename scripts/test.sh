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
exec node --test --test-concurrency=2 --test-timeout=600000 "${@:-dist/}"
