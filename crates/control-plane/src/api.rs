//! The HTTP API: routing, request parsing and validation, and turning platform results into
//! responses. Handlers are thin: they parse, call [`Platform`], and map the answer.
//! Every error goes through [`ApiError::parts`]; the routes are described in `openapi.yaml`.

use crate::access::{self, Access, Action};
use crate::error::ApiError;
use crate::executions::{FailureKind, Outcome};
use crate::platform::{InvokeInput, Platform};
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use nanofaas_api::{headers as h, ErrorCode, ExecutionStatus, FunctionSpec};
use std::sync::Arc;

/// A response body: whole (every route but the streamed ones) or streamed from a channel
/// (server-sent events).
pub type Body = http_body_util::Either<Full<Bytes>, StreamBody>;
pub type Resp = Response<Body>;

/// A body whose chunks come from a channel; it ends when the sender is dropped. Dropped itself
/// when the client goes away, which the sender sees as a closed channel.
pub struct StreamBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl StreamBody {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self { rx }
    }
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

fn whole(b: impl Into<Bytes>) -> Body {
    Body::Left(Full::new(b.into()))
}

/// What the routes share.
pub struct AppState {
    pub platform: Arc<Platform>,
    pub max_body_bytes: usize,
    /// Tokens, roles, allowed hosts and origins (docs/security.md).
    pub access: Access,
    /// Serve only the callback route (the plain-HTTP loopback listener beside a TLS API).
    pub callbacks_only: bool,
    /// TLS of this listener, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The dashboard's series and streams (`crate::ui`).
    pub ui: Arc<crate::ui::Dashboard>,
    /// What functions printed (per execution, per function, live).
    pub logs: Arc<crate::logs::Logs>,
}

