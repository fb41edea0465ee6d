//! `nanofaas exec get ID [--watch]`: the status of an execution, optionally followed until it
//! is final. The exit code says how it ended: 0 success, 7 error, 8 timeout.

use crate::client::{api_error, check_execution_id, Client, Subject};
use crate::exit::{err, Exit};
use crate::output::{self, millis, Format, Spinner};
use nanofaas_api::backoff::Backoff;
use nanofaas_api::ExecutionView;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub async fn cmd_get(
    client: &Client,
    format: Format,
    id: &str,
    watch: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let id = check_execution_id(id)?;
    let deadline = Instant::now() + timeout;
    let mut spinner: Option<Spinner> = None;
    let mut delays = Backoff::new(Duration::from_millis(50), Duration::from_millis(500)).delays();
    let (raw, view) = loop {
        let r = client.get(&format!("/v1/executions/{id}")).await?;
        if r.status != 200 {
            return Err(api_error(&r, Subject::Execution(id)));
        }
        let raw = r.json()?;
        let view: ExecutionView = serde_json::from_value(raw.clone()).map_err(|e| {
            err(
                Exit::Failure,
                format!("unexpected execution from the server: {e}"),
            )
        })?;
        if !watch || view.status.is_final() {
            break (raw, view);
        }
        if Instant::now() >= deadline {
            drop(spinner);
            return Err(err(
                Exit::Timeout,
                format!(
                    "execution {id} is still {} after {}; check again with `nanofaas exec get {id}` or wait longer with --timeout",
                    view.status.as_str(),
                    millis(timeout.as_millis() as u64)
                ),
            ));
        }
        if spinner.is_none() {
            spinner = Some(Spinner::start(
                format!(
                    "execution {id} of {} is {}",
                    view.function,
                    view.status.as_str()
                ),
                Duration::from_millis(300),
            ));
        }
        let delay = delays.next_delay();
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
    };
    drop(spinner);
    match format {
        Format::Json => output::json(&raw),
        Format::Table => print!("{}", describe(&view)),
    }
    use nanofaas_api::ExecutionStatus as S;
    match view.status {
        S::Error | S::Timeout => {
            let error = serde_json::to_value(&view.error).unwrap_or(Value::Null);
            let status = if view.status == S::Timeout { 408 } else { 500 };
            Err(crate::invoke::execution_failed(
                &view.function,
                id,
                status,
                &error,
            ))
        }
        _ => Ok(()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The execution as `key: value` lines, then its output.
pub fn describe(v: &ExecutionView) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("execution", v.execution_id.clone()),
        ("function", v.function.clone()),
        ("status", v.status.as_str().to_string()),
        ("mode", v.mode.clone()),
        ("attempts", v.attempts.to_string()),
        (
            "start",
            match (v.cold_start, v.init_duration_ms) {
                (true, Some(ms)) => format!("cold (instance ready in {})", millis(ms)),
                (true, None) => "cold".to_string(),
                (false, _) => "warm".to_string(),
            },
        ),
    ];
    rows.push((
        "created",
        format!("{} ago", millis(now_ms().saturating_sub(v.created_at))),
    ));
    if let (Some(s), Some(f)) = (v.started_at, v.finished_at) {
        rows.push(("ran for", millis(f.saturating_sub(s))));
    }
    if let Some(f) = v.finished_at {
        rows.push(("total", millis(f.saturating_sub(v.created_at))));
    }
    if let Some(t) = &v.trace_id {
        rows.push(("trace", t.clone()));
    }
    if let Some(e) = &v.error {
        rows.push(("error", format!("{}: {}", e.code, e.message)));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, val) in rows {
        out.push_str(&format!("{k:width$}  {val}\n"));
    }
    if let Some(o) = &v.output {
        let text = serde_json::to_string_pretty(o).unwrap_or_default();
        out.push_str(&format!(
            "{:width$}  {}\n",
            "output",
            text.replace('\n', &format!("\n{:width$}  ", ""))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_an_execution() {
        let v: ExecutionView = serde_json::from_value(serde_json::json!({
            "executionId": "e1", "function": "f", "status": "success", "output": {"a": 1},
            "attempts": 1, "coldStart": true, "initDurationMs": 812, "createdAt": 1000,
            "startedAt": 1100, "finishedAt": 1350, "traceId": "t1", "mode": "async"
        }))
        .unwrap();
        let text = describe(&v);
        assert!(text.contains("status     success"), "{text}");
        assert!(text.contains("cold (instance ready in 812 ms)"), "{text}");
        assert!(text.contains("ran for    250 ms"), "{text}");
        assert!(
            text.contains("output     {\n             \"a\": 1\n           }"),
            "{text}"
        );
    }
}
