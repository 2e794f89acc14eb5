#!/usr/bin/env bash
# Installs what a fresh machine needs and builds the host and the example
# plugins. Idempotent: quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "==> adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

echo "==> building the example plugins (plugins/ -> wasm32-wasip2 components)"
(cd plugins && cargo build --release --target wasm32-wasip2 --quiet)

echo "==> building linecook"
cargo build -p linecook --quiet
