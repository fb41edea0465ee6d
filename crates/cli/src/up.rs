//! `nanofaas up`: the control plane in this process with the embedded defaults (process
//! provider, state under `.nanofaas/state`), a manifest's setup steps, its functions deployed,
//! and a ready-to-paste invocation. Ctrl-C or SIGTERM stops everything: the control plane's
//! shutdown stops every instance, and setup steps run in process groups that are killed with it.

use crate::client::{Client, DEFAULT_ENDPOINT};
use crate::exit::{err, Exit};
use crate::functions::{self, SPEC_HEADERS};
use crate::output::{self, note};
use crate::serve::{self, ServeArgs, Signals};
use clap::Args;
use nanofaas_api::command::join;
use std::path::PathBuf;
use std::time::Duration;

/// Logs `up` shows by default: warnings, each finished execution, and what functions print.
pub const UP_LOG_FILTER: &str = "warn,nanofaas::execution=info,nanofaas::function=info";

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// The manifest to deploy.
    #[arg(
        long,
        short = 'f',
        value_name = "PATH",
        default_value = "examples/manifest.yaml"
    )]
    pub manifest: PathBuf,
    /// Skip the manifest's setup steps.
    #[arg(long)]
    pub no_setup: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub fn run(mut args: UpArgs) -> anyhow::Result<()> {
    let m = functions::load_manifest(&args.manifest).map_err(|e| {
        if crate::exit::exit_of(&e) == Exit::Usage && !args.manifest.exists() {
            err(
                Exit::Usage,
                format!(
                    "{e}; run `nanofaas up` from the repository's root (where examples/manifest.yaml is) or pass --manifest PATH"
                ),
            )
        } else {
            e
        }
    })?;
    let quiet_default = args.serve.log_level.is_none()
        && args.serve.config.is_none()
        && std::env::var_os("NANOFAAS_LOG_LEVEL").is_none();
    if quiet_default {
        args.serve.log_level = Some(UP_LOG_FILTER.to_string());
    }
    let mut config = serve::load_config(&args.serve)?;
    // With API tokens configured, `up` deploys with a token of its own, valid for this run only.
    let own_token = if config.api.tokens.is_empty() {
        None
    } else {
        let (token, entry) = crate::token::create("admin", &[])?;
        config.api.tokens.push(entry);
        Some(token)
    };
    nanofaas_control_plane::telemetry::init(
        &config.log_level,
        config.log_format == nanofaas_control_plane::config::LogFormat::Json,
    )
    .map_err(|e| err(Exit::Usage, e))?;
    let needs_token = own_token.is_some();
    let rt = serve::server_runtime()?;
    let result = rt.block_on(async move {
        // The address first: a busy port is reported now, not after minutes of setup.
        nanofaas_control_plane::server::preflight(&config).map_err(serve::start_error)?;
        let listener = crate::port::bind(&config.listen, "up").await?;
        let mut signals = Signals::new()?;
        if !args.no_setup && !m.setup.is_empty() {
            note(format!(
                "setting up ({} step(s) from {}; the first run takes longest)",
                m.setup.len(),
                m.path.display()
            ));
            tokio::select! {
                r = crate::setup::run_all(&m) => r?,
                which = signals.recv() => {
                    return Err(err(Exit::Interrupted, format!("{which} received during setup; stopped it")));
                }
            }
        }
        let startup = Duration::from_millis(config.provider.startup_timeout_ms) + Duration::from_secs(5);
        let state_dir = config.state_dir.clone();
        let handle = nanofaas_control_plane::server::start_on(config, listener)
            .await
            .map_err(serve::start_error)?;
        let addr = handle.addr;
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let base = format!("http://{host}");
        println!("nanofaas listening on http://{addr}");
        let stop = handle.stop_signal();
        let client = Client::new(&base)?.with_token(own_token.as_deref())?;
        let deploy = async {
            let done = functions::apply(&client, &m.functions).await?;
            let cold = functions::wait_warm(&client, &m.functions, startup).await?;
            Ok::<_, anyhow::Error>((done, cold))
        };
        let outcome = tokio::select! {
            r = deploy => Some(r),
            which = signals.recv() => {
                note(format!("{which} received; stopping"));
                None
            }
        };
        let (done, not_warm) = match outcome {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                let _ = stop.send(true);
                handle.wait().await;
                return Err(e);
            }
            None => {
                let _ = stop.send(true);
                handle.wait().await;
                return Err(err(Exit::Interrupted, "interrupted while deploying; stopped"));
            }
        };
        for name in &not_warm {
            note(format!(
                "warning: {name} has fewer ready instances than its minInstances; `nanofaas fn instances {name}` and the log above say why"
            ));
        }
        print!("{}", banner(&m, &done, &base, &state_dir));
        if needs_token {
            note("API tokens are configured: the commands above need one of yours (NANOFAAS_TOKEN=... for the CLI, -H \"Authorization: Bearer $NANOFAAS_TOKEN\" for curl)");
        }
        let which = signals.recv().await;
        note(format!("{which} received; stopping the functions' instances and the control plane"));
        let _ = stop.send(true);
        handle.wait().await;
        note("stopped");
        Ok(())
    });
    nanofaas_control_plane::telemetry::flush();
    result
}

