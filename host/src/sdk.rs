//! `linecook sdk`: what a handler build needs from the contract, served by the
//! binary itself so a build needs no other tool and always matches the world
//! this host checks modules against.
//!
//! - `wit`: the contract's text.
//! - `c-bindings`: C bindings for the handler world, by wit-bindgen's C
//!   generator (the same release the Rust SDK's `generate!` uses).
//! - `componentize`: a core module (clang, zig, asc…) becomes a component,
//!   as `wasm-tools component embed` + `component new` would make it.

use std::path::Path;

use anyhow::{Context as _, bail};
use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

pub use crate::runtime::Contract;

/// Contract 0.1.0, what `sdk wit`, `sdk c-bindings` and `sdk componentize`
/// serve (the C, Zig and AssemblyScript builds).
pub const WIT: &str = include_str!("../../wit/handler.wit");

/// Contract 0.2.0, what the Rust SDK builds against.
pub const WIT_0_2: &str = include_str!("../../wit/0.2.0/handler.wit");

/// The world a handler implements.
const WORLD: &str = "handler";

/// The WIT text of `contract`.
pub fn wit(contract: Contract) -> &'static str {
    match contract {
        Contract::V0_1 => WIT,
        Contract::V0_2 => WIT_0_2,
    }
}

/// The world of a handler that also exports the packed batch path (0.2.0).
const PACKED_WORLD: &str = "packed-handler";

fn resolve(contract: Contract) -> anyhow::Result<(Resolve, wit_parser::WorldId)> {
    resolve_world(contract, WORLD)
}

fn resolve_world(contract: Contract, name: &str) -> anyhow::Result<(Resolve, wit_parser::WorldId)> {
    let mut resolve = Resolve::default();
    let package = resolve
        .push_str("handler.wit", wit(contract))
        .context("parsing the built-in contract")?;
    let world = resolve.select_world(&[package], Some(name))?;
    Ok((resolve, world))
}

/// The files of the C bindings of `contract` (`handler.h`, `handler.c` and
/// `handler_component_type.o`, which carries the world into the module);
/// with `packed` (0.2.0 only), of the world that also exports the packed
/// batch path (`packed_handler.h`, …).
pub fn c_bindings(contract: Contract, packed: bool) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let (mut resolve, world) = match (contract, packed) {
        (_, false) => resolve(contract)?,
        (Contract::V0_2, true) => resolve_world(contract, PACKED_WORLD)?,
        (Contract::V0_1, true) => {
            anyhow::bail!("the packed batch path is part of contract 0.2.0, not 0.1.0")
        }
    };
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    Ok(files
        .iter()
        .map(|(name, bytes)| (name.to_owned(), bytes.to_vec()))
        .collect())
}

/// Writes the C bindings of `contract` into `dir` (created if missing);
/// returns the names.
pub fn write_c_bindings(
    dir: &Path,
    contract: Contract,
    packed: bool,
) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = Vec::new();
    for (name, bytes) in c_bindings(contract, packed)? {
        let path = dir.join(&name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        names.push(name);
    }
    Ok(names)
}

/// Makes a component of a core module. The handler world of `contract` is
/// embedded first unless the module already carries a world (C's
/// `handler_component_type.o` does); the result is validated.
pub fn componentize(core: &[u8], contract: Contract) -> anyhow::Result<Vec<u8>> {
    componentize_renamed(core, contract, &[])
}

