//! Who may call the public API, and from where: bearer tokens with roles, and the checks that
//! keep web pages out (allowed `Host` names against DNS rebinding, allowed `Origin`s, JSON-only
//! bodies, CORS only when configured). The callback route keeps its own per-attempt tokens
//! ([`crate::auth`]); docs/security.md has the threat model and the table of roles.
//!
//! Tokens are configured only as SHA-256 hashes. A token is 256 random bits, so a plain hash is
//! as good as a slow password hash here (there is nothing to brute-force) and costs well under a
//! microsecond per call; the presented token's hash is compared with every configured hash in
//! constant time. The checks of a request allocate nothing.

use crate::config::{ApiConfig, TokenConfig};
use crate::error::ApiError;
use http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// What a token may do (docs/security.md has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Manage functions, invoke them, read everything.
    Deployer,
    /// Invoke and enqueue, read executions; optionally only functions matching patterns.
    Invoker,
    /// Read only: list and get functions and instances, executions, metrics.
    Viewer,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Admin, Role::Deployer, Role::Invoker, Role::Viewer];

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "deployer" => Some(Role::Deployer),
            "invoker" => Some(Role::Invoker),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Invoker => "invoker",
            Role::Viewer => "viewer",
        }
    }
}

/// What a request asks to do, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// `/healthz`, `/readyz`: always open.
    Probe,
    /// `/metrics`: open unless `api.protect_metrics`.
    Metrics,
    /// List or get functions and instances.
    Read,
    /// Create, replace or delete functions.
    Manage,
    /// `:invoke` or `:enqueue` of this function.
    Invoke(&'a str),
    /// Read an execution of this function.
    ReadExecution(&'a str),
    /// A method the route does not have: any valid token (the answer is then 405).
    Other,
}

/// A configured token.
#[derive(Debug, Clone)]
pub struct Token {
    hash: [u8; 32],
    pub role: Role,
    /// Glob patterns (`*` matches any run of characters) of the functions an invoker may use;
    /// empty: every function.
    pub functions: Vec<String>,
}

/// The caller, once authenticated: `None` when no tokens are configured (open API).
pub type Principal<'a> = Option<&'a Token>;

/// The access rules of the public API, built once from `[api]`.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Vec<Token>,
    hosts: Vec<String>,
    any_host: bool,
    origins: Vec<String>,
    protect_metrics: bool,
}

/// Prefix of the tokens `nanofaas token create` makes (helps secret scanners find leaked ones).
pub const TOKEN_PREFIX: &str = "nf_";

/// SHA-256 of a token, as configured.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        s.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    s
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// A fresh token: the prefix and 256 random bits in hex.
pub fn new_token() -> Result<String, String> {
    let bytes = crate::ids::secret_bytes()?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Equal in time that depends only on the length.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut d = 0u8;
    for i in 0..32 {
        d |= a[i] ^ b[i];
    }
    std::hint::black_box(d) == 0
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Checks a function-name pattern: the characters of a name, and `*`.
pub fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 128 {
        return Err(format!("pattern {p:?} must be 1 to 128 characters"));
    }
    if !p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'))
    {
        return Err(format!(
            "pattern {p:?} may contain letters, digits, '-', '_', '.' and '*' only"
        ));
    }
    Ok(())
}

impl Token {
    pub fn from_config(t: &TokenConfig) -> Result<Token, String> {
        let role = Role::parse(&t.role).ok_or_else(|| {
            format!(
                "role {:?} is not one of admin, deployer, invoker, viewer",
                t.role
            )
        })?;
        let hash = unhex32(&t.sha256).ok_or_else(|| {
            "sha256 must be the 64 hex digits of the token's SHA-256 (`nanofaas token create` prints it)".to_string()
        })?;
        for p in &t.functions {
            check_pattern(p)?;
        }
        if !t.functions.is_empty() && role != Role::Invoker {
            return Err("functions patterns apply to the invoker role only".into());
        }
        Ok(Token {
            hash,
            role,
            functions: t.functions.clone(),
        })
    }

    fn may_use(&self, function: &str) -> bool {
        self.functions.is_empty() || self.functions.iter().any(|p| glob_match(p, function))
    }

    /// Whether this token's role allows `action`.
    pub fn allows(&self, action: Action<'_>) -> bool {
        use Action::*;
        match (self.role, action) {
            (_, Probe | Other) => true,
            (Role::Admin, _) => true,
            (Role::Deployer, _) => true,
            (Role::Viewer, Metrics | Read | ReadExecution(_)) => true,
            (Role::Viewer, Manage | Invoke(_)) => false,
            (Role::Invoker, Invoke(f) | ReadExecution(f)) => self.may_use(f),
            (Role::Invoker, Metrics | Read | Manage) => false,
        }
    }
}

