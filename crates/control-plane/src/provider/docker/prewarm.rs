//! Prewarmed containers of the docker provider (see `crate::prewarm` and
//! `docs/concepts.md#prewarmed-instances`): per image, a few containers created, started and
//! healthy ahead of time with the watchdog in `WARM_PREWARM` mode, so that a cold start of a
//! function of that image skips the engine's create and start.
//!
//! A [`Kind`] here is the image, its `runtimeCommand` (the watchdog's `WATCHDOG_CMD`) and the
//! watchdog settings fixed at start (`instanceConcurrency`, `timeoutMs`): a generic container has
//! none of a function's variables nor limits, the labels `dev.nanofaas.kind=prewarmed` and
//! `dev.nanofaas.function=(prewarmed)`, and the owner label of every container (so shutdown
//! and the next control plane's orphan cleanup remove it like any other).
//!
//! Specialization, in this order: the function's memory and CPU limits go on the running
//! container (`POST /containers/{id}/update`: `Memory`, `MemorySwap`, `NanoCpus`), then
//! `POST /specialize` gives the watchdog the function's name and environment; the runtime
//! imports the handler with both in force. The function's code is in the image (the docker
//! provider has no host code path: `workingDir` is a process-provider field), so nothing is
//! mounted or copied: the runtime keeps the image's `WORKDIR`. A container that could not take
//! the limits, or refused, is removed and the start falls back to a cold one; a handler that
//! fails to import is that start's `STARTUP_ERROR`. A specialized container is its function's
//! alone; its labels stay those of its creation (the engine cannot change labels).
//!
//! Owns: the `Stems` side of the docker provider and the specialization of one container. It
//! must not shell out to a `docker` CLI.

use super::container::ENV_FUNCTION;
use super::watch::only_child;
use super::DockerProvider;
use crate::dispatch::BoxFuture;
use crate::prewarm::Specialized;
use crate::prewarm::{Kind, KindStatus, Stems};
use crate::provider::{Instance, PrewarmError, StartFailure, StartRequest};
use nanofaas_api::FunctionSpec;
use serde_json::{json, Value};
use std::sync::Arc;

/// The function name a generic container carries until it is specialized.
pub(super) const STEM_FUNCTION: &str = "(prewarmed)";

/// The resources of `spec` as the engine's update takes them; `None` when it sets none.
fn limits_of(spec: &FunctionSpec) -> Option<Value> {
    let res = spec.resources.as_ref()?;
    let mut v = serde_json::Map::new();
    if let Some(cpu) = res
        .cpu
        .as_deref()
        .and_then(|c| nanofaas_api::spec::parse_cpu_millis(c).ok())
    {
        v.insert("NanoCpus".into(), json!(cpu * 1_000_000));
    }
    if let Some(mem) = res
        .memory
        .as_deref()
        .and_then(|m| nanofaas_api::spec::parse_memory_bytes(m).ok())
    {
        v.insert("Memory".into(), json!(mem));
        v.insert("MemorySwap".into(), json!(mem));
    }
    (!v.is_empty()).then_some(Value::Object(v))
}

/// Resident memory of a process of this machine, in bytes (0 when gone or unknown).
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

impl DockerProvider {
    /// Lets the prewarm pool start and stop generic containers through this provider (once,
    /// right after it is built).
    pub fn attach_prewarm(self: &Arc<Self>) {
        let me: std::sync::Weak<dyn Stems> = Arc::downgrade(self) as std::sync::Weak<dyn Stems>;
        self.prewarm.attach(me);
    }

    /// The kinds with their ready containers; the memory they hold where the engine runs on
    /// this machine (init, watchdog and runtime of each).
    pub(super) fn prewarmed_status(&self) -> Vec<KindStatus> {
        let mut v = self.prewarm.status();
        let entries = self.entries.lock().unwrap();
        for k in &mut v {
            let mut sum = 0;
            for id in &k.ready {
                let Some(e) = entries.get(id) else { continue };
                let init = *e.host_pid.lock().unwrap();
                let watchdog = init.and_then(only_child);
                let runtime = watchdog.and_then(only_child);
                sum += [init, watchdog, runtime]
                    .into_iter()
                    .flatten()
                    .map(rss_bytes)
                    .sum::<u64>();
            }
            k.memory_bytes = (sum > 0).then_some(sum);
        }
        v
    }

