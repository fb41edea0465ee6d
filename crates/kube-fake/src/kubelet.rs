//! The simulated scheduler and kubelet: one task per pod that binds it to a node, runs its
//! first container (as a Docker container, or a fake one), probes readiness, restarts it by the
//! pod's restartPolicy with the kubelet's back-off, and writes the pod's status and events
//! through [`Cluster`] as a kubelet does through the API.
//!
//! It owns a pod's lifecycle after create; it never touches the store except through
//! [`Cluster`]'s methods. The task's states: `Unscheduled -> Bound -> (Pulling | BackOff)* ->
//! Running -> (Exited -> BackOff -> Running)* -> Terminated`, left at any point by a
//! [`Signal`].

use crate::cluster::{node_ip, Cluster};
use crate::docker;
use crate::status::{now_rfc3339, random_u64};
use crate::Containers;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What the API side tells a pod's task. A `watch` channel: only the latest matters.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    Run,
    /// Graceful delete: stop within the grace, then the object goes.
    Terminate(Duration),
    /// The object is gone: kill the container now and end.
    Gone,
    /// Node-pressure eviction (`/_fake/evict`): kill, status Failed/Evicted, delete.
    Evict(String),
    /// The pod's node failed: the container dies with it, Ready=False, then the pod goes.
    NodeLost,
    /// Fake-containers mode: the container exits with this code.
    Exit(i64),
}

/// Starts a pod's task.
pub fn spawn(c: Cluster, ns: String, name: String, uid: String, sig: watch::Receiver<Signal>) {
    tokio::spawn(async move {
        let mut p = PodTask {
            c,
            ns,
            name,
            uid,
            sig,
            node: String::new(),
            container_id: None,
            previous: None,
        };
        p.run().await;
    });
}

struct PodTask {
    c: Cluster,
    ns: String,
    name: String,
    uid: String,
    sig: watch::Receiver<Signal>,
    node: String,
    /// The container last started (running or exited), and the one before it: kept, as the
    /// kubelet keeps them, for `pods/{name}/log` (and `?previous=true`).
    container_id: Option<String>,
    previous: Option<String>,
}

/// Why the running phase ended.
enum Ended {
    Exited(docker::Exit),
    Signal(Signal),
}

