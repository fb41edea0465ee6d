//! What the providers share: cutting an instance's output into bounded lines, the tail of that
//! output, rate-limited forwarding of it to the log, the identity of a process across PID reuse,
//! joining futures, and the warm watchdog's environment in a container or pod.
//!
//! Output is something a function controls: a line is cut at [`MAX_LINE_BYTES`] *as it is read*
//! (the rest is counted, not buffered), so a function printing gigabytes without a newline costs
//! the control plane at most one line buffer per stream of each instance.

use nanofaas_api::log_limit::LogLimiter;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Lines of an instance's output kept for error messages.
pub const TAIL_LINES: usize = 40;
/// Longest line kept; longer ones are cut.
const MAX_LINE: usize = 2000;

/// Longest output line of an instance that is kept and logged; the rest of a longer line is
/// dropped and the line ends with a marker ` [... N bytes cut]`.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`] (plus the marker), without
/// ever buffering more than that.
#[derive(Default)]
pub struct LineCutter {
    buf: Vec<u8>,
    cut: u64,
}

impl LineCutter {
    /// Feeds `data`; calls `emit` with each line it completes (without its `\n` or `\r\n`).
    pub fn push(&mut self, data: &[u8], emit: &mut impl FnMut(String)) {
        self.push_str(data, &mut |l: &str| emit(l.to_string()));
    }

    /// Like [`LineCutter::push`], lending each line: a line that arrived whole in `data` (valid
    /// UTF-8, not cut) is not copied at all.
    pub fn push_str(&mut self, mut data: &[u8], emit: &mut impl FnMut(&str)) {
        while !data.is_empty() {
            let (part, rest, ended) = match data.iter().position(|b| *b == b'\n') {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            if ended && self.buf.is_empty() && self.cut == 0 && part.len() <= MAX_LINE_BYTES {
                let part = part.strip_suffix(b"\r").unwrap_or(part);
                match std::str::from_utf8(part) {
                    Ok(line) => emit(line),
                    Err(_) => emit(&String::from_utf8_lossy(part)),
                }
                data = rest;
                continue;
            }
            let room = MAX_LINE_BYTES - self.buf.len();
            let take = part.len().min(room);
            self.buf.extend_from_slice(&part[..take]);
            self.cut += (part.len() - take) as u64;
            if ended {
                emit(&self.take_line());
            }
            data = rest;
        }
    }

    /// The partial line left, if any (at the end of the stream).
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty() || self.cut > 0).then(|| self.take_line())
    }

    fn take_line(&mut self) -> String {
        if self.cut == 0 && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let mut line = String::from_utf8_lossy(&self.buf).into_owned();
        if self.cut > 0 {
            line.push_str(&format!(" [... {} bytes cut]", self.cut));
        }
        self.buf.clear();
        self.cut = 0;
        line
    }
}

/// Reads `r` to its end as bounded lines (see [`LineCutter`]), lent to `emit` one by one.
pub async fn read_lines(mut r: impl tokio::io::AsyncRead + Unpin, mut emit: impl FnMut(&str)) {
    use tokio::io::AsyncReadExt;
    let mut cutter = LineCutter::default();
    let mut chunk = vec![0u8; 8 << 10];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => cutter.push_str(&chunk[..n], &mut emit),
        }
    }
    if let Some(l) = cutter.finish() {
        emit(&l);
    }
}

/// The last lines an instance wrote.
#[derive(Default)]
pub struct LogTail {
    lines: Mutex<VecDeque<String>>,
}

impl LogTail {
    pub fn push(&self, line: &str) {
        let mut l = self.lines.lock().unwrap();
        // Once full, the oldest line's buffer is reused: no allocation per line.
        let mut s = if l.len() == TAIL_LINES {
            l.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        s.clear();
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            s.push_str(&line[..cut]);
            s.push_str(" [...]");
        } else {
            s.push_str(line);
        }
        if s.capacity() > 4 * MAX_LINE {
            s.shrink_to(MAX_LINE + 8);
        }
        l.push_back(s);
    }

    /// Replaces the tail with the last [`TAIL_LINES`] of `lines`.
    pub fn replace(&self, lines: Vec<String>) {
        self.lines.lock().unwrap().clear();
        for l in lines.iter().rev().take(TAIL_LINES).rev() {
            self.push(l);
        }
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().cloned().collect()
    }