/// [`componentize`], the module's exports renamed first: (old, new) pairs,
/// for languages that cannot name an export after an interface's function
/// (AssemblyScript: `handle` becomes `linecook:handler/guest@0.2.0#handle`).
pub fn componentize_renamed(
    core: &[u8],
    contract: Contract,
    renames: &[(String, String)],
) -> anyhow::Result<Vec<u8>> {
    if wasmparser::Parser::is_component(core) {
        bail!("this is already a component; `linecook plugins check` it as it is");
    }
    if !wasmparser::Parser::is_core_wasm(core) {
        bail!("this is not a WebAssembly module (no `\\0asm` version 1 header)");
    }
    let renamed;
    let core = if renames.is_empty() {
        core
    } else {
        renamed = rename_exports(core, renames)?;
        &renamed[..]
    };
    let mut module = core.to_vec();
    if !has_world(core)? {
        // A module that exports the packed batch path gets the world that
        // has it; otherwise wit-component refuses the export as unknown.
        let (resolve, world) = match contract {
            Contract::V0_2 if exports(core, PACKED_EXPORT)? => {
                resolve_world(contract, PACKED_WORLD)?
            }
            _ => resolve(contract)?,
        };
        embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)?;
    }
    let mut encoder = ComponentEncoder::default();
    encoder
        .validate(true)
        .module(&module)
        .context("reading the module's world")?;
    if imports_wasi_preview1(core)? {
        // Go's runtime (GOOS=wasip1) reads clocks and randomness through
        // preview 1; the reactor adapter maps that onto the WASI 0.2
        // interfaces the host links (and sandboxes).
        use wasi_preview1_component_adapter_provider as adapter;
        encoder.adapter(
            adapter::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            adapter::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?;
    }
    encoder
        .encode()
        .context("the module does not implement the linecook:handler world")
}

/// `core` with its exports renamed as `renames` says; every other section
/// is copied as it is. An old name the module does not export is an error.
fn rename_exports(core: &[u8], renames: &[(String, String)]) -> anyhow::Result<Vec<u8>> {
    let mut module = wasm_encoder::Module::new();
    let mut found = std::collections::BTreeSet::new();
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        let payload = payload.context("this is not a valid WebAssembly module")?;
        if let wasmparser::Payload::ExportSection(exports) = &payload {
            let mut section = wasm_encoder::ExportSection::new();
            for export in exports.clone() {
                let export = export?;
                let name = match renames.iter().find(|(old, _)| old == export.name) {
                    Some((old, new)) => {
                        found.insert(old.as_str());
                        new.as_str()
                    }
                    None => export.name,
                };
                let kind = match export.kind {
                    wasmparser::ExternalKind::Func | wasmparser::ExternalKind::FuncExact => {
                        wasm_encoder::ExportKind::Func
                    }
                    wasmparser::ExternalKind::Table => wasm_encoder::ExportKind::Table,
                    wasmparser::ExternalKind::Memory => wasm_encoder::ExportKind::Memory,
                    wasmparser::ExternalKind::Global => wasm_encoder::ExportKind::Global,
                    wasmparser::ExternalKind::Tag => wasm_encoder::ExportKind::Tag,
                };
                section.export(name, kind, export.index);
            }
            module.section(&section);
        } else if let Some((id, range)) = payload.as_section() {
            module.section(&wasm_encoder::RawSection {
                id,
                data: &core[range.start as usize..range.end as usize],
            });
        }
    }
    if let Some((old, _)) = renames
        .iter()
        .find(|(old, _)| !found.contains(old.as_str()))
    {
        bail!("--export {old}=…: the module exports no `{old}`");
    }
    Ok(module.finish())
}

/// The core export of the packed batch path, as the canonical ABI names it.
const PACKED_EXPORT: &str = "linecook:handler/packed@0.2.0#handle-packed";

