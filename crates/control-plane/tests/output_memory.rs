//! What a function prints cannot grow the control plane: the real `nanofaas serve` binary runs
//! a function that writes 5 MB without a newline on every call, 200 times, and its resident
//! memory stays within 50 MB of where it started, also after the function is deleted; the
//! watchdog that passed the output on stays small too.

use nanofaas_testkit::{http, wait_until};
use serde_json::json;
use std::time::Duration;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test]
async fn five_megabytes_without_a_newline_200_times_leave_the_memory_flat() {
    let state = std::env::temp_dir().join(format!("nanofaas-outmem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (cp, base) = nanofaas_testkit::serve_nanofaas(&state, &[]).await;
    // STDIO mode: the watchdog runs the command per call and copies its stderr to its own,
    // which the control plane reads.
    let script = "head -c 5000000 /dev/zero | tr '\\0' x >&2; echo '{\"ok\":true}'";
    let r = http(
        "POST",
        &format!("{base}/v1/functions"),
        &[],
        json!({"name": "loud", "command": ["sh", "-c", script], "runtimeMode": "STDIO",
               "minInstances": 1, "maxInstances": 1, "concurrency": 4, "instanceConcurrency": 4,
               "timeoutMs": 30000})
        .to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let call = |base: String| async move {
        let r = http(
            "POST",
            &format!("{base}/v1/functions/loud:invoke"),
            &[],
            r#"{"input":null}"#,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    };
    call(base.clone()).await;
    let start = rss_kib(cp.pid());
    let mut peak = start;
    for _ in 0..50 {
        let calls: Vec<_> = (0..4).map(|_| tokio::spawn(call(base.clone()))).collect();
        for c in calls {
            c.await.unwrap();
        }
        peak = peak.max(rss_kib(cp.pid()));
    }
    let after = rss_kib(cp.pid());
    // The watchdog passed the same gigabyte through, keeping only a bounded tail of it.
    let instances = http(
        "GET",
        &format!("{base}/v1/functions/loud/instances"),
        &[],
        "",
    )
    .await
    .unwrap()
    .json();
    let watchdog = instances[0]["pid"].as_u64().expect("the watchdog's pid") as u32;
    let watchdog_rss = rss_kib(watchdog);
    eprintln!("watchdog RSS after 200 calls: {watchdog_rss} KiB");
    assert!(
        watchdog_rss < 50 * 1024,
        "the watchdog holds {watchdog_rss} KiB"
    );
    eprintln!("control plane RSS: start {start} KiB, peak {peak} KiB, after 200 calls {after} KiB");
    assert!(
        peak <= start + 50 * 1024,
        "1 GB of output grew the control plane from {start} KiB to {peak} KiB"
    );
    let r = http("DELETE", &format!("{base}/v1/functions/loud"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    // The instance ends; its last, cut line reaches the log with the marker.
    assert!(
        wait_until(Duration::from_secs(20), || cp
            .output()
            .contains("bytes cut]"))
        .await,
        "the cut line was never logged:\n{}",
        &cp.output()[cp.output().len().saturating_sub(3000)..]
    );
    let deleted = rss_kib(cp.pid());
    eprintln!("control plane RSS after the delete: {deleted} KiB");
    assert!(
        deleted <= start + 50 * 1024,
        "{deleted} KiB after the delete"
    );
    drop(cp);
    std::fs::remove_dir_all(state).ok();
}
