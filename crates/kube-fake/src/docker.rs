//! The container engine, driven through the `docker` command (no Engine API client: the CLI
//! is on every machine that has the engine, and a few process spawns per pod are cheap).
//!
//! Owns the translation of a pod's container spec into `docker run` arguments and the reading
//! of a container's state; it knows nothing of pod status (that is [`crate::kubelet`]).

use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// The label every container of this fake carries (value: the fake's instance id).
pub const LABEL_INSTANCE: &str = "dev.nanofaas.kube-fake";
/// The label naming the pod (`namespace/name`).
pub const LABEL_POD: &str = "dev.nanofaas.kube-fake.pod";
/// The label carrying the fake's process id, so a later fake can remove the containers of one
/// that was killed before it could.
pub const LABEL_PID: &str = "dev.nanofaas.kube-fake.pid";

/// How one container ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub code: i64,
    pub oom: bool,
    pub started_at: String,
    pub finished_at: String,
}

async fn docker(args: &[String], timeout: Duration) -> Result<String, String> {
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("cannot run docker: {e}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "docker {} did not answer within {timeout:?}",
                args.first().map(String::as_str).unwrap_or("")
            )
        })?
        .map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Whether the engine answers at all.
pub async fn available() -> Result<(), String> {
    docker(
        &[s("version"), s("--format"), s("{{.Server.Version}}")],
        Duration::from_secs(10),
    )
    .await
    .map(|_| ())
}

/// The image's configured user, or `Err` when the engine does not have the image (this
/// machine never pulls).
pub async fn image_user(image: &str) -> Result<String, String> {
    docker(
        &[
            s("image"),
            s("inspect"),
            s("--format"),
            s("{{.Config.User}}"),
            s(image),
        ],
        Duration::from_secs(30),
    )
    .await
}

/// The image id, for containerStatuses[].imageID.
pub async fn image_id(image: &str) -> String {
    docker(
        &[
            s("image"),
            s("inspect"),
            s("--format"),
            s("{{.Id}}"),
            s(image),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_default()
}

/// Parses a CPU quantity (`500m`, `2`, `0.5`) into cores.
pub fn cpu_cores(q: &str) -> Option<f64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok().map(|v| v / 1000.0),
        None => q.parse::<f64>().ok(),
    }
}

/// Parses a memory quantity (`128Mi`, `1G`, `1000`) into bytes.
pub fn bytes(q: &str) -> Option<u64> {
    const UNITS: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| (v * mult) as u64);
        }
    }
    q.parse::<f64>().ok().map(|v| v as u64)
}

/// What the kubelet needs to start one container.
pub struct RunSpec<'a> {
    pub instance: &'a str,
    pub container_name: String,
    pub pod: &'a Value,
    pub container: &'a Value,
    pub node: &'a str,
    pub host_ip: &'a str,
}

