//! What a process instance starts with: a clean environment, its own unprivileged user, its
//! cgroup and its rlimits. Applied between `fork` and `exec` of the watchdog, so that the
//! watchdog, the runtime and everything they start inherit it.
//!
//! - Environment: only the allow-listed variables of the control plane's environment
//!   (`provider.process.env_allow`), then the spec's `env`, then the platform's own variables
//!   (which always win; a spec may not name them anyway). No secret of the control plane
//!   (`NANOFAAS_CALLBACK_SECRET`, tokens, cloud keys) reaches a function.
//! - User (`provider.process.user`): `auto` runs each instance as a user id of its own, taken
//!   from `provider.process.uid_range`, when the control plane runs as root (as itself
//!   otherwise). A user of its own per instance means that one function's code cannot read
//!   another instance's `/proc/<pid>/environ` (its callback token), signal it or trace it.
//! - rlimits: open files and processes (`provider.process.max_open_files`, `max_processes`).

use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How instances are run, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationSettings {
    /// Names (or `PREFIX*`) of the control plane's variables passed to instances.
    pub env_allow: Vec<String>,
    /// `auto`, `inherit`, `dynamic`, a user name, `uid` or `uid:gid`.
    pub user: String,
    /// First and last user id of `dynamic` users.
    pub uid_range: (u32, u32),
    /// `RLIMIT_NOFILE` of an instance (0: inherited).
    pub max_open_files: u64,
    /// `RLIMIT_NPROC` and `pids.max` of an instance (0: inherited / unlimited).
    pub max_processes: u64,
    /// Limits the host cannot enforce are logged and ignored instead of refused.
    pub best_effort: bool,
    /// Where instance cgroups go (empty: below the control plane's own cgroup).
    pub cgroup_parent: String,
}

impl IsolationSettings {
    /// The settings `provider.process.*` names.
    pub fn from_config(p: &crate::config::ProcessConfig) -> Result<Self, String> {
        Ok(IsolationSettings {
            env_allow: p
                .env_allow
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            user: p.user.clone(),
            uid_range: crate::config::parse_uid_range(&p.uid_range)
                .map_err(|e| format!("provider.process.uid_range: {e}"))?,
            max_open_files: p.max_open_files,
            max_processes: p.max_processes,
            best_effort: p.limits == crate::config::LimitsMode::BestEffort,
            cgroup_parent: p.cgroup_parent.clone(),
        })
    }
}

impl Default for IsolationSettings {
    fn default() -> Self {
        Self {
            env_allow: ["PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR"]
                .map(String::from)
                .to_vec(),
            user: "auto".into(),
            uid_range: (2_000_000_000, 2_000_065_535),
            max_open_files: 16384,
            max_processes: 4096,
            best_effort: false,
            cgroup_parent: String::new(),
        }
    }
}

/// Who instances run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserMode {
    /// As the control plane.
    Inherit,
    /// A user id of its own per instance, from the range.
    Dynamic { first: u32, last: u32 },
    /// Every instance as this user.
    Fixed { uid: u32, gid: u32 },
}

fn euid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// Looks a user name up in the user database.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or NULL; read at once. Called at
    // start-up only.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

impl UserMode {
    pub fn resolve(s: &IsolationSettings) -> Result<UserMode, String> {
        let root = euid() == 0;
        let (first, last) = s.uid_range;
        let mode = match s.user.trim() {
            "auto" if root => UserMode::Dynamic { first, last },
            "auto" | "inherit" | "" => UserMode::Inherit,
            "dynamic" => UserMode::Dynamic { first, last },
            other => {
                let (uid, gid) = if let Some((u, g)) = other.split_once(':') {
                    match (u.parse(), g.parse()) {
                        (Ok(u), Ok(g)) => (u, g),
                        _ => {
                            return Err(format!(
                                "provider.process.user {other:?}: expected uid:gid as numbers"
                            ))
                        }
                    }
                } else if let Ok(u) = other.parse::<u32>() {
                    (u, u)
                } else {
                    lookup_user(other).ok_or_else(|| {
                        format!("provider.process.user {other:?}: no such user on this machine")
                    })?
                };
                if uid == euid() {
                    UserMode::Inherit
                } else {
                    UserMode::Fixed { uid, gid }
                }
            }
        };
        if !root && mode != UserMode::Inherit {
            return Err(format!(
                "provider.process.user {:?}: running instances as another user needs the control plane to run as root (it runs as uid {})",
                s.user,
                euid()
            ));
        }
        Ok(mode)
    }

