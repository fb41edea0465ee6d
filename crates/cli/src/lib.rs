//! The `nanofaas` command as a library: the binary (`src/main.rs`) only calls [`cli::main`].
//!
//! # Layout
//! - [`cli`]: the command line (clap), dispatch to the commands, exit codes.
//! - [`manifest`]: manifest files: parsing, `${VAR}` expansion, paths, validation with locations.
//! - [`serve`]: `nanofaas serve`, the control plane in the foreground.
//! - [`exit`]: the documented exit codes and the error type carrying one.
pub mod cli;
pub mod exit;
pub mod manifest;
pub mod serve;
