//! Child processes for tests: found in the workspace's target directory, spawned in their own
//! process group, SIGKILLed (group and all) when dropped, with their output captured line by line.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The path of a workspace binary built in the same profile as the running test executable.
///
/// A test executable lives at `<target>/<profile>/deps/<test>-<hash>`, binaries at
/// `<target>/<profile>/<name>`. Panics with a clear message when the binary was not built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        panic!(
            "workspace binary `{name}` not found at {}: run `cargo build --workspace --bins` \
             (with the same profile and CARGO_TARGET_DIR as the tests) first",
            path.display()
        );
    }
    path
}

/// Whether a process exists and is not a zombie (a zombie has exited and only waits to be reaped).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid_t, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may contain anything.
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
        {
            Some(state) => state != "Z" && state != "X",
            None => true,
        },
        Err(_) => false,
    }
}

/// Which output stream of a [`Proc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Captured {
    lines: Mutex<(Vec<String>, bool)>,
    cond: Condvar,
}

impl Captured {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().0.push(line);
        self.cond.notify_all();
    }

    fn close(&self) {
        self.lines.lock().unwrap().1 = true;
        self.cond.notify_all();
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
    }

    fn is_closed(&self) -> bool {
        self.lines.lock().unwrap().1
    }

    /// Blocks until the stream has ended (its reader saw EOF) or `until`.
    fn wait_closed(&self, until: Instant) {
        let mut g = self.lines.lock().unwrap();
        while !g.1 {
            let now = Instant::now();
            if now >= until {
                return;
            }
            g = self.cond.wait_timeout(g, until - now).unwrap().0;
        }
    }
}

