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
//! This module owns parsing, `${VAR}` expansion, path resolution and validation, and turning
//! every problem into a message naming the file, the line, the function and the field. It runs
//! nothing and talks to no server.
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

use nanofaas_api::FunctionSpec;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

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

/// A problem in a manifest's content, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line of the offending value (or of the nearest enclosing one that exists).
    pub line: Option<usize>,
    /// The function concerned, when the problem is inside one.
    pub function: Option<String>,
    /// Path of the field: `timeoutMs`, `env.PORT` inside a function; `setup[0].run` outside.
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        f.write_str(": ")?;
        if let Some(func) = &self.function {
            write!(f, "function {func:?}, ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field {field:?}: ")?;
        }
        f.write_str(&self.reason)
    }
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
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let abs = std::path::absolute(path).map_err(read_err)?;
    // The folder is canonical (symlinks resolved) so that `..` in relative paths means what the
    // file system says it means.
    let parent = abs.parent().unwrap_or(Path::new("/"));
    let dir = std::fs::canonicalize(parent).map_err(read_err)?;
    parse(&text, &abs, &dir, env)
}

/// Parses manifest `text`; `file` names it in messages, `dir` is its absolute folder.
pub fn parse(
    text: &str,
    file: &Path,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    let ctx = Ctx {
        text,
        file,
        dir,
        env,
    };
    let mut doc: Yaml = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let mut reason = strip_position(&e.to_string());
        let line_text = line.and_then(|l| text.lines().nth(l.saturating_sub(1)));
        if reason.contains("flow") && line_text.is_some_and(|t| t.contains("${")) {
            reason.push_str("; inside { } or [ ], quote values that use ${...}: \"${NAME}\"");
        }
        ManifestError::Invalid(Problem {
            file: file.to_path_buf(),
            line,
            function: None,
            field: None,
            reason,
        })
    })?;
    doc.apply_merge()
        .map_err(|e| ctx.problem(&[], None, strip_position(&e.to_string())))?;
    let top = match doc {
        Yaml::Mapping(m) => m,
        Yaml::Null => {
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
        let key = match k {
            Yaml::String(s) => s,
            other => {
                return Err(ctx.problem(
                    &[],
                    None,
                    format!("keys must be strings, found {}", kind(&other)),
                ))
            }
        };
        match key.as_str() {
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

/// One step of a path inside the YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

fn path_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Parses a field path as serde_path_to_error writes it (`a.b[2].c`).
fn parse_field_path(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::key(name));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            if let Ok(i) = r[..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &r[end + 1..];
        }
    }
    out
}

struct Ctx<'a> {
    text: &'a str,
    file: &'a Path,
    dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    /// A problem at `path` (document path), for `function` (whose fields start after
    /// `functions[i]` in `path`).
    fn problem(
        &self,
        path: &[Seg],
        function: Option<(&str, usize)>,
        reason: impl Into<String>,
    ) -> ManifestError {
        let field = match function {
            // Inside a function the field is named relative to it: `timeoutMs`, not
            // `functions[0].timeoutMs`.
            Some((_, depth)) => Some(path_text(&path[depth.min(path.len())..])),
            None => Some(path_text(path)),
        }
        .filter(|f| !f.is_empty());
        ManifestError::Invalid(Problem {
            file: self.file.to_path_buf(),
            line: locate(self.text, path),
            function: function.map(|(f, _)| f.to_string()),
            field,
            reason: reason.into(),
        })
    }

    fn setup(&self, v: Yaml) -> Result<Vec<SetupStep>, ManifestError> {
        let base = [Seg::key("setup")];
        let items = match v {
            Yaml::Null => return Ok(Vec::new()),
            Yaml::Sequence(s) => s,
            other => {
                return Err(self.problem(
                    &base,
                    None,
                    format!(
                        "must be a list of steps ({{name, run}}), found {}",
                        kind(&other)
                    ),
                ))
            }
        };
        let mut steps = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = [Seg::key("setup"), Seg::Index(i)];
            let Yaml::Mapping(m) = item else {
                return Err(self.problem(
                    &at,
                    None,
                    format!(
                        "a step must be a mapping with `name` and `run`, found {}",
                        kind(&item)
                    ),
                ));
            };
            let (mut name, mut run) = (None, None);
            for (k, v) in m {
                let key = self.key(k, &at, None)?;
                let mut p = at.to_vec();
                p.push(Seg::key(&key));
                let text = match v {
                    Yaml::String(s) => self.expand(&s, &p, None)?,
                    other => {
                        return Err(self.problem(
                            &p,
                            None,
                            format!("must be a string, found {}", kind(&other)),
                        ))
                    }
                };
                match key.as_str() {
                    "name" => name = Some(text),
                    "run" => run = Some(text),
                    other => {
                        return Err(self.problem(
                            &p,
                            None,
                            format!("unknown field `{other}`, expected `name` or `run`"),
                        ))
                    }
                }
            }
            let Some(run) = run.filter(|r| !r.trim().is_empty()) else {
                let mut p = at.to_vec();
                p.push(Seg::key("run"));
                return Err(self.problem(&p, None, "is required: the shell command of the step"));
            };
            steps.push(SetupStep {
                name: name.unwrap_or_else(|| run.clone()),
                run,
            });
        }
        Ok(steps)
    }

    fn example(&self, v: Yaml) -> Result<Example, ManifestError> {
        let at = [Seg::key("example")];
        let Yaml::Mapping(m) = v else {
            return Err(self.problem(
                &at,
                None,
                format!(
                    "must be a mapping with `function` and `input`, found {}",
                    kind(&v)
                ),
            ));
        };
        let (mut function, mut input) = (None, Json::Null);
        for (k, v) in m {
            let key = self.key(k, &at, None)?;
            let p = [Seg::key("example"), Seg::key(&key)];
            match key.as_str() {
                "function" => match v {
                    Yaml::String(s) => function = Some(self.expand(&s, &p, None)?),
                    other => {
                        return Err(self.problem(
                            &p,
                            None,
                            format!("must be a function name, found {}", kind(&other)),
                        ))
                    }
                },
                "input" => input = self.json(v, &p, None, false)?,
                other => {
                    return Err(self.problem(
                        &p,
                        None,
                        format!("unknown field `{other}`, expected `function` or `input`"),
                    ))
                }
            }
        }
        let Some(function) = function else {
            return Err(self.problem(&at, None, "`function` is required"));
        };
        Ok(Example { function, input })
    }

    fn functions(&self, v: Yaml) -> Result<Vec<FunctionSpec>, ManifestError> {
        let base = [Seg::key("functions")];
        let items = match v {
            Yaml::Null => return Ok(Vec::new()),
            Yaml::Sequence(s) => s,
            other => {
                return Err(self.problem(
                    &base,
                    None,
                    format!("must be a list of function specs, found {}", kind(&other)),
                ))
            }
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = vec![Seg::key("functions"), Seg::Index(i)];
            let Yaml::Mapping(m) = item else {
                return Err(self.problem(
                    &at,
                    None,
                    format!(
                        "a function must be a mapping (a FunctionSpec), found {}",
                        kind(&item)
                    ),
                ));
            };
            // The name first, so that every later message can name the function.
            let name = match m.get("name") {
                Some(Yaml::String(s)) => s.clone(),
                _ => format!("functions[{i}]"),
            };
            let who = Some((name.as_str(), at.len()));
            let mut obj = serde_json::Map::new();
            for (k, v) in m {
                let key = self.key(k, &at, who)?;
                let mut p = at.clone();
                p.push(Seg::key(&key));
                let value = self.json(v, &p, who, key == "env")?;
                obj.insert(key, value);
            }
            if let Some(Json::String(wd)) = obj.get("workingDir") {
                let resolved = normalize(&self.dir.join(wd));
                obj.insert(
                    "workingDir".into(),
                    Json::String(resolved.to_string_lossy().into_owned()),
                );
            } else if obj.contains_key("command") && !obj.contains_key("workingDir") {
                obj.insert(
                    "workingDir".into(),
                    Json::String(self.dir.to_string_lossy().into_owned()),
                );
            }
            let body = serde_json::to_vec(&Json::Object(obj))
                .map_err(|e| self.problem(&at, who, format!("cannot encode the spec: {e}")))?;
            let spec = FunctionSpec::from_json(&body).map_err(|e| {
                let mut p = at.clone();
                p.extend(parse_field_path(&e.field));
                // serde names a missing field in its message only: name it as the field.
                let missing = e
                    .reason
                    .strip_prefix("missing field `")
                    .and_then(|r| r.split('`').next());
                if let (true, Some(m)) = (e.field.is_empty(), missing) {
                    p.push(Seg::key(m));
                }
                self.problem(&p, who, e.reason)
            })?;
            if !seen.insert(spec.name.clone()) {
                let mut p = at.clone();
                p.push(Seg::key("name"));
                return Err(self.problem(
                    &p,
                    who,
                    "is used by an earlier function of this manifest",
                ));
            }
            out.push(spec);
        }
        Ok(out)
    }

    fn key(
        &self,
        k: Yaml,
        at: &[Seg],
        who: Option<(&str, usize)>,
    ) -> Result<String, ManifestError> {
        match k {
            Yaml::String(s) => Ok(s),
            other => Err(self.problem(
                at,
                who,
                format!("keys must be strings, found {}", kind(&other)),
            )),
        }
    }

    /// Converts a YAML value to JSON, expanding `${VAR}` in strings. `stringify` turns scalar
    /// values of a mapping into strings (for `env`).
    fn json(
        &self,
        v: Yaml,
        path: &[Seg],
        who: Option<(&str, usize)>,
        stringify: bool,
    ) -> Result<Json, ManifestError> {
        Ok(match v {
            Yaml::Null => Json::Null,
            Yaml::Bool(b) => Json::Bool(b),
            Yaml::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Json::from(u)
                } else if let Some(i) = n.as_i64() {
                    Json::from(i)
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    serde_json::Number::from_f64(f)
                        .map(Json::Number)
                        .ok_or_else(|| {
                            self.problem(path, who, format!("{n} is not a finite number"))
                        })?
                }
            }
            Yaml::String(s) => Json::String(self.expand(&s, path, who)?),
            Yaml::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let mut p = path.to_vec();
                    p.push(Seg::Index(i));
                    out.push(self.json(item, &p, who, false)?);
                }
                Json::Array(out)
            }
            Yaml::Mapping(m) => {
                let mut out = serde_json::Map::new();
                for (k, v) in m {
                    let key = self.key(k, path, who)?;
                    let mut p = path.to_vec();
                    p.push(Seg::key(&key));
                    let value = match (stringify, v) {
                        (true, Yaml::Bool(b)) => Json::String(b.to_string()),
                        (true, Yaml::Number(n)) => Json::String(n.to_string()),
                        (_, v) => self.json(v, &p, who, false)?,
                    };
                    out.insert(key, value);
                }
                Json::Object(out)
            }
            Yaml::Tagged(t) => {
                return Err(self.problem(
                    path,
                    who,
                    format!("YAML tags ({}) are not supported", t.tag),
                ))
            }
        })
    }

    fn expand(
        &self,
        s: &str,
        path: &[Seg],
        who: Option<(&str, usize)>,
    ) -> Result<String, ManifestError> {
        let dir = self.dir.to_string_lossy();
        expand(s, &|name| {
            if name == "MANIFEST_DIR" {
                Some(dir.to_string())
            } else {
                (self.env)(name)
            }
        })
        .map_err(|reason| self.problem(path, who, reason))
    }
}

