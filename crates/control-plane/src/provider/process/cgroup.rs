//! One cgroup per process instance, holding its watchdog, its runtime and anything they start:
//! `resources.memory` and `resources.cpu` become the cgroup's limits, the processes limit its
//! `pids.max`, and its memory events tell an out-of-memory kill apart from any other death.
//!
//! Layout: `<parent>/<owner>/<instance>`, where `<parent>` is `nanofaas` below the control
//! plane's own cgroup (v1: in each of the memory, cpu and pids hierarchies; v2: in the unified
//! hierarchy when the control plane's cgroup can delegate controllers, else at the top of the
//! hierarchy), or `provider.process.cgroup_parent`; `<owner>` names the control plane
//! (`cp-<pid>-<start time>`), so that the next one removes what a dead one left and never
//! touches what a live one uses.
//!
//! Which version is used: v2 when the unified hierarchy offers the memory controller, else the
//! v1 hierarchies that are mounted (hybrid hosts mount v1 controllers and an empty v2 tree).
//! A controller that cannot be used (not mounted, no permission, no delegation) is reported with
//! the reason, and specs that need it are refused unless limits are "best effort".

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Period of the CPU bandwidth limit: a quota of `millis * 100` µs per 100 ms.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// What a host offers, found once at start.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub version: Option<Version>,
    /// Owner folders, per controller (v2: the same folder for all three).
    memory: Result<PathBuf, String>,
    cpu: Result<PathBuf, String>,
    pids: Result<PathBuf, String>,
}

/// The limits of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub max_processes: Option<u64>,
}

/// The cgroup folders of one instance.
#[derive(Debug)]
pub struct InstanceCgroup {
    version: Version,
    /// Every folder created (removed at the end), deepest last.
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each folder, for the child to join before it runs anything.
    procs: Vec<CString>,
    memory_dir: Option<PathBuf>,
    cpu_dir: Option<PathBuf>,
    pub memory_limit: Option<u64>,
}

/// One line of `/proc/self/mountinfo` that mounts a cgroup file system.
struct Mount {
    point: PathBuf,
    v2: bool,
    options: Vec<String>,
}

