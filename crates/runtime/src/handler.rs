//! The user's function: [`Request`], and [`Handler`], which erases a sync or async closure
//! into one callable that always produces an [`Outcome`] (output bytes or an error code and
//! message), whether the function returned, failed, produced something that is not JSON, or
//! panicked.

use nanofaas_api::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// One invocation as the function sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request's `input` (`null` when it had none).
    pub input: Value,
    /// The request's `metadata` (empty when it had none).
    pub metadata: BTreeMap<String, String>,
    /// `X-Execution-Id`, else the `EXECUTION_ID` environment variable.
    pub execution_id: String,
    /// `X-Trace-Id`, else the `TRACE_ID` environment variable.
    pub trace_id: Option<String>,
    /// W3C `traceparent` (its parent is the platform's dispatch span), else the `TRACEPARENT`
    /// environment variable: give it to outgoing calls to continue the trace.
    pub traceparent: Option<String>,
}

impl Request {
    /// Writes one line on stderr as this invocation's: nanofaas keeps it with the execution
    /// (`nanofaas exec logs ID`), also when the instance serves several invocations at once
    /// (`instanceConcurrency` > 1), where a plain `println!` cannot be attributed. See
    /// [`crate::log_line`].
    pub fn log(&self, line: impl std::fmt::Display) {
        crate::log_line(&self.execution_id, line);
    }

    /// The input deserialised as `T` (e.g. a struct deriving `Deserialize`).
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.input)
    }
}

/// What one call of the handler came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The output, serialised as JSON.
    Output(Vec<u8>),
    /// The function failed: `HANDLER_ERROR` (it returned an error or panicked) or
    /// `FUNCTION_ERROR` (its output cannot be serialised as JSON).
    Failed { code: ErrorCode, message: String },
}

type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

trait Erased: Send + Sync + 'static {
    fn call(&self, req: Request) -> BoxFuture;
}

/// A function from [`Request`] to a JSON-serialisable result, ready to be served.
///
/// The error type only needs `Display`: `String`, `&str`, `std::io::Error`, `anyhow::Error`
/// (its context chain is kept: it is formatted with `{:#}`), `Box<dyn Error>`... Its text
/// becomes the message of the `HANDLER_ERROR`.
#[derive(Clone)]
pub struct Handler(Arc<dyn Erased>);

impl Handler {
    /// An async function. It runs on the server's runtime: it must not block the thread (use
    /// [`Handler::from_sync`] for blocking code).
    pub fn from_async<F, Fut, T, E>(f: F) -> Handler
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Display,
    {
        Handler(Arc::new(AsyncFn(f)))
    }

    /// A blocking function. Each call runs on tokio's blocking thread pool.
    pub fn from_sync<F, T, E>(f: F) -> Handler
    where
        F: Fn(Request) -> Result<T, E> + Send + Sync + 'static,
        T: Serialize,
        E: Display,
    {
        Handler(Arc::new(SyncFn(Arc::new(f))))
    }

    /// Calls the function; never panics.
    pub async fn call(&self, req: Request) -> Outcome {
        self.0.call(req).await
    }
}

struct AsyncFn<F>(F);

impl<F, Fut, T, E> Erased for AsyncFn<F>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Serialize,
    E: Display,
{
    fn call(&self, req: Request) -> BoxFuture {
        let fut = match catch_unwind(AssertUnwindSafe(|| (self.0)(req))) {
            Ok(fut) => fut,
            Err(panic) => return Box::pin(std::future::ready(panicked(panic))),
        };
        Box::pin(async move {
            match CatchUnwind(Box::pin(fut)).await {
                Ok(result) => outcome(result),
                Err(panic) => panicked(panic),
            }
        })
    }
}

struct SyncFn<F>(Arc<F>);

impl<F, T, E> Erased for SyncFn<F>
where
    F: Fn(Request) -> Result<T, E> + Send + Sync + 'static,
    T: Serialize,
    E: Display,
{
    fn call(&self, req: Request) -> BoxFuture {
        let f = self.0.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || outcome(f(req))).await {
                Ok(o) => o,
                Err(e) if e.is_panic() => panicked(e.into_panic()),
                Err(e) => Outcome::Failed {
                    code: ErrorCode::HandlerError,
                    message: format!("the handler did not finish: {e}"),
                },
            }
        })
    }
}

