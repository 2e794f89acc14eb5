#!/usr/bin/env bash
# Builds uppercase.wasm and counter.wasm from C:
#   linecook sdk c-bindings    bindings for the linecook:handler world (gen/)
#   clang-19                   a wasm32-wasi reactor module; the handlers use
#                              no WASI function (no stdio), so the module
#                              imports none and needs no preview1 adapter
#   linecook sdk componentize  the module becomes a component
# clang-19 is installed by scripts/toolchains.sh if missing.
set -euo pipefail
cd "$(dirname "$0")"
../../scripts/toolchains.sh c
linecook=$(../../scripts/toolchains.sh linecook)
rm -rf gen
"$linecook" sdk c-bindings --out-dir gen
for name in uppercase counter; do
  clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
    -Igen -o "gen/$name.core.wasm" "$name/$name.c" gen/handler.c gen/handler_component_type.o
  "$linecook" sdk componentize "gen/$name.core.wasm" -o "$name.wasm"
done
echo "built plugins/c/{uppercase,counter}.wasm"
