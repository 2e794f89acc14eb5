#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler@0.2.0 world, from app.c:
# `linecook sdk c-bindings` writes the bindings, clang-19 makes a core module,
# `linecook sdk componentize` makes the component. Installs clang-19 and
# wasi-libc (Debian) if missing.
set -euo pipefail
cd "$(dirname "$0")"
LINECOOK_SDK
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v clang-19 >/dev/null || [ ! -f /usr/lib/wasm32-wasi/libc.a ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc >/dev/null
fi
rm -rf gen
"$linecook" sdk c-bindings --out-dir gen --contract 0.2.0
clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
  -Igen -o gen/{{crate}}.core.wasm app.c gen/handler.c gen/handler_component_type.o
"$linecook" sdk componentize gen/{{crate}}.core.wasm -o {{name}}.wasm --contract 0.2.0
echo "built {{name}}.wasm"
