//! The fuzz targets: plain `fn(&[u8])` that call a parser the way the program does and panic
//! when a property breaks (a panic inside the parser is a finding too). Each target also names
//! its seeds, its dictionary and, for JSON, a generator of structured inputs.
//!
//! The targets are the same functions whether this crate's own fuzzer drives them
//! (`nanofaas-fuzz`) or libFuzzer does (`crates/fuzz/cargo-fuzz`, on nightly).

use crate::mutate::{self, Rng, JSON_DICT};
use bytes::Bytes;
use nanofaas_api::json::{self, Problem, Rules};
use nanofaas_control_plane::api;
use nanofaas_control_plane::error::ApiError;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub dict: &'static [&'static [u8]],
    /// Structured inputs, mixed in with the mutated ones.
    pub generate: Option<fn(&mut Rng) -> Vec<u8>>,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "invocation_body",
        run: invocation_body,
        seeds: invocation_seeds,
        dict: JSON_DICT,
        generate: Some(gen_invocation),
    },
    Target {
        name: "json_rules",
        run: json_rules,
        seeds: invocation_seeds,
        dict: JSON_DICT,
        generate: Some(gen_json),
    },
    Target {
        name: "spec_body",
        run: spec_body,
        seeds: spec_seeds,
        dict: SPEC_DICT,
        generate: Some(gen_spec),
    },
    Target {
        name: "watchdog_envelope",
        run: watchdog_envelope,
        seeds: envelope_seeds,
        dict: JSON_DICT,
        generate: Some(gen_envelope),
    },
    Target {
        name: "manifest",
        run: manifest,
        seeds: manifest_seeds,
        dict: YAML_DICT,
        generate: None,
    },
    Target {
        name: "http_response",
        run: http_response,
        seeds: http_seeds,
        dict: HTTP_DICT,
        generate: None,
    },
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn shown(data: &[u8]) -> String {
    let s = String::from_utf8_lossy(data);
    if s.len() > 300 {
        format!(
            "{}… ({} bytes)",
            &s[..s.floor_char_boundary_compat(300)],
            data.len()
        )
    } else {
        s.into_owned()
    }
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// What the Rust runtime reads (and the control plane used to check): serde's own view.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RuntimeView {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// The invocation body as `:invoke` and `:enqueue` check it.
///
/// Properties: an accepted body is passed on unchanged and serde_json reads it as an
/// InvocationRequest; a refused body is a 400 whose message names a place; serde_json accepts
/// nothing that is refused, except what the platform's own limits refuse on purpose (nesting,
/// duplicate keys).
pub fn invocation_body(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let serde_ok = serde_json::from_slice::<RuntimeView>(data).is_ok();
    match api::validate_invocation(body) {
        Ok(out) => {
            let empty = data.iter().all(|b| b" \t\r\n".contains(b));
            if empty {
                assert_eq!(&out[..], b"{\"input\":null}");
            } else {
                assert_eq!(
                    &out[..],
                    data,
                    "an accepted body must be forwarded unchanged"
                );
            }
            assert!(
                serde_json::from_slice::<RuntimeView>(&out).is_ok(),
                "accepted but a runtime could not read it: {}",
                shown(data)
            );
        }
        Err(ApiError::Invalid(v)) => {
            assert!(v.reason.contains(" at line "), "no place: {v}");
            let e = json::check_invocation(data).expect_err("the same checker refused it");
            if serde_ok {
                assert!(
                    // serde also reads a struct written as an array; the contract wants an
                    // object.
                    matches!(
                        e.problem,
                        Problem::TooDeep(_) | Problem::DuplicateKey(_) | Problem::NotAnObject
                    ),
                    "serde_json reads it but it was refused: {e}: {}",
                    shown(data)
                );
            }
        }
        Err(other) => panic!("not a 400: {other:?}"),
    }
}

/// The checker against serde_json on any JSON text, with and without duplicate keys.
pub fn json_rules(data: &[u8]) {
    let serde = serde_json::from_slice::<Value>(data);
    for rules in [Rules::DATA, Rules::STRICT] {
        match json::check(data, rules) {
            Ok(()) => assert!(
                serde.is_ok(),
                "accepted what serde_json refuses ({:?}): {}",
                serde.as_ref().err(),
                shown(data)
            ),
            Err(e) => {
                assert!(e.offset <= data.len());
                if serde.is_ok() {
                    let allowed = match e.problem {
                        Problem::TooDeep(_) => true,
                        Problem::DuplicateKey(_) => rules.reject_duplicate_keys,
                        _ => false,
                    };
                    assert!(
                        allowed,
                        "refused what serde_json reads: {e}: {}",
                        shown(data)
                    );
                }
            }
        }
    }
    if let Ok(v) = &serde {
        // Whatever serde_json writes back is accepted (when not too deep).
        let again = serde_json::to_vec(v).expect("a Value serialises");
        if let Err(e) = json::check(&again, Rules::DATA) {
            assert!(
                matches!(e.problem, Problem::TooDeep(_)),
                "{e}: {}",
                shown(&again)
            );
        }
    }
}

/// `POST /v1/functions` and `PUT /v1/functions/f` bodies.
///
/// Properties: no panic; every refusal is a 400; an accepted spec survives the round trip the
/// registry makes (serialised on disk, read back at start) unchanged.
pub fn spec_body(data: &[u8]) {
    for (put, result) in [
        (false, api::spec_from_body(data)),
        (true, api::spec_for_put("f", data)),
    ] {
        match result {
            Ok(spec) => {
                assert!(json::check(data, Rules::STRICT).is_ok());
                if put {
                    assert_eq!(spec.name, "f");
                }
                let stored = serde_json::to_vec(&spec).expect("a spec serialises");
                match api::spec_from_body(&stored) {
                    Ok(back) => assert_eq!(back, spec, "round trip changed the spec"),
                    Err(e) => panic!(
                        "an accepted spec does not read back: {e}: {}",
                        shown(&stored)
                    ),
                }
            }
            Err(ApiError::Invalid(_)) => {}
            Err(other) => panic!("not a 400: {other:?}"),
        }
    }
}

/// The warm watchdog's `POST /invoke`, both forms.
pub fn watchdog_envelope(data: &[u8]) {
    use nanofaas_watchdog::warm::server::{check_body, parse_envelope};
    if check_body(data).is_ok() {
        assert!(serde_json::from_slice::<Value>(data).is_ok());
    }
    if let Ok(env) = parse_envelope(data, None, Duration::from_secs(30)) {
        assert!(!env.execution_id.is_empty());
        assert!(env.timeout > Duration::ZERO);
        if let Err(e) = json::check(&env.payload, Rules::DATA) {
            panic!(
                "the forwarded payload is not valid: {e}: {}",
                shown(&env.payload)
            );
        }
    }
}

/// The CLI's manifest loader (after the file is read: it reads text).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| match name {
        "HOME" => Some("/home/fuzz".to_string()),
        "X" => Some("x".to_string()),
        _ => None,
    };
    let _ = nanofaas_cli::manifest::parse(
        text,
        Path::new("/srv/fuzz/manifest.yaml"),
        Path::new("/srv/fuzz"),
        &env,
    );
}

