//! Isolation of process instances, against the real `nanofaas serve` and watchdog binaries:
//! a clean environment (no control-plane secret reaches a function), reserved `env` names
//! refused, a function that tries to forge another execution's callback fails, instances run as
//! a user of their own, `resources.memory` is enforced and named (`OUT_OF_MEMORY`), and no other
//! user can call an instance's socket or port directly.
//!
//! Tests that need root (other users) or cgroups skip with a loud message where they cannot run.

use nanofaas_control_plane::auth::CallbackAuth;
use nanofaas_testkit::{http, serve_nanofaas_env, workspace_bin, Proc, Stream};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &str = "isolation-test-secret-4f1c";
const CLOUD_KEY: &str = "AKIA-isolation-test-cloud-key";

fn is_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A Python any user can run (the control plane's own may live in a private home).
fn system_python() -> Option<&'static str> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

struct Server {
    proc: Proc,
    base: String,
    state: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.proc.kill();
        std::fs::remove_dir_all(&self.state).ok();
    }
}

/// `nanofaas serve` with secrets in its environment, as an operator's shell would have them.
async fn serve(tag: &str, settings: &[&str]) -> Server {
    let state = std::env::temp_dir().join(format!("nanofaas-iso-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    let (proc, base) = serve_nanofaas_env(
        &state,
        &settings,
        &[
            ("NANOFAAS_CALLBACK_SECRET", SECRET),
            ("NANOFAAS_API_TOKEN", "operator-api-token"),
            ("ISOLATION_TEST_CLOUD_KEY", CLOUD_KEY),
        ],
    )
    .await;
    Server { proc, base, state }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> nanofaas_testkit::Response {
        http(
            "POST",
            &format!("{}{path}", self.base),
            &[],
            body.to_string(),
        )
        .await
        .unwrap()
    }
    async fn get(&self, path: &str) -> nanofaas_testkit::Response {
        http("GET", &format!("{}{path}", self.base), &[], "")
            .await
            .unwrap()
    }
    async fn register(&self, spec: Value) {
        let r = self.post("/v1/functions", spec.clone()).await;
        assert_eq!(
            r.status,
            201,
            "{spec}: {}\n{}",
            r.text(),
            self.proc.output()
        );
    }
    async fn instances(&self, name: &str) -> Vec<Value> {
        self.get(&format!("/v1/functions/{name}/instances"))
            .await
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn runtime() -> String {
    workspace_bin("nanofaas-test-runtime")
        .to_string_lossy()
        .into_owned()
}

fn uid_of(pid: u64) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a process of the victim function carries a callback token in its environment.
fn victim_token_in_proc() -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let has = |k: &[u8]| env.split(|b| *b == 0).any(|kv| kv.starts_with(k));
            has(b"NANOFAAS_FUNCTION=victim") && has(b"CALLBACK_TOKEN=")
        })
}

/// Reads its environment, then tries every way it has to complete the victim's execution:
/// tokens computed from any secret-looking value it can see, and tokens found in other
/// processes' environments.
const THIEF: &str = r#"
import hashlib, hmac, json, os, sys, urllib.request, urllib.error
req = json.loads(sys.stdin.read() or "{}")
inp = req.get("input") or {}
def token(secret, execution, attempt):
    key = hmac.new(b"nanofaas-callback-key", secret.encode(), hashlib.sha256).digest()
    mac = hmac.new(key, execution.encode() + b"\0" + attempt.to_bytes(4, "big"), hashlib.sha256)
    return "%d.%s" % (attempt, mac.hexdigest()[:32])
env = dict(os.environ)
found = []
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        with open("/proc/%s/environ" % pid, "rb") as f:
            for kv in f.read().split(b"\0"):
                if kv.startswith(b"CALLBACK_TOKEN="):
                    found.append(kv.split(b"=", 1)[1].decode())
    except OSError:
        pass
candidates = [v for v in env.values()] + [""]
tokens = [token(s, inp.get("victim", ""), 1) for s in candidates] + found
statuses = []
for t in tokens[:200]:
    url = "%s/v1/internal/executions/%s:complete" % (inp.get("base", ""), inp.get("victim", ""))
    body = json.dumps({"success": True, "output": "forged", "error": None}).encode()
    r = urllib.request.Request(url, data=body, method="POST",
        headers={"content-type": "application/json", "x-callback-token": t})
    try:
        statuses.append(urllib.request.urlopen(r, timeout=5).status)
    except urllib.error.HTTPError as e:
        statuses.append(e.code)
    except Exception as e:
        statuses.append(str(e))
print(json.dumps({"env": env, "uid": os.getuid(), "stolen": len(found),
                  "statuses": statuses, "probe": token("probe-secret", "x", 1)}))
