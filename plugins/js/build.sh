#!/usr/bin/env bash
# Builds uppercase.wasm, counter.wasm, window-count.wasm and session.wasm from JavaScript with
# componentize-js
# (installed with `npm ci` from package-lock.json if missing).
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] ||
  ../../scripts/timed-install.sh JavaScript 'componentize-js (npm ci)' npm ci --no-audit --no-fund --silent
node build.mjs
