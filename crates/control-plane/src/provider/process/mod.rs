//! The `process` provider, nanofaas's embedded default: each instance is `nanofaas-watchdog`
//! (warm or one-shot mode) plus its runtime, as child processes on loopback ports. No container
//! engine is needed.
//!
//! Start-up is announced, not polled: the watchdog binds an ephemeral port once its runtime is
//! healthy and prints `NANOFAAS_READY port=.. pid=.. runtime_pid=..` on stdout. Its stderr (which
//! carries the runtime's output) is kept as a short tail for error messages and forwarded to the
//! log, rate-limited per instance.
//!
//! Isolation (see [`sandbox`] and [`cgroup`]): an instance starts from a clean environment, as
//! a user of its own when the control plane runs as root, in a cgroup of its own that enforces
//! `resources.memory` and `resources.cpu` and counts its out-of-memory kills, with rlimits on
//! open files and processes. Its watchdog accepts connections only from the control plane's
//! user (`WARM_PEER_UID`).
//!
//! No orphan survives: the watchdog runs in its own process group and gets SIGHUP if the
//! control plane dies (`PR_SET_PDEATHSIG`), on which it stops at once without draining and
//! kills everything it started (warm and one-shot alike); the runtime runs in its own group
//! too. Every process
//! of an instance carries `NANOFAAS_INSTANCE` and the owner's identity in its environment, so at
//! start-up (and on stop) the provider finds every process an earlier, dead control plane left
//! behind, grandchildren included, by reading `/proc/*/environ`.

pub mod cgroup;
pub mod sandbox;

use super::exit::wait_exit;
use super::shared::{identity_alive, join_all, process_identity, read_lines, LogTail, OutputLog};
use super::{
    ExitWatch, Instance, InstanceInfo, Job, JobRequest, PrewarmError, Provider, StartFailure,
    StartRequest,
};
use crate::dispatch::BoxFuture;
use crate::prewarm::Specialized;
use crate::prewarm::{Kind, PrewarmPool, PrewarmSettings, Stems};
use nanofaas_api::{ExecutionMode, FunctionSpec, RuntimeMode, ValidationError};
use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::{oneshot, watch};

/// Environment variables marking the processes of an instance.
pub const ENV_INSTANCE: &str = "NANOFAAS_INSTANCE";
pub const ENV_FUNCTION: &str = "NANOFAAS_FUNCTION";
pub const ENV_OWNER: &str = "NANOFAAS_OWNER";

/// Watchdog exit codes that mean "the command itself cannot run" (see the watchdog README).
const WATCHDOG_EXIT_CONFIG: i32 = 2;
const WATCHDOG_EXIT_SPAWN: i32 = 4;

#[derive(Debug, Clone)]
pub struct ProcessSettings {
    /// The `nanofaas-watchdog` binary.
    pub watchdog: PathBuf,
    /// Loopback address instances listen on.
    pub bind: IpAddr,
    pub startup_timeout: Duration,
    pub stop_grace: Duration,
    /// Lines of an instance's output forwarded to the log per second; the rest are counted.
    pub log_lines_per_second: u32,
    /// Reach warm instances over a Unix socket in the abstract namespace (`WARM_SOCKET`).
    pub unix_socket: bool,
    /// Environment, user, cgroups and rlimits of instances.
    pub isolation: sandbox::IsolationSettings,
    /// Generic instances kept per runtime kind (0: none).
    pub prewarm: usize,
    /// First delay after a prewarmed instance failed to start (doubling, capped).
    pub prewarm_backoff: Duration,
    pub prewarm_backoff_max: Duration,
}

