//! Prewarmed instances (`WARM_PREWARM=1`): the runtime is started generic (with
//! `NANOFAAS_PREWARM=1` and none of a function's settings) and waits; `POST /specialize` makes it
//! one function's, once.
//!
//! The control plane sends `{"function", "env", "workingDir", "timeoutMs"}`; the same body goes
//! to the runtime's `POST /_nanofaas/specialize`, which sets the environment, changes its working
//! directory and imports the handler. On success the watchdog remembers `env` and `workingDir`:
//! a runtime it restarts later (timeout, crash) is started as that function's, in full, without
//! `NANOFAAS_PREWARM`. Until then `/invoke` answers `503 STARTUP_ERROR "not specialized"`; after
//! a failed specialization it answers that failure, and the instance is never specialized again.
//!
//! Owns: the specialization state and the request's checks. It must not touch the hot path
//! beyond one state check per `/invoke` while the instance is prewarmed.

use super::supervisor::Handle;
use crate::config::Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Request, Response, StatusCode};
use nanofaas_api::{ErrorBody, ErrorCode};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// The runtime's route that loads the handler.
pub const RUNTIME_PATH: &str = "/_nanofaas/specialize";
/// The variable that tells a runtime to start generic.
pub const ENV_PREWARM: &str = "NANOFAAS_PREWARM";
/// Largest `/specialize` body accepted.
const MAX_BODY: usize = 1 << 20;

/// What a runtime is started with after a successful specialization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specialization {
    pub function: String,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
}

/// How the supervisor starts a runtime.
#[derive(Debug, Clone, Copy)]
pub enum Launch<'a> {
    /// As configured (not a prewarmed watchdog).
    Normal,
    /// Generic: `NANOFAAS_PREWARM=1`, waiting for a specialization.
    Generic,
    /// As the function it was specialized for.
    Specialized(&'a Specialization),
}

#[derive(Debug)]
enum State {
    Generic,
    Specializing,
    Specialized,
    Failed(String),
}

/// The specialization of a prewarmed watchdog, shared by the handlers and the supervisor.
#[derive(Debug)]
pub struct Prewarm {
    state: Mutex<State>,
    done: OnceLock<Specialization>,
}

impl Default for Prewarm {
    fn default() -> Self {
        Prewarm {
            state: Mutex::new(State::Generic),
            done: OnceLock::new(),
        }
    }
}

impl Prewarm {
    /// How the next runtime starts.
    pub fn launch(&self) -> Launch<'_> {
        match self.done.get() {
            Some(s) => Launch::Specialized(s),
            None => Launch::Generic,
        }
    }

    /// Why `/invoke` cannot be served yet, if it cannot.
    pub fn not_ready(&self) -> Option<ErrorBody> {
        if self.done.get().is_some() {
            return None;
        }
        let msg = match &*self.state.lock().unwrap() {
            State::Specialized => return None,
            State::Failed(m) => format!("the specialization of this instance failed: {m}"),
            _ => "not specialized".to_string(),
        };
        Some(ErrorBody::new(ErrorCode::StartupError, msg))
    }

    /// Claims the one specialization, or says why not.
    fn begin(&self) -> Result<(), String> {
        let mut st = self.state.lock().unwrap();
        match &*st {
            State::Generic => {
                *st = State::Specializing;
                Ok(())
            }
            State::Specializing => Err("a specialization is already under way".into()),
            State::Specialized => Err(format!(
                "already specialized for {:?}",
                self.done.get().map(|s| s.function.as_str()).unwrap_or("")
            )),
            State::Failed(m) => Err(format!("its specialization failed ({m})")),
        }
    }

    fn finish(&self, result: Result<Specialization, String>) {
        let mut st = self.state.lock().unwrap();
        *st = match result {
            Ok(s) => {
                let _ = self.done.set(s);
                State::Specialized
            }
            Err(m) => State::Failed(m),
        };
    }
}

/// `POST /specialize`'s body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Request_ {
    function: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Checks a `/specialize` body: the function's name, variables that can be set, a folder
/// that exists.
fn parse(body: &[u8]) -> Result<(Specialization, Option<Duration>), String> {
    let r: Request_ = serde_json::from_slice(body).map_err(|e| {
        format!("the body is not {{\"function\", \"env\", \"workingDir\", \"timeoutMs\"}}: {e}")
    })?;
    if r.function.is_empty() || r.function.len() > 253 {
        return Err("function must be a name of 1 to 253 bytes".into());
    }
    for (k, v) in &r.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("env: {k:?} is not a variable name"));
        }
        if v.contains('\0') {
            return Err(format!("env: the value of {k} holds a NUL byte"));
        }
    }
    let working_dir = match r.working_dir {
        None => None,
        Some(d) if d.is_empty() => None,
        Some(d) => {
            let p = PathBuf::from(&d);
            if !p.is_absolute() || !p.is_dir() {
                return Err(format!(
                    "workingDir {d:?} is not an absolute path of a folder"
                ));
            }
            Some(p)
        }
    };
    let timeout = match r.timeout_ms {
        None => None,
        Some(0) => return Err("timeoutMs must be positive".into()),
        Some(ms) => Some(Duration::from_millis(ms.min(3_600_000))),
    };
    Ok((
        Specialization {
            function: r.function,
            env: r.env.into_iter().collect(),
            working_dir,
        },
        timeout,
    ))
}

