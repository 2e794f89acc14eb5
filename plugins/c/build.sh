#!/usr/bin/env bash
# Builds uppercase.wasm and counter.wasm from C:
#   wit-bindgen c      bindings for the linecook:handler world (gen/)
#   clang-19           a wasm32-wasi reactor module; the handlers use no WASI
#                      function (no stdio), so the module imports none and
#                      needs no preview1 adapter
#   wasm-tools         `component new`: the module becomes a component
# Toolchains are installed by scripts/toolchains.sh if missing.
set -euo pipefail
cd "$(dirname "$0")"
../../scripts/toolchains.sh c
export PATH="$HOME/.cargo/bin:$PATH"
rm -rf gen && mkdir gen
wit-bindgen c ../../wit --world handler --out-dir gen >/dev/null 2>&1
for name in uppercase counter; do
  clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
    -Igen -o "gen/$name.core.wasm" "$name/$name.c" gen/handler.c gen/handler_component_type.o
  wasm-tools component new "gen/$name.core.wasm" -o "$name.wasm"
done
echo "built plugins/c/{uppercase,counter}.wasm"
