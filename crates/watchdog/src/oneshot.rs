//! The one-shot modes (`HTTP`, `STDIO`, `FILE`): run the function once with
//! `INVOCATION_PAYLOAD`, post the result to the callback URL, exit.
//!
//! The exit code says whether the callback was delivered ([`ExitCode::Ok`]) or not
//! ([`ExitCode::CallbackFailed`]); the function's own success or failure travels in the callback.

use crate::callback::{self, Target};
use crate::client::{self, CallError, Pool};
use crate::config::{Config, Mode, OneShotConfig};
use crate::exec::{self, Run};
use crate::exit::ExitCode;
use crate::{process, runtime};
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::HeaderMap;
use nanofaas_api::{headers, ErrorBody, ErrorCode};
use std::ffi::OsString;
use tokio::time::Instant;

/// Runs the function once and delivers its result.
pub async fn run(cfg: &Config) -> ExitCode {
    let os = cfg
        .oneshot
        .as_ref()
        .expect("one-shot mode has a one-shot config");
    let started = Instant::now();
    crate::oom::global();
    let result = match cfg.mode {
        Mode::Http => run_http(cfg, os).await,
        Mode::Stdio => exec::run_stdio(command_run(cfg, os), os.payload.clone()).await,
        Mode::File => {
            exec::run_file(
                command_run(cfg, os),
                &os.payload,
                &os.input_file,
                &os.output_file,
            )
            .await
        }
        Mode::Warm => unreachable!("warm mode is not one-shot"),
    };
    match &result {
        Ok(_) => crate::info!(
            "execution {} succeeded in {} ms",
            os.execution_id,
            started.elapsed().as_millis()
        ),
        Err(e) => crate::warn!(
            "execution {} failed in {} ms: {e}",
            os.execution_id,
            started.elapsed().as_millis()
        ),
    }
    let target = Target {
        base: os.callback_url.clone(),
        execution_id: os.execution_id.clone(),
        trace_id: os.trace_id.clone(),
        traceparent: os.traceparent.clone(),
        token: os.callback_token.clone(),
    };
    match callback::deliver(&target, callback::body(&result), &cfg.callback).await {
        Ok(attempts) => {
            crate::debug!("callback delivered after {attempts} attempt(s)");
            ExitCode::Ok
        }
        Err(e) => {
            crate::error!(
                "the callback for execution {} was not delivered: {e}",
                os.execution_id
            );
            ExitCode::CallbackFailed
        }
    }
}

fn command_run<'a>(cfg: &'a Config, os: &OneShotConfig) -> Run<'a> {
    let mut env: Vec<(&'static str, OsString)> =
        vec![("EXECUTION_ID", os.execution_id.clone().into())];
    if let Some(t) = &os.trace_id {
        env.push(("TRACE_ID", t.into()));
    }
    if let Some(t) = &os.traceparent {
        env.push(("TRACEPARENT", t.into()));
    }
    Run {
        argv: &cfg.command,
        env,
        deadline: Instant::now() + cfg.timeout,
        timeout: cfg.timeout,
        max_output: cfg.max_payload_bytes,
        // One-shot: the control plane knows the instance runs one execution (all its lines).
        tag: None,
    }
}

/// Starts the runtime, waits until healthy (`WARM_STARTUP_TIMEOUT_MS`), posts the payload
/// (`TIMEOUT_MS`), stops the runtime.
async fn run_http(cfg: &Config, os: &OneShotConfig) -> Result<Bytes, ErrorBody> {
    let (mut child, pid) =
        runtime::spawn(cfg, None).map_err(|m| ErrorBody::new(ErrorCode::SpawnError, m))?;
    let result = async {
        let http = client::runtime_client(1);
        let (_, health_endpoint) = runtime::wait_healthy(cfg, &mut child, cfg.startup_timeout, &http)
            .await
            .map_err(|m| ErrorBody::new(ErrorCode::StartupError, m))?;
        let endpoint = if cfg.runtime_url.host == cfg.runtime_health_url.host
            && cfg.runtime_url.port == cfg.runtime_health_url.port
        {
            health_endpoint
        } else {
            nanofaas_h1::Endpoint::tcp(client::resolve(&cfg.runtime_url).await.map_err(|e| {
                ErrorBody::new(
                    ErrorCode::StartupError,
                    format!("cannot resolve {}: {e}", cfg.runtime_url.host),
                )
            })?)
        };
        let pool = Pool::new(&cfg.runtime_url, endpoint, cfg.max_payload_bytes, http)
            .map_err(|m| ErrorBody::new(ErrorCode::StartupError, m))?;
        let mut hdrs = HeaderMap::with_capacity(3);
        hdrs.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        insert(&mut hdrs, headers::EXECUTION_ID, &os.execution_id)?;
        if let Some(t) = &os.trace_id {
            insert(&mut hdrs, headers::TRACE_ID, t)?;
        }
        if let Some(t) = &os.traceparent {
            insert(&mut hdrs, headers::TRACEPARENT, t)?;
        }
        let call = pool.post(hdrs, os.payload.clone(), tokio::time::Instant::now() + cfg.timeout);
        tokio::select! {
            r = call => match r {
                Err(CallError::Timeout) => Err(exec::timeout_error(cfg.timeout)),
                Err(CallError::TooLarge(n)) => Err(ErrorBody::new(
                    ErrorCode::FunctionError,
                    format!("the runtime's answer is larger than MAX_PAYLOAD_BYTES ({n} bytes)"),
                )),
                Err(e) => Err(crate::oom::error("the runtime")
                    .unwrap_or_else(|| ErrorBody::new(ErrorCode::InstanceLost, e.to_string()))),
                Ok((status, body)) if status.is_success() => Ok(output_json(body)),
                Ok((status, body)) => Err(nanofaas_api::invocation::error_from_response(status.as_u16(), &body)),
            },
            st = child.wait() => Err(crate::oom::error("the runtime").unwrap_or_else(|| ErrorBody::new(
                ErrorCode::InstanceLost,
                match st {
                    Ok(st) => format!("the runtime {} during the invocation", process::describe(&st)),
                    Err(e) => format!("waiting for the runtime: {e}"),
                },
            ))),
        }
    }
    .await;
    process::stop(&mut child, pid, cfg.stop_grace).await;
    result
}

/// A runtime's 2xx body as callback output: as is when JSON, else a JSON string.
fn output_json(body: Bytes) -> Bytes {
    if body.is_empty() || serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        body
    } else {
        exec::to_json(&body)
    }
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), ErrorBody> {
    let v = HeaderValue::from_str(value).map_err(|_| {
        ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!("{name} {value:?} cannot be sent as an HTTP header"),
        )
    })?;
    h.insert(HeaderName::from_static(name), v);
    Ok(())
}
