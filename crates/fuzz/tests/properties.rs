//! Property tests over the body parsers, deterministic (fixed seeds), sharing the fuzz targets:
//! every target's properties hold on its seeds, its corpus (past findings) and a few thousand
//! generated and mutated inputs; and valid JSON written by serde_json is always accepted and
//! forwarded unchanged.

use nanofaas_api::json::{self, Body, Rules, MAX_DEPTH};
use nanofaas_fuzz::mutate::{json_value, Rng};
use nanofaas_fuzz::targets::TARGETS;
use nanofaas_fuzz::{fuzz, run_one, seeds, Settings};
use std::path::Path;
use std::time::Duration;

fn corpus() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"))
}

#[test]
fn every_past_finding_and_seed_passes() {
    let mut n = 0;
    for t in TARGETS {
        for input in seeds(t, Some(corpus())) {
            if let Err(m) = run_one(t, &input) {
                panic!(
                    "{}: {m}\ninput: {}",
                    t.name,
                    nanofaas_fuzz::rust_literal(&input)
                );
            }
            n += 1;
        }
    }
    assert!(n >= 30, "only {n} seeds");
}

#[test]
fn properties_hold_on_generated_and_mutated_inputs() {
    for t in TARGETS {
        let execs = if t.name == "http_response" { 500 } else { 3000 };
        let s = Settings {
            duration: Duration::from_secs(60),
            max_execs: execs,
            seed: 7,
            budget: Duration::from_secs(2),
            corpus_dir: Some(corpus().to_path_buf()),
            ..Settings::default()
        };
        let r = fuzz(t, &s, &mut |_| {});
        if let Some(c) = r.crash {
            panic!(
                "{}: {:?}\ninput: {}",
                t.name,
                c.finding,
                nanofaas_fuzz::rust_literal(&c.input)
            );
        }
        assert_eq!(r.execs, execs, "{}", t.name);
    }
}

#[test]
fn valid_json_is_accepted_and_passed_on_unchanged() {
    let mut rng = Rng::new(42);
    for _ in 0..5000 {
        let mut text = Vec::new();
        let depth = 1 + rng.below(8);
        json_value(&mut rng, depth, &mut text);
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_else(|e| {
            panic!(
                "generator wrote invalid JSON ({e}): {}",
                String::from_utf8_lossy(&text)
            )
        });
        for form in [
            serde_json::to_vec(&v).unwrap(),
            serde_json::to_vec_pretty(&v).unwrap(),
            text.clone(),
        ] {
            assert!(
                json::check(&form, Rules::DATA).is_ok(),
                "{}",
                String::from_utf8_lossy(&form)
            );
            let mut body = b"{\"metadata\":{\"k\":\"v\"},\"input\":".to_vec();
            body.extend_from_slice(&form);
            body.push(b'}');
            assert_eq!(json::check_invocation(&body), Ok(Body::Request));
            let out =
                nanofaas_control_plane::api::validate_invocation(bytes::Bytes::from(body.clone()))
                    .unwrap();
            assert_eq!(&out[..], &body[..]);
        }
    }
}

#[test]
fn any_prefix_of_a_valid_body_is_refused_with_a_place_inside_it() {
    let mut rng = Rng::new(9);
    for _ in 0..300 {
        let mut body = b"{\"input\":".to_vec();
        json_value(&mut rng, 4, &mut body);
        body.push(b'}');
        assert!(json::check_invocation(&body).is_ok());
        for cut in 1..body.len() {
            let e = json::check_invocation(&body[..cut]).expect_err("a prefix is not a body");
            assert!(e.offset <= cut, "{e} for {cut} bytes");
        }
        // Anything after the object is refused.
        let mut longer = body.clone();
        longer.extend_from_slice(b"}");
        assert!(json::check_invocation(&longer).is_err());
    }
}

#[test]
fn nesting_is_refused_exactly_past_the_limit() {
    for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
        let inner = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!("{{\"input\":{inner}}}");
        assert_eq!(
            json::check_invocation(body.as_bytes()).is_ok(),
            depth < MAX_DEPTH,
            "{depth}"
        );
        assert_eq!(
            json::check(inner.as_bytes(), Rules::DATA).is_ok(),
            depth <= MAX_DEPTH
        );
    }
}