/// Finds `nanofaas-watchdog`: next to the running executable, else on `PATH`.
pub fn find_watchdog() -> Option<PathBuf> {
    let name = "nanofaas-watchdog";
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

struct Entry {
    /// The function it serves (a prewarmed instance: `(prewarmed)` until it is specialized).
    function: Mutex<Arc<str>>,
    /// `warm`, `job` or `prewarmed`.
    kind: Mutex<&'static str>,
    pid: u32,
    runtime_pid: Mutex<Option<u32>>,
    exited: ExitWatch,
    log: Arc<LogTail>,
    confined: Mutex<Confined>,
}

/// The user and cgroup an instance was given.
#[derive(Default)]
struct Confined {
    /// A dynamic user id, handed back when the instance ends.
    dynamic_uid: Option<u32>,
    /// A folder of its own (JOB instances of FILE functions), removed when it ends.
    private_dir: Option<PathBuf>,
    uid: Option<u32>,
    cgroup: Option<cgroup::InstanceCgroup>,
}

type Children = Arc<Mutex<HashMap<String, Arc<Entry>>>>;

/// Out-of-memory verdicts of instances that ended recently (their cgroup is gone), newest last.
const ENDED_OOM_KEPT: usize = 256;

pub struct ProcessProvider {
    /// Where the lines instances write go (per execution, per function); see `logs`.
    logs: std::sync::OnceLock<Arc<crate::logs::Logs>>,
    /// Generic instances per runtime kind (`provider.process.prewarm`).
    prewarm: PrewarmPool,
    /// Sends `POST /specialize` to prewarmed instances.
    client: crate::dispatch::HttpClient,
    settings: ProcessSettings,
    children: Children,
    owner: String,
    shared: Arc<Shared>,
}

/// What the exit tasks of instances need too.
struct Shared {
    user: sandbox::UserMode,
    uids: Option<sandbox::UidPool>,
    cgroups: cgroup::Cgroups,
    /// The allow-listed part of the control plane's environment.
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ended_oom: Mutex<VecDeque<(String, String)>>,
}

/// The user instances check access with (for dynamic users, one of the range: a stranger to
/// every file).
fn probe_user(user: &sandbox::UserMode) -> Option<(u32, u32)> {
    match *user {
        sandbox::UserMode::Inherit => None,
        sandbox::UserMode::Fixed { uid, gid } => Some((uid, gid)),
        sandbox::UserMode::Dynamic { first, .. } => Some((first, first)),
    }
}

/// Hands back what an instance was given: its dynamic user id, its cgroup.
fn release(shared: &Shared, confined: Confined) {
    if let Some(cg) = &confined.cgroup {
        cg.remove();
    }
    if let Some(d) = &confined.private_dir {
        // Only the folder made for this instance (owned by its user), never one found there.
        use std::os::unix::fs::MetadataExt;
        // SAFETY: no arguments, cannot fail.
        let owner = confined.uid.unwrap_or_else(|| unsafe { libc::geteuid() });
        if std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir() && m.uid() == owner) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    if let (Some(uid), Some(pool)) = (confined.dynamic_uid, &shared.uids) {
        pool.give_back(uid);
    }
}

impl Entry {
    /// The out-of-memory verdict of this instance, if its cgroup counted a kill.
    fn oom(&self) -> Option<String> {
        let c = self.confined.lock().unwrap();
        let cg = c.cgroup.as_ref()?;
        let kills = cg.oom_kills();
        (kills > 0).then(|| oom_message(cg.memory_limit, kills))
    }
}

/// `cp-<pid>-<start time>`: the cgroup folder name of a control plane's identity.
fn owner_folder(identity: &str) -> String {
    format!("cp-{}", identity.replace(':', "-"))
}

fn folder_identity(folder: &str) -> Option<String> {
    let rest = folder.strip_prefix("cp-")?;
    let (pid, start) = rest.split_once('-')?;
    Some(format!("{pid}:{start}"))
}

/// The message of an out-of-memory kill.
fn oom_message(limit: Option<u64>, kills: u64) -> String {
    let limit = match limit {
        Some(b) if b % (1 << 20) == 0 => format!("{} Mi ({b} bytes)", b >> 20),
        Some(b) => format!("{b} bytes"),
        None => "its memory limit".into(),
    };
    format!(
        "the function went over its memory limit (resources.memory = {limit}) and was killed by the kernel ({kills} out-of-memory kill(s) in its instance)"
    )
}

/// Processes whose environment has `NANOFAAS_OWNER`, as (pid, instance, owner).
fn marked_processes() -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let (mut inst, mut owner) = (None, None);
        for kv in env.split(|b| *b == 0) {
            if let Some(v) = kv.strip_prefix(format!("{ENV_INSTANCE}=").as_bytes()) {
                inst = Some(String::from_utf8_lossy(v).into_owned());
            } else if let Some(v) = kv.strip_prefix(format!("{ENV_OWNER}=").as_bytes()) {
                owner = Some(String::from_utf8_lossy(v).into_owned());
            }
        }
        if let (Some(i), Some(o)) = (inst, owner) {
            out.push((pid, i, o));
        }
    }
    out
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall; errors (no such process) are expected and ignored.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn kill_group(pgid: u32, sig: i32) {
    if pgid > 1 {
        // SAFETY: as above; a negative pid addresses the process group.
        unsafe {
            libc::kill(-(pgid as libc::pid_t), sig);
        }
    }
}

/// SIGKILLs every process of instance `id` that is still around (grandchildren included).
fn kill_instance_processes(id: &str) -> usize {
    let mut n = 0;
    for (pid, inst, _) in marked_processes() {
        if inst == id {
            kill(pid, libc::SIGKILL);
            n += 1;
        }
    }
    n
}

/// Starts tried again when the runtime's port was taken between [`free_port`] and its bind.
const PORT_TAKEN_RETRIES: u32 = 2;

/// Whether a failed start failed because its runtime's port was in use (the runtime's last
/// output says so).
fn port_was_taken(f: &StartFailure) -> bool {
    !f.permanent && f.message.contains("Address already in use")
}

/// A free port for a runtime, below the kernel's ephemeral range where one can be found: ports
/// the kernel hands to `bind(0)` and to outgoing connections (any process's) come from that
/// range, so one picked there could be taken between this check and the runtime's own bind.
fn free_port(ip: IpAddr) -> Result<u16, StartFailure> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 2048 {
        let (from, span) = (1024u16.max(low / 2), low - 1024u16.max(low / 2));
        for _ in 0..32 {
            let p = from + (crate::ids::random_u64() % u64::from(span)) as u16;
            if TcpListener::bind((ip, p)).is_ok() {
                return Ok(p);
            }
        }
    }
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StartFailure {
            message: format!("cannot find a free port on {ip}: {e}"),
            permanent: false,
        })
}

impl ProcessProvider {
    /// Hands the lines instances write to `logs` (once, before the first instance starts).
    pub fn set_logs(&self, logs: Arc<crate::logs::Logs>) {
        let _ = self.logs.set(logs);
    }

    /// Lets the prewarm pool start and stop generic instances through this provider (once it
    /// sits in its `Arc`).
    pub fn attach_prewarm(self: &Arc<Self>) {
        let me: std::sync::Weak<dyn Stems> = Arc::downgrade(self) as std::sync::Weak<dyn Stems>;
        self.prewarm.attach(me);
    }

