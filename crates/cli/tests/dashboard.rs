//! The dashboard at `/ui` in a real browser: headless Chromium, driven over the DevTools protocol
//! (on a pipe: `--remote-debugging-pipe`, no WebSocket), against the real `nanofaas serve` running
//! real functions with the process provider. It checks that the page loads with no console
//! error (a CSP violation or a failed asset would be one), shows the functions and their pools,
//! updates after invocations without reloading, opens an execution's logs and trace from the
//! keyboard, and asks for a token (then works with a viewer token) where the API has tokens.
//!
//! Screenshots at laptop and phone sizes are written to `target/dashboard/` (`laptop.png`,
//! `phone.png`, `phone-execution.png`, `laptop-execution.png`).
//!
//! Needs Chromium (`apt-get install -y chromium`; `scripts/test.sh` installs it where missing).
//! Skipped with a loud message where it cannot run; mandatory with NANOFAAS_REQUIRE_DOCKER=1.

use nanofaas_control_plane::access::{hash_token, hex};
use nanofaas_testkit::{http, serve_nanofaas, workspace_bin, Proc};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn chromium() -> Option<String> {
    if let Ok(c) = std::env::var("NANOFAAS_CHROMIUM") {
        return Some(c);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|c| c.to_string())
}

fn skip_or_fail(why: &str) {
    if std::env::var("NANOFAAS_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!("the dashboard browser test is mandatory here (NANOFAAS_REQUIRE_DOCKER=1): {why}");
    }
    eprintln!("\n!!!!! SKIPPED the dashboard browser test: {why} !!!!!\n");
}

