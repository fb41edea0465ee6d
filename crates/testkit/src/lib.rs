//! Helpers shared by the integration tests of every nanofaas crate.
//!
//! Integration tests start real binaries on loopback; this crate owns the plumbing that makes
//! that safe and quick: finding the binaries, spawning them so that nothing outlives a test,
//! waiting without unbounded loops, a local HTTP sink for callbacks and a small HTTP client.
//! It is a dev-dependency only and never ships.
//!
//! # Layout
//! - [`proc`]: [`workspace_bin`], [`Proc`] (a child in its own process group, SIGKILLed on
//!   drop, with captured output), [`pid_alive`].
//! - [`wait`]: [`free_port`], [`wait_until`] (bounded polling).
//! - [`sink`]: [`CallbackSink`], an HTTP server that records every request.
//! - [`client`]: [`http`], [`get_json`], [`post_json`].
//!
//! The binary `nanofaas-test-runtime` (in `src/bin/`) is a scriptable runtime that speaks the
//! runtime contract; see its module documentation for what it can be told to do.

pub mod client;
pub mod proc;
pub mod sink;
pub mod wait;

pub use client::{get_json, http, post_json, Response};
pub use proc::{pid_alive, serve_nanofaas, serve_nanofaas_env, workspace_bin, Proc, Stream};
pub use sink::{CallbackSink, Recorded, SinkConfig};
pub use wait::{free_port, wait_until};
