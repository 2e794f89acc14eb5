#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, from app.js
# with componentize-js (installed with npm if missing).
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm install --no-audit --no-fund --silent
node build.mjs
echo "built {{name}}.wasm"
