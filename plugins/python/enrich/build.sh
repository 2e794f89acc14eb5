#!/usr/bin/env bash
# Builds enrich.wasm from app.py with componentize-py (installed if missing),
# against contract 0.2.0 plus wasi:http (wit/http).
set -euo pipefail
cd "$(dirname "$0")"
command -v componentize-py >/dev/null ||
  ../../../scripts/timed-install.sh Python 'componentize-py 0.25' python3 -m pip install --quiet 'componentize-py==0.25.*'
componentize-py --wit-path ../../../wit/http --world handler componentize app -o enrich.wasm
