//! The dashboard: a page at `/ui` (HTML, CSS and a small hand-written script, embedded in the
//! binary) and the two routes it reads, `GET /v1/ui/snapshot` and `GET /v1/ui/stream`
//! (server-sent events, one event a second). docs/observability.md describes what it shows.
//!
//! It owns the time series ([`series`]) and their sampler, and reads everything else from the
//! platform (registry, pools, execution store); it must not add work to the invocation path.
//!
//! Security: the page and its assets hold no data and are served to anyone who passes the
//! `Host` and `Origin` checks of the API; every response carries a strict Content-Security-Policy
//! (no inline script or style, nothing from another origin, no framing). The data routes need
//! the same token as the API (a viewer is enough): the page asks for it, keeps it in the tab's
//! `sessionStorage`, and sends it as `Authorization` on `fetch` (the event stream is read with
//! `fetch`, not `EventSource`, which cannot send headers), so the token never appears in a URL,
//! a cookie or a log. With no tokens configured (the loopback default) it just works.

pub mod series;

use crate::access::Action;
use crate::api::{self, AppState};
use crate::error::ApiError;
use crate::platform::Platform;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use serde_json::{json, Value};
use series::{Point, Series};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Event streams open at once, at most; more are refused with 429.
pub const MAX_STREAMS: usize = 32;
/// Recent executions listed (the newest finished ones the store still keeps).
pub const RECENT: usize = 50;

/// The Content-Security-Policy of every dashboard response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the dashboard keeps: the series and the count of open streams.
#[derive(Default)]
pub struct Dashboard {
    pub series: Series,
    streams: AtomicUsize,
}

impl Dashboard {
    /// Creates the dashboard and starts its sampler, which reads the platform's metrics once per
    /// [`series::RESOLUTION`] until the platform shuts down or is dropped.
    pub fn start(platform: &Arc<Platform>) -> Arc<Dashboard> {
        let d = Arc::new(Dashboard::default());
        let (weak, dash): (Weak<Platform>, Weak<Dashboard>) =
            (Arc::downgrade(platform), Arc::downgrade(&d));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(series::RESOLUTION);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let (Some(p), Some(d)) = (weak.upgrade(), dash.upgrade()) else {
                    return;
                };
                if p.is_shutting_down() {
                    return;
                }
                d.series.sample(&p.metrics, unix_secs());
            }
        });
        d
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The body of every response of the listener: the API's, or the dashboard's event stream.
pub enum Body {
    Api(api::Body),
    Events(Box<Events>),
}

fn whole(b: impl Into<Bytes>) -> Body {
    Body::Api(api::Body::Left(Full::new(b.into())))
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Api(Either::Left(b)) => Pin::new(b).poll_frame(cx),
            Body::Api(Either::Right(b)) => Pin::new(b).poll_frame(cx),
            Body::Events(e) => e.poll(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Api(b) => b.is_end_stream(),
            Body::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Api(b) => b.size_hint(),
            Body::Events(_) => SizeHint::default(),
        }
    }
}

/// Whether a path is the dashboard's.
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/") || path.starts_with("/v1/ui/")
}

