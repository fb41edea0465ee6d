//! CPU per call of the invocation-body check, before and after the strict checker.
//!
//! `cargo run --release -p nanofaas-api --example validate_bench`
//!
//! "serde (before)" is the check the control plane ran until the strict checker: serde_json into
//! a struct of `IgnoredAny` and an optional map (it did not check trailing bytes on its fallback
//! path, nor depth, UTF-8 inside strings, surrogates or number range). "strict (after)" is
//! `nanofaas_api::json::check_invocation`, which the API runs now. Thread CPU time, best of 5.

use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::hint::black_box;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Before {
    #[serde(default)]
    input: IgnoredAny,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

fn cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn per_call(f: &dyn Fn(&[u8]) -> bool, body: &[u8]) -> f64 {
    assert!(f(body), "the body must be accepted");
    // Enough calls for about 50 ms of CPU.
    let t0 = cpu_ns();
    let mut n = 0u64;
    while cpu_ns() - t0 < 20_000_000 {
        black_box(f(black_box(body)));
        n += 1;
    }
    let iters = (n * 50 / 20).max(10);
    (0..5)
        .map(|_| {
            let t = cpu_ns();
            for _ in 0..iters {
                black_box(f(black_box(body)));
            }
            (cpu_ns() - t) as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let medium = {
        let mut s = String::from("{\"input\":{\"user\":{\"name\":\"Ada Lovelace\",\"id\":12345,\"tags\":[\"a\",\"b\",\"c\"]},\"items\":[");
        for i in 0..20 {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"sku\":\"X-{i}\",\"qty\":{i},\"price\":{}.99,\"ok\":true}}",
                i * 3
            ));
        }
        s.push_str("]},\"metadata\":{\"tenant\":\"t1\",\"source\":\"bench\"}}");
        s
    };
    let text = format!(
        "{{\"input\":{{\"text\":\"{}\"}}}}",
        "lorem ipsum dolor sit amet, é ✓ ".repeat(2000)
    );
    let numbers = {
        let v: Vec<String> = (0..8000)
            .map(|i| format!("{}.{}e-3", i * 7, i % 10))
            .collect();
        format!("{{\"input\":[{}]}}", v.join(","))
    };
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("small", br#"{"input":{"name":"Ada"}}"#.to_vec()),
        ("medium", medium.into_bytes()),
        ("64KiB text", text.into_bytes()),
        ("numbers", numbers.into_bytes()),
    ];
    let before = |b: &[u8]| serde_json::from_slice::<Before>(b).is_ok();
    let after = |b: &[u8]| nanofaas_api::json::check_invocation(b).is_ok();
    let utf8 = |b: &[u8]| std::str::from_utf8(b).is_ok();
    let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).is_ok();
    println!(
        "{:<12} {:>8} {:>16} {:>16} {:>8} {:>14} {:>14}",
        "body", "bytes", "serde (before)", "strict (after)", "ratio", "UTF-8 alone", "serde Value"
    );
    for (name, body) in &bodies {
        let b = per_call(&before, body);
        let a = per_call(&after, body);
        let u = per_call(&utf8, body);
        let v = per_call(&value, body);
        println!(
            "{:<12} {:>8} {:>13.0} ns {:>13.0} ns {:>7.2}x {:>11.0} ns {:>11.0} ns",
            name,
            body.len(),
            b,
            a,
            a / b,
            u,
            v
        );
    }
}
