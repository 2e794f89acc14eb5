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
    /// Zig.
    Zig,
    /// AssemblyScript.
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
        other => bail!(
            "`--lang {}` is not scaffolded yet: linecook new supports rust and python today (see docs/languages.md)",
            format!("{other:?}").to_lowercase()
        ),
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
