#!/usr/bin/env bash
# Builds counter.wasm (contract 0.1.0), uppercase.wasm, window-count.wasm,
# session.wasm and uppercase-packed.wasm (contract 0.2.0; the last with the
# packed batch path) from C:
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
rm -rf gen gen-0.2 gen-packed
"$linecook" sdk c-bindings --out-dir gen
"$linecook" sdk c-bindings --out-dir gen-0.2 --contract 0.2.0
"$linecook" sdk c-bindings --out-dir gen-packed --contract 0.2.0 --packed
# counter is contract 0.1.0; uppercase, window-count and session 0.2.0;
# uppercase-packed 0.2.0 with the packed batch path (packed.h).
for spec in counter:gen:handler:0.1.0 uppercase:gen-0.2:handler:0.2.0 \
  window-count:gen-0.2:handler:0.2.0 session:gen-0.2:handler:0.2.0 \
  uppercase-packed:gen-packed:packed_handler:0.2.0; do
  IFS=: read -r name gen world contract <<<"$spec"
  clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
    -I"$gen" -o "$gen/$name.core.wasm" "$name/$name.c" "$gen/$world.c" "$gen/${world}_component_type.o"
  "$linecook" sdk componentize "$gen/$name.core.wasm" -o "$name.wasm" --contract "$contract"
done
echo "built plugins/c/{uppercase,counter,window-count,session,uppercase-packed}.wasm"
