//! Where a problem is: [`Problem`] (file, line, function, field, reason) and the document paths
//! ([`Seg`]) that name a field and find its line in the parsed YAML tree.

use super::yaml::{Node, Value};
use std::fmt;
use std::path::PathBuf;

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

/// One step of a path inside the YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub(super) fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

pub(super) fn path_text(path: &[Seg]) -> String {
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
pub(super) fn parse_field_path(field: &str) -> Vec<Seg> {
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

/// The 1-based line of the node at `path` in `root`, or of its nearest ancestor that exists.
pub(super) fn locate(root: &Node, path: &[Seg]) -> usize {
    let mut node = root;
    for seg in path {
        let next = match (seg, &node.value) {
            (Seg::Key(k), Value::Mapping(m)) => m
                .iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v),
            (Seg::Index(i), Value::Sequence(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node.line
}
