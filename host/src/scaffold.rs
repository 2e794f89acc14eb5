//! `linecook new`: a handler project that builds to a component of the
//! current world with one command (`./build.sh`).
//!
//! Each language's project carries its own copy of the WIT contract (the one
//! this binary was built with), so it builds against exactly the world the
//! host checks modules against.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The contract, as this binary checks modules against it.
pub const WIT: &str = include_str!("../../wit/handler.wit");

/// Where the Rust SDK was when this binary was built.
const SDK_AT_BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

/// Languages `linecook new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the `linecook-guest` SDK (cargo, wasm32-wasip2).
    Rust,
    /// Python with componentize-py (installed by build.sh from PyPI).
    Python,
    /// C with wit-bindgen's C generator and clang.
    C,
    /// JavaScript with componentize-js.
    Js,
    /// Zig (PyPI `ziglang`) with hand-written canonical-ABI glue.
    Zig,
    /// AssemblyScript (npm) with hand-written canonical-ABI glue.
    Assemblyscript,
}

/// Writes a new handler project `name` in `dir/name`; returns its path.
pub fn new_project(
    name: &str,
    lang: Lang,
    dir: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    crate::config::validate_plugin_name(name).map_err(anyhow::Error::msg)?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; pick another name or directory",
            root.display()
        );
    }
    let files: Vec<(&str, String)> = match lang {
        Lang::Rust => {
            let sdk = match sdk {
                Some(path) => path.to_owned(),
                None => PathBuf::from(SDK_AT_BUILD),
            };
            let sdk = sdk.canonicalize().with_context(|| {
                format!(
                    "the Rust SDK (linecook's guest-sdk directory) is not at {}; pass --sdk PATH",
                    sdk.display()
                )
            })?;
            let sdk = sdk.to_str().context("the SDK path is not UTF-8")?;
            vec![
                ("Cargo.toml", fill(RUST_CARGO, name).replace("{{sdk}}", sdk)),
                ("src/lib.rs", fill(RUST_LIB, name)),
                ("build.sh", fill(RUST_BUILD, name)),
                ("README.md", fill(README, name).replace("{{lang}}", "Rust")),
            ]
        }
        Lang::Python => vec![
            ("app.py", fill(PYTHON_APP, name)),
            ("build.sh", fill(PYTHON_BUILD, name)),
            ("wit/handler.wit", WIT.to_owned()),
            (
                "README.md",
                fill(README, name).replace("{{lang}}", "Python"),
            ),
        ],
        Lang::C => vec![
            ("app.c", fill(C_APP, name)),
            ("build.sh", fill(C_BUILD, name)),
            ("wit/handler.wit", WIT.to_owned()),
            ("README.md", fill(README, name).replace("{{lang}}", "C")),
        ],
        Lang::Js => vec![
            ("app.js", fill(JS_APP, name)),
            ("build.mjs", fill(JS_BUILD_MJS, name)),
            ("package.json", fill(JS_PACKAGE, name)),
            ("build.sh", fill(JS_BUILD, name)),
            ("wit/handler.wit", WIT.to_owned()),
            (
                "README.md",
                fill(README, name).replace("{{lang}}", "JavaScript"),
            ),
        ],
        Lang::Zig => vec![
            ("app.zig", fill(ZIG_APP, name)),
            ("glue.zig", ZIG_GLUE.to_owned()),
            ("build.sh", fill(ZIG_BUILD, name)),
            ("wit/handler.wit", WIT.to_owned()),
            ("README.md", fill(README, name).replace("{{lang}}", "Zig")),
        ],
        Lang::Assemblyscript => vec![
            ("app.ts", fill(AS_APP, name)),
            ("glue.ts", AS_GLUE.to_owned()),
            ("package.json", fill(AS_PACKAGE, name)),
            ("build.sh", fill(AS_BUILD, name)),
            ("wit/handler.wit", WIT.to_owned()),
            (
                "README.md",
                fill(README, name).replace("{{lang}}", "AssemblyScript"),
            ),
        ],
    };
    for (path, text) in &files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("project files are in a directory"))
            .with_context(|| format!("creating {}", root.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    set_executable(&root.join("build.sh"))?;
    Ok(root)
}

fn fill(template: &str, name: &str) -> String {
    template
        .replace("INSTALL_WASM_TOOLS", INSTALL_WASM_TOOLS)
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
}

#[cfg(unix)]
fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

const README: &str = r#"# {{name}}

A linecook handler in {{lang}}. It starts as `uppercase`: every record's
value, ASCII-upper-cased, goes to the topic named by the route config `output`.

    ./build.sh                                 # -> {{name}}.wasm
    linecook plugins check {{name}}.wasm       # is it a linecook:handler component?
    cp {{name}}.wasm /path/to/plugins/         # a running host swaps it in

Route it in linecook.toml:

    [[route]]
    topic = "in"
    plugin = "{{name}}"
    config = { output = "out" }
"#;

const RUST_CARGO: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
linecook-guest = { path = "{{sdk}}" }

# A project of its own, even inside another workspace.
[workspace]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

const RUST_LIB: &str = r#"//! {{name}}: emits each record's value ASCII-upper-cased, with the same key,
//! to the topic named by the route config `output`.
//!
//! `init` runs once per partition before any batch; `handle` gets consecutive
//! records of that partition. Keep durable data in `state`: guest memory is
//! dropped at every swap.

use linecook_guest::{Context, Error, Handler, Record, emit, export_handler};

struct App {
    output: String,
}

impl Handler for App {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("{{name}} needs route config `output`: the topic to write to")?;
        Ok(App {
            output: output.to_owned(),
        })
    }

    fn handle(&mut self, batch: Vec<Record>) -> Result<(), Error> {
        for mut record in batch {
            record.value.make_ascii_uppercase();
            emit::send(&self.output, record.key.as_deref(), &record.value);
        }
        Ok(())
    }
}