"#;

#[tokio::test]
async fn functions_see_no_secret_cannot_forge_callbacks_and_reserved_env_is_refused() {
    let Some(python) = system_python() else {
        eprintln!("SKIPPED: no system python3 (needed by the thief function)");
        return;
    };
    let s = serve("env", &[]).await;

    // A spec naming a platform variable is refused, naming it.
    for (name, var) in [
        ("r1", "WARM_PORT"),
        ("r2", "NANOFAAS_CALLBACK_SECRET"),
        ("r3", "EXECUTION_MODE"),
    ] {
        let r = s
            .post(
                "/v1/functions",
                json!({"name": name, "command": runtime(), "env": {var: "x"}}),
            )
            .await;
        assert_eq!(r.status, 400, "{var}: {}", r.text());
        assert!(r.text().contains(&format!("env.{var}")), "{}", r.text());
    }

    // The victim: a JOB function whose async execution runs for a while.
    s.register(
        json!({"name": "victim", "command": runtime(), "executionMode": "JOB", "maxRetries": 1}),
    )
    .await;
    let r = s
        .post(
            "/v1/functions/victim:enqueue",
            json!({"input": {"sleepMs": 4000}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let victim = r.json()["executionId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = s.get(&format!("/v1/executions/{victim}")).await.json();
        // Running, and (seen as root) its watchdog holds a callback token in its environment.
        if e["status"] == "running" && (!is_root() || victim_token_in_proc()) {
            break;
        }
        assert!(Instant::now() < deadline, "the victim never ran: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The thief reads its environment and tries to complete the victim's execution.
    s.register(json!({
        "name": "thief", "command": [python, "-c", THIEF], "runtimeMode": "STDIO", "timeoutMs": 20000
    }))
    .await;
    let r = s
        .post(
            "/v1/functions/thief:invoke",
            json!({"input": {"victim": victim, "base": s.base}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json()["output"].clone();
    // The thief's token code is right: with the secret it would have succeeded.
    assert_eq!(
        out["probe"],
        CallbackAuth::from_secret("probe-secret").token("x", 1),
        "{out}"
    );
    let env = out["env"].as_object().unwrap();
    for (k, v) in env {
        let v = v.as_str().unwrap_or_default();
        assert!(
            !v.contains(SECRET) && !v.contains(CLOUD_KEY) && !v.contains("operator-api-token"),
            "{k} leaks a control-plane secret: {env:?}"
        );
    }
    for k in [
        "NANOFAAS_CALLBACK_SECRET",
        "NANOFAAS_API_TOKEN",
        "ISOLATION_TEST_CLOUD_KEY",
        "HOME",
    ] {
        assert!(!env.contains_key(k), "{k} reached the function: {env:?}");
    }
    assert!(
        env.contains_key("PATH"),
        "the allow-list passes PATH: {env:?}"
    );
    let statuses = out["statuses"].as_array().unwrap();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|st| st.as_u64() == Some(403)),
        "every forged callback is refused: {statuses:?}"
    );
    if is_root() {
        assert_ne!(out["uid"].as_u64(), Some(0), "instances do not run as root");
        assert_eq!(
            out["stolen"], 0,
            "a function read another instance's callback token from /proc: {out}"
        );
    } else {
        eprintln!(
            "NOTE: not root: instances run as the test's user; the /proc check is not meaningful"
        );
    }

    // The victim completes with its own output.
    let deadline = Instant::now() + Duration::from_secs(15);
    let done = loop {
        let e = s.get(&format!("/v1/executions/{victim}")).await.json();
        if e["status"] != "running" && e["status"] != "queued" {
            break e;
        }
        assert!(Instant::now() < deadline, "the victim never finished: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    assert_ne!(done["output"], json!("forged"), "{done}");
    assert_eq!(done["output"]["echo"]["sleepMs"], 4000, "{done}");
}

/// Whether a registration with a memory limit was refused because this host cannot enforce it
/// (then the test skips loudly; a failure when `NANOFAAS_REQUIRE_CGROUPS=1`).
fn memory_limits_unenforceable(r: &nanofaas_testkit::Response) -> bool {
    if r.status == 400 && r.text().contains("cannot enforce") {
        assert!(
            std::env::var("NANOFAAS_REQUIRE_CGROUPS").as_deref() != Ok("1"),
            "cgroups required but unavailable: {}",
            r.text()
        );
        eprintln!(
            "SKIPPED: this host cannot enforce memory limits for the process provider: {}",
            r.text()
        );
        return true;
    }
    false
}

#[tokio::test]
async fn a_function_over_its_memory_limit_ends_out_of_memory_quickly_and_is_replaced() {
    let s = serve("oom", &[]).await;
    let r = s
        .post(
            "/v1/functions",
            json!({"name": "hog", "command": runtime(), "resources": {"memory": "64Mi"}, "maxRetries": 3}),
        )
        .await;
    if memory_limits_unenforceable(&r) {
        return;
    }
    assert_eq!(r.status, 201, "{}", r.text());
    let warm = s
        .post("/v1/functions/hog:invoke", json!({"input": 1}))
        .await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    let first = s.instances("hog").await;
    assert_eq!(first.len(), 1);
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    let first_runtime = first[0]["runtimePid"].clone();
    assert!(first_runtime.is_u64(), "{first:?}");
    if is_root() {
        let pid = first[0]["runtimePid"].as_u64().unwrap();
        let uid = uid_of(pid).unwrap();
        assert!(uid >= 2_000_000_000, "the runtime runs as uid {uid}");
        let wd = first[0]["pid"].as_u64().unwrap();
        assert_eq!(uid_of(wd), Some(uid), "the watchdog runs as the same user");
    }

    let t = Instant::now();
    let r = s
        .post(
            "/v1/functions/hog:invoke",
            json!({"input": {"allocateMb": 300}}),
        )
        .await;
    let took = t.elapsed();
    eprintln!("OUT_OF_MEMORY call answered in {took:?} (300 MiB asked, 64 Mi limit)");
    assert_eq!(r.status, 500, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["code"], "OUT_OF_MEMORY", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("64 Mi"), "the message names the limit: {msg}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");

    // Tried once (a function failure), counted, and the next call runs on a new instance.
    let metrics = s.get("/metrics").await.text();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{function=\"hog\"}} ")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(
        value("nanofaas_function_out_of_memory_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        value("nanofaas_function_dispatch_total"),
        2.0,
        "one attempt for the OOM call"
    );
    let r = s
        .post("/v1/functions/hog:invoke", json!({"input": 2}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The process the kernel killed never serves again: either the pool replaced the instance,
    // or (the usual case: the runtime is the kernel's first choice, see the watchdog's
    // oom_score_adj) the instance's watchdog survived, said OUT_OF_MEMORY and started a new
    // runtime in the same instance and cgroup.
    let now = s.instances("hog").await;
    assert_eq!(now.len(), 1, "{now:?}");
    let same_instance = now[0]["id"] == first_id.as_str();
    if same_instance {
        assert_ne!(
            now[0]["runtimePid"], first_runtime,
            "the OOM-killed runtime was replaced inside its instance: {now:?}"
        );
    }
    // One cgroup per instance: the serving one holds the limit; a replaced one is removed.
    let log = s.proc.output();
    let memory_base = log
        .split("memory: ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no cgroup folder in the start-up log:\n{log}"));
    let new_id = now[0]["id"].as_str().unwrap();
    assert!(
        memory_base.join(new_id).is_dir(),
        "{}",
        memory_base.display()
    );
    let limit = std::fs::read_to_string(memory_base.join(new_id).join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(memory_base.join(new_id).join("memory.max")))
        .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    if !same_instance {
        let old = memory_base.join(&first_id);
        assert!(
            nanofaas_testkit::wait_until(Duration::from_secs(5), || !old.exists()).await,
            "the replaced instance's cgroup {} is still there",
            old.display()
        );
    }

    // Asynchronous: also named, and not retried as a platform failure beyond the policy.
    let r = s
        .post(
            "/v1/functions/hog:enqueue",
            json!({"input": {"allocateMb": 300}}),
        )
        .await;
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let e = s.get(&format!("/v1/executions/{id}")).await.json();
        if e["status"] == "error" || e["status"] == "success" {
            break e;
        }
        assert!(Instant::now() < deadline, "never finished: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["error"]["code"], "OUT_OF_MEMORY", "{done}");
}

/// Talks HTTP to `target` (`@abstract-name` or `host:port`) as user `uid`, prints what came back.
const CLIENT: &str = r#"
import socket, sys
target, = sys.argv[1:]
try:
    if target.startswith("@"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("\0" + target[1:])
    else:
        host, port = target.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    s.settimeout(5)
    body = b'{"input": 1}'
    s.sendall(b"POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Execution-Id: e1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            break
    print("ANSWER", data[:200])
except Exception as e:
    print("ERROR", e)
"#;

fn call_as(python: &str, uid: u32, target: &str) -> String {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(python);
    c.args(["-c", CLIENT, target])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    if uid != 0 {
        c.uid(uid).gid(uid);
    }
    let mut p = Proc::spawn(c).expect("start the client");
    assert!(
        p.wait_exit(Duration::from_secs(15)).is_some(),
        "the client hung: {}",
        p.output()
    );
    // The exit can be seen before the reader thread has taken the client's one line from the
    // pipe: wait for that line (or for the pipe's end) before reading what was captured.
    p.wait_line(Stream::Stdout, Duration::from_secs(5), |l| {
        l.starts_with("ANSWER") || l.starts_with("ERROR")
    });
    p.output()
}

#[tokio::test]
async fn another_user_cannot_call_an_instance_socket_or_port() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run a client as another user (nobody)");
        return;
    }
    let Some(python) = system_python() else {
        eprintln!("SKIPPED: no system python3 for the client");
        return;
    };
    for (tag, unix) in [("sock", true), ("tcp", false)] {
        let setting = format!("provider.process.unix_socket={unix}");
        let s = serve(tag, &[&setting]).await;
        s.register(json!({"name": "echo", "command": runtime()}))
            .await;
        let r = s
            .post("/v1/functions/echo:invoke", json!({"input": 1}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let inst = s.instances("echo").await;
        let endpoint = inst[0]["endpoint"].as_str().unwrap().to_string();
        let target = endpoint
            .strip_prefix("unix:")
            .or_else(|| endpoint.strip_prefix("http://"))
            .unwrap()
            .to_string();
        assert_eq!(target.starts_with('@'), unix, "{endpoint}");
        // The control plane's user gets an answer: the client works.
        let own = call_as(python, 0, &target);
        assert!(own.contains("ANSWER b'HTTP/1.1 200"), "{own}");
        // Another user (nobody), and the instance's own user, get nothing.
        let nobody = call_as(python, 65534, &target);
        assert!(
            !nobody.contains("HTTP/1.1"),
            "nobody was answered: {nobody}"
        );
        let wd = inst[0]["pid"].as_u64().unwrap();
        let instance_uid = uid_of(wd).unwrap();
        assert_ne!(instance_uid, 0);
        let itself = call_as(python, instance_uid, &target);
        assert!(
            !itself.contains("HTTP/1.1"),
            "the instance's own user was answered: {itself}"
        );
        // The control plane still reaches it.
        let r = s
            .post("/v1/functions/echo:invoke", json!({"input": 2}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test]
async fn a_job_over_its_memory_limit_ends_out_of_memory() {
    let s = serve("oomjob", &[]).await;
    let r = s
        .post(
            "/v1/functions",
            json!({"name": "hogjob", "command": runtime(), "executionMode": "JOB", "resources": {"memory": "64Mi"}}),
        )
        .await;
    if memory_limits_unenforceable(&r) {
        return;
    }
    assert_eq!(r.status, 201, "{}", r.text());
    let t = Instant::now();
    let r = s
        .post(
            "/v1/functions/hogjob:invoke",
            json!({"input": {"allocateMb": 300}}),
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "OUT_OF_MEMORY", "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let r = s
        .post("/v1/functions/hogjob:invoke", json!({"input": 1}))
        .await;
    assert_eq!(r.status, 200, "the next job runs: {}", r.text());
}

#[tokio::test]
async fn limits_that_cannot_be_enforced_are_refused_unless_best_effort() {
    // A cgroup parent that cannot be created stands for a host without cgroup access.
    let s = serve("nocg", &["provider.process.cgroup_parent=no/such/parent"]).await;
    let r = s
        .post(
            "/v1/functions",
            json!({"name": "limited", "command": runtime(), "resources": {"memory": "64Mi"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("resources.memory")
            && text.contains("cannot enforce")
            && text.contains("best-effort"),
        "{text}"
    );
    let r = s
        .post(
            "/v1/functions",
            json!({"name": "limited", "command": runtime(), "resources": {"cpu": "500m"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("resources.cpu"), "{}", r.text());
    // Without limits it runs.
    s.register(json!({"name": "free", "command": runtime()}))
        .await;
    let r = s
        .post("/v1/functions/free:invoke", json!({"input": 1}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    drop(s);

    let s = serve(
        "besteffort",
        &[
            "provider.process.cgroup_parent=no/such/parent",
            "provider.process.limits=best-effort",
        ],
    )
    .await;
    s.register(json!({"name": "limited", "command": runtime(), "resources": {"memory": "64Mi"}}))
        .await;
    let r = s
        .post("/v1/functions/limited:invoke", json!({"input": 1}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The log line is read by a capture thread: wait for it (bounded).
    let said = s
        .proc
        .wait_line_async(Stream::Stderr, Duration::from_secs(5), |l| {
            l.contains("limit not enforced")
        })
        .await;
    assert!(
        said.is_some(),
        "best effort says so in the log:\n{}",
        s.proc.output()
    );
}