/// The host part of a `Host` header value (`name`, `1.2.3.4`, `[::1]`), without the port.
fn host_part(v: &str) -> &str {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match v.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => v,
    }
}

fn is_loopback_name(h: &str) -> bool {
    h.eq_ignore_ascii_case("localhost")
        || (h.len() > 10 && h.as_bytes()[h.len() - 10..].eq_ignore_ascii_case(b".localhost"))
}

impl Access {
    pub fn from_config(c: &ApiConfig) -> Result<Access, String> {
        let mut tokens = Vec::with_capacity(c.tokens.len());
        for (i, t) in c.tokens.iter().enumerate() {
            tokens.push(Token::from_config(t).map_err(|e| format!("api.tokens[{i}]: {e}"))?);
        }
        let mut hosts = Vec::new();
        let mut any_host = false;
        for h in &c.allowed_hosts {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if h == "*" {
                any_host = true;
            } else if h.is_empty() || h.contains(['/', ' ', ':']) {
                return Err(format!(
                    "api.allowed_hosts: {h:?} is not a host name (no scheme, port or path)"
                ));
            } else {
                hosts.push(h);
            }
        }
        let mut origins = Vec::new();
        for o in &c.allowed_origins {
            let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            if !rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '?', '#', ' ', '*'])) {
                return Err(format!(
                    "api.allowed_origins: {o:?} must be an origin such as https://app.example.com (scheme, host and port if not the default; no path)"
                ));
            }
            origins.push(o);
        }
        Ok(Access {
            tokens,
            hosts,
            any_host,
            origins,
            protect_metrics: c.protect_metrics,
        })
    }

    /// Whether bearer tokens are required.
    pub fn requires_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Adds a token (used by `nanofaas up` for its own client).
    pub fn add_token(&mut self, token: &str, role: Role) {
        self.tokens.push(Token {
            hash: hash_token(token),
            role,
            functions: Vec::new(),
        });
    }

    /// `421` unless the `Host` is an allowed name or an IP address. An IP literal cannot be the
    /// product of DNS rebinding (that needs a name the attacker controls), so addresses pass;
    /// names must be loopback names (`localhost`, `*.localhost`) or configured.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.any_host {
            return Ok(());
        }
        let Some(v) = headers.get(header::HOST) else {
            // HTTP/1.0 without Host: not a browser.
            return Ok(());
        };
        let Ok(v) = v.to_str() else {
            return Err(ApiError::MisdirectedRequest("Host is not ASCII".into()));
        };
        let h = host_part(v.trim());
        let h = h.strip_suffix('.').unwrap_or(h);
        if h.parse::<IpAddr>().is_ok()
            || is_loopback_name(h)
            || self.hosts.iter().any(|a| a.eq_ignore_ascii_case(h))
        {
            return Ok(());
        }
        Err(ApiError::MisdirectedRequest(format!(
            "host {h:?} is not served here (allowed: loopback names, IP addresses and api.allowed_hosts); a page that resolves its own name to this machine (DNS rebinding) is refused"
        )))
    }

    /// `403` when an `Origin` is sent and is not allowed; `Ok(Some(origin))` when it is allowed
    /// (the answer then carries CORS headers for it).
    pub fn check_origin<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<&'h HeaderValue>, ApiError> {
        let Some(v) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let s = v.to_str().unwrap_or("");
        if self.origins.iter().any(|o| o.eq_ignore_ascii_case(s)) {
            return Ok(Some(v));
        }
        Err(ApiError::Denied(format!(
            "requests from origin {s:?} are not allowed (api.allowed_origins); web pages cannot drive this API"
        )))
    }

    /// Whether any origin is configured (CORS answers are possible at all).
    pub fn cors_enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    /// The caller's token: `Ok(None)` when no tokens are configured; `401` when tokens are
    /// configured and the request has none or an unknown one.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal<'_>, ApiError> {
        if self.tokens.is_empty() {
            return Ok(None);
        }
        let Some(v) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthenticated(
                "this API needs a bearer token (Authorization: Bearer TOKEN; the CLI reads NANOFAAS_TOKEN or --token)",
            ));
        };
        let b = v.as_bytes();
        let token = if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
            b[7..].trim_ascii()
        } else {
            return Err(ApiError::Unauthenticated(
                "the Authorization header must be `Bearer TOKEN`",
            ));
        };
        let presented: [u8; 32] = Sha256::digest(token).into();
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            // Every hash is compared, so the time does not tell which one matched.
            if ct_eq(&t.hash, &presented) && found.is_none() {
                found = Some(t);
            }
        }
        found.map(Some).ok_or(ApiError::Unauthenticated(
            "the bearer token is not valid here",
        ))
    }

    /// `403` when the caller's role does not allow `action`.
    pub fn authorize(&self, who: Principal<'_>, action: Action<'_>) -> Result<(), ApiError> {
        let Some(t) = who else { return Ok(()) };
        if t.allows(action) {
            return Ok(());
        }
        Err(ApiError::Denied(match action {
            Action::Invoke(f) | Action::ReadExecution(f) if t.role == Role::Invoker => format!(
                "this invoker token may not use function {f:?} (it may use: {})",
                t.functions.join(", ")
            ),
            _ => format!("the {} role may not do this", t.role.as_str()),
        }))
    }

    /// The [`Action`] for `/metrics`: a probe unless protected.
    pub fn metrics_action(&self) -> Action<'static> {
        if self.protect_metrics {
            Action::Metrics
        } else {
            Action::Probe
        }
    }
}

