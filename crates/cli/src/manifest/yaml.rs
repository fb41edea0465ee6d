//! The YAML layer of manifests: text in, a tree of [`Node`]s out, each node carrying the line and
//! column where it was written, or a [`SyntaxError`] with its position.
//!
//! This module owns the choice of YAML library (serde-saphyr) and its settings: YAML 1.2 scalars
//! (`yes`, `0755` and `1_000` stay strings, as in JSON-minded tools), duplicate keys refused,
//! merge keys (`<<`) applied, one document only, and the limits that keep hostile input bounded
//! in memory and time (size, nesting, node count, alias expansion). It knows nothing of what a
//! manifest means.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{Budget, MessageFormatter, Spanned, Tagged};
use std::fmt;

/// The largest manifest read, in bytes: far above any real one, small enough to parse quickly.
pub const MAX_BYTES: usize = 1024 * 1024;
/// The deepest nesting of lists and mappings. The parser recurses once per level, some 45 KiB
/// of stack a level in a debug build: 32 levels fit a 2 MiB thread stack (a test thread's)
/// with room to spare, and are far more than a manifest needs.
pub const MAX_DEPTH: usize = 32;
/// The most nodes (scalars, lists, mappings) one manifest may hold, aliases expanded.
pub const MAX_NODES: usize = 50_000;
/// The most events replayed from aliases (`*name`), against "billion laughs" documents.
pub const MAX_ALIAS_EVENTS: usize = 20_000;

/// A YAML node and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub column: usize,
    /// An explicit application tag (`!cmd`), if any; the standard `!!str`-style tags are applied
    /// by the parser and not kept.
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    String(String),
    Sequence(Vec<Node>),
    /// Entries in document order, merge keys applied.
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// How the node reads in a message: "a list", "a tagged value", ...
    pub fn kind(&self) -> &'static str {
        if self.tag.is_some() {
            return "a tagged value";
        }
        match self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::U64(_) | Value::I64(_) | Value::F64(_) => "a number",
            Value::String(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
        }
    }

    /// The text of an untagged string node.
    pub fn as_str(&self) -> Option<&str> {
        match (&self.value, &self.tag) {
            (Value::String(s), None) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in an untagged mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match (&self.value, &self.tag) {
            (Value::Mapping(m), None) => m
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why the text is not a YAML document this module accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, without the position (the caller shows it its own way).
    pub reason: String,
}

/// Parses `text` as one YAML document.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    if text.len() > MAX_BYTES {
        return Err(SyntaxError {
            line: None,
            reason: too_big(),
        });
    }
    serde_saphyr::from_str_with_options::<Node>(text, options()).map_err(|e| SyntaxError {
        line: e.location().map(|l| l.line() as usize).filter(|&l| l > 0),
        reason: reason(&e),
    })
}

fn options() -> serde_saphyr::Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_events = 4 * MAX_NODES;
    budget.max_aliases = MAX_NODES / 10;
    budget.max_anchors = MAX_NODES / 10;
    budget.max_recorded_anchor_events = 4 * MAX_NODES;
    budget.max_recorded_anchor_bytes = 4 * MAX_BYTES;
    budget.max_total_scalar_bytes = 4 * MAX_BYTES;
    budget.max_documents = 1;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    o.merge_keys = serde_saphyr::MergeKeyPolicy::Merge;
    // YAML 1.2 core schema for untyped scalars: `yes`/`on`, `0755` and `1_000` are strings.
    o.strict_booleans = true;
    o.leading_zero_numbers_as_strings = true;
    o.underscored_numbers_as_strings = true;
    // `.inf` and `.nan` reach the manifest layer, which names the field they are in.
    o.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    o.with_snippet = false;
    o
}

/// The message of `e` without its position, and in a manifest's words for the limits.
fn reason(e: &serde_saphyr::Error) -> String {
    let mut e = e;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = e
    {
        e = error;
    }
    match e {
        serde_saphyr::Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => nested(),
            BudgetBreach::Documents { .. } => {
                "a manifest is one YAML document; this text holds more (`---`)".to_string()
            }
            BudgetBreach::ScalarBytes { .. } => {
                format!(
                    "the text values add up to more than {} bytes",
                    4 * MAX_BYTES
                )
            }
            _ => too_large(),
        },
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "a manifest is one YAML document; this text holds more (`---`)".to_string()
        }
        serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
        | serde_saphyr::Error::AliasReplayCounterOverflow { .. } => too_large(),
        serde_saphyr::Error::DuplicateMappingKey { key: Some(k), .. } => sanitize(&format!(
            "duplicate key `{k}`: a key may appear once in a mapping"
        )),
        serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => {
            "duplicate key: a key may appear once in a mapping".to_string()
        }
        other => {
            let text = serde_saphyr::DefaultMessageFormatter.format_message(other);
            // The parser's own guard on nested `[` and `{` (set to the same depth).
            if text == "recursion limit exceeded" {
                return nested();
            }
            sanitize(&text)
        }
    }
}

fn nested() -> String {
    format!("lists and mappings are nested more than {MAX_DEPTH} deep")
}

/// Why a text over [`MAX_BYTES`] is refused.
pub fn too_big() -> String {
    format!("the manifest is larger than {MAX_BYTES} bytes, the most a manifest may be")
}

fn too_large() -> String {
    format!(
        "the document is too large once aliases (`*name`) are expanded: a manifest may hold at \
         most {MAX_NODES} values"
    )
}

/// Control characters of the input, escaped (messages may quote it and go to a terminal).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Tags of the YAML core schema, which the parser applies itself.
fn is_core_tag(tag: &str) -> bool {
    matches!(
        tag.strip_prefix("tag:yaml.org,2002:"),
        Some("str" | "int" | "float" | "bool" | "null" | "seq" | "map")
    ) || tag == "!"
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let s: Spanned<Tagged<Value>> = Spanned::deserialize(d)?;
        let Tagged(value, tag) = s.value;
        Ok(Node {
            value,
            line: s.referenced.line() as usize,
            column: s.referenced.column() as usize,
            tag: tag.filter(|t| !is_core_tag(t)),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::U64(n))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::I64(n))
    }
    fn visit_u128<E: de::Error>(self, n: u128) -> Result<Value, E> {
        u64::try_from(n)
            .map(Value::U64)
            .map_err(|_| E::custom(format!("{n} is too large a number")))
    }
    fn visit_i128<E: de::Error>(self, n: i128) -> Result<Value, E> {
        i64::try_from(n)
            .map(Value::I64)
            .map_err(|_| E::custom(format!("{n} is too large a number")))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::F64(n))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary values are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            out.push(n);
        }
        Ok(Value::Sequence(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            out.push((k, v));
        }
        Ok(Value::Mapping(out))
    }
}