fn json(status: u16, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(whole(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json_value<T: serde::Serialize>(status: u16, v: &T) -> Resp {
    match serde_json::to_vec(v) {
        Ok(b) => json(status, b),
        Err(e) => error_response(&ApiError::Internal(format!(
            "cannot serialise the response: {e}"
        ))),
    }
}

pub fn error_response(e: &ApiError) -> Resp {
    let (status, headers, body) = e.parts();
    let mut r = json_value(status, &serde_json::json!({ "error": body }));
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

fn no_content() -> Resp {
    let mut r = Response::new(whole(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Routes one request. Never panics on input; every failure is a JSON error.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Resp {
    state.platform.metrics.global.http_requests.inc();
    // CORS answers only for a configured origin (checked again, with a 403, in `route`).
    let cors = if state.access.cors_enabled() {
        state
            .access
            .check_origin(req.headers())
            .ok()
            .flatten()
            .cloned()
    } else {
        None
    };
    let mut r = match route(&state, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    if let Some(origin) = cors {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(
                "x-execution-id, x-trace-id, x-cold-start, retry-after, x-queue-reject-reason",
            ),
        );
    }
    r
}

/// The answer to a CORS preflight from an allowed origin.
fn preflight() -> Resp {
    let mut r = no_content();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "authorization, content-type, idempotency-key, x-timeout-ms, x-trace-id, traceparent",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

/// What `route` asks permission for (the execution route asks again once it knows the
/// execution's function).
fn action_of<'a>(access: &Access, route: &Route<'a>, method: &Method) -> Action<'a> {
    match route {
        Route::Healthz | Route::Readyz | Route::Complete(_) => Action::Probe,
        Route::Metrics => access.metrics_action(),
        Route::Functions if *method == Method::GET => Action::Read,
        Route::Functions if *method == Method::POST => Action::Manage,
        Route::Function(_) if *method == Method::GET => Action::Read,
        Route::Function(_) if *method == Method::PUT || *method == Method::DELETE => Action::Manage,
        Route::Instances(_) | Route::Prewarmed if *method == Method::GET => Action::Read,
        Route::Invoke(name) | Route::Enqueue(name) if *method == Method::POST => {
            Action::Invoke(name)
        }
        // Any token may read an execution at all; the invoker's patterns are checked once
        // the execution's function is known.
        Route::Execution(_) | Route::ExecutionLogs(_) if *method == Method::GET => Action::Other,
        // Like reading its executions.
        Route::FunctionLogs(name) if *method == Method::GET => Action::ReadExecution(name),
        Route::ExecutionTrace(_) if *method == Method::GET => Action::Other,
        _ => Action::Other,
    }
}

enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    Functions,
    Function(&'a str),
    Instances(&'a str),
    /// `GET /v1/prewarmed`: the prewarmed instances per runtime kind.
    Prewarmed,
    Invoke(&'a str),
    Enqueue(&'a str),
    Execution(&'a str),
    /// `GET /v1/executions/{id}/trace` (`trace.rs`).
    ExecutionTrace(&'a str),
    ExecutionLogs(&'a str),
    FunctionLogs(&'a str),
    Complete(&'a str),
}

fn parse_route(path: &str) -> Option<Route<'_>> {
    match path {
        "/healthz" => return Some(Route::Healthz),
        "/readyz" => return Some(Route::Readyz),
        "/metrics" => return Some(Route::Metrics),
        "/v1/functions" | "/v1/functions/" => return Some(Route::Functions),
        "/v1/prewarmed" => return Some(Route::Prewarmed),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/v1/functions/") {
        if let Some(name) = rest.strip_suffix("/instances") {
            return (!name.contains('/')).then_some(Route::Instances(name));
        }
        if let Some(name) = rest.strip_suffix("/logs") {
            return (!name.contains('/')).then_some(Route::FunctionLogs(name));
        }
        if rest.contains('/') {
            return None;
        }
        return Some(match rest.rsplit_once(':') {
            Some((name, "invoke")) => Route::Invoke(name),
            Some((name, "enqueue")) => Route::Enqueue(name),
            Some(_) => return None,
            None => Route::Function(rest),
        });
    }
    if let Some(id) = path
        .strip_prefix("/v1/executions/")
        .and_then(|r| r.strip_suffix("/trace"))
    {
        return (!id.contains('/') && !id.is_empty()).then_some(Route::ExecutionTrace(id));
    }
    if let Some(id) = path.strip_prefix("/v1/executions/") {
        if let Some(id) = id.strip_suffix("/logs") {
            return (!id.contains('/') && !id.is_empty()).then_some(Route::ExecutionLogs(id));
        }
        return (!id.contains('/') && !id.is_empty()).then_some(Route::Execution(id));
    }
    if let Some(rest) = path.strip_prefix("/v1/internal/executions/") {
        return rest
            .strip_suffix(":complete")
            .filter(|id| !id.contains('/') && !id.is_empty())
            .map(Route::Complete);
    }
    None
}

fn allow(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
        Err(ApiError::MethodNotAllowed(format!(
            "{method} (allowed: {})",
            list.join(", ")
        )))
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    nanofaas_api::validate_name(name).map_err(|r| ApiError::invalid("name", r))
}

async fn route(state: &AppState, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let route = parse_route(&path);
    let access = &state.access;
    let is_callback = matches!(route, Some(Route::Complete(_)));
    if state.callbacks_only && !is_callback {
        return Err(ApiError::NotFound(format!(
            "no route for {method} {path} (this listener serves callbacks only)"
        )));
    }
    // Callbacks carry their own per-attempt token, and may come from a container that knows
    // the control plane by another name: no Host check and no API token for them.
    if !is_callback {
        access.check_host(req.headers())?;
    }
    let cors = access.check_origin(req.headers())?;
    let Some(route) = route else {
        return Err(ApiError::NotFound(format!("no route for {method} {path}")));
    };
    if method == Method::OPTIONS && cors.is_some() {
        return Ok(preflight());
    }
    let action = action_of(access, &route, &method);
    let who = match action {
        Action::Probe => None,
        _ => access.authenticate(req.headers())?,
    };
    access.authorize(who, action)?;
    let p = &state.platform;
    match route {
        Route::Healthz => {
            allow(&method, &[Method::GET])?;
            Ok(json(200, &b"{\"status\":\"ok\"}"[..]))
        }
        Route::Readyz => {
            allow(&method, &[Method::GET])?;
            if p.is_shutting_down() {
                Ok(json(503, &b"{\"status\":\"shutting_down\"}"[..]))
            } else {
                Ok(json(200, &b"{\"status\":\"ready\"}"[..]))
            }
        }
        Route::Metrics => {
            allow(&method, &[Method::GET])?;
            // OpenMetrics for a scraper that asks for it (Prometheus does), the classic text
            // format for everything else (curl, greps).
            let accept = req.headers().get(header::ACCEPT);
            let format = crate::metrics::Format::from_accept(accept.and_then(|v| v.to_str().ok()));
            let mut r = Response::new(whole(p.metrics.render_as(format)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            Ok(r)
        }
        Route::Functions => {
            allow(&method, &[Method::GET, Method::POST])?;
            if method == Method::GET {
                let list = p.registry.list();
                let specs: Vec<&FunctionSpec> = list.iter().map(|f| &*f.spec).collect();
                return Ok(json_value(200, &specs));
            }
            let body = read_body(state, req).await?;
            let spec = spec_from_body(&body)?;
            let stored = p.register(spec)?;
            let mut r = json_value(201, &*stored);
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/functions/{}", stored.name)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Ok(r)
        }
        Route::Function(name) => {
            allow(&method, &[Method::GET, Method::PUT, Method::DELETE])?;
            check_name(name)?;
            match method {
                Method::GET => {
                    let f = p.registry.get(name).ok_or_else(|| {
                        ApiError::NotFound(format!("function {name:?} does not exist"))
                    })?;
                    Ok(json_value(200, &*f.spec))
                }
                Method::DELETE => {
                    p.delete(name)?;
                    Ok(no_content())
                }
                _ => {
                    let body = read_body(state, req).await?;
                    let spec = spec_for_put(name, &body)?;
                    let (created, stored) = p.put(spec)?;
                    Ok(json_value(if created { 201 } else { 200 }, &*stored))
                }
            }
        }
        Route::Instances(name) => {
            allow(&method, &[Method::GET])?;
            check_name(name)?;
            Ok(json_value(200, &p.instances(name)?))
        }
        Route::Prewarmed => {
            allow(&method, &[Method::GET])?;
            Ok(json_value(200, &p.prewarmed()))
        }
        Route::Invoke(name) | Route::Enqueue(name) => {
            allow(&method, &[Method::POST])?;
            check_name(name)?;
            let sync = matches!(route, Route::Invoke(_));
            let (parts, body) = req.into_parts();
            let mut input = invoke_headers(&parts.headers)?;
            input.body = read_limited(state, &parts.headers, body).await?;
            input.body = validate_invocation(input.body)?;
            if sync {
                let (exec, outcome) = p.invoke(name, input).await?;
                let mut r =
                    invoke_response(&exec.id, &exec.trace_id, exec.cold_start().0, &outcome);
                if let Some(start) = exec.start() {
                    r.headers_mut()
                        .insert(h::START, HeaderValue::from_static(start.as_str()));
                    if start == crate::dispatch::StartKind::StartFailed && !exec.cold_start().0 {
                        r.headers_mut().remove(h::COLD_START);
                    }
                }
                Ok(r)
            } else {
                let exec = p.enqueue(name, input).await?;
                let body = serde_json::json!({ "executionId": &*exec.id, "status": exec.status() });
                let mut r = json_value(202, &body);
                set_exec_headers(&mut r, &exec.id, &exec.trace_id);
                Ok(r)
            }
        }
        Route::Execution(id) => {
            allow(&method, &[Method::GET])?;
            let exec = p.store.get(id).ok_or_else(|| {
                ApiError::NotFound(format!("execution {id:?} does not exist or has expired"))
            })?;
            access.authorize(who, Action::ReadExecution(&exec.function))?;
            Ok(json_value(200, &exec.view()))
        }
        Route::ExecutionTrace(id) => {
            allow(&method, &[Method::GET])?;
            let exec = p.store.get(id).ok_or_else(|| {
                ApiError::NotFound(format!("execution {id:?} does not exist or has expired"))
            })?;
            access.authorize(who, Action::ReadExecution(&exec.function))?;
            Ok(json_value(200, &crate::trace::view(&exec)))
        }
        Route::ExecutionLogs(id) => {
            allow(&method, &[Method::GET])?;
            let exec = p.store.get(id).ok_or_else(|| {
                ApiError::NotFound(format!("execution {id:?} does not exist or has expired"))
            })?;
            access.authorize(who, Action::ReadExecution(&exec.function))?;
            let logs = state.logs.execution(id, exec.status().is_final()).await;
            Ok(json_value(200, &logs))
        }
        Route::FunctionLogs(name) => {
            allow(&method, &[Method::GET])?;
            check_name(name)?;
            let follow = match query_param(req.uri().query(), "follow") {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => {
                    return Err(ApiError::invalid(
                        "follow",
                        format!("{v:?} is not true or false"),
                    ))
                }
            };
            if p.registry.get(name).is_none() {
                return Err(ApiError::NotFound(format!(
                    "function {name:?} does not exist"
                )));
            }
            if !follow {
                return Ok(json_value(200, &state.logs.recent(name)));
            }
            Ok(follow_response(state.logs.follow(name)))
        }
        Route::Complete(id) => {
            allow(&method, &[Method::POST])?;
            let token = req
                .headers()
                .get(h::CALLBACK_TOKEN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| bearer(req.headers()));
            let body = read_body(state, req).await?;
            p.complete(id, token.as_deref(), &body)?;
            Ok(no_content())
        }
    }
}

/// The value of `key` in a query string (`a=1&b=2`), undecoded.
fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `text/event-stream` of a function's lines, with a comment every 15 s (so a client that is
/// gone is noticed), until the client goes away or the server stops.
fn follow_response(mut follower: crate::logs::Follower) -> Resp {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if tx
            .send(crate::logs::sse_comment("following"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let next = tokio::select! {
                e = follower.next_event() => e,
                _ = tokio::time::sleep(std::time::Duration::from_secs(15)) => {
                    Some(crate::logs::sse_comment("keep-alive"))
                }
                _ = tx.closed() => None,
            };
            let Some(b) = next else { return };
            if tx.send(b).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(Body::Right(StreamBody::new(rx)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// The body of a PUT: the path names the function; the body may omit `name`.
pub fn spec_for_put(name: &str, body: &[u8]) -> Result<FunctionSpec, ApiError> {
    nanofaas_api::json::check(body, nanofaas_api::json::Rules::STRICT).map_err(json_invalid)?;
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("", format!("body is not valid JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ApiError::invalid("", "body must be a JSON object"))?;
    match obj.get("name") {
        None => {
            obj.insert("name".into(), serde_json::Value::String(name.to_string()));
        }
        Some(serde_json::Value::String(n)) if n == name => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "name",
                format!("must match the path ({name:?})"),
            ))
        }
    }
    let bytes = serde_json::to_vec(&v).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(FunctionSpec::from_json(&bytes)?)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::invalid(name, "must be visible ASCII")),
    }
}

fn invoke_headers(headers: &HeaderMap) -> Result<InvokeInput, ApiError> {
    let mut input = InvokeInput::default();
    if let Some(t) = header_str(headers, h::TIMEOUT_MS)? {
        let ms: u64 = t.trim().parse().map_err(|_| {
            ApiError::invalid(
                "X-Timeout-Ms",
                format!("{t:?} is not a whole number of milliseconds"),
            )
        })?;
        if ms == 0 {
            return Err(ApiError::invalid("X-Timeout-Ms", "must be more than 0"));
        }
        input.timeout_ms = Some(ms);
    }
    if let Some(k) = header_str(headers, h::IDEMPOTENCY_KEY)? {
        if k.is_empty() || k.len() > 256 {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 256 characters",
            ));
        }
        input.idempotency_key = Some(k.to_string());
    }
    if let Some(t) = header_str(headers, h::TRACE_ID)? {
        if t.is_empty() || t.len() > 128 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid(
                "X-Trace-Id",
                "must be 1 to 128 visible ASCII characters",
            ));
        }
        input.trace_id = Some(t.to_string());
    }
    // W3C trace context: a valid traceparent names the trace (its trace-id becomes the
    // execution's trace id, over X-Trace-Id); a malformed one is ignored, never refused.
    if let Some(tp) = headers
        .get(crate::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::trace::TraceParent::parse(v.trim()))
    {
        input.trace_id = Some(crate::trace::trace_id_hex(tp.trace_id));
        input.traceparent = Some(tp);
    }
    Ok(input)
}

async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_limited(state, &parts.headers, body).await
}

async fn read_limited(
    state: &AppState,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, ApiError> {
    access::check_json_body(headers)?;
    let limit = state.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn json_invalid(e: nanofaas_api::json::JsonError) -> ApiError {
    ApiError::invalid(&e.path, e.message())
}

/// Checks the body is an InvocationRequest, completely and without building it (see
/// [`nanofaas_api::json`]): trailing bytes, invalid UTF-8, nesting deeper than
/// [`nanofaas_api::json::MAX_DEPTH`], numbers out of a double's range, unknown or repeated
/// fields are a 400 naming the field and the place. The body is passed on unchanged; an empty
/// body means no input.
pub fn validate_invocation(body: Bytes) -> Result<Bytes, ApiError> {
    match nanofaas_api::json::check_invocation(&body) {
        Ok(nanofaas_api::json::Body::Empty) => Ok(Bytes::from_static(b"{\"input\":null}")),
        Ok(nanofaas_api::json::Body::Request) => Ok(body),
        Err(e) => Err(json_invalid(e)),
    }
}

/// The body of `POST /v1/functions`: strict JSON (duplicate keys refused too), then the spec.
pub fn spec_from_body(body: &[u8]) -> Result<FunctionSpec, ApiError> {
    nanofaas_api::json::check(body, nanofaas_api::json::Rules::STRICT).map_err(json_invalid)?;
    Ok(FunctionSpec::from_json(body)?)
}

fn set_exec_headers(r: &mut Resp, id: &str, trace: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(h::EXECUTION_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(trace) {
        r.headers_mut().insert(h::TRACE_ID, v);
    }
}

/// HTTP status of a synchronous invocation's final outcome.
pub fn outcome_status(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Success(_) => 200,
        Outcome::Failure(f) => match (f.kind, ErrorCode::parse(&f.error.code)) {
            (FailureKind::Timeout, _) | (_, Some(ErrorCode::Timeout)) => 408,
            (_, Some(ErrorCode::FunctionRemoved)) => 410,
            (_, Some(ErrorCode::InstanceLost)) => 502,
            (_, Some(ErrorCode::StartupError | ErrorCode::SpawnError)) => 503,
            _ => 500,
        },
    }
}

/// `{executionId, status, output, error}`; the output bytes are copied, not re-encoded.
pub fn invoke_response(id: &str, trace: &str, cold: bool, outcome: &Outcome) -> Resp {
    let mut b = BytesMut::with_capacity(
        96 + match outcome {
            Outcome::Success(o) => o.len(),
            _ => 128,
        },
    );
    b.put_slice(b"{\"executionId\":\"");
    b.put_slice(id.as_bytes());
    b.put_slice(b"\",\"status\":\"");
    let status = match outcome {
        Outcome::Success(_) => ExecutionStatus::Success,
        o => o.status(),
    };
    b.put_slice(status.as_str().as_bytes());
    match outcome {
        Outcome::Success(out) => {
            b.put_slice(b"\",\"output\":");
            b.put_slice(out);
            b.put_slice(b",\"error\":null}");
        }
        Outcome::Failure(f) => {
            b.put_slice(b"\",\"output\":null,\"error\":");
            b.put_slice(&serde_json::to_vec(&f.error).unwrap_or_else(|_| b"null".to_vec()));
            b.put_slice(b"}");
        }
    }
    let mut r = json(outcome_status(outcome), b.freeze());
    set_exec_headers(&mut r, id, trace);
    r.headers_mut().insert(
        h::COLD_START,
        HeaderValue::from_static(if cold { "true" } else { "false" }),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_routes() {
        assert!(matches!(
            parse_route("/v1/executions/abc/logs"),
            Some(Route::ExecutionLogs("abc"))
        ));
        assert!(matches!(
            parse_route("/v1/executions/abc"),
            Some(Route::Execution("abc"))
        ));
        assert!(parse_route("/v1/executions//logs").is_none());
        assert!(matches!(
            parse_route("/v1/functions/echo/logs"),
            Some(Route::FunctionLogs("echo"))
        ));
        assert!(parse_route("/v1/functions/a/b/logs").is_none());
        assert_eq!(query_param(Some("a=1&follow=true"), "follow"), Some("true"));
        assert_eq!(query_param(Some("follow"), "follow"), Some(""));
        assert_eq!(query_param(None, "follow"), None);
    }

    #[test]
    fn routes() {
        assert!(matches!(
            parse_route("/v1/functions"),
            Some(Route::Functions)
        ));
        assert!(matches!(
            parse_route("/v1/functions/a.b-c"),
            Some(Route::Function("a.b-c"))
        ));
        assert!(matches!(
            parse_route("/v1/functions/echo:invoke"),
            Some(Route::Invoke("echo"))
        ));
        assert!(matches!(
            parse_route("/v1/functions/echo:enqueue"),
            Some(Route::Enqueue("echo"))
        ));
        assert!(parse_route("/v1/functions/echo:run").is_none());
        assert!(parse_route("/v1/functions/a/b").is_none());
        assert!(matches!(
            parse_route("/v1/executions/x"),
            Some(Route::Execution("x"))
        ));
        assert!(matches!(
            parse_route("/v1/executions/x/trace"),
            Some(Route::ExecutionTrace("x"))
        ));
        assert!(parse_route("/v1/executions//trace").is_none());
        assert!(parse_route("/v1/executions/x/y/trace").is_none());
        assert!(matches!(
            parse_route("/v1/internal/executions/x:complete"),
            Some(Route::Complete("x"))
        ));
        assert!(parse_route("/v1/internal/executions/x").is_none());
        assert!(parse_route("/nope").is_none());
    }

    #[test]
    fn invocation_bodies() {
        assert_eq!(
            validate_invocation(Bytes::new()).unwrap(),
            Bytes::from_static(b"{\"input\":null}")
        );
        assert!(validate_invocation(Bytes::from_static(
            b"{\"input\":{\"a\":[1,2]},\"metadata\":{\"k\":\"v\"}}"
        ))
        .is_ok());
        let err = |b: &'static [u8]| match validate_invocation(Bytes::from_static(b)) {
            Err(ApiError::Invalid(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(b"{\"metadata\":{\"k\":1}}").field, "metadata.k");
        assert_eq!(err(b"{\"inptu\":1}").field, "inptu");
        assert_eq!(err(b"{\"input\":").field, "input");
        assert_eq!(err(b"[1]").field, "");
        // Strict: what a runtime could not read is refused here, naming the place.
        let e = err(b"{\"input\":1}}");
        assert_eq!(e.field, "");
        assert_eq!(
            e.reason,
            "trailing characters after the JSON value at line 1, column 12"
        );
        assert_eq!(err(b"{\"input\":[1e400]}").field, "input[0]");
        assert!(err(b"{\"input\":\"\xff\"}")
            .reason
            .starts_with("invalid UTF-8"));
        let deep = format!("{{\"input\":{}}}", "[".repeat(200));
        let e = match validate_invocation(Bytes::from(deep)) {
            Err(ApiError::Invalid(v)) => v,
            other => panic!("{other:?}"),
        };
        assert!(e.reason.starts_with("nested deeper than 64"), "{e}");
        // Accepted bodies are passed on as they are.
        let body = Bytes::from_static(b" {\"input\" : {\"a\":1,\"a\":2}} \n");
        assert_eq!(validate_invocation(body.clone()).unwrap(), body);
    }

    /// Found by the spec_body fuzz target: a rate written with many digits read back as another
    /// double after the registry stored it (serde_json's fast float parsing was not exact).
    #[test]
    fn an_accepted_spec_reads_back_unchanged() {
        let body = b"{\"name\":\"f\",\"image\":\"1\",\"rateLimitPerSecond\":999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999992.5,\"idleTimeoutMs\":0}";
        let spec = spec_from_body(body).unwrap();
        let stored = serde_json::to_vec(&spec).unwrap();
        assert_eq!(spec_from_body(&stored).unwrap(), spec);
    }

    #[test]
    fn spec_bodies_are_strict() {
        let err = |b: &[u8]| match spec_from_body(b) {
            Err(ApiError::Invalid(v)) => v,
            other => panic!("{other:?}"),
        };
        let ok = br#"{"name":"f","executionMode":"POOL","endpointUrl":"http://127.0.0.1:1/"}"#;
        assert!(spec_from_body(ok).is_ok());
        let mut trailing = ok.to_vec();
        trailing.push(b'}');
        assert!(err(&trailing).reason.starts_with("trailing characters"));
        let e = err(br#"{"name":"f","name":"g","executionMode":"POOL","endpointUrl":"http://x/"}"#);
        assert_eq!(e.field, "name");
        assert!(e.reason.starts_with("duplicate key"), "{e}");
        let e = match spec_for_put("f", br#"{"env":{"A":"1","A":"2"}}"#) {
            Err(ApiError::Invalid(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.field, "env.A");
        assert!(matches!(
            spec_for_put("f", b"{\"timeoutMs\":1e400}"),
            Err(ApiError::Invalid(_))
        ));
    }
}
