//! A strict JSON checker for request bodies: it reads a body completely, builds nothing, and
//! either accepts it or names the first problem with its place (a field path, a line and a
//! column).
//!
//! The control plane forwards invocation bodies byte for byte, so what it accepts must be what
//! every runtime can read. On top of RFC 8259's grammar the checker refuses:
//! - bytes after the value (`{"input":1}}`);
//! - invalid UTF-8, and `\u` escapes that are lone UTF-16 surrogates (not Unicode text);
//! - nesting deeper than [`MAX_DEPTH`] arrays and objects (the body's own object counts);
//! - numbers a 64-bit float cannot carry (`1e400` would become infinity or an error);
//! - with [`Rules::STRICT`], a key written twice in one object (parsers disagree on which one
//!   wins). Invocation `input` is the function's own data: duplicate keys there are passed on as
//!   sent; duplicate keys at the top level of the body and in `metadata` are refused.
//!
//! The happy path allocates nothing (duplicate-key sets aside); a failure is located afterwards.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// The deepest nesting of arrays and objects accepted in a body, the body's own object included.
pub const MAX_DEPTH: usize = 64;

/// What the checker enforces beyond the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub max_depth: usize,
    pub reject_duplicate_keys: bool,
}

impl Rules {
    /// Data the platform passes on without reading (invocation input).
    pub const DATA: Rules = Rules {
        max_depth: MAX_DEPTH,
        reject_duplicate_keys: false,
    };
    /// Documents the platform reads (function specs): duplicate keys are refused too.
    pub const STRICT: Rules = Rules {
        max_depth: MAX_DEPTH,
        reject_duplicate_keys: true,
    };
}

/// What is wrong with a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    InvalidUtf8,
    /// The body ends inside something (what).
    Eof(&'static str),
    /// Something else was found (what was expected).
    Expected(&'static str),
    TrailingCharacters,
    TooDeep(usize),
    NumberOutOfRange,
    InvalidNumber(&'static str),
    ControlCharacter,
    InvalidEscape,
    LoneSurrogate,
    DuplicateKey(String),
    /// An invocation body's top-level key other than `input` and `metadata`.
    UnknownField(String),
    /// An invocation body that is not a JSON object.
    NotAnObject,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Problem::Eof(what) => write!(f, "the body ends in the middle of {what}"),
            Problem::Expected(what) => write!(f, "expected {what}"),
            Problem::TrailingCharacters => f.write_str("trailing characters after the JSON value"),
            Problem::TooDeep(n) => write!(f, "nested deeper than {n} arrays/objects"),
            Problem::NumberOutOfRange => {
                f.write_str("number out of range (it must fit a 64-bit floating point number)")
            }
            Problem::InvalidNumber(why) => write!(f, "invalid number: {why}"),
            Problem::ControlCharacter => {
                f.write_str("control character in a string (it must be escaped)")
            }
            Problem::InvalidEscape => f.write_str("invalid escape in a string"),
            Problem::LoneSurrogate => {
                f.write_str("\\u escape is a lone UTF-16 surrogate (not a Unicode character)")
            }
            Problem::DuplicateKey(k) => write!(f, "duplicate key {k:?}"),
            Problem::UnknownField(k) => {
                write!(f, "unknown field {k:?}, expected \"input\" or \"metadata\"")
            }
            Problem::NotAnObject => f.write_str(
                "body must be a JSON object {\"input\": <any JSON>, \"metadata\": {string: string}}",
            ),
        }
    }
}

/// A problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The field it is in, as `input.a[2]`; empty for the body itself.
    pub path: String,
    pub problem: Problem,
    /// Byte offset in the body.
    pub offset: usize,
    /// 1-based line and column (in characters) of `offset`.
    pub line: usize,
    pub column: usize,
}

impl JsonError {
    /// The problem and its place, without the path: `trailing characters ... at line 1, column 12`.
    pub fn message(&self) -> String {
        format!(
            "{} at line {}, column {}",
            self.problem, self.line, self.column
        )
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message())
        } else {
            write!(f, "{}: {}", self.path, self.message())
        }
    }
}

