//! Running a manifest's setup steps: `sh -c STEP` in the manifest's folder, one after the
//! other, with progress on stderr. A step's output is kept and shown only when it fails.
//!
//! Each step runs in its own process group, so that stopping it (Ctrl-C, SIGTERM, or the future
//! being dropped) stops everything it started too, and whatever a finished step left running in
//! the background is stopped with it: setup leaves nothing behind.

use crate::exit::{err, Exit};
use crate::manifest::{Manifest, SetupStep};
use crate::output::{millis, note, Spinner};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Lines of a failed step's output that are shown.
const TAIL: usize = 60;

/// Runs every step of `m` in order; stops at the first failure (exit code 11).
pub async fn run_all(m: &Manifest) -> anyhow::Result<()> {
    let n = m.setup.len();
    for (i, step) in m.setup.iter().enumerate() {
        run_step(m, step, i + 1, n).await?;
    }
    Ok(())
}

/// Kills a step's whole process group unless it finished.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg(2) on the process group this module created for the step.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn run_step(m: &Manifest, step: &SetupStep, i: usize, n: usize) -> anyhow::Result<()> {
    let label = format!("[{i}/{n}] {}", step.name);
    let tty = std::io::stderr().is_terminal();
    if !tty {
        note(format!("==> setup {label}"));
    }
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&step.run)
        .current_dir(&m.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        err(
            Exit::SetupFailed,
            format!(
                "setup step {:?}: cannot run `sh -c {}` in {}: {e}",
                step.name,
                step.run,
                m.dir.display()
            ),
        )
    })?;
    // Dropped when this function returns or is cancelled: a step leaves nothing running.
    let mut group = GroupGuard {
        pgid: child.id().map(|p| p as i32),
    };
    let lines: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let readers = [
        child.stdout.take().map(|s| collect(s, lines.clone())),
        child.stderr.take().map(|s| collect(s, lines.clone())),
    ];
    let spinner = Spinner::start(format!("setup {label}"), Duration::ZERO);
    let status = child.wait().await;
    // What the step left running in the background goes too (and its pipes close).
    group.kill();
    for r in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    drop(spinner);
    let took = millis(started.elapsed().as_millis() as u64);
    let status = status.map_err(|e| {
        err(
            Exit::SetupFailed,
            format!("setup step {:?}: {e}", step.name),
        )
    })?;
    if status.success() {
        note(format!("✓ setup {label} ({took})"));
        return Ok(());
    }
    note(format!("✗ setup {label} failed ({took}); its last output:"));
    for l in lines.lock().unwrap().iter() {
        note(format!("  | {l}"));
    }
    let how = match status.code() {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    };
    Err(err(
        Exit::SetupFailed,
        format!(
            "setup step {:?} failed ({how}): `{}` in {}; fix what its output above says and run again",
            step.name,
            step.run,
            m.dir.display()
        ),
    ))
}

fn collect(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    lines: Arc<Mutex<VecDeque<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut r = BufReader::new(pipe).lines();
        while let Ok(Some(l)) = r.next_line().await {
            let mut q = lines.lock().unwrap();
            if q.len() == TAIL {
                q.pop_front();
            }
            q.push_back(l);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use std::path::Path;

    fn manifest_with(steps: &[(&str, &str)], dir: &Path) -> Manifest {
        Manifest {
            path: dir.join("m.yaml"),
            dir: dir.to_path_buf(),
            setup: steps
                .iter()
                .map(|(n, r)| manifest::SetupStep {
                    name: n.to_string(),
                    run: r.to_string(),
                })
                .collect(),
            functions: vec![],
            example: None,
        }
    }

    #[tokio::test]
    async fn steps_run_in_order_in_the_manifest_folder() {
        let dir = std::env::temp_dir().join(format!("nanofaas-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = manifest_with(
            &[("one", "echo one > order"), ("two", "echo two >> order")],
            &dir,
        );
        run_all(&m).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("order")).unwrap(),
            "one\ntwo\n"
        );
        let m = manifest_with(
            &[
                ("bad", "echo about to fail; echo oops >&2; exit 4"),
                ("never", "touch never"),
            ],
            &dir,
        );
        let e = run_all(&m).await.unwrap_err();
        assert_eq!(crate::exit::exit_of(&e), Exit::SetupFailed);
        assert!(e.to_string().contains("exit status 4"), "{e}");
        assert!(!dir.join("never").exists(), "a step after a failure ran");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_cancelled_step_leaves_nothing_running() {
        let dir = std::env::temp_dir().join(format!("nanofaas-setup2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = manifest_with(&[("sleeps", "sleep 300 & echo $! > pid; wait")], &dir);
        let run = run_all(&m);
        let pid_file = dir.join("pid");
        let wait_pid = async {
            for _ in 0..500 {
                if let Ok(t) = std::fs::read_to_string(&pid_file) {
                    if let Ok(p) = t.trim().parse::<i32>() {
                        return p;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the step never started");
        };
        let pid = tokio::select! {
            _ = run => panic!("the step finished on its own"),
            p = wait_pid => p,
        };
        // `run` was dropped by select!: its group must be gone.
        let mut alive = true;
        for _ in 0..200 {
            // SAFETY: signal 0 only checks whether the process exists.
            alive = unsafe { libc::kill(pid, 0) } == 0
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true);
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!alive, "the step's background process {pid} survived");
        std::fs::remove_dir_all(&dir).ok();
    }
}
