#!/usr/bin/env bash
# Builds uppercase.wasm, counter.wasm, window-count.wasm and session.wasm
# (contract 0.2.0) from AssemblyScript:
#   asc (npm `assemblyscript`)  a wasm32 module with the stub runtime;
#                               glue.ts is the hand-written canonical-ABI
#                               glue (no WIT bindings generator exists)
#   linecook sdk componentize   renames the exports to the guest
#                               interface's (AssemblyScript cannot name
#                               them so), attaches the linecook:handler
#                               world and makes the component
# asc is installed if missing (npm ci).
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/asc ] ||
  ../../scripts/timed-install.sh AssemblyScript 'assemblyscript (npm ci)' npm ci --no-audit --no-fund --silent
linecook=$(../../scripts/toolchains.sh linecook)
mkdir -p gen
guest=linecook:handler/guest@0.2.0
renames=()
for f in init handle on-timers; do
  renames+=(--export "${f//-/_}=$guest#$f" --export "cabi_post_${f//-/_}=cabi_post_$guest#$f")
done
# The packed batch path (componentize then embeds the packed-handler world).
packed=linecook:handler/packed@0.2.0#handle-packed
renames+=(--export "handle_packed=$packed" --export "cabi_post_handle_packed=cabi_post_$packed")
for name in uppercase counter window-count session; do
  # --use abort=...: our trap instead of an `env.abort` import.
  node_modules/.bin/asc "$name.ts" -o "gen/$name.core.wasm" --runtime stub -O3 --noAssert \
    --use abort=glue/abort
  "$linecook" sdk componentize "gen/$name.core.wasm" -o "$name.wasm" --contract 0.2.0 "${renames[@]}"
done
echo "built plugins/assemblyscript/{uppercase,counter,window-count,session}.wasm"
