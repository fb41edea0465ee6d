//! Telling an out-of-memory kill from any other death of the runtime.
//!
//! The watchdog shares its memory cgroup with the runtime it starts (a container's cgroup, or
//! the cgroup a provider put the instance in). The kernel counts every process it kills there
//! for exceeding the limit (`oom_kill` in `memory.events` on cgroup v2, in
//! `memory.oom_control` on v1), before the victim dies: when the runtime's connection breaks or
//! it exits, a count higher than the one last seen means the runtime (or one of its processes)
//! was killed for memory, and the invocation ends with `OUT_OF_MEMORY` naming the limit instead
//! of `INSTANCE_LOST`. Nothing is read on the hot path: only when something already died.
//!
//! The runtime is also made the kernel's preferred victim (`oom_score_adj` 1000, inherited by
//! its children, see [`crate::process`]), so that the watchdog survives to report the kill.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The files of one memory cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCgroup {
    /// `memory.events` (v2) or `memory.oom_control` (v1): both carry `oom_kill N`.
    events: PathBuf,
    /// `memory.max` (v2) or `memory.limit_in_bytes` (v1).
    limit: PathBuf,
}

impl MemoryCgroup {
    /// Finds the memory cgroup of this process from `/proc/self/cgroup` under `root`
    /// (`/sys/fs/cgroup`). Inside a container whose cgroup is mounted as the root of the
    /// hierarchy, the path `/proc` shows may not exist there: the mount's root is it.
    pub fn find(proc_cgroup: &str, root: &Path) -> Option<MemoryCgroup> {
        let mut v1 = None;
        let mut v2 = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                v2 = Some(path.trim_start_matches('/').to_string());
            } else if ctrls.split(',').any(|c| c == "memory") {
                v1 = Some(path.trim_start_matches('/').to_string());
            }
        }
        if let Some(p) = v1 {
            let base = root.join("memory");
            for dir in [base.join(&p), base.clone()] {
                let cg = MemoryCgroup {
                    events: dir.join("memory.oom_control"),
                    limit: dir.join("memory.limit_in_bytes"),
                };
                if cg.events.is_file() {
                    return Some(cg);
                }
            }
        }
        if let Some(p) = v2 {
            for dir in [root.join(&p), root.to_path_buf()] {
                let cg = MemoryCgroup {
                    events: dir.join("memory.events"),
                    limit: dir.join("memory.max"),
                };
                if cg.events.is_file() {
                    return Some(cg);
                }
            }
        }
        None
    }

    /// How many processes the kernel killed in this cgroup for memory.
    pub fn oom_kills(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.events).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// The memory limit in bytes; `None` when unlimited or unreadable.
    pub fn limit(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.limit).ok()?;
        let n: u64 = text.trim().parse().ok()?;
        // v1 spells "no limit" as a huge page-aligned number.
        (n < (1 << 62)).then_some(n)
    }
}

/// The memory cgroup of this process, found once.
fn own() -> Option<&'static MemoryCgroup> {
    static CG: OnceLock<Option<MemoryCgroup>> = OnceLock::new();
    CG.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        MemoryCgroup::find(&text, Path::new("/sys/fs/cgroup"))
    })
    .as_ref()
}

/// The watch of this process's cgroup, shared by every path that sees a runtime die. Call it
/// once at start so that kills before the watchdog started are not counted.
pub fn global() -> &'static OomWatch {
    static W: OnceLock<OomWatch> = OnceLock::new();
    W.get_or_init(OomWatch::own)
}

/// `Some(OUT_OF_MEMORY error)` when the kernel killed a process of this cgroup for memory since
/// the last check.
pub fn error(who: &str) -> Option<nanofaas_api::ErrorBody> {
    global()
        .check(who)
        .map(|m| nanofaas_api::ErrorBody::new(nanofaas_api::ErrorCode::OutOfMemory, m))
}

/// `64 MiB`, `1.5 GiB`, `1000 bytes`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{} {name}", n / size)
            } else {
                format!("{:.1} {name}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} bytes")
}

/// Remembers the cgroup's kill count, and tells whether it grew since.
pub struct OomWatch {
    cgroup: Option<MemoryCgroup>,
    seen: AtomicU64,
}

impl OomWatch {
    /// Watches this process's own memory cgroup (a no-op when it cannot be read).
    pub fn own() -> OomWatch {
        Self::new(own().cloned())
    }

    pub fn new(cgroup: Option<MemoryCgroup>) -> OomWatch {
        let seen = cgroup.as_ref().and_then(|c| c.oom_kills()).unwrap_or(0);
        OomWatch {
            cgroup,
            seen: AtomicU64::new(seen),
        }
    }

    /// After a death: `Some(message)` when the kernel killed a process for memory since the
    /// last call, naming the limit.
    pub fn check(&self, who: &str) -> Option<String> {
        let cg = self.cgroup.as_ref()?;
        let now = cg.oom_kills()?;
        let before = self.seen.swap(now, Ordering::SeqCst);
        if now <= before {
            return None;
        }
        Some(match cg.limit() {
            Some(l) => format!(
                "{who} was killed for exceeding its memory limit ({}, resources.memory)",
                human_bytes(l)
            ),
            None => format!("{who} was killed for running out of memory"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "nanofaas-oom-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn finds_v1_and_v2_cgroups_and_counts_kills() {
        let root = dir();
        // v1, the path /proc shows exists under the mount.
        let cg1 = root.join("memory/docker/abc");
        std::fs::create_dir_all(&cg1).unwrap();
        std::fs::write(
            cg1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .unwrap();
        std::fs::write(cg1.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        let proc_v1 = "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n";
        let found = MemoryCgroup::find(proc_v1, &root).unwrap();
        assert_eq!(found.events, cg1.join("memory.oom_control"));
        let w = OomWatch::new(Some(found.clone()));
        assert_eq!(w.check("the runtime"), None);
        std::fs::write(
            cg1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        let m = w.check("the runtime").unwrap();
        assert!(m.contains("64 MiB") && m.contains("memory limit"), "{m}");
        assert_eq!(w.check("the runtime"), None, "a kill is reported once");

        // v1 inside a container: the cgroup is the mount's root.
        let root2 = dir().join("c");
        std::fs::create_dir_all(root2.join("memory")).unwrap();
        std::fs::write(root2.join("memory/memory.oom_control"), "oom_kill 1\n").unwrap();
        std::fs::write(
            root2.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        let c = MemoryCgroup::find(proc_v1, &root2).unwrap();
        assert_eq!(c.limit(), None, "v1's no-limit number");
        assert_eq!(c.oom_kills(), Some(1));

        // v2.
        let root3 = dir().join("v2");
        std::fs::create_dir_all(root3.join("a/b")).unwrap();
        std::fs::write(
            root3.join("a/b/memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(root3.join("a/b/memory.max"), "max\n").unwrap();
        let c = MemoryCgroup::find("0::/a/b\n", &root3).unwrap();
        assert_eq!(c.oom_kills(), Some(1));
        assert_eq!(c.limit(), None);
        assert_eq!(MemoryCgroup::find("0::/none\n", &dir().join("empty")), None);
        assert_eq!(MemoryCgroup::find("garbage", &root3), None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert!(OomWatch::new(None).check("x").is_none());
    }
}