impl std::error::Error for JsonError {}

/// What an invocation body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Nothing but whitespace: no input.
    Empty,
    /// A valid `{"input": ..., "metadata": {...}}` object.
    Request,
}

/// Checks that `body` is exactly one JSON value under `rules`, with only whitespace around it.
pub fn check(body: &[u8], rules: Rules) -> Result<(), JsonError> {
    let mut p = Parser::new(body, rules)?;
    let r = p.ws_value().and_then(|()| p.end());
    r.map_err(|f| f.locate(body))
}

/// Checks an invocation body: empty, or an object with at most `input` (any JSON under
/// [`Rules::DATA`]) and `metadata` (`null` or an object of strings, each key once).
pub fn check_invocation(body: &[u8]) -> Result<Body, JsonError> {
    let mut p = Parser::new(body, Rules::DATA)?;
    p.ws();
    if p.i == body.len() {
        return Ok(Body::Empty);
    }
    p.invocation().map_err(|f| f.locate(body))?;
    Ok(Body::Request)
}

enum Seg {
    Key(String),
    Index(usize),
}

struct Fail {
    at: usize,
    problem: Problem,
    /// Innermost first.
    path: Vec<Seg>,
}

impl Fail {
    fn locate(self, body: &[u8]) -> JsonError {
        let at = self.at.min(body.len());
        let before = &body[..at];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        // Characters, not bytes: count the bytes that start a UTF-8 sequence.
        let column = 1 + before[line_start..]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count();
        let mut path = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Key(k) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Seg::Index(n) => {
                    path.push('[');
                    path.push_str(&n.to_string());
                    path.push(']');
                }
            }
        }
        JsonError {
            path,
            problem: self.problem,
            offset: at,
            line,
            column,
        }
    }
}

type R<T = ()> = Result<T, Box<Fail>>;

#[cold]
#[inline(never)]
fn fail<T>(at: usize, problem: Problem) -> R<T> {
    Err(Box::new(Fail {
        at,
        problem,
        path: Vec::new(),
    }))
}

fn within<T>(r: R<T>, seg: impl FnOnce() -> Seg) -> R<T> {
    r.map_err(|mut f| {
        f.path.push(seg());
        f
    })
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// From `i`, the first `"`, `\\` or control byte (or the end), and whether a non-ASCII byte
/// came before it. Eight bytes at a time: a byte `b` is flagged by `(x - ONES) & !x & HIGH` when
/// `x = b ^ c` is zero; the lowest flagged byte is exact.
#[inline]
fn scan(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut wide = 0u64;
    while i + 8 <= b.len() {
        let x = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let quote = x ^ (ONES * b'"' as u64);
        let slash = x ^ (ONES * b'\\' as u64);
        let stop = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let stop = stop & HIGH;
        if stop != 0 {
            let n = (stop.trailing_zeros() / 8) as usize;
            // Only the bytes before the stop count as content.
            let before = if n == 0 {
                0
            } else {
                x & (u64::MAX >> (64 - 8 * n))
            };
            wide |= before & HIGH;
            return (i + n, wide != 0);
        }
        wide |= x & HIGH;
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        wide |= (c & 0x80) as u64;
        i += 1;
    }
    (i, wide != 0)
}

/// A string's raw content (between the quotes) and whether it has escapes.
#[derive(Clone, Copy)]
struct Str {
    start: usize,
    end: usize,
    escaped: bool,
}

/// The keys of one object, to find one written twice: the first few on the stack, compared as
/// written (decoded when either has escapes), then a hash set.
#[derive(Default)]
struct Keys<'a> {
    few: [Option<Str>; 8],
    n: usize,
    many: Option<HashSet<Cow<'a, str>>>,
}
struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
    rules: Rules,
}