    pub fn new(mut settings: ProcessSettings) -> Result<Self, String> {
        // Instances start in their function's working directory: a relative path to the
        // watchdog would be resolved from there, so make it absolute now.
        if let Ok(abs) = std::fs::canonicalize(&settings.watchdog) {
            settings.watchdog = abs;
        }
        if !settings.watchdog.is_file() {
            return Err(format!(
                "the watchdog binary {} does not exist (build it with `cargo build -p nanofaas-watchdog`, or set provider.process.watchdog)",
                settings.watchdog.display()
            ));
        }
        let iso = &settings.isolation;
        let user = sandbox::UserMode::resolve(iso)?;
        let owner = process_identity();
        let cgroups = cgroup::Cgroups::detect(&owner_folder(&owner), &iso.cgroup_parent);
        tracing::info!(
            "process instances run {}; {}; limits {}",
            user.describe(),
            cgroups.describe(),
            if iso.best_effort {
                "best effort"
            } else {
                "enforced (specs asking for what cannot be enforced are refused)"
            }
        );
        let uids = match user {
            sandbox::UserMode::Dynamic { first, last } => Some(sandbox::UidPool::new(first, last)),
            _ => None,
        };
        if let Some((uid, gid)) = probe_user(&user) {
            if let Some(why) = sandbox::access_problem(&settings.watchdog, uid, gid, 1) {
                return Err(format!(
                    "{why}; instances run as another user and must be able to run the watchdog (move it, or set provider.process.user)"
                ));
            }
        }
        let prewarm = PrewarmPool::new(PrewarmSettings {
            count: settings.prewarm,
            backoff: settings.prewarm_backoff,
            backoff_max: settings.prewarm_backoff_max,
        });
        Ok(Self {
            prewarm,
            client: crate::dispatch::http_client(&crate::dispatch::ClientSettings {
                connect_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(5),
                max_idle_per_host: 1,
            }),
            logs: std::sync::OnceLock::new(),
            shared: Arc::new(Shared {
                env: sandbox::inherited_env(&iso.env_allow),
                user,
                uids,
                cgroups,
                ended_oom: Mutex::new(VecDeque::new()),
            }),
            settings,
            children: Arc::default(),
            owner,
        })
    }

