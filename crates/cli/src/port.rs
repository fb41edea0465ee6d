//! The listen address, checked first: `nanofaas up` and `serve` bind it before any setup step or
//! any other start-up work, so that a busy port is reported in a moment, not after minutes of
//! setup. On "address in use" the error names the process that holds the port when this system
//! lets us see it (`/proc/net/tcp{,6}` gives the socket's inode and owner, `/proc/*/fd` the
//! process), and gives the same command line with a `--listen` that is free right now.

use crate::exit::{err, Exit};
use nanofaas_api::command::join;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Ports tried above a busy one for the suggestion, before asking the system for any free port.
const NEARBY: u16 = 20;

/// Binds `listen` as the control plane would (the listener is then handed to it). `command` is
/// the subcommand (`up`, `serve`) the hint repeats.
pub async fn bind(listen: &str, command: &str) -> anyhow::Result<TcpListener> {
    let fail = |detail: String| err(Exit::StartFailed, detail);
    let addr: SocketAddr = listen.parse().map_err(|_| {
        err(
            Exit::Usage,
            format!("listen {listen:?}: expected an address such as 127.0.0.1:8080"),
        )
    })?;
    let e = match TcpListener::bind(addr).await {
        Ok(l) => return Ok(l),
        Err(e) => e,
    };
    let mut msg = format!("cannot listen on {addr}: {e}");
    if e.kind() == std::io::ErrorKind::AddrInUse {
        match holder(addr) {
            Some(h) => msg.push_str(&format!("; the port is held by {h}")),
            None => msg.push_str("; another program listens there (this system did not say which)"),
        }
    }
    match free_near(addr) {
        Some(free) => msg.push_str(&format!(
            ". Stop it, or listen on a free address:\n  {}",
            rerun_with_listen(command, &free.to_string())
        )),
        None => msg.push_str(". Stop it, or choose another address with --listen"),
    }
    Err(fail(msg))
}

/// Who holds a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub uid: u32,
    /// The process, when its file descriptors are readable by this user.
    pub process: Option<(u32, String)>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.process {
            Some((pid, what)) => write!(f, "pid {pid} ({what})"),
            None => write!(
                f,
                "a process of user {} that this user cannot inspect (as that user or root: `ss -ltnp`)",
                user_name(self.uid)
            ),
        }
    }
}

/// The process listening on `addr`'s port on an address that conflicts with `addr`.
pub fn holder(addr: SocketAddr) -> Option<Holder> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            found.extend(listeners(&text, addr));
        }
    }
    let (inode, uid) = *found.first()?;
    Some(Holder {
        uid,
        process: process_of_socket(inode),
    })
}

/// `(inode, uid)` of the listening sockets of a `/proc/net/tcp{,6}` table that conflict with
/// `addr`: same port, and the same address or either one the wildcard.
pub fn listeners(table: &str, addr: SocketAddr) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue; // not LISTEN
        }
        let Some(local) = nanofaas_api::procnet::parse_addr(f[1]) else {
            continue;
        };
        let (ip, port) = (local.ip(), local.port());
        let conflicts = port == addr.port()
            && (ip == addr.ip()
                || ip.is_unspecified()
                || addr.ip().is_unspecified()
                || ip.to_canonical() == addr.ip().to_canonical());
        if let (true, Ok(uid), Ok(inode)) = (conflicts, f[7].parse(), f[9].parse()) {
            if inode != 0 {
                out.push((inode, uid));
            }
        }
    }
    out
}

/// The first process with `socket:[inode]` among its file descriptors, and its command line.
fn process_of_socket(inode: u64) -> Option<(u32, String)> {
    let want = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue; // another user's process, or gone
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == want.as_str()) {
                return Some((pid, command_line(pid)));
            }
        }
    }
    None
}

/// A process's command line, shortened for a message.
fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if s.is_empty() {
        s = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "?".into());
    }
    if s.chars().count() > 100 {
        s = s.chars().take(97).collect::<String>() + "...";
    }
    s
}