    /// Makes the generic container `stem` one of `req.spec`'s: its limits on the container,
    /// then `POST /specialize` (the function's name and variables; the runtime imports its
    /// handler).
    pub(super) async fn specialize(
        &self,
        stem: Instance,
        kind: Kind,
        req: StartRequest,
    ) -> Result<Instance, PrewarmError> {
        let spec = &req.spec;
        let Some(entry) = self.entries.lock().unwrap().get(&stem.id).cloned() else {
            return Err(PrewarmError::Fallback(
                "the prewarmed container is gone".into(),
            ));
        };
        let stem_id = stem.id.clone();
        let fallback = |why: String| async move {
            use crate::provider::Provider;
            self.stop(&stem_id).await;
            Err(PrewarmError::Fallback(why))
        };
        // Limits first: no code of the function runs without them.
        if let Some(limits) = limits_of(spec) {
            if let Err(e) = self.engine.update(&entry.container, &limits).await {
                return fallback(format!(
                    "cannot apply the limits of {:?} to the prewarmed container: {e}",
                    spec.name
                ))
                .await;
            }
        }
        *entry.function.lock().unwrap() = spec.name.clone();
        let mut env = spec.env.clone();
        env.insert(ENV_FUNCTION.into(), spec.name.clone());
        // No workingDir: the runtime stays in the image's WORKDIR, as a cold container does.
        let body = json!({
            "function": spec.name,
            "env": env,
            "timeoutMs": self.settings.startup_timeout.as_millis() as u64,
        })
        .to_string();
        let answer = crate::prewarm::specialize(
            &self.client,
            &stem,
            body.as_bytes(),
            self.settings.startup_timeout,
            "container",
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
                let mut f = self.fail_start(&stem.id, spec, entry, Some(message)).await;
                // The import error is the function's, not the image's: a later start may work.
                f.permanent = false;
                Err(PrewarmError::Failed(f))
            }
            Specialized::Refused(why) => fallback(why).await,
        }
    }
}

