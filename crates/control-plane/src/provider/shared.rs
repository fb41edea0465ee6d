//! What the providers share: the tail of an instance's output, rate-limited forwarding of that
//! output to the log, the identity of a process across PID reuse, and joining futures.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Lines of an instance's output kept for error messages.
pub const TAIL_LINES: usize = 40;
/// Longest line kept; longer ones are cut.
const MAX_LINE: usize = 2000;

/// The last lines an instance wrote.
#[derive(Default)]
pub struct LogTail {
    lines: Mutex<VecDeque<String>>,
}

impl LogTail {
    pub fn push(&self, line: &str) {
        let mut l = self.lines.lock().unwrap();
        if l.len() == TAIL_LINES {
            l.pop_front();
        }
        let mut s = line.to_string();
        if s.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str(" [...]");
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
    per_second: u32,
    window: Instant,
    sent: u32,
    dropped: u64,
}

impl OutputLog {
    pub fn new(function: String, instance: String, per_second: u32) -> Self {
        Self {
            function,
            instance,
            per_second,
            window: Instant::now(),
            sent: 0,
            dropped: 0,
        }
    }

    pub fn line(&mut self, stream: &'static str, line: &str) {
        if self.window.elapsed() >= Duration::from_secs(1) {
            if self.dropped > 0 {
                tracing::warn!(target: "nanofaas::function", function = %self.function, instance = %self.instance, dropped = self.dropped, "instance output lines not logged (rate limit)");
            }
            self.window = Instant::now();
            self.sent = 0;
            self.dropped = 0;
        }
        if self.sent < self.per_second {
            self.sent += 1;
            // Rendered as the runtime wrote it (see telemetry's formatter), not as a message.
            tracing::info!(target: "nanofaas::function", function = %self.function, instance = %self.instance, stream, output = line);
        } else {
            self.dropped += 1;
        }
    }
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
    proc_start_time(pid) == Some(start)
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
