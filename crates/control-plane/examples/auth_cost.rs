//! CPU per request of the API's access checks (`bench/run.sh auth` runs it in a release build):
//! the checks every request passes (Host, Origin, Content-Type) with no tokens configured (the
//! baseline), then the same with bearer-token authentication and a role check against
//! `TOKENS` configured tokens. Prints nanoseconds of process CPU time per request for both, the
//! difference (what authentication adds) and the ratio, as one JSON line.
//!
//! `cargo run --release -p nanofaas-control-plane --example auth_cost [ITERATIONS] [TOKENS]`

use http::{HeaderMap, HeaderValue};
use nanofaas_control_plane::access::{self, hash_token, hex, Access, Action};
use nanofaas_control_plane::config::{ApiConfig, TokenConfig};
use std::hint::black_box;

fn cpu_ns() -> u128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// What `api::route` checks for an invocation, in its order.
fn edge(a: &Access, h: &HeaderMap) -> bool {
    a.check_host(h).is_ok()
        && a.check_origin(h).is_ok()
        && match a.authenticate(h) {
            Ok(who) => a
                .authorize(who, Action::Invoke(black_box("orders-eu")))
                .is_ok(),
            Err(_) => false,
        }
        && access::check_json_body(h).is_ok()
}

fn per_call_ns(a: &Access, h: &HeaderMap, n: u64) -> f64 {
    for _ in 0..n / 10 {
        assert!(edge(black_box(a), black_box(h)));
    }
    let t0 = cpu_ns();
    for _ in 0..n {
        assert!(edge(black_box(a), black_box(h)));
    }
    (cpu_ns() - t0) as f64 / n as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let tokens: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
    let token = access::new_token().expect("random token");
    let mut cfg = ApiConfig::default();
    for i in 0..tokens.saturating_sub(1) {
        cfg.tokens.push(TokenConfig {
            role: "viewer".into(),
            sha256: hex(&hash_token(&format!("nf_other{i}"))),
            functions: vec![],
        });
    }
    // The caller's token last: every configured hash is compared anyway.
    cfg.tokens.push(TokenConfig {
        role: "invoker".into(),
        sha256: hex(&hash_token(&token)),
        functions: vec!["orders-*".into()],
    });
    let with = Access::from_config(&cfg).expect("config");
    let without = Access::from_config(&ApiConfig::default()).expect("config");
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("content-length", HeaderValue::from_static("58"));
    h.insert("user-agent", HeaderValue::from_static("loadgen"));
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    // Interleaved rounds; the medians are reported.
    let (mut base, mut auth) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        base.push(per_call_ns(&without, &h, n));
        auth.push(per_call_ns(&with, &h, n));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (b, a) = (med(&mut base), med(&mut auth));
    println!(
        "{{\"iterations\":{n},\"tokens\":{tokens},\"baseline_ns\":{b:.1},\"with_token_ns\":{a:.1},\"added_ns\":{:.1},\"ratio\":{:.2}}}",
        a - b,
        a / b
    );
}