/// `uid` as a user name from /etc/passwd, else `uid N`.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .map(|n| format!("{n} (uid {uid})"))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// A free address on `addr`'s host: one of the next few ports, else one the system picks.
pub fn free_near(addr: SocketAddr) -> Option<SocketAddr> {
    let free = |a: SocketAddr| {
        std::net::TcpListener::bind(a)
            .and_then(|l| l.local_addr())
            .ok()
    };
    (1..=NEARBY)
        .filter_map(|d| addr.port().checked_add(d))
        .find_map(|p| free(SocketAddr::new(addr.ip(), p)))
        .or_else(|| free(SocketAddr::new(addr.ip(), 0)))
}

/// This process's command line with `--listen` set to `listen`, ready to paste.
fn rerun_with_listen(command: &str, listen: &str) -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut words = vec![crate::up::cli_command()];
    words.extend(
        with_listen(&args, command, listen)
            .iter()
            .map(|a| join(std::slice::from_ref(a))),
    );
    words.join(" ")
}

/// `args` with any `--listen X` / `--listen=X` replaced by `listen`, or `--listen listen`
/// added after the subcommand.
fn with_listen(args: &[String], command: &str, listen: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut replaced = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--listen" {
            it.next();
            out.extend(["--listen".to_string(), listen.to_string()]);
            replaced = true;
        } else if a.starts_with("--listen=") {
            out.extend(["--listen".to_string(), listen.to_string()]);
            replaced = true;
        } else {
            out.push(a.clone());
        }
    }
    if !replaced {
        let flag = ["--listen".to_string(), listen.to_string()];
        match out.iter().position(|a| a == command) {
            Some(i) => drop(out.splice(i + 1..i + 1, flag)),
            None => {
                out.insert(0, command.to_string());
                out.splice(1..1, flag);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_hint_sets_listen_once() {
        assert_eq!(
            with_listen(&s(&["up", "-f", "m.yaml"]), "up", "127.0.0.1:8081"),
            s(&["up", "--listen", "127.0.0.1:8081", "-f", "m.yaml"])
        );
        assert_eq!(
            with_listen(
                &s(&["-o", "json", "up", "--listen", "127.0.0.1:8080", "-f", "m"]),
                "up",
                "127.0.0.1:9"
            ),
            s(&["-o", "json", "up", "--listen", "127.0.0.1:9", "-f", "m"])
        );
        assert_eq!(
            with_listen(&s(&["serve", "--listen=0.0.0.0:80"]), "serve", "0.0.0.0:81"),
            s(&["serve", "--listen", "0.0.0.0:81"])
        );
        assert_eq!(with_listen(&[], "up", "a:1"), s(&["up", "--listen", "a:1"]));
    }

    #[test]
    fn proc_net_tcp_lines_are_decoded() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1\n   2: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(listeners(v4, at("127.0.0.1:8080")), vec![(4242, 1000)]);
        assert_eq!(listeners(v4, at("0.0.0.0:8080")), vec![(4242, 1000)]);
        assert_eq!(listeners(v4, at("127.0.0.2:8080")), vec![]);
        assert_eq!(
            listeners(v4, at("10.1.2.3:8081")),
            vec![(77, 0)],
            "the wildcard conflicts"
        );
        let v6 = "header\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 99 1\n";
        assert_eq!(listeners(v6, at("[::1]:8080")), vec![(99, 1000)]);
        assert_eq!(listeners(v6, at("127.0.0.1:8080")), vec![]);
        assert_eq!(listeners("garbage\nx y z\n", at("127.0.0.1:8080")), vec![]);
    }

    #[tokio::test]
    async fn a_busy_port_names_this_process_and_a_free_one() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = holder(addr).expect("this process's own listener is visible");
        let (pid, _) = h.process.expect("and its process");
        assert_eq!(pid, std::process::id());
        let e = bind(&addr.to_string(), "up").await.unwrap_err();
        assert_eq!(crate::exit::exit_of(&e), Exit::StartFailed);
        let m = e.to_string();
        assert!(m.contains(&format!("pid {pid}")), "{m}");
        assert!(m.contains(" up --listen 127.0.0.1:"), "{m}");
        let free = free_near(addr).unwrap();
        assert_ne!(free, addr);
        drop(l);
        assert!(bind(&addr.to_string(), "up").await.is_ok());
    }
}