    /// Why an instance of `spec` could not reach its program or folder as its user.
    fn access_problem(&self, spec: &FunctionSpec) -> Option<(&'static str, String)> {
        let (uid, gid) = probe_user(&self.shared.user)?;
        let dir = spec.working_dir.as_deref().map(Path::new);
        if let Some(d) = dir {
            if let Some(why) = sandbox::access_problem(d, uid, gid, 5) {
                return Some(("workingDir", why));
            }
        }
        let program = spec.command.as_ref()?.first()?;
        let path = self
            .shared
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str());
        let exe = sandbox::resolve_program(program, dir, path)?;
        sandbox::access_problem(&exe, uid, gid, 1).map(|why| ("command", why))
    }

    fn limits_of(&self, spec: &FunctionSpec) -> cgroup::Limits {
        let res = spec.resources.as_ref();
        let iso = &self.settings.isolation;
        cgroup::Limits {
            memory_bytes: res
                .and_then(|r| r.memory.as_deref())
                .and_then(|m| nanofaas_api::spec::parse_memory_bytes(m).ok()),
            cpu_millis: res
                .and_then(|r| r.cpu.as_deref())
                .and_then(|c| nanofaas_api::spec::parse_cpu_millis(c).ok()),
            // With a user of its own per instance RLIMIT_NPROC already counts per instance:
            // the pids cgroup (one more cgroup to join per start) is for shared users.
            max_processes: (iso.max_processes > 0
                && self.shared.cgroups.pids_available()
                && !matches!(self.shared.user, sandbox::UserMode::Dynamic { .. }))
            .then_some(iso.max_processes),
        }
    }

    /// The limits of `spec` the host cannot enforce: (field, why).
    fn unenforceable(&self, spec: &FunctionSpec) -> Option<(&'static str, String)> {
        let l = self.limits_of(spec);
        let c = &self.shared.cgroups;
        if l.memory_bytes.is_some() {
            if let Some(why) = c.memory_unavailable() {
                return Some(("resources.memory", why.to_string()));
            }
        }
        if l.cpu_millis.is_some() {
            if let Some(why) = c.cpu_unavailable() {
                return Some(("resources.cpu", why.to_string()));
            }
        }
        None
    }

    /// The user, cgroup and limits of a new instance, applied between fork and exec.
    fn confine(
        &self,
        id: &str,
        spec: &FunctionSpec,
        private: bool,
        stem: bool,
        cmd: &mut Command,
    ) -> Result<Confined, StartFailure> {
        let iso = &self.settings.isolation;
        let mut confined = Confined::default();
        let user = match self.shared.user {
            sandbox::UserMode::Inherit => None,
            sandbox::UserMode::Fixed { uid, gid } => Some((uid, gid)),
            sandbox::UserMode::Dynamic { .. } => {
                let uid = self.shared.uids.as_ref().and_then(|p| p.take()).ok_or_else(|| StartFailure {
                    message: "every user id of provider.process.uid_range is in use by a running instance".into(),
                    permanent: false,
                })?;
                confined.dynamic_uid = Some(uid);
                Some((uid, uid))
            }
        };
        confined.uid = user.map(|u| u.0);
        let mut limits = self.limits_of(spec);
        if iso.best_effort {
            if limits.memory_bytes.is_some() && self.shared.cgroups.memory_unavailable().is_some() {
                limits.memory_bytes = None;
            }
            if limits.cpu_millis.is_some() && self.shared.cgroups.cpu_unavailable().is_some() {
                limits.cpu_millis = None;
            }
        }
        // Joining a cgroup costs a few milliseconds of start-up per hierarchy (the kernel waits
        // for an RCU grace period): only the ones a limit needs.
        // A prewarmed instance joins the memory and cpu hierarchies with no limit yet: its
        // function's limits are set there before its code is loaded (`specialize`).
        let wants_cgroup = limits.memory_bytes.is_some()
            || limits.cpu_millis.is_some()
            || limits.max_processes.is_some()
            || stem;
        let cg = if wants_cgroup && self.shared.cgroups.version.is_some() {
            match self.shared.cgroups.create(id, &limits, stem) {
                Ok(cg) => Some(cg),
                Err(e) if limits.memory_bytes.is_some() || limits.cpu_millis.is_some() => {
                    if let Some(u) = confined.dynamic_uid {
                        if let Some(p) = &self.shared.uids {
                            p.give_back(u);
                        }
                    }
                    return Err(StartFailure {
                        message: format!("cannot enforce the resources of {:?}: {e}", spec.name),
                        permanent: false,
                    });
                }
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "no cgroup for the instance (it has no limits to enforce)");
                    None
                }
            }
        } else {
            None
        };
        // A one-shot FILE instance exchanges its input and output through files: in a folder
        // of its own, not in a shared /tmp where another instance's files may be.
        let private_dir = private.then(|| std::env::temp_dir().join(format!("nanofaas-{id}")));
        if let Some(d) = &private_dir {
            cmd.env("INPUT_FILE", d.join("input.json"))
                .env("OUTPUT_FILE", d.join("output.json"));
        }
        let setup = sandbox::ChildSetup {
            private_dir: private_dir
                .as_ref()
                .and_then(|d| CString::new(d.as_os_str().as_encoded_bytes()).ok()),
            cgroup_procs: cg.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
            max_open_files: iso.max_open_files,
            max_processes: iso.max_processes,
            user,
        };
        confined.cgroup = cg;
        confined.private_dir = private_dir;
        // SAFETY: `apply` makes only async-signal-safe calls (open, write, setrlimit, setuid,
        // prctl) and does not allocate.
        unsafe {
            cmd.pre_exec(move || setup.apply());
        }
        Ok(confined)
    }

    fn runtime_command(spec: &FunctionSpec) -> Result<String, StartFailure> {
        let cmd = spec.command.as_ref().ok_or_else(|| StartFailure {
            message: "the process provider needs a `command`".into(),
            permanent: true,
        })?;
        Ok(nanofaas_api::command::join(cmd))
    }

    fn base_command(&self, id: &str, spec: &FunctionSpec) -> Result<Command, StartFailure> {
        let mut cmd = Command::new(&self.settings.watchdog);
        if let Some(dir) = &spec.working_dir {
            if !Path::new(dir).is_dir() {
                return Err(StartFailure {
                    message: format!("workingDir {dir:?} is not a folder"),
                    permanent: true,
                });
            }
            cmd.current_dir(dir);
        }
        // A clean environment: the allow-list, the spec's, then ours (which wins).
        cmd.env_clear()
            .envs(self.shared.env.iter().map(|(k, v)| (k, v)))
            .envs(&spec.env)
            .env(ENV_INSTANCE, id)
            .env(ENV_FUNCTION, &spec.name)
            .env(ENV_OWNER, &self.owner)
            .env("WATCHDOG_CMD", Self::runtime_command(spec)?)
            .env("TIMEOUT_MS", spec.timeout_ms.to_string())
            .env(crate::logs::ENV_LOG_TAGS, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .process_group(0);
        Ok(cmd)
    }

    /// Spawns the watchdog and the tasks that read its output and wait for its exit.
    /// Returns the entry and a receiver of the READY port.
    async fn spawn(
        &self,
        id: &str,
        spec: &FunctionSpec,
        kind: &'static str,
        mut cmd: Command,
    ) -> Result<(Arc<Entry>, oneshot::Receiver<Ready>), StartFailure> {
        let private = kind == "job" && spec.runtime_mode == RuntimeMode::File;
        let stem = kind == "prewarmed";
        let mut confined = self.confine(id, spec, private, stem, &mut cmd)?;
        if stem {
            // An empty folder of its own to wait in (none of a function's files).
            match stem_dir(id, confined.uid) {
                Ok(d) => {
                    cmd.current_dir(&d);
                    confined.private_dir = Some(d);
                }
                Err(e) => {
                    let shared = self.shared.clone();
                    tokio::task::spawn_blocking(move || release(&shared, confined));
                    return Err(StartFailure {
                        message: format!("cannot make the folder of a prewarmed instance: {e}"),
                        permanent: false,
                    });
                }
            }
        }
        // On a thread of the blocking pool: `spawn` returns only once the child has exec'd,
        // after its `pre_exec` has moved it into its cgroups, and that move can take tens of
        // milliseconds (cgroup v1 waits for an RCU grace period). On a runtime thread it would
        // hold up every task queued there: a refill started as a prewarmed instance is taken
        // delayed that instance's specialization by as much.
        // If this start is abandoned meanwhile (its future dropped), nobody would own the
        // child: it is killed as soon as it exists instead of being left running.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            if let Err(Ok(mut child)) = tx.send(cmd.spawn()) {
                let _ = child.start_kill();
            }
        });
        let spawned = rx.await.unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the thread starting the watchdog ended without an answer",
            ))
        });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let shared = self.shared.clone();
                tokio::task::spawn_blocking(move || release(&shared, confined));
                return Err(StartFailure {
                    message: format!(
                        "cannot start the watchdog {}: {e}",
                        self.settings.watchdog.display()
                    ),
                    permanent: true,
                });
            }
        };
        let pid = child.id().unwrap_or(0);
        let (exit_tx, exited) = watch::channel(None);
        let log = Arc::new(LogTail::default());
        let entry = Arc::new(Entry {
            function: Mutex::new(spec.name.as_str().into()),
            kind: Mutex::new(kind),
            pid,
            runtime_pid: Mutex::new(None),
            exited,
            log: log.clone(),
            confined: Mutex::new(confined),
        });
        self.children
            .lock()
            .unwrap()
            .insert(id.to_string(), entry.clone());
        let (ready_tx, ready_rx) = oneshot::channel();
        if let Some(out) = child.stdout.take() {
            let entry = entry.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                read_lines(out, |line| {
                    if let Some(rest) = line.strip_prefix("NANOFAAS_READY ") {
                        let port = field(rest, "port").and_then(|p| p.parse::<u16>().ok());
                        let socket = field(rest, "socket").map(Arc::<str>::from);
                        if let Some(r) = field(rest, "runtime_pid")
                            .and_then(|p| p.parse().ok())
                            .filter(|p| *p > 0)
                        {
                            *entry.runtime_pid.lock().unwrap() = Some(r);
                        }
                        if let (Some(port), Some(tx)) = (port, ready_tx.take()) {
                            let _ = tx.send(Ready { port, socket });
                        }
                    } else if let Some(rest) = line.strip_prefix("NANOFAAS_RUNTIME ") {
                        if let Some(r) = field(rest, "pid").and_then(|p| p.parse().ok()) {
                            *entry.runtime_pid.lock().unwrap() = Some(r);
                        }
                    } else {
                        log.push(line);
                    }
                })
                .await;
            });
        }
        if let Some(err) = child.stderr.take() {
            let log = log.clone();
            let instance = id.to_string();
            let mut function: Arc<str> = spec.name.as_str().into();
            let hub = self.logs.get().cloned();
            let mut logs = hub.as_ref().map(|l| l.instance(&function, &instance));
            let per_second = self.settings.log_lines_per_second;
            let mut out = OutputLog::new(function.to_string(), instance.clone(), per_second);
            let entry = entry.clone();
            tokio::spawn(async move {
                read_lines(err, |line| {
                    // A prewarmed instance's lines belong to its function once specialized.
                    if stem {
                        let now = entry.function.lock().unwrap().clone();
                        if now != function {
                            function = now;
                            logs = hub.as_ref().map(|l| l.instance(&function, &instance));
                            out =
                                OutputLog::new(function.to_string(), instance.clone(), per_second);
                        }
                    }
                    if let Some(l) = &logs {
                        l.line(line);
                    }
                    if let Some((stream, text)) = crate::logs::display(line) {
                        log.push(text);
                        out.line(stream, text);
                    }
                })
                .await;
                if let Some(l) = &logs {
                    l.ended();
                }
            });
        }
        let children = self.children.clone();
        let instance = id.to_string();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let why = match child.wait().await {
                Ok(st) => match (
                    st.code(),
                    std::os::unix::process::ExitStatusExt::signal(&st),
                ) {
                    (Some(c), _) => format!("the watchdog exited with code {c}"),
                    (None, Some(s)) => format!("the watchdog was killed by signal {s}"),
                    _ => "the watchdog exited".to_string(),
                },
                Err(e) => format!("cannot wait for the watchdog: {e}"),
            };
            let entry = children.lock().unwrap().remove(&instance);
            // The runtime and anything it started go with the watchdog; then its cgroup.
            // Its out-of-memory verdict is kept for the call that may still ask.
            let oom = entry.as_ref().and_then(|e| e.oom());
            if let Some(msg) = &oom {
                let mut q = shared.ended_oom.lock().unwrap();
                if q.len() == ENDED_OOM_KEPT {
                    q.pop_front();
                }
                q.push_back((instance.clone(), msg.clone()));
            }
            tokio::task::spawn_blocking(move || {
                kill_instance_processes(&instance);
                if let Some(e) = entry {
                    let confined = std::mem::take(&mut *e.confined.lock().unwrap());
                    release(&shared, confined);
                }
            });
            let why = match oom {
                Some(m) => format!("{why}; {m}"),
                None => why,
            };
            let _ = exit_tx.send(Some(why));
        });
        Ok((entry, ready_rx))
    }

    async fn stop_entry(&self, id: &str, entry: Arc<Entry>) {
        let mut exited = entry.exited.clone();
        if exited.borrow().is_none() {
            kill(entry.pid, libc::SIGTERM);
            let gone = tokio::time::timeout(self.settings.stop_grace, wait_exit(&mut exited)).await;
            if gone.is_err() {
                tracing::warn!(instance = %id, "instance did not stop within the grace period; killing it");
                kill_group(entry.pid, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), wait_exit(&mut exited)).await;
            }
        }
        let id = id.to_string();
        let _ = tokio::task::spawn_blocking(move || kill_instance_processes(&id)).await;
    }
}