type Resp = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Resp {
    answer(
        status,
        serde_json::json!({"error": ErrorBody::new(code, message.into())}),
    )
}

/// `POST /specialize`.
pub async fn handle(sup: Option<&Handle>, cfg: &Config, req: Request<Incoming>) -> Resp {
    let Some((sup, prewarm)) = sup.and_then(|s| s.prewarm.as_deref().map(|p| (s, p))) else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "this watchdog was not started prewarmed (WARM_PREWARM)",
        );
    };
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
            )
        }
    };
    let (spec, timeout) = match parse(&body) {
        Ok(x) => x,
        Err(m) => return error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, m),
    };
    if let Err(why) = prewarm.begin() {
        return error(
            StatusCode::CONFLICT,
            ErrorCode::InvalidRequest,
            format!("this instance cannot be specialized: {why}"),
        );
    }
    let started = Instant::now();
    let deadline = started + timeout.unwrap_or(cfg.startup_timeout);
    let result = forward(sup, body, deadline).await;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(load_ms) => {
            crate::info!(
                "specialized for {:?} in {took_ms:.1} ms (the runtime loaded it in {} ms)",
                spec.function,
                load_ms.map_or("?".to_string(), |m| format!("{m}"))
            );
            prewarm.finish(Ok(spec));
            answer(
                StatusCode::OK,
                serde_json::json!({"specialized": true, "loadMs": load_ms, "specializeMs": took_ms}),
            )
        }
        Err((status, msg)) => {
            crate::warn!("specialization for {:?} failed: {msg}", spec.function);
            prewarm.finish(Err(msg.clone()));
            error(status, ErrorCode::StartupError, msg)
        }
    }
}

/// Sends the body to the runtime's [`RUNTIME_PATH`]; `Ok(loadMs)` on success, else the status
/// to answer with and why (501: the runtime does not speak the protocol).
async fn forward(
    sup: &Handle,
    body: Bytes,
    deadline: Instant,
) -> Result<Option<f64>, (StatusCode, String)> {
    let lease = sup
        .lease(deadline)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.message))?;
    let mut h = HeaderMap::with_capacity(1);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let r = lease
        .runtime
        .pool
        .post_path(RUNTIME_PATH, h, body, deadline)
        .await;
    let gen = lease.runtime.gen;
    drop(lease);
    let (status, body) = match r {
        Ok(x) => x,
        Err(e) => {
            // A runtime that took too long or broke the connection is not to be trusted.
            sup.kill(gen, super::supervisor::KillReason::Lost).await;
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the runtime did not complete its specialization: {e}"),
            ));
        }
    };
    if status.is_success() {
        let load_ms = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("loadMs").and_then(|m| m.as_f64()));
        return Ok(load_ms);
    }
    if matches!(status.as_u16(), 404 | 405 | 501) {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "the runtime does not support specialization (it answered {} to POST {RUNTIME_PATH}): it cannot be prewarmed",
                status.as_u16()
            ),
        ));
    }
    let e = nanofaas_api::invocation::error_from_response(status.as_u16(), &body);
    Err((StatusCode::INTERNAL_SERVER_ERROR, e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked() {
        let dir = std::env::temp_dir();
        let ok = serde_json::json!({
            "function": "f", "env": {"A": "1", "HANDLER_MODULE": "h"},
            "workingDir": dir, "timeoutMs": 500
        });
        let (s, t) = parse(ok.to_string().as_bytes()).unwrap();
        assert_eq!(s.function, "f");
        assert_eq!(
            s.env,
            vec![
                ("A".into(), "1".into()),
                ("HANDLER_MODULE".into(), "h".into())
            ]
        );
        assert_eq!(s.working_dir.as_deref(), Some(dir.as_path()));
        assert_eq!(t, Some(Duration::from_millis(500)));
        for bad in [
            r#"{}"#,
            r#"{"function":""}"#,
            r#"{"function":"f","env":{"A=B":"1"}}"#,
            r#"{"function":"f","env":{"":"1"}}"#,
            r#"{"function":"f","env":{"A":"a\u0000b"}}"#,
            r#"{"function":"f","workingDir":"relative"}"#,
            r#"{"function":"f","workingDir":"/no/such/folder/here"}"#,
            r#"{"function":"f","timeoutMs":0}"#,
            r#"{"function":"f","other":1}"#,
            r#"not json"#,
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_specialization_then_it_is_remembered() {
        let p = Prewarm::default();
        assert!(matches!(p.launch(), Launch::Generic));
        assert_eq!(p.not_ready().unwrap().message, "not specialized");
        p.begin().unwrap();
        assert!(p.begin().is_err(), "a second one while the first runs");
        let s = Specialization {
            function: "f".into(),
            env: vec![("A".into(), "1".into())],
            working_dir: None,
        };
        p.finish(Ok(s.clone()));
        assert!(p.not_ready().is_none());
        assert!(matches!(p.launch(), Launch::Specialized(x) if *x == s));
        assert!(p.begin().unwrap_err().contains("already specialized"));

        let q = Prewarm::default();
        q.begin().unwrap();
        q.finish(Err("boom".into()));
        assert!(q.not_ready().unwrap().message.contains("boom"));
        assert!(
            q.begin().is_err(),
            "a failed instance is never specialized again"
        );
        assert!(matches!(q.launch(), Launch::Generic));
    }
}
