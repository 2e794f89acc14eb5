#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler@0.2.0 world, with
# componentize-py (installed from PyPI if missing).
set -euo pipefail
cd "$(dirname "$0")"
command -v componentize-py >/dev/null || python3 -m pip install --quiet 'componentize-py==0.25.*'
componentize-py --wit-path wit --world handler componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