/// What a watchdog's READY line says.
struct Ready {
    port: u16,
    socket: Option<Arc<str>>,
}

/// Value of `key=value` in a space-separated line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn exit_code_of(why: &str) -> Option<i32> {
    why.strip_prefix("the watchdog exited with code ")?
        .parse()
        .ok()
}

impl ProcessProvider {
    /// Starts a warm instance of `req.spec`, or (`stem`) a generic one of its kind.
    ///
    /// The runtime's port is found free here and bound by the runtime a moment later: another
    /// process may take it in between. A start that failed on a port in use is tried again,
    /// with another port, up to [`PORT_TAKEN_RETRIES`] times (logged).
    async fn start_warm(&self, req: StartRequest, stem: bool) -> Result<Instance, StartFailure> {
        let mut retries = 0;
        loop {
            match self.start_warm_once(req.clone(), stem).await {
                Err(f) if retries < PORT_TAKEN_RETRIES && port_was_taken(&f) => {
                    retries += 1;
                    tracing::info!(instance = %req.instance_id, retries, "the runtime's port was taken before it could bind it; starting again with another port");
                }
                r => return r,
            }
        }
    }

    async fn start_warm_once(
        &self,
        req: StartRequest,
        stem: bool,
    ) -> Result<Instance, StartFailure> {
        {
            let spec = &req.spec;
            let ip = self.settings.bind;
            let runtime_port = free_port(ip)?;
            let mut cmd = self.base_command(&req.instance_id, spec)?;
            if stem {
                cmd.env("WARM_PREWARM", "1").env_remove(ENV_FUNCTION);
            }
            cmd.env("EXECUTION_MODE", "WARM")
                .env("WARM_PORT", "0")
                .env("WARM_BIND", ip.to_string())
                .env("RUNTIME_URL", format!("http://{ip}:{runtime_port}/invoke"))
                .env("PORT", runtime_port.to_string())
                .env("WARM_IDLE_TIMEOUT_MS", "0")
                .env("WARM_MAX_INVOCATIONS", "0")
                .env("WARM_CONCURRENCY", spec.instance_concurrency.to_string())
                .env("WARM_RUNTIME_MODE", spec.runtime_mode.as_str())
                .env(
                    "WARM_STARTUP_TIMEOUT_MS",
                    self.settings.startup_timeout.as_millis().to_string(),
                )
                .env(
                    "WARM_STOP_GRACE_MS",
                    self.settings.stop_grace.as_millis().to_string(),
                )
                // Only the control plane's user may connect to the watchdog.
                // SAFETY: no arguments, cannot fail.
                .env("WARM_PEER_UID", unsafe { libc::geteuid() }.to_string());
            if spec.runtime_mode != RuntimeMode::Http {
                cmd.env_remove("RUNTIME_URL");
            }
            if self.settings.unix_socket {
                // Abstract names vanish with the process: nothing to clean up after a crash.
                // Ids are the function name (at most 63 bytes) and 13 more: well within 107.
                cmd.env("WARM_SOCKET", format!("@nanofaas/{}", req.instance_id));
                // Runtimes that support it (the Rust SDK) are reached over a socket too.
                cmd.env(
                    "WARM_RUNTIME_SOCKET",
                    format!("@nanofaas/{}/rt", req.instance_id),
                );
            } else {
                cmd.env_remove("WARM_SOCKET");
                cmd.env_remove("WARM_RUNTIME_SOCKET");
            }
            let kind = if stem { "prewarmed" } else { "warm" };
            let (entry, ready) = self.spawn(&req.instance_id, spec, kind, cmd).await?;
            let mut exited = entry.exited.clone();
            let limit = self.settings.startup_timeout + Duration::from_secs(1);
            let failure = tokio::select! {
                ready = ready => match ready {
                    Ok(Ready { port, socket }) => {
                        let base = format!("http://{ip}:{port}");
                        return Ok(Instance {
                            id: req.instance_id.clone(),
                            invoke_url: format!("{base}/invoke").parse().expect("valid URL"),
                            health_url: format!("{base}/health").parse().expect("valid URL"),
                            socket,
                            exited: entry.exited.clone(),
                        });
                    }
                    Err(_) => None,
                },
                _ = wait_exit(&mut exited) => None,
                _ = tokio::time::sleep(limit) => Some(format!("the instance was not ready within {} ms", limit.as_millis())),
            };
            // Not ready: make sure it is gone, then say why with what it printed.
            self.stop_entry(&req.instance_id, entry.clone()).await;
            let why = failure
                .or_else(|| entry.exited.borrow().clone())
                .unwrap_or_else(|| "the watchdog stopped".into());
            let permanent = matches!(
                exit_code_of(&why),
                Some(WATCHDOG_EXIT_SPAWN | WATCHDOG_EXIT_CONFIG)
            );
            Err(StartFailure {
                message: format!(
                    "instance of {:?} failed to start: {why}; its last output:\n{}",
                    spec.name,
                    entry.log.render("(the instance wrote nothing)")
                ),
                permanent,
            })
        }
    }