    /// The tail as an indented block, or `nothing` when empty.
    pub fn render(&self, nothing: &str) -> String {
        let l = self.lines.lock().unwrap();
        if l.is_empty() {
            return nothing.to_string();
        }
        l.iter()
            .map(|s| format!("  | {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Forwards an instance's output lines to the log, at most `per_second` a second; the rest are
/// counted and reported once a second (output is something a function controls).
pub struct OutputLog {
    function: String,
    instance: String,
    limit: LogLimiter,
}

impl OutputLog {
    pub fn new(function: String, instance: String, per_second: u32) -> Self {
        Self {
            function,
            instance,
            limit: LogLimiter::new(per_second, Duration::from_secs(1)),
        }
    }

    pub fn line(&mut self, stream: &'static str, line: &str) {
        // tokio's clock (paused in tests), as the window's start was before.
        let v = self.limit.check(Instant::now().into_std());
        if v.dropped > 0 {
            tracing::warn!(target: "nanofaas::function", function = %self.function, instance = %self.instance, dropped = v.dropped, "instance output lines not logged (rate limit)");
        }
        if v.log {
            // Rendered as the runtime wrote it (see telemetry's formatter), not as a message.
            tracing::info!(target: "nanofaas::function", function = %self.function, instance = %self.instance, stream, output = line);
        }
    }
}

/// The watchdog's environment in a warm container (Docker) or pod (Kubernetes): warm mode on
/// `watchdog_port` of every address, its runtime on `runtime_port` (and reached there for an HTTP
/// runtime), no idle timeout or invocation limit of its own (the pool decides those), held by the
/// control plane's lease.
pub fn container_warm_env(
    spec: &nanofaas_api::FunctionSpec,
    watchdog_port: u16,
    runtime_port: u16,
    startup_timeout: Duration,
    stop_grace: Duration,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("EXECUTION_MODE".to_string(), "WARM".to_string()),
        ("WARM_PORT".into(), watchdog_port.to_string()),
        ("WARM_BIND".into(), "0.0.0.0".into()),
        ("PORT".into(), runtime_port.to_string()),
        ("WARM_IDLE_TIMEOUT_MS".into(), "0".into()),
        (
            "WARM_LEASE_MS".into(),
            super::lease::LEASE.as_millis().to_string(),
        ),
        ("WARM_MAX_INVOCATIONS".into(), "0".into()),
        (
            "WARM_CONCURRENCY".into(),
            spec.instance_concurrency.to_string(),
        ),
        (
            "WARM_RUNTIME_MODE".into(),
            spec.runtime_mode.as_str().into(),
        ),
        (
            "WARM_STARTUP_TIMEOUT_MS".into(),
            startup_timeout.as_millis().to_string(),
        ),
        (
            "WARM_STOP_GRACE_MS".into(),
            stop_grace.as_millis().to_string(),
        ),
        ("TIMEOUT_MS".into(), spec.timeout_ms.to_string()),
    ];
    if spec.runtime_mode == nanofaas_api::RuntimeMode::Http {
        env.push((
            "RUNTIME_URL".into(),
            format!("http://127.0.0.1:{runtime_port}/invoke"),
        ));
    }
    env
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// `pid:starttime` of this process: unique across PID reuse.
pub fn process_identity() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", proc_start_time(pid).unwrap_or(0))
}

/// Whether the process a [`process_identity`] names is still running (on this machine).
pub fn identity_alive(identity: &str) -> bool {
    let Some((pid, start)) = identity.split_once(':') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    // A zombie (state Z) has exited: only its parent has not reaped it yet.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rfind(')')
                .and_then(|i| st.get(i + 2..i + 3))
                .map(|c| c == "Z" || c == "X")
        })
        .unwrap_or(false);
    !zombie && proc_start_time(pid) == Some(start)
}

/// The machine's CPUs (those this process may run on) and memory, for the registration checks.
pub fn host_capacity() -> (u64, Option<u64>) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    (cpus, mem)
}

/// Refuses `resources` a provider cannot honour on this machine: more CPUs than it has, more
/// memory than it has, or less memory than `min_memory` (an engine's minimum). The error names
/// the field and the limit.
pub fn check_resources(
    spec: &nanofaas_api::FunctionSpec,
    cpus: u64,
    memory: Option<u64>,
    min_memory: u64,
) -> Result<(), nanofaas_api::ValidationError> {
    use nanofaas_api::spec::{parse_cpu_millis, parse_memory_bytes};
    use nanofaas_api::ValidationError;
    let Some(res) = &spec.resources else {
        return Ok(());
    };
    if let Some(c) = res.cpu.as_deref() {
        let millis = parse_cpu_millis(c).map_err(|e| ValidationError::new("resources.cpu", e))?;
        if millis > cpus * 1000 {
            return Err(ValidationError::new(
                "resources.cpu",
                format!("{c:?} is more than this machine's {cpus} CPU(s)"),
            ));
        }
    }
    if let Some(m) = res.memory.as_deref() {
        let bytes =
            parse_memory_bytes(m).map_err(|e| ValidationError::new("resources.memory", e))?;
        if bytes < min_memory {
            return Err(ValidationError::new(
                "resources.memory",
                format!(
                    "{m:?} is below this provider's minimum of {} MiB",
                    min_memory >> 20
                ),
            ));
        }
        if let Some(total) = memory.filter(|t| bytes > *t) {
            return Err(ValidationError::new(
                "resources.memory",
                format!(
                    "{m:?} is more than this machine's {} MiB of memory",
                    total >> 20
                ),
            ));
        }
    }
    Ok(())
}

