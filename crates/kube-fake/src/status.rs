//! `Status` objects (the API server's error bodies), timestamps and generated names.
//!
//! Owns the exact wording and shape of errors; handlers only pick one.

use serde_json::{json, Value};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// An API error: the HTTP code and the `Status` object sent as the body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> ApiError {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    ApiError { code, body }
}

impl ApiError {
    /// `pods "x" not found`.
    pub fn not_found(resource: &str, name: &str) -> ApiError {
        status(
            404,
            "NotFound",
            format!("{resource} \"{name}\" not found"),
            Some(json!({"name": name, "kind": resource})),
        )
    }

    /// `pods "x" already exists`.
    pub fn already_exists(resource: &str, name: &str) -> ApiError {
        status(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
            Some(json!({"name": name, "kind": resource})),
        )
    }

    /// 422 with one cause per `(field, reason, message)`; `kind` is the object's kind (`Pod`).
    pub fn invalid(
        kind: &str,
        resource: &str,
        name: &str,
        causes: &[(String, &str, String)],
    ) -> ApiError {
        let text: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
        let message = if text.len() == 1 {
            format!("{kind} \"{name}\" is invalid: {}", text[0])
        } else {
            format!("{kind} \"{name}\" is invalid: [{}]", text.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(f, r, m)| json!({"reason": r, "message": m, "field": f}))
            .collect();
        status(
            422,
            "Invalid",
            message,
            Some(json!({"name": name, "kind": resource, "causes": causes})),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        status(400, "BadRequest", message.into(), None)
    }

    /// The 404 of a path the server does not serve (the real one answers `404 page not found`
    /// as text for unknown groups; for a known group and unknown resource it is this Status).
    pub fn no_route(path: &str) -> ApiError {
        status(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
            Some(json!({})),
        )
    }

    pub fn method_not_allowed(method: &str) -> ApiError {
        status(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
            Some(json!({})),
        )
    }

    pub fn unsupported_media_type(ct: &str) -> ApiError {
        status(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json; got {ct}"), None)
    }

    /// What a watch from a compacted resourceVersion gets, as an ERROR event's object (and as
    /// the body of a list with `resourceVersionMatch=Exact`).
    pub fn gone(requested: u64, oldest: u64) -> ApiError {
        status(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
            None,
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        status(500, "InternalError", message.into(), None)
    }
}

/// Seconds and nanoseconds since the epoch, now.
pub fn now_unix() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// RFC 3339 in UTC with second precision, as metav1.Time is serialised (`2024-01-02T03:04:05Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The current time as metav1.Time.
pub fn now_rfc3339() -> String {
    rfc3339(now_unix().0)
}

/// MicroTime, as events' `eventTime` would carry (`...05.123456Z`).
pub fn now_micro() -> String {
    let (s, n) = now_unix();
    let base = rfc3339(s);
    format!("{}.{:06}Z", &base[..base.len() - 1], n / 1000)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 64 pseudo-random bits (std's per-process random hash keys over a counter): unique enough
/// for uids and generated names, with no dependency.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(now_unix().1);
    h.finish()
}

/// A version-4-shaped uid (`8-4-4-4-12` hex).
pub fn new_uid() -> String {
    let a = random_u64();
    let b = random_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The 5-character suffix the API server appends to a `generateName` (its alphabet has no
/// vowels and no confusable digits).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
            r /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_ne!(u, new_uid());
        assert_eq!(name_suffix().len(), 5);
    }

    #[test]
    fn status_shape() {
        let e = ApiError::already_exists("pods", "x");
        assert_eq!(e.code, 409);
        assert_eq!(e.body["kind"], "Status");
        assert_eq!(e.body["message"], "pods \"x\" already exists");
        assert_eq!(
            ApiError::gone(3, 9).body["message"],
            "too old resource version: 3 (9)"
        );
    }
}