fn set_condition(
    pod: &mut Value,
    typ: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let status = if ok { "True" } else { "False" };
    let conds = pod["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(conds)) = conds else {
        return;
    };
    let now = now_rfc3339();
    let mut c =
        json!({"type": typ, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    match conds.iter_mut().find(|x| x["type"] == typ) {
        Some(old) => {
            if old["status"] == status {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => conds.push(c),
    }
}

fn set_ready(pod: &mut Value, ready: bool) {
    let reason = (!ready).then_some("ContainersNotReady");
    let cname = pod
        .pointer("/spec/containers/0/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let msg = format!("containers with unready status: [{cname}]");
    let msg = (!ready).then_some(msg.as_str());
    set_condition(pod, "ContainersReady", ready, reason, msg);
    set_condition(pod, "Ready", ready, reason, msg);
}

impl PodTask {
    fn pod(&self) -> Option<Value> {
        self.c.pod_by_uid(&self.ns, &self.name, &self.uid)
    }

    fn update(&self, f: impl FnOnce(&mut Value)) -> Option<Value> {
        self.c.update_pod(&self.ns, &self.name, &self.uid, f)
    }

    fn event(&self, kind: &str, reason: &str, message: &str) {
        if let Some(p) = self.pod() {
            let (component, host) = if reason == "Scheduled" || reason == "FailedScheduling" {
                ("default-scheduler", None)
            } else {
                ("kubelet", Some(self.node.as_str()))
            };
            self.c
                .record_event(&p, kind, reason, message, component, host);
        }
    }

    fn current(&self) -> Signal {
        self.sig.borrow().clone()
    }

    /// The current signal if it ends what the task is doing (`Run` and a fake container's
    /// `Exit`, which only the running phase consumes, do not).
    fn interrupting(&self) -> Option<Signal> {
        match self.current() {
            Signal::Run | Signal::Exit(_) => None,
            s => Some(s),
        }
    }

    /// Sleeps `d`, or returns the signal that came first (a `Run` does not interrupt).
    async fn sleep_or_signal(&mut self, d: Duration) -> Option<Signal> {
        if let Some(s) = self.interrupting() {
            return Some(s);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                ch = self.sig.changed() => {
                    if ch.is_err() {
                        return Some(Signal::Gone);
                    }
                    if let Some(s) = self.interrupting() {
                        return Some(s);
                    }
                }
            }
        }
    }

    fn container_status(
        &self,
        state: Value,
        ready: bool,
        restarts: u64,
        last: Value,
        started: bool,
    ) -> Value {
        let pod = self.pod().unwrap_or(Value::Null);
        let c0 = pod
            .pointer("/spec/containers/0")
            .cloned()
            .unwrap_or(Value::Null);
        let image = c0["image"].as_str().unwrap_or("").to_string();
        let mut st = json!({
            "name": c0["name"],
            "image": image,
            "imageID": "",
            "ready": ready,
            "started": started,
            "restartCount": restarts,
            "state": state,
            "lastState": last,
        });
        if let Some(id) = &self.container_id {
            let scheme = if matches!(self.c.options().containers, Containers::Docker) {
                "docker"
            } else {
                "fake"
            };
            st["containerID"] = json!(format!("{scheme}://{id}"));
        }
        st
    }

    /// Writes containerStatuses (the first container as given, the others waiting).
    fn write_status(&self, first: Value, phase: Option<&str>, ready: Option<bool>) {
        self.update(|p| {
            let others: Vec<Value> = p
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .skip(1)
                        .map(|c| {
                            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                                "started": false, "restartCount": 0, "lastState": {},
                                "state": {"waiting": {"reason": "ContainerCreating",
                                    "message": "the fake kubelet runs only a pod's first container"}}})
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut all = vec![first];
            all.extend(others);
            p["status"]["containerStatuses"] = json!(all);
            if let Some(ph) = phase {
                p["status"]["phase"] = json!(ph);
            }
            if let Some(r) = ready {
                set_ready(p, r);
            }
        });
    }

    async fn run(&mut self) {
        let Some(node) = self.schedule().await else {
            return self.finish_unscheduled().await;
        };
        self.node = node;
        self.lifecycle().await;
        if matches!(self.c.options().containers, Containers::Docker) {
            for id in [self.container_id.take(), self.previous.take()]
                .into_iter()
                .flatten()
            {
                let _ = docker::remove(&id).await;
            }
        }
        self.c.set_containers(&self.uid, None, None);
    }

    /// A signal arrived before the pod was bound: an unbound pod's delete is immediate (the
    /// store already removed it), an eviction of an unbound pod just deletes it.
    async fn finish_unscheduled(&mut self) {
        if let Signal::Evict(_) | Signal::Terminate(_) | Signal::NodeLost = self.current() {
            self.c.finalize_pod(&self.ns, &self.name, &self.uid);
        }
    }

    /// Binds the pod to a node, or waits (Unschedulable) while scheduling is refused or every
    /// node has failed. `None` when a signal ends the pod first.
    async fn schedule(&mut self) -> Option<String> {
        let mut sched = self.c.0.scheduling.subscribe();
        let mut nodes = self.c.0.nodes_changed.subscribe();
        let mut told = None::<String>;
        loop {
            if self.interrupting().is_some() {
                return None;
            }
            let refused = sched.borrow_and_update().clone();
            nodes.borrow_and_update();
            let n = self.c.options().nodes.max(1);
            let picked = if refused.is_none() {
                self.c.pick_node()
            } else {
                None
            };
            if let Some(node) = picked {
                let ip = node_ip(&node);
                let msg = format!("Successfully assigned {}/{} to {node}", self.ns, self.name);
                self.update(|p| {
                    p["spec"]["nodeName"] = json!(node);
                    set_condition(p, "PodScheduled", true, None, None);
                });
                self.event("Normal", "Scheduled", &msg);
                self.update(|p| {
                    p["status"]["hostIP"] = json!(ip);
                    p["status"]["hostIPs"] = json!([{"ip": ip}]);
                    p["status"]["startTime"] = json!(now_rfc3339());
                    set_condition(p, "PodReadyToStartContainers", false, None, None);
                    set_condition(p, "Initialized", true, None, None);
                    set_ready(p, false);
                });
                return Some(node);
            }
            let why = refused.unwrap_or_else(|| {
                format!("0/{n} nodes are available: {n} node(s) had untolerated taint {{node.kubernetes.io/unreachable: }}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.")
            });
            if told.as_deref() != Some(why.as_str()) {
                self.update(|p| {
                    set_condition(p, "PodScheduled", false, Some("Unschedulable"), Some(&why))
                });
                self.event("Warning", "FailedScheduling", &why);
                told = Some(why);
            }
            tokio::select! {
                ch = self.sig.changed() => if ch.is_err() { return None },
                _ = sched.changed() => {},
                _ = nodes.changed() => {},
            }
        }
    }

    fn backoff(&self, n: u32) -> Duration {
        let base = self.c.options().backoff;
        let max = self.c.options().backoff_max;
        base.saturating_mul(1u32 << n.min(16)).min(max)
    }

    async fn lifecycle(&mut self) {
        let Some(pod) = self.pod() else { return };
        let c0 = pod
            .pointer("/spec/containers/0")
            .cloned()
            .unwrap_or(Value::Null);
        let cname = c0["name"].as_str().unwrap_or("").to_string();
        let image = c0["image"].as_str().unwrap_or("").to_string();
        let policy = pod
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always")
            .to_string();
        let docker_mode = matches!(self.c.options().containers, Containers::Docker);
        let mut restarts: u64 = 0;
        let mut pull_failures: u32 = 0;
        let mut last = json!({});
        let mut image_reported = false;
        self.write_status(
            self.container_status(
                json!({"waiting": {"reason": "ContainerCreating"}}),
                false,
                0,
                json!({}),
                false,
            ),
            None,
            None,
        );
        loop {
            // The image: never pulled here; present on the engine or not.
            let user = if docker_mode {
                docker::image_user(&image).await.map_err(|_| ())
            } else if self.c.image_missing(&image) {
                Err(())
            } else {
                Ok(String::new())
            };
            let user = match user {
                Ok(u) => u,
                Err(()) => {
                    self.event("Normal", "Pulling", &format!("Pulling image \"{image}\""));
                    let why = format!("failed to pull and unpack image \"{image}\": the fake kubelet never pulls and the engine does not have it");
                    self.event(
                        "Warning",
                        "Failed",
                        &format!("Failed to pull image \"{image}\": {why}"),
                    );
                    self.event("Warning", "Failed", "Error: ErrImagePull");
                    self.write_status(
                        self.container_status(
                            json!({"waiting": {"reason": "ErrImagePull", "message": why}}),
                            false,
                            restarts,
                            last.clone(),
                            false,
                        ),
                        None,
                        None,
                    );
                    if let Some(s) = self.sleep_or_signal(self.backoff(pull_failures)).await {
                        return self.end_without_container(s).await;
                    }
                    self.event(
                        "Normal",
                        "BackOff",
                        &format!("Back-off pulling image \"{image}\""),
                    );
                    self.event("Warning", "Failed", "Error: ImagePullBackOff");
                    self.write_status(
                        self.container_status(
                            json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\": ErrImagePull: {why}")}}),
                            false, restarts, last.clone(), false),
                        None,
                        None,
                    );
                    pull_failures += 1;
                    if let Some(s) = self.sleep_or_signal(self.backoff(pull_failures)).await {
                        return self.end_without_container(s).await;
                    }
                    continue;
                }
            };
            if !image_reported {
                self.event(
                    "Normal",
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                );
                image_reported = true;
            }
            // runAsNonRoot is checked by the kubelet against the image's user.
            let non_root = c0
                .pointer("/securityContext/runAsNonRoot")
                .or_else(|| pod.pointer("/spec/securityContext/runAsNonRoot"))
                .and_then(Value::as_bool)
                == Some(true);
            let run_as = c0
                .pointer("/securityContext/runAsUser")
                .or_else(|| pod.pointer("/spec/securityContext/runAsUser"))
                .and_then(Value::as_i64);
            if non_root && docker_mode {
                let uid_part = user.split(':').next().unwrap_or("");
                let err = match run_as {
                    Some(0) => Some("container's runAsUser breaks non-root policy".to_string()),
                    Some(_) => None,
                    None if uid_part.is_empty() || uid_part == "root" || uid_part == "0" => {
                        Some("container has runAsNonRoot and image will run as root".to_string())
                    }
                    None if uid_part.parse::<u32>().is_err() => Some(format!(
                        "container has runAsNonRoot and image has non-numeric user ({uid_part}), cannot verify user is non-root"
                    )),
                    None => None,
                };
                if let Some(err) = err {
                    let msg = format!(
                        "{err} (pod: \"{}_{}({})\", container: {cname})",
                        self.name, self.ns, self.uid
                    );
                    self.event("Warning", "Failed", &format!("Error: {msg}"));
                    self.write_status(
                        self.container_status(json!({"waiting": {"reason": "CreateContainerConfigError", "message": msg}}), false, restarts, last.clone(), false),
                        None,
                        None,
                    );
                    if let Some(s) = self.sleep_or_signal(self.backoff(0)).await {
                        return self.end_without_container(s).await;
                    }
                    continue;
                }
            }
            // Start.
            let started_at = now_rfc3339();
            let start = if docker_mode {
                let instance = self.c.options().instance.clone();
                let cont_name = format!(
                    "nfk-{}-{}-{restarts}",
                    &instance[..instance.len().min(8)],
                    self.name.chars().take(60).collect::<String>()
                );
                let spec = docker::RunSpec {
                    instance: &instance,
                    container_name: cont_name,
                    pod: &pod,
                    container: &c0,
                    node: &self.node,
                    host_ip: &node_ip(&self.node),
                };
                // Counted before the check: shutdown closes, then waits for the count to fall
                // to zero, so either this start sees it closed or shutdown waits for it.
                self.c
                    .0
                    .starting
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if self.c.is_closed() {
                    self.c
                        .0
                        .starting
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                let r = docker::run(&spec).await;
                if self.c.is_closed() {
                    // Shut down while starting: this container is not left behind.
                    if let Ok(id) = &r {
                        let _ = docker::remove(id).await;
                    }
                    self.c
                        .0
                        .starting
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                self.c
                    .0
                    .starting
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                r
            } else {
                match self
                    .sleep_or_signal(self.c.options().fake_ready_delay)
                    .await
                {
                    Some(s) => return self.end_without_container(s).await,
                    None => Ok(format!("{:016x}", random_u64())),
                }
            };
            let id = match start {
                Ok(id) => id,
                Err(e) => {
                    // Like a container whose process could not be exec'd: StartError, then the
                    // restart policy with back-off.
                    self.event(
                        "Warning",
                        "Failed",
                        &format!("Error: failed to start container \"{cname}\": {e}"),
                    );
                    let term = json!({"terminated": {"exitCode": 128, "reason": "StartError", "message": e,
                        "startedAt": started_at, "finishedAt": now_rfc3339()}});
                    let exit = docker::Exit {
                        code: 128,
                        oom: false,
                        started_at: started_at.clone(),
                        finished_at: now_rfc3339(),
                    };
                    match self
                        .after_exit(&policy, &cname, &mut restarts, &mut last, term, exit)
                        .await
                    {
                        true => continue,
                        false => return,
                    }
                }
            };
            let older =
                std::mem::replace(&mut self.previous, self.container_id.replace(id.clone()));
            if let (Some(o), true) = (older, docker_mode) {
                let _ = docker::remove(&o).await;
            }
            self.c
                .set_containers(&self.uid, self.container_id.clone(), self.previous.clone());
            let ip = if docker_mode {
                docker::ip(&id).await.unwrap_or_default()
            } else {
                fake_ip(&self.uid)
            };
            if docker_mode {
                self.event("Normal", "Created", &format!("Created container {cname}"));
                self.event("Normal", "Started", &format!("Started container {cname}"));
            }
            let probe = c0.get("readinessProbe").cloned().filter(|_| docker_mode);
            let ready_now = probe.is_none();
            let running = json!({"running": {"startedAt": started_at}});
            let st =
                self.container_status(running.clone(), ready_now, restarts, last.clone(), true);
            self.update(|p| {
                p["status"]["podIP"] = json!(ip);
                p["status"]["podIPs"] = json!([{"ip": ip}]);
                p["status"]["phase"] = json!("Running");
                set_condition(p, "PodReadyToStartContainers", true, None, None);
                p["status"]["containerStatuses"] = json!([st]);
                set_ready(p, ready_now);
            });
            if !docker_mode {
                // Fake containers: Created/Started are still worth their events.
                self.event("Normal", "Created", &format!("Created container {cname}"));
                self.event("Normal", "Started", &format!("Started container {cname}"));
            }
            let ended = self
                .running(&id, &ip, probe, running, restarts, &last)
                .await;
            match ended {
                Ended::Exited(exit) => {
                    let reason = if exit.oom {
                        "OOMKilled"
                    } else if exit.code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    };
                    let term = json!({"terminated": {"exitCode": exit.code, "reason": reason,
                        "startedAt": exit.started_at, "finishedAt": exit.finished_at}});
                    if !self
                        .after_exit(&policy, &cname, &mut restarts, &mut last, term, exit)
                        .await
                    {
                        return;
                    }
                }
                Ended::Signal(s) => return self.end_running(&id, &cname, s, restarts, &last).await,
            }
        }
    }

    /// After the container ended: `true` to start it again (after the back-off), `false` when
    /// the pod is done (terminal phase written, or a signal handled).
    async fn after_exit(
        &mut self,
        policy: &str,
        cname: &str,
        restarts: &mut u64,
        last: &mut Value,
        term: Value,
        exit: docker::Exit,
    ) -> bool {
        let restart = match policy {
            "Never" => false,
            "OnFailure" => exit.code != 0,
            _ => true,
        };
        if !restart {
            let phase = if exit.code == 0 {
                "Succeeded"
            } else {
                "Failed"
            };
            let st = self.container_status(term, false, *restarts, last.clone(), false);
            self.write_status(st, Some(phase), Some(false));
            // Terminal: wait for the delete (a terminal pod's delete is immediate).
            loop {
                if self.sig.changed().await.is_err() {
                    return false;
                }
                match self.current() {
                    Signal::Run | Signal::Exit(_) | Signal::NodeLost => {}
                    Signal::Gone => return false,
                    Signal::Terminate(_) | Signal::Evict(_) => {
                        self.c.finalize_pod(&self.ns, &self.name, &self.uid);
                        return false;
                    }
                }
            }
        }
        *last = term;
        *restarts += 1;
        if *restarts == 1 {
            // The first restart is immediate; the back-off starts with the second.
            let st = self.container_status(
                json!({"waiting": {"reason": "ContainerCreating"}}),
                false,
                *restarts,
                last.clone(),
                false,
            );
            self.write_status(st, None, Some(false));
            return true;
        }
        let delay = self.backoff(*restarts as u32 - 2);
        let msg = format!(
            "back-off {}s restarting failed container={cname} pod={}_{}({})",
            delay.as_secs(),
            self.name,
            self.ns,
            self.uid
        );
        self.event(
            "Warning",
            "BackOff",
            &format!(
                "Back-off restarting failed container {cname} in pod {}_{}({})",
                self.name, self.ns, self.uid
            ),
        );
        let st = self.container_status(
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}}),
            false,
            *restarts,
            last.clone(),
            false,
        );
        self.write_status(st, None, Some(false));
        match self.sleep_or_signal(delay).await {
            None | Some(Signal::Exit(_)) => true,
            Some(s) => {
                self.end_without_container(s).await;
                false
            }
        }
    }

    /// A signal while no container runs.
    async fn end_without_container(&mut self, s: Signal) {
        match s {
            Signal::Run | Signal::Exit(_) => {}
            Signal::Gone => {}
            Signal::Terminate(_) => {
                self.c.finalize_pod(&self.ns, &self.name, &self.uid);
            }
            Signal::Evict(msg) => self.evicted(&msg),
            Signal::NodeLost => self.node_lost().await,
        }
    }

    fn evicted(&self, msg: &str) {
        self.event("Warning", "Evicted", msg);
        self.update(|p| {
            p["status"]["phase"] = json!("Failed");
            p["status"]["reason"] = json!("Evicted");
            p["status"]["message"] = json!(msg);
            set_ready(p, false);
        });
        let _ = self
            .c
            .delete_pod(&self.ns, &self.name, Some(0), Some(&self.uid));
    }

    async fn node_lost(&self) {
        self.update(|p| {
            set_condition(
                p,
                "Ready",
                false,
                Some("NodeLost"),
                Some("the node this pod ran on failed"),
            );
            set_condition(p, "ContainersReady", false, Some("NodeLost"), None);
            set_condition(
                p,
                "DisruptionTarget",
                true,
                Some("DeletionByTaintManager"),
                Some("Taint manager: deleting due to NoExecute taint"),
            );
        });
        tokio::time::sleep(self.c.options().node_lost_delay).await;
        self.c.finalize_pod(&self.ns, &self.name, &self.uid);
    }

    /// The running phase: probes readiness, waits for the container's exit or a signal.
    async fn running(
        &mut self,
        id: &str,
        ip: &str,
        probe: Option<Value>,
        running: Value,
        restarts: u64,
        last: &Value,
    ) -> Ended {
        let docker_mode = matches!(self.c.options().containers, Containers::Docker);
        let exit = async {
            if docker_mode {
                docker::wait(id).await
            } else {
                std::future::pending().await
            }
        };
        tokio::pin!(exit);
        let num = |k: &str, d: u64| {
            probe
                .as_ref()
                .and_then(|p| p.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(d)
        };
        let initial = Duration::from_secs(num("initialDelaySeconds", 0));
        let period = Duration::from_secs(num("periodSeconds", 10).max(1));
        let timeout = Duration::from_secs(num("timeoutSeconds", 1).max(1));
        let success_th = num("successThreshold", 1).max(1);
        let failure_th = num("failureThreshold", 3).max(1);
        let mut next = tokio::time::Instant::now() + initial;
        let mut ready = probe.is_none();
        let (mut ok_n, mut fail_n) = (0u64, 0u64);
        loop {
            tokio::select! {
                e = &mut exit => return Ended::Exited(e),
                ch = self.sig.changed() => {
                    if ch.is_err() {
                        return Ended::Signal(Signal::Gone);
                    }
                    match self.current() {
                        Signal::Run => {}
                        Signal::Exit(code) if !docker_mode => {
                            let now = now_rfc3339();
                            let started = running.pointer("/running/startedAt").and_then(Value::as_str).map(String::from).unwrap_or_else(now_rfc3339);
                            return Ended::Exited(docker::Exit { code, oom: false, started_at: started, finished_at: now });
                        }
                        Signal::Exit(_) => {}
                        s => return Ended::Signal(s),
                    }
                }
                _ = tokio::time::sleep_until(next), if probe.is_some() => {
                    next = tokio::time::Instant::now() + period;
                    let ok = probe_once(probe.as_ref().expect("probe"), ip, &running_pod_ports(&self.pod()), timeout).await;
                    if ok { ok_n += 1; fail_n = 0; } else { fail_n += 1; ok_n = 0; }
                    let now_ready = if ready { fail_n < failure_th } else { ok_n >= success_th };
                    if now_ready != ready {
                        ready = now_ready;
                        let st = self.container_status(running.clone(), ready, restarts, last.clone(), true);
                        self.write_status(st, None, Some(ready));
                    }
                }
            }
        }
    }

    /// A signal while the container runs.
    async fn end_running(&mut self, id: &str, cname: &str, s: Signal, restarts: u64, last: &Value) {
        let docker_mode = matches!(self.c.options().containers, Containers::Docker);
        match s {
            Signal::Run | Signal::Exit(_) => {}
            Signal::Gone => {
                if docker_mode {
                    let _ = docker::remove(id).await;
                }
            }
            Signal::Terminate(grace) => {
                self.event("Normal", "Killing", &format!("Stopping container {cname}"));
                let exit = if docker_mode {
                    docker::stop(id, grace).await;
                    let e = docker::exit_of(id).await;
                    let _ = docker::remove(id).await;
                    e
                } else {
                    tokio::time::sleep(self.c.options().fake_stop_delay.min(grace)).await;
                    // When it started, as the running state said (a Time is never empty on
                    // the wire: an empty string does not parse as one).
                    let started_at = self
                        .pod()
                        .and_then(|p| {
                            p.pointer("/status/containerStatuses/0/state/running/startedAt")
                                .and_then(Value::as_str)
                                .map(String::from)
                        })
                        .unwrap_or_else(now_rfc3339);
                    docker::Exit {
                        code: 0,
                        oom: false,
                        started_at,
                        finished_at: now_rfc3339(),
                    }
                };
                let reason = if exit.code == 0 { "Completed" } else { "Error" };
                let term = json!({"terminated": {"exitCode": exit.code, "reason": reason, "startedAt": exit.started_at, "finishedAt": exit.finished_at}});
                let phase = if exit.code == 0 {
                    "Succeeded"
                } else {
                    "Failed"
                };
                let st = self.container_status(term, false, restarts, last.clone(), false);
                self.write_status(st, Some(phase), Some(false));
                self.c.finalize_pod(&self.ns, &self.name, &self.uid);
            }
            Signal::Evict(msg) => {
                if docker_mode {
                    let _ = docker::remove(id).await;
                }
                self.evicted(&msg);
            }
            Signal::NodeLost => {
                if docker_mode {
                    let _ = docker::remove(id).await;
                }
                self.node_lost().await;
            }
        }
    }
}

