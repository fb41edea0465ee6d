//! `nanofaas invoke` (synchronous) and `nanofaas enqueue` (asynchronous).
//!
//! `-d` is the function's *input*: the CLI sends `{"input": <data>}`. With `--raw`, `-d` is the
//! whole InvocationRequest (`{"input": ..., "metadata": {...}}`) and is sent as it is.

use crate::client::{api_error, check_name, Client, Subject};
use crate::exit::{err, Exit};
use crate::output::{self, millis, note, Format, Spinner};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use nanofaas_api::headers as h;
use serde_json::{json, Value};
use std::io::Read;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct InvokeArgs {
    /// The function to invoke.
    pub name: String,
    /// The input: JSON text, @FILE to read it from a file, or @- to read it from stdin.
    #[arg(short = 'd', long = "data", value_name = "JSON|@FILE|@-")]
    pub data: Option<String>,
    /// `-d` is the whole request body ({"input": ..., "metadata": {...}}), not just the input.
    #[arg(long)]
    pub raw: bool,
    /// Timeout of this invocation in milliseconds; it can only shorten the function's timeoutMs.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Makes the invocation idempotent: the same key returns the same execution (within the
    /// execution TTL) instead of running again.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Trace id propagated to the function and its logs (default: one is generated).
    #[arg(long, value_name = "ID")]
    pub trace_id: Option<String>,
}

/// Reads `-d`: the text itself, `@file` or `@-` (stdin).
fn read_data(data: &str) -> anyhow::Result<String> {
    if data == "@-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| err(Exit::Usage, format!("-d @-: cannot read stdin: {e}")))?;
        Ok(s)
    } else if let Some(path) = data.strip_prefix('@') {
        std::fs::read_to_string(path).map_err(|e| {
            err(
                Exit::Usage,
                format!("-d @{path}: cannot read the file: {e}"),
            )
        })
    } else {
        Ok(data.to_string())
    }
}

/// The request body for `args`.
pub fn request_body(args: &InvokeArgs) -> anyhow::Result<Bytes> {
    let text = match &args.data {
        Some(d) => Some(read_data(d)?),
        None => None,
    };
    let Some(text) = text else {
        return Ok(Bytes::from_static(b"{\"input\":null}"));
    };
    let what = match args.data.as_deref() {
        Some(d) if d.starts_with('@') => format!("-d {d}"),
        _ => "-d".to_string(),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        err(
            Exit::Usage,
            format!("{what} is not valid JSON ({e}); to send a string, quote it: -d '\"text\"'"),
        )
    })?;
    let body = if args.raw {
        if !value.is_object() {
            return Err(err(
                Exit::Usage,
                format!("{what} with --raw must be a JSON object {{\"input\": ..., \"metadata\": {{...}}}}"),
            ));
        }
        value
    } else {
        json!({ "input": value })
    };
    Ok(Bytes::from(body.to_string()))
}

fn headers(args: &InvokeArgs) -> Vec<(&'static str, String)> {
    let mut hs = Vec::new();
    if let Some(t) = args.timeout_ms {
        hs.push((h::TIMEOUT_MS, t.to_string()));
    }
    if let Some(k) = &args.idempotency_key {
        hs.push((h::IDEMPOTENCY_KEY, k.clone()));
    }
    if let Some(t) = &args.trace_id {
        hs.push((h::TRACE_ID, t.clone()));
    }
    hs
}

/// How long the CLI waits for a synchronous answer. The server bounds every invocation itself
/// (timeout per attempt, a few attempts); this is only a guard against a stuck connection.
fn client_wait(args: &InvokeArgs) -> Duration {
    match args.timeout_ms {
        Some(ms) => Duration::from_millis(
            ms.saturating_mul(nanofaas_api::spec::limits::MAX_RETRIES as u64)
                .saturating_add(60_000),
        ),
        None => Duration::from_secs(2 * 3600),
    }
}

pub async fn cmd_invoke(client: &Client, format: Format, args: &InvokeArgs) -> anyhow::Result<()> {
    let name = check_name(&args.name)?;
    if args.timeout_ms == Some(0) {
        return Err(err(Exit::Usage, "--timeout-ms must be more than 0"));
    }
    let body = request_body(args)?;
    let spinner = Spinner::start(
        format!("waiting for {name} (a first call also starts an instance: a cold start)"),
        Duration::from_millis(300),
    );
    let started = Instant::now();
    let r = client
        .send(
            Method::POST,
            &format!("/v1/functions/{name}:invoke"),
            &headers(args),
            Some(body),
            client_wait(args),
        )
        .await;
    drop(spinner);
    let r = r?;
    let took = started.elapsed().as_millis() as u64;
    // An execution outcome carries its id; anything else is an API error (404, 429...).
    let mut v: Value = match serde_json::from_slice::<Value>(&r.body) {
        Ok(v) if v.get("executionId").is_some() => v,
        _ => return Err(api_error(&r, Subject::Function(name))),
    };
    let cold = r.header(h::COLD_START) == Some("true");
    if let Some(obj) = v.as_object_mut() {
        obj.insert("coldStart".into(), Value::Bool(cold));
        if let Some(t) = r.header(h::TRACE_ID) {
            obj.insert("traceId".into(), Value::String(t.to_string()));
        }
    }
    let id = v["executionId"].as_str().unwrap_or_default().to_string();
    if r.status == 200 {
        match format {
            Format::Json => output::json(&v),
            Format::Table => {
                output::json(&v["output"]);
                note(format!(
                    "✓ {name} · {} · {} · execution {id}",
                    if cold { "cold start" } else { "warm" },
                    millis(took)
                ));
            }
        }
        return Ok(());
    }
    if format == Format::Json {
        output::json(&v);
    }
    Err(execution_failed(name, &id, r.status, &v["error"]))
}