    /// Makes the generic instance `stem` one of `req.spec`'s: its limits on its cgroup, then
    /// `POST /specialize` (the function's variables and folder; the runtime imports its code).
    async fn specialize(
        &self,
        stem: Instance,
        kind: Kind,
        req: StartRequest,
    ) -> Result<Instance, PrewarmError> {
        let spec = &req.spec;
        let Some(entry) = self.children.lock().unwrap().get(&stem.id).cloned() else {
            return Err(PrewarmError::Fallback(
                "the prewarmed instance is gone".into(),
            ));
        };
        let stem_id = stem.id.clone();
        let fallback = |why: String| async move {
            self.stop(&stem_id).await;
            Err(PrewarmError::Fallback(why))
        };
        // Limits first: no code of the function runs without them.
        let mut limits = self.limits_of(spec);
        limits.max_processes = None; // set at the start, the same for every instance
        if limits.memory_bytes.is_some() || limits.cpu_millis.is_some() {
            let set = match entry.confined.lock().unwrap().cgroup.as_mut() {
                Some(cg) => cg.set_limits(&limits),
                None if self.settings.isolation.best_effort => Ok(()),
                None => Err("it has no cgroup".into()),
            };
            if let Err(e) = set {
                return fallback(format!("cannot apply the limits of {:?}: {e}", spec.name)).await;
            }
        }
        *entry.function.lock().unwrap() = spec.name.as_str().into();
        let mut env = spec.env.clone();
        env.insert(ENV_FUNCTION.into(), spec.name.clone());
        // Where a cold start of it would run: its folder, else the control plane's.
        let dir = spec.working_dir.clone().or_else(|| {
            std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string())
        });
        let body = serde_json::json!({
            "function": spec.name,
            "env": env,
            "workingDir": dir,
            "timeoutMs": self.settings.startup_timeout.as_millis() as u64,
        })
        .to_string();
        let answer = crate::prewarm::specialize(
            &self.client,
            &stem,
            body.as_bytes(),
            self.settings.startup_timeout,
            "instance",
        )
        .await;
        match answer {
            Specialized::Done => {
                *entry.kind.lock().unwrap() = "warm";
                Ok(stem)
            }
            Specialized::NotSpecializable(message) => {
                self.prewarm.disable(&kind, &message);
                fallback(message).await
            }
            Specialized::LoadFailed(message) => {
                self.stop(&stem.id).await;
                Err(PrewarmError::Failed(StartFailure {
                    message: format!(
                        "instance of {:?} failed to start: {}; its last output:\n{}",
                        spec.name,
                        message,
                        entry.log.render("(the instance wrote nothing)")
                    ),
                    permanent: false,
                }))
            }
            Specialized::Refused(why) => fallback(why).await,
        }
    }
}