    pub fn describe(&self) -> String {
        match self {
            UserMode::Inherit => format!("as the control plane's user (uid {})", euid()),
            UserMode::Dynamic { first, last } => {
                format!("each as a user of its own (uids {first}-{last})")
            }
            UserMode::Fixed { uid, gid } => format!("as uid {uid} gid {gid}"),
        }
    }
}

/// Hands out the user ids of `Dynamic` instances: never two live instances with one id.
pub struct UidPool {
    first: u32,
    last: u32,
    next: Mutex<(u32, HashSet<u32>)>,
}

impl UidPool {
    pub fn new(first: u32, last: u32) -> Self {
        // Start at a pseudo-random place so that two control planes on one host rarely meet.
        let seed = std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0));
        let span = last - first + 1;
        Self {
            first,
            last,
            next: Mutex::new((first + seed % span, HashSet::new())),
        }
    }

    pub fn take(&self) -> Option<u32> {
        let mut g = self.next.lock().unwrap();
        let span = self.last - self.first + 1;
        for _ in 0..span {
            let c = g.0;
            g.0 = if c >= self.last { self.first } else { c + 1 };
            if g.1.insert(c) {
                return Some(c);
            }
        }
        None
    }

    pub fn give_back(&self, uid: u32) {
        self.next.lock().unwrap().1.remove(&uid);
    }
}

/// Whether a variable of the control plane's environment may pass to instances.
fn allowed(allow: &[String], name: &[u8]) -> bool {
    allow.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => a.as_bytes() == name,
    })
}

/// The allow-listed part of the control plane's environment.
pub fn inherited_env(allow: &[String]) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| allowed(allow, k.as_bytes()))
        .collect()
}

/// The credentials, cgroup and limits a child takes on between fork and exec.
pub struct ChildSetup {
    pub cgroup_procs: Vec<CString>,
    /// A folder to create (mode 0700) and give to the instance's user before it runs.
    pub private_dir: Option<CString>,
    pub max_open_files: u64,
    pub max_processes: u64,
    pub user: Option<(u32, u32)>,
}

impl ChildSetup {
    /// Runs in the forked child: only async-signal-safe calls, no allocation.
    pub fn apply(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        for p in &self.cgroup_procs {
            // SAFETY: open/write/close with a valid C string and a static buffer.
            unsafe {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(err());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r != 1 {
                    return Err(err());
                }
            }
        }
        let set = |res, n: u64| -> std::io::Result<()> {
            if n == 0 {
                return Ok(());
            }
            let l = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: a valid rlimit struct.
            if unsafe { libc::setrlimit(res, &l) } != 0 {
                return Err(err());
            }
            Ok(())
        };
        if let Some(d) = &self.private_dir {
            // SAFETY: mkdir/chown with a valid C string. An existing folder is an error: it
            // could be someone else's.
            unsafe {
                if libc::mkdir(d.as_ptr(), 0o700) != 0 {
                    return Err(err());
                }
                if let Some((uid, gid)) = self.user {
                    if libc::chown(d.as_ptr(), uid, gid) != 0 {
                        return Err(err());
                    }
                }
            }
        }
        set(libc::RLIMIT_NOFILE, self.max_open_files)?;
        set(libc::RLIMIT_NPROC, self.max_processes)?;
        if let Some((uid, gid)) = self.user {
            // SAFETY: plain syscalls; the order drops groups, then the group, then the user.
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(err());
                }
            }
        }
        // After the user change, which clears it: SIGHUP when the control plane dies, which
        // the watchdog reads as "stop at once, no drain" (SIGTERM is a graceful stop).
        // SAFETY: prctl only sets this process's parent-death signal.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP);
        }
        Ok(())
    }
}

