#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, from
# app.ts: asc (npm `assemblyscript`, installed if missing) makes a core
# module, `linecook sdk componentize` embeds the world and makes the component.
set -euo pipefail
cd "$(dirname "$0")"
LINECOOK_SDK
[ -x node_modules/.bin/asc ] || npm install --no-audit --no-fund --silent
mkdir -p gen
node_modules/.bin/asc app.ts -o gen/app.core.wasm --runtime stub -O3 --noAssert --use abort=glue/abort
"$linecook" sdk componentize gen/app.core.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