impl Stems for ProcessProvider {
    fn start_stem(&self, kind: &Kind, id: String) -> BoxFuture<'_, Result<Instance, StartFailure>> {
        let spec: FunctionSpec = match serde_json::from_value(serde_json::json!({
            "name": "(prewarmed)",
            "command": kind.command,
            "instanceConcurrency": kind.concurrency,
            "timeoutMs": kind.timeout_ms,
        })) {
            Ok(s) => s,
            Err(e) => {
                return Box::pin(async move {
                    Err(StartFailure {
                        message: format!("bad kind: {e}"),
                        permanent: true,
                    })
                })
            }
        };
        Box::pin(self.start_warm(
            StartRequest {
                instance_id: id,
                spec: Arc::new(spec),
            },
            true,
        ))
    }

    fn stop_stem(&self, id: String) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.stop(&id).await })
    }
}

/// Resident memory of a process, in bytes (0 when gone).
fn rss_bytes(pid: u32) -> u64 {
    let pages = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: no arguments, cannot fail.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// The empty folder a prewarmed instance waits in, owned by its user.
fn stem_dir(id: &str, uid: Option<u32>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let d = std::env::temp_dir().join(format!("nanofaas-{id}"));
    std::fs::DirBuilder::new().mode(0o700).create(&d)?;
    if let Some(u) = uid {
        std::os::unix::fs::chown(&d, Some(u), Some(u))?;
    }
    Ok(d)
}

impl Provider for ProcessProvider {
    fn name(&self) -> &'static str {
        "process"
    }

    fn validate(&self, spec: &FunctionSpec) -> Result<(), ValidationError> {
        if matches!(spec.execution_mode, ExecutionMode::Pool) {
            return Ok(());
        }
        if spec.command.is_none() {
            return Err(ValidationError::new(
                "command",
                format!(
                    "the process provider runs a local command; this spec has {}",
                    if spec.image.is_some() {
                        "only an image (use the docker provider for images)"
                    } else {
                        "none"
                    }
                ),
            ));
        }
        if let Some(dir) = &spec.working_dir {
            if !Path::new(dir).is_dir() {
                return Err(ValidationError::new(
                    "workingDir",
                    format!("{dir:?} is not a folder on the control plane's machine"),
                ));
            }
        }
        if let Some((field, why)) = self.unenforceable(spec) {
            if self.settings.isolation.best_effort {
                tracing::warn!(function = %spec.name, field, reason = %why, "limit not enforced (provider.process.limits = best-effort)");
            } else {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "the process provider cannot enforce it on this host ({why}); run the control plane as root on a host with cgroups, remove the limit, or set provider.process.limits = \"best-effort\" to run it unenforced"
                    ),
                ));
            }
        }
        if let Some((field, why)) = self.access_problem(spec) {
            return Err(ValidationError::new(
                field,
                format!("{why}; make it readable by others, or set provider.process.user"),
            ));
        }
        let (cpus, memory) = super::shared::host_capacity();
        super::shared::check_resources(spec, cpus, memory, 0)
    }

    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<Instance, StartFailure>> {
        Box::pin(self.start_warm(req, false))
    }

    fn prewarm_register(&self, spec: &FunctionSpec) {
        if let Some(k) = Kind::of(spec) {
            self.prewarm.register(k);
        }
    }

    fn prewarm_unregister(&self, spec: &FunctionSpec) {
        if let Some(k) = Kind::of(spec) {
            self.prewarm.unregister(&k);
        }
    }

    fn start_prewarmed(
        &self,
        req: &StartRequest,
    ) -> Option<BoxFuture<'_, Result<Instance, PrewarmError>>> {
        let kind = Kind::of(&req.spec)?;
        let stem = self.prewarm.take(&kind)?;
        let req = req.clone();
        Some(Box::pin(
            async move { self.specialize(stem, kind, req).await },
        ))
    }

    fn prewarmed_for(&self, spec: &FunctionSpec) -> usize {
        Kind::of(spec).map_or(0, |k| self.prewarm.ready(&k))
    }

    fn prewarmed(&self) -> Vec<crate::prewarm::KindStatus> {
        let mut v = self.prewarm.status();
        let children = self.children.lock().unwrap();
        for k in &mut v {
            let mut sum = 0;
            for id in &k.ready {
                if let Some(e) = children.get(id) {
                    let rt = *e.runtime_pid.lock().unwrap();
                    sum += [Some(e.pid), rt]
                        .into_iter()
                        .flatten()
                        .map(rss_bytes)
                        .sum::<u64>();
                }
            }
            k.memory_bytes = Some(sum);
        }
        v
    }

    fn start_job(&self, req: JobRequest) -> BoxFuture<'_, Result<Job, StartFailure>> {
        Box::pin(async move {
            let spec = &req.spec;
            let ip = self.settings.bind;
            let mut cmd = self.base_command(&req.instance_id, spec)?;
            cmd.env("EXECUTION_MODE", spec.runtime_mode.as_str())
                .env("EXECUTION_ID", &req.execution_id)
                .env("TRACE_ID", &req.trace_id)
                .env("TRACEPARENT", &req.traceparent)
                .env("CALLBACK_URL", &req.callback_url)
                .env("CALLBACK_TOKEN", &req.callback_token)
                .env(
                    "INVOCATION_PAYLOAD",
                    String::from_utf8_lossy(&req.payload).as_ref(),
                )
                .env("TIMEOUT_MS", req.timeout.as_millis().max(1).to_string())
                .env("DISPATCH_ATTEMPT", req.attempt.to_string());
            if spec.runtime_mode == RuntimeMode::Http {
                let port = free_port(ip)?;
                cmd.env("RUNTIME_URL", format!("http://{ip}:{port}/invoke"))
                    .env("PORT", port.to_string());
            }
            if let Some(l) = self.logs.get() {
                l.job_instance(&req.instance_id, &req.execution_id);
            }
            let (entry, _ready) = self.spawn(&req.instance_id, spec, "job", cmd).await?;
            Ok(Job {
                id: req.instance_id.clone(),
                exited: entry.exited.clone(),
            })
        })
    }

    fn stop<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let entry = self.children.lock().unwrap().get(instance_id).cloned();
            match entry {
                Some(e) => self.stop_entry(instance_id, e).await,
                None => {
                    let id = instance_id.to_string();
                    let _ = tokio::task::spawn_blocking(move || kill_instance_processes(&id)).await;
                }
            }
        })
    }

    fn out_of_memory(&self, instance_id: &str) -> Option<String> {
        let live = self.children.lock().unwrap().get(instance_id).cloned();
        if let Some(e) = live {
            return e.oom();
        }
        self.shared
            .ended_oom
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(id, _)| id == instance_id)
            .map(|(_, m)| m.clone())
    }

    fn list(&self) -> Vec<InstanceInfo> {
        let mut v: Vec<InstanceInfo> = self
            .children
            .lock()
            .unwrap()
            .iter()
            .map(|(id, e)| InstanceInfo {
                id: id.clone(),
                function: e.function.lock().unwrap().to_string(),
                kind: *e.kind.lock().unwrap(),
                pid: Some(e.pid),
                runtime_pid: *e.runtime_pid.lock().unwrap(),
                container: None,
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn cleanup_orphans(&self) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let me = self.owner.clone();
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || {
                let mut instances = std::collections::BTreeSet::new();
                for (pid, inst, owner) in marked_processes() {
                    if owner != me && !identity_alive(&owner) {
                        kill(pid, libc::SIGKILL);
                        instances.insert(inst);
                    }
                }
                for i in &instances {
                    tracing::warn!(instance = %i, "stopped an instance left behind by a control plane that died");
                }
                let cgroups = shared.cgroups.remove_orphans(|folder| {
                    folder_identity(folder).is_some_and(|id| id == me || identity_alive(&id))
                });
                if cgroups > 0 {
                    tracing::info!(cgroups, "removed instance cgroups left behind by a control plane that died");
                }
                instances.len()
            })
            .await
            .unwrap_or(0)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // No more prewarmed starts; those waiting or starting are children like any other.
            let _ = self.prewarm.close();
            let all: Vec<(String, Arc<Entry>)> = self
                .children
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let stops = all
                .into_iter()
                .map(|(id, e)| async move { self.stop_entry(&id, e).await });
            join_all(stops).await;
        })
    }
}

