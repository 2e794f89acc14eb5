#!/usr/bin/env bash
# Installs what a fresh machine needs and builds the host and the example
# plugins. Idempotent: quick when everything is already there.
#
#   scripts/setup.sh [--no-host]
set -euo pipefail
cd "$(dirname "$0")/.."

# librdkafka is built from source by rdkafka-sys: it needs a C toolchain (on
# the machine), and OpenSSL and zlib headers found through pkg-config.
if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl zlib; then
  echo "==> installing OpenSSL and zlib headers for librdkafka"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq pkg-config libssl-dev zlib1g-dev >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "==> adding the wasm32-wasip2 target"
  scripts/timed-install.sh Rust "the wasm32-wasip2 target" rustup target add wasm32-wasip2
fi

echo "==> building the example plugins (plugins/ -> wasm32-wasip2 components)"
# Into plugins/target whatever CARGO_TARGET_DIR says: scripts/demo.sh and
# the tests take the components from there.
(cd plugins && cargo build --release --target wasm32-wasip2 --target-dir target --quiet)

# `--no-host`: scripts/test.sh builds the host with its tests instead. A
# plain build here would compile wasmtime and the wit crates a second time:
# the tests' dev-dependencies unify other features into them.
if [ "${1:-}" != "--no-host" ]; then
  echo "==> building linecook"
  cargo build -p linecook --quiet
fi
