#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler@0.2.0 world,
# from app.ts: asc (npm `assemblyscript`, installed if missing) makes a core
# module; `linecook sdk componentize` renames its exports to the guest
# interface's (AssemblyScript cannot name an export so), embeds the world
# and makes the component.
set -euo pipefail
cd "$(dirname "$0")"
LINECOOK_SDK
[ -x node_modules/.bin/asc ] || npm install --no-audit --no-fund --silent
mkdir -p gen
node_modules/.bin/asc app.ts -o gen/app.core.wasm --runtime stub -O3 --noAssert --use abort=glue/abort
guest=linecook:handler/guest@0.2.0
renames=()
for f in init handle on-timers; do
  renames+=(--export "${f//-/_}=$guest#$f" --export "cabi_post_${f//-/_}=cabi_post_$guest#$f")
done
# The packed batch path (componentize then embeds the packed-handler world).
packed=linecook:handler/packed@0.2.0#handle-packed
renames+=(--export "handle_packed=$packed" --export "cabi_post_handle_packed=cabi_post_$packed")
"$linecook" sdk componentize gen/app.core.wasm -o {{name}}.wasm --contract 0.2.0 "${renames[@]}"
echo "built {{name}}.wasm"