/// The hot-path HTTP client reading an instance's answer: `data` is what the instance writes on
/// the connection, then it closes it. Properties: an answer or an error, within the time
/// budget, never a body over the limit.
///
/// Goes through the client's public API over a real Unix socket, so re-pointing it at another
/// client (the hyper-based one replacing `nanofaas-h1`) means changing [`crate::http::exchange`] only.
pub fn http_response(data: &[u8]) {
    let result = crate::http::exchange(data);
    if let Ok((_, body)) = &result {
        assert!(body.len() <= crate::http::MAX_BODY);
    }
}

fn invocation_seeds() -> Vec<Vec<u8>> {
    [
        &b""[..],
        b"{}",
        b"{\"input\":null}",
        b"{\"input\":{\"name\":\"Ada\"}}",
        b"{\"input\":[1,2.5,-3e2,true,false,null,\"s\"],\"metadata\":{\"k\":\"v\"}}",
        b"{\"input\":1}}",
        b"{\"input\":\"\\u00e9\\ud83d\\ude00\"}",
        b" {\n  \"metadata\" : { } ,\n  \"input\" : { \"a\" : [ ] }\n} ",
        b"{\"input\":1e400}",
        b"[1]",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

fn gen_json(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    let depth = 1 + rng.below(6);
    mutate::json_value(rng, depth, &mut v);
    v
}

fn gen_invocation(rng: &mut Rng) -> Vec<u8> {
    let mut v = b"{\"input\":".to_vec();
    let depth = 1 + rng.below(6);
    mutate::json_value(rng, depth, &mut v);
    if rng.chance(2) {
        v.extend_from_slice(b",\"metadata\":{\"trace\":\"t\",\"k\":\"v\"}");
    }
    v.push(b'}');
    v
}

fn gen_envelope(rng: &mut Rng) -> Vec<u8> {
    let mut v = b"{\"execution_id\":\"e-1\",\"payload\":".to_vec();
    v.extend_from_slice(&gen_invocation(rng));
    if rng.chance(2) {
        v.extend_from_slice(b",\"timeout_ms\":");
        v.extend_from_slice(
            rng.pick(&["0", "1", "30000", "18446744073709551615"])
                .as_bytes(),
        );
    }
    if rng.chance(2) {
        v.extend_from_slice(
            b",\"callback_url\":\"http://127.0.0.1:9/cb\",\"callback_token\":\"t\"",
        );
    }
    if rng.chance(3) {
        v.extend_from_slice(b",\"trace_id\":\"tr\\n\"");
    }
    v.push(b'}');
    v
}

fn envelope_seeds() -> Vec<Vec<u8>> {
    [
        &b"{\"execution_id\":\"e1\",\"payload\":{\"input\":1}}"[..],
        b"{\"execution_id\":\"e1\",\"callback_url\":\"http://127.0.0.1:8080/v1/internal/executions\",\"trace_id\":\"t\",\"payload\":{\"input\":{\"a\":[1]}},\"timeout_ms\":5,\"callback_token\":\"x\"}",
        b"{\"input\":{\"a\":1}}",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

const SPEC_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "workingDir",
    "env",
    "resources",
    "timeoutMs",
    "concurrency",
    "queueSize",
    "maxRetries",
    "executionMode",
    "runtimeMode",
    "runtimeCommand",
    "endpointUrl",
    "minInstances",
    "maxInstances",
    "idleTimeoutMs",
    "maxInvocations",
    "instanceConcurrency",
    "rateLimitPerSecond",
];

const SPEC_VALUES: &[&str] = &[
    "\"f\"",
    "\"9bad\"",
    "\"./run\"",
    "[\"./run\",\"a b\"]",
    "[]",
    "\"\"",
    "0",
    "1",
    "-1",
    "4294967296",
    "3600001",
    "1e400",
    "0.5",
    "null",
    "true",
    "{\"A\":\"1\"}",
    "{\"A\":\"1\",\"A\":\"2\"}",
    "{\"NANOFAAS_X\":\"1\"}",
    "{\"memory\":\"128Mi\",\"cpu\":\"0.5\"}",
    "{\"memory\":\"4Mi\"}",
    "{\"memory\":\"99999999999Ei\"}",
    "{\"cpu\":\"1e400\"}",
    "\"POOL\"",
    "\"DEPLOYMENT\"",
    "\"JOB\"",
    "\"HTTP\"",
    "\"STDIO\"",
    "\"FILE\"",
    "\"http://127.0.0.1:1/x\"",
    "\"https://x\"",
    "\"http://[::1]:99999\"",
    "\"img:latest\"",
    "\"/tmp\"",
];

fn gen_spec(rng: &mut Rng) -> Vec<u8> {
    let mut v = b"{\"name\":\"f\"".to_vec();
    for _ in 0..rng.below(7) {
        v.push(b',');
        v.push(b'"');
        v.extend_from_slice(rng.pick(SPEC_FIELDS).as_bytes());
        v.extend_from_slice(b"\":");
        if rng.chance(5) {
            mutate::json_value(rng, 3, &mut v);
        } else {
            v.extend_from_slice(rng.pick(SPEC_VALUES).as_bytes());
        }
    }
    v.push(b'}');
    v
}

fn spec_seeds() -> Vec<Vec<u8>> {
    [
        &br#"{"name":"f","executionMode":"POOL","endpointUrl":"http://127.0.0.1:1/"}"#[..],
        br#"{"name":"f","command":["./run"],"env":{"A":"1"},"timeoutMs":1000,"resources":{"memory":"64Mi","cpu":"0.5"},"maxInstances":2}"#,
        br#"{"name":"f","command":"python3 -m x","runtimeMode":"STDIO","executionMode":"JOB"}"#,
        br#"{"name":"f","image":"nanofaas/x:1","rateLimitPerSecond":2.5,"idleTimeoutMs":10}"#,
        br#"{"executionMode":"POOL","endpointUrl":"http://h/"}"#,
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

const SPEC_DICT: &[&[u8]] = &[
    b"\"name\":",
    b"\"command\":",
    b"\"env\":",
    b"\"resources\":",
    b"\"memory\":",
    b"\"cpu\":",
    b"\"timeoutMs\":",
    b"\"executionMode\":",
    b"\"runtimeMode\":",
    b"\"endpointUrl\":",
    b"\"image\":",
    b"\"64Mi\"",
    b"\"0.5\"",
    b"\"1e400\"",
    b"1e400",
    b"4294967296",
    b"18446744073709551616",
    b"-1",
    b"\"POOL\"",
    b"\"JOB\"",
    b"\"STDIO\"",
    b"\"http://",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"\\u0000",
    b"\xff",
];

fn manifest_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        "functions:\n  - name: f\n    command: ./run\n",
        "setup:\n  - name: s\n    run: echo hi\nfunctions:\n  - name: f\n    command: ${MANIFEST_DIR}/x ${X}\n    env: { A: \"${HOME}\" }\n    timeoutMs: 10\nexample:\n  function: f\n  input: { name: world }\n",
        "functions:\n  - &a { name: f, command: ./run }\n  - *a\n",
        "functions: [{name: f, executionMode: POOL, endpointUrl: \"http://127.0.0.1:1/\"}]\n",
        "functions:\n  - name: f\n    command: [\"./a\", \"b\"]\n    workingDir: ../x\n    resources: {memory: 64Mi, cpu: \"0.5\"}\n",
        // Shapes the YAML limits guard: merge keys, alias fan-out, a second document.
        "x-d: &d {timeoutMs: 5, env: {A: yes, B: 0755}}\nfunctions:\n  - <<: *d\n    name: f\n    command: x\n",
        "x-a: &a [l, l, l, l]\nx-b: &b [*a, *a, *a, *a]\nx-c: &c [*b, *b, *b, *b]\nfunctions: []\n---\nfunctions: []\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    seeds.push(include_bytes!("../../../examples/manifest.yaml").to_vec());
    seeds
}

const YAML_DICT: &[&[u8]] = &[
    b"\n",
    b"  ",
    b"- ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"&a ",
    b"*a",
    b"<<: *a",
    b"!!str ",
    b"!!binary ",
    b"? ",
    b"|\n",
    b">-\n",
    b"---\n",
    b"...\n",
    b"${",
    b"${X}",
    b"${MANIFEST_DIR}",
    b"${HOME}",
    b"${NOPE}",
    b"$${X}",
    b"~",
    b"null",
    b"name: ",
    b"command: ",
    b"functions:\n",
    b"setup:\n",
    b"example:\n",
    b"env: ",
    b"workingDir: ",
    b"timeoutMs: ",
    b"1e400",
    b"0x10",
    b"\"",
    b"'",
    b"#",
    b"\t",
    b"\xef\xbb\xbf",
    b"%YAML 1.2\n",
];

fn http_seeds() -> Vec<Vec<u8>> {
    [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Internal\r\ncontent-length: 5\r\nconnection: close\r\n\r\nerror",
        b"HTTP/1.0 200 OK\r\n\r\nuntil close",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\ntrailer: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n2\r\nbc\r\n0\r\n\r\n",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

const HTTP_DICT: &[&[u8]] = &[
    b"HTTP/1.1 ",
    b"HTTP/1.0 ",
    b"200 OK",
    b"100 Continue",
    b"101 Switching",
    b"204",
    b"304",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b": ",
    b"content-length: ",
    b"Content-Length: 18446744073709551615",
    b"content-length: -1",
    b"content-length: 1, 2",
    b"transfer-encoding: chunked",
    b"transfer-encoding: gzip, chunked",
    b"connection: close",
    b"connection: keep-alive",
    b"ffffffffffffffff",
    b"fffffffffffffff0",
    b"7fffffffffffffff",
    b"0\r\n\r\n",
    b"1\r\n",
    b";ext",
    b"trailer: x\r\n",
    b"0",
    b"9",
    b"\x00",
    b"\xff",
];
