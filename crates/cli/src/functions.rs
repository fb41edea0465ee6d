//! `nanofaas fn ...`: apply a manifest, list, show, delete functions and their instances.

use crate::client::{api_error, check_name, Client, Subject, REQUEST_TIMEOUT};
use crate::exit::{err, Exit};
use crate::manifest::{self, Manifest, ManifestError};
use crate::output::{self, millis, note, Format, Spinner};
use bytes::Bytes;
use hyper::Method;
use nanofaas_api::{ExecutionMode, FunctionSpec};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Loads a manifest, turning its problems into exit codes (2: unreadable, 6: invalid).
pub fn load_manifest(path: &Path) -> anyhow::Result<Manifest> {
    manifest::load(path).map_err(|e| match e {
        ManifestError::Read { .. } => err(Exit::Usage, e.to_string()),
        ManifestError::Invalid(p) => err(Exit::Invalid, format!("invalid manifest: {p}")),
    })
}

/// What applying did to one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
        }
    }
}

/// Creates or replaces each function. A function whose stored spec already equals the
/// manifest's is left alone, so re-applying keeps its warm instances.
pub async fn apply(
    client: &Client,
    specs: &[FunctionSpec],
) -> anyhow::Result<Vec<(String, Action)>> {
    let spinner = Spinner::start(
        format!("deploying {} function(s)", specs.len()),
        Duration::from_millis(300),
    );
    let mut done = Vec::new();
    for spec in specs {
        let path = format!("/v1/functions/{}", spec.name);
        let current = client.get(&path).await?;
        if current.status == 200 {
            let stored: Option<FunctionSpec> = serde_json::from_slice(&current.body).ok();
            if stored.as_ref() == Some(spec) {
                done.push((spec.name.clone(), Action::Unchanged));
                continue;
            }
        } else if current.status != 404 {
            return Err(api_error(&current, Subject::Function(&spec.name)));
        }
        let body = serde_json::to_vec(spec).map_err(|e| err(Exit::Failure, e.to_string()))?;
        let r = client
            .send(
                Method::PUT,
                &path,
                &[],
                Some(Bytes::from(body)),
                REQUEST_TIMEOUT,
            )
            .await?;
        match r.status {
            201 => done.push((spec.name.clone(), Action::Created)),
            200 => done.push((spec.name.clone(), Action::Updated)),
            _ => {
                let e = api_error(&r, Subject::Function(&spec.name));
                let exit = crate::exit::exit_of(&e);
                return Err(err(exit, format!("function {:?}: {e}", spec.name)));
            }
        }
    }
    drop(spinner);
    Ok(done)
}