impl<'a> Parser<'a> {
    fn new(b: &'a [u8], rules: Rules) -> Result<Self, JsonError> {
        Ok(Parser {
            b,
            i: 0,
            depth: 0,
            rules,
        })
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn end(&mut self) -> R {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            fail(self.i, Problem::TrailingCharacters)
        }
    }

    #[inline]
    fn ws_value(&mut self) -> R {
        self.ws();
        self.value()
    }

    #[inline]
    fn value(&mut self) -> R {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(c) if c >= 0x80 && !starts_a_char(&self.b[self.i..]) => {
                fail(self.i, Problem::InvalidUtf8)
            }
            Some(_) => fail(self.i, Problem::Expected("a JSON value")),
            None => fail(self.i, Problem::Eof("a value")),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> R {
        let end = self.i + word.len();
        if self.b.get(self.i..end) == Some(word) {
            self.i = end;
            return Ok(());
        }
        // Point at the first byte that differs.
        let same = self.b[self.i..]
            .iter()
            .zip(word)
            .take_while(|(a, b)| a == b)
            .count();
        if self.i + same == self.b.len() {
            fail(self.b.len(), Problem::Eof("a literal"))
        } else {
            fail(self.i + same, Problem::Expected("a JSON value"))
        }
    }

    fn enter(&mut self) -> R {
        if self.depth >= self.rules.max_depth {
            return fail(self.i, Problem::TooDeep(self.rules.max_depth));
        }
        self.depth += 1;
        self.i += 1;
        Ok(())
    }

    fn array(&mut self) -> R {
        self.enter()?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        let mut n = 0usize;
        loop {
            within(self.ws_value(), || Seg::Index(n))?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                Some(_) => return fail(self.i, Problem::Expected("',' or ']'")),
                None => return fail(self.i, Problem::Eof("an array")),
            }
            n += 1;
        }
    }

    /// Reads `"key"` and the `:` after it.
    #[inline]
    fn key(&mut self) -> R<Str> {
        self.ws();
        match self.peek() {
            Some(b'"') => {}
            Some(_) => return fail(self.i, Problem::Expected("a key in double quotes")),
            None => return fail(self.i, Problem::Eof("an object")),
        }
        let k = self.string()?;
        self.ws();
        match self.peek() {
            Some(b':') => {
                self.i += 1;
                Ok(k)
            }
            Some(_) => fail(self.i, Problem::Expected("':' after the key")),
            None => fail(self.i, Problem::Eof("an object")),
        }
    }

