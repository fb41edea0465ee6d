//! Running a command once per invocation: the STDIO and FILE modes, one-shot or warm.
//!
//! - STDIO: the request JSON goes to stdin; stdout is the output.
//! - FILE: the request JSON is written to `INPUT_FILE`; after exit 0, `OUTPUT_FILE` is the
//!   output. Stdout is passed through to the watchdog's stderr as logs.
//!
//! In both, the output is used as is when it is JSON; otherwise it becomes a JSON string of
//! the trimmed text; empty output is `null`. A non-zero exit is `FUNCTION_ERROR` with the exit
//! code and the tail of stderr; the deadline kills the command's whole process group
//! (`TIMEOUT`). Once the command exits, anything left in its process group is killed.
//!
//! With [`Run::tag`] (warm, when the providers asked for tagged output), every line the command
//! writes on stderr (and, in FILE mode, stdout) is its invocation's and is written tagged with it,
//! then `NANOFAAS_LOG_END` (see `warm::output`).

use crate::process;
use crate::warm::output::Tagger;
use bytes::Bytes;
use nanofaas_api::{ErrorBody, ErrorCode};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How much of the end of stderr an error message carries.
pub const STDERR_TAIL: usize = 2048;

/// One run of a command.
pub struct Run<'a> {
    pub argv: &'a [String],
    /// Added to the command's environment (e.g. `EXECUTION_ID`, `TRACE_ID`).
    pub env: Vec<(&'static str, OsString)>,
    pub deadline: Instant,
    /// The timeout the deadline came from, for the error message.
    pub timeout: Duration,
    /// Largest output accepted.
    pub max_output: usize,
    /// The invocation whose output this is, to tag its lines with (see the module docs).
    pub tag: Option<String>,
}

impl Run<'_> {
    fn tagger(&self, stream: u8) -> Option<Tagger> {
        self.tag.as_deref().and_then(|id| Tagger::new(stream, id))
    }

    /// All of the command's output is out (tagged runs only).
    fn end(&self) {
        if let Some(id) = self
            .tag
            .as_deref()
            .filter(|id| Tagger::new(b'e', id).is_some())
        {
            Tagger::end(id);
        }
    }
}

/// STDIO: `input` on stdin, stdout is the output.
pub async fn run_stdio(run: Run<'_>, input: Bytes) -> Result<Bytes, ErrorBody> {
    let mut cmd = process::command(run.argv, &run.env);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(run.argv, e))?;
    let pid = child.id().unwrap_or(0);
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let writer = tokio::spawn(async move {
        if let Some(w) = stdin.as_mut() {
            // A command that does not read its input closes the pipe: not an error.
            let _ = w.write_all(&input).await;
            let _ = w.shutdown().await;
        }
    });
    let max = run.max_output;
    let out_task = tokio::spawn(async move {
        match stdout {
            Some(r) => read_limited(r, max).await,
            None => Ok(Vec::new()),
        }
    });
    let err_task = tokio::spawn(tee_tail(stderr, run.tagger(b'e')));

    let status = match tokio::time::timeout_at(run.deadline, child.wait()).await {
        Ok(st) => st,
        Err(_) => {
            process::kill(&mut child, pid).await;
            writer.abort();
            out_task.abort();
            err_task.abort();
            run.end();
            return Err(timeout_error(run.timeout));
        }
    };
    // Leftovers of the group (background children holding the pipes) go now.
    process::signal_group(pid, libc::SIGKILL);
    writer.abort();
    let out = out_task.await.unwrap_or_else(|_| Ok(Vec::new()));
    let tail = err_task.await.unwrap_or_default();
    run.end();
    // Too much output first: the reader stopped reading, so the command may have died of
    // SIGPIPE, which is a consequence, not the cause.
    let out = out.map_err(too_large)?;
    let status = status.map_err(|e| internal(format!("waiting for the command: {e}")))?;
    if !status.success() {
        return Err(exit_error(run.argv, &status, &tail));
    }
    Ok(to_json(&out))
}

