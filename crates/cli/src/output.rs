//! What the CLI prints: machine output (tables or JSON) on stdout only; messages, progress and
//! spinners on stderr, so that `nanofaas ... -o json | jq` always sees clean JSON.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `-o table` (default, for people) or `-o json` (for scripts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Prints `v` as pretty JSON on stdout.
pub fn json(v: &serde_json::Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    println!("{text}");
}

/// A message for people, on stderr.
pub fn note(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

/// Renders rows as aligned columns (two spaces apart; the last column is not padded).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < widths.len() {
                l.push_str(c);
                l.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            } else {
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Milliseconds as people read them: `850 ms`, `1.3 s`, `2 min 5 s`.
pub fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// A spinner on stderr while something takes time. It draws only when stderr is a terminal,
/// and only after `delay`, so quick operations and scripts see nothing at all.
pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    pub fn start(message: impl Into<String>, delay: Duration) -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Spinner { stop, thread: None };
        }
        let message = message.into();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
            let started = Instant::now();
            let mut drawn = false;
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                let elapsed = started.elapsed();
                if elapsed >= delay {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[2K{} {message} ({:.0} s)",
                        FRAMES[i % FRAMES.len()],
                        elapsed.as_secs_f64().floor()
                    );
                    let _ = err.flush();
                    drawn = true;
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(80));
            }
            if drawn {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
            }
        });
        Spinner {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and erases the spinner (also done on drop).
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "MODE", "COMMAND"],
            &[
                vec!["a".into(), "DEPLOYMENT".into(), "python -m x".into()],
                vec!["longer-name".into(), "POOL".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME         MODE        COMMAND\n\
             a            DEPLOYMENT  python -m x\n\
             longer-name  POOL\n"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(millis(850), "850 ms");
        assert_eq!(millis(1340), "1.3 s");
        assert_eq!(millis(125_000), "2 min 5 s");
    }

    #[test]
    fn spinner_off_a_terminal_draws_nothing_and_stops() {
        // Under the test harness stderr is a pipe or a file: no thread is started.
        let s = Spinner::start("waiting", Duration::ZERO);
        if !std::io::stderr().is_terminal() {
            assert!(s.thread.is_none());
        }
        s.stop();
    }
}