    /// After a member: `,` (true: another follows) or `}` (false).
    #[inline]
    fn next_member(&mut self) -> R<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(b'}') => {
                self.i += 1;
                self.depth -= 1;
                Ok(false)
            }
            Some(_) => fail(self.i, Problem::Expected("',' or '}'")),
            None => fail(self.i, Problem::Eof("an object")),
        }
    }

    /// `{` seen: true if the object is empty (and consumed).
    fn open_object(&mut self) -> R<bool> {
        self.enter()?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn object(&mut self) -> R {
        if self.open_object()? {
            return Ok(());
        }
        let mut keys = self.rules.reject_duplicate_keys.then(Keys::default);
        loop {
            let k = self.key()?;
            if let Some(keys) = &mut keys {
                self.unique(keys, k)?;
            }
            within(self.ws_value(), || Seg::Key(self.text(k).into_owned()))?;
            if !self.next_member()? {
                return Ok(());
            }
        }
    }

    fn unique(&self, keys: &mut Keys<'a>, k: Str) -> R {
        let fresh = if let Some(set) = &mut keys.many {
            set.insert(self.text(k))
        } else {
            let raw = &self.b[k.start..k.end];
            let dup = keys.few[..keys.n].iter().flatten().any(|o| {
                if o.escaped || k.escaped {
                    self.text(*o) == self.text(k)
                } else {
                    &self.b[o.start..o.end] == raw
                }
            });
            if !dup {
                if keys.n < keys.few.len() {
                    keys.few[keys.n] = Some(k);
                    keys.n += 1;
                } else {
                    let mut set: HashSet<Cow<'a, str>> =
                        keys.few.iter().flatten().map(|o| self.text(*o)).collect();
                    set.insert(self.text(k));
                    keys.many = Some(set);
                }
            }
            !dup
        };
        if fresh {
            Ok(())
        } else {
            let name = self.text(k).into_owned();
            let mut f = Fail {
                at: k.start - 1,
                problem: Problem::DuplicateKey(name.clone()),
                path: Vec::new(),
            };
            f.path.push(Seg::Key(name));
            Err(Box::new(f))
        }
    }

    /// At the opening quote: checks the string and returns its raw content.
    #[inline]
    fn string(&mut self) -> R<Str> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        // Runs between escapes are checked for UTF-8 only when they hold a non-ASCII byte.
        let mut run = start;
        let mut wide = false;
        loop {
            let (i, w) = scan(self.b, self.i);
            self.i = i;
            wide |= w;
            match self.peek() {
                Some(b'"') => {
                    if wide {
                        self.utf8(run)?;
                    }
                    let end = self.i;
                    self.i += 1;
                    return Ok(Str {
                        start,
                        end,
                        escaped,
                    });
                }
                Some(b'\\') => {
                    if wide {
                        self.utf8(run)?;
                        wide = false;
                    }
                    escaped = true;
                    self.escape()?;
                    run = self.i;
                }
                Some(_) => return fail(self.i, Problem::ControlCharacter),
                None => {
                    if wide {
                        self.utf8(run)?;
                    }
                    return fail(self.i, Problem::Eof("a string"));
                }
            }
        }
    }

    #[cold]
    fn utf8(&self, from: usize) -> R {
        match std::str::from_utf8(&self.b[from..self.i]) {
            Ok(_) => Ok(()),
            Err(e) => fail(from + e.valid_up_to(), Problem::InvalidUtf8),
        }
    }

    /// At a backslash.
    #[inline]
    fn escape(&mut self) -> R {
        let at = self.i;
        match self.b.get(self.i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 2;
                Ok(())
            }
            Some(b'u') => {
                let n = self.hex4(at)?;
                match n {
                    0xDC00..=0xDFFF => fail(at, Problem::LoneSurrogate),
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            return fail(at, Problem::LoneSurrogate);
                        }
                        let low = self.hex4(self.i)?;
                        if (0xDC00..=0xDFFF).contains(&low) {
                            Ok(())
                        } else {
                            fail(at, Problem::LoneSurrogate)
                        }
                    }
                    _ => Ok(()),
                }
            }
            Some(_) => fail(at, Problem::InvalidEscape),
            None => fail(self.b.len(), Problem::Eof("a string")),
        }
    }

    /// The `\u` escape (four hex digits) at `at`: moves past it and returns the code unit.
    fn hex4(&mut self, at: usize) -> R<u16> {
        let mut n = 0u16;
        for k in 0..4 {
            let d = match self.b.get(at + 2 + k) {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                Some(_) => return fail(at, Problem::InvalidEscape),
                None => return fail(self.b.len(), Problem::Eof("a string")),
            };
            n = n << 4 | d as u16;
        }
        self.i = at + 6;
        Ok(n)
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let from = self.i;
        let rest = &self.b[self.i..];
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        self.i += n;
        self.i - from
    }

    #[inline]
    fn number(&mut self) -> R {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return fail(
                        self.i,
                        Problem::InvalidNumber("leading zeros are not allowed"),
                    );
                }
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            Some(_) => return fail(self.i, Problem::InvalidNumber("expected a digit")),
            None => return fail(self.i, Problem::Eof("a number")),
        };
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.need_digit();
            }
        }
        let mut exp: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            let negative = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let from = self.i;
            if self.digits() == 0 {
                return self.need_digit();
            }
            for &d in &self.b[from..self.i] {
                exp = (exp * 10 + (d - b'0') as i64).min(1 << 40);
            }
            if negative {
                exp = -exp;
            }
        }
        // Below 10^300 every number is a finite double; near the edge ask serde_json, the parser
        // of the Rust runtime and of the watchdog, so that both agree on what is in range.
        if int_digits as i64 + exp > 300
            && serde_json::from_slice::<f64>(&self.b[start..self.i]).is_err()
        {
            return fail(start, Problem::NumberOutOfRange);
        }
        Ok(())
    }

    fn need_digit(&self) -> R {
        match self.peek() {
            None => fail(self.i, Problem::Eof("a number")),
            Some(_) => fail(self.i, Problem::InvalidNumber("expected a digit")),
        }
    }

    /// A string's text, escapes decoded (they were checked).
    fn text(&self, s: Str) -> Cow<'a, str> {
        let raw = &self.b[s.start..s.end];
        // The string was checked to be UTF-8.
        let raw_str = std::str::from_utf8(raw).unwrap_or("");
        if !s.escaped {
            return Cow::Borrowed(raw_str);
        }
        Cow::Owned(unescape(raw_str))
    }

    /// The body of an invocation: `{`, then `input` and `metadata` at most once each.
    fn invocation(&mut self) -> R {
        if self.peek() != Some(b'{') {
            return fail(self.i, Problem::NotAnObject);
        }
        if !self.open_object()? {
            let (mut input, mut metadata) = (false, false);
            loop {
                let k = self.key()?;
                let name = self.text(k);
                let seen = match &*name {
                    "input" => &mut input,
                    "metadata" => &mut metadata,
                    _ => {
                        let name = name.into_owned();
                        let mut f = Fail {
                            at: k.start - 1,
                            problem: Problem::UnknownField(name.clone()),
                            path: Vec::new(),
                        };
                        f.path.push(Seg::Key(name));
                        return Err(Box::new(f));
                    }
                };
                if *seen {
                    let name = name.into_owned();
                    return fail(k.start - 1, Problem::DuplicateKey(name.clone())).map_err(
                        |mut f| {
                            f.path.push(Seg::Key(name));
                            f
                        },
                    );
                }
                *seen = true;
                let is_input = &*name == "input";
                self.ws();
                let r = if is_input {
                    self.value()
                } else {
                    self.metadata()
                };
                within(r, || Seg::Key(name.into_owned()))?;
                if !self.next_member()? {
                    break;
                }
            }
        }
        self.end()
    }

    /// `null`, or an object of strings with each key once.
    fn metadata(&mut self) -> R {
        match self.peek() {
            Some(b'n') => return self.literal(b"null"),
            Some(b'{') => {}
            Some(_) => return fail(self.i, Problem::Expected("an object of strings")),
            None => return fail(self.i, Problem::Eof("a value")),
        }
        if self.open_object()? {
            return Ok(());
        }
        let mut keys = Keys::default();
        loop {
            let k = self.key()?;
            self.unique(&mut keys, k)?;
            self.ws();
            let r = match self.peek() {
                Some(b'"') => self.string().map(|_| ()),
                Some(_) => fail(self.i, Problem::Expected("a string")),
                None => fail(self.i, Problem::Eof("a value")),
            };
            within(r, || Seg::Key(self.text(k).into_owned()))?;
            if !self.next_member()? {
                return Ok(());
            }
        }
    }
}

/// Whether `b` starts with a whole UTF-8 character.
fn starts_a_char(b: &[u8]) -> bool {
    match std::str::from_utf8(&b[..b.len().min(4)]) {
        Ok(_) => true,
        Err(e) => e.valid_up_to() > 0,
    }
}

/// Decodes the escapes of a checked string.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    let hex = |c: &mut std::str::Chars<'_>| -> u32 {
        (0..4).fold(0, |n, _| {
            n << 4 | c.next().and_then(|d| d.to_digit(16)).unwrap_or(0)
        })
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let n = hex(&mut chars);
                let code = if (0xD800..0xDC00).contains(&n) {
                    chars.next();
                    chars.next();
                    let low = hex(&mut chars);
                    0x10000 + ((n - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    n
                };
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
