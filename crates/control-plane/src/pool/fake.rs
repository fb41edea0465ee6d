//! A scripted fake provider for the pool's tests: every call the pool makes reaches the test
//! through [`Script`], which answers starts, acknowledges stops, kills instances, and fails the
//! test when an expected call does not come within a bounded (paused) time or an unexpected
//! one does.

use crate::dispatch::BoxFuture;
use crate::provider::{
    Instance, InstanceInfo, Job, JobRequest, Provider, StartFailure, StartRequest,
};
use nanofaas_api::{FunctionSpec, ValidationError};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// One call the pool made.
pub enum Got {
    Start {
        id: String,
        answer: oneshot::Sender<Result<Instance, StartFailure>>,
    },
    Stop {
        id: String,
        done: oneshot::Sender<()>,
    },
    /// Any other trait method, by name.
    Other(&'static str),
}

impl std::fmt::Debug for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Got::Start { id, .. } => write!(f, "start {id}"),
            Got::Stop { id, .. } => write!(f, "stop {id}"),
            Got::Other(what) => write!(f, "{what}"),
        }
    }
}

pub struct FakeProvider {
    tx: mpsc::UnboundedSender<Got>,
}

impl FakeProvider {
    fn other(&self, what: &'static str) {
        let _ = self.tx.send(Got::Other(what));
    }
}

impl Provider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _spec: &FunctionSpec) -> Result<(), ValidationError> {
        self.other("validate");
        Ok(())
    }

    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<Instance, StartFailure>> {
        let (answer, rx) = oneshot::channel();
        let _ = self.tx.send(Got::Start {
            id: req.instance_id,
            answer,
        });
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(StartFailure {
                    message: "the test dropped the start".into(),
                    permanent: false,
                })
            })
        })
    }

    fn start_job(&self, _req: JobRequest) -> BoxFuture<'_, Result<Job, StartFailure>> {
        self.other("start_job");
        Box::pin(async {
            Err(StartFailure {
                message: "no jobs here".into(),
                permanent: true,
            })
        })
    }

    fn stop<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, ()> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Got::Stop {
            id: instance_id.to_string(),
            done,
        });
        Box::pin(async move {
            let _ = rx.await;
        })
    }

    fn list(&self) -> Vec<InstanceInfo> {
        self.other("list");
        Vec::new()
    }

    fn cleanup_orphans(&self) -> BoxFuture<'_, usize> {
        self.other("cleanup_orphans");
        Box::pin(async { 0 })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.other("shutdown");
        Box::pin(async {})
    }

    fn prewarm_register(&self, _spec: &FunctionSpec) {
        self.other("prewarm_register");
    }

    fn prewarm_unregister(&self, _spec: &FunctionSpec) {
        self.other("prewarm_unregister");
    }
}

/// The test's side of the fake.
pub struct Script {
    rx: mpsc::UnboundedReceiver<Got>,
    /// Exit watches of the instances the test started, by id.
    alive: HashMap<String, watch::Sender<Option<String>>>,
    patience: Duration,
}

/// A connected fake provider and its script.
pub fn pair() -> (FakeProvider, Script) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        FakeProvider { tx },
        Script {
            rx,
            alive: HashMap::new(),
            patience: Duration::from_secs(1),
        },
    )
}

/// A start the test has yet to answer.
pub struct PendingStart {
    pub id: String,
    answer: oneshot::Sender<Result<Instance, StartFailure>>,
}

/// Lets spawned tasks run up to their next wait.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

impl Script {
    /// The next call, within the patience (paused time): a call that never comes fails.
    pub async fn next(&mut self) -> Got {
        tokio::time::timeout(self.patience, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("an expected call never came within {:?}", self.patience))
            .expect("the pool dropped its provider")
    }

    pub async fn expect_start(&mut self) -> PendingStart {
        match self.next().await {
            Got::Start { id, answer } => PendingStart { id, answer },
            other => panic!("expected a start, got {other:?}"),
        }
    }

    /// Expects a start and lets it succeed; returns the instance's id.
    pub async fn start_ok(&mut self) -> String {
        let p = self.expect_start().await;
        let id = p.id.clone();
        self.ready(p).await;
        id
    }

    /// Expects a start and fails it.
    pub async fn start_err(&mut self, message: &str, permanent: bool) {
        let p = self.expect_start().await;
        self.fail(p, message, permanent).await;
    }

    /// Answers a start: the instance is up, reached at a Unix socket named after it.
    pub async fn ready(&mut self, p: PendingStart) {
        self.ready_at(p, None).await
    }

    /// Answers a start with an instance that listens on `socket` (default: a name nothing
    /// listens on).
    pub async fn ready_at(&mut self, p: PendingStart, socket: Option<&str>) {
        let (alive, exited) = watch::channel(None);
        self.alive.insert(p.id.clone(), alive);
        let socket = socket.map_or_else(|| format!("@nanofaas-pool-test/{}", p.id), String::from);
        let _ = p.answer.send(Ok(Instance {
            id: p.id,
            invoke_url: "http://instance/invoke".parse().unwrap(),
            health_url: "http://instance/health".parse().unwrap(),
            socket: Some(socket.into()),
            exited,
        }));
        settle().await;
    }

    pub async fn fail(&mut self, p: PendingStart, message: &str, permanent: bool) {
        let _ = p.answer.send(Err(StartFailure {
            message: message.into(),
            permanent,
        }));
        settle().await;
    }

    /// Expects a stop and completes it (the instance's exit watch fires); returns its id.
    pub async fn expect_stop(&mut self) -> String {
        let (id, done) = self.expect_stop_held().await;
        let _ = done.send(());
        if let Some(w) = self.alive.remove(&id) {
            w.send_replace(Some("stopped".into()));
        }
        settle().await;
        id
    }

    /// Expects a stop and leaves it under way: the test completes it with `done`.
    pub async fn expect_stop_held(&mut self) -> (String, oneshot::Sender<()>) {
        match self.next().await {
            Got::Stop { id, done } => (id, done),
            other => panic!("expected a stop, got {other:?}"),
        }
    }

    pub async fn expect_other(&mut self, what: &str) {
        match self.next().await {
            Got::Other(w) if w == what => {}
            other => panic!("expected {what}, got {other:?}"),
        }
    }

    /// The instance dies on its own.
    pub async fn kill(&mut self, id: &str, why: &str) {
        let w = self.alive.remove(id).expect("a live instance");
        w.send_replace(Some(why.into()));
        settle().await;
    }

    /// No call is pending, nor comes within `d`.
    pub async fn quiet(&mut self, d: Duration) {
        if let Ok(Some(got)) = tokio::time::timeout(d, self.rx.recv()).await {
            panic!("unexpected call: {got:?}");
        }
    }
}
