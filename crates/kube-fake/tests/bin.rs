//! The `nanofaas-kube-fake` binary: prints where it listens, serves, writes a kubeconfig,
//! stops on SIGTERM with exit 0, and rejects bad usage with exit 2.

mod common;

use common::*;
use nanofaas_testkit::{Proc, Stream};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_nanofaas-kube-fake");

#[tokio::test]
async fn serves_on_the_printed_address_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("kube-fake-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--containers",
        "fake",
        "--ready-delay-ms",
        "5",
        "--namespace",
        "fns",
        "--kubeconfig",
    ])
    .arg(&kc);
    let mut p = Proc::spawn(cmd).expect("spawn the fake");
    let line = p
        .wait_line_async(Stream::Stdout, Duration::from_secs(10), |l| {
            l.starts_with("listening on ")
        })
        .await
        .unwrap_or_else(|| panic!("no listening line\n{}", p.output()));
    let url = line.trim_start_matches("listening on ").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let text = std::fs::read_to_string(&kc).expect("kubeconfig written");
    assert!(
        text.contains(&format!("server: {url}")) && text.contains("namespace: fns"),
        "{text}"
    );

    let mut w = Watch::open(&format!(
        "{url}/api/v1/namespaces/fns/pods?watch=true&resourceVersion=1"
    ))
    .await;
    create(&url, "fns", &pod("a", json!({}))).await;
    w.until(T, |e| is(e, "MODIFIED", "a") && ready(&e["object"]))
        .await;

    p.signal(libc_sigterm()).expect("SIGTERM");
    let status = p
        .wait_exit_async(Duration::from_secs(10))
        .await
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", p.output());
    std::fs::remove_dir_all(&dir).ok();
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn bad_usage_is_exit_2() {
    for args in [
        &["--containers", "vm"][..],
        &["--nodes"][..],
        &["--frobnicate"][..],
        &["--history", "x"][..],
    ] {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    }
}