/// Whether user `uid` (group `gid`, no supplementary groups) has `bits` (of r=4, w=2, x=1)
/// on `meta`.
fn permits(meta: &std::fs::Metadata, uid: u32, gid: u32, bits: u32) -> bool {
    let mode = meta.mode();
    let have = if meta.uid() == uid {
        (mode >> 6) & 7
    } else if meta.gid() == gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    have & bits == bits
}

/// Why user `uid`:`gid` cannot reach `path` with `bits` (every folder above it searchable),
/// or `None` when it can. Symbolic links are followed: the target's folders count too.
pub fn access_problem(path: &Path, uid: u32, gid: u32, bits: u32) -> Option<String> {
    let what = match bits {
        4 => "read",
        5 => "read",
        1 => "run",
        _ => "use",
    };
    let mut paths = vec![path.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(path) {
        if real != path {
            paths.push(real);
        }
    }
    for p in &paths {
        let mut ancestors: Vec<PathBuf> = p.ancestors().skip(1).map(Path::to_path_buf).collect();
        ancestors.reverse();
        for a in ancestors.iter().filter(|a| !a.as_os_str().is_empty()) {
            if let Ok(m) = std::fs::metadata(a) {
                if !permits(&m, uid, gid, 1) {
                    return Some(format!(
                        "the instance user (uid {uid}) cannot {what} {}: the folder {} is not searchable by it (mode {:o}, owner uid {})",
                        path.display(),
                        a.display(),
                        m.mode() & 0o7777,
                        m.uid()
                    ));
                }
            }
        }
    }
    if let Ok(m) = std::fs::metadata(path) {
        if !permits(&m, uid, gid, bits) {
            return Some(format!(
                "the instance user (uid {uid}) cannot {what} {} (mode {:o}, owner uid {})",
                path.display(),
                m.mode() & 0o7777,
                m.uid()
            ));
        }
    }
    None
}

/// The program a command names: a path (relative to `dir`), else the first match on `path`.
pub fn resolve_program(
    program: &str,
    dir: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return Some(match dir {
            Some(d) if p.is_relative() => d.join(p),
            _ => p.to_path_buf(),
        });
    }
    std::env::split_paths(path?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn allow_list_patterns() {
        let a: Vec<String> = ["PATH", "LC_*"].map(String::from).to_vec();
        assert!(allowed(&a, b"PATH"));
        assert!(allowed(&a, b"LC_ALL"));
        assert!(!allowed(&a, b"PATHX"));
        assert!(!allowed(&a, b"NANOFAAS_CALLBACK_SECRET"));
        assert!(!allowed(&a, b"HOME"));
    }

    #[test]
    fn uid_ranges_and_pool() {
        assert_eq!(crate::config::parse_uid_range("10-20"), Ok((10, 20)));
        assert!(crate::config::parse_uid_range("20-10").is_err());
        assert!(crate::config::parse_uid_range("0-10").is_err());
        assert!(crate::config::parse_uid_range("x").is_err());
        let p = UidPool::new(10, 12);
        let mut got: Vec<u32> = (0..3).map(|_| p.take().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![10, 11, 12]);
        assert_eq!(p.take(), None, "all in use");
        p.give_back(11);
        assert_eq!(p.take(), Some(11));
    }

    #[test]
    fn access_follows_folders_and_modes() {
        let d = std::env::temp_dir().join(format!("nanofaas-acc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("closed")).unwrap();
        let f = d.join("closed/prog");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.join("closed"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let stranger = 2_000_000_001;
        assert_eq!(access_problem(&f, stranger, stranger, 1), None);
        std::fs::set_permissions(d.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = access_problem(&f, stranger, stranger, 1).unwrap();
        assert!(e.contains("not searchable"), "{e}");
        std::fs::set_permissions(d.join("closed"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = access_problem(&f, stranger, stranger, 1).unwrap();
        assert!(e.contains("cannot run"), "{e}");
        std::fs::remove_dir_all(&d).ok();
        assert_eq!(
            resolve_program("./x", Some(Path::new("/w")), None),
            Some(PathBuf::from("/w/./x"))
        );
        assert!(resolve_program("sh", None, Some(std::ffi::OsStr::new("/bin:/usr/bin"))).is_some());
    }
}