/// Expands `${NAME}`, `${NAME:-default}` and `$$` in `s`.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let Some(end) = r.find('}') else {
                return Err(format!(
                    "unclosed `${{` in {s:?} (write `$$` for a literal `$`)"
                ));
            };
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err(format!(
                    "`${{{inner}}}` is not a variable reference (`${{NAME}}` or `${{NAME:-default}}`; `$$` is a literal `$`)"
                ));
            }
            match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (set it, or write `${{{name}:-default}}`)"
                    ))
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a/./b/../c` → `a/c`, without touching the file system (the folder may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "nothing (null)",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// Removes serde_yaml's " at line N column M" (the line is reported separately).
fn strip_position(msg: &str) -> String {
    let Some(i) = msg.find(" at line ") else {
        return msg.to_string();
    };
    let rest = &msg[i + " at line ".len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = match rest.strip_prefix(" column ") {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    format!("{}{}", &msg[..i], rest)
}

/// The 1-based line of the node at `path` in `text`, or of its nearest ancestor that exists.
///
/// serde_yaml keeps no positions in its `Value`, but it attaches the position of the node being
/// read to any error raised while reading it: walking the document with a visitor that fails on
/// purpose at the wanted node makes serde_yaml tell where that node is.
fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    for len in (0..=path.len()).rev() {
        let seed = Find { path: &path[..len] };
        if let Err(e) = seed.deserialize(serde_yaml::Deserializer::from_str(text)) {
            if e.to_string().contains(FOUND) {
                return e.location().map(|l| l.line());
            }
        }
    }
    None
}

const FOUND: &str = "nanofaas-manifest-locate-found";

struct Find<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            d.deserialize_any(Found)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<Key>()? {
            match (&self.path[0], k) {
                (Seg::Key(want), Key(Some(k))) if *want == k => {
                    map.next_value_seed(Find {
                        path: &self.path[1..],
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let found = if self.path[0] == Seg::Index(i) {
                seq.next_element_seed(Find {
                    path: &self.path[1..],
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if found.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Ok(())
    }
}

/// A mapping key: its text when it is a string.
struct Key(Option<String>);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(Key(Some(s.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_unit<E>(self) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Key, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Key(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Key, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Key(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Fails on purpose at the node being looked for.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_some<D: de::Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanofaas_api::ExecutionMode;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn parse_text(text: &str, env: &[(&str, &str)]) -> Result<Manifest, ManifestError> {
        parse(
            text,
            Path::new("/srv/app/manifest.yaml"),
            Path::new("/srv/app"),
            &env_of(env),
        )
    }

    fn problem(text: &str, env: &[(&str, &str)]) -> Problem {
        match parse_text(text, env) {
            Err(ManifestError::Invalid(p)) => p,
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    const GOOD: &str = "\
setup:
  - name: prepare
    run: ./prepare.sh ${HOME}
  - run: echo $$PATH and $HOME
functions:
  - name: hello
    command: ${MANIFEST_DIR}/../venv/bin/python -m nanofaas_runtime
    workingDir: hello
    env:
      HANDLER_MODULE: handler
      WORKERS: 2
      DEBUG: true
    timeoutMs: 5000
  - name: pooled
    executionMode: POOL
    endpointUrl: http://127.0.0.1:${POOL_PORT:-9000}/invoke
  - name: here
    command: [./run.sh, 'a b']
example:
  function: hello
  input: { name: world }
";

    #[test]
    fn loads_expands_and_resolves() {
        let m = parse_text(GOOD, &[("HOME", "/root")]).unwrap();
        assert_eq!(m.dir, Path::new("/srv/app"));
        assert_eq!(
            m.setup,
            [
                SetupStep {
                    name: "prepare".into(),
                    run: "./prepare.sh /root".into()
                },
                SetupStep {
                    name: "echo $PATH and $HOME".into(),
                    run: "echo $PATH and $HOME".into()
                },
            ]
        );
        let hello = &m.functions[0];
        assert_eq!(
            hello.command.as_deref().unwrap(),
            ["/srv/app/../venv/bin/python", "-m", "nanofaas_runtime"]
        );
        assert_eq!(hello.working_dir.as_deref(), Some("/srv/app/hello"));
        assert_eq!(hello.env["WORKERS"], "2");
        assert_eq!(hello.env["DEBUG"], "true");
        assert_eq!(hello.timeout_ms, 5000);
        let pooled = &m.functions[1];
        assert_eq!(pooled.execution_mode, ExecutionMode::Pool);
        assert_eq!(
            pooled.endpoint_url.as_deref(),
            Some("http://127.0.0.1:9000/invoke")
        );
        assert_eq!(pooled.working_dir, None, "no command: no working folder");
        let here = &m.functions[2];
        assert_eq!(here.command.as_deref().unwrap(), ["./run.sh", "a b"]);
        assert_eq!(
            here.working_dir.as_deref(),
            Some("/srv/app"),
            "default: the manifest's folder"
        );
        assert_eq!(
            m.example,
            Some(Example {
                function: "hello".into(),
                input: serde_json::json!({"name": "world"})
            })
        );
        // A set variable wins over the default.
        let m = parse_text(GOOD, &[("HOME", "/root"), ("POOL_PORT", "7")]).unwrap();
        assert_eq!(
            m.functions[1].endpoint_url.as_deref(),
            Some("http://127.0.0.1:7/invoke")
        );
    }

    #[test]
    fn expansion_rules() {
        let env = env_of(&[("A", "1"), ("EMPTY", "")]);
        let x = |s: &str| expand(s, &env);
        assert_eq!(x("${A}-${A}").unwrap(), "1-1");
        assert_eq!(x("${B:-two}").unwrap(), "two");
        assert_eq!(x("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(x("${EMPTY}").unwrap(), "");
        assert_eq!(x("${B:-}").unwrap(), "");
        assert_eq!(x("$$A costs $5 $").unwrap(), "$A costs $5 $");
        assert_eq!(x("$${A}").unwrap(), "${A}");
        assert!(x("${B}").unwrap_err().contains("B is not set"));
        assert!(x("${A").unwrap_err().contains("unclosed"));
        assert!(x("${1A}").unwrap_err().contains("not a variable reference"));
        assert!(x("${}").is_err());
    }

    #[test]
    fn unset_variable_names_function_field_and_line() {
        let p = problem(GOOD, &[]);
        // The first use of an unset variable is in setup[0].run (HOME).
        assert_eq!(p.field.as_deref(), Some("setup[0].run"));
        assert_eq!(p.line, Some(3));
        assert!(p.reason.contains("HOME is not set"), "{p}");
        let text =
            "functions:\n  - name: f\n    command: x\n    env:\n      TOKEN: ${SECRET_TOKEN}\n";
        let p = problem(text, &[]);
        assert_eq!(p.function.as_deref(), Some("f"));
        assert_eq!(p.field.as_deref(), Some("env.TOKEN"));
        assert_eq!(p.line, Some(5));
        assert_eq!(
            p.to_string(),
            "/srv/app/manifest.yaml:5: function \"f\", field \"env.TOKEN\": environment variable SECRET_TOKEN is not set (set it, or write `${SECRET_TOKEN:-default}`)"
        );
    }

    #[test]
    fn bad_values_name_function_field_and_line() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "functions:\n  - name: f\n    command: x\n    timeoutMs: 0\n",
                "timeoutMs",
                4,
                "between 1 and",
            ),
            (
                "functions:\n  - name: f\n    command: x\n\n    timeoutMs: soon\n",
                "timeoutMs",
                5,
                "invalid type",
            ),
            (
                "functions:\n  - name: f\n    command: x\n    resources:\n      memory: lots\n",
                "resources.memory",
                5,
                "not a memory quantity",
            ),
            (
                "functions:\n  - name: f\n    command: x\n    executionMode: LAMBDA\n",
                "executionMode",
                4,
                "unknown variant",
            ),
            (
                "functions:\n  - name: f\n    command: \"'unclosed\"\n",
                "command",
                3,
                "unclosed",
            ),
            (
                "functions:\n  - name: ok\n    command: x\n  - name: f\n    command: x\n    env: {PORT: }\n",
                "env.PORT",
                6,
                "invalid type: null",
            ),
        ];
        for (text, field, line, reason) in cases {
            let p = problem(text, &[]);
            assert_eq!(p.function.as_deref(), Some("f"), "{text}");
            assert_eq!(p.field.as_deref(), Some(*field), "{text}: {p}");
            assert_eq!(p.line, Some(*line), "{text}: {p}");
            assert!(p.reason.contains(reason), "{text}: {p}");
            assert!(!p.reason.contains(" at line "), "{p}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let p = problem(
            "functions:\n  - name: f\n    command: x\n    timeout: 5\n",
            &[],
        );
        assert_eq!(
            (p.function.as_deref(), p.field.as_deref(), p.line),
            (Some("f"), Some("timeout"), Some(4))
        );
        assert!(p.reason.contains("unknown field `timeout`"), "{p}");
        let p = problem("functions: []\nfunctons: []\n", &[]);
        assert_eq!((p.field.as_deref(), p.line), (Some("functons"), Some(2)));
        assert!(p.reason.contains("unknown field `functons`"), "{p}");
        let p = problem("setup:\n  - run: x\n    when: always\nfunctions: []\n", &[]);
        assert_eq!(
            (p.field.as_deref(), p.line),
            (Some("setup[0].when"), Some(3))
        );
    }

    #[test]
    fn missing_things_point_at_the_function() {
        let p = problem(
            "functions:\n  - name: a\n    command: x\n  - name: b\n    timeoutMs: 5\n",
            &[],
        );
        assert_eq!(p.function.as_deref(), Some("b"));
        assert_eq!(p.field.as_deref(), Some("command"));
        assert_eq!(
            p.line,
            Some(4),
            "the field is absent: the function's own line"
        );
        let p = problem("functions:\n  - command: x\n", &[]);
        assert_eq!(p.function.as_deref(), Some("functions[0]"));
        assert_eq!(p.field.as_deref(), Some("name"));
        let p = problem("setup: []\n", &[]);
        assert!(p.reason.contains("missing `functions:`"), "{p}");
        let p = problem("", &[]);
        assert!(p.reason.contains("empty"), "{p}");
        let p = problem("setup:\n  - name: nothing to run\nfunctions: []\n", &[]);
        assert_eq!(p.field.as_deref(), Some("setup[0].run"));
        assert_eq!(p.line, Some(2));
    }

    #[test]
    fn duplicates_syntax_and_shapes() {
        let p = problem(
            "functions:\n  - name: a\n    command: x\n  - name: a\n    command: y\n",
            &[],
        );
        assert_eq!((p.field.as_deref(), p.line), (Some("name"), Some(4)));
        assert!(p.reason.contains("earlier function"), "{p}");
        let p = problem("functions:\n  - name: a\n   command: x\n", &[]);
        assert_eq!(p.line, Some(3), "{p}");
        assert_eq!(p.field, None);
        assert!(!p.reason.contains("line 3"), "{p}");
        let p = problem(
            "functions:\n  - name: a\n    env: { A: ${X:-1}, B: c }\n",
            &[],
        );
        assert_eq!(p.line, Some(3), "{p}");
        assert!(p.reason.contains("quote values"), "{p}");
        assert!(p.reason.contains("while parsing"), "{p}");
        let p = problem("functions: {name: a}\n", &[]);
        assert!(p.reason.contains("must be a list"), "{p}");
        let p = problem("- a\n", &[]);
        assert!(p.reason.contains("must be a mapping"), "{p}");
        let p = problem(
            "functions:\n  - name: a\n    command: x\nexample: {function: b}\n",
            &[],
        );
        assert_eq!(p.field.as_deref(), Some("example.function"));
        assert_eq!(p.line, Some(4));
        let p = problem("functions:\n  - !Spec {name: a}\n", &[]);
        assert!(p.reason.contains("must be a mapping"), "{p}");
        let p = problem("functions:\n  - name: a\n    command: !cmd x\n", &[]);
        assert!(p.reason.contains("tags (!cmd)"), "{p}");
        assert_eq!((p.field.as_deref(), p.line), (Some("command"), Some(3)));
    }

    #[test]
    fn merge_keys_share_defaults() {
        let text = "\
defaults: &d
  timeoutMs: 1234
functions:
  - <<: *d
    name: a
    command: x
";
        // `defaults` is not a known top-level key; `x-defaults` is an extension field.
        assert!(parse_text(text, &[]).is_err());
        let m = parse_text(&text.replace("defaults:", "x-defaults:"), &[]).unwrap();
        assert_eq!(m.functions[0].timeout_ms, 1234);
        let text = "\
functions:
  - &a
    name: a
    command: x
    timeoutMs: 1234
  - <<: *a
    name: b
";
        let m = parse_text(text, &[]).unwrap();
        assert_eq!(m.functions[1].name, "b");
        assert_eq!(m.functions[1].timeout_ms, 1234);
    }

    #[test]
    fn field_paths() {
        assert_eq!(
            parse_field_path("resources.memory"),
            [Seg::key("resources"), Seg::key("memory")]
        );
        assert_eq!(
            parse_field_path("command[2]"),
            [Seg::key("command"), Seg::Index(2)]
        );
        assert_eq!(parse_field_path(""), []);
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }

    #[test]
    fn load_resolves_against_the_real_folder() {
        let dir = std::env::temp_dir().join(format!("nanofaas-manifest-{}", std::process::id()));
        let sub = dir.join("nested");
        std::fs::create_dir_all(&sub).unwrap();
        let file = sub.join("m.yaml");
        std::fs::write(
            &file,
            "functions:\n  - name: f\n    command: ${MANIFEST_DIR}/run\n    workingDir: ../work\n",
        )
        .unwrap();
        let m = load(&file).unwrap();
        let real = std::fs::canonicalize(&sub).unwrap();
        assert_eq!(m.dir, real);
        assert!(m.path.is_absolute());
        let f = &m.functions[0];
        assert_eq!(
            f.command.as_deref().unwrap()[0],
            format!("{}/run", real.display())
        );
        assert_eq!(
            f.working_dir.as_deref(),
            Some(real.parent().unwrap().join("work").to_str().unwrap())
        );
        let missing = load(&dir.join("nope.yaml")).unwrap_err();
        assert!(matches!(missing, ManifestError::Read { .. }));
        assert!(missing.to_string().contains("nope.yaml"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