/// Runs futures concurrently and waits for all of them.
pub async fn join_all<F: std::future::Future<Output = ()>>(futs: impl IntoIterator<Item = F>) {
    let mut set: Vec<_> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let t = LogTail::default();
        for i in 0..100 {
            t.push(&format!("line {i}"));
        }
        let r = t.render("nothing");
        assert!(
            r.contains("line 99") && r.contains("line 60") && !r.contains("line 59"),
            "{r}"
        );
        t.replace((0..100).map(|i| format!("l{i}")).collect());
        let s = t.snapshot();
        assert_eq!(s.len(), TAIL_LINES);
        assert_eq!(s[0], format!("l{}", 100 - TAIL_LINES));
        assert_eq!(LogTail::default().render("nothing"), "nothing");
        t.push(&"é".repeat(1500));
        assert!(t.snapshot().last().unwrap().ends_with(" [...]"));
    }

    #[test]
    fn resources_beyond_the_machine_or_below_the_minimum_are_refused() {
        let spec = |r: serde_json::Value| {
            nanofaas_api::FunctionSpec::from_json(
                serde_json::json!({"name": "f", "command": "x", "resources": r})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap()
        };
        let gib = 1u64 << 30;
        let check = |r| check_resources(&spec(r), 2, Some(4 * gib), 6 << 20);
        assert!(check(serde_json::json!({"cpu": "2", "memory": "4Gi"})).is_ok());
        assert!(check(serde_json::json!({"cpu": "500m", "memory": "6Mi"})).is_ok());
        let e = check(serde_json::json!({"cpu": "64"})).unwrap_err();
        assert_eq!(e.field, "resources.cpu");
        assert!(e.reason.contains("2 CPU"), "{}", e.reason);
        let e = check(serde_json::json!({"cpu": "2001m"})).unwrap_err();
        assert_eq!(e.field, "resources.cpu");
        let e = check(serde_json::json!({"memory": "5Mi"})).unwrap_err();
        assert_eq!(e.field, "resources.memory");
        assert!(e.reason.contains("minimum of 6 MiB"), "{}", e.reason);
        let e = check(serde_json::json!({"memory": "5Gi"})).unwrap_err();
        assert!(e.reason.contains("4096 MiB"), "{}", e.reason);
        // Unknown total memory: only the minimum is checked.
        assert!(check_resources(&spec(serde_json::json!({"memory": "1Ti"})), 2, None, 0).is_ok());
        let (cpus, mem) = host_capacity();
        assert!(cpus >= 1 && mem.unwrap_or(1) > 0);
    }

    #[test]
    fn lines_are_cut_as_they_are_read() {
        let mut c = LineCutter::default();
        let mut got = Vec::new();
        let mut emit = |l: String| got.push(l);
        c.push(b"short\r\nsplit ", &mut emit);
        c.push(b"line\n", &mut emit);
        // 5 MB without a newline, in chunks: never more than one line buffered.
        let big = vec![b'x'; 64 << 10];
        for _ in 0..80 {
            c.push(&big, &mut emit);
            assert!(c.buf.capacity() <= 2 * MAX_LINE_BYTES);
        }
        c.push(b"\nafter", &mut emit);
        let tail = c.finish();
        assert_eq!(got[0], "short");
        assert_eq!(got[1], "split line");
        let cut = 80 * (64 << 10) - MAX_LINE_BYTES;
        assert_eq!(
            got[2],
            format!("{} [... {cut} bytes cut]", "x".repeat(MAX_LINE_BYTES))
        );
        assert_eq!(tail.as_deref(), Some("after"));
        assert_eq!(c.finish(), None);
    }

    #[tokio::test]
    async fn read_lines_reads_to_the_end() {
        let data: &[u8] = b"a\nb\r\n\n\xffz\nc";
        let mut got = Vec::new();
        read_lines(data, |l| got.push(l.to_string())).await;
        assert_eq!(got, ["a", "b", "", "\u{fffd}z", "c"]);
        // Lent lines: whole ones straight from the chunk, split and long ones through the buffer.
        let mut c = LineCutter::default();
        let mut got = Vec::new();
        c.push_str(b"one\ntw", &mut |l| got.push(l.to_string()));
        c.push_str(b"o\nthree\n", &mut |l| got.push(l.to_string()));
        let long = vec![b'q'; MAX_LINE_BYTES + 1];
        c.push_str(&long, &mut |l| got.push(l.to_string()));
        c.push_str(b"\n", &mut |l| got.push(l.to_string()));
        assert_eq!(got[..3], ["one", "two", "three"]);
        assert_eq!(
            got[3],
            format!("{} [... 1 bytes cut]", "q".repeat(MAX_LINE_BYTES))
        );
    }

    #[test]
    fn identities() {
        assert!(identity_alive(&process_identity()));
        assert!(!identity_alive("1:1"));
        assert!(!identity_alive("garbage"));
    }

    #[tokio::test]
    async fn join_all_waits_for_every_future() {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        join_all((0..5).map(|i| {
            let d = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(i * 3)).await;
                d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }))
        .await;
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 5);
    }
}