impl Stems for DockerProvider {
    fn start_stem(&self, kind: &Kind, id: String) -> BoxFuture<'_, Result<Instance, StartFailure>> {
        let spec: Result<FunctionSpec, _> = serde_json::from_value(json!({
            "name": STEM_FUNCTION,
            "image": kind.image,
            "runtimeCommand": kind.command.first(),
            "instanceConcurrency": kind.concurrency,
            "timeoutMs": kind.timeout_ms,
        }));
        let spec = match spec {
            Ok(s) if s.image.is_some() => s,
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "it has no image".into(),
                };
                return Box::pin(async move {
                    Err(StartFailure {
                        message: format!("bad kind: {why}"),
                        permanent: true,
                    })
                });
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
        Box::pin(async move {
            use crate::provider::Provider;
            self.stop(&id).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Exchange, Verifier};
    use super::super::tests::{inspect_json, provider, settings, spec};
    use super::super::*;
    use super::{limits_of, Kind};
    use bytes::Bytes;
    use serde_json::{json, Value};
    use std::collections::VecDeque;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    /// A watchdog stand-in on loopback: `/health` and `/lease` answer 200; every
    /// `POST /specialize` body is handed to the test, answered with the next scripted answer.
    struct FakeWatchdog {
        port: u16,
        specialized: mpsc::UnboundedReceiver<Value>,
        script: Arc<Mutex<VecDeque<(u16, String)>>>,
        _task: tokio::task::JoinHandle<()>,
    }

    async fn fake_watchdog() -> FakeWatchdog {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        let script: Arc<Mutex<VecDeque<(u16, String)>>> = Arc::default();
        let task = tokio::spawn({
            let script = script.clone();
            async move {
                loop {
                    let Ok((s, _)) = l.accept().await else { return };
                    tokio::spawn(serve_one(s, tx.clone(), script.clone()));
                }
            }
        });
        FakeWatchdog {
            port,
            specialized: rx,
            script,
            _task: task,
        }
    }

    async fn serve_one(
        mut s: tokio::net::TcpStream,
        tx: mpsc::UnboundedSender<Value>,
        script: Arc<Mutex<VecDeque<(u16, String)>>>,
    ) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // The head (bounded), then a Content-Length body.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let (status, answer) = if path == "/specialize" {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
            let _ = tx.send(body);
            script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((200, r#"{"specialized":true}"#.into()))
        } else {
            (200, "ok".to_string())
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
    }

    impl FakeWatchdog {
        /// The next `/specialize` body; fails when none comes within 5 s.
        async fn next_specialize(&mut self) -> Value {
            tokio::time::timeout(Duration::from_secs(5), self.specialized.recv())
                .await
                .expect("a POST /specialize never came")
                .expect("fake watchdog alive")
        }
    }

    fn prewarm_settings() -> DockerSettings {
        let mut s = settings();
        s.prewarm.count = 1;
        s
    }

    /// A container that is up: the engine calls of its start, answered; the container's
    /// `wait` is returned pending (answer it to end the container) with its log stream.
    struct Up {
        create_body: Value,
        wait: Exchange,
        _logs: mpsc::Sender<Result<Bytes, String>>,
    }

    async fn expect_start(v: &mut Verifier, cid: &str, port: u16) -> Up {
        let create = v.expect("POST", "/containers/create?name=nanofaas-").await;
        let create_body = create.body();
        create.json(201, json!({"Id": cid}));
        v.expect("POST", &format!("/containers/{cid}/start"))
            .await
            .reply(204, "");
        let logs = v
            .expect(
                "GET",
                &format!("/containers/{cid}/logs?stdout=true&stderr=true&follow"),
            )
            .await
            .stream(200);
        for _ in 0..2 {
            v.expect("GET", &format!("/containers/{cid}/json"))
                .await
                .json(200, inspect_json(port, true));
        }
        let wait = v.expect("POST", &format!("/containers/{cid}/wait")).await;
        Up {
            create_body,
            wait,
            _logs: logs,
        }
    }

    /// The engine calls of stopping an up container: SIGTERM, its end, its removal.
    async fn expect_stop(v: &mut Verifier, cid: &str, up: Up) {
        let kill = v.expect("POST", &format!("/containers/{cid}/kill")).await;
        assert!(kill.path().ends_with("signal=SIGTERM"), "{}", kill.path());
        kill.reply(204, "");
        up.wait.json(200, json!({"StatusCode": 143}));
        expect_removed(v, cid).await;
    }

    /// The watcher's calls after a container ended.
    async fn expect_removed(v: &mut Verifier, cid: &str) {
        v.expect("GET", &format!("/containers/{cid}/json"))
            .await
            .json(404, json!({"message": "gone"}));
        v.expect("GET", &format!("/containers/{cid}/logs"))
            .await
            .json(404, json!({"message": "gone"}));
        v.expect("DELETE", &format!("/containers/{cid}"))
            .await
            .reply(204, "");
    }

    /// The ready generic containers of the only kind, once there are `n` (bounded).
    async fn ready(p: &DockerProvider, n: usize) -> Vec<String> {
        for _ in 0..500 {
            if let Some(k) = p.prewarmed().first() {
                if k.ready.len() >= n {
                    return k.ready.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {n} ready prewarmed container(s): {:?}", p.prewarmed());
    }

    fn req(id: &str, s: Arc<FunctionSpec>) -> StartRequest {
        StartRequest {
            instance_id: id.into(),
            spec: s,
        }
    }

    #[tokio::test]
    async fn a_generic_container_gets_limits_then_its_function_and_the_pool_refills() {
        let (p, mut v) = provider(prewarm_settings());
        p.attach_prewarm();
        let mut wd = fake_watchdog().await;
        let f1 = spec(json!({
            "env": {"GREETING": "hi"},
            "resources": {"cpu": "500m", "memory": "64Mi"},
        }));
        p.prewarm_register(&f1);
        // The generic container: no variable, limit or name of any function; prewarm mode.
        let up1 = expect_start(&mut v, "stem1", wd.port).await;
        let body = &up1.create_body;
        assert_eq!(body["Image"], "nanofaas/example:1");
        assert_eq!(body["Labels"][LABEL_KIND], "prewarmed");
        assert_eq!(body["Labels"][LABEL_FUNCTION], "(prewarmed)");
        assert_eq!(body["Labels"][LABEL_OWNER], p.owner());
        assert!(body["HostConfig"].get("Memory").is_none(), "{body}");
        assert!(body["HostConfig"].get("NanoCpus").is_none(), "{body}");
        assert!(body["ExposedPorts"].get("8080/tcp").is_some(), "{body}");
        let env = super::super::tests::env_of(body);
        assert_eq!(env["WARM_PREWARM"], "1");
        assert_eq!(env["NANOFAAS_FUNCTION"], "(prewarmed)");
        assert!(!env.contains_key("GREETING"), "{env:?}");
        let stems = ready(&p, 1).await;
        assert_eq!(p.list()[0].kind, "prewarmed");

        // A cold start of the function takes it: limits first, then the specialization.
        let start = tokio::spawn({
            let p = p.clone();
            let f1 = f1.clone();
            async move { p.start_prewarmed(&req("fn1-a", f1)).unwrap().await }
        });
        let update = v.expect("POST", "/containers/stem1/update").await;
        assert_eq!(
            update.body(),
            json!({"Memory": 64u64 << 20, "MemorySwap": 64u64 << 20, "NanoCpus": 500_000_000u64})
        );
        assert!(
            wd.specialized.try_recv().is_err(),
            "no specialization before the limits are in force"
        );
        update.json(200, json!({"Warnings": []}));
        let sp = wd.next_specialize().await;
        assert_eq!(sp["function"], "fn1");
        assert_eq!(sp["env"]["GREETING"], "hi");
        assert_eq!(sp["env"]["NANOFAAS_FUNCTION"], "fn1");
        assert!(sp.get("workingDir").is_none(), "the image's WORKDIR: {sp}");
        let inst = start.await.unwrap().expect("specialized");
        assert_eq!(inst.id, stems[0]);
        assert_eq!(
            inst.invoke_url.to_string(),
            format!("http://127.0.0.1:{}/invoke", wd.port)
        );
        // The pool refills with a new generic container.
        let up2 = expect_start(&mut v, "stem2", wd.port).await;
        let again = ready(&p, 1).await;
        assert_ne!(again, stems, "a new one, not the one taken");
        let listed: Vec<(String, &str)> =
            p.list().into_iter().map(|i| (i.function, i.kind)).collect();
        assert!(listed.contains(&("fn1".into(), "warm")), "{listed:?}");
        assert!(
            listed.contains(&("(prewarmed)".into(), "prewarmed")),
            "{listed:?}"
        );

        // Shutdown stops both, the generic one included, and sweeps the owner's label.
        let down = tokio::spawn({
            let p = p.clone();
            async move { p.shutdown().await }
        });
        let k1 = v.expect("POST", "/containers/stem1/kill").await;
        let k2 = v.expect("POST", "/containers/stem2/kill").await;
        k1.reply(204, "");
        k2.reply(204, "");
        up1.wait.json(200, json!({"StatusCode": 143}));
        up2.wait.json(200, json!({"StatusCode": 143}));
        expect_removed(&mut v, "stem1").await;
        expect_removed(&mut v, "stem2").await;
        v.expect("GET", "/containers/json")
            .await
            .json(200, json!([]));
        tokio::time::timeout(Duration::from_secs(5), down)
            .await
            .expect("shutdown returns")
            .unwrap();
        assert!(p.list().is_empty());
        assert!(p.start_prewarmed(&req("fn1-b", f1.clone())).is_none());
        v.assert_idle(Duration::from_millis(300)).await;
    }

    #[tokio::test]
    async fn a_specialized_container_never_serves_another_function() {
        let (p, mut v) = provider(prewarm_settings());
        p.attach_prewarm();
        let mut wd = fake_watchdog().await;
        let a = spec(json!({"name": "fa"}));
        let b = spec(json!({"name": "fb"}));
        p.prewarm_register(&a);
        p.prewarm_register(&b);
        let up1 = expect_start(&mut v, "s1", wd.port).await;
        ready(&p, 1).await;
        let ia = p.start_prewarmed(&req("fa-1", a.clone())).unwrap();
        let (ia, sp) = tokio::join!(ia, wd.next_specialize());
        let ia = ia.expect("specialized for fa");
        assert_eq!(sp["function"], "fa");
        // fb's cold start finds none ready until the refill is up, then gets that one.
        assert!(p.start_prewarmed(&req("fb-1", b.clone())).is_none());
        let up2 = expect_start(&mut v, "s2", wd.port).await;
        ready(&p, 1).await;
        let ib = p.start_prewarmed(&req("fb-1", b.clone())).unwrap();
        let (ib, sp) = tokio::join!(ib, wd.next_specialize());
        let ib = ib.expect("specialized for fb");
        assert_eq!(sp["function"], "fb");
        assert_ne!(ia.id, ib.id);
        let up3 = expect_start(&mut v, "s3", wd.port).await;
        ready(&p, 1).await;
        assert!(!p.prewarm.holds(&ia.id) && !p.prewarm.holds(&ib.id));
        // The last function of the image goes: its waiting container goes with it.
        p.prewarm_unregister(&a);
        p.prewarm_unregister(&b);
        expect_stop(&mut v, "s3", up3).await;
        assert!(p.prewarmed().is_empty());
        v.assert_idle(Duration::from_millis(300)).await;
        // Their waits stay open until here: a dropped one would be asked again.
        drop((up1, up2));
    }

    #[tokio::test]
    async fn a_refused_update_or_specialization_falls_back_to_a_cold_start() {
        let (p, mut v) = provider(prewarm_settings());
        p.attach_prewarm();
        let mut wd = fake_watchdog().await;
        let f = spec(json!({"resources": {"memory": "64Mi"}}));
        p.prewarm_register(&f);

        // The engine refuses the limits: the container goes, no specialization is sent.
        let up = expect_start(&mut v, "u1", wd.port).await;
        ready(&p, 1).await;
        let start = tokio::spawn({
            let (p, f) = (p.clone(), f.clone());
            async move { p.start_prewarmed(&req("fn1-1", f)).unwrap().await }
        });
        v.expect("POST", "/containers/u1/update")
            .await
            .json(500, json!({"message": "cannot set memory below usage"}));
        expect_stop(&mut v, "u1", up).await;
        match start.await.unwrap() {
            Err(PrewarmError::Fallback(why)) => {
                assert!(why.contains("below usage"), "{why}")
            }
            other => panic!("expected a fallback, got {:?}", other.err()),
        }
        assert!(wd.specialized.try_recv().is_err());

        // The watchdog refuses (409): the container goes, the start is cold.
        let up = expect_start(&mut v, "u2", wd.port).await;
        ready(&p, 1).await;
        wd.script.lock().unwrap().push_back((
            409,
            r#"{"error":{"code":"INVALID_REQUEST","message":"already specialized"}}"#.into(),
        ));
        let start = tokio::spawn({
            let (p, f) = (p.clone(), f.clone());
            async move { p.start_prewarmed(&req("fn1-2", f)).unwrap().await }
        });
        v.expect("POST", "/containers/u2/update")
            .await
            .json(200, json!({}));
        wd.next_specialize().await;
        expect_stop(&mut v, "u2", up).await;
        match start.await.unwrap() {
            Err(PrewarmError::Fallback(why)) => {
                assert!(why.contains("already specialized"), "{why}")
            }
            other => panic!("expected a fallback, got {:?}", other.err()),
        }

        // A handler that fails to import: STARTUP_ERROR with the error, the container goes.
        let up = expect_start(&mut v, "u3", wd.port).await;
        ready(&p, 1).await;
        wd.script.lock().unwrap().push_back((
            500,
            r#"{"error":{"code":"STARTUP_ERROR","message":"ImportError: no module named db"}}"#
                .into(),
        ));
        let start = tokio::spawn({
            let (p, f) = (p.clone(), f.clone());
            async move { p.start_prewarmed(&req("fn1-3", f)).unwrap().await }
        });
        v.expect("POST", "/containers/u3/update")
            .await
            .json(200, json!({}));
        wd.next_specialize().await;
        v.expect("GET", "/containers/u3/logs?stdout=true&stderr=true&tail=")
            .await
            .reply(
                200,
                super::super::tests::log_frame(2, "Traceback: no module named db\n"),
            );
        expect_stop(&mut v, "u3", up).await;
        match start.await.unwrap() {
            Err(PrewarmError::Failed(f)) => {
                assert!(f.message.contains("no module named db"), "{}", f.message);
                assert!(f.message.contains("Traceback"), "{}", f.message);
                assert!(!f.permanent);
            }
            other => panic!("expected a failure, got {:?}", other.err()),
        }

        // A runtime without the protocol (501): the image is not prewarmed any more.
        let up = expect_start(&mut v, "u4", wd.port).await;
        ready(&p, 1).await;
        wd.script.lock().unwrap().push_back((
            501,
            r#"{"error":{"code":"STARTUP_ERROR","message":"the runtime does not support specialization"}}"#.into(),
        ));
        let start = tokio::spawn({
            let (p, f) = (p.clone(), f.clone());
            async move { p.start_prewarmed(&req("fn1-4", f)).unwrap().await }
        });
        v.expect("POST", "/containers/u4/update")
            .await
            .json(200, json!({}));
        wd.next_specialize().await;
        expect_stop(&mut v, "u4", up).await;
        assert!(matches!(
            start.await.unwrap(),
            Err(PrewarmError::Fallback(_))
        ));
        // The refill that the take started before the verdict fails; none follows it.
        v.expect("POST", "/containers/create")
            .await
            .json(500, json!({"message": "not this time"}));
        let st = p.prewarmed();
        assert!(
            st[0]
                .disabled
                .as_deref()
                .unwrap_or("")
                .contains("does not support"),
            "{st:?}"
        );
        assert!(p.start_prewarmed(&req("fn1-5", f.clone())).is_none());
        v.assert_idle(Duration::from_millis(500)).await;
    }

    #[test]
    fn kinds_and_limits_of_specs() {
        assert_eq!(limits_of(&spec(json!({}))), None);
        assert_eq!(
            limits_of(&spec(json!({"resources": {"cpu": "250m"}}))),
            Some(json!({"NanoCpus": 250_000_000u64}))
        );
        // Functions of one image share a kind; another runtimeCommand or concurrency does not.
        let k = |v| Kind::of_image(&spec(v)).unwrap();
        assert_eq!(
            k(json!({"name": "a", "env": {"X": "1"}})),
            k(json!({"name": "b", "resources": {"memory": "64Mi"}}))
        );
        assert_ne!(
            k(json!({})),
            k(json!({"runtimeCommand": "python3 -m other"}))
        );
        assert_ne!(k(json!({})), k(json!({"instanceConcurrency": 4})));
        assert!(Kind::of_image(&spec(json!({"runtimeMode": "STDIO"}))).is_none());
    }
}