/// What `up` prints once everything is deployed.
fn banner(
    m: &crate::manifest::Manifest,
    done: &[(String, functions::Action)],
    base: &str,
    state_dir: &str,
) -> String {
    let mut out = String::new();
    out.push('\n');
    out.push_str(&format!("nanofaas is up on {base}\n"));
    if !state_dir.is_empty() {
        let abs = std::path::absolute(state_dir).unwrap_or_else(|_| PathBuf::from(state_dir));
        out.push_str(&format!("state: {}\n", abs.display()));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = m
        .functions
        .iter()
        .map(|s| {
            let mut r = functions::spec_row(s);
            let action = done
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, a)| a.as_str())
                .unwrap_or("");
            r.insert(1, action.to_string());
            r.truncate(4);
            r
        })
        .collect();
    out.push_str(&output::table(
        &[SPEC_HEADERS[0], "DEPLOY", SPEC_HEADERS[1], SPEC_HEADERS[2]],
        &rows,
    ));
    let example = m
        .example
        .as_ref()
        .map(|e| (e.function.clone(), e.input.clone()))
        .or_else(|| {
            m.functions
                .first()
                .map(|f| (f.name.clone(), serde_json::Value::Null))
        });
    if let Some((name, input)) = example {
        let cli = cli_command();
        let body = serde_json::json!({ "input": input }).to_string();
        let data = if input.is_null() {
            String::new()
        } else {
            format!(" -d {}", join(&[input.to_string()]))
        };
        out.push_str("\nTry it:\n");
        if base != DEFAULT_ENDPOINT {
            // Every later command (the CLI, the README's tour) follows it.
            out.push_str(&format!(
                "  export NANOFAAS_ENDPOINT={base}    # in each terminal you use nanofaas from\n"
            ));
        }
        out.push_str(&format!(
            "  curl -s -X POST {base}/v1/functions/{name}:invoke -H 'content-type: application/json' -d {}\n",
            join(&[body])
        ));
        out.push_str(&format!("  {cli} invoke {name}{data}\n"));
        out.push_str(&format!("  {cli} fn instances {name}\n"));
    }
    out.push_str("\nPress Ctrl-C to stop (the functions' instances stop with it).\n");
    out
}

/// How to run this very binary from the current folder: `nanofaas` when it is the one on PATH,
/// else its path (relative when it is below the current folder).
pub(crate) fn cli_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "nanofaas".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|d| std::fs::canonicalize(d.join("nanofaas")).is_ok_and(|p| p == exe))
    });
    if on_path {
        return "nanofaas".into();
    }
    let cwd = std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .unwrap_or_default();
    match exe.strip_prefix(&cwd) {
        Ok(rel) => join(&[format!("./{}", rel.display())]),
        Err(_) => join(&[exe.display().to_string()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::Action;
    use crate::manifest::{Example, Manifest};
    use nanofaas_api::FunctionSpec;

    #[test]
    fn banner_has_a_ready_to_paste_example() {
        let mut f = FunctionSpec::named("hello");
        f.command = Some(vec!["./run".into()]);
        let m = Manifest {
            path: "/m.yaml".into(),
            dir: "/".into(),
            setup: vec![],
            functions: vec![f],
            example: Some(Example {
                function: "hello".into(),
                input: serde_json::json!({"name": "it's me"}),
            }),
        };
        let b = banner(
            &m,
            &[("hello".into(), Action::Created)],
            "http://127.0.0.1:9000",
            "",
        );
        assert!(b.contains("nanofaas is up on http://127.0.0.1:9000"), "{b}");
        assert!(b.contains("hello  created  DEPLOYMENT  HTTP"), "{b}");
        assert!(
            b.contains(
                r#"curl -s -X POST http://127.0.0.1:9000/v1/functions/hello:invoke -H 'content-type: application/json' -d '{"input":{"name":"it'\''s me"}}'"#
            ),
            "{b}"
        );
        assert!(
            b.contains("Try it:\n  export NANOFAAS_ENDPOINT=http://127.0.0.1:9000 "),
            "the export line comes first: {b}"
        );
        assert!(
            b.contains(r#" invoke hello -d '{"name":"it'\''s me"}'"#),
            "{b}"
        );
        let b = banner(&m, &[], DEFAULT_ENDPOINT, "");
        assert!(b.contains(" invoke hello -d"), "{b}");
        assert!(!b.contains("NANOFAAS_ENDPOINT"), "{b}");
    }

    #[test]
    fn the_cli_command_runs_this_binary() {
        let c = cli_command();
        assert!(c == "nanofaas" || c.contains('/'), "{c}");
    }
}
