//! `scripts/k8s-smoke.sh` against fakes: `kubectl`, `docker` and `kind` on PATH and a fake
//! `nanofaas` (NANOFAAS_BIN) that record every call. No cluster is needed: what is checked is the
//! script's own logic — the order of its steps, the Secret holding the token's hash, the images it
//! deploys, that it fails when a step fails or a first call is not cold, and that it removes
//! everything (namespace and port-forward) on every way out.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOKEN: &str = "nf_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    repo().join("scripts/k8s-smoke.sh")
}

const KUBECTL: &str = r#"#!/usr/bin/env bash
echo "kubectl $*" >>"$FAKE_LOG"
args=" $* "
case "$args" in
  *" config current-context "*) echo "${FAKE_CONTEXT:-kind-smoke}" ;;
  *" get namespace nanofaas "*) [[ -n ${FAKE_NS_EXISTS:-} ]] || { echo 'Error from server (NotFound)' >&2; exit 1; } ;;
  *" apply -f "*) f=${*: -1}; echo "--- applied $f" >>"$FAKE_LOG"; grep 'image:' "$f" >>"$FAKE_LOG" || true ;;
  *" kustomize "*) cat "${*: -1}/control-plane.yaml" ;;
  *" rollout status "*) exit "${FAKE_ROLLOUT_RC:-0}" ;;
  *" port-forward "*) echo "pf-pid $$" >>"$FAKE_LOG"
                      echo "Forwarding from 127.0.0.1:40001 -> 8080"
                      exec sleep 600 ;;
  *" get pods "*" -o name "*) ;;
esac
exit 0
"#;

const DOCKER: &str = r#"#!/usr/bin/env bash
echo "docker $*" >>"$FAKE_LOG"
exit 0
"#;

const KIND: &str = r#"#!/usr/bin/env bash
echo "kind $*" >>"$FAKE_LOG"
exit 0
"#;

const NANOFAAS: &str = r#"#!/usr/bin/env bash
echo "nanofaas $*" >>"$FAKE_LOG"
case "$1 $2" in
  "token create") echo "$FAKE_TOKEN"; echo "(the configuration)" >&2 ;;
  "fn apply") echo "--- manifest" >>"$FAKE_LOG"; cat "$4" >>"$FAKE_LOG" ;;
  "-o json")
    name=$4
    echo "invoke-env $NANOFAAS_ENDPOINT $NANOFAAS_TOKEN" >>"$FAKE_LOG"
    cold=false
    if [[ ! -e $FAKE_STATE/$name && -z ${FAKE_ALWAYS_WARM:-} ]]; then cold=true; touch "$FAKE_STATE/$name"; fi
    printf '{\n  "executionId": "e1",\n  "status": "success",\n  "output": {\n    "greeting": "Hello, Kubernetes!"\n  },\n  "coldStart": %s\n}\n' "$cold" ;;
esac
exit 0
"#;

