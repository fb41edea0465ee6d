//! Logging set-up: one `init` for the whole process. Logs go to stderr as text or JSON lines.
//! Every execution logs one line (target `nanofaas::execution`) with its function, execution id
//! and trace id, so "what happened to execution X" is one grep.
//!
//! Lines are formatted on the calling thread into a shared buffer and written to stderr by a
//! background thread in batches, so a busy control plane does not make one `write` system call per
//! execution on its hot path. If the buffer outgrows [`MAX_PENDING`] (stderr blocked), further lines
//! are dropped and counted, and the count is logged once writing resumes. [`flush`] writes what is
//! pending (call it before exiting).

use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Most bytes waiting to be written before lines are dropped.
pub const MAX_PENDING: usize = 8 << 20;
const FLUSH_EVERY: Duration = Duration::from_millis(25);

struct Shared {
    state: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    dropped: u64,
    /// Bumped by `flush` callers; the writer acknowledges by setting `done` to it.
    flush_wanted: u64,
    flush_done: u64,
}

static SHARED: OnceLock<&'static Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        let s: &'static Shared = Box::leak(Box::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("nanofaas-log".into())
            .spawn(move || writer_loop(s))
            .expect("spawn the log writer thread");
        s
    })
}

fn writer_loop(s: &'static Shared) {
    let mut out = Vec::new();
    loop {
        let (dropped, flush_id) = {
            let mut st = s.state.lock().unwrap();
            if st.buf.is_empty() && st.flush_wanted == st.flush_done {
                st = s.wake.wait_timeout(st, FLUSH_EVERY).unwrap().0;
            }
            std::mem::swap(&mut out, &mut st.buf);
            (std::mem::take(&mut st.dropped), st.flush_wanted)
        };
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&out);
        if dropped > 0 {
            let _ = writeln!(
                err,
                "nanofaas: {dropped} log lines dropped because stderr could not keep up"
            );
        }
        let _ = err.flush();
        drop(err);
        out.clear();
        let mut st = s.state.lock().unwrap();
        if st.flush_done != flush_id {
            st.flush_done = flush_id;
            s.wake.notify_all();
        }
    }
}

/// Writes every line logged so far (waits at most a second).
pub fn flush() {
    let Some(s) = SHARED.get() else { return };
    let mut st = s.state.lock().unwrap();
    st.flush_wanted += 1;
    let want = st.flush_wanted;
    s.wake.notify_all();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while st.flush_done < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        st = s.wake.wait_timeout(st, left).unwrap().0;
    }
}

/// One formatted line (or event) in the making; handed to the writer when dropped.
pub struct LineBuf {
    line: Vec<u8>,
}

impl Write for LineBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        one_line(&mut self.line);
        let s = shared();
        let mut st = s.state.lock().unwrap();
        if st.buf.len() + self.line.len() > MAX_PENDING {
            st.dropped += 1;
        } else {
            st.buf.extend_from_slice(&self.line);
        }
    }
}

/// Every record is one line: line breaks inside it (a message or a field that carries an
/// instance's output) are written as `\n`, so that a log reader never mistakes the rest of a
/// record for records of its own.
fn one_line(line: &mut Vec<u8>) {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    if !body.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return;
    }
    let ends = line.last() == Some(&b'\n');
    let mut out = Vec::with_capacity(line.len() + 16);
    for &b in &line[..line.len() - usize::from(ends)] {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
    if ends {
        out.push(b'\n');
    }
    *line = out;
}

/// The `MakeWriter` of the batched stderr writer.
#[derive(Clone, Copy, Default)]
pub struct BatchedStderr;

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineBuf;
    fn make_writer(&'a self) -> LineBuf {
        LineBuf {
            line: Vec::with_capacity(256),
        }
    }
}

/// Installs the global subscriber. `level` is a level or a filter such as
/// `"info,nanofaas::execution=warn"`. Fails on a malformed filter or if called twice.
pub fn init(level: &str, json: bool) -> Result<(), String> {
    let filter: Targets = level
        .parse()
        .map_err(|e| format!("log level {level:?}: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(BatchedStderr)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        let fmt = fmt.json().flatten_event(true);
        let inner = tracing_subscriber::fmt::format().json().flatten_event(true);
        registry
            .with(fmt.event_format(WithOutput { inner, json: true }))
            .try_init()
    } else {
        let inner = tracing_subscriber::fmt::format().with_ansi(false);
        registry
            .with(
                fmt.with_ansi(false)
                    .event_format(WithOutput { inner, json: false }),
            )
            .try_init()
    };
    result.map_err(|e| e.to_string())
}

/// The event formatter: what a function's instance printed (an event of target
/// `nanofaas::function` with an `output` field) is shown as the runtime wrote it, tagged with
/// its function and instance; every other event as `inner` formats it.
///
/// Text: `hello-python-3f2a9c | <the line>` (the instance id, which starts with the function's
/// name; else `function instance | <the line>`), control characters escaped. JSON: one record
/// `{"timestamp", "level": "INFO", "target", "function", "instance", "stream", "output"}` whose
/// `output` is the line itself when it is a JSON object (a runtime's own log record stays a
/// record, not an escaped string), else the line as a string.
struct WithOutput<F> {
    inner: F,
    json: bool,
}

#[derive(Default)]
struct OutputFields {
    function: String,
    instance: String,
    stream: String,
    output: Option<String>,
}

impl tracing::field::Visit for OutputFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.set(field.name(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), format!("{value:?}"));
    }
}