/// The error for an execution that ended badly, from its `{code, message}`.
pub fn execution_failed(name: &str, id: &str, status: u16, error: &Value) -> anyhow::Error {
    let code = error["code"].as_str().unwrap_or("FUNCTION_ERROR");
    let message = error["message"].as_str().unwrap_or("");
    let exit = if status == 408 || code == "TIMEOUT" {
        Exit::Timeout
    } else {
        Exit::FunctionError
    };
    let hint = match code {
        "TIMEOUT" => "; raise the function's timeoutMs if it needs longer (--timeout-ms can only shorten it)",
        // The docker provider's start failures name the container or the image.
        "STARTUP_ERROR" | "SPAWN_ERROR" if message.contains("container") || message.contains("image") => {
            "; its container could not start: check the function's image (`nanofaas fn get NAME`; it must contain the nanofaas watchdog) and the control plane's log"
        }
        "STARTUP_ERROR" | "SPAWN_ERROR" => {
            "; its instance could not start: check the function's command (`nanofaas fn get NAME`) and the control plane's log"
        }
        "INSTANCE_LOST" => "; the instance died while running it (the control plane's log has its last output)",
        "FUNCTION_REMOVED" => "; the function was deleted before the invocation ran",
        _ => "",
    };
    err(
        exit,
        format!("function {name:?} failed: {code}: {message}{hint} (execution {id})"),
    )
}

pub async fn cmd_enqueue(client: &Client, format: Format, args: &InvokeArgs) -> anyhow::Result<()> {
    let name = check_name(&args.name)?;
    if args.timeout_ms == Some(0) {
        return Err(err(Exit::Usage, "--timeout-ms must be more than 0"));
    }
    let body = request_body(args)?;
    let r = client
        .send(
            Method::POST,
            &format!("/v1/functions/{name}:enqueue"),
            &headers(args),
            Some(body),
            crate::client::REQUEST_TIMEOUT,
        )
        .await?;
    if r.status != 202 && r.status != 200 {
        return Err(api_error(&r, Subject::Function(name)));
    }
    let v = r.json()?;
    let id = v["executionId"].as_str().unwrap_or_default().to_string();
    match format {
        Format::Json => output::json(&v),
        Format::Table => {
            println!("{id}");
            note(format!(
                "queued; follow it with: nanofaas exec get {id} --watch"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(data: Option<&str>, raw: bool) -> InvokeArgs {
        InvokeArgs {
            name: "f".into(),
            data: data.map(str::to_string),
            raw,
            timeout_ms: None,
            idempotency_key: None,
            trace_id: None,
        }
    }

    #[test]
    fn data_is_wrapped_as_input_unless_raw() {
        let b = |d, raw| {
            request_body(&args(d, raw)).map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        };
        assert_eq!(b(None, false).unwrap(), json!({"input": null}));
        assert_eq!(
            b(Some(r#"{"a":1}"#), false).unwrap(),
            json!({"input": {"a": 1}})
        );
        assert_eq!(b(Some("7"), false).unwrap(), json!({"input": 7}));
        assert_eq!(
            b(Some(r#"{"input":1,"metadata":{"k":"v"}}"#), true).unwrap(),
            json!({"input": 1, "metadata": {"k": "v"}})
        );
        let e = b(Some("hello"), false).unwrap_err();
        assert_eq!(crate::exit::exit_of(&e), Exit::Usage);
        assert!(e.to_string().contains("quote it"), "{e}");
        let e = b(Some("[1]"), true).unwrap_err();
        assert!(e.to_string().contains("--raw"), "{e}");
    }

    #[test]
    fn data_from_a_file() {
        let p = std::env::temp_dir().join(format!("nanofaas-data-{}.json", std::process::id()));
        std::fs::write(&p, r#"{"from": "file"}"#).unwrap();
        let d = format!("@{}", p.display());
        let b = request_body(&args(Some(&d), false)).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&b).unwrap(),
            json!({"input": {"from": "file"}})
        );
        std::fs::remove_file(&p).ok();
        let e = request_body(&args(Some(&d), false)).unwrap_err();
        assert!(e.to_string().contains("cannot read the file"), "{e}");
    }

    #[test]
    fn failures_map_to_exit_codes() {
        let x = |status, code: &str| {
            crate::exit::exit_of(&execution_failed(
                "f",
                "e1",
                status,
                &json!({"code": code, "message": "m"}),
            ))
        };
        assert_eq!(x(408, "TIMEOUT"), Exit::Timeout);
        assert_eq!(x(500, "HANDLER_ERROR"), Exit::FunctionError);
        assert_eq!(x(503, "STARTUP_ERROR"), Exit::FunctionError);
        assert_eq!(x(410, "FUNCTION_REMOVED"), Exit::FunctionError);
    }

    #[test]
    fn startup_hints_point_at_what_the_provider_runs() {
        let hint = |message: &str| {
            execution_failed(
                "f",
                "e1",
                503,
                &json!({"code": "STARTUP_ERROR", "message": message}),
            )
            .to_string()
        };
        let docker = hint("the container of \"f\" (image \"x:1\") failed to start: the container exited with code 5");
        assert!(docker.contains("check the function's image"), "{docker}");
        let process = hint("instance of \"f\" failed to start: the watchdog exited with code 5");
        assert!(
            process.contains("check the function's command"),
            "{process}"
        );
    }
}