/// Serves one request of the public listener: the dashboard's paths here, the rest by the API.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    if state.callbacks_only || !is_ui_path(req.uri().path()) {
        return api::handle(state, req).await.map(Body::Api);
    }
    state.platform.metrics.global.http_requests.inc();
    let mut r = match route(&state, &req) {
        Ok(r) => r,
        Err(e) => api::error_response(&e).map(Body::Api),
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn route(state: &Arc<AppState>, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let access = &state.access;
    // The API's checks: no page of another origin, no name rebound to this machine.
    access.check_host(req.headers())?;
    access.check_origin(req.headers())?;
    let path = req.uri().path();
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed(format!(
            "{method} (allowed: GET, HEAD)"
        )));
    }
    if let Some(r) = asset(path) {
        return Ok(r);
    }
    let data = match path {
        "/v1/ui/snapshot" => true,
        "/v1/ui/stream" => false,
        _ => return Err(ApiError::NotFound(format!("no route for {method} {path}"))),
    };
    let who = access.authenticate(req.headers())?;
    access.authorize(who, Action::Read)?;
    if data {
        let (body, _) = snapshot(&state.platform, &state.ui, 0);
        let mut r = Response::new(whole(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(r);
    }
    let ui = &state.ui;
    if ui.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        ui.streams.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::Backpressure {
            reason: "streams",
            retry_after: Duration::from_secs(5),
            message: format!("{MAX_STREAMS} dashboard streams are open already"),
        });
    }
    let mut tick = tokio::time::interval(series::RESOLUTION);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let events = Events {
        platform: state.platform.clone(),
        ui: ui.clone(),
        tick,
        since: 0,
    };
    let mut r = Response::new(Body::Events(Box::new(events)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// An open event stream: one `snapshot` event a second, the first with the whole series, the
/// next ones with the points added since. Ends when the platform shuts down; a client that goes
/// away drops it.
pub struct Events {
    platform: Arc<Platform>,
    ui: Arc<Dashboard>,
    tick: tokio::time::Interval,
    since: u64,
}

impl Events {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.platform.is_shutting_down() {
            return Poll::Ready(None);
        }
        if self.tick.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        if self.platform.is_shutting_down() {
            return Poll::Ready(None);
        }
        let (body, last) = snapshot(&self.platform, &self.ui, self.since);
        self.since = last;
        let mut ev = Vec::with_capacity(body.len() + 32);
        ev.extend_from_slice(b"event: snapshot\ndata: ");
        ev.extend_from_slice(&body);
        ev.extend_from_slice(b"\n\n");
        Poll::Ready(Some(Bytes::from(ev)))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.ui.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn num(v: f32) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// The series as columns (one array per field), which is what the charts draw.
fn columns(points: &[Point]) -> Value {
    let col = |f: fn(&Point) -> Value| Value::Array(points.iter().map(f).collect());
    json!({
        "t": col(|p| json!(p.t)),
        "done": col(|p| json!(p.done)),
        "errors": col(|p| json!(p.errors)),
        "rejected": col(|p| json!(p.rejected)),
        "cold": col(|p| json!(p.cold)),
        "warm": col(|p| json!(p.warm)),
        "p50": col(|p| num(p.p50_ms)),
        "p99": col(|p| num(p.p99_ms)),
        "inflight": col(|p| json!(p.inflight)),
        "queued": col(|p| json!(p.queued)),
    })
}

/// The state the page shows, with the points newer than `since`; returns the JSON and the stamp
/// of the newest point included.
pub fn snapshot(p: &Platform, ui: &Dashboard, since: u64) -> (Vec<u8>, u64) {
    let last = ui.series.last_t();
    let mut functions = Vec::new();
    for f in p.registry.list() {
        let spec = &f.spec;
        let mut pool = serde_json::Map::new();
        for s in ["starting", "ready", "busy", "draining", "failed"] {
            pool.insert(s.into(), json!(0));
        }
        let mut instances = 0;
        if let Ok(Value::Array(list)) = p.instances(&f.name) {
            for i in &list {
                if let Some(s) = i["state"].as_str() {
                    if s != "stopped" {
                        instances += 1;
                    }
                    if let Some(Value::Number(n)) = pool.get(s) {
                        let n = n.as_u64().unwrap_or(0) + 1;
                        pool.insert(s.into(), json!(n));
                    }
                }
            }
        }
        let points = ui
            .series
            .read(&f.name, since)
            .map(|r| r.points)
            .unwrap_or_default();
        functions.push(json!({
            "name": &*f.name,
            "mode": spec.execution_mode.as_str(),
            "runtime": spec.runtime_mode.as_str(),
            "concurrency": spec.concurrency,
            "minInstances": spec.min_instances,
            "maxInstances": spec.max_instances,
            "instances": instances,
            "pool": pool,
            // Generic instances of its kind, ready for its next cold start (shared with the
            // other functions of that kind).
            "prewarmed": p.prewarmed_for(spec),
            "inflight": f.metrics.inflight.get(),
            "queued": f.metrics.queue_depth.get(),
            "tracked": ui.series.tracks(&f.name),
            "series": columns(&points),
        }));
    }
    let recent: Vec<Value> = p
        .store
        .recent_finished(RECENT)
        .iter()
        .map(|e| {
            let s = e.summary();
            json!({
                "executionId": &*e.id,
                "function": &*e.function,
                "status": s.status,
                "mode": e.mode.as_str(),
                "attempts": s.attempts,
                "coldStart": s.cold_start,
                "start": s.start.map(|k| k.as_str()),
                "createdAt": e.created_at,
                "durationMs": s.finished_at.map(|f| f.saturating_sub(e.created_at)),
                "traceId": &*e.trace_id,
            })
        })
        .collect();
    let body = json!({
        "now": last,
        "resolutionSeconds": series::RESOLUTION.as_secs(),
        "points": series::POINTS,
        "untracked": ui.series.untracked(),
        "functions": functions,
        "recent": recent,
    });
    (serde_json::to_vec(&body).unwrap_or_default(), last)
}

/// One embedded file.
struct Asset {
    /// Path with the content's hash in it (`/ui/assets/app.<hash>.js`).
    path: String,
    bytes: Bytes,
    content_type: &'static str,
}

struct Assets {
    index: Bytes,
    files: Vec<Asset>,
}

const INDEX: &str = include_str!("assets/index.html");
const FILES: &[(&str, &str, &[u8], &str)] = &[
    (
        "app",
        "js",
        include_bytes!("assets/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "app",
        "css",
        include_bytes!("assets/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "icon",
        "svg",
        include_bytes!("assets/icon.svg"),
        "image/svg+xml",
    ),
];

/// FNV-1a, 64 bits: names a version of an asset (not a security measure).
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn assets() -> &'static Assets {
    static A: OnceLock<Assets> = OnceLock::new();
    A.get_or_init(|| {
        let mut index = INDEX.to_string();
        let mut files = Vec::new();
        for (stem, ext, bytes, ct) in FILES {
            let path = format!("/ui/assets/{stem}.{:012x}.{ext}", fnv(bytes) >> 16);
            index = index.replace(&format!("{{{{{stem}.{ext}}}}}"), &path);
            files.push(Asset {
                path,
                bytes: Bytes::from_static(bytes),
                content_type: ct,
            });
        }
        Assets {
            index: Bytes::from(index),
            files,
        }
    })
}

fn asset(path: &str) -> Option<Response<Body>> {
    let a = assets();
    let (bytes, ct, cache) = if path == "/ui" || path == "/ui/" {
        // The page names its assets by version: it must be revalidated, they never.
        (a.index.clone(), "text/html; charset=utf-8", "no-cache")
    } else {
        let f = a.files.iter().find(|f| f.path == path)?;
        (
            f.bytes.clone(),
            f.content_type,
            "public, max-age=31536000, immutable",
        )
    };
    let mut r = Response::new(whole(bytes));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(is_ui_path("/ui"));
        assert!(is_ui_path("/ui/"));
        assert!(is_ui_path("/ui/assets/app.0.js"));
        assert!(is_ui_path("/v1/ui/stream"));
        assert!(!is_ui_path("/uix"));
        assert!(!is_ui_path("/v1/functions"));
        assert!(!is_ui_path("/v1/uix"));
    }

    #[test]
    fn the_page_names_versioned_assets_that_are_served() {
        let a = assets();
        let index = std::str::from_utf8(&a.index).unwrap();
        assert!(!index.contains("{{"), "a placeholder is left: {index}");
        for f in &a.files {
            assert!(index.contains(&f.path), "{} not in the page", f.path);
            let r = asset(&f.path).unwrap();
            assert_eq!(
                r.headers()[header::CACHE_CONTROL],
                "public, max-age=31536000, immutable"
            );
        }
        assert_eq!(
            asset("/ui").unwrap().headers()[header::CACHE_CONTROL],
            "no-cache"
        );
        assert!(asset("/ui/assets/app.js").is_none());
        assert!(asset("/ui/assets/app.000000000000.js").is_none());
        // No inline script or style: the CSP forbids them.
        assert!(!index.contains("<script>") && !index.contains("style="));
        assert!(!index.contains("<style"));
    }
}