/// Where the screenshots go: `<target>/dashboard/`.
fn artifacts() -> PathBuf {
    let bin = workspace_bin("nanofaas");
    // <target>/<profile>/nanofaas
    let target = bin.parent().and_then(|p| p.parent()).expect("target dir");
    let d = target.join("dashboard");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let Some(v) = val(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A browser driven over the DevTools protocol on fds 3 (its input) and 4 (its output).
struct Browser {
    proc: Proc,
    to: File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    /// Every event seen, in order.
    events: Vec<Value>,
}

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

impl Browser {
    fn start(chrome: &str, profile: &std::path::Path) -> std::io::Result<Browser> {
        let (child_in, to) = pipe();
        let (from_r, child_out) = pipe();
        let (cin, cout) = (child_in.into_raw_fd(), child_out.into_raw_fd());
        let mut cmd = Command::new(chrome);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--remote-debugging-pipe",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cin, 3) < 0 || libc::dup2(cout, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let proc = Proc::spawn(cmd);
        unsafe {
            libc::close(cin);
            libc::close(cout);
        }
        let proc = proc?;
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_r);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if msg.last() == Some(&0) {
                            msg.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&msg) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            proc,
            to,
            from,
            next: 0,
            session: String::new(),
            events: Vec::new(),
        };
        let t = b.call_on(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target = t["targetId"].as_str().unwrap_or_default().to_string();
        let s = b.call_on(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        b.session = s["sessionId"].as_str().unwrap_or_default().to_string();
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(m, json!({}));
        }
        Ok(b)
    }

    fn call_on(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> std::io::Result<Value> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.from.recv_timeout(left).map_err(|_| {
                std::io::Error::other(format!(
                    "no answer to {method} within 60 s:\n{}",
                    self.proc.output()
                ))
            })?;
            if v["id"].as_u64() == Some(id) {
                if !v["error"].is_null() {
                    return Err(std::io::Error::other(format!("{method}: {}", v["error"])));
                }
                return Ok(v["result"].clone());
            }
            self.events.push(v);
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.call_on(Some(&s), method, params)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("{expr}\nthrew: {ex}\nconsole: {:?}", self.problems(&[]));
        }
        r["result"]["value"].clone()
    }

    /// Waits, inside the page, until `cond` (a JS expression) is truthy; returns its value. The
    /// page checks it at every change of the document, and fails after `secs` seconds.
    fn wait(&mut self, cond: &str, secs: u64) -> Value {
        let js = format!(
            r#"new Promise((resolve, reject) => {{
  const check = () => {{ try {{ return ({cond}); }} catch (e) {{ return null; }} }};
  const first = check();
  if (first) return resolve(first);
  const obs = new MutationObserver(() => {{ const v = check(); if (v) {{ obs.disconnect(); clearTimeout(t); resolve(v); }} }});
  obs.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
  const t = setTimeout(() => {{ obs.disconnect(); reject(new Error("timed out waiting for: " + {cond_str})); }}, {ms});
}})"#,
            cond_str = serde_json::to_string(cond).unwrap(),
            ms = secs * 1000
        );
        let v = self.eval(&js);
        assert!(
            !v.is_null(),
            "{cond} gave null; page: {}",
            self.eval("document.body.innerText")
        );
        v
    }

    fn size(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = b64decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let p = artifacts().join(name);
        std::fs::write(&p, png).unwrap();
        eprintln!("dashboard test: screenshot {}", p.display());
        p
    }

    fn key(&mut self, key: &str, code: &str, keycode: u32) {
        for t in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": t, "key": key, "code": code, "windowsVirtualKeyCode": keycode,
                       "text": if t == "keyDown" && key == "Enter" { "\r" } else { "" }}),
            );
        }
    }

    /// Console errors, uncaught exceptions and failed loads seen so far, but for network
    /// errors of URLs that end with one of `allowed` (expected answers such as a 404).
    fn problems(&self, allowed: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.events {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => out.push(format!("exception: {p}")),
                Some("Runtime.consoleAPICalled")
                    if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                {
                    out.push(format!("console.{}: {}", p["type"], p["args"]))
                }
                Some("Log.entryAdded") => {
                    let entry = &p["entry"];
                    if entry["level"] != "error" {
                        continue;
                    }
                    let url = entry["url"].as_str().unwrap_or("");
                    if entry["source"] == "network" && allowed.iter().any(|a| url.ends_with(a)) {
                        continue;
                    }
                    out.push(format!("log: {entry}"));
                }
                _ => {}
            }
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

async fn invoke(base: &str, name: &str, input: Value) -> Value {
    let r = http(
        "POST",
        &format!("{base}/v1/functions/{name}:invoke"),
        &[("content-type", "application/json")],
        json!({ "input": input }).to_string(),
    )
    .await
    .unwrap();
    r.json()
}

async fn register(base: &str, spec: Value, token: Option<&str>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let r = http(
        "POST",
        &format!("{base}/v1/functions"),
        &headers,
        spec.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A python3 every user can run (instances may run as a user of their own).
fn system_python() -> &'static str {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("the dashboard test needs a system python3 (/usr/bin/python3)")
}

/// The printing runtime: the runtime contract's `GET /health` and `POST /invoke` on `$PORT`.
const PRINTER: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(b'{"status":"ok"}')
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        print("printed-by-the-dashboard-test", flush=True)
        self.answer(b'{"printed":true}')
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), H).serve_forever()
"#;

/// Calls of `echo` made while the page is open.
const LOAD: usize = 40;

fn specs() -> (Value, Value) {
    let echo = json!({
        "name": "echo",
        "command": [workspace_bin("nanofaas-test-runtime")],
    });
    // A warm HTTP runtime that prints a line while it serves each call (one call at a time, so
    // where executions keep their logs, the line is this execution's).
    let printer = json!({
        "name": "printer",
        "command": [system_python(), "-c", PRINTER],
    });
    (echo, printer)
}