export_handler!(App);
"#;

const RUST_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world.
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm"
"#;

const PYTHON_APP: &str = r#""""{{name}}: emits each record's value ASCII-upper-cased, with the same key,
to the topic named by the route config `output`.

`init` runs once per partition before any batch; `handle` gets consecutive
records of that partition. Keep durable data in `state` (wit_world.imports.state):
module globals are dropped at every swap. Fail a batch by raising
componentize_py_types.Err(types.HandlerError_Retry("why"))."""

import wit_world
from componentize_py_types import Err
from wit_world.imports import emit, types

OUTPUT = None


class WitWorld(wit_world.WitWorld):
    def init(self, context: types.Context) -> None:
        global OUTPUT
        config = dict(context.config)
        if "output" not in config:
            raise Err("{{name}} needs route config `output`: the topic to write to")
        OUTPUT = config["output"]

    def handle(self, batch: list[types.StreamRecord]) -> None:
        for record in batch:
            emit.send(types.OutputRecord(OUTPUT, record.key, record.value.upper(), []))
"#;

const PYTHON_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, with
# componentize-py (installed from PyPI if missing).
set -euo pipefail
cd "$(dirname "$0")"
command -v componentize-py >/dev/null || python3 -m pip install --quiet 'componentize-py==0.25.*'
componentize-py --wit-path wit --world handler componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
"#;

const C_APP: &str = r#"// {{name}}: emits each record's value ASCII-upper-cased, with the same key,
// to the topic named by the route config `output`.
//
// Bindings are generated by `wit-bindgen c` into gen/handler.h. The canonical
// ABI hands exports their arguments to own: free them before returning.
// Avoid stdio (printf, snprintf): wasi-libc's stdio imports WASI functions,
// and this build links no WASI adapter. Log with linecook_handler_log_write.

#include <string.h>

#include "handler.h"

// One instance serves one partition; `init` runs once, before any batch.
static handler_string_t output;

bool exports_handler_init(handler_context_t *context, handler_string_t *err) {
  bool found = false;
  for (size_t i = 0; i < context->config.len; i++) {
    handler_tuple2_string_string_t *kv = &context->config.ptr[i];
    if (kv->f0.len == 6 && memcmp(kv->f0.ptr, "output", 6) == 0) {
      handler_string_dup_n(&output, (const char *)kv->f1.ptr, kv->f1.len);
      found = true;
    }
  }
  handler_context_free(context);
  if (!found) {
    handler_string_dup(err, "{{name}} needs route config `output`: the topic to write to");
    return false;
  }
  return true;
}

bool exports_handler_handle(handler_list_stream_record_t *batch, handler_handler_error_t *err) {
  (void)err;  // set err->tag and err->val, and return false, to fail the batch
  for (size_t i = 0; i < batch->len; i++) {
    handler_stream_record_t *r = &batch->ptr[i];
    for (size_t j = 0; j < r->value.len; j++) {
      uint8_t c = r->value.ptr[j];
      if (c >= 'a' && c <= 'z') r->value.ptr[j] = c - ('a' - 'A');
    }
    linecook_handler_emit_output_record_t out = {
        .topic = output, .key = r->key, .value = r->value, .headers = {NULL, 0}};
    linecook_handler_emit_send(&out);
  }
  handler_list_stream_record_free(batch);
  return true;
}
"#;

const C_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, from app.c.
# Installs what is missing: clang-19 and wasi-libc (Debian), wit-bindgen and
# wasm-tools (cargo install).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v clang-19 >/dev/null || [ ! -f /usr/lib/wasm32-wasi/libc.a ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc >/dev/null
fi
command -v wit-bindgen >/dev/null ||
  cargo install --locked wit-bindgen-cli@0.61.1 --no-default-features --features c
command -v wasm-tools >/dev/null ||
  cargo install --locked wasm-tools@1.263.0 --no-default-features --features component
rm -rf gen && mkdir gen
wit-bindgen c wit --world handler --out-dir gen >/dev/null 2>&1
clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
  -Igen -o gen/{{crate}}.core.wasm app.c gen/handler.c gen/handler_component_type.o
wasm-tools component new gen/{{crate}}.core.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
"#;

const JS_APP: &str = r#"// {{name}}: emits each record's value ASCII-upper-cased, with the same key,
// to the topic named by the route config `output`.
//
// componentize-js maps the world: exports are this module's `init` and
// `handle`; imported interfaces are modules named by their WIT path
// ('linecook:handler/state@0.1.0': get, set, delete, scan; '.../emit@0.1.0':
// send; '.../log@0.1.0': write). list<u8> is a Uint8Array, option<T> is T or
// undefined, records are objects with camelCase fields. Throw a string to
// fail `init`; throw { tag: 'retry' | 'fatal', val: 'why' } or
// { tag: 'poison', val: { index, message } } to fail a batch. Module state is
// dropped at every swap: keep durable data in `state`.

import { send } from 'linecook:handler/emit@0.1.0';

let output;

export function init(context) {
  const entry = context.config.find(([key]) => key === 'output');
  if (entry === undefined) {
    throw '{{name}} needs route config `output`: the topic to write to';
  }
  output = entry[1];
}

export function handle(batch) {
  for (const record of batch) {
    const value = Uint8Array.from(record.value);
    for (let i = 0; i < value.length; i++) {
      if (value[i] >= 0x61 && value[i] <= 0x7a) value[i] -= 0x20;
    }
    send({ topic: output, key: record.key, value, headers: [] });
  }
}
"#;

const JS_BUILD_MJS: &str = r#"// Builds {{name}}.wasm with componentize-js. Every optional feature is
// disabled: the component imports nothing but the linecook:handler world
// (re-enable 'stdio' to see console output in the host's log).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'app.js',
  witPath: 'wit',
  worldName: 'handler',
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile('{{name}}.wasm', component);
"#;

const JS_PACKAGE: &str = r#"{
  "name": "{{name}}",
  "private": true,
  "type": "module",
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

const JS_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, from app.js
# with componentize-js (installed with npm if missing).
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm install --no-audit --no-fund --silent
node build.mjs
echo "built {{name}}.wasm"
"#;

/// The hand-written canonical-ABI glue of the Zig and AssemblyScript
/// examples: languages without a WIT bindings generator.
const ZIG_GLUE: &str = include_str!("../../plugins/zig/glue.zig");
const AS_GLUE: &str = include_str!("../../plugins/assemblyscript/glue.ts");

/// wasm-tools, for languages that produce a core module.
const INSTALL_WASM_TOOLS: &str = r#"export PATH="$HOME/.cargo/bin:$PATH"
command -v wasm-tools >/dev/null ||
  cargo install --locked wasm-tools@1.263.0 --no-default-features --features component"#;

const ZIG_APP: &str = r#"//! {{name}}: emits each record's value ASCII-upper-cased, with the same key,
//! to the topic named by the route config `output`.
//!
//! glue.zig is the canonical-ABI glue (Zig has no WIT bindings generator):
//! implement `onInit` and `onHandle`; read records with glue.key/glue.value,
//! use glue.state and glue.emit. Memory allocated during a batch
//! (glue.alloc) is dropped after it; keep what must last with glue.keep in
//! onInit, and durable data in state.

const glue = @import("glue.zig");

comptime {
    _ = glue;
}

var output: glue.Bytes = "";

pub fn onInit(config: []const glue.Pair) ?[]const u8 {
    for (config) |*pair| {
        const key = glue.pairKey(pair);
        if (key.len == 6 and for (key, "output") |a, b| {
            if (a != b) break false;
        } else true) {
            output = glue.keep(glue.pairValue(pair));
            return null;
        }
    }
    return "{{name}} needs route config `output`: the topic to write to";
}

pub fn onHandle(batch: []const glue.Record) ?glue.HandlerError {
    for (batch) |*record| {
        const value = glue.value(record);
        for (value) |*c| {
            if (c.* >= 'a' and c.* <= 'z') c.* -= 'a' - 'A';
        }
        glue.emit(output, glue.key(record), value);
    }
    return null;
}
"#;

const ZIG_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, from
# app.zig: zig (PyPI `ziglang`) makes a core module, wasm-tools embeds the
# world and makes the component. Installs both if missing.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m ziglang version >/dev/null 2>&1 || python3 -m pip install --quiet 'ziglang==0.17.1'
INSTALL_WASM_TOOLS
mkdir -p gen
python3 -m ziglang build-exe app.zig -target wasm32-freestanding -fno-entry -rdynamic \
  -O ReleaseSmall -femit-bin=gen/app.core.wasm
wasm-tools component embed wit --world handler gen/app.core.wasm -o gen/app.embed.wasm
wasm-tools component new gen/app.embed.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
"#;

const AS_APP: &str = r#"// {{name}}: emits each record's value ASCII-upper-cased, with the same key,
// to the topic named by the route config `output`.
//
// glue.ts is the canonical-ABI glue (AssemblyScript has no WIT bindings
// generator): records are addresses (see its field accessors), bytes are
// (pointer, length) pairs. Do not use the managed heap (`new`, runtime
// strings): the build uses the stub runtime, and batch memory is an arena
// emptied after every batch.

import {
  RECORD_SIZE, bytesEqualAscii, emitWithKeyOf, handleOk, initErr, initOk, valueLen, valuePtr,
} from "./glue";
export { cabi_realloc, cabi_post_init, cabi_post_handle } from "./glue";

let outputPtr: usize = 0;
let outputLen: usize = 0;

export function init(
  _plugin: usize, _pluginLen: usize, _version: usize, _versionLen: usize,
  _topic: usize, _topicLen: usize, _partition: u32, config: usize, configLen: usize,
): usize {
  for (let i: usize = 0; i < configLen; i++) {
    const pair = config + i * 16;
    if (bytesEqualAscii(load<usize>(pair), load<usize>(pair, 4), "output")) {
      outputPtr = load<usize>(pair, 8);
      outputLen = load<usize>(pair, 12);
      return initOk();
    }
  }
  return initErr("{{name}} needs route config `output`: the topic to write to");
}

export function handle(batch: usize, batchLen: usize): usize {
  for (let i: usize = 0; i < batchLen; i++) {
    const r = batch + i * RECORD_SIZE;
    const v = valuePtr(r);
    const n = valueLen(r);
    for (let j: usize = 0; j < n; j++) {
      const c = load<u8>(v + j);
      if (c >= 0x61 && c <= 0x7a) store<u8>(v + j, c - 0x20);
    }
    emitWithKeyOf(outputPtr, outputLen, r, v, n);
  }
  return handleOk();
}
"#;

const AS_PACKAGE: &str = r#"{
  "name": "{{name}}",
  "private": true,
  "devDependencies": {
    "assemblyscript": "0.28.20"
  }
}
"#;

const AS_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm, a component of the linecook:handler world, from
# app.ts: asc (npm `assemblyscript`) makes a core module, wasm-tools embeds
# the world and makes the component. Installs both if missing.
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/asc ] || npm install --no-audit --no-fund --silent
INSTALL_WASM_TOOLS
mkdir -p gen
node_modules/.bin/asc app.ts -o gen/app.core.wasm --runtime stub -O3 --noAssert --use abort=glue/abort
wasm-tools component embed wit --world handler gen/app.core.wasm -o gen/app.embed.wasm
wasm-tools component new gen/app.embed.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
"#;