fn outcome<T: Serialize, E: Display>(result: Result<T, E>) -> Outcome {
    match result {
        Ok(v) => match serde_json::to_vec(&v) {
            Ok(bytes) => Outcome::Output(bytes),
            Err(e) => Outcome::Failed {
                code: ErrorCode::FunctionError,
                message: format!("handler output is not JSON-serialisable: {e}"),
            },
        },
        Err(e) => {
            let mut message = format!("{e:#}");
            if message.trim().is_empty() {
                message = "the handler failed (its error has no message)".into();
            }
            Outcome::Failed {
                code: ErrorCode::HandlerError,
                message,
            }
        }
    }
}

fn panicked(payload: Box<dyn Any + Send>) -> Outcome {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    Outcome::Failed {
        code: ErrorCode::HandlerError,
        message: format!("handler panicked: {what}"),
    }
}

/// Turns a panic while polling the inner future into an `Err`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn req(input: Value) -> Request {
        Request {
            input,
            metadata: BTreeMap::new(),
            execution_id: "e".into(),
            trace_id: None,
            traceparent: None,
        }
    }

    fn text(o: &Outcome) -> String {
        match o {
            Outcome::Output(b) => String::from_utf8(b.clone()).unwrap(),
            Outcome::Failed { code, message } => format!("{code}: {message}"),
        }
    }

    #[tokio::test]
    async fn async_results() {
        let h = Handler::from_async(|r: Request| async move {
            match r.input["do"].as_str() {
                Some("ok") => Ok(json!({"n": 1})),
                Some("err") => Err("bad input".to_string()),
                Some("empty") => Err(String::new()),
                _ => panic!("asked to panic"),
            }
        });
        assert_eq!(text(&h.call(req(json!({"do": "ok"}))).await), r#"{"n":1}"#);
        assert_eq!(
            text(&h.call(req(json!({"do": "err"}))).await),
            "HANDLER_ERROR: bad input"
        );
        assert!(text(&h.call(req(json!({"do": "empty"}))).await).contains("has no message"));
        assert_eq!(
            text(&h.call(req(json!({}))).await),
            "HANDLER_ERROR: handler panicked: asked to panic"
        );
        // A panic before the future exists (in the closure itself).
        let h = Handler::from_async(|_r: Request| -> std::future::Ready<Result<u8, String>> {
            panic!("{}", String::from("early"))
        });
        assert_eq!(
            text(&h.call(req(Value::Null)).await),
            "HANDLER_ERROR: handler panicked: early"
        );
    }

    #[tokio::test]
    async fn sync_results_and_unserialisable_output() {
        let h = Handler::from_sync(|r: Request| -> Result<Value, std::io::Error> {
            if r.input == json!("fail") {
                return Err(std::io::Error::other("disk on fire"));
            }
            Ok(r.input)
        });
        assert_eq!(text(&h.call(req(json!([1, "a"]))).await), r#"[1,"a"]"#);
        assert_eq!(
            text(&h.call(req(json!("fail"))).await),
            "HANDLER_ERROR: disk on fire"
        );
        // Maps with non-string keys are not JSON.
        let h = Handler::from_sync(|_r: Request| Ok::<_, String>(HashMap::from([(vec![1u8], 1)])));
        let o = h.call(req(Value::Null)).await;
        assert!(
            text(&o).starts_with("FUNCTION_ERROR: handler output is not JSON-serialisable"),
            "{o:?}"
        );
        let h = Handler::from_sync(|_r: Request| -> Result<u8, String> { panic!("sync boom") });
        assert_eq!(
            text(&h.call(req(Value::Null)).await),
            "HANDLER_ERROR: handler panicked: sync boom"
        );
    }

    #[test]
    fn input_as_struct() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct In {
            name: String,
        }
        let r = req(json!({"name": "Ada"}));
        assert_eq!(r.input_as::<In>().unwrap(), In { name: "Ada".into() });
        assert!(req(json!(3)).input_as::<In>().is_err());
    }
}
