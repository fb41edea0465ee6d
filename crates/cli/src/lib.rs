//! The `nanofaas` command as a library: the binary (`src/main.rs`) only calls [`cli::main`].
//!
//! # Layout
//! - [`cli`]: the command line (clap) and dispatch to the commands.
//! - [`exit`]: the documented exit codes and the error type carrying one.
//! - [`serve`]: `nanofaas serve`, the control plane in the foreground; signal handling.
//! - [`up`]: `nanofaas up`: serve + setup steps + deploy a manifest + a ready-to-paste example.
//! - [`manifest`]: manifest files: parsing, `${VAR}` expansion, paths, validation with locations.
//! - [`setup`]: running a manifest's setup steps with progress, leaving nothing behind.
//! - [`functions`]: `fn apply|list|get|delete|instances`.
//! - [`invoke`]: `invoke` and `enqueue`.
//! - [`exec`]: `exec get [--watch]`.
//! - [`token`]: `token create`: a new API token and its configuration line.
//! - [`client`]: the HTTP client and the mapping of API errors to exit codes and hints.
//! - [`output`]: tables, JSON, messages and the spinner (stdout for data, stderr for people).
pub mod cli;
pub mod client;
pub mod exec;
pub mod exit;
pub mod functions;
pub mod invoke;
pub mod logs;
pub mod manifest;
pub mod output;
pub mod port;
pub mod serve;
pub mod setup;
pub mod token;
pub mod up;
