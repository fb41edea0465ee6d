//! A real browser against the real `nanofaas serve`: headless Chromium loads a page from another
//! origin (a small HTTP server on another loopback port) that tries what any web page could try
//! against a developer's `nanofaas up`: `no-cors` fetches with `text/plain` bodies that register a
//! JOB function running a command and invoke it, an invocation with no body, HTML forms
//! (`text/plain` and urlencoded), and the same through a name that resolves to 127.0.0.1 (DNS
//! rebinding, simulated with Chromium's host resolver rules). The test checks that the requests
//! reached the server, and that no function was registered and the command never ran.
//!
//! Needs Chromium (`apt-get install -y chromium`; `scripts/test.sh` installs it where missing).
//! Skipped with a loud message where it cannot run; mandatory with NANOFAAS_REQUIRE_DOCKER=1.

use nanofaas_testkit::{http, serve_nanofaas, Proc, Stream};
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
        panic!("the browser test is mandatory here (NANOFAAS_REQUIRE_DOCKER=1): {why}");
    }
    eprintln!("\n!!!!! SKIPPED the headless-browser attack test: {why} !!!!!\n");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The attacker's page: every request it makes is one a browser sends without a CORS preflight.
fn page(api: &str, rebind: &str, marker: &str) -> String {
    let spec = |name: &str| {
        json!({
            "name": name,
            "executionMode": "JOB",
            "runtimeMode": "STDIO",
            "command": ["/bin/sh", "-c", format!("touch {marker}; echo 1")],
        })
        .to_string()
    };
    // A text/plain form sends `NAME=VALUE`: with this name and value the body is valid JSON.
    let form_spec = spec("pwned-form");
    let form_name = format!("{},\"x\":\"", &form_spec[..form_spec.len() - 1]);
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('\'', "&#39;")
            .replace('"', "&quot;")
    };
    format!(
        r#"<!doctype html><html><body><div id="out">started</div>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="f1" method="POST" action="{api}/v1/functions" enctype="text/plain" target="sink1">
<input name="{form_name}" value="&quot;}}"></form>
<form id="f2" method="POST" action="{api}/v1/functions/pwned:invoke" target="sink2">
<input name="input" value="1"></form>
<script>
const log = [];
async function attempt(label, url, opts) {{
  try {{ await fetch(url, opts); log.push(label + ":sent"); }}
  catch (e) {{ log.push(label + ":error:" + e); }}
}}
function loaded(frame) {{
  return new Promise(r => {{ document.getElementsByName(frame)[0].onload = r; setTimeout(r, 4000); }});
}}
async function go() {{
  const plain = {{ "Content-Type": "text/plain" }};
  const spec = {spec_js};
  for (const [tag, base] of [["direct", "{api}"], ["rebind", "{rebind}"]]) {{
    await attempt(tag + "-register", base + "/v1/functions", {{ method: "POST", mode: "no-cors", headers: plain, body: spec }});
    await attempt(tag + "-invoke", base + "/v1/functions/pwned:invoke", {{ method: "POST", mode: "no-cors", headers: plain, body: '{{"input":1}}' }});
    await attempt(tag + "-invoke-empty", base + "/v1/functions/pwned:invoke", {{ method: "POST", mode: "no-cors" }});
  }}
  const l1 = loaded("sink1"); document.getElementById("f1").submit(); await l1;
  const l2 = loaded("sink2"); document.getElementById("f2").submit(); await l2;
  document.getElementById("out").textContent = "attacks-finished " + log.join(" ");
}}
go();
</script></body></html>"#,
        form_name = esc(&form_name),
        spec_js = serde_json::to_string(&spec("pwned")).unwrap(),
    )
}

/// Serves `html` to every request until the test ends.
async fn page_server(html: String) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_register_or_run_anything() {
    let Some(chrome) = chromium() else {
        skip_or_fail("no chromium found (apt-get install -y chromium, or set NANOFAAS_CHROMIUM)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("nanofaas-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("ran");
    // The real server with the process provider: a registered JOB would really run.
    let (_cp, base) = serve_nanofaas(&dir.join("state"), &[]).await;
    let api_port = base.rsplit(':').next().unwrap().to_string();
    let before = metric(
        &http("GET", &format!("{base}/metrics"), &[], "")
            .await
            .unwrap()
            .text(),
        "nanofaas_http_requests_total",
    );
    let html = page(
        &base,
        &format!("http://rebind.test:{api_port}"),
        &marker.display().to_string(),
    );
    let page_port = page_server(html).await;
    let mut cmd = Command::new(&chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--host-resolver-rules=MAP rebind.test 127.0.0.1",
        "--virtual-time-budget=20000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", dir.join("profile").display()))
    .arg(format!("http://127.0.0.1:{page_port}/"));
    let mut browser = match Proc::spawn(cmd) {
        Ok(p) => p,
        Err(e) => {
            skip_or_fail(&format!("cannot start {chrome}: {e}"));
            return;
        }
    };
    let Some(status) = browser.wait_exit_async(Duration::from_secs(90)).await else {
        panic!("chromium did not finish within 90 s:\n{}", browser.output());
    };
    let dom = browser.lines(Stream::Stdout).join("\n");
    if !dom.contains("attacks-finished") {
        skip_or_fail(&format!(
            "chromium ran ({status}) but the page did not finish its attempts:\n{}",
            browser.output()
        ));
        return;
    }
    // The attempts reached the server (a browser that blocked them itself proves nothing)...
    let after = metric(
        &http("GET", &format!("{base}/metrics"), &[], "")
            .await
            .unwrap()
            .text(),
        "nanofaas_http_requests_total",
    );
    assert!(
        after - before >= 8.0,
        "only {} requests reached the server; the page says: {dom}",
        after - before
    );
    // ...and none did anything.
    let list = http("GET", &format!("{base}/v1/functions"), &[], "")
        .await
        .unwrap()
        .json();
    assert_eq!(
        list,
        json!([]),
        "a page registered a function; it says: {dom}"
    );
    assert!(!marker.exists(), "the page's command ran");
    let _ = std::fs::remove_dir_all(&dir);
}
