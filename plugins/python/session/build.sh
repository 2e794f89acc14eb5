#!/usr/bin/env bash
# Builds session.wasm from app.py with componentize-py (installed if
# missing), against contract 0.2.0.
set -euo pipefail
cd "$(dirname "$0")"
command -v componentize-py >/dev/null ||
  ../../../scripts/timed-install.sh Python 'componentize-py 0.25' python3 -m pip install --quiet 'componentize-py==0.25.*'
componentize-py --wit-path ../../../wit/0.2.0 --world handler componentize app -o session.wasm