fn mounts() -> Vec<Mount> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            // id parent dev root point options [optional...] - fstype source superoptions
            let (pre, post) = l.split_once(" - ")?;
            let point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let _source = post.next();
            let sopts = post.next().unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                v2,
                options: sopts.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup`: (controllers, path) per hierarchy; v2 has empty controllers.
fn own_cgroups() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctl = it.next()?.to_string();
            let path = it.next()?.to_string();
            Some((ctl, path))
        })
        .collect()
}

fn join_rel(base: &Path, rel: &str) -> PathBuf {
    base.join(rel.trim_start_matches('/'))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create the cgroup {}: {e}", path.display())),
    }
}

impl Cgroups {
    /// Nothing can be enforced, for `why`.
    pub fn none(why: &str) -> Cgroups {
        Cgroups {
            version: None,
            memory: Err(why.to_string()),
            cpu: Err(why.to_string()),
            pids: Err(why.to_string()),
        }
    }

    /// Finds the hierarchies and prepares `<parent>/<owner>` in each; `parent` overrides the
    /// default place (a folder inside a cgroup file system).
    pub fn detect(owner: &str, parent: &str) -> Cgroups {
        let mounts = mounts();
        let own = own_cgroups();
        if let Some(m) = mounts.iter().find(|m| m.v2) {
            let controllers =
                std::fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "memory") {
                return Self::detect_v2(&m.point, &own, owner, parent);
            }
        }
        let v1: Vec<&Mount> = mounts.iter().filter(|m| !m.v2).collect();
        if v1.is_empty() {
            return Cgroups::none("no cgroup file system is mounted");
        }
        let find = |ctl: &str| -> Result<PathBuf, String> {
            let m = v1
                .iter()
                .find(|m| m.options.iter().any(|o| o == ctl))
                .ok_or_else(|| format!("the cgroup v1 {ctl} controller is not mounted"))?;
            let base = if parent.is_empty() {
                let rel = own
                    .iter()
                    .find(|(c, _)| c.split(',').any(|c| c == ctl))
                    .map(|(_, p)| p.as_str())
                    .unwrap_or("/");
                join_rel(&m.point, rel).join("nanofaas")
            } else {
                join_rel(&m.point, parent)
            };
            mkdir(&base)?;
            let dir = base.join(owner);
            mkdir(&dir)?;
            Ok(dir)
        };
        Cgroups {
            version: Some(Version::V1),
            memory: find("memory"),
            cpu: find("cpu"),
            pids: find("pids"),
        }
    }

    fn detect_v2(root: &Path, own: &[(String, String)], owner: &str, parent: &str) -> Cgroups {
        let own_rel = own
            .iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| "/".into());
        // Each folder from the top down to the owner folder must pass the controllers on.
        // Each folder from `delegate_from` down to the owner folder passes the controllers on
        // to its children (the instance cgroups below the owner folder).
        let try_base = |base: PathBuf, delegate_from: &Path| -> Result<PathBuf, String> {
            mkdir(&base)?;
            let dir = base.join(owner);
            mkdir(&dir)?;
            let wanted = ["memory", "cpu", "pids"];
            for d in [delegate_from, base.as_path(), dir.as_path()] {
                let avail =
                    std::fs::read_to_string(d.join("cgroup.controllers")).unwrap_or_default();
                let add: Vec<String> = wanted
                    .iter()
                    .filter(|c| avail.split_whitespace().any(|a| a == **c))
                    .map(|c| format!("+{c}"))
                    .collect();
                if add.is_empty() {
                    return Err(format!(
                        "{} offers none of the memory, cpu and pids controllers",
                        d.display()
                    ));
                }
                write(&d.join("cgroup.subtree_control"), &add.join(" "))?;
            }
            Ok(dir)
        };
        let result = if !parent.is_empty() {
            let base = join_rel(root, parent);
            let up = base
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or(root.to_path_buf());
            try_base(base, &up)
        } else {
            let own_dir = join_rel(root, &own_rel);
            try_base(own_dir.join("nanofaas"), &own_dir).or_else(|first| {
                // The control plane's own cgroup holds processes (v2 then cannot pass
                // controllers below it): use a folder at the top, which may.
                try_base(root.join("nanofaas"), root)
                    .map_err(|second| format!("{first}; and at the top of the hierarchy: {second}"))
            })
        };
        let with = |ctl: &str| -> Result<PathBuf, String> {
            let dir = result.clone()?;
            // What the owner folder passes on is what instance cgroups get.
            let enabled =
                std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            if enabled.split_whitespace().any(|c| c == ctl) {
                Ok(dir)
            } else {
                Err(format!("the cgroup v2 {ctl} controller is not available"))
            }
        };
        Cgroups {
            version: Some(Version::V2),
            memory: with("memory"),
            cpu: with("cpu"),
            pids: with("pids"),
        }
    }

    /// Why memory limits cannot be enforced, if they cannot.
    pub fn memory_unavailable(&self) -> Option<&str> {
        self.memory.as_ref().err().map(String::as_str)
    }

    pub fn cpu_unavailable(&self) -> Option<&str> {
        self.cpu.as_ref().err().map(String::as_str)
    }

    pub fn pids_available(&self) -> bool {
        self.pids.is_ok()
    }

    /// A one-line summary for the start-up log.
    pub fn describe(&self) -> String {
        let one = |n: &str, r: &Result<PathBuf, String>| match r {
            Ok(p) => format!("{n}: {}", p.display()),
            Err(e) => format!("{n}: unavailable ({e})"),
        };
        format!(
            "cgroup {}; {}; {}; {}",
            match self.version {
                Some(Version::V1) => "v1",
                Some(Version::V2) => "v2",
                None => "none",
            },
            one("memory", &self.memory),
            one("cpu", &self.cpu),
            one("pids", &self.pids)
        )
    }

    /// Creates the cgroup(s) of `instance` with `limits`, in the hierarchies the limits need;
    /// `open`: in the memory and cpu hierarchies too where they are available, with no limit
    /// yet, for [`InstanceCgroup::set_limits`] later (a prewarmed instance).
    pub fn create(
        &self,
        instance: &str,
        limits: &Limits,
        open: bool,
    ) -> Result<InstanceCgroup, String> {
        let version = self.version.ok_or("no cgroups")?;
        let mut cg = InstanceCgroup {
            version,
            dirs: Vec::new(),
            procs: Vec::new(),
            memory_dir: None,
            cpu_dir: None,
            memory_limit: limits.memory_bytes,
        };
        let result = (|| -> Result<(), String> {
            let mut seen: Vec<PathBuf> = Vec::new();
            for (ctl, base, needed) in [
                (
                    "memory",
                    &self.memory,
                    limits.memory_bytes.is_some() || (open && self.memory.is_ok()),
                ),
                (
                    "cpu",
                    &self.cpu,
                    limits.cpu_millis.is_some() || (open && self.cpu.is_ok()),
                ),
                ("pids", &self.pids, limits.max_processes.is_some()),
            ] {
                if !needed {
                    continue;
                }
                let base = base.as_ref().map_err(Clone::clone)?;
                let dir = base.join(instance);
                if !seen.contains(&dir) {
                    mkdir(&dir)?;
                    cg.dirs.push(dir.clone());
                    let procs = dir.join("cgroup.procs");
                    cg.procs.push(
                        CString::new(procs.as_os_str().as_encoded_bytes())
                            .map_err(|_| "a cgroup path holds a NUL byte".to_string())?,
                    );
                    seen.push(dir.clone());
                }
                match (ctl, version) {
                    ("memory", _) => {
                        cg.memory_dir = Some(dir.clone());
                        if let Some(b) = limits.memory_bytes {
                            set_memory(version, &dir, b)?;
                        }
                    }
                    ("cpu", _) => {
                        cg.cpu_dir = Some(dir.clone());
                        if let Some(m) = limits.cpu_millis {
                            set_cpu(version, &dir, m)?;
                        }
                    }
                    ("pids", _) => {
                        if let Some(n) = limits.max_processes {
                            write(&dir.join("pids.max"), &n.to_string())?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove();
                Err(e)
            }
        }
    }

    /// Removes what control planes that are no longer running left behind: their owner
    /// folders, after killing any process still in them. `alive` tells whether an owner runs.
    pub fn remove_orphans(&self, alive: impl Fn(&str) -> bool) -> usize {
        let mut n = 0;
        let mut bases: Vec<PathBuf> = Vec::new();
        for b in [&self.memory, &self.cpu, &self.pids].into_iter().flatten() {
            if let Some(parent) = b.parent() {
                if !bases.iter().any(|x| x == parent) {
                    bases.push(parent.to_path_buf());
                }
            }
        }
        for base in bases {
            let Ok(rd) = std::fs::read_dir(&base) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !e.path().is_dir() || !name.starts_with("cp-") || alive(&name) {
                    continue;
                }
                if let Ok(inner) = std::fs::read_dir(e.path()) {
                    for i in inner.flatten().filter(|i| i.path().is_dir()) {
                        kill_all(&i.path());
                        if remove_dir_retrying(&i.path()) {
                            n += 1;
                        }
                    }
                }
                remove_dir_retrying(&e.path());
            }
        }
        n
    }
}

fn set_cpu(version: Version, dir: &Path, millis: u64) -> Result<(), String> {
    match version {
        Version::V1 => {
            write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(
                &dir.join("cpu.cfs_quota_us"),
                &(millis * CPU_PERIOD_US / 1000).to_string(),
            )
        }
        Version::V2 => write(
            &dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", millis * CPU_PERIOD_US / 1000),
        ),
    }
}

fn set_memory(version: Version, dir: &Path, bytes: u64) -> Result<(), String> {
    match version {
        Version::V1 => {
            write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // No swap beyond the limit, where swap accounting is on.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            }
        }
        Version::V2 => {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
    }
    Ok(())
}

fn kill_all(dir: &Path) {
    for line in std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
    {
        if let Ok(pid) = line.trim().parse::<i32>() {
            if pid > 1 {
                // SAFETY: plain syscall.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// rmdir, retried briefly while the last processes are being reaped.
fn remove_dir_retrying(dir: &Path) -> bool {
    for i in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) => {
                if i == 10 {
                    kill_all(dir);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    false
}

/// Value of `key N` in a flat-keyed cgroup file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl InstanceCgroup {
    /// `cgroup.procs` files the child writes `0` into (itself) before it runs anything.
    pub fn procs_files(&self) -> Vec<CString> {
        self.procs.clone()
    }

    /// How many processes of the instance the kernel killed for going over the memory limit.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        match self.version {
            Version::V2 => std::fs::read_to_string(dir.join("memory.events"))
                .ok()
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0),
            Version::V1 => {
                let ctl =
                    std::fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default();
                match keyed(&ctl, "oom_kill") {
                    Some(n) => n,
                    // Kernels before 4.13 do not count kills: a process under OOM is the sign.
                    None => keyed(&ctl, "under_oom").unwrap_or(0),
                }
            }
        }
    }

    /// Sets memory and cpu limits on a cgroup made `open` (a prewarmed instance being
    /// specialized): fails when a hierarchy a limit needs was not joined, or the kernel refuses
    /// (a memory limit below what the instance already uses).
    pub fn set_limits(&mut self, limits: &Limits) -> Result<(), String> {
        if let Some(b) = limits.memory_bytes {
            let dir = self.memory_dir.as_ref().ok_or("no memory cgroup")?;
            set_memory(self.version, dir, b)?;
            self.memory_limit = Some(b);
        }
        if let Some(m) = limits.cpu_millis {
            let dir = self.cpu_dir.as_ref().ok_or("no cpu cgroup")?;
            set_cpu(self.version, dir, m)?;
        }
        Ok(())
    }

    /// Kills what is left in the cgroup and removes its folders.
    pub fn remove(&self) {
        for d in self.dirs.iter().rev() {
            kill_all(d);
            remove_dir_retrying(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files() {
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(
            keyed("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(keyed("low 0\n", "oom_kill"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn none_refuses_everything_with_the_reason() {
        let c = Cgroups::none("not here");
        assert_eq!(c.memory_unavailable(), Some("not here"));
        assert_eq!(c.cpu_unavailable(), Some("not here"));
        assert!(!c.pids_available());
        let e = c
            .create(
                "x",
                &Limits {
                    memory_bytes: Some(1 << 20),
                    ..Default::default()
                },
                false,
            )
            .unwrap_err();
        assert!(e.contains("no cgroups"), "{e}");
    }
}
