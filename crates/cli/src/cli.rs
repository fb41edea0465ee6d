//! The command line: parses it, runs the chosen command and maps its result to an exit code
//! (every code is in [`crate::exit::Exit`] and docs/cli.md).

use crate::client::{Client, DEFAULT_ENDPOINT};
use crate::exit::{self, err, Exit};
use crate::invoke::InvokeArgs;
use crate::output::Format;
use crate::serve::{self, ServeArgs};
use crate::up::{self, UpArgs};
use crate::{exec, functions, invoke};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "nanofaas",
    version,
    about = "A small, fast function-as-a-service platform",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 server did not start, 4 control plane unreachable, \
5 not found, 6 invalid manifest or request, 7 function error, 8 timeout, 9 backpressure, \
10 conflict, 11 setup step failed, 12 refused to listen beyond loopback without tokens, 13 token missing or not allowed, \
130 interrupted (docs/cli.md)."
)]
pub struct Cli {
    /// URL of the control plane (client commands).
    #[arg(
        long,
        global = true,
        env = "NANOFAAS_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL"
    )]
    pub endpoint: String,
    /// Bearer token sent to the control plane (client commands), when it has tokens configured.
    #[arg(
        long,
        global = true,
        env = "NANOFAAS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Output: `table` for people, `json` for scripts (on stdout; messages go to stderr).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the control plane in the foreground.
    Serve(ServeArgs),
    /// Run the control plane with a manifest's functions deployed (default: the examples).
    Up(UpArgs),
    /// Deploy and inspect functions.
    #[command(subcommand)]
    Fn(FnCommand),
    /// Invoke a function and wait for its result.
    Invoke(InvokeArgs),
    /// Invoke a function asynchronously; prints the execution id.
    Enqueue(InvokeArgs),
    /// Inspect executions.
    #[command(subcommand)]
    Exec(ExecCommand),
    /// Make API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a new random token once, and the line that configures its hash.
    Create {
        /// admin, deployer, invoker or viewer (docs/security.md).
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// For an invoker: the functions it may use, as name patterns with `*` (repeatable, or
        /// separated by commas). Default: every function.
        #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
        functions: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FnCommand {
    /// Create or replace the functions of a manifest (unchanged ones are left alone).
    Apply {
        /// The manifest (YAML).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Run the manifest's setup steps first.
        #[arg(long)]
        setup: bool,
        /// Wait until each function has its minInstances ready, at most this many seconds.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "120")]
        wait: Option<u64>,
    },
    /// List the functions.
    List,
    /// Show a function's spec (YAML; JSON with -o json).
    Get { name: String },
    /// Delete a function; its queued work fails with FUNCTION_REMOVED and its instances stop.
    Delete { name: String },
    /// Show a function's instances (state, invocations, PIDs).
    Instances { name: String },
    /// Show the recent output lines of a function's instances; with --follow, stream them as
    /// they are written until Ctrl-C (then exit 0).
    Logs {
        name: String,
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExecCommand {
    /// Show an execution; with --watch, wait until it is final.
    Get {
        /// The execution id.
        id: String,
        /// Poll until the execution is final.
        #[arg(long, short = 'w')]
        watch: bool,
        /// With --watch: give up after this many seconds (exit code 8).
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
    },
    /// Show what the function wrote while it served an execution.
    Logs {
        /// The execution id.
        id: String,
    },
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nanofaas: {e:#}");
            exit::code_of(&e)
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let format = cli.output;
    let endpoint = (cli.endpoint.as_str(), cli.token.as_deref());
    let endpoint = &endpoint;
    match cli.command {
        Command::Token(TokenCommand::Create { role, functions }) => {
            crate::token::cmd_create(format, &role, &functions)
        }
        Command::Serve(args) => serve::run(args),
        Command::Up(args) => up::run(args),
        Command::Fn(c) => client_command(endpoint, |client| async move {
            match c {
                FnCommand::Apply { file, setup, wait } => {
                    functions::cmd_apply(
                        &client,
                        format,
                        &file,
                        setup,
                        wait.map(Duration::from_secs),
                    )
                    .await
                }
                FnCommand::List => functions::cmd_list(&client, format).await,
                FnCommand::Get { name } => functions::cmd_get(&client, format, &name).await,
                FnCommand::Delete { name } => functions::cmd_delete(&client, format, &name).await,
                FnCommand::Instances { name } => {
                    functions::cmd_instances(&client, format, &name).await
                }
                FnCommand::Logs { name, follow } => {
                    crate::logs::cmd_fn_logs(&client, format, &name, follow).await
                }
            }
        }),
        Command::Invoke(args) => client_command(endpoint, |client| async move {
            invoke::cmd_invoke(&client, format, &args).await
        }),
        Command::Enqueue(args) => client_command(endpoint, |client| async move {
            invoke::cmd_enqueue(&client, format, &args).await
        }),
        Command::Exec(ExecCommand::Get { id, watch, timeout }) => {
            client_command(endpoint, |client| async move {
                exec::cmd_get(&client, format, &id, watch, Duration::from_secs(timeout)).await
            })
        }
        Command::Exec(ExecCommand::Logs { id }) => client_command(endpoint, |client| async move {
            crate::logs::cmd_exec_logs(&client, format, &id).await
        }),
    }
}

/// Runs a client command on a small single-threaded runtime.
fn client_command<F, Fut>(endpoint: &(&str, Option<&str>), f: F) -> anyhow::Result<()>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let client = Client::new(endpoint.0)?.with_token(endpoint.1)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            err(
                Exit::Failure,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    rt.block_on(f(client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_forms() {
        let c = Cli::try_parse_from([
            "nanofaas",
            "invoke",
            "f",
            "-d",
            "@-",
            "--timeout-ms",
            "5",
            "--idempotency-key",
            "k",
            "--trace-id",
            "t",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(c.output, Format::Json);
        match c.command {
            Command::Invoke(a) => {
                assert_eq!(a.data.as_deref(), Some("@-"));
                assert_eq!(a.timeout_ms, Some(5));
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["nanofaas", "fn", "apply", "-f", "m.yaml", "--wait"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Fn(FnCommand::Apply {
                wait: Some(120),
                ..
            })
        ));
        let c = Cli::try_parse_from(["nanofaas", "exec", "get", "id", "--watch"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Exec(ExecCommand::Get {
                watch: true,
                timeout: 60,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["nanofaas", "invoke"]).is_err());
    }
}