/// Whether the module exports a function named `name`.
fn exports(core: &[u8], name: &str) -> anyhow::Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::ExportSection(section) =
            payload.context("this is not a valid WebAssembly module")?
        {
            for export in section {
                if export?.name == name {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Whether the module imports anything from WASI preview 1.
fn imports_wasi_preview1(core: &[u8]) -> anyhow::Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::ImportSection(imports) =
            payload.context("this is not a valid WebAssembly module")?
        {
            for import in imports.into_imports() {
                if import?.module == adapter_name() {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn adapter_name() -> &'static str {
    wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME
}

/// Whether the module has a `component-type` custom section (a world).
fn has_world(core: &[u8]) -> anyhow::Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::CustomSection(section) =
            payload.context("this is not a valid WebAssembly module")?
            && section.name().starts_with("component-type")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_exports_keep_the_module_valid_and_an_unknown_name_is_refused() {
        let mut module = wasm_encoder::Module::new();
        let mut types = wasm_encoder::TypeSection::new();
        types.ty().function([], [wasm_encoder::ValType::I32]);
        module.section(&types);
        let mut functions = wasm_encoder::FunctionSection::new();
        functions.function(0);
        module.section(&functions);
        let mut exports = wasm_encoder::ExportSection::new();
        exports.export("handle", wasm_encoder::ExportKind::Func, 0);
        exports.export("keep", wasm_encoder::ExportKind::Func, 0);
        module.section(&exports);
        let mut code = wasm_encoder::CodeSection::new();
        let mut body = wasm_encoder::Function::new([]);
        body.instructions().i32_const(7).end();
        code.function(&body);
        module.section(&code);
        let core = module.finish();

        let new_name = "linecook:handler/guest@0.2.0#handle";
        let renamed = rename_exports(&core, &[("handle".to_owned(), new_name.to_owned())]).unwrap();
        wasmparser::validate(&renamed).unwrap();
        let mut names = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(&renamed) {
            if let wasmparser::Payload::ExportSection(exports) = payload.unwrap() {
                names.extend(exports.into_iter().map(|e| e.unwrap().name.to_owned()));
            }
        }
        assert_eq!(names, [new_name, "keep"]);
        let err = rename_exports(&core, &[("init".to_owned(), "x".to_owned())]).unwrap_err();
        assert!(err.to_string().contains("exports no `init`"), "{err}");
    }

    #[test]
    fn c_bindings_are_the_handler_world() {
        let files = c_bindings(Contract::V0_1, false).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"handler.h"), "{names:?}");
        assert!(names.contains(&"handler.c"), "{names:?}");
        assert!(names.contains(&"handler_component_type.o"), "{names:?}");
        let header = &files.iter().find(|(n, _)| n == "handler.h").unwrap().1;
        let header = String::from_utf8_lossy(header);
        assert!(header.contains("exports_handler_handle"), "{header}");

        let files = c_bindings(Contract::V0_2, false).unwrap();
        let header = &files.iter().find(|(n, _)| n == "handler.h").unwrap().1;
        let header = String::from_utf8_lossy(header);
        for function in [
            "exports_linecook_handler_guest_on_timers",
            "linecook_handler_timers_set",
            "linecook_handler_state_set_with_ttl",
        ] {
            assert!(header.contains(function), "{function}");
        }
        assert!(!header.contains("handle_packed"));

        let files = c_bindings(Contract::V0_2, true).unwrap();
        let header = &files
            .iter()
            .find(|(n, _)| n == "packed_handler.h")
            .unwrap()
            .1;
        let header = String::from_utf8_lossy(header);
        for function in [
            "exports_linecook_handler_packed_handle_packed",
            "exports_linecook_handler_guest_handle",
        ] {
            assert!(header.contains(function), "{function}");
        }
        let error = c_bindings(Contract::V0_1, true).unwrap_err().to_string();
        assert!(error.contains("0.2.0"), "{error}");
    }

    #[test]
    fn the_0_2_0_design_is_valid_wit_with_the_worlds_it_describes() {
        let mut resolve = Resolve::default();
        let package = resolve
            .push_str(
                "0.2.0/handler.wit",
                include_str!("../../wit/0.2.0/handler.wit"),
            )
            .unwrap();
        assert_eq!(
            resolve.packages[package].name.to_string(),
            "linecook:handler@0.2.0"
        );
        let guest = resolve.packages[package].interfaces["guest"];
        let functions: Vec<&str> = resolve.interfaces[guest]
            .functions
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(functions, ["init", "handle", "on-timers"]);
        for (name, exports) in [("handler", 1), ("packed-handler", 2)] {
            let world = resolve.select_world(&[package], Some(name)).unwrap();
            assert_eq!(resolve.worlds[world].exports.len(), exports, "{name}");
            assert_eq!(resolve.worlds[world].imports.len(), 5, "{name}: types + 4");
        }
    }

    #[test]
    fn a_module_without_the_exports_is_refused_by_name() {
        // The smallest valid core module: a header and nothing else.
        let empty = b"\0asm\x01\0\0\0";
        let err = format!("{:#}", componentize(empty, Contract::V0_1).unwrap_err());
        assert!(
            err.contains("does not implement the linecook:handler world"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            componentize(b"not wasm", Contract::V0_1).unwrap_err()
        );
        assert!(err.contains("not a WebAssembly module"), "{err}");
    }
}
