//! The real `nanofaas` binary against a live control plane (`nanofaas serve` on a free loopback
//! port, process provider, the watchdog and the scriptable test runtime): every command, every
//! documented exit code, and `-o json` output parsed back. Also `nanofaas up` from start to a
//! SIGINT that leaves no process behind.
//!
//! Needs the workspace's binaries built in the same profile (`cargo build --workspace --bins`,
//! which `cargo nextest run --workspace` and `scripts/test.sh` do).

use nanofaas_api::FunctionSpec;
use nanofaas_testkit::{pid_alive, workspace_bin, Proc, Stream};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NANOFAAS: &str = env!("CARGO_BIN_EXE_nanofaas");

/// How long one CLI command may take before the test fails (none should come close).
const CLI_LIMIT: Duration = Duration::from_secs(60);

fn bin(name: &str) -> String {
    workspace_bin(name).to_string_lossy().into_owned()
}

/// A fresh folder for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanofaas-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What one CLI run printed and how it ended.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    fn ok(self) -> Out {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    #[track_caller]
    fn fails(self, code: i32, stderr_has: &[&str]) -> Out {
        assert_eq!(self.code, code, "wrong exit code: {self:#?}");
        for s in stderr_has {
            assert!(self.stderr.contains(s), "stderr lacks {s:?}: {self:#?}");
        }
        self
    }
}

