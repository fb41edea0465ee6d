//! From the YAML tree to a [`Manifest`]'s parts: the `setup`, `functions` and `example` sections,
//! checked field by field (unknown fields refused, names unique, `env` values as strings),
//! `${VAR}` expanded in every string, `workingDir` resolved against the manifest's folder, and
//! each function spec validated by `nanofaas_api::FunctionSpec`. Every failure becomes a
//! [`Problem`] located in the tree. Reads no file and runs nothing.

use super::expand::expand;
use super::problem::{locate, parse_field_path, path_text, Problem, Seg};
use super::yaml::{Node, Value};
use super::{Example, ManifestError, SetupStep};
use nanofaas_api::FunctionSpec;
use serde_json::Value as Json;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

pub(super) struct Ctx<'a> {
    pub root: &'a Node,
    pub file: &'a Path,
    pub dir: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The function a path is in: its name and the length of the `functions[i]` prefix.
type Who<'a> = Option<(&'a str, usize)>;

impl Ctx<'_> {
    /// A problem at `path` (document path), for `function` (whose fields start after
    /// `functions[i]` in `path`).
    pub fn problem(&self, path: &[Seg], function: Who, reason: impl Into<String>) -> ManifestError {
        let field = match function {
            // Inside a function the field is named relative to it: `timeoutMs`, not
            // `functions[0].timeoutMs`.
            Some((_, depth)) => Some(path_text(&path[depth.min(path.len())..])),
            None => Some(path_text(path)),
        }
        .filter(|f| !f.is_empty());
        ManifestError::Invalid(Problem {
            file: self.file.to_path_buf(),
            line: Some(locate(self.root, path)),
            function: function.map(|(f, _)| f.to_string()),
            field,
            reason: reason.into(),
        })
    }

    pub fn setup(&self, v: &Node) -> Result<Vec<SetupStep>, ManifestError> {
        let base = [Seg::key("setup")];
        let items = match (&v.value, &v.tag) {
            (Value::Null, None) => return Ok(Vec::new()),
            (Value::Sequence(s), None) => s,
            _ => {
                return Err(self.problem(
                    &base,
                    None,
                    format!(
                        "must be a list of steps ({{name, run}}), found {}",
                        v.kind()
                    ),
                ))
            }
        };
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = [Seg::key("setup"), Seg::Index(i)];
            let Some(m) = mapping(item) else {
                return Err(self.problem(
                    &at,
                    None,
                    format!(
                        "a step must be a mapping with `name` and `run`, found {}",
                        item.kind()
                    ),
                ));
            };
            let (mut name, mut run) = (None, None);
            for (k, v) in m {
                let key = self.key(k, &at, None)?;
                let mut p = at.to_vec();
                p.push(Seg::key(key));
                let text = match v.as_str() {
                    Some(s) => self.expand(s, &p, None)?,
                    None => {
                        return Err(self.problem(
                            &p,
                            None,
                            format!("must be a string, found {}", v.kind()),
                        ))
                    }
                };
                match key {
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

    pub fn example(&self, v: &Node) -> Result<Example, ManifestError> {
        let at = [Seg::key("example")];
        let Some(m) = mapping(v) else {
            return Err(self.problem(
                &at,
                None,
                format!(
                    "must be a mapping with `function` and `input`, found {}",
                    v.kind()
                ),
            ));
        };
        let (mut function, mut input) = (None, Json::Null);
        for (k, v) in m {
            let key = self.key(k, &at, None)?;
            let p = [Seg::key("example"), Seg::key(key)];
            match key {
                "function" => match v.as_str() {
                    Some(s) => function = Some(self.expand(s, &p, None)?),
                    None => {
                        return Err(self.problem(
                            &p,
                            None,
                            format!("must be a function name, found {}", v.kind()),
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

    pub fn functions(&self, v: &Node) -> Result<Vec<FunctionSpec>, ManifestError> {
        let base = [Seg::key("functions")];
        let items = match (&v.value, &v.tag) {
            (Value::Null, None) => return Ok(Vec::new()),
            (Value::Sequence(s), None) => s,
            _ => {
                return Err(self.problem(
                    &base,
                    None,
                    format!("must be a list of function specs, found {}", v.kind()),
                ))
            }
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = vec![Seg::key("functions"), Seg::Index(i)];
            let Some(m) = mapping(item) else {
                return Err(self.problem(
                    &at,
                    None,
                    format!(
                        "a function must be a mapping (a FunctionSpec), found {}",
                        item.kind()
                    ),
                ));
            };
            // The name first, so that every later message can name the function.
            let name = match item.get("name").and_then(Node::as_str) {
                Some(s) => s.to_string(),
                None => format!("functions[{i}]"),
            };
            let who = Some((name.as_str(), at.len()));
            let mut obj = serde_json::Map::new();
            for (k, v) in m {
                let key = self.key(k, &at, who)?;
                let mut p = at.clone();
                p.push(Seg::key(key));
                let value = self.json(v, &p, who, key == "env")?;
                obj.insert(key.to_string(), value);
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

    pub fn key<'n>(&self, k: &'n Node, at: &[Seg], who: Who) -> Result<&'n str, ManifestError> {
        match k.as_str() {
            Some(s) => Ok(s),
            None => Err(self.problem(at, who, format!("keys must be strings, found {}", k.kind()))),
        }
    }

    /// Converts a YAML value to JSON, expanding `${VAR}` in strings. `stringify` turns scalar
    /// values of a mapping into strings (for `env`).
    fn json(
        &self,
        v: &Node,
        path: &[Seg],
        who: Who,
        stringify: bool,
    ) -> Result<Json, ManifestError> {
        if let Some(tag) = &v.tag {
            return Err(self.problem(path, who, format!("YAML tags ({tag}) are not supported")));
        }
        Ok(match &v.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::U64(n) => Json::from(*n),
            Value::I64(n) => Json::from(*n),
            Value::F64(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .ok_or_else(|| {
                    self.problem(path, who, format!("{} is not a finite number", float(*f)))
                })?,
            Value::String(s) => Json::String(self.expand(s, path, who)?),
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let mut p = path.to_vec();
                    p.push(Seg::Index(i));
                    out.push(self.json(item, &p, who, false)?);
                }
                Json::Array(out)
            }
            Value::Mapping(m) => {
                let mut out = serde_json::Map::new();
                for (k, v) in m {
                    let key = self.key(k, path, who)?;
                    let mut p = path.to_vec();
                    p.push(Seg::key(key));
                    let value = match (stringify, &v.value, &v.tag) {
                        (true, Value::Bool(b), None) => Json::String(b.to_string()),
                        (true, Value::U64(n), None) => Json::String(n.to_string()),
                        (true, Value::I64(n), None) => Json::String(n.to_string()),
                        (true, Value::F64(f), None) => Json::String(float(*f)),
                        _ => self.json(v, &p, who, false)?,
                    };
                    out.insert(key.to_string(), value);
                }
                Json::Object(out)
            }
        })
    }

    fn expand(&self, s: &str, path: &[Seg], who: Who) -> Result<String, ManifestError> {
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

/// The entries of an untagged mapping node.
pub(super) fn mapping(n: &Node) -> Option<&[(Node, Node)]> {
    match (&n.value, &n.tag) {
        (Value::Mapping(m), None) => Some(m),
        _ => None,
    }
}

/// A float as YAML writes it: `1.5`, `1000.0`, `.inf`, `-.inf`, `.nan`.
fn float(f: f64) -> String {
    if f.is_nan() {
        ".nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        // serde_json prints finite floats in their shortest round-trip form with a `.0` on
        // whole numbers, as YAML writers do.
        serde_json::Number::from_f64(f)
            .map(|n| n.to_string())
            .unwrap_or_else(|| f.to_string())
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system (the folder may not exist yet).
pub(super) fn normalize(p: &Path) -> PathBuf {
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