impl OutputFields {
    fn set(&mut self, name: &str, value: String) {
        match name {
            "function" => self.function = value,
            "instance" => self.instance = value,
            "stream" => self.stream = value,
            "output" => self.output = Some(value),
            _ => {}
        }
    }
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithOutput<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        if meta.target() == "nanofaas::function" && meta.fields().field("output").is_some() {
            let mut f = OutputFields::default();
            event.record(&mut f);
            if let Some(line) = f.output.take() {
                let rendered = if self.json {
                    output_json(&f, &line)
                } else {
                    output_text(&f, &line)
                };
                return writeln!(writer, "{rendered}");
            }
        }
        self.inner.format_event(ctx, writer, event)
    }
}

fn output_text(f: &OutputFields, line: &str) -> String {
    let mut out = if f.instance.starts_with(&format!("{}-", f.function)) {
        f.instance.clone()
    } else {
        format!("{} {}", f.function, f.instance)
    };
    out.push_str(" | ");
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn output_json(f: &OutputFields, line: &str) -> String {
    use tracing_subscriber::fmt::time::FormatTime;
    let mut ts = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime
        .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut ts));
    let record = line.trim();
    let raw = match record.starts_with('{') {
        true => serde_json::value::RawValue::from_string(record.to_string()).ok(),
        false => None,
    };
    // Spliced in as is when it is a JSON record: the runtime's record, not a string holding it.
    let output = match raw {
        Some(raw) => raw.get().to_string(),
        None => serde_json::Value::String(line.to_string()).to_string(),
    };
    let s = |v: &str| serde_json::Value::String(v.to_string()).to_string();
    format!(
        "{{\"timestamp\":{},\"level\":\"INFO\",\"target\":\"nanofaas::function\",\"function\":{},\"instance\":{},\"stream\":{},\"output\":{output}}}",
        s(&ts),
        s(&f.function),
        s(&f.instance),
        s(&f.stream)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(function: &str, instance: &str) -> OutputFields {
        OutputFields {
            function: function.into(),
            instance: instance.into(),
            stream: "stderr".into(),
            output: None,
        }
    }

    #[test]
    fn function_output_is_shown_as_written_and_tagged() {
        let f = fields("hello", "hello-3f2a");
        let record = r#"{"ts": "t", "level": "INFO", "msg": "listening"}"#;
        assert_eq!(output_text(&f, record), format!("hello-3f2a | {record}"));
        assert_eq!(
            output_text(&fields("f", "c0ffee"), "a\x1b[31mred\tb"),
            "f c0ffee | a\\u{1b}[31mred\tb"
        );
        // JSON: a JSON record stays a record (not an escaped string); other lines are strings.
        let v: serde_json::Value = serde_json::from_str(&output_json(&f, record)).unwrap();
        assert_eq!(v["output"]["msg"], "listening");
        assert_eq!(v["function"], "hello");
        assert_eq!(v["instance"], "hello-3f2a");
        assert_eq!(v["stream"], "stderr");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        for line in ["plain text", "{not json", r#"{"a": 1} trailing"#] {
            let v: serde_json::Value = serde_json::from_str(&output_json(&f, line)).unwrap();
            assert_eq!(v["output"], line);
        }
    }

    #[test]
    fn a_record_with_line_breaks_stays_one_line() {
        let mut l = b"WARN instance failed to start error=oops; its last output:\n  | a\r\n  | b\n"
            .to_vec();
        one_line(&mut l);
        assert_eq!(
            String::from_utf8(l).unwrap(),
            "WARN instance failed to start error=oops; its last output:\\n  | a\\r\\n  | b\n"
        );
        let mut plain = b"INFO fine\n".to_vec();
        one_line(&mut plain);
        assert_eq!(plain, b"INFO fine\n");
    }

    #[test]
    fn lines_reach_the_buffer_and_flush_returns() {
        {
            let mut w = BatchedStderr.make_writer();
            w.write_all(b"telemetry test line\n").unwrap();
        }
        flush();
        let st = shared().state.lock().unwrap();
        assert_eq!(st.flush_done, st.flush_wanted);
    }
}
