//! `nanofaas exec logs ID` and `nanofaas fn logs NAME [--follow]`: what functions printed.
//!
//! `--follow` reads the server-sent events of `GET /v1/functions/{name}/logs?follow=true` and
//! prints each line as it arrives, until Ctrl-C (SIGINT) or SIGTERM, on which it exits 0, or
//! until the server ends the stream (it stopped: exit 4).

use crate::client::{api_error, check_execution_id, check_name, Client, Subject};
use crate::exit::{err, Exit};
use crate::output::{self, Format};
use http_body_util::BodyExt;
use serde_json::Value;
use std::io::Write;

/// Longest event accepted from the server (a line is at most 16 KiB, escaped).
const MAX_EVENT_BYTES: usize = 1 << 20;

pub async fn cmd_exec_logs(client: &Client, format: Format, id: &str) -> anyhow::Result<()> {
    let id = check_execution_id(id)?;
    let r = client.get(&format!("/v1/executions/{id}/logs")).await?;
    if r.status != 200 {
        return Err(api_error(&r, Subject::Execution(id)));
    }
    let v = r.json()?;
    match format {
        Format::Json => output::json(&v),
        Format::Table => {
            let mut out = std::io::stdout().lock();
            for l in v["lines"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "{}", exec_line(l));
            }
            if v["lines"].as_array().is_none_or(|a| a.is_empty()) {
                output::note(format!("execution {id} wrote nothing"));
            }
        }
    }
    Ok(())
}

/// `TS STREAM TEXT`.
fn exec_line(l: &Value) -> String {
    format!(
        "{} {} {}",
        l["ts"].as_str().unwrap_or(""),
        l["stream"].as_str().unwrap_or(""),
        l["text"].as_str().unwrap_or("")
    )
}

/// `TS EXECUTION|instance STREAM TEXT`.
fn function_line(l: &Value) -> String {
    let who = match l["executionId"].as_str() {
        Some(e) => e.to_string(),
        None => format!("({})", l["instanceId"].as_str().unwrap_or("")),
    };
    format!(
        "{} {} {} {}",
        l["ts"].as_str().unwrap_or(""),
        who,
        l["stream"].as_str().unwrap_or(""),
        l["text"].as_str().unwrap_or("")
    )
}

pub async fn cmd_fn_logs(
    client: &Client,
    format: Format,
    name: &str,
    follow: bool,
) -> anyhow::Result<()> {
    let name = check_name(name)?;
    if !follow {
        let r = client.get(&format!("/v1/functions/{name}/logs")).await?;
        if r.status != 200 {
            return Err(api_error(&r, Subject::Function(name)));
        }
        let v = r.json()?;
        match format {
            Format::Json => output::json(&v),
            Format::Table => {
                let mut out = std::io::stdout().lock();
                for l in v["lines"].as_array().into_iter().flatten() {
                    let _ = writeln!(out, "{}", function_line(l));
                }
            }
        }
        return Ok(());
    }
    let mut body = match client
        .get_stream(&format!("/v1/functions/{name}/logs?follow=true"))
        .await?
    {
        Ok(b) => b,
        Err(r) => return Err(api_error(&r, Subject::Function(name))),
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| err(Exit::Failure, format!("cannot watch for SIGTERM: {e}")))?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        };
        let chunk = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                return Err(err(
                    Exit::Unreachable,
                    format!("the stream of {name}'s logs broke: {e}"),
                ))
            }
            None => {
                return Err(err(
                    Exit::Unreachable,
                    format!("the server ended the stream of {name}'s logs (it is stopping?)"),
                ))
            }
        };
        buf.extend_from_slice(&chunk);
        while let Some(end) = find_event_end(&buf) {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            print_event(&event[..end], format);
        }
        if buf.len() > MAX_EVENT_BYTES {
            return Err(err(
                Exit::Failure,
                "the server sent an event larger than 1 MiB; not a nanofaas log stream?",
            ));
        }
    }
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

/// One event: its `data:` lines joined; comments (`:`) are ignored.
fn print_event(event: &[u8], format: Format) {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return;
    }
    let data = data.join("\n");
    let mut out = std::io::stdout().lock();
    match (format, serde_json::from_str::<Value>(&data)) {
        (Format::Json, _) => {
            let _ = writeln!(out, "{data}");
        }
        (Format::Table, Ok(v)) => {
            let _ = writeln!(out, "{}", function_line(&v));
        }
        (Format::Table, Err(_)) => {
            let _ = writeln!(out, "{data}");
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_lines() {
        assert_eq!(find_event_end(b"data: x\n\nrest"), Some(7));
        assert_eq!(find_event_end(b"data: x\n"), None);
        let l = serde_json::json!({"ts": "T", "stream": "stdout", "text": "hi", "executionId": null, "instanceId": "i1"});
        assert_eq!(function_line(&l), "T (i1) stdout hi");
        let l = serde_json::json!({"ts": "T", "stream": "stderr", "text": "x", "executionId": "e1", "instanceId": "i1"});
        assert_eq!(function_line(&l), "T e1 stderr x");
        assert_eq!(exec_line(&l), "T stderr x");
    }
}
