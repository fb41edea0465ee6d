//! hello-rust: the Rust example function. A function from the request to a result, and one
//! call to serve it (`nanofaas_runtime::serve`).
//!
//! `{"name": "Ada"}` answers `{"greeting": "Hello, Ada!", "runtime": "rust", "pid": ...}`;
//! `{"fail": "why"}` answers 500 `HANDLER_ERROR` with `failing on purpose: why`;
//! `{"sleepMs": 200}` waits that long first (to see a slow invocation finish during a stop);
//! `{"print": ["a"]}` prints each text on stdout, `{"log": ["b"]}` writes each with
//! [`Request::log`] (kept with the execution even when the instance serves several at once);
//! `{"trace": true}` adds the W3C `traceparent` the invocation came with to the answer.

use nanofaas_runtime::Request;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, Default)]
struct Input {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    fail: Option<Value>,
    #[serde(default, rename = "sleepMs")]
    sleep_ms: Option<u64>,
    #[serde(default)]
    print: Vec<String>,
    #[serde(default)]
    log: Vec<String>,
    #[serde(default)]
    trace: bool,
}

async fn hello(req: Request) -> Result<Value, String> {
    let input: Input = if req.input.is_null() {
        Input::default()
    } else {
        req.input_as()
            .map_err(|e| format!("input must be an object like {{\"name\": \"Ada\"}}: {e}"))?
    };
    for t in &input.print {
        println!("{t}");
    }
    for t in &input.log {
        req.log(t);
    }
    if let Some(ms) = input.sleep_ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    if let Some(why) = input.fail {
        let why = why.as_str().map(str::to_string).unwrap_or(why.to_string());
        return Err(format!("failing on purpose: {why}"));
    }
    let name = input
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "world".into());
    let mut out = json!({
        "greeting": format!("Hello, {name}!"),
        "runtime": "rust",
        "pid": std::process::id(),
    });
    if input.trace {
        out["traceparent"] = json!(req.traceparent);
    }
    Ok(out)
}

fn main() -> std::process::ExitCode {
    nanofaas_runtime::serve(hello)
}