/// A pod's named container ports (`name → port`) for probes that name their port.
fn running_pod_ports(pod: &Option<Value>) -> Vec<(String, u64)> {
    pod.as_ref()
        .and_then(|p| p.pointer("/spec/containers/0/ports"))
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some((
                        p.get("name")?.as_str()?.to_string(),
                        p.get("containerPort")?.as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One readiness probe: httpGet (2xx/3xx is success) or tcpSocket (connects); an exec probe
/// counts as success (the fake does not exec into containers).
async fn probe_once(probe: &Value, ip: &str, ports: &[(String, u64)], timeout: Duration) -> bool {
    let port_of = |v: &Value| -> Option<u64> {
        v.as_u64().or_else(|| {
            let n = v.as_str()?;
            n.parse()
                .ok()
                .or_else(|| ports.iter().find(|(k, _)| k == n).map(|(_, p)| *p))
        })
    };
    if let Some(h) = probe.get("httpGet") {
        let Some(port) = h.get("port").and_then(port_of) else {
            return false;
        };
        let host = h
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or(ip)
            .to_string();
        let path = h
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("/")
            .to_string();
        let fut = async move {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port as u16))
                .await
                .ok()?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.30\r\nAccept: */*\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let r = s.read(&mut buf[n..]).await.ok()?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            let line = String::from_utf8_lossy(&buf[..n]).to_string();
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((200..400).contains(&code))
        };
        return tokio::time::timeout(timeout, fut)
            .await
            .ok()
            .flatten()
            .unwrap_or(false);
    }
    if let Some(t) = probe.get("tcpSocket") {
        let Some(port) = t.get("port").and_then(port_of) else {
            return false;
        };
        return tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port as u16)))
            .await
            .is_ok_and(|r| r.is_ok());
    }
    true
}

static NEXT_IP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A fresh fake pod IP in 10.244.0.0/16 for fake containers (unique for 65,000 pods).
fn fake_ip(_uid: &str) -> String {
    let n = NEXT_IP.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 65_000;
    format!("10.244.{}.{}", n / 250, n % 250 + 2)
}
