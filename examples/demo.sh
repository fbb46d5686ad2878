#!/usr/bin/env bash
# make demo: a local Prosody, three busylamp agents on loopback, and the CLI
# showing a device merged across nodes, an MWI count shared, and a stopped
# node's lamps going out. Cleans up after itself; exits 0 when every step
# showed what it should.
set -euo pipefail
BIN=${1:-bin/busylamp}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

if ! command -v prosody >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing Prosody from Debian"
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody >/dev/null
  else
    echo "make demo needs Prosody: sudo apt-get install prosody" >&2
    exit 1
  fi
fi

for port in 15222 15038 15039 15040; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "make demo needs 127.0.0.1:$port (examples/cluster), but something listens there" >&2
    exit 1
  fi
done

DIR=$(mktemp -d /tmp/busylamp-demo.XXXXXX)
STATE=/tmp/busylamp-demo-state # the nodes' state_dir (examples/cluster): start from nothing
rm -rf "$STATE"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR" "$STATE"
}
trap cleanup EXIT
fail() {
  echo "demo FAILED: $*" >&2
  for f in "$DIR"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done
  exit 1
}

# The Prosody of examples/cluster/prosody.cfg.lua, in a temporary directory.
mkdir -p "$DIR/data"
sed "s#@DIR@#$DIR#g" "$HERE/cluster/prosody.cfg.lua" > "$DIR/prosody.cfg.lua"
for i in 1 2 3; do
  prosodyctl --config "$DIR/prosody.cfg.lua" register "node$i" demo.busylamp.test "demo-node$i" >/dev/null 2>&1
done
prosody --config "$DIR/prosody.cfg.lua" > "$DIR/prosody.out.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/15222) 2>/dev/null && break; sleep 0.1; done
(exec 3<>/dev/tcp/127.0.0.1/15222) 2>/dev/null || fail "Prosody did not start on 127.0.0.1:15222"
echo "== Prosody on 127.0.0.1:15222 (PubSub in memory, expose_publisher on)"

declare -A AGENT
for i in 1 2 3; do
  "$BIN" run -c "$HERE/cluster/node$i.conf" > "$DIR/node$i.log" 2>&1 &
  AGENT[$i]=$!
  PIDS+=($!)
done
bl() { local n=$1; shift; "$BIN" -c "$HERE/cluster/node$n.conf" "$@"; }
# wait_for N PATTERN CMD...: run the CLI on node N until its output matches.
wait_for() {
  local n=$1 pat=$2; shift 2
  for _ in $(seq 100); do
    if out=$(bl "$n" "$@" 2>&1) && grep -qE "$pat" <<<"$out"; then return 0; fi
    sleep 0.1
  done
  fail "node$n: '$*' never showed /$pat/; last output: $out"
}
show() { local n=$1; shift; echo; echo "\$ busylamp -c examples/cluster/node$n.conf $*"; bl "$n" "$@"; }

for i in 1 2 3; do wait_for "$i" "Connected" show connected; done
wait_for 1 "Resource: pbx2" show buddies
wait_for 1 "Resource: pbx3" show buddies
show 1 show connected
show 1 show buddies

echo; echo "== Custom:demo is INUSE on node 1 and RINGING on node 2"
show 1 devstate set Custom:demo INUSE
show 2 devstate set Custom:demo RINGING
wait_for 3 "Custom:demo +RINGINUSE" devstate get Custom:demo
echo; echo "== node 3 reads the cluster-wide state (Asterisk's rule: RINGINUSE)"
show 3 devstate get Custom:demo

echo; echo "== node 2 sets mailbox 1000@default to 2 new, 1 old"
show 2 mwi set 1000@default 2 1
wait_for 1 "1000@default +2 +1" mwi get 1000@default
show 1 mwi get 1000@default

echo; echo "== node 2 stops; after stale_grace (3 s) its contributions expire"
kill "${AGENT[2]}"
wait "${AGENT[2]}" 2>/dev/null || true
wait_for 1 "Custom:demo +INUSE " devstate get Custom:demo
wait_for 3 "Custom:demo +INUSE " devstate get Custom:demo
show 1 devstate get Custom:demo
show 3 devstate list
wait_for 1 "^0 mailboxes" mwi list
show 1 mwi list

echo; echo "demo OK"