/// FILE: `input` written to `input_file`, the output read from `output_file` after exit 0.
/// `INPUT_FILE` and `OUTPUT_FILE` are set in the command's environment.
pub async fn run_file(
    mut run: Run<'_>,
    input: &[u8],
    input_file: &Path,
    output_file: &Path,
) -> Result<Bytes, ErrorBody> {
    if let Some(dir) = input_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(input_file, input)
        .map_err(|e| internal(format!("cannot write {}: {e}", input_file.display())))?;
    match std::fs::remove_file(output_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(internal(format!(
                "cannot remove the stale {}: {e}",
                output_file.display()
            )))
        }
    }
    run.env.push(("INPUT_FILE", input_file.into()));
    run.env.push(("OUTPUT_FILE", output_file.into()));
    let mut cmd = process::command(run.argv, &run.env);
    // Stdout is logs: through the watchdog's stderr as is, or read to be tagged.
    let out_tag = run.tagger(b'o');
    cmd.stdin(Stdio::null())
        .stdout(if out_tag.is_some() {
            Stdio::piped()
        } else {
            process::to_stderr()
        })
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(run.argv, e))?;
    let pid = child.id().unwrap_or(0);
    let err_task = tokio::spawn(tee_tail(child.stderr.take(), run.tagger(b'e')));
    let out_task = tokio::spawn(tee_tail(child.stdout.take(), out_tag));
    let status = match tokio::time::timeout_at(run.deadline, child.wait()).await {
        Ok(st) => st,
        Err(_) => {
            process::kill(&mut child, pid).await;
            err_task.abort();
            out_task.abort();
            run.end();
            return Err(timeout_error(run.timeout));
        }
    };
    process::signal_group(pid, libc::SIGKILL);
    let tail = err_task.await.unwrap_or_default();
    let _ = out_task.await;
    run.end();
    let status = status.map_err(|e| internal(format!("waiting for the command: {e}")))?;
    if !status.success() {
        return Err(exit_error(run.argv, &status, &tail));
    }
    match std::fs::metadata(output_file) {
        Ok(m) if m.len() > run.max_output as u64 => return Err(too_large(run.max_output)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ErrorBody::new(
                ErrorCode::FunctionError,
                format!(
                    "the command exited 0 but wrote no output file ({})",
                    output_file.display()
                ),
            ))
        }
        Err(e) => {
            return Err(internal(format!(
                "cannot read {}: {e}",
                output_file.display()
            )))
        }
    }
    let out = std::fs::read(output_file)
        .map_err(|e| internal(format!("cannot read {}: {e}", output_file.display())))?;
    Ok(to_json(&out))
}

/// A directory removed (with its contents) when dropped, for one warm FILE invocation.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> std::io::Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("nanofaas-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The output as JSON: itself when it is JSON, a JSON string of the trimmed text otherwise,
/// `null` when empty.
pub fn to_json(out: &[u8]) -> Bytes {
    let trimmed = out.trim_ascii();
    if trimmed.is_empty() {
        return Bytes::from_static(b"null");
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_ok() {
        return Bytes::copy_from_slice(trimmed);
    }
    let text = String::from_utf8_lossy(trimmed);
    Bytes::from(serde_json::to_vec(&text).expect("a string serialises"))
}

/// Reads everything, failing with the limit once more than `max` bytes arrive.
async fn read_limited(mut r: impl AsyncRead + Unpin, max: usize) -> Result<Vec<u8>, usize> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(buf),
            Ok(n) => {
                if buf.len() + n > max {
                    return Err(max);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// Copies a stream to the watchdog's stderr (tagged line by line with a [`Tagger`]) and keeps its
/// last [`STDERR_TAIL`] bytes.
async fn tee_tail(r: Option<impl AsyncRead + Unpin>, mut tagger: Option<Tagger>) -> String {
    let Some(mut r) = r else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                match tagger.as_mut() {
                    Some(t) => t.push(&chunk[..n]),
                    None => {
                        let _ = std::io::stderr().write_all(&chunk[..n]);
                    }
                }
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    if let Some(t) = tagger.as_mut() {
        t.finish();
    }
    String::from_utf8_lossy(&tail).trim().to_string()
}

fn spawn_error(argv: &[String], e: std::io::Error) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::SpawnError,
        format!("cannot start {:?}: {e}", argv[0]),
    )
}

fn exit_error(argv: &[String], status: &std::process::ExitStatus, tail: &str) -> ErrorBody {
    use std::os::unix::process::ExitStatusExt;
    if status.signal() == Some(libc::SIGKILL) {
        if let Some(e) = crate::oom::error(&format!("{:?}", argv[0])) {
            return e;
        }
    }
    let mut msg = format!("{:?} {}", argv[0], process::describe(status));
    if !tail.is_empty() {
        msg.push_str(": ");
        msg.push_str(tail);
    }
    ErrorBody::new(ErrorCode::FunctionError, msg)
}

pub fn timeout_error(timeout: Duration) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Timeout,
        format!(
            "the invocation did not finish within {} ms",
            timeout.as_millis()
        ),
    )
}