/// The provider `provider.process.*` describes (the watchdog found next to this binary or on
/// PATH unless configured).
pub fn from_config(c: &crate::config::Config) -> Result<ProcessProvider, String> {
    let watchdog = if c.provider.process.watchdog.is_empty() {
        find_watchdog().ok_or_else(|| {
            "cannot find nanofaas-watchdog next to the nanofaas binary or on PATH (build it with `cargo build -p nanofaas-watchdog`, or set provider.process.watchdog)".to_string()
        })?
    } else {
        std::path::PathBuf::from(&c.provider.process.watchdog)
    };
    ProcessProvider::new(ProcessSettings {
        watchdog,
        bind: c
            .provider
            .process
            .bind
            .parse()
            .map_err(|e| format!("provider.process.bind: {e}"))?,
        startup_timeout: Duration::from_millis(c.provider.startup_timeout_ms),
        stop_grace: Duration::from_millis(c.provider.stop_grace_ms),
        log_lines_per_second: c.provider.log_lines_per_second,
        unix_socket: c.provider.process.unix_socket,
        isolation: sandbox::IsolationSettings::from_config(&c.provider.process)?,
        prewarm: c.provider.process.prewarm as usize,
        prewarm_backoff: Duration::from_millis(c.pool.start_backoff_ms),
        prewarm_backoff_max: Duration::from_millis(c.pool.start_backoff_max_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_ports_are_free_and_below_the_ephemeral_range() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32768);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..20 {
            let p = free_port(ip).unwrap();
            assert!(p >= 1024 && p < low, "{p} not below {low}");
            TcpListener::bind((ip, p)).expect("the port is free");
        }
    }

    #[test]
    fn fields_and_exit_codes() {
        assert_eq!(
            field("port=41 pid=7 runtime_pid=9", "runtime_pid"),
            Some("9")
        );
        assert_eq!(field("port=41 pid=7", "pid"), Some("7"));
        assert_eq!(field("port=41", "nope"), None);
        assert_eq!(exit_code_of("the watchdog exited with code 4"), Some(4));
        assert_eq!(exit_code_of("the watchdog was killed by signal 9"), None);
    }

    #[test]
    fn owner_folders_round_trip_and_oom_messages_name_the_limit() {
        assert_eq!(owner_folder("12:345"), "cp-12-345");
        assert_eq!(folder_identity("cp-12-345").as_deref(), Some("12:345"));
        assert_eq!(folder_identity("other"), None);
        let m = oom_message(Some(64 << 20), 1);
        assert!(m.contains("64 Mi") && m.contains("resources.memory"), "{m}");
    }
}
