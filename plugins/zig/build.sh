#!/usr/bin/env bash
# Builds uppercase.wasm, counter.wasm, window-count.wasm and session.wasm
# (contract 0.2.0) from Zig:
#   zig (PyPI `ziglang`)       a freestanding wasm32 module; glue.zig is the
#                              hand-written canonical-ABI glue (Zig has no WIT
#                              bindings generator)
#   linecook sdk componentize  attaches the linecook:handler world and makes
#                              the component
# zig is installed by scripts/toolchains.sh if missing.
set -euo pipefail
cd "$(dirname "$0")"
../../scripts/toolchains.sh zig
linecook=$(../../scripts/toolchains.sh linecook)
mkdir -p gen
for name in uppercase counter window-count session; do
  python3 -m ziglang build-exe "$name.zig" -target wasm32-freestanding -fno-entry -rdynamic \
    -O ReleaseSmall -femit-bin="gen/$name.core.wasm"
  "$linecook" sdk componentize "gen/$name.core.wasm" -o "$name.wasm" --contract 0.2.0
done
echo "built plugins/zig/{uppercase,counter,window-count,session}.wasm"
