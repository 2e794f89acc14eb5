#!/usr/bin/env bash
# Builds uppercase.wasm and counter.wasm from AssemblyScript:
#   asc (npm `assemblyscript`)  a wasm32 module with the stub runtime;
#                               glue.ts is the hand-written canonical-ABI
#                               glue (no WIT bindings generator exists)
#   linecook sdk componentize   attaches the linecook:handler world and
#                               makes the component
# asc is installed if missing (npm ci).
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/asc ] ||
  ../../scripts/timed-install.sh AssemblyScript 'assemblyscript (npm ci)' npm ci --no-audit --no-fund --silent
linecook=$(../../scripts/toolchains.sh linecook)
mkdir -p gen
for name in uppercase counter; do
  # --use abort=...: our trap instead of an `env.abort` import.
  node_modules/.bin/asc "$name.ts" -o "gen/$name.core.wasm" --runtime stub -O3 --noAssert \
    --use abort=glue/abort
  "$linecook" sdk componentize "gen/$name.core.wasm" -o "$name.wasm"
done
echo "built plugins/assemblyscript/{uppercase,counter}.wasm"
