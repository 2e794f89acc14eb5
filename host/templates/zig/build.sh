#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, from
# app.zig: zig (PyPI `ziglang`, installed if missing) makes a core module,
# `linecook sdk componentize` embeds the world and makes the component.
set -euo pipefail
cd "$(dirname "$0")"
LINECOOK_SDK
python3 -m ziglang version >/dev/null 2>&1 || python3 -m pip install --quiet 'ziglang==0.17.1'
mkdir -p gen
python3 -m ziglang build-exe app.zig -target wasm32-freestanding -fno-entry -rdynamic \
  -O ReleaseSmall -femit-bin=gen/app.core.wasm
"$linecook" sdk componentize gen/app.core.wasm -o {{name}}.wasm --contract 0.2.0
echo "built {{name}}.wasm"