/// Waits until every DEPLOYMENT function has `minInstances` ready instances. Returns the names
/// of those that are not ready by `timeout`.
pub async fn wait_warm(
    client: &Client,
    specs: &[FunctionSpec],
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let mut pending: Vec<&FunctionSpec> = specs
        .iter()
        .filter(|s| s.execution_mode == ExecutionMode::Deployment && s.min_instances > 0)
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let spinner = Spinner::start(
        format!(
            "starting the warm instances (minInstances) of {}",
            pending
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Duration::from_millis(300),
    );
    let deadline = Instant::now() + timeout;
    loop {
        let mut still = Vec::new();
        for s in pending {
            let r = client
                .get(&format!("/v1/functions/{}/instances", s.name))
                .await?;
            if r.status != 200 {
                return Err(api_error(&r, Subject::Function(&s.name)));
            }
            let ready = r
                .json()?
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|i| matches!(i["state"].as_str(), Some("ready" | "busy")))
                        .count()
                })
                .unwrap_or(0);
            if ready < s.min_instances as usize {
                still.push(s);
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(spinner);
    Ok(pending.iter().map(|s| s.name.clone()).collect())
}

/// One line per function: what a table shows of it.
pub fn spec_row(s: &FunctionSpec) -> Vec<String> {
    let target = match s.execution_mode {
        ExecutionMode::Pool => s.endpoint_url.clone().unwrap_or_default(),
        _ => s
            .command
            .as_ref()
            .map(|c| nanofaas_api::command::join(c))
            .or_else(|| s.image.clone())
            .unwrap_or_default(),
    };
    vec![
        s.name.clone(),
        s.execution_mode.as_str().to_string(),
        s.runtime_mode.as_str().to_string(),
        format!("{}/{}", s.min_instances, s.max_instances),
        s.concurrency.to_string(),
        millis(s.timeout_ms),
        target,
    ]
}

pub const SPEC_HEADERS: [&str; 7] = [
    "NAME",
    "MODE",
    "RUNTIME",
    "MIN/MAX",
    "CONCURRENCY",
    "TIMEOUT",
    "TARGET",
];

pub async fn cmd_apply(
    client: &Client,
    format: Format,
    file: &Path,
    setup: bool,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let m = load_manifest(file)?;
    if setup {
        crate::setup::run_all(&m).await?;
    } else if !m.setup.is_empty() {
        note(format!(
            "note: the manifest has {} setup step(s); pass --setup to run them first",
            m.setup.len()
        ));
    }
    let done = apply(client, &m.functions).await?;
    let not_warm = match wait {
        Some(t) => wait_warm(client, &m.functions, t).await?,
        None => Vec::new(),
    };
    match format {
        Format::Json => output::json(&Value::Array(
            done.iter()
                .map(|(n, a)| json!({"name": n, "action": a.as_str()}))
                .collect(),
        )),
        Format::Table => {
            let rows: Vec<Vec<String>> = done
                .iter()
                .map(|(n, a)| vec![n.clone(), a.as_str().to_string()])
                .collect();
            print!("{}", output::table(&["FUNCTION", "ACTION"], &rows));
        }
    }
    if !not_warm.is_empty() {
        return Err(err(
            Exit::Timeout,
            format!(
                "applied, but these functions have fewer ready instances than minInstances after {}: {}; `nanofaas fn instances NAME` shows their instances, the control plane's log says why",
                millis(wait.unwrap_or_default().as_millis() as u64),
                not_warm.join(", ")
            ),
        ));
    }
    Ok(())
}

pub async fn cmd_list(client: &Client, format: Format) -> anyhow::Result<()> {
    let r = client.get("/v1/functions").await?;
    if r.status != 200 {
        return Err(api_error(&r, Subject::Other));
    }
    let v = r.json()?;
    match format {
        Format::Json => output::json(&v),
        Format::Table => {
            let specs: Vec<FunctionSpec> = serde_json::from_value(v).map_err(|e| {
                err(
                    Exit::Failure,
                    format!("unexpected function list from the server: {e}"),
                )
            })?;
            if specs.is_empty() {
                note("no functions; deploy some with `nanofaas fn apply -f FILE`");
            }
            let rows: Vec<Vec<String>> = specs.iter().map(spec_row).collect();
            print!("{}", output::table(&SPEC_HEADERS, &rows));
        }
    }
    Ok(())
}

pub async fn cmd_get(client: &Client, format: Format, name: &str) -> anyhow::Result<()> {
    let name = check_name(name)?;
    let r = client.get(&format!("/v1/functions/{name}")).await?;
    if r.status != 200 {
        return Err(api_error(&r, Subject::Function(name)));
    }
    let v = r.json()?;
    match format {
        Format::Json => output::json(&v),
        // YAML, as a manifest would hold it, in the spec's field order (name first).
        Format::Table => {
            let yaml = match serde_json::from_value::<FunctionSpec>(v.clone()) {
                Ok(spec) => serde_saphyr::to_string(&spec),
                Err(_) => serde_saphyr::to_string(&v),
            };
            print!("{}", yaml.map_err(|e| err(Exit::Failure, e.to_string()))?)
        }
    }
    Ok(())
}

pub async fn cmd_delete(client: &Client, format: Format, name: &str) -> anyhow::Result<()> {
    let name = check_name(name)?;
    let r = client
        .send(
            Method::DELETE,
            &format!("/v1/functions/{name}"),
            &[],
            None,
            REQUEST_TIMEOUT,
        )
        .await?;
    if r.status != 204 && r.status != 200 {
        return Err(api_error(&r, Subject::Function(name)));
    }
    match format {
        Format::Json => output::json(&json!({"name": name, "deleted": true})),
        Format::Table => note(format!(
            "function {name:?} deleted; its instances are stopping"
        )),
    }
    Ok(())
}

pub async fn cmd_instances(client: &Client, format: Format, name: &str) -> anyhow::Result<()> {
    let name = check_name(name)?;
    let r = client
        .get(&format!("/v1/functions/{name}/instances"))
        .await?;
    if r.status != 200 {
        return Err(api_error(&r, Subject::Function(name)));
    }
    let v = r.json()?;
    match format {
        Format::Json => output::json(&v),
        Format::Table => {
            let empty = Vec::new();
            let list = v.as_array().unwrap_or(&empty);
            if list.is_empty() {
                note(format!(
                    "function {name:?} has no instances running (the next invocation starts one: a cold start)"
                ));
            }
            let s = |v: &Value| match v {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let ms = |v: &Value| v.as_u64().map(millis).unwrap_or_else(|| "-".into());
            // A container column for container providers; PIDs where the provider knows them.
            let containers = list.iter().any(|i| i.get("container").is_some());
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|i| {
                    let mut row = vec![
                        s(&i["id"]),
                        s(&i["state"]),
                        s(&i["inflight"]),
                        s(&i["invocations"]),
                        ms(&i["startupMs"]),
                        ms(&i["idleMs"]),
                    ];
                    if containers {
                        row.push(s(&i["container"]));
                    }
                    row.extend([s(&i["pid"]), s(&i["runtimePid"]), s(&i["endpoint"])]);
                    row
                })
                .collect();
            let mut head = vec!["ID", "STATE", "INFLIGHT", "INVOCATIONS", "STARTUP", "IDLE"];
            if containers {
                head.push("CONTAINER");
            }
            head.extend(["PID", "RUNTIME-PID", "ENDPOINT"]);
            print!("{}", output::table(&head, &rows));
            prewarmed_note(client, name).await;
        }
    }
    Ok(())
}

/// Says how many prewarmed instances wait for the function's runtime kind (its command, or its
/// image on the docker provider), so a
/// reader knows whether its next cold start will be a prewarmed one. Quiet when the server
/// keeps none (or is older and has no `/v1/prewarmed`).
async fn prewarmed_note(client: &Client, name: &str) {
    let (Ok(f), Ok(p)) = (
        client.get(&format!("/v1/functions/{name}")).await,
        client.get("/v1/prewarmed").await,
    ) else {
        return;
    };
    if f.status != 200 || p.status != 200 {
        return;
    }
    let (Ok(f), Ok(p)) = (f.json(), p.json()) else {
        return;
    };
    let cmd = f["command"].as_array().map(|c| {
        let argv: Vec<String> = c
            .iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        nanofaas_api::command::join(&argv)
    });
    // The docker provider's kinds are images (labelled "image (runtimeCommand)").
    let image = f["image"]
        .as_str()
        .map(|i| match f["runtimeCommand"].as_str() {
            Some(rc) => format!("{i} ({rc})"),
            None => i.to_string(),
        });
    let empty = Vec::new();
    for k in p.as_array().unwrap_or(&empty) {
        let want = if k["image"].is_string() { &image } else { &cmd };
        let Some(cmd) = want
            .as_deref()
            .filter(|w| k["command"].as_str() == Some(*w))
        else {
            continue;
        };
        let ready = k["ready"].as_array().map_or(0, Vec::len);
        let mem = k["memoryBytes"]
            .as_u64()
            .map(|b| format!(", holding {} MiB", b >> 20))
            .unwrap_or_default();
        match k["disabled"].as_str() {
            Some(why) => note(format!(
                "prewarmed instances of its kind ({cmd}): off ({why})"
            )),
            None => note(format!(
                "prewarmed instances of its kind ({cmd}): {ready} ready, {} starting{mem}",
                k["starting"]
            )),
        }
    }
}
