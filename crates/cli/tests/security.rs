//! Access to the API, against the real `nanofaas serve`: every route for every role as the table
//! of docs/security.md says (allowed: neither 401 nor 403; denied: 403; no token: 401), the CLI
//! with NANOFAAS_TOKEN and --token, browser-style requests (415, 403, 421, no CORS headers), the
//! refusal to listen beyond loopback without tokens (exit code 12) and the risk flag.
//!
//! Needs the workspace's binaries built in the same profile (`cargo build --workspace --bins`).

use nanofaas_control_plane::access::{hash_token, hex};
use nanofaas_testkit::{http, serve_nanofaas, Proc, Stream};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const NANOFAAS: &str = env!("CARGO_BIN_EXE_nanofaas");

const ADMIN: &str = "nf_test-admin-token";
const DEPLOYER: &str = "nf_test-deployer-token";
const INVOKER: &str = "nf_test-invoker-token";
const VIEWER: &str = "nf_test-viewer-token";

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nanofaas-sec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tokens_setting() -> String {
    let h = |t: &str| hex(&hash_token(t));
    format!(
        "api.tokens=admin:{} deployer:{} invoker:{}:allowed-*,exact-fn viewer:{}",
        h(ADMIN),
        h(DEPLOYER),
        h(INVOKER),
        h(VIEWER)
    )
}

async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> nanofaas_testkit::Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    http(method, url, &headers, body.to_string())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

