#!/usr/bin/env bash
# Installs the toolchain of each language named on the command line, if it is
# missing, and says how long that took. Idempotent; used by the plugins'
# build scripts, so a fresh machine builds them without a separate step.
#
#   scripts/toolchains.sh c
set -euo pipefail

# wit-bindgen's CLI matches the SDK's wit-bindgen; wasm-tools only needs its
# `component` subcommands.
WIT_BINDGEN_VERSION=0.61.1
WASM_TOOLS_VERSION=1.263.0
ZIG_VERSION=0.17.1

export PATH="$HOME/.cargo/bin:$PATH"

apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

timed() {
  local what=$1
  shift
  local start=$SECONDS
  "$@"
  echo "==> installed $what in $((SECONDS - start)) s" >&2
}

wasm_tools() {
  if [ "$(wasm-tools --version 2>/dev/null | awk '{print $2}')" != "$WASM_TOOLS_VERSION" ]; then
    timed "wasm-tools $WASM_TOOLS_VERSION" cargo install --quiet --locked \
      "wasm-tools@$WASM_TOOLS_VERSION" --no-default-features --features component
  fi
}

for lang in "$@"; do
  case "$lang" in
    c)
      if ! command -v clang-19 >/dev/null || [ ! -f /usr/lib/wasm32-wasi/libc.a ]; then
        timed "clang-19 and wasi-libc" apt_install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc
      fi
      if [ "$(wit-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WIT_BINDGEN_VERSION" ]; then
        timed "wit-bindgen $WIT_BINDGEN_VERSION" cargo install --quiet --locked \
          "wit-bindgen-cli@$WIT_BINDGEN_VERSION" --no-default-features --features c
      fi
      wasm_tools
      ;;
    wasm-tools)
      wasm_tools
      ;;
    zig)
      if ! python3 -m ziglang version >/dev/null 2>&1; then
        timed "zig $ZIG_VERSION" python3 -m pip install --quiet "ziglang==$ZIG_VERSION"
      fi
      wasm_tools
      ;;
    *)
      echo "toolchains.sh: no toolchain known for \`$lang\`" >&2
      exit 2
      ;;
  esac
done