/// How long, once a process has exited, [`Proc::wait_exit`] waits for its output to be read to
/// the end (a child it left behind may hold the pipes open: then the wait ends here).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// A spawned child process in its own process group.
///
/// Dropping it SIGKILLs the whole group (so grandchildren die too) and reaps the child. Stdout
/// and stderr are read by two threads into line buffers ([`Proc::lines`], [`Proc::wait_line`]);
/// set `NANOFAAS_TEST_ECHO=1` to also echo them to the test's stderr as they arrive. When a test
/// panics, the captured output of every `Proc` it dropped is printed.
pub struct Proc {
    name: String,
    child: Child,
    exited: Option<ExitStatus>,
    /// Exited (seen by `try_exit`) but not reaped yet.
    zombie: bool,
    out: Arc<Captured>,
    err: Arc<Captured>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured, in a new process group.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Proc> {
        let name = cmd
            .get_program()
            .to_string_lossy()
            .rsplit('/')
            .next()
            .unwrap_or("proc")
            .to_string();
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let out = Arc::new(Captured::default());
        let err = Arc::new(Captured::default());
        let echo = std::env::var_os("NANOFAAS_TEST_ECHO").is_some_and(|v| v != "0");
        let pid = child.id();
        if let Some(stdout) = child.stdout.take() {
            reader(
                stdout,
                out.clone(),
                echo.then(|| format!("[{name} {pid} out]")),
            );
        }
        if let Some(stderr) = child.stderr.take() {
            reader(
                stderr,
                err.clone(),
                echo.then(|| format!("[{name} {pid} err]")),
            );
        }
        Ok(Proc {
            name,
            child,
            exited: None,
            zombie: false,
            out,
            err,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        // SAFETY: plain kill(2) on our own child's pid.
        if unsafe { libc::kill(self.pid() as libc::pid_t, sig) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Sends `sig` to the process's whole group.
    pub fn signal_group(&self, sig: i32) -> std::io::Result<()> {
        // SAFETY: killpg(2) on the group this Proc created (its pgid is its pid).
        if unsafe { libc::killpg(self.pid() as libc::pid_t, sig) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// The exit status if the process has exited, without waiting.
    ///
    /// The process is not reaped here but in [`Proc::kill`] (on drop), after its group was
    /// signalled: while the exited leader is a zombie its pid, which is the group's id, cannot be
    /// given to another process, so the group signal can only reach what this `Proc` started.
    /// (Reaped first, the pid could be reused by another test's process, the leader of its own
    /// group, which the group signal would then kill.)
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            use std::os::unix::process::ExitStatusExt;
            // SAFETY: waitid(2) on our own child with a zeroed siginfo it fills in; WNOWAIT
            // leaves the child waitable.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid() as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            // SAFETY: si_pid and si_status are set for SIGCHLD information (zero when no child
            // has changed state yet).
            if r == 0 && unsafe { info.si_pid() } != 0 {
                let status = unsafe { info.si_status() };
                let raw = match info.si_code {
                    libc::CLD_EXITED => (status & 0xff) << 8,
                    libc::CLD_DUMPED => status | 0x80,
                    _ => status,
                };
                self.exited = Some(ExitStatus::from_raw(raw));
                self.zombie = true;
            }
        }
        self.exited
    }

    /// Blocks up to `timeout` for the process to exit. Do not call it from a single-threaded
    /// async test while the process needs that test's tasks (a sink, a server) to make
    /// progress: use [`Proc::wait_exit_async`] there.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                // What it wrote just before exiting may still be in the pipes: read it all,
                // so that `lines` right after this sees every line.
                let until = Instant::now() + OUTPUT_DRAIN;
                self.out.wait_closed(until);
                self.err.wait_closed(until);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// [`Proc::wait_exit`] for async tests: sleeps with tokio between checks.
    pub async fn wait_exit_async(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                // As in `wait_exit`: the output up to its end, bounded.
                let until = Instant::now() + OUTPUT_DRAIN;
                while !(self.out.is_closed() && self.err.is_closed()) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Every line captured so far on `stream` (without the line terminator).
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.captured(stream).snapshot()
    }

    /// Blocks up to `timeout` for a line on `stream` matching `pred`; the first such line
    /// (including lines captured before the call) is returned.
    pub fn wait_line(
        &self,
        stream: Stream,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let cap = self.captured(stream);
        let deadline = Instant::now() + timeout;
        let mut guard = cap.lines.lock().unwrap();
        loop {
            if let Some(l) = guard.0.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = cap.cond.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// [`Proc::wait_line`] for async tests.
    pub async fn wait_line_async(
        &self,
        stream: Stream,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let cap = self.captured(stream);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let guard = cap.lines.lock().unwrap();
                if let Some(l) = guard.0.iter().find(|l| pred(l)) {
                    return Some(l.clone());
                }
                if guard.1 {
                    return None;
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Everything captured so far, both streams, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} (pid {}) stdout ---\n{}\n--- stderr ---\n{}\n",
            self.name,
            self.pid(),
            self.out.snapshot().join("\n"),
            self.err.snapshot().join("\n")
        )
    }

    /// SIGKILLs the process group and reaps the child (what drop does).
    pub fn kill(&mut self) {
        let _ = self.signal_group(libc::SIGKILL);
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        } else if self.zombie {
            // Exited and seen by `try_exit`: reap it now that its group was signalled.
            let _ = self.child.wait();
        }
        self.zombie = false;
    }

    fn captured(&self, stream: Stream) -> &Captured {
        match stream {
            Stream::Stdout => &self.out,
            Stream::Stderr => &self.err,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

fn reader(pipe: impl Read + Send + 'static, cap: Arc<Captured>, echo: Option<String>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(prefix) = &echo {
                        eprintln!("{prefix} {line}");
                    }
                    cap.push(line);
                }
            }
        }
        cap.close();
    });
}

/// Starts the real `nanofaas serve` on a free loopback port with `state_dir` and extra
/// `--set KEY=VALUE` settings (the process provider finds this build's watchdog), waits for its
/// `nanofaas listening on URL` line, and returns the process and the URL.
pub async fn serve_nanofaas(state_dir: &std::path::Path, settings: &[String]) -> (Proc, String) {
    serve_nanofaas_env(state_dir, settings, &[]).await
}

/// [`serve_nanofaas`] with extra environment variables `env` (name, value) for the server.
pub async fn serve_nanofaas_env(
    state_dir: &std::path::Path,
    settings: &[String],
    env: &[(&str, &str)],
) -> (Proc, String) {
    let mut cmd = Command::new(workspace_bin("nanofaas"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state_dir)
        .arg("--set")
        .arg(format!(
            "provider.process.watchdog={}",
            workspace_bin("nanofaas-watchdog").display()
        ))
        .envs(env.iter().copied());
    for s in settings {
        cmd.arg("--set").arg(s);
    }
    let proc = Proc::spawn(cmd).expect("start nanofaas serve");
    let line = proc
        .wait_line_async(Stream::Stdout, Duration::from_secs(30), |l| {
            l.starts_with("nanofaas listening on ")
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "nanofaas serve printed no listening line:\n{}",
                proc.output()
            )
        });
    let base = line
        .trim_start_matches("nanofaas listening on ")
        .trim()
        .to_string();
    (proc, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_lines_and_exit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; echo three; exit 7"]);
        let mut p = Proc::spawn(cmd).unwrap();
        let st = p.wait_exit(Duration::from_secs(5)).expect("exits");
        assert_eq!(st.code(), Some(7));
        assert_eq!(
            p.wait_line(Stream::Stdout, Duration::from_secs(5), |l| l == "three"),
            Some("three".to_string())
        );
        assert_eq!(p.lines(Stream::Stdout), ["one", "three"]);
        assert!(p
            .wait_line(Stream::Stderr, Duration::from_secs(5), |l| l == "two")
            .is_some());
        // The stream closed: waiting for a line that never comes returns at once.
        let t = Instant::now();
        assert!(p
            .wait_line(Stream::Stdout, Duration::from_secs(5), |l| l == "nope")
            .is_none());
        assert!(t.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn drop_kills_the_group_including_grandchildren() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 1000 & echo $!; wait"]);
        let p = Proc::spawn(cmd).unwrap();
        let gc: u32 = p
            .wait_line(Stream::Stdout, Duration::from_secs(5), |_| true)
            .unwrap()
            .parse()
            .unwrap();
        let pid = p.pid();
        assert!(pid_alive(pid) && pid_alive(gc));
        drop(p);
        let deadline = Instant::now() + Duration::from_secs(5);
        // The grandchild is reparented and reaped by whoever adopts it: wait for that.
        while pid_alive(gc) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!pid_alive(pid), "child still alive");
        assert!(!pid_alive(gc), "grandchild still alive");
    }

    #[test]
    fn zombie_is_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!pid_alive(pid), "exited child (zombie) counted alive");
        child.wait().unwrap();
        assert!(!pid_alive(u32::MAX));
    }

    #[test]
    fn signal_and_wait() {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        let mut p = Proc::spawn(cmd).unwrap();
        assert!(p.wait_exit(Duration::from_millis(20)).is_none());
        p.signal(libc::SIGTERM).unwrap();
        let st = p
            .wait_exit(Duration::from_secs(5))
            .expect("exits on SIGTERM");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM));
    }
}
