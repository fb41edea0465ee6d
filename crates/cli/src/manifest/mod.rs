//! Manifests: a YAML file of setup steps and function specs, as `nanofaas fn apply -f` and
//! `nanofaas up` read it (format in docs/cli.md).
//!
//! ```yaml
//! setup:                       # optional; run in order, in the manifest's folder, with `sh -c`
//!   - name: Python runtime environment
//!     run: ../scripts/python-env.sh ../.nanofaas/python
//! functions:
//!   - name: hello-python
//!     command: ${MANIFEST_DIR}/../.nanofaas/python/bin/python -m nanofaas_runtime
//!     workingDir: python-hello # relative to the manifest's folder
//!     env: { HANDLER_MODULE: handler }
//! example:                     # optional; what `nanofaas up` shows as a ready-to-paste invoke
//!   function: hello-python
//!   input: { name: world }
//! ```
//!
//! Layout (nothing here runs a step or talks to a server: `setup.rs` runs steps, `functions.rs`
//! applies):
//! - `yaml`: text to a tree of nodes with their positions; the YAML library, its settings and
//!   the limits on hostile input (size, nesting, aliases, one document).
//! - `sections`: the tree to setup steps, function specs and the example, with validation.
//! - `expand`: `${VAR}` expansion.
//! - `problem`: [`Problem`] and the document paths that locate it.
//!
//! Rules:
//! - String values may use `${NAME}` and `${NAME:-default}` (the default applies when the variable
//!   is unset or empty): environment variables of the CLI, plus `${MANIFEST_DIR}`, the absolute
//!   folder of the manifest. `$$` is a literal `$`; a `$` followed by anything else is kept as is.
//!   An unset variable without a default is an error naming the function and the field.
//! - `workingDir` is resolved against the manifest's folder and sent absolute; a function with a
//!   `command` and no `workingDir` runs in the manifest's folder. `command` is sent as written.
//! - `env` values may be written as numbers or booleans; they are sent as strings.
//! - Unknown fields are rejected, at the top level, in steps and in function specs; top-level
//!   keys starting with `x-` are ignored (a place for YAML anchors that functions share).
//! - YAML: one document of at most 1 MiB, nesting at most 32 deep, at most 50,000 values with
//!   aliases expanded; duplicate keys are refused; merge keys (`<<: *anchor`) apply; scalars
//!   follow YAML 1.2 (`yes`, `0755`, `1_000` are strings); tags (`!name`) are refused.

mod expand;
mod problem;
mod sections;
#[cfg(test)]
mod tests;
mod yaml;

pub use expand::expand;
pub use problem::Problem;

use problem::Seg;
use sections::Ctx;
use serde_json::Value as Json;
use std::io::Read;
use std::path::{Path, PathBuf};

use nanofaas_api::FunctionSpec;

/// A loaded, expanded and validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The manifest file, absolute.
    pub path: PathBuf,
    /// The folder holding the manifest, absolute: setup steps run there, relative paths start there.
    pub dir: PathBuf,
    pub setup: Vec<SetupStep>,
    pub functions: Vec<FunctionSpec>,
    /// The invocation `nanofaas up` suggests once the functions are deployed.
    pub example: Option<Example>,
}

/// One setup step: a shell command run with `sh -c` in the manifest's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupStep {
    pub name: String,
    pub run: String,
}

/// A sample invocation of one of the manifest's functions.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub function: String,
    pub input: Json,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Problem),
}

impl ManifestError {
    /// The content problem, if this is one (not a read error).
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ManifestError::Invalid(p) => Some(p),
            ManifestError::Read { .. } => None,
        }
    }
}

/// Loads `path` with the process environment for `${VAR}` expansion.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// Loads `path`, looking variables up with `env` (tests pass a fixed map).
pub fn load_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_bounded(path).map_err(read_err)?;
    let abs = std::path::absolute(path).map_err(read_err)?;
    if bytes.len() > yaml::MAX_BYTES {
        return Err(ManifestError::Invalid(Problem {
            file: abs,
            line: None,
            function: None,
            field: None,
            reason: yaml::too_big(),
        }));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    // The folder is canonical (symlinks resolved) so that `..` in relative paths means what the
    // file system says it means.
    let parent = abs.parent().unwrap_or(Path::new("/"));
    let dir = std::fs::canonicalize(parent).map_err(read_err)?;
    parse(&text, &abs, &dir, env)
}

/// Reads at most one byte more than a manifest may hold: a larger file (or an endless one, like
/// a device) is refused by the parser without being read whole.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(yaml::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Parses manifest `text`; `file` names it in messages, `dir` is its absolute folder.
pub fn parse(
    text: &str,
    file: &Path,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    let root = yaml::parse(text).map_err(|e| {
        let mut reason = e.reason;
        let line_text = e.line.and_then(|l| text.lines().nth(l.saturating_sub(1)));
        if reason.contains("flow") && line_text.is_some_and(|t| t.contains("${")) {
            reason.push_str("; inside { } or [ ], quote values that use ${...}: \"${NAME}\"");
        }
        ManifestError::Invalid(Problem {
            file: file.to_path_buf(),
            line: e.line,
            function: None,
            field: None,
            reason,
        })
    })?;
    let ctx = Ctx {
        root: &root,
        file,
        dir,
        env,
    };
    let top = match (&root.value, &root.tag) {
        (yaml::Value::Mapping(m), None) => m,
        (yaml::Value::Null, None) => {
            return Err(ctx.problem(&[], None, "the manifest is empty; it needs `functions:`"))
        }
        _ => {
            return Err(ctx.problem(
                &[],
                None,
                "the manifest must be a mapping with `functions:` (and optionally `setup:` and `example:`)",
            ))
        }
    };
    let mut setup = Vec::new();
    let mut functions = Vec::new();
    let mut example = None;
    let mut saw_functions = false;
    for (k, v) in top {
        let key = ctx.key(k, &[], None)?;
        match key {
            "setup" => setup = ctx.setup(v)?,
            "functions" => {
                saw_functions = true;
                functions = ctx.functions(v)?;
            }
            "example" => example = Some(ctx.example(v)?),
            // Extension fields, as in Compose files: a place for anchors shared by functions.
            other if other.starts_with("x-") => {}
            other => {
                return Err(ctx.problem(
                    &[Seg::key(other)],
                    None,
                    format!(
                        "unknown field `{other}`, expected one of `setup`, `functions`, `example`"
                    ),
                ))
            }
        }
    }
    if !saw_functions {
        return Err(ctx.problem(&[], None, "missing `functions:` (a list of function specs)"));
    }
    if let Some(ex) = &example {
        if !functions.iter().any(|f| f.name == ex.function) {
            return Err(ctx.problem(
                &[Seg::key("example"), Seg::key("function")],
                None,
                format!(
                    "names {:?}, which is not a function of this manifest",
                    ex.function
                ),
            ));
        }
    }
    Ok(Manifest {
        path: file.to_path_buf(),
        dir: dir.to_path_buf(),
        setup,
        functions,
        example,
    })
}