/// Runs `nanofaas ARGS` against `endpoint` (via NANOFAAS_ENDPOINT), with `stdin` as input.
fn run_cli(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(NANOFAAS);
    cmd.args(args)
        .env("NANOFAAS_ENDPOINT", endpoint)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn nanofaas");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLI_LIMIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nanofaas {args:?} did not finish within {CLI_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// `nanofaas serve` on a free port with its own state folder.
struct Server {
    proc: Proc,
    endpoint: String,
    dir: PathBuf,
}

impl Server {
    fn start(tag: &str) -> Server {
        let dir = temp_dir(tag);
        let mut cmd = Command::new(NANOFAAS);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--set")
            .arg(format!(
                "provider.process.watchdog={}",
                bin("nanofaas-watchdog")
            ))
            .args([
                "--set",
                "shutdown_grace_ms=2000",
                "--set",
                "provider.stop_grace_ms=1000",
            ]);
        let proc = Proc::spawn(cmd).expect("spawn nanofaas serve");
        let line = proc
            .wait_line(Stream::Stdout, Duration::from_secs(20), |l| {
                l.starts_with("nanofaas listening on ")
            })
            .unwrap_or_else(|| panic!("serve did not start:\n{}", proc.output()));
        let endpoint = line["nanofaas listening on ".len()..].to_string();
        Server {
            proc,
            endpoint,
            dir,
        }
    }

    fn cli(&self, args: &[&str]) -> Out {
        run_cli(&self.endpoint, args, None)
    }

    fn cli_in(&self, args: &[&str], stdin: &str) -> Out {
        run_cli(&self.endpoint, args, Some(stdin))
    }

    /// Writes a manifest into this server's folder and returns its path.
    fn manifest(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Deploys functions running the test runtime, with extra YAML lines for each.
    fn deploy(&self, functions: &[(&str, &str)]) {
        let mut text = String::from("functions:\n");
        for (name, extra) in functions {
            text.push_str(&format!(
                "  - name: {name}\n    command: {}\n",
                bin("nanofaas-test-runtime")
            ));
            for l in extra.lines() {
                text.push_str(&format!("    {l}\n"));
            }
        }
        let m = self.manifest("deploy.yaml", &text);
        self.cli(&["fn", "apply", "-f", &m]).ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn instance_pids(v: &Value) -> Vec<u32> {
    let mut pids = Vec::new();
    for i in v.as_array().expect("instances are a list") {
        for k in ["pid", "runtimePid"] {
            if let Some(p) = i[k].as_u64() {
                pids.push(p as u32);
            }
        }
    }
    pids
}

fn wait_all_dead(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if pids.iter().all(|p| !pid_alive(*p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn fn_apply_list_get_instances_delete() {
    let s = Server::start("fns");
    let runtime = bin("nanofaas-test-runtime");
    std::fs::create_dir_all(s.dir.join("work")).unwrap();
    let m = s.manifest(
        "m.yaml",
        &format!(
            "functions:\n  - name: echo\n    command: {runtime}\n    workingDir: work\n    env: {{ GREETING: \"${{CLI_TEST_GREETING:-hi}}\", WORKERS: 2 }}\n  - name: second\n    command: [{runtime}]\n    timeoutMs: 5000\n"
        ),
    );
    let out = s.cli(&["fn", "apply", "-f", &m]).ok();
    assert!(out.stdout.contains("echo      created"), "{out:#?}");
    assert!(out.stdout.contains("second    created"), "{out:#?}");
    // Applying again changes nothing (and keeps warm instances).
    let again = s.cli(&["fn", "apply", "-f", &m, "-o", "json"]).ok().json();
    assert_eq!(
        again,
        json!([{"name": "echo", "action": "unchanged"}, {"name": "second", "action": "unchanged"}])
    );
    // A changed spec is updated in place.
    std::fs::write(
        &m,
        std::fs::read_to_string(&m).unwrap().replace("5000", "6000"),
    )
    .unwrap();
    let changed = s.cli(&["fn", "apply", "-f", &m, "-o", "json"]).ok().json();
    assert_eq!(changed[1], json!({"name": "second", "action": "updated"}));

    let list = s.cli(&["fn", "list", "-o", "json"]).ok().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "second"]);
    let table = s.cli(&["fn", "list"]).ok().stdout;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("second  DEPLOYMENT  HTTP     0/4      4            6.0 s"),
        "{table}"
    );

    let spec = s.cli(&["fn", "get", "echo", "-o", "json"]).ok().json();
    let real_dir = std::fs::canonicalize(&s.dir).unwrap();
    assert_eq!(
        spec["workingDir"],
        json!(real_dir.join("work").to_str().unwrap())
    );
    assert_eq!(spec["env"], json!({"GREETING": "hi", "WORKERS": "2"}));
    // The table form is YAML that reads back as the same spec.
    let yaml = s.cli(&["fn", "get", "echo"]).ok().stdout;
    assert!(yaml.starts_with("name: echo\n"), "{yaml}");
    let back: FunctionSpec = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), spec);

    // No instance before the first call; one after, whose processes are alive.
    assert_eq!(
        s.cli(&["fn", "instances", "echo", "-o", "json"])
            .ok()
            .json(),
        json!([])
    );
    let none = s.cli(&["fn", "instances", "echo"]).ok();
    assert!(none.stderr.contains("no instances"), "{none:#?}");
    s.cli(&["invoke", "echo"]).ok();
    let inst = s
        .cli(&["fn", "instances", "echo", "-o", "json"])
        .ok()
        .json();
    assert_eq!(inst.as_array().unwrap().len(), 1, "{inst}");
    assert_eq!(inst[0]["state"], "ready");
    assert_eq!(inst[0]["invocations"], 1);
    let pids = instance_pids(&inst);
    assert_eq!(pids.len(), 2, "watchdog and runtime: {inst}");
    assert!(pids.iter().all(|p| pid_alive(*p)));
    let table = s.cli(&["fn", "instances", "echo"]).ok().stdout;
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&pids[0].to_string()), "{table}");

    let del = s.cli(&["fn", "delete", "echo", "-o", "json"]).ok().json();
    assert_eq!(del, json!({"name": "echo", "deleted": true}));
    assert!(
        wait_all_dead(&pids, Duration::from_secs(10)),
        "delete left {pids:?} running"
    );
    s.cli(&["fn", "get", "echo"])
        .fails(5, &["\"echo\" does not exist", "fn list"]);
    s.cli(&["fn", "delete", "echo"])
        .fails(5, &["does not exist"]);
    s.cli(&["fn", "instances", "echo"])
        .fails(5, &["does not exist"]);
    let table_del = s.cli(&["fn", "delete", "second"]).ok();
    assert!(table_del.stderr.contains("deleted"), "{table_del:#?}");
    assert_eq!(s.cli(&["fn", "list", "-o", "json"]).ok().json(), json!([]));
}