#[test]
fn the_dashboard_shows_functions_live_and_opens_an_execution() {
    let Some(chrome) = chromium() else {
        skip_or_fail("no chromium found (apt-get install -y chromium, or set NANOFAAS_CHROMIUM)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("nanofaas-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_cp, base) = rt.block_on(serve_nanofaas(&dir.join("state"), &[]));
    let (echo, printer) = specs();
    let first = rt.block_on(async {
        register(&base, echo, None).await;
        register(&base, printer, None).await;
        for i in 0..5 {
            invoke(&base, "echo", json!({"sleepMs": 5 * i})).await;
        }
        invoke(&base, "echo", json!({"fail": "on purpose"})).await;
        invoke(&base, "printer", json!("hi")).await
    });
    let printed_id = first["executionId"].as_str().unwrap().to_string();
    // Whether this build keeps per-execution logs and traces (other slices of the same issue);
    // without them the page must say "not available".
    let (logs_route, trace_route) = rt.block_on(async {
        let probe = |part: &'static str| {
            let url = format!("{base}/v1/executions/{printed_id}/{part}");
            async move {
                let r = http("GET", &url, &[], "").await.unwrap();
                !(r.status == 404 && r.text().contains("no route"))
            }
        };
        (probe("logs").await, probe("trace").await)
    });
    let mut allowed: Vec<&str> = Vec::new();
    if !logs_route {
        allowed.push("/logs");
    }
    if !trace_route {
        allowed.push("/trace");
    }

    let mut b = match Browser::start(&chrome, &dir.join("profile")) {
        Ok(b) => b,
        Err(e) => {
            skip_or_fail(&format!("cannot drive {chrome}: {e}"));
            return;
        }
    };
    b.size(1280, 900, false);
    b.call("Page.navigate", json!({"url": format!("{base}/ui/")}));
    // The functions and their pools.
    b.wait("document.body.dataset.conn === 'ok'", 30);
    b.wait(
        "document.querySelector('[data-function=\"echo\"] .chip[data-state=\"ready\"]')?.dataset.count >= 1",
        30,
    );
    b.wait("document.querySelector('[data-function=\"printer\"]')", 10);
    b.wait(
        &format!("document.querySelector('tr[data-id=\"{printed_id}\"]')"),
        10,
    );
    // The charts come with the first sample after the function was seen (each second).
    b.wait(
        "document.querySelectorAll('[data-function=\"echo\"] svg.chart path').length >= 2",
        10,
    );
    let text = b.eval("document.querySelector('[data-function=\"echo\"]').innerText");
    let text = text.as_str().unwrap_or_default();
    for want in [
        "DEPLOYMENT",
        "ready",
        "busy",
        "prewarmed",
        "p99",
        "cold / warm",
        "Requests / s",
        "Latency",
    ] {
        assert!(text.contains(want), "{want:?} not on echo's card: {text}");
    }
    // The charts are drawn (a path per series with data).
    let paths =
        b.eval("document.querySelectorAll('[data-function=\"echo\"] svg.chart path').length");
    assert!(paths.as_u64().unwrap_or(0) >= 2, "charts: {paths}");
    b.wait(
        "document.querySelector('[data-function=\"echo\"] .stat.bad b')?.textContent === '1'",
        10,
    );

    // Live: invocations made now appear without a reload.
    b.eval("window.__sameDocument = 42");
    let later: Vec<String> = rt.block_on(async {
        // A few seconds of traffic, one call at a time (so one instance: one cold start).
        for i in 0..LOAD {
            invoke(&base, "echo", json!({"sleepMs": (i % 10) * 25})).await;
            if i % 4 == 0 {
                invoke(&base, "printer", json!(i)).await;
            }
        }
        let mut ids = Vec::new();
        for _ in 0..3 {
            let v = invoke(&base, "echo", json!({"sleepMs": 30})).await;
            ids.push(v["executionId"].as_str().unwrap().to_string());
        }
        ids
    });
    let printed_id = rt.block_on(invoke(&base, "printer", json!("last")))["executionId"]
        .as_str()
        .unwrap()
        .to_string();
    for id in later.iter().chain([&printed_id]) {
        b.wait(
            &format!("document.querySelector('tr[data-id=\"{id}\"]')"),
            10,
        );
    }
    assert_eq!(
        b.eval("window.__sameDocument"),
        json!(42),
        "the page reloaded"
    );
    // The counters reach the charts within a sample or two: 1 cold start, then all warm.
    b.wait(
        &format!(
            "document.querySelector('[data-function=\"echo\"] .stat.starts b')?.textContent === '1 / {}'",
            5 + LOAD + later.len()
        ),
        10,
    );
    b.screenshot("laptop.png");

    // An execution's logs and trace, opened from the keyboard.
    b.eval(&format!(
        "document.querySelector('tr[data-id=\"{printed_id}\"]').focus(); document.activeElement.dataset.id"
    ));
    b.key("Enter", "Enter", 13);
    b.wait("!document.getElementById('detail').hidden", 5);
    b.wait(
        "['loaded', 'unavailable'].includes(document.getElementById('logs').dataset.state) && ['loaded', 'unavailable'].includes(document.getElementById('trace').dataset.state)",
        10,
    );
    if logs_route {
        b.wait(
            "document.getElementById('logs').innerText.includes('printed-by-the-dashboard-test')",
            10,
        );
    }
    let logs = b.eval("document.getElementById('logs').dataset.state + ': ' + document.getElementById('logs').innerText");
    let logs = logs.as_str().unwrap_or_default().to_string();
    if logs_route {
        assert!(
            logs.starts_with("loaded") && logs.contains("printed-by-the-dashboard-test"),
            "logs: {logs}"
        );
    } else {
        assert!(
            logs.starts_with("unavailable") && logs.contains("not available"),
            "logs: {logs}"
        );
    }
    let trace = b.eval("document.getElementById('trace').dataset.state + ': ' + document.getElementById('trace').innerText");
    let trace = trace.as_str().unwrap_or_default().to_string();
    if trace_route {
        assert!(trace.starts_with("loaded"), "trace: {trace}");
    } else {
        assert!(trace.contains("not available"), "trace: {trace}");
    }
    b.screenshot("laptop-execution.png");
    // Escape closes it and gives the focus back to the row.
    b.key("Escape", "Escape", 27);
    b.wait("document.getElementById('detail').hidden", 5);
    assert_eq!(
        b.eval("document.activeElement.dataset.id || ''"),
        json!(printed_id),
        "the focus did not return to the row"
    );

    // A phone.
    b.size(390, 844, true);
    b.wait("window.innerWidth === 390", 5);
    let width = b.eval("document.documentElement.scrollWidth");
    assert!(
        width.as_u64().unwrap_or(9999) <= 390,
        "the page is wider than the phone: {width}"
    );
    b.screenshot("phone.png");
    b.eval(&format!(
        "document.querySelector('tr[data-id=\"{printed_id}\"]').click()"
    ));
    b.wait("document.getElementById('logs').dataset.state !== 'loading' && !document.getElementById('detail').hidden", 10);
    b.screenshot("phone-execution.png");

    let problems = b.problems(&allowed);
    assert!(problems.is_empty(), "console errors: {problems:#?}");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With API tokens, the page asks for one; a viewer token works, a wrong one is refused.
#[test]
fn the_dashboard_asks_for_a_token_where_the_api_has_them() {
    let Some(chrome) = chromium() else {
        skip_or_fail("no chromium found (apt-get install -y chromium, or set NANOFAAS_CHROMIUM)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("nanofaas-dashboard-tok-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (admin, viewer) = ("nf_dashboard_admin", "nf_dashboard_viewer");
    let tokens = format!(
        "api.tokens=admin:{} viewer:{}",
        hex(&hash_token(admin)),
        hex(&hash_token(viewer))
    );
    let (_cp, base) = rt.block_on(serve_nanofaas(&dir.join("state"), &[tokens]));
    rt.block_on(register(&base, specs().0, Some(admin)));
    // Without a token the data routes are refused; the page itself holds no data.
    let r = rt
        .block_on(http("GET", &format!("{base}/v1/ui/snapshot"), &[], ""))
        .unwrap();
    assert_eq!(r.status, 401);
    let page = rt
        .block_on(http("GET", &format!("{base}/ui"), &[], ""))
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(!page.text().contains("echo"));

    let mut b = match Browser::start(&chrome, &dir.join("profile")) {
        Ok(b) => b,
        Err(e) => {
            skip_or_fail(&format!("cannot drive {chrome}: {e}"));
            return;
        }
    };
    b.size(1280, 900, false);
    b.call("Page.navigate", json!({"url": format!("{base}/ui/")}));
    b.wait("!document.getElementById('login').hidden", 20);
    b.wait("document.activeElement.id === 'token'", 5);
    b.call("Input.insertText", json!({"text": "nf_wrong"}));
    b.key("Enter", "Enter", 13);
    b.wait(
        "document.getElementById('login-error').textContent.includes('not valid')",
        10,
    );
    b.call("Input.insertText", json!({"text": viewer}));
    b.key("Enter", "Enter", 13);
    b.wait("document.querySelector('[data-function=\"echo\"]')", 20);
    assert_eq!(
        b.eval("sessionStorage.getItem('nanofaas.token')"),
        json!(viewer)
    );
    assert!(b.eval("document.getElementById('login').hidden") == json!(true));
    // The two refusals of the stream (401) are the only failed loads.
    let problems = b.problems(&["/v1/ui/stream"]);
    assert!(problems.is_empty(), "console errors: {problems:#?}");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without a browser: the headers of the page and its assets, and the same guards as the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_routes_are_guarded_like_the_api() {
    let dir =
        std::env::temp_dir().join(format!("nanofaas-dashboard-routes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (viewer, invoker) = ("nf_routes_viewer", "nf_routes_invoker");
    let tokens = format!(
        "api.tokens=viewer:{} invoker:{}",
        hex(&hash_token(viewer)),
        hex(&hash_token(invoker))
    );
    let (_cp, base) =
        serve_nanofaas(&dir.join("state"), &[tokens, "provider.type=none".into()]).await;
    let get = |path: &str, headers: &[(&str, &str)]| {
        let (url, headers): (String, Vec<(String, String)>) = (
            format!("{base}{path}"),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http("GET", &url, &h, "").await.unwrap()
        }
    };
    let page = get("/ui", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let csp = page
        .header("content-security-policy")
        .unwrap_or_default()
        .to_string();
    for want in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(want), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    // Every asset the page names is served, versioned and cached for good, with its type.
    let html = page.text();
    let paths: Vec<&str> = html
        .split('"')
        .filter(|p| p.starts_with("/ui/assets/"))
        .collect();
    let mut assets = 0;
    for (ext, ct) in [
        ("js", "text/javascript; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("svg", "image/svg+xml"),
    ] {
        let path = paths
            .iter()
            .find(|p| p.ends_with(&format!(".{ext}")))
            .unwrap_or_else(|| panic!("no .{ext} asset in the page: {html}"));
        let r = get(path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ct), "{path}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assets += 1;
    }
    assert_eq!(assets, 3);
    assert_eq!(get("/ui/assets/app.0.js", &[]).await.status, 404);
    // The data needs a token that may read functions.
    assert_eq!(get("/v1/ui/snapshot", &[]).await.status, 401);
    let bad = get("/v1/ui/stream", &[("authorization", "Bearer nf_nope")]).await;
    assert_eq!(bad.status, 401);
    let inv = format!("Bearer {invoker}");
    assert_eq!(
        get("/v1/ui/snapshot", &[("authorization", &inv)])
            .await
            .status,
        403
    );
    let view = format!("Bearer {viewer}");
    let snap = get("/v1/ui/snapshot", &[("authorization", &view)]).await;
    assert_eq!(snap.status, 200, "{}", snap.text());
    let v = snap.json();
    assert_eq!(
        (v["points"].as_u64(), v["resolutionSeconds"].as_u64()),
        (Some(300), Some(1))
    );
    // Another site's page, or a name rebound to this machine, gets nothing.
    let r = get(
        "/v1/ui/snapshot",
        &[("authorization", &view), ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(get("/ui", &[("host", "evil.example")]).await.status, 421);
    assert_eq!(
        get("/ui", &[("origin", "http://evil.example")])
            .await
            .status,
        403
    );
    let post = http(
        "POST",
        &format!("{base}/v1/ui/snapshot"),
        &[("authorization", &view)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(post.status, 405);
    let _ = std::fs::remove_dir_all(&dir);
}
