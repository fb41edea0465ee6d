//! Invocation wire types: what a client sends, what it gets back, what a runtime posts to the
//! callback URL, and the envelope the watchdog's warm `/invoke` accepts.

use crate::error::{ErrorBody, ErrorCode};
use crate::execution::ExecutionStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Body of `:invoke` / `:enqueue`, and what a runtime's `/invoke` receives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvocationRequest {
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Response of a synchronous `:invoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeResponse {
    pub execution_id: String,
    pub status: ExecutionStatus,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// Response of `:enqueue` (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnqueueResponse {
    pub execution_id: String,
    pub status: ExecutionStatus,
}

/// What a runtime or watchdog posts to `{callbackUrl}/{executionId}:complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackPayload {
    pub success: bool,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

impl CallbackPayload {
    pub fn ok(output: Value) -> Self {
        Self {
            success: true,
            output: Some(output),
            error: None,
        }
    }

    pub fn err(error: ErrorBody) -> Self {
        Self {
            success: false,
            output: None,
            error: Some(error),
        }
    }
}

/// The reference plan's body for the watchdog's warm `POST /invoke`.
///
/// `payload` is the InvocationRequest forwarded to the runtime. The header form (body is the
/// InvocationRequest itself, metadata in `X-*` headers) is equivalent and is the fast path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmEnvelope {
    pub execution_id: String,
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    pub payload: Value,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Sent along with the callback as `X-Callback-Token` (nanofaas extension).
    #[serde(default)]
    pub callback_token: Option<String>,
}

/// The callback URL path for an execution: `{base}/{execution_id}:complete`.
pub fn callback_target(base: &str, execution_id: &str) -> String {
    format!("{}/{}:complete", base.trim_end_matches('/'), execution_id)
}

/// Turns a runtime's (or warm watchdog's) non-2xx answer into an [`ErrorBody`].
///
/// Runtimes answer errors as `{"error": {"code", "message"}}`, `{"error": "message"}` or
/// `{"code", "message"}`; anything else becomes `FUNCTION_ERROR` with the status and the start of
/// the body. A string `error` is a handler failure (`HANDLER_ERROR`), as the seed's runtimes send.
pub fn error_from_response(status: u16, body: &[u8]) -> ErrorBody {
    #[derive(Deserialize)]
    struct Wrapped {
        error: Value,
    }
    let from_obj = |v: &Value| -> Option<ErrorBody> {
        let code = v.get("code")?.as_str()?;
        let message = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Some(ErrorBody {
            code: code.to_string(),
            message,
        })
    };
    if let Ok(w) = serde_json::from_slice::<Wrapped>(body) {
        match &w.error {
            Value::String(m) => return ErrorBody::new(ErrorCode::HandlerError, m.clone()),
            v => {
                if let Some(e) = from_obj(v) {
                    return e;
                }
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(e) = from_obj(&v) {
            return e;
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    ErrorBody::new(
        ErrorCode::FunctionError,
        format!("runtime answered HTTP {status}: {}", text.trim()),
    )
}

/// The HTTP status a warm watchdog (and the control plane) uses for an execution error code.
pub fn status_for_error(code: &str) -> u16 {
    match ErrorCode::parse(code) {
        Some(ErrorCode::Timeout) => 504,
        Some(ErrorCode::InstanceLost) => 502,
        Some(ErrorCode::StartupError | ErrorCode::SpawnError | ErrorCode::ShuttingDown) => 503,
        Some(ErrorCode::InvalidRequest) => 400,
        Some(ErrorCode::QueueFull | ErrorCode::Backpressure) => 429,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_defaults_and_strictness() {
        let r: InvocationRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r.input, Value::Null);
        assert!(serde_json::from_str::<InvocationRequest>(r#"{"input":1,"x":2}"#).is_err());
        let r: InvocationRequest =
            serde_json::from_value(json!({"input": {"a": 1}, "metadata": {"k": "v"}})).unwrap();
        assert_eq!(r.metadata["k"], "v");
    }

    #[test]
    fn envelope_minimal_and_full() {
        let e: WarmEnvelope =
            serde_json::from_value(json!({"execution_id": "e1", "payload": {"input": 1}})).unwrap();
        assert_eq!(e.callback_url, None);
        assert_eq!(e.timeout_ms, None);
        let e: WarmEnvelope = serde_json::from_value(json!({
            "execution_id": "e1", "callback_url": "http://cb", "trace_id": "t",
            "payload": {"input": 1}, "timeout_ms": 5
        }))
        .unwrap();
        assert_eq!(e.timeout_ms, Some(5));
    }

    #[test]
    fn runtime_errors_normalised() {
        let e = error_from_response(500, br#"{"error":"boom"}"#);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("HANDLER_ERROR", "boom")
        );
        let e = error_from_response(500, br#"{"error":{"code":"MY_CODE","message":"m"}}"#);
        assert_eq!((e.code.as_str(), e.message.as_str()), ("MY_CODE", "m"));
        let e = error_from_response(504, br#"{"code":"TIMEOUT","message":"slow"}"#);
        assert_eq!(e.code, "TIMEOUT");
        let e = error_from_response(502, b"Bad Gateway");
        assert_eq!(e.code, "FUNCTION_ERROR");
        assert!(e.message.contains("502") && e.message.contains("Bad Gateway"));
        assert_eq!(status_for_error("TIMEOUT"), 504);
        assert_eq!(status_for_error("INSTANCE_LOST"), 502);
        assert_eq!(status_for_error("ANYTHING"), 500);
    }

    #[test]
    fn callback_target_joins_once() {
        assert_eq!(
            callback_target("http://h/v1/internal/executions/", "e1"),
            "http://h/v1/internal/executions/e1:complete"
        );
        assert_eq!(
            callback_target("http://h/cb", "e1"),
            "http://h/cb/e1:complete"
        );
    }
}