/// The `docker run` arguments for a pod's container: command/args as Kubernetes defines them
/// over ENTRYPOINT/CMD, env (values and the fieldRefs known before start), working dir,
/// limits and the security context.
pub fn run_args(r: &RunSpec<'_>) -> Vec<String> {
    let meta = |k: &str| {
        r.pod
            .pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let ns = meta("namespace");
    let name = meta("name");
    let mut a = vec![
        s("run"),
        s("-d"),
        s("--name"),
        r.container_name.clone(),
        s("--label"),
        format!("{LABEL_INSTANCE}={}", r.instance),
        s("--label"),
        format!("{LABEL_POD}={ns}/{name}"),
        s("--label"),
        format!("{LABEL_PID}={}", std::process::id()),
        s("--hostname"),
        name.chars().take(63).collect(),
        s("--network"),
        s("bridge"),
    ];
    let c = r.container;
    if let Some(env) = c.get("env").and_then(Value::as_array) {
        for e in env {
            let Some(k) = e.get("name").and_then(Value::as_str) else {
                continue;
            };
            let v = if let Some(v) = e.get("value").and_then(Value::as_str) {
                Some(v.to_string())
            } else if let Some(f) = e
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str)
            {
                match f {
                    "metadata.name" => Some(name.clone()),
                    "metadata.namespace" => Some(ns.clone()),
                    "metadata.uid" => Some(meta("uid")),
                    "spec.nodeName" => Some(r.node.to_string()),
                    "status.hostIP" => Some(r.host_ip.to_string()),
                    "spec.serviceAccountName" => Some(
                        r.pod
                            .pointer("/spec/serviceAccountName")
                            .and_then(Value::as_str)
                            .unwrap_or("default")
                            .to_string(),
                    ),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(v) = v {
                a.push(s("-e"));
                a.push(format!("{k}={v}"));
            }
        }
    }
    if let Some(w) = c.get("workingDir").and_then(Value::as_str) {
        a.push(s("-w"));
        a.push(s(w));
    }
    if let Some(lim) = c.pointer("/resources/limits") {
        if let Some(m) = lim.get("memory").and_then(Value::as_str).and_then(bytes) {
            a.push(s("--memory"));
            a.push(m.to_string());
        }
        if let Some(cpu) = lim.get("cpu").and_then(Value::as_str).and_then(cpu_cores) {
            a.push(s("--cpus"));
            a.push(format!("{cpu}"));
        }
    }
    // The container's security context over the pod's.
    let sc = |k: &str| {
        c.pointer(&format!("/securityContext/{k}"))
            .or_else(|| r.pod.pointer(&format!("/spec/securityContext/{k}")))
    };
    if let Some(u) = sc("runAsUser").and_then(Value::as_i64) {
        let user = match sc("runAsGroup").and_then(Value::as_i64) {
            Some(g) => format!("{u}:{g}"),
            None => u.to_string(),
        };
        a.push(s("--user"));
        a.push(user);
    }
    if c.pointer("/securityContext/readOnlyRootFilesystem")
        .and_then(Value::as_bool)
        == Some(true)
    {
        a.push(s("--read-only"));
    }
    if c.pointer("/securityContext/allowPrivilegeEscalation")
        .and_then(Value::as_bool)
        == Some(false)
    {
        a.push(s("--security-opt"));
        a.push(s("no-new-privileges"));
    }
    if c.pointer("/securityContext/privileged")
        .and_then(Value::as_bool)
        == Some(true)
    {
        a.push(s("--privileged"));
    }
    for (field, flag) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
        if let Some(caps) = c
            .pointer(&format!("/securityContext/capabilities/{field}"))
            .and_then(Value::as_array)
        {
            for cap in caps.iter().filter_map(Value::as_str) {
                a.push(s(flag));
                a.push(s(cap));
            }
        }
    }
    let strs = |k: &str| -> Option<Vec<String>> {
        c.get(k).and_then(Value::as_array).map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
    };
    let command = strs("command").unwrap_or_default();
    let args = strs("args").unwrap_or_default();
    if let Some(first) = command.first() {
        a.push(s("--entrypoint"));
        a.push(first.clone());
    }
    a.push(
        c.get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    );
    a.extend(command.into_iter().skip(1));
    a.extend(args);
    a
}

/// `docker run -d ...`: the container's id, or the engine's error (the container, created or
/// not, is removed then).
pub async fn run(r: &RunSpec<'_>) -> Result<String, String> {
    let args = run_args(r);
    match docker(&args, Duration::from_secs(60)).await {
        Ok(id) => Ok(id),
        Err(e) => {
            let _ = remove(&r.container_name).await;
            Err(e)
        }
    }
}

/// The container's IP on the default bridge.
pub async fn ip(id: &str) -> Option<String> {
    docker(
        &[
            s("inspect"),
            s("--format"),
            s("{{.NetworkSettings.IPAddress}}"),
            s(id),
        ],
        Duration::from_secs(30),
    )
    .await
    .ok()
    .filter(|ip| !ip.is_empty())
}

/// Waits until the container exits (`docker wait`), then reads how it ended.
pub async fn wait(id: &str) -> Exit {
    let _ = docker(&[s("wait"), s(id)], Duration::from_secs(365 * 86_400)).await;
    exit_of(id).await
}

/// How the (exited) container ended.
pub async fn exit_of(id: &str) -> Exit {
    let out = docker(
        &[
            s("inspect"),
            s("--format"),
            s("{{.State.ExitCode}} {{.State.OOMKilled}} {{.State.StartedAt}} {{.State.FinishedAt}}"),
            s(id),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_default();
    let mut it = out.split_whitespace();
    let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(137);
    let oom = it.next() == Some("true");
    // Second precision, as metav1.Time; never empty (an empty Time does not parse): an engine
    // that no longer knows the container gives "now".
    let trim = |t: Option<&str>| {
        t.filter(|t| !t.is_empty())
            .map(|t| {
                format!(
                    "{}Z",
                    t.split('.').next().unwrap_or(t).trim_end_matches('Z')
                )
            })
            .unwrap_or_else(crate::status::now_rfc3339)
    };
    Exit {
        code,
        oom,
        started_at: trim(it.next()),
        finished_at: trim(it.next()),
    }
}

/// `docker logs`: stdout and stderr merged in time order (by the engine's timestamps, which
/// are stripped unless `timestamps`), the last `tail` lines if given.
pub async fn logs(id: &str, tail: Option<u64>, timestamps: bool) -> Result<String, String> {
    let mut args = vec![s("logs"), s("--timestamps")];
    if let Some(n) = tail {
        args.push(s("--tail"));
        args.push(n.to_string());
    }
    args.push(s(id));
    let mut cmd = Command::new("docker");
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("cannot run docker: {e}"))?;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| "docker logs did not answer within 30 s".to_string())?
        .map_err(|e| format!("docker: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(String::from)
        .collect();
    // RFC 3339 with nanoseconds sorts as text.
    lines.sort_by(|a, b| a.split(' ').next().cmp(&b.split(' ').next()));
    if let Some(n) = tail {
        let n = n as usize;
        if lines.len() > n {
            lines.drain(..lines.len() - n);
        }
    }
    let mut text = String::new();
    for l in lines {
        let l = if timestamps {
            l.as_str()
        } else {
            l.split_once(' ').map_or("", |(_, rest)| rest)
        };
        text.push_str(l);
        text.push('\n');
    }
    Ok(text)
}

/// `docker logs --follow`: the container's output as it comes, one line per item (stdout and
/// stderr interleaved as they are read, each line with its `\n`; with `timestamps`, prefixed
/// by the RFC 3339 time as the kubelet does), until the container stops or `tx` is dropped
/// (the client went away: the `docker` process is killed). `tail`: start from the last N
/// lines (else from the start).
pub async fn follow_logs(
    id: &str,
    tail: Option<u64>,
    timestamps: bool,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut args = vec![s("logs"), s("--follow")];
    if timestamps {
        args.push(s("--timestamps"));
    }
    if let Some(n) = tail {
        args.push(s("--tail"));
        args.push(n.to_string());
    }
    args.push(s(id));
    let mut child = Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let line = tokio::select! {
            l = out.next_line(), if out_open => match l {
                Ok(Some(l)) => l,
                _ => { out_open = false; continue; }
            },
            l = err.next_line(), if err_open => match l {
                Ok(Some(l)) => l,
                _ => { err_open = false; continue; }
            },
            _ = tx.closed() => break,
        };
        if tx.send(bytes::Bytes::from(line + "\n")).await.is_err() {
            break;
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(())
}

/// `docker stop -t grace`: SIGTERM, SIGKILL when the grace ends.
pub async fn stop(id: &str, grace: Duration) {
    let secs = grace.as_secs().to_string();
    let _ = docker(
        &[s("stop"), s("-t"), secs, s(id)],
        grace + Duration::from_secs(30),
    )
    .await;
}

/// `docker rm -f` (kills it if running).
pub async fn remove(id: &str) -> Result<(), String> {
    docker(&[s("rm"), s("-f"), s(id)], Duration::from_secs(60))
        .await
        .map(|_| ())
}

/// The containers of this fake instance, and those of fakes whose process is gone.
async fn leftovers(instance: &str) -> Vec<String> {
    let Ok(out) = docker(
        &[
            s("ps"),
            s("-a"),
            s("--filter"),
            format!("label={LABEL_INSTANCE}"),
            s("--format"),
            format!(
                "{{{{.ID}}}} {{{{.Label \"{LABEL_INSTANCE}\"}}}} {{{{.Label \"{LABEL_PID}\"}}}}"
            ),
        ],
        Duration::from_secs(30),
    )
    .await
    else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for line in out.lines() {
        let mut it = line.split_whitespace();
        let (Some(id), inst, pid) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""))
        else {
            continue;
        };
        let pid_alive = pid.parse::<i32>().is_ok_and(|p| {
            p == std::process::id() as i32 || std::path::Path::new(&format!("/proc/{p}")).exists()
        });
        if inst == instance || !pid_alive {
            ids.push(id.to_string());
        }
    }
    ids
}

/// Removes every container of this fake instance, and those of fakes whose process is gone;
/// again (bounded) while the engine still lists some (a removal already under way elsewhere
/// makes `docker rm` return before the container is gone). Returns how many it found.
pub async fn remove_all(instance: &str) -> usize {
    let mut found = 0;
    for round in 0..20 {
        let ids = leftovers(instance).await;
        if ids.is_empty() {
            break;
        }
        if round == 0 {
            found = ids.len();
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args = vec![s("rm"), s("-f")];
        args.extend(ids);
        let _ = docker(&args, Duration::from_secs(120)).await;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(cpu_cores("500m"), Some(0.5));
        assert_eq!(cpu_cores("2"), Some(2.0));
        assert_eq!(bytes("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("x"), None);
    }

    #[test]
    fn command_and_args_map_onto_entrypoint_and_cmd() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {}});
        let c = json!({"name": "c", "image": "img:1", "command": ["/bin/w", "--warm"], "args": ["x"],
            "env": [{"name": "A", "value": "1"}, {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}},
            "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
        let a = run_args(&RunSpec {
            instance: "i",
            container_name: "n".into(),
            pod: &pod,
            container: &c,
            node: "fake-node-1",
            host_ip: "h",
        });
        let j = a.join(" ");
        assert!(j.contains("--entrypoint /bin/w img:1 --warm x"), "{j}");
        assert!(j.contains("-e A=1") && j.contains("-e N=p"), "{j}");
        assert!(
            j.contains("--memory 67108864") && j.contains("--cpus 0.25"),
            "{j}"
        );
        assert!(
            j.contains("--user 1000")
                && j.contains("--cap-drop ALL")
                && j.contains("no-new-privileges"),
            "{j}"
        );
        let only_args = json!({"name": "c", "image": "img:1", "args": ["y"]});
        let a = run_args(&RunSpec {
            instance: "i",
            container_name: "n".into(),
            pod: &pod,
            container: &only_args,
            node: "n",
            host_ip: "h",
        });
        assert!(a.join(" ").ends_with("bridge img:1 y"), "{a:?}");
    }
}