struct Run {
    out: Output,
    log: String,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn lines(&self) -> Vec<&str> {
        self.log.lines().collect()
    }
    /// Index of the first log line containing `s`.
    fn at(&self, s: &str) -> usize {
        self.lines()
            .iter()
            .position(|l| l.contains(s))
            .unwrap_or_else(|| {
                panic!(
                    "no call {s:?} in the log:\n{}\nstderr:\n{}",
                    self.log,
                    self.stderr()
                )
            })
    }
    fn has(&self, s: &str) -> bool {
        self.log.contains(s)
    }
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    /// The fake port-forward's process has gone (killed and reaped by the script).
    fn port_forward_gone(&self) -> bool {
        match self.lines().iter().find_map(|l| l.strip_prefix("pf-pid ")) {
            None => true,
            Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        }
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = std::env::temp_dir().join(format!(
        "nanofaas-smoke-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let bin = dir.join("bin");
    let state = dir.join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    for (name, text) in [
        ("kubectl", KUBECTL),
        ("docker", DOCKER),
        ("kind", KIND),
        ("nanofaas", NANOFAAS),
    ] {
        let p = bin.join(name);
        std::fs::write(&p, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = dir.join("calls.log");
    std::fs::write(&log, "").unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("timeout");
    // Bounded: a script that hangs fails the test instead of hanging it.
    cmd.arg("60").arg("bash").arg(script()).args(args);
    cmd.env("PATH", path)
        .env("FAKE_LOG", &log)
        .env("FAKE_STATE", &state)
        .env("FAKE_TOKEN", TOKEN)
        .env("NANOFAAS_BIN", bin.join("nanofaas"))
        .env("TMPDIR", &dir)
        .env_remove("KUBECTL")
        .env_remove("NANOFAAS_K8S_REGISTRY")
        .env_remove("NANOFAAS_IMAGE_TAG")
        .env("NANOFAAS_K8S_TIMEOUT", "3");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash runs");
    assert_ne!(out.status.code(), Some(124), "the script timed out");
    let log = std::fs::read_to_string(&log).unwrap();
    // The script removes its own temporary folder: only ours is left.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nanofaas-k8s-smoke."))
        .collect();
    assert!(left.is_empty(), "the script left {left:?}");
    std::fs::remove_dir_all(&dir).ok();
    Run { out, log }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn the_script_is_valid_bash_and_shellcheck_clean() {
    let out = Command::new("bash")
        .arg("-n")
        .arg(script())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match Command::new("shellcheck").arg(script()).output() {
        Ok(out) => assert!(
            out.status.success(),
            "shellcheck:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => eprintln!("NOTE: shellcheck is not installed; only `bash -n` was checked"),
    }
}

#[test]
fn a_passing_run_deploys_invokes_cold_then_warm_and_removes_everything() {
    let r = run(&["--no-build"], &[]);
    assert_eq!(
        r.code(),
        Some(0),
        "stderr:\n{}\nlog:\n{}",
        r.stderr(),
        r.log
    );
    // The steps, in order.
    let order = [
        "kubectl config current-context",
        "kubectl get namespace nanofaas",
        "docker image inspect nanofaas/control-plane:latest",
        "kind load docker-image --name smoke nanofaas/control-plane:latest nanofaas/example-python-hello:latest nanofaas/example-java-hello:latest",
        "nanofaas token create --role admin",
        "kubectl apply -f",
        "kubectl -n nanofaas create secret generic nanofaas-api-tokens",
        "kubectl kustomize",
        "/deploy.yaml",
        "kubectl -n nanofaas rollout status deployment/nanofaas-control-plane",
        "kubectl -n nanofaas port-forward service/nanofaas :8080",
        "nanofaas fn apply -f",
        "nanofaas -o json invoke hello-python",
        "nanofaas -o json invoke hello-java",
        "nanofaas fn delete hello-python",
        "kubectl -n nanofaas get pods -l nanofaas.dev/function=hello-python -o name",
        "nanofaas fn delete hello-java",
        "kubectl delete namespace nanofaas",
    ];
    let idx: Vec<usize> = order.iter().map(|s| r.at(s)).collect();
    for (w, pair) in idx.windows(2).zip(order.windows(2)) {
        assert!(
            w[0] < w[1],
            "{:?} came after {:?}:\n{}",
            pair[1],
            pair[0],
            r.log
        );
    }
    assert!(r.lines()[r.at("kubectl apply -f")].ends_with("deploy/kubernetes/namespace.yaml"));
    // The Secret holds the SHA-256 of the token, never the token.
    let hash = hex(&Sha256::digest(TOKEN.as_bytes()));
    let secret = r.lines()[r.at("create secret generic")];
    assert!(
        secret.contains(&format!("--from-literal=tokens=admin:{hash}")),
        "{secret}"
    );
    assert!(!r
        .log
        .lines()
        .filter(|l| l.starts_with("kubectl"))
        .any(|l| l.contains(TOKEN)));
    // The deployed control plane's image; the functions' images.
    assert!(r.has("image: nanofaas/control-plane:latest"), "{}", r.log);
    assert!(r.has("image: nanofaas/example-python-hello:latest"));
    assert!(r.has("image: nanofaas/example-java-hello:latest"));
    // Through the port-forward, with the token.
    assert!(r.has(&format!("invoke-env http://127.0.0.1:40001 {TOKEN}")));
    // One cold and three warm calls per function.
    assert_eq!(r.log.matches("invoke hello-python").count(), 4);
    assert_eq!(r.log.matches("invoke hello-java").count(), 4);
    let out = r.stdout();
    assert!(
        out.contains("hello-python  cold ") && out.contains("hello-java  cold "),
        "{out}"
    );
    assert!(out.contains("passed on context kind-smoke"), "{out}");
    // The namespace removal is the last call; the port-forward is gone.
    assert!(
        r.lines()
            .last()
            .unwrap()
            .starts_with("kubectl delete namespace nanofaas"),
        "{}",
        r.log
    );
    assert!(r.port_forward_gone());
}

#[test]
fn a_failed_rollout_fails_and_still_removes_the_namespace() {
    let r = run(&["--no-build"], &[("FAKE_ROLLOUT_RC", "1")]);
    assert_eq!(r.code(), Some(1), "{}", r.stderr());
    assert!(
        r.stderr().contains("did not become ready"),
        "{}",
        r.stderr()
    );
    assert!(
        r.has("kubectl -n nanofaas describe pods"),
        "diagnostics are printed"
    );
    assert!(!r.has("port-forward"));
    assert!(
        r.lines()
            .last()
            .unwrap()
            .starts_with("kubectl delete namespace nanofaas"),
        "{}",
        r.log
    );
}

#[test]
fn a_first_call_that_is_not_cold_fails_and_cleans_up() {
    let r = run(&["--no-build"], &[("FAKE_ALWAYS_WARM", "1")]);
    assert_eq!(r.code(), Some(1), "{}", r.stderr());
    assert!(r.stderr().contains("not a cold start"), "{}", r.stderr());
    assert!(r.has("pf-pid"));
    assert!(r.port_forward_gone(), "the port-forward was stopped");
    assert!(
        r.lines()
            .last()
            .unwrap()
            .starts_with("kubectl delete namespace nanofaas"),
        "{}",
        r.log
    );
}

#[test]
fn an_existing_namespace_is_left_alone() {
    let r = run(&["--no-build"], &[("FAKE_NS_EXISTS", "1")]);
    assert_eq!(r.code(), Some(1));
    assert!(r.stderr().contains("exists already"), "{}", r.stderr());
    assert!(!r.has("apply") && !r.has("delete"), "{}", r.log);
}

#[test]
fn other_clusters_need_a_registry_and_get_the_pushed_images() {
    let r = run(&["--no-build"], &[("FAKE_CONTEXT", "gke_project_zone_c1")]);
    assert_eq!(r.code(), Some(1));
    assert!(
        r.stderr().contains("NANOFAAS_K8S_REGISTRY"),
        "{}",
        r.stderr()
    );
    assert!(!r.has("apply"));

    let reg = "registry.example.com/team";
    let r = run(
        &["--no-build"],
        &[
            ("FAKE_CONTEXT", "gke_project_zone_c1"),
            ("NANOFAAS_K8S_REGISTRY", reg),
            ("NANOFAAS_IMAGE_TAG", "t1"),
        ],
    );
    assert_eq!(r.code(), Some(0), "{}\n{}", r.stderr(), r.log);
    for i in [
        "control-plane",
        "example-python-hello",
        "example-java-hello",
    ] {
        assert!(
            r.has(&format!("docker push {reg}/nanofaas/{i}:t1")),
            "{}",
            r.log
        );
        assert!(r.has(&format!("image: {reg}/nanofaas/{i}:t1")), "{}", r.log);
    }
    assert!(!r.has("kind "));
}

#[test]
fn keep_leaves_the_deployment_and_bad_usage_exits_2() {
    let r = run(&["--no-build", "--keep"], &[]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr());
    assert!(!r.has("delete namespace"));
    assert!(r.port_forward_gone());

    let r = run(&["--bogus"], &[]);
    assert_eq!(r.code(), Some(2));
    assert!(r.log.is_empty(), "{}", r.log);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
