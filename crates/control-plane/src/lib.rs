//! The nanofaas control plane as a library; the `nanofaas serve` command is a thin shell over
//! [`server::start`].
//!
//! # Layout, along the seams
//! The edge:
//! - [`config`]: every setting, its default, and loading from file, environment and flags.
//! - [`server`]: binding, serving HTTP, orderly shutdown; [`tls`]: optional TLS of the listener.
//! - [`api`]: routes, request validation, responses (the HTTP edge; no business rules);
//!   [`error`]: every error a route answers and its one mapping to a status and body.
//! - [`access`]: API tokens and roles, allowed hosts and origins, JSON-only bodies;
//!   [`auth`]: per-attempt callback tokens; [`ratelimit`]: token buckets.
//!
//! The invocation path:
//! - [`platform`]: what every route calls: registry operations, invocations (sync and async),
//!   retries, callbacks, the detached rest of a call whose caller left.
//! - [`admission`]: per-function concurrency limit and bounded FIFO queue, backpressure.
//! - [`executions`]: execution records, one outcome per attempt, the bounded store;
//!   [`idempotency`]: idempotency keys bound to executions; [`ids`]: ids.
//! - [`dispatch`]: the `Backend` trait and the HTTP hop to endpoints and instances ([`h1`]: the
//!   inline keep-alive HTTP/1.1 client of that hop).
//!
//! The registry and what survives a restart:
//! - [`registry`]: the live functions; [`persist`]: specs and the async journal on disk.
//!
//! Instances:
//! - [`managed`]: builds the backend of each function: endpoint, warm [`pool`] or [`job`].
//! - [`pool`]: warm instances of a DEPLOYMENT function: its state and the one step function that
//!   changes it (`pool/core.rs`), the driver, the backend.
//! - [`prewarm`]: generic (prewarmed) instances per runtime kind, taken and specialized by a
//!   cold start.
//! - [`job`]: one one-shot instance per attempt, completed by callback (JOB).
//! - [`provider`]: the `Provider` trait, what backends share (exit watching, leases, output
//!   lines) and one folder per backend: `process/` (local processes, the default), `docker/`
//!   (containers through the Docker Engine API), `kubernetes/` (pods through the Kubernetes API).
//!
//! Observability:
//! - [`metrics`]: declared Prometheus metrics (`nanofaas_` names, encoded by `prometheus-client`).
//! - [`logs`]: what functions print, per execution and per function, bounded.
//! - [`telemetry`]: the control plane's own logging set-up.
//! - [`trace`]: W3C trace context and the spans of each execution, built from timestamps on its
//!   record; [`otlp`]: their optional export over OTLP/HTTP.
//! - [`ui`]: the dashboard at `/ui`, its event stream and its time series.

pub mod access;
pub mod admission;
pub mod api;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod executions;
pub mod idempotency;
pub mod ids;
pub mod job;
pub mod logs;
pub mod managed;
pub mod metrics;
pub mod otlp;
pub mod persist;
pub mod platform;
pub mod pool;
pub mod prewarm;
pub mod provider;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod ui;

/// The inline keep-alive HTTP/1.1 client of the dispatch hop (crate `nanofaas-h1`).
pub use nanofaas_h1 as h1;

pub use config::Config;
pub use server::{start, start_with, ServerHandle};
