//! Compiling `.nvm` files from a build script.
//!
//! ```no_run
//! // in build.rs's `main`:
//! nanovm_dsl::build::Builder::new()
//!     .graphs(true)
//!     .compile("workflows")
//!     .expect("workflows compile");
//! ```
//!
//! and in the crate: `nanovm::include_compiled!("refund");` for `workflows/refund.nvm`.
//!
//! Each `.nvm` file becomes `$OUT_DIR/nanovm/<stem>.rs` holding one module per program, with a
//! header naming the semantics version ([`crate::canonical::SEMANTICS_VERSION`]) and the source's blake3 hash. Diagnostics are rendered with
//! file, line, column and snippet and printed through Cargo (`cargo::error=` / `cargo::warning=`),
//! so they show up in `cargo build` output; every input gets a `cargo::rerun-if-changed`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::codegen::Options;

/// Configures and runs the compilation of `.nvm` files.
#[derive(Clone, Debug)]
pub struct Builder {
    options: Options,
    out_dir: Option<PathBuf>,
    graphs: bool,
    cargo: bool,
    deny_warnings: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

/// What a successful build wrote.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// The generated Rust files, one per input.
    pub files: Vec<PathBuf>,
    /// Names of the programs compiled.
    pub programs: Vec<String>,
    /// Number of warnings reported.
    pub warnings: usize,
}

/// A failed build: the rendered diagnostics (already printed through Cargo).
#[derive(Clone)]
pub struct Error {
    /// The rendered diagnostics of every failing file.
    pub rendered: String,
    /// Number of errors.
    pub errors: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

// `main() -> Result<..>` and `.expect()` print the Debug form; make it the readable text.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{}", self.rendered)
    }
}

impl std::error::Error for Error {}

impl Builder {
    /// Defaults: generated code uses `::nanovm`, output goes to `$OUT_DIR/nanovm`, no pictures,
    /// Cargo directives printed.
    pub fn new() -> Self {
        Builder {
            options: Options::default(),
            out_dir: None,
            graphs: false,
            cargo: true,
            deny_warnings: false,
        }
    }

    /// The path generated code uses for the runtime (default `::nanovm`; use
    /// `::nanovm_runtime` when depending on the runtime crate directly).
    pub fn runtime_path(mut self, path: impl Into<String>) -> Self {
        self.options.runtime_path = path.into();
        self
    }

    /// Where to write (default `$OUT_DIR/nanovm`).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Also write `<program>.mmd` (Mermaid) and `<program>.dot` (Graphviz) next to the output.
    pub fn graphs(mut self, yes: bool) -> Self {
        self.graphs = yes;
        self
    }

    /// Whether to print `cargo::` directives (on by default; off for use outside build scripts).
    pub fn cargo_directives(mut self, yes: bool) -> Self {
        self.cargo = yes;
        self
    }

    /// Treat warnings as errors (off by default), like `nanovm check --deny-warnings`: a file
    /// with any warning (a guard that decides nothing, `W0405`, for example) fails the build,
    /// its diagnostics are printed as `cargo::error=` and no code is written for it.
    pub fn deny_warnings(mut self, yes: bool) -> Self {
        self.deny_warnings = yes;
        self
    }

    /// Compiles a `.nvm` file, or every `.nvm` file under a directory (sorted, recursively).
    /// All files are checked before any error is returned, so one run reports everything.
    pub fn compile(&self, path: impl AsRef<Path>) -> Result<Output, Error> {
        let path = path.as_ref();
        let mut inputs = Vec::new();
        if path.is_dir() {
            collect(path, &mut inputs).map_err(|e| io_error(path, &e))?;
            inputs.sort();
            if self.cargo {
                println!("cargo::rerun-if-changed={}", path.display());
            }
        } else {
            inputs.push(path.to_path_buf());
        }
        self.compile_files(&inputs)
    }

    /// Compiles the given files.
    pub fn compile_files(&self, inputs: &[PathBuf]) -> Result<Output, Error> {
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => match std::env::var_os("OUT_DIR") {
                Some(d) => PathBuf::from(d).join("nanovm"),
                None => {
                    return Err(Error {
                        rendered: "error: OUT_DIR is not set; call the builder from a build script or set `out_dir`\n".into(),
                        errors: 1,
                    });
                }
            },
        };
        std::fs::create_dir_all(&out_dir).map_err(|e| io_error(&out_dir, &e))?;
        let mut output = Output::default();
        let mut failed = String::new();
        let mut errors = 0;
        for input in inputs {
            if self.cargo {
                println!("cargo::rerun-if-changed={}", input.display());
            }
            let bytes = std::fs::read(input).map_err(|e| io_error(input, &e))?;
            let name = display_path(input);
            let compiled = crate::compile_bytes(&name, &bytes);
            let rendered = compiled.render();
            let n_errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
            let n_warnings = compiled.diagnostics.len() - n_errors;
            output.warnings += n_warnings;
            // Denied warnings count as one error per file, with the reason after them.
            let denied = usize::from(self.deny_warnings && n_errors == 0 && n_warnings > 0);
            let mut rendered = rendered;
            if denied > 0 {
                rendered.push_str("error: warnings are denied (Builder::deny_warnings)\n");
            }
            if self.cargo && !rendered.is_empty() {
                let directive = if n_errors + denied > 0 {
                    "error"
                } else {
                    "warning"
                };
                for line in rendered.lines().filter(|l| !l.is_empty()) {
                    println!("cargo::{directive}={line}");
                }
            }
            if n_errors + denied > 0 {
                errors += n_errors + denied;
                failed.push_str(&rendered);
                continue;
            }
            let stem = input
                .file_stem()
                .map_or_else(|| "programs".into(), |s| s.to_string_lossy().into_owned());
            let header = format!(
                "// @generated by nanovm-dsl (semantics {}) from {name} (blake3 {}). Do not edit.\n\n",
                crate::canonical::SEMANTICS_VERSION,
                blake3::hash(&bytes).to_hex()
            );
            let code = crate::codegen::generate_file(&compiled.programs, &self.options, &header);
            let file = out_dir.join(format!("{stem}.rs"));
            write_if_changed(&file, code.as_bytes())?;
            output.files.push(file);
            for p in &compiled.programs {
                if self.graphs {
                    write_if_changed(
                        &out_dir.join(format!("{}.mmd", p.name)),
                        crate::graph::mermaid(p).as_bytes(),
                    )?;
                    write_if_changed(
                        &out_dir.join(format!("{}.dot", p.name)),
                        crate::graph::dot(p).as_bytes(),
                    )?;
                }
                output.programs.push(p.name.clone());
            }
        }
        if errors > 0 {
            return Err(Error {
                rendered: failed,
                errors,
            });
        }
        Ok(output)
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "nvm") {
            out.push(path);
        }
    }
    Ok(())
}

/// Paths are shown relative to the crate being built when possible, so they are clickable.
fn display_path(p: &Path) -> String {
    if let Some(root) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Ok(rel) = p.strip_prefix(&root)
    {
        return rel.display().to_string();
    }
    p.display().to_string()
}

/// Unchanged output keeps its timestamp, so Cargo does not rebuild dependents needlessly.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| io_error(path, &e))
}

fn io_error(path: &Path, e: &std::io::Error) -> Error {
    Error {
        rendered: format!("error: {}: {e}\n", path.display()),
        errors: 1,
    }
}