#[test]
fn invoke_data_forms_headers_cold_and_warm() {
    let s = Server::start("invoke");
    s.deploy(&[("echo", "")]);
    let first = s
        .cli(&["invoke", "echo", "-d", r#"{"n": 1}"#, "-o", "json"])
        .ok()
        .json();
    assert_eq!(first["status"], "success");
    assert_eq!(first["coldStart"], true);
    assert_eq!(first["output"]["echo"], json!({"n": 1}));
    let id = first["executionId"].as_str().unwrap();
    assert_eq!(first["output"]["executionId"], id);
    let second = s
        .cli(&["invoke", "echo", "-d", "2", "-o", "json"])
        .ok()
        .json();
    assert_eq!(second["coldStart"], false);
    assert_eq!(
        second["output"]["pid"], first["output"]["pid"],
        "the same warm runtime"
    );

    // Table form: the output alone on stdout, a summary on stderr.
    let out = s.cli(&["invoke", "echo", "-d", r#""text""#]).ok();
    let output: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(output["echo"], "text");
    assert!(
        out.stderr.contains("warm") && out.stderr.contains("execution"),
        "{out:#?}"
    );

    // -d @file, -d @- and no -d at all.
    let file = s.dir.join("input.json");
    std::fs::write(&file, r#"{"from": "file"}"#).unwrap();
    let at_file = format!("@{}", file.display());
    let v = s
        .cli(&["invoke", "echo", "-d", &at_file, "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["output"]["echo"], json!({"from": "file"}));
    let v = s
        .cli_in(
            &["invoke", "echo", "-d", "@-", "-o", "json"],
            r#"[1, "stdin"]"#,
        )
        .ok()
        .json();
    assert_eq!(v["output"]["echo"], json!([1, "stdin"]));
    let v = s.cli(&["invoke", "echo", "-o", "json"]).ok().json();
    assert_eq!(v["output"]["echo"], Value::Null);

    // --raw: -d is the whole request, metadata included.
    let v = s
        .cli(&[
            "invoke",
            "echo",
            "--raw",
            "-d",
            r#"{"input": {"r": 1}, "metadata": {"k": "v"}}"#,
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(v["output"]["echo"], json!({"r": 1}));
    s.cli(&["invoke", "echo", "--raw", "-d", r#"{"inptu": 1}"#])
        .fails(6, &["invalid", "inptu"]);

    // --trace-id reaches the function; --idempotency-key returns the same execution.
    let v = s
        .cli(&[
            "invoke",
            "echo",
            "--trace-id",
            "trace-from-cli",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(v["traceId"], "trace-from-cli");
    assert_eq!(v["output"]["traceId"], "trace-from-cli");
    let a = s
        .cli(&[
            "invoke",
            "echo",
            "-d",
            "1",
            "--idempotency-key",
            "k1",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let b = s
        .cli(&[
            "invoke",
            "echo",
            "-d",
            "1",
            "--idempotency-key",
            "k1",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(a["executionId"], b["executionId"]);
    assert_eq!(a["output"]["count"], b["output"]["count"], "ran once");
    // Conflict: the same key with another request.
    s.cli(&["invoke", "echo", "-d", "2", "--idempotency-key", "k1"])
        .fails(10, &["k1", "new --idempotency-key"]);

    // Function error: code and message printed; -o json still prints the execution.
    let out = s
        .cli(&["invoke", "echo", "-d", r#"{"fail": "boom"}"#, "-o", "json"])
        .fails(7, &["HANDLER_ERROR", "boom", "execution"]);
    let v = out.json();
    assert_eq!(v["status"], "error");
    assert_eq!(v["error"]["code"], "HANDLER_ERROR");
    s.cli(&["invoke", "echo", "-d", r#"{"fail": "boom"}"#])
        .fails(7, &["function \"echo\" failed: HANDLER_ERROR: boom"]);

    // Timeout (408).
    let out = s
        .cli(&[
            "invoke",
            "echo",
            "-d",
            r#"{"sleepMs": 3000}"#,
            "--timeout-ms",
            "300",
            "-o",
            "json",
        ])
        .fails(8, &["TIMEOUT", "timeoutMs"]);
    assert_eq!(out.json()["status"], "timeout");

    // Usage errors.
    s.cli(&["invoke", "echo", "-d", "not json"])
        .fails(2, &["not valid JSON", "quote it"]);
    s.cli(&["invoke", "echo", "-d", "@/nonexistent/input.json"])
        .fails(2, &["cannot read the file"]);
    s.cli(&["invoke", "echo", "--timeout-ms", "0"])
        .fails(2, &["more than 0"]);
    s.cli(&["invoke", "bad/name"]).fails(2, &["function name"]);
    s.cli(&["invoke", "nope"])
        .fails(5, &["\"nope\" does not exist"]);
    s.cli(&["enqueue", "nope"])
        .fails(5, &["\"nope\" does not exist"]);
}

#[test]
fn enqueue_then_exec_get_and_watch() {
    let s = Server::start("exec");
    s.deploy(&[("echo", "")]);
    // Table form prints the id alone on stdout.
    let out = s
        .cli(&["enqueue", "echo", "-d", r#"{"sleepMs": 400}"#])
        .ok();
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 36, "{out:#?}");
    assert!(
        out.stderr.contains(&format!("exec get {id} --watch")),
        "{out:#?}"
    );
    let now = s.cli(&["exec", "get", &id, "-o", "json"]).ok().json();
    assert_eq!(now["executionId"], id.as_str());
    assert!(
        ["queued", "running"].contains(&now["status"].as_str().unwrap()),
        "{now}"
    );
    let done = s
        .cli(&["exec", "get", &id, "--watch", "-o", "json"])
        .ok()
        .json();
    assert_eq!(done["status"], "success");
    assert_eq!(done["mode"], "async");
    assert_eq!(done["output"]["echo"], json!({"sleepMs": 400}));
    let table = s.cli(&["exec", "get", &id]).ok().stdout;
    assert!(table.contains("status     success"), "{table}");
    assert!(table.contains("output"), "{table}");

    // JSON enqueue, then a failing execution: `exec get` exits 7 and names the error.
    let v = s
        .cli(&[
            "enqueue",
            "echo",
            "-d",
            r#"{"fail": "later"}"#,
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(v["status"], "queued");
    let failing = v["executionId"].as_str().unwrap().to_string();
    let out = s
        .cli(&["exec", "get", &failing, "--watch", "-o", "json"])
        .fails(7, &["HANDLER_ERROR", "later"]);
    assert_eq!(out.json()["status"], "error");

    // --watch gives up after --timeout with exit code 8.
    let slow = s
        .cli(&["enqueue", "echo", "-d", r#"{"sleepMs": 5000}"#])
        .ok()
        .stdout
        .trim()
        .to_string();
    let started = Instant::now();
    s.cli(&["exec", "get", &slow, "--watch", "--timeout", "1"])
        .fails(8, &["still", "--timeout"]);
    assert!(started.elapsed() < Duration::from_secs(4));

    s.cli(&["exec", "get", "00000000-0000-4000-8000-000000000000"])
        .fails(5, &["does not exist or has expired"]);
    s.cli(&["exec", "get", "../etc"])
        .fails(2, &["not an execution id"]);
}

#[test]
fn backpressure_exits_9_with_retry_after() {
    let s = Server::start("busy");
    s.deploy(&[("one", "concurrency: 1\nqueueSize: 0\nmaxInstances: 1")]);
    s.cli(&["invoke", "one"]).ok(); // warm it up
    let endpoint = s.endpoint.clone();
    let busy = std::thread::spawn(move || {
        run_cli(
            &endpoint,
            &["invoke", "one", "-d", r#"{"sleepMs": 2000}"#],
            None,
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inst = s.cli(&["fn", "instances", "one", "-o", "json"]).ok().json();
        if inst[0]["inflight"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow call never started: {inst}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s.cli(&["invoke", "one"])
        .fails(9, &["backpressure", "depth", "retry after"]);
    s.cli(&["enqueue", "one"]).fails(9, &["retry after"]);
    busy.join().unwrap().ok();
}

#[test]
fn manifest_and_connection_errors() {
    let s = Server::start("errors");
    let bad = s.manifest(
        "bad.yaml",
        "functions:\n  - name: ok\n    command: x\n  - name: broken\n    command: x\n    timeoutMs: 0\n",
    );
    s.cli(&["fn", "apply", "-f", &bad]).fails(
        6,
        &[
            "bad.yaml:6",
            "function \"broken\"",
            "field \"timeoutMs\"",
            "between 1 and",
        ],
    );
    let unknown = s.manifest(
        "unknown.yaml",
        "functions:\n  - name: f\n    command: x\n    timeuot: 5\n",
    );
    s.cli(&["fn", "apply", "-f", &unknown]).fails(
        6,
        &[
            "unknown.yaml:4",
            "function \"f\"",
            "unknown field `timeuot`",
        ],
    );
    let unset = s.manifest(
        "unset.yaml",
        "functions:\n  - name: f\n    command: ${CLI_TEST_SURELY_UNSET_VAR}/run\n",
    );
    s.cli(&["fn", "apply", "-f", &unset]).fails(
        6,
        &[
            "unset.yaml:3",
            "field \"command\"",
            "CLI_TEST_SURELY_UNSET_VAR is not set",
        ],
    );
    s.cli(&["fn", "apply", "-f", "/nonexistent/manifest.yaml"])
        .fails(2, &["cannot read manifest"]);
    // Nothing was deployed by the failed applies.
    assert_eq!(s.cli(&["fn", "list", "-o", "json"]).ok().json(), json!([]));

    // The server refuses what only it can check (the process provider runs commands, not
    // images): exit 6, naming the function and the field.
    let image = s.manifest(
        "image.yaml",
        "functions:\n  - name: p\n    image: some/image\n",
    );
    s.cli(&["fn", "apply", "-f", &image])
        .fails(6, &["function \"p\"", "command", "only an image"]);

    // Setup steps: --setup runs them in the manifest's folder; a failing one exits 11.
    let with_setup = s.manifest(
        "setup.yaml",
        &format!(
            "setup:\n  - name: make a marker\n    run: echo ran > marker\nfunctions:\n  - name: s\n    command: {}\n",
            bin("nanofaas-test-runtime")
        ),
    );
    s.cli(&["fn", "apply", "-f", &with_setup, "--setup"]).ok();
    assert_eq!(
        std::fs::read_to_string(s.dir.join("marker")).unwrap(),
        "ran\n"
    );
    let failing = s.manifest(
        "failing.yaml",
        "setup:\n  - name: broken step\n    run: echo step-output; exit 3\nfunctions: []\n",
    );
    let out = s
        .cli(&["fn", "apply", "-f", &failing, "--setup"])
        .fails(11, &["broken step", "exit status 3", "step-output"]);
    assert!(out.stdout.is_empty(), "{out:#?}");
    // Without --setup, steps are only mentioned.
    let out = s.cli(&["fn", "apply", "-f", &failing]).ok();
    assert!(out.stderr.contains("--setup"), "{out:#?}");

    // --wait: minInstances ready before apply returns.
    let warm = s.manifest(
        "warm.yaml",
        &format!(
            "functions:\n  - name: w\n    command: {}\n    minInstances: 1\n",
            bin("nanofaas-test-runtime")
        ),
    );
    s.cli(&["fn", "apply", "-f", &warm, "--wait", "30"]).ok();
    let inst = s.cli(&["fn", "instances", "w", "-o", "json"]).ok().json();
    assert_eq!(inst[0]["state"], "ready", "{inst}");

    // Connection refused: exit 4 with what to do.
    let port = nanofaas_testkit::free_port();
    let out = run_cli(&format!("http://127.0.0.1:{port}"), &["fn", "list"], None)
        .fails(4, &["connection refused", "nanofaas serve", "--endpoint"]);
    assert!(out.stdout.is_empty());
    let out = Command::new(NANOFAAS)
        .args(["--endpoint", &format!("127.0.0.1:{port}"), "invoke", "f"])
        .env_remove("NANOFAAS_ENDPOINT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    run_cli("https://127.0.0.1:1", &["fn", "list"], None).fails(2, &["https is not supported"]);
    run_cli(&s.endpoint, &["fn", "nope"], None).fails(2, &[]);
}

#[test]
fn a_second_server_on_a_used_address_exits_3() {
    let s = Server::start("busyport");
    let addr = s.endpoint.trim_start_matches("http://").to_string();
    let out = run_cli(
        &s.endpoint,
        &[
            "serve",
            "--listen",
            &addr,
            "--state-dir",
            "",
            "--log-level",
            "error",
        ],
        None,
    );
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(out.stderr.contains("cannot listen"), "{out:#?}");
    assert!(out.stderr.contains("--listen"), "{out:#?}");
    let out = run_cli(
        &s.endpoint,
        &[
            "up",
            "--listen",
            &addr,
            "--state-dir",
            "",
            "-f",
            "/dev/null",
        ],
        None,
    );
    assert_eq!(out.code, 6, "an empty manifest is refused first: {out:#?}");
    let m = s.manifest("none.yaml", "functions: []\n");
    let out = run_cli(
        &s.endpoint,
        &["up", "--listen", &addr, "--state-dir", "", "-f", &m],
        None,
    );
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(out.stderr.contains("cannot listen"), "{out:#?}");
    let out = run_cli(&s.endpoint, &["serve", "--set", "nope=1"], None);
    assert_eq!(out.code, 2, "{out:#?}");
}

/// Holds 127.0.0.1:8080 (the default address) for a test when it is free; when another program
/// holds it, the port is busy all the same and the test runs unchanged (only the holder's name
/// cannot be checked).
fn occupy_default_port() -> Option<std::net::TcpListener> {
    match std::net::TcpListener::bind("127.0.0.1:8080") {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!(
                "127.0.0.1:8080 is held by another program ({e}): the test uses it busy as it is"
            );
            None
        }
    }
}

/// The `--listen ADDR` of the command an error message ends with (the holder's own command
/// line, quoted before it, may have one too).
fn suggested_listen(stderr: &str) -> String {
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    let at = last
        .find("--listen ")
        .unwrap_or_else(|| panic!("no --listen hint on the last line: {stderr}"));
    last[at + "--listen ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_busy_default_port_stops_up_and_serve_at_once_with_a_listen_hint() {
    let dir = temp_dir("busydefault");
    std::fs::write(
        dir.join("m.yaml"),
        "setup:\n  - name: must not run\n    run: touch setup-ran\nfunctions: []\n",
    )
    .unwrap();
    let held = occupy_default_port();
    for (args, command) in [
        (vec!["up", "-f", "m.yaml", "--state-dir", ""], "up"),
        (vec!["serve", "--state-dir", ""], "serve"),
    ] {
        let mut cmd = Command::new(NANOFAAS);
        cmd.current_dir(&dir).args(&args);
        let stderr = exits_3_within_2s(cmd, command);
        assert!(
            !dir.join("setup-ran").exists(),
            "a setup step ran before the port check"
        );
        assert!(
            stderr.contains("cannot listen on 127.0.0.1:8080"),
            "{stderr}"
        );
        if held.is_some() {
            assert!(
                stderr.contains(&format!("held by pid {}", std::process::id())),
                "the holder (this test) is named: {stderr}"
            );
        }
        // The printed command is the same one with a free address.
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.contains(&format!(" {command} --listen 127.0.0.1:")),
            "{stderr}"
        );
        let listen = suggested_listen(&stderr);
        assert_ne!(listen, "127.0.0.1:8080");
        std::net::TcpListener::bind(&listen)
            .unwrap_or_else(|e| panic!("the suggested {listen} is not free: {e}"));
        if command == "up" {
            assert!(
                last.ends_with("-f m.yaml --state-dir ''"),
                "the user's options are kept: {stderr}"
            );
        }
    }
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `cmd` (no stdin, no `NANOFAAS_*` variable of this test's environment) and checks that
/// it exits with code 3 within 2 s; returns its stderr.
fn exits_3_within_2s(mut cmd: Command, what: &str) -> String {
    cmd.stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("NANOFAAS_") {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
    assert!(
        took < Duration::from_secs(2),
        "{what} took {took:?}: {stderr}"
    );
    stderr
}

/// `scripts/up.sh` probes the address before it compiles anything: here with a `cargo` that
/// records being called, which must not be.
#[test]
fn up_sh_reports_a_busy_port_before_compiling() {
    let dir = temp_dir("upsh");
    let fake = dir.join("bin");
    std::fs::create_dir_all(&fake).unwrap();
    let marker = dir.join("cargo-ran");
    let cargo = fake.join("cargo");
    std::fs::write(
        &cargo,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let held = occupy_default_port();
    for args in [vec![], vec!["--listen", busy_addr.as_str(), "-f", "x.yaml"]] {
        let want = if args.is_empty() {
            "127.0.0.1:8080".to_string()
        } else {
            busy_addr.clone()
        };
        let mut cmd = Command::new("bash");
        cmd.arg(repo.join("scripts/up.sh"))
            .args(&args)
            .env("PATH", &path);
        let stderr = exits_3_within_2s(cmd, "up.sh");
        assert!(
            !marker.exists(),
            "up.sh ran cargo before checking the port: {stderr}"
        );
        assert!(stderr.contains(&format!("{want} is in use")), "{stderr}");
        if !args.is_empty() || held.is_some() {
            assert!(
                stderr.contains(&format!("pid {}", std::process::id())),
                "the holder (this test) is named: {stderr}"
            );
        }
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.trim_start()
                .starts_with("./scripts/up.sh --listen 127.0.0.1:"),
            "{stderr}"
        );
        let listen = suggested_listen(&stderr);
        assert_ne!(listen, want);
        std::net::TcpListener::bind(&listen)
            .unwrap_or_else(|e| panic!("the suggested {listen} is not free: {e}"));
        if !args.is_empty() {
            assert!(
                last.ends_with(&format!("--listen {listen} -f x.yaml")),
                "{stderr}"
            );
        }
    }
    drop((busy, held));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn up_sets_up_deploys_answers_and_stops_without_leftovers() {
    let dir = temp_dir("up");
    let runtime = bin("nanofaas-test-runtime");
    let manifest = dir.join("manifest.yaml");
    std::fs::write(
        &manifest,
        format!(
            "setup:\n  - name: prepare\n    run: sleep 0.2; echo prepared > prepared\nfunctions:\n  - name: hello\n    command: {runtime}\n    minInstances: 1\n  - name: other\n    command: {runtime}\nexample:\n  function: hello\n  input: {{ name: world }}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(NANOFAAS);
    cmd.current_dir(&dir)
        .args([
            "up",
            "--manifest",
            "manifest.yaml",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--set")
        .arg(format!(
            "provider.process.watchdog={}",
            bin("nanofaas-watchdog")
        ))
        .args([
            "--set",
            "provider.stop_grace_ms=1000",
            "--set",
            "shutdown_grace_ms=2000",
        ]);
    let mut up = Proc::spawn(cmd).expect("spawn nanofaas up");
    let ready = up.wait_line(Stream::Stdout, Duration::from_secs(30), |l| {
        l.starts_with("Press Ctrl-C")
    });
    assert!(ready.is_some(), "up never got ready:\n{}", up.output());
    let stdout = up.lines(Stream::Stdout).join("\n");
    let endpoint = up.lines(Stream::Stdout)[0]
        .strip_prefix("nanofaas listening on ")
        .expect("first line names the address")
        .to_string();
    assert_eq!(
        std::fs::read_to_string(dir.join("prepared")).unwrap(),
        "prepared\n"
    );
    assert!(up
        .lines(Stream::Stderr)
        .iter()
        .any(|l| l.contains("setup [1/1] prepare")));
    assert!(stdout.contains("hello  created"), "{stdout}");
    assert!(
        stdout.contains(&format!("state: {}", dir.join(".nanofaas/state").display()))
            || stdout.contains(".nanofaas/state"),
        "{stdout}"
    );
    // The printed invoke example answers as printed.
    let example = up
        .lines(Stream::Stdout)
        .into_iter()
        .find(|l| l.contains(" invoke hello"))
        .expect("an invoke example");
    let export = up
        .lines(Stream::Stdout)
        .into_iter()
        .skip_while(|l| l != "Try it:")
        .nth(1)
        .expect("a Try it block");
    assert!(
        export.starts_with(&format!("  export NANOFAAS_ENDPOINT={endpoint} ")),
        "the Try it block starts with the export line: {export}"
    );
    assert!(
        example.ends_with(r#"invoke hello -d '{"name":"world"}'"#),
        "{example}"
    );
    let curl = up
        .lines(Stream::Stdout)
        .into_iter()
        .find(|l| l.trim_start().starts_with("curl "))
        .expect("a curl example");
    assert!(
        curl.contains(&format!("{endpoint}/v1/functions/hello:invoke")),
        "{curl}"
    );
    let v = run_cli(
        &endpoint,
        &["invoke", "hello", "-d", r#"{"name":"world"}"#, "-o", "json"],
        None,
    )
    .ok()
    .json();
    assert_eq!(v["output"]["echo"], json!({"name": "world"}));
    assert_eq!(
        v["coldStart"], false,
        "minInstances 1 was ready before up said so"
    );
    run_cli(&endpoint, &["invoke", "other"], None).ok();
    let mut pids = Vec::new();
    for f in ["hello", "other"] {
        pids.extend(instance_pids(
            &run_cli(&endpoint, &["fn", "instances", f, "-o", "json"], None)
                .ok()
                .json(),
        ));
    }
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|p| pid_alive(*p)));

    up.signal(libc::SIGINT).unwrap();
    let status = up
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("up did not stop on SIGINT:\n{}", up.output()));
    assert_eq!(status.code(), Some(0), "{}", up.output());
    assert!(
        wait_all_dead(&pids, Duration::from_secs(5)),
        "processes left behind: {:?}",
        pids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
    );
    assert!(up.lines(Stream::Stderr).iter().any(|l| l == "stopped"));
    // Everything went as asked: nothing at ERROR level, from the control plane, the watchdogs
    // or the runtimes.
    let errors: Vec<String> = up
        .lines(Stream::Stderr)
        .into_iter()
        .filter(|l| {
            l.contains("ERROR") || l.contains(" error:") || l.contains("\"level\":\"error\"")
        })
        .collect();
    assert!(
        errors.is_empty(),
        "a clean Ctrl-C logged errors: {errors:#?}\n{}",
        up.output()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn up_interrupted_during_setup_exits_130_and_stops_the_step() {
    let dir = temp_dir("upint");
    std::fs::write(
        dir.join("m.yaml"),
        "setup:\n  - name: long step\n    run: sleep 300 & echo $! > step.pid; wait\nfunctions: []\n",
    )
    .unwrap();
    let mut cmd = Command::new(NANOFAAS);
    cmd.current_dir(&dir).args([
        "up",
        "-f",
        "m.yaml",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        "",
    ]);
    let mut up = Proc::spawn(cmd).expect("spawn nanofaas up");
    let deadline = Instant::now() + Duration::from_secs(20);
    let step_pid: u32 = loop {
        if let Some(p) = std::fs::read_to_string(dir.join("step.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the step never started:\n{}",
            up.output()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(pid_alive(step_pid));
    up.signal(libc::SIGINT).unwrap();
    let status = up
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("up did not stop:\n{}", up.output()));
    assert_eq!(status.code(), Some(130), "{}", up.output());
    assert!(
        wait_all_dead(&[step_pid], Duration::from_secs(5)),
        "the setup step's process survived"
    );
    assert!(up
        .lines(Stream::Stderr)
        .iter()
        .any(|l| l.contains("SIGINT received during setup")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that answers every request with `500` and a body that is not nanofaas's.
fn broken_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        // One request per CLI run below; bounded.
        for _ in 0..1 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops",
            );
        }
    });
    (format!("http://{addr}"), t)
}

#[test]
fn an_unexpected_server_error_exits_1() {
    let (endpoint, t) = broken_server();
    run_cli(&endpoint, &["fn", "list"], None).fails(1, &["HTTP 500", "oops"]);
    t.join().unwrap();
}

#[test]
fn up_reports_a_bad_manifest_and_a_failed_setup() {
    let dir = temp_dir("upbad");
    let run_up = |manifest: &str| {
        let out = Command::new(NANOFAAS)
            .current_dir(&dir)
            .args(["up", "--listen", "127.0.0.1:0", "--state-dir", ""])
            .args(["--manifest", manifest])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run_up("missing.yaml");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--manifest"), "{err}");
    std::fs::write(
        dir.join("bad.yaml"),
        "functions:\n  - name: 9lives\n    command: x\n",
    )
    .unwrap();
    let (code, err) = run_up("bad.yaml");
    assert_eq!(code, Some(6), "{err}");
    assert!(
        err.contains("bad.yaml:2") && err.contains("field \"name\""),
        "{err}"
    );
    std::fs::write(
        dir.join("fails.yaml"),
        "setup:\n  - name: doomed\n    run: exit 5\nfunctions: []\n",
    )
    .unwrap();
    let (code, err) = run_up("fails.yaml");
    assert_eq!(code, Some(11), "{err}");
    assert!(
        err.contains("doomed") && err.contains("exit status 5"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