/// `415` unless the body is JSON: a `Content-Type` of `application/json` (parameters such as
/// `charset` allowed). A request with no body may omit the header.
pub fn check_json_body(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        Some(v) => {
            let b = v.as_bytes();
            let media = match b.iter().position(|&c| c == b';') {
                Some(i) => &b[..i],
                None => b,
            };
            if media.trim_ascii().eq_ignore_ascii_case(b"application/json") {
                Ok(())
            } else {
                Err(ApiError::UnsupportedMediaType(format!(
                    "bodies must be JSON (Content-Type: application/json), not {:?}",
                    String::from_utf8_lossy(media)
                )))
            }
        }
        None => {
            let empty = !headers.contains_key(header::TRANSFER_ENCODING)
                && headers
                    .get(header::CONTENT_LENGTH)
                    .is_none_or(|l| l.as_bytes().trim_ascii() == b"0");
            if empty {
                Ok(())
            } else {
                Err(ApiError::UnsupportedMediaType(
                    "a request with a body needs Content-Type: application/json".into(),
                ))
            }
        }
    }
}

/// Whether an address is on the loopback network (where the open default may listen).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn config(tokens: &[(&str, &str, &[&str])]) -> ApiConfig {
        ApiConfig {
            tokens: tokens
                .iter()
                .map(|(role, tok, f)| TokenConfig {
                    role: role.to_string(),
                    sha256: hex(&hash_token(tok)),
                    functions: f.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            ..ApiConfig::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("orders-*", "orders-eu"));
        assert!(!glob_match("orders-*", "billing"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*-eu", "orders-eu"));
        assert!(check_pattern("a/b").is_err());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("orders-*").is_ok());
    }

    #[test]
    fn tokens_and_roles() {
        let a = Access::from_config(&config(&[
            ("admin", "nf_admin", &[]),
            ("invoker", "nf_inv", &["orders-*"]),
            ("viewer", "nf_view", &[]),
        ]))
        .unwrap();
        let who = |tok: &str| {
            a.authenticate(&headers(&[("authorization", &format!("Bearer {tok}"))]))
                .map(|p| p.map(|t| t.role))
        };
        assert_eq!(who("nf_admin").unwrap(), Some(Role::Admin));
        assert_eq!(who("nf_view").unwrap(), Some(Role::Viewer));
        assert!(matches!(who("nf_nope"), Err(ApiError::Unauthenticated(_))));
        assert!(matches!(
            a.authenticate(&HeaderMap::new()),
            Err(ApiError::Unauthenticated(_))
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Basic eDp5")])),
            Err(ApiError::Unauthenticated(_))
        ));
        // Scheme is case-insensitive.
        assert!(a
            .authenticate(&headers(&[("authorization", "bearer nf_inv")]))
            .is_ok());
        let inv = a
            .authenticate(&headers(&[("authorization", "Bearer nf_inv")]))
            .unwrap();
        assert!(a.authorize(inv, Action::Invoke("orders-eu")).is_ok());
        assert!(matches!(
            a.authorize(inv, Action::Invoke("billing")),
            Err(ApiError::Denied(_))
        ));
        assert!(a.authorize(inv, Action::Read).is_err());
        let view = a
            .authenticate(&headers(&[("authorization", "Bearer nf_view")]))
            .unwrap();
        assert!(a.authorize(view, Action::Read).is_ok());
        assert!(a.authorize(view, Action::Manage).is_err());
        assert!(a.authorize(view, Action::Invoke("x")).is_err());
        // No tokens: everyone is let through.
        let open = Access::from_config(&ApiConfig::default()).unwrap();
        assert_eq!(
            open.authenticate(&HeaderMap::new())
                .unwrap()
                .map(|t| t.role),
            None
        );
        assert!(open.authorize(None, Action::Manage).is_ok());
    }

    #[test]
    fn bad_token_configs_are_refused() {
        let bad = |role: &str, sha: &str, f: &[&str]| {
            Access::from_config(&ApiConfig {
                tokens: vec![TokenConfig {
                    role: role.into(),
                    sha256: sha.into(),
                    functions: f.iter().map(|s| s.to_string()).collect(),
                }],
                ..ApiConfig::default()
            })
            .unwrap_err()
        };
        let h = hex(&hash_token("x"));
        assert!(bad("root", &h, &[]).contains("role"));
        assert!(bad("admin", "abc", &[]).contains("sha256"));
        assert!(bad("admin", &h, &["f"]).contains("invoker"));
        assert!(bad("invoker", &h, &["a/b"]).contains("pattern"));
    }

    #[test]
    fn hosts() {
        let a = Access::from_config(&ApiConfig {
            allowed_hosts: vec!["faas.example.com".into()],
            ..ApiConfig::default()
        })
        .unwrap();
        let host = |h: &str| a.check_host(&headers(&[("host", h)]));
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:1",
            "[::1]:8080",
            "10.1.2.3:8080",
            "faas.example.com",
            "FAAS.example.com.:443",
        ] {
            assert!(host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "example.com",
            "x",
        ] {
            assert!(
                matches!(host(bad), Err(ApiError::MisdirectedRequest(_))),
                "{bad}"
            );
        }
        assert!(a.check_host(&HeaderMap::new()).is_ok());
        let any = Access::from_config(&ApiConfig {
            allowed_hosts: vec!["*".into()],
            ..ApiConfig::default()
        })
        .unwrap();
        assert!(any
            .check_host(&headers(&[("host", "evil.example")]))
            .is_ok());
        assert!(Access::from_config(&ApiConfig {
            allowed_hosts: vec!["http://x".into()],
            ..ApiConfig::default()
        })
        .is_err());
    }

    #[test]
    fn origins() {
        let open = Access::default();
        assert!(open.check_origin(&HeaderMap::new()).unwrap().is_none());
        assert!(matches!(
            open.check_origin(&headers(&[("origin", "http://evil.example")])),
            Err(ApiError::Denied(_))
        ));
        assert!(open.check_origin(&headers(&[("origin", "null")])).is_err());
        let a = Access::from_config(&ApiConfig {
            allowed_origins: vec!["https://app.example.com/".into()],
            ..ApiConfig::default()
        })
        .unwrap();
        assert!(a
            .check_origin(&headers(&[("origin", "https://app.example.com")]))
            .unwrap()
            .is_some());
        assert!(a
            .check_origin(&headers(&[("origin", "https://app.example.com.evil")]))
            .is_err());
        for bad in ["app.example.com", "https://app.example.com/path", "*"] {
            assert!(
                Access::from_config(&ApiConfig {
                    allowed_origins: vec![bad.into()],
                    ..ApiConfig::default()
                })
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn json_bodies_only() {
        let ct =
            |v: &str| check_json_body(&headers(&[("content-type", v), ("content-length", "2")]));
        assert!(ct("application/json").is_ok());
        assert!(ct("Application/JSON; charset=utf-8").is_ok());
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "text/plain; a=application/json",
        ] {
            assert!(
                matches!(ct(bad), Err(ApiError::UnsupportedMediaType(_))),
                "{bad}"
            );
        }
        assert!(check_json_body(&HeaderMap::new()).is_ok());
        assert!(check_json_body(&headers(&[("content-length", "0")])).is_ok());
        assert!(check_json_body(&headers(&[("content-length", "5")])).is_err());
        assert!(check_json_body(&headers(&[("transfer-encoding", "chunked")])).is_err());
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.9.9.9".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
        assert!(!is_loopback("::".parse().unwrap()));
        assert!(!is_loopback("192.168.1.1".parse().unwrap()));
    }
}
