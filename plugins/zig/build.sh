#!/usr/bin/env bash
# Builds uppercase.wasm and counter.wasm from Zig:
#   zig (PyPI `ziglang`)  a freestanding wasm32 module; glue.zig is the
#                         hand-written canonical-ABI glue (Zig has no WIT
#                         bindings generator)
#   wasm-tools            `component embed` attaches the linecook:handler
#                         world, `component new` makes the component
# Toolchains are installed by scripts/toolchains.sh if missing.
set -euo pipefail
cd "$(dirname "$0")"
../../scripts/toolchains.sh zig
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p gen
for name in uppercase counter; do
  python3 -m ziglang build-exe "$name.zig" -target wasm32-freestanding -fno-entry -rdynamic \
    -O ReleaseSmall -femit-bin="gen/$name.core.wasm"
  wasm-tools component embed ../../wit --world handler "gen/$name.core.wasm" -o "gen/$name.embed.wasm"
  wasm-tools component new "gen/$name.embed.wasm" -o "$name.wasm"
done
echo "built plugins/zig/{uppercase,counter}.wasm"