fn pool(name: &str) -> String {
    // Nothing listens on port 9: invocations fail fast, which is not what is tested here.
    json!({"name": name, "executionMode": "POOL", "endpointUrl": "http://127.0.0.1:9/invoke", "maxRetries": 1})
        .to_string()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum R {
    Admin,
    Deployer,
    Invoker,
    Viewer,
}

const ROLES: [(R, &str); 4] = [
    (R::Admin, ADMIN),
    (R::Deployer, DEPLOYER),
    (R::Invoker, INVOKER),
    (R::Viewer, VIEWER),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_role() {
    let state = temp_dir("roles");
    let (_cp, base) = serve_nanofaas(
        &state,
        &[
            tokens_setting(),
            "provider.type=none".into(),
            "api.protect_metrics=true".into(),
        ],
    )
    .await;
    let url = |p: &str| format!("{base}{p}");
    // Fixtures, made by the admin.
    for f in ["allowed-fn", "other-fn", "exact-fn"] {
        let r = call("POST", &url("/v1/functions"), Some(ADMIN), &pool(f)).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let enqueue = |f: &'static str| {
        let u = url(&format!("/v1/functions/{f}:enqueue"));
        async move {
            let r = call("POST", &u, Some(ADMIN), "{\"input\":1}").await;
            assert_eq!(r.status, 202, "{}", r.text());
            r.json()["executionId"].as_str().unwrap().to_string()
        }
    };
    let allowed_exec = enqueue("allowed-fn").await;
    let other_exec = enqueue("other-fn").await;

    use R::*;
    // (method, path, body, roles allowed). `{role}` in a path or body is the role's name, so
    // that creations and deletions of one role do not meet another's.
    let all = &[Admin, Deployer, Invoker, Viewer][..];
    let cases: Vec<(&str, String, String, &[R])> = vec![
        (
            "GET",
            "/metrics".into(),
            String::new(),
            &[Admin, Deployer, Viewer],
        ),
        (
            "GET",
            "/v1/functions".into(),
            String::new(),
            &[Admin, Deployer, Viewer],
        ),
        (
            "POST",
            "/v1/functions".into(),
            pool("made-by-{role}"),
            &[Admin, Deployer],
        ),
        (
            "GET",
            "/v1/functions/allowed-fn".into(),
            String::new(),
            &[Admin, Deployer, Viewer],
        ),
        (
            "PUT",
            "/v1/functions/put-by-{role}".into(),
            pool("put-by-{role}"),
            &[Admin, Deployer],
        ),
        (
            "DELETE",
            "/v1/functions/put-by-{role}".into(),
            String::new(),
            &[Admin, Deployer],
        ),
        (
            "GET",
            "/v1/functions/allowed-fn/instances".into(),
            String::new(),
            &[Admin, Deployer, Viewer],
        ),
        (
            "POST",
            "/v1/functions/allowed-fn:invoke".into(),
            "{\"input\":1}".into(),
            &[Admin, Deployer, Invoker],
        ),
        (
            "POST",
            "/v1/functions/exact-fn:invoke".into(),
            "{\"input\":1}".into(),
            &[Admin, Deployer, Invoker],
        ),
        (
            "POST",
            "/v1/functions/other-fn:invoke".into(),
            "{\"input\":1}".into(),
            &[Admin, Deployer],
        ),
        (
            "POST",
            "/v1/functions/allowed-fn:enqueue".into(),
            "{\"input\":1}".into(),
            &[Admin, Deployer, Invoker],
        ),
        (
            "POST",
            "/v1/functions/other-fn:enqueue".into(),
            "{\"input\":1}".into(),
            &[Admin, Deployer],
        ),
        (
            "GET",
            format!("/v1/executions/{allowed_exec}"),
            String::new(),
            all,
        ),
        (
            "GET",
            format!("/v1/executions/{other_exec}"),
            String::new(),
            &[Admin, Deployer, Viewer],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, allowed) in &cases {
        // No token: 401 with a Bearer challenge.
        let p = path.replace("{role}", "none");
        let r = call(method, &url(&p), None, &body.replace("{role}", "none")).await;
        if r.status != 401 || r.header("www-authenticate") != Some("Bearer") {
            failures.push(format!(
                "{method} {p} without a token: {} {:?}",
                r.status,
                r.header("www-authenticate")
            ));
        }
        // A wrong token: 401 too.
        let r = call(
            method,
            &url(&p),
            Some("nf_wrong"),
            &body.replace("{role}", "none"),
        )
        .await;
        if r.status != 401 {
            failures.push(format!("{method} {p} with a wrong token: {}", r.status));
        }
        for (role, token) in ROLES {
            let name = format!("{role:?}").to_lowercase();
            let p = path.replace("{role}", &name);
            let r = call(
                method,
                &url(&p),
                Some(token),
                &body.replace("{role}", &name),
            )
            .await;
            let ok = if allowed.contains(&role) {
                r.status != 401 && r.status != 403
            } else {
                r.status == 403 && r.json()["error"]["code"] == "FORBIDDEN"
            };
            if !ok {
                failures.push(format!(
                    "{method} {p} as {name}: {} (allowed: {})",
                    r.status,
                    allowed.contains(&role)
                ));
            }
        }
    }
    // Probes stay open.
    for p in ["/healthz", "/readyz"] {
        let r = call("GET", &url(p), None, "").await;
        if r.status != 200 {
            failures.push(format!("GET {p} without a token: {}", r.status));
        }
    }
    // The callback route takes no API token: a made-up callback token is refused by the
    // callback check itself (403, no Bearer challenge), not by the API's.
    let r = http(
        "POST",
        &url(&format!("/v1/internal/executions/{allowed_exec}:complete")),
        &[("x-callback-token", "1.00000000000000000000000000000000")],
        "{\"success\":true,\"output\":1,\"error\":null}",
    )
    .await
    .unwrap();
    if r.status != 403 || r.header("www-authenticate").is_some() {
        failures.push(format!(
            "callback without an API token: {} {}",
            r.status,
            r.text()
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(NANOFAAS);
    cmd.args(args).env_remove("NANOFAAS_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::spawn(cmd).unwrap();
    let status = p
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("nanofaas {args:?} did not exit: {}", p.output()));
    (
        status.code().unwrap_or(-1),
        p.lines(Stream::Stdout).join("\n"),
        p.lines(Stream::Stderr).join("\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_its_token() {
    let state = temp_dir("cli");
    let (_cp, base) =
        serve_nanofaas(&state, &[tokens_setting(), "provider.type=none".into()]).await;
    // Without a token: exit code 13 and what to do.
    let (code, _, err) = cli(&["--endpoint", &base, "fn", "list"], &[]);
    assert_eq!(code, 13, "{err}");
    assert!(err.contains("NANOFAAS_TOKEN"), "{err}");
    // NANOFAAS_TOKEN.
    let (code, out, err) = cli(
        &["--endpoint", &base, "fn", "list", "-o", "json"],
        &[("NANOFAAS_TOKEN", VIEWER)],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    // --token, and a role that may not: 13 again, with the reason.
    let (code, _, err) = cli(
        &["--endpoint", &base, "--token", INVOKER, "fn", "list"],
        &[],
    );
    assert_eq!(code, 13, "{err}");
    assert!(err.contains("invoker"), "{err}");
    // A deployment with the deployer's token, then an invocation by the invoker.
    let manifest = state.join("m.yaml");
    std::fs::write(
        &manifest,
        "functions:\n  - name: allowed-one\n    executionMode: POOL\n    endpointUrl: http://127.0.0.1:9/invoke\n    maxRetries: 1\n",
    )
    .unwrap();
    let (code, _, err) = cli(
        &[
            "--endpoint",
            &base,
            "fn",
            "apply",
            "-f",
            manifest.to_str().unwrap(),
        ],
        &[("NANOFAAS_TOKEN", DEPLOYER)],
    );
    assert_eq!(code, 0, "{err}");
    // Nothing answers on port 9: a function error (7), which means the call was let in.
    let (code, _, err) = cli(
        &["--endpoint", &base, "invoke", "allowed-one", "-d", "1"],
        &[("NANOFAAS_TOKEN", INVOKER)],
    );
    assert_eq!(code, 7, "{err}");
    // token create prints a token that the server then accepts.
    let (code, out, err) = cli(&["token", "create", "--role", "viewer", "-o", "json"], &[]);
    assert_eq!(code, 0, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(made["role"], "viewer");
    assert!(made["entry"].as_str().unwrap().starts_with("viewer:"));
    let (code, _, err) = cli(&["token", "create", "--role", "root"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_style_requests_are_refused() {
    let state = temp_dir("browser");
    let (_cp, base) = serve_nanofaas(&state, &["provider.type=none".into()]).await;
    let url = |p: &str| format!("{base}{p}");
    let spec = pool("from-a-page");
    let post = |headers: Vec<(&'static str, String)>, body: String| {
        let u = url("/v1/functions");
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http("POST", &u, &h, body).await.unwrap()
        }
    };
    // text/plain and form bodies: 415.
    for ct in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = post(vec![("content-type", ct.into())], spec.clone()).await;
        assert_eq!(r.status, 415, "{ct}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
    }
    // A foreign Origin: 403, without CORS headers.
    let r = post(
        vec![
            ("content-type", "application/json".into()),
            ("origin", "http://evil.example".into()),
        ],
        spec.clone(),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.header("access-control-allow-origin").is_none());
    // A Host that is a foreign name (DNS rebinding): 421.
    let r = post(
        vec![
            ("content-type", "application/json".into()),
            ("host", "rebind.evil.example:8080".into()),
        ],
        spec.clone(),
    )
    .await;
    assert_eq!(r.status, 421, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "MISDIRECTED_REQUEST");
    // An invocation as text/plain: 415 too.
    let r = http(
        "POST",
        &url("/v1/functions/x:invoke"),
        &[("content-type", "text/plain")],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415);
    // Nothing was registered; `charset` is fine; localhost names are fine.
    assert_eq!(
        call("GET", &url("/v1/functions"), None, "").await.json(),
        json!([])
    );
    let r = post(
        vec![
            ("content-type", "application/json; charset=utf-8".into()),
            ("host", "localhost".into()),
        ],
        spec.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_origins_get_cors_answers() {
    let state = temp_dir("cors");
    let (_cp, base) = serve_nanofaas(
        &state,
        &[
            "provider.type=none".into(),
            "api.allowed_origins=https://app.example.com".into(),
        ],
    )
    .await;
    let r = http(
        "OPTIONS",
        &format!("{base}/v1/functions"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    let r = http(
        "GET",
        &format!("{base}/v1/functions"),
        &[("origin", "https://app.example.com")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("vary"), Some("origin"));
    let r = http(
        "GET",
        &format!("{base}/v1/functions"),
        &[("origin", "https://other.example.com")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
}

/// `nanofaas serve` with `args`; waits for it to exit (Some(code)) or to listen (None).
fn serve_outcome(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(NANOFAAS);
    cmd.arg("serve")
        .args(["--state-dir", "", "--set", "provider.type=none"])
        .args(args)
        .env_remove("NANOFAAS_API_TOKENS")
        .env_remove("NANOFAAS_API_INSECURE_NO_AUTH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::spawn(cmd).unwrap();
    let listening = p
        .wait_line(Stream::Stdout, Duration::from_secs(30), |l| {
            l.starts_with("nanofaas listening on")
        })
        .is_some();
    if listening {
        let out = p.output();
        p.kill();
        return (None, out);
    }
    let code = p.wait_exit(Duration::from_secs(30)).and_then(|s| s.code());
    (Some(code.unwrap_or(-1)), p.output())
}

#[test]
fn beyond_loopback_only_with_tokens_or_the_risk_flag() {
    let (code, out) = serve_outcome(&["--listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, Some(12), "{out}");
    assert!(
        out.contains("refusing to listen on 0.0.0.0:0 with no API tokens"),
        "{out}"
    );
    assert!(out.contains("--insecure-no-auth"), "{out}");
    let (code, out) = serve_outcome(&["--listen", "[::]:0"], &[]);
    assert_eq!(code, Some(12), "{out}");
    // The risk flag, or its setting.
    let (code, out) = serve_outcome(&["--listen", "0.0.0.0:0", "--insecure-no-auth"], &[]);
    assert_eq!(code, None, "{out}");
    let (code, out) = serve_outcome(
        &["--listen", "0.0.0.0:0"],
        &[("NANOFAAS_API_INSECURE_NO_AUTH", "true")],
    );
    assert_eq!(code, None, "{out}");
    // With a token: starts.
    let entry = format!("admin:{}", hex(&hash_token(ADMIN)));
    let (code, out) = serve_outcome(
        &["--listen", "0.0.0.0:0"],
        &[("NANOFAAS_API_TOKENS", &entry)],
    );
    assert_eq!(code, None, "{out}");
    // Loopback without tokens: starts, and says the API is open to local users.
    let mut cmd = Command::new(NANOFAAS);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        "",
        "--set",
        "provider.type=none",
    ])
    .env_remove("NANOFAAS_API_TOKENS");
    let p = Proc::spawn(cmd).unwrap();
    assert!(
        p.wait_line(Stream::Stderr, Duration::from_secs(30), |l| l
            .contains("no API tokens configured"))
            .is_some(),
        "{}",
        p.output()
    );
}
