//! Spawning and stopping the processes the watchdog runs: the warm runtime, the one-shot
//! runtime and the per-invocation STDIO/FILE commands.
//!
//! Every child runs in its own process group, so that stopping it reaches whatever it started
//! (a shell's children, a grandchild daemon), and with `PR_SET_PDEATHSIG(SIGKILL)`, so that it
//! dies even if the watchdog itself is SIGKILLed.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Environment variables the watchdog never passes on: it sends callbacks itself, and a
/// runtime that also found them would post a second one.
pub const STRIPPED_ENV: &[&str] = &["CALLBACK_URL", "CALLBACK_TOKEN"];

/// A command for `argv` in a new process group, dying with the watchdog, with the watchdog's
/// environment minus [`STRIPPED_ENV`], plus `extra_env`.
pub fn command(argv: &[String], extra_env: &[(&str, OsString)]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    for k in STRIPPED_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.process_group(0).kill_on_drop(true);
    // SAFETY: getpid is async-signal-safe; the closure below only calls prctl, open, write,
    // close, getppid and raise, which are async-signal-safe too, and allocates nothing.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The kernel's first choice when memory runs out, so that the watchdog survives to
            // say why (see `oom`). Raising one's own score needs no privilege; a failure
            // (no /proc) changes nothing else.
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(fd, b"1000".as_ptr().cast(), 4);
                libc::close(fd);
            }
            // The watchdog died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    cmd
}

/// SIGKILLs every descendant of this process that is still running: children, their children,
/// and those that left their process group (`setsid`), found by parent through `/proc`. Run as
/// the watchdog exits, so that nothing it started outlives it. Returns how many were signalled.
pub fn kill_descendants() -> usize {
    kill_descendants_of(std::process::id())
}

/// Every descendant of this process now (children first).
pub fn descendants() -> Vec<u32> {
    tree_of(std::process::id(), &process_parents())
}

fn tree_of(me: u32, parents: &std::collections::HashMap<u32, u32>) -> Vec<u32> {
    let mut todo = vec![me];
    let mut found = Vec::new();
    while let Some(p) = todo.pop() {
        for (&pid, &ppid) in parents {
            if ppid == p && pid != me {
                todo.push(pid);
                found.push(pid);
            }
        }
    }
    found
}

/// SIGKILLs `pids`: processes that were descendants moments ago (see [`descendants`]).
pub fn kill_pids(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2); a process that already exited is ESRCH.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// [`kill_descendants`] of process `me`.
pub fn kill_descendants_of(me: u32) -> usize {
    let mut killed = std::collections::HashSet::new();
    // A process may fork while we look: look again until a pass finds nothing new.
    for _ in 0..5 {
        let found = tree_of(me, &process_parents());
        let fresh: Vec<u32> = found.into_iter().filter(|p| killed.insert(*p)).collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            // SAFETY: kill(2) on a descendant found just now; one that already exited is
            // either gone (ESRCH) or a zombie we are its parent of (harmless).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    killed.len()
}

/// pid -> parent pid of every process that is not a zombie.
fn process_parents() -> std::collections::HashMap<u32, u32> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, ...
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        if let (Some(st), Some(Ok(ppid))) = (state, f.next().map(str::parse::<u32>)) {
            if st != "Z" && st != "X" {
                out.insert(pid, ppid);
            }
        }
    }
    out
}

/// A `Stdio` writing to the watchdog's own stderr.
pub fn to_stderr() -> Stdio {
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    }
}

/// Sends `sig` to the process group `pgid`; a group that no longer exists is not an error.
pub fn signal_group(pgid: u32, sig: libc::c_int) {
    if pgid == 0 || pgid > i32::MAX as u32 {
        return;
    }
    // SAFETY: killpg(2) on a group we created (its id is our child's pid).
    unsafe {
        libc::killpg(pgid as libc::pid_t, sig);
    }
}

/// Stops a child and its group: SIGTERM, up to `grace` for the child to exit, then SIGKILL to
/// whatever is left of the group. Returns the child's exit status.
pub async fn stop(child: &mut Child, pgid: u32, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        signal_group(pgid, libc::SIGKILL);
        return Some(st);
    }
    signal_group(pgid, libc::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(st) => st.ok(),
        Err(_) => None,
    };
    // Members of the group that ignored SIGTERM, or outlived the child, go now.
    signal_group(pgid, libc::SIGKILL);
    match status {
        Some(st) => Some(st),
        None => child.wait().await.ok(),
    }
}

/// Kills a child's whole group at once and reaps the child.
pub async fn kill(child: &mut Child, pgid: u32) -> Option<ExitStatus> {
    signal_group(pgid, libc::SIGKILL);
    let _ = child.start_kill();
    child.wait().await.ok()
}

/// "exited with code 3" / "was killed by signal 9".
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "exited".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c script` started by [`command`], and the pid it printed as its first line.
    async fn spawn_printing_pid(script: &str) -> (tokio::process::Child, i32) {
        use tokio::io::AsyncBufReadExt;
        let argv: Vec<String> = ["sh", "-c", script].iter().map(|s| s.to_string()).collect();
        let mut cmd = command(&argv, &[]);
        cmd.stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(&mut out)
            .read_line(&mut line)
            .await
            .unwrap();
        let pid = line.trim().parse().unwrap();
        (child, pid)
    }

    /// Waits (at most 5 s, then fails) until `pid` is gone or a zombie (it may linger as a
    /// zombie of whoever adopted it).
    async fn await_dead(pid: i32, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if matches!(state, None | Some("Z") | Some("X")) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} survived: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn stop_reaches_the_whole_group() {
        // The shell ignores SIGTERM and so does its background child: only SIGKILL ends them.
        let (mut child, grandchild) =
            spawn_printing_pid("trap '' TERM; sleep 1000 & echo $!; wait").await;
        let pid = child.id().unwrap();
        let t = std::time::Instant::now();
        let st = stop(&mut child, pid, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(100));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL), "{}", describe(&st));
        // The grandchild got SIGKILL too (it may linger as a zombie of whoever adopted it).
        await_dead(grandchild, "the grandchild").await;
    }

    #[tokio::test]
    async fn descendants_that_left_the_group_are_killed_too() {
        // A child that starts a grandchild in a new session (out of the group), then waits.
        let (mut child, grandchild) = spawn_printing_pid("setsid sleep 1000 & echo $!; wait").await;
        // Its tree (this test's process runs other tests' children too).
        assert!(kill_descendants_of(child.id().unwrap()) >= 1);
        signal_group(child.id().unwrap(), libc::SIGKILL);
        child.wait().await.unwrap();
        await_dead(grandchild, "the grandchild in its own session").await;
    }

    #[tokio::test]
    async fn callback_env_is_stripped() {
        std::env::set_var("CALLBACK_TOKEN", "secret");
        let argv: Vec<String> = ["sh", "-c", "echo \"[${CALLBACK_TOKEN}][${EXTRA}]\""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut cmd = command(&argv, &[("EXTRA", "x".into())]);
        cmd.stdout(Stdio::piped());
        let out = cmd.output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[][x]");
    }
}