fn too_large(max: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::FunctionError,
        format!("the function's output is larger than MAX_PAYLOAD_BYTES ({max} bytes)"),
    )
}

fn internal(msg: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        nanofaas_api::command::split(s).unwrap()
    }

    fn run(argv: &[String], ms: u64) -> Run<'_> {
        Run {
            argv,
            env: vec![("EXECUTION_ID", "e-1".into())],
            deadline: Instant::now() + Duration::from_millis(ms),
            timeout: Duration::from_millis(ms),
            max_output: 1024,
            tag: None,
        }
    }

    #[test]
    fn output_to_json() {
        assert_eq!(
            to_json(b"  {\"a\": 1}\n"),
            Bytes::from_static(b"{\"a\": 1}")
        );
        assert_eq!(
            to_json(b"hello world\n"),
            Bytes::from_static(b"\"hello world\"")
        );
        assert_eq!(to_json(b"\n"), Bytes::from_static(b"null"));
        assert_eq!(to_json(b"42"), Bytes::from_static(b"42"));
        assert_eq!(
            to_json(b"say \"hi\""),
            Bytes::from_static(b"\"say \\\"hi\\\"\"")
        );
    }

    #[tokio::test]
    async fn stdio_echo_env_and_text() {
        let a = argv("sh -c 'cat; echo'");
        let out = run_stdio(run(&a, 5000), Bytes::from_static(b"{\"input\":1}")).await;
        assert_eq!(out.unwrap(), Bytes::from_static(b"{\"input\":1}"));
        let a = argv("sh -c 'echo \"id $EXECUTION_ID\"'");
        let out = run_stdio(run(&a, 5000), Bytes::new()).await.unwrap();
        assert_eq!(out, Bytes::from_static(b"\"id e-1\""));
    }

    #[tokio::test]
    async fn stdio_failures() {
        let a = argv("sh -c 'echo oops >&2; exit 3'");
        let e = run_stdio(run(&a, 5000), Bytes::new()).await.unwrap_err();
        assert_eq!(e.code, "FUNCTION_ERROR");
        assert!(
            e.message.contains("code 3") && e.message.contains("oops"),
            "{}",
            e.message
        );

        let a = argv("/nonexistent/cmd");
        let e = run_stdio(run(&a, 5000), Bytes::new()).await.unwrap_err();
        assert_eq!(e.code, "SPAWN_ERROR");

        let a = argv("sh -c 'sleep 10'");
        let t = std::time::Instant::now();
        let e = run_stdio(run(&a, 100), Bytes::new()).await.unwrap_err();
        assert_eq!(e.code, "TIMEOUT");
        assert!(t.elapsed() < Duration::from_secs(5));

        let a = argv("sh -c 'head -c 5000 /dev/zero | tr \"\\0\" a'");
        let e = run_stdio(run(&a, 5000), Bytes::new()).await.unwrap_err();
        assert!(e.message.contains("MAX_PAYLOAD_BYTES"), "{}", e.message);
    }

    #[tokio::test]
    async fn stdio_background_child_does_not_hold_the_call() {
        // The command exits at once but leaves a child holding stdout open.
        let a = argv("sh -c 'sleep 30 & echo 7'");
        let t = std::time::Instant::now();
        let out = run_stdio(run(&a, 10_000), Bytes::new()).await.unwrap();
        assert_eq!(out, Bytes::from_static(b"7"));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn file_mode() {
        let dir = TempDir::new().unwrap();
        let (i, o) = (dir.path().join("in.json"), dir.path().join("out.json"));
        let a = argv("sh -c 'cp \"$INPUT_FILE\" \"$OUTPUT_FILE\"'");
        let out = run_file(run(&a, 5000), b"{\"input\":2}", &i, &o)
            .await
            .unwrap();
        assert_eq!(out, Bytes::from_static(b"{\"input\":2}"));

        let a = argv("true");
        let e = run_file(run(&a, 5000), b"{}", &i, &o).await.unwrap_err();
        assert_eq!(e.code, "FUNCTION_ERROR");
        assert!(e.message.contains("no output file"), "{}", e.message);

        let a = argv("sh -c 'exit 4'");
        let e = run_file(run(&a, 5000), b"{}", &i, &o).await.unwrap_err();
        assert!(e.message.contains("code 4"), "{}", e.message);
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
