#!/usr/bin/env bash
# Builds uppercase.wasm and counter.wasm from AssemblyScript:
#   asc (npm `assemblyscript`)  a wasm32 module with the stub runtime;
#                               glue.ts is the hand-written canonical-ABI
#                               glue (no WIT bindings generator exists)
#   wasm-tools                  `component embed` attaches the
#                               linecook:handler world, `component new`
#                               makes the component
# Toolchains are installed if missing (npm ci; scripts/toolchains.sh).
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/asc ] || npm ci --no-audit --no-fund --silent
../../scripts/toolchains.sh wasm-tools
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p gen
for name in uppercase counter; do
  # --use abort=...: our trap instead of an `env.abort` import.
  node_modules/.bin/asc "$name.ts" -o "gen/$name.core.wasm" --runtime stub -O3 --noAssert \
    --use abort=glue/abort
  wasm-tools component embed ../../wit --world handler "gen/$name.core.wasm" -o "gen/$name.embed.wasm"
  wasm-tools component new "gen/$name.embed.wasm" -o "$name.wasm"
done
echo "built plugins/assemblyscript/{uppercase,counter}.wasm"
