#!/usr/bin/env bash
# The demo: on a fresh machine, installs what is needed, builds host and
# plugins, and runs a two-stage pipeline on the embedded log while you watch:
#   lines --uppercase--> shouted --counter--> counts
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

L=target/debug/linecook
C=demo/linecook.toml
rm -rf target/demo && mkdir -p target/demo/plugins
cp plugins/target/wasm32-wasip2/release/{uppercase,counter}.wasm target/demo/plugins/

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "starting the host (its log follows)"
RUST_LOG=${RUST_LOG:-info} $L run --config $C &
host=$!
trap 'kill -INT $host 2>/dev/null || true; wait $host 2>/dev/null || true' EXIT
until [ -f target/demo/data/admin.addr ]; do
  kill -0 $host 2>/dev/null || { echo "the host exited"; exit 1; }
  sleep 0.1
done

step "producing demo/input.txt to 'lines', three times, while the host runs"
for round in 1 2 3; do
  $L produce --topic lines --key-separator : --config $C < demo/input.txt
  sleep 0.5
done

step "waiting until every partition has caught up"
for _ in $(seq 1 100); do
  lag=$($L status --json --config $C | grep -o '"lag": [0-9]*' | awk '{s+=$2} END {print s+0}')
  [ "$lag" = 0 ] && break
  sleep 0.1
done

step "'shouted' (uppercase's output), first 6 records"
$L tail --topic shouted --from-beginning --max-records 6 --config $C

step "'counts' (counter's output: <key>:<count>), all of them"
$L tail --topic counts --from-beginning --config $C

step "status"
$L status --config $C

step "stopping the host (SIGINT: finishes the batch in flight, then exits)"
kill -INT $host
wait $host
trap - EXIT
step "done. State and logs are in target/demo/data; run it again any time."
