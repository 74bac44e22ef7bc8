#!/usr/bin/env bash
# `npm start`: a replicated pair on this machine, to try memrepl at once.
# Each memrepl runs in launcher mode: it starts its own stock memcached on a
# private unix socket (like one repcached process), -m 64.
#
#   node A: clients 127.0.0.1:11211, replication 11212, metrics :9150
#   node B: clients 127.0.0.1:11221, replication 11222, metrics :9151
#           (B dials A with -x, as repcached's second node did)
#
# Ctrl-C stops all four processes. Ports can be moved with PAIR_BASE (default 11211).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
need_debian memcached memcached
need_node_modules
build

base=${PAIR_BASE:-11211}
a_port=$base;          a_repl=$((base + 1));  a_metrics=9150
b_port=$((base + 10)); b_repl=$((base + 11)); b_metrics=9151

pids=()
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "pair stopped."
}
trap cleanup EXIT INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $a_port $a_repl $b_port $b_repl $a_metrics $b_metrics; do
  port_free "$p" || { echo "port $p is in use; set PAIR_BASE to move the pair (metrics ports 9150/9151 are fixed)" >&2; exit 1; }
done

prefix() { sed -u "s/^/[$1] /"; }
# Run as the file itself: its first line holds the node options memrepl runs with (see src/cli.ts).
dist/src/cli.js --spawn-memcached -m 64 -v -l 127.0.0.1 -p "$a_port" -X "$a_repl" \
  --metrics-port "$a_metrics" --node-id a 2> >(prefix a >&2) & pids+=($!)
dist/src/cli.js --spawn-memcached -m 64 -v -l 127.0.0.1 -p "$b_port" -X "$b_repl" \
  --metrics-port "$b_metrics" --node-id b -x "127.0.0.1:$a_repl" 2> >(prefix b >&2) & pids+=($!)

# Wait (bounded) for both proxies to take connections.
for _ in $(seq 100); do
  port_free "$a_port" || port_free "$b_port" || break
  sleep 0.1
done

# Send one request to a port and print the reply (bash's /dev/tcp: no extra tools needed).
ask() {
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf '%b' "$2" >&3
  timeout 1 cat <&3 | sed -n "1,${3:-1}p"
  exec 3>&-
}

sleep 0.5
echo
echo "memrepl pair is up:"
echo "  node A  telnet 127.0.0.1 $a_port   (metrics http://127.0.0.1:$a_metrics/metrics)"
echo "  node B  telnet 127.0.0.1 $b_port   (metrics http://127.0.0.1:$b_metrics/metrics)"
echo
echo "demo: set hello on A, read it on B"
echo "  A> set hello 0 0 5 / world   -> $(ask "$a_port" 'set hello 0 0 5\r\nworld\r\nquit\r\n')"
sleep 0.3
echo "  B> get hello                 -> $(ask "$b_port" 'get hello\r\nquit\r\n' 3 | tr -d '\r' | paste -sd' ')"
echo "  B> stats replication         -> $(ask "$b_port" 'stats replication\r\nquit\r\n' 9 | grep -E 'peer_up|peer_node_id' | tr -d '\r' | paste -sd' ')"
echo
echo "Ctrl-C to stop."
wait
