//! The nanofaas control plane as a library; the `nanofaas serve` command is a thin shell over
//! [`server::start`].
//!
//! # Layout
//! - [`config`]: every setting, its default, and loading from file, environment and flags.
//! - [`server`]: binding, serving HTTP, orderly shutdown.
//! - [`api`]: routes, request validation, responses (the HTTP edge; no business rules).
//! - [`platform`]: registry operations, invocations (sync and async), retries, callbacks.
//! - [`admission`]: per-function concurrency limit and bounded FIFO queue, backpressure.
//! - [`executions`]: execution records, one outcome per attempt, the bounded store.
//! - [`idempotency`]: idempotency keys bound to executions.
//! - [`dispatch`]: the `Backend` trait and the HTTP hop to endpoints and instances ([`h1`]: the
//!   inline keep-alive HTTP/1.1 client of that hop).
//! - [`managed`]: builds the backend of each function: endpoint, warm [`pool`] or [`job`].
//! - [`pool`]: warm instances of a DEPLOYMENT function: leasing, scaling, recycling, health.
//! - [`prewarm`]: generic (prewarmed) instances per runtime kind, taken and specialized by a
//!   cold start.
//! - [`job`]: one one-shot instance per attempt, completed by callback (JOB).
//! - [`provider`]: the `Provider` trait, the `process` provider (local processes, the default)
//!   and the `docker` provider (containers through the Docker Engine API).
//! - [`registry`]: the live functions; [`persist`]: specs and the async journal on disk.
//! - [`access`]: API tokens and roles, allowed hosts and origins, JSON-only bodies.
//! - [`auth`]: per-attempt callback tokens.
//! - [`metrics`]: declared Prometheus metrics (`nanofaas_` names, encoded by `prometheus-client`);
//!   [`ratelimit`]: token buckets; [`ids`]: ids.
//! - [`telemetry`]: logging set-up; [`tls`]: optional TLS of the API listener.
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
