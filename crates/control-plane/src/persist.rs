//! What survives a restart of the control plane: registered function specs, and the journal of
//! accepted asynchronous invocations.
//!
//! Specs are one JSON file each under `{state_dir}/functions/`, replaced atomically (write, then
//! rename). The journal `{state_dir}/journal.jsonl` has one line per accepted async invocation and
//! one per finished one; at start-up the lines of accepted-but-unfinished invocations are read back
//! (so a 202 runs even if the control plane died) and the journal is rewritten with only them.
//! Each record is written with one `write` call before the caller gets its answer, so it survives a
//! crash of the process; `journal_fsync` also makes it survive a crash of the machine.
//!
//! This module does file I/O only; the platform decides what to do with what it reads.

use bytes::Bytes;
use nanofaas_api::FunctionSpec;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Function specs on disk.
pub struct SpecStore {
    dir: PathBuf,
}

impl SpecStore {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let dir = state_dir.join("functions");
        fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        // Names are validated (letters, digits, . _ -, not starting with a dot): safe file names.
        self.dir.join(format!("{name}.json"))
    }

    pub fn save(&self, spec: &FunctionSpec) -> Result<(), String> {
        let path = self.path(&spec.name);
        let tmp = self.dir.join(format!(".{}.json.tmp", spec.name));
        let body = serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?;
        fs::write(&tmp, body).map_err(|e| io_err("cannot write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err("cannot replace", &path, e))
    }

    pub fn remove(&self, name: &str) -> Result<(), String> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &path, e)),
        }
    }

    /// Every stored spec, and a message for each file that could not be used.
    pub fn load(&self) -> (Vec<FunctionSpec>, Vec<String>) {
        let mut specs = Vec::new();
        let mut problems = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => return (specs, vec![io_err("cannot list", &self.dir, e)]),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p.file_name().unwrap().to_string_lossy().starts_with('.')
            })
            .collect();
        paths.sort();
        for p in paths {
            match fs::read(&p) {
                Ok(b) => match FunctionSpec::from_json(&b) {
                    Ok(s) => specs.push(s),
                    Err(e) => problems.push(format!("{}: {e}", p.display())),
                },
                Err(e) => problems.push(io_err("cannot read", &p, e)),
            }
        }
        (specs, problems)
    }
}

#[derive(Serialize, Deserialize)]
struct Record<'a> {
    /// `a`: accepted, `f`: finished.
    t: &'a str,
    id: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    body: Option<&'a RawValue>,
}

/// An accepted async invocation that had not finished when the journal was last written.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: String,
    pub function: String,
    pub trace_id: String,
    pub created_at: u64,
    pub body: Bytes,
}

pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    fsync: bool,
}

impl Journal {
    /// Opens the journal, returns the invocations still pending, and rewrites the file with only
    /// those.
    pub fn open(
        state_dir: &Path,
        fsync: bool,
    ) -> Result<(Journal, Vec<Pending>, Vec<String>), String> {
        fs::create_dir_all(state_dir).map_err(|e| io_err("cannot create", state_dir, e))?;
        let path = state_dir.join("journal.jsonl");
        let (pending, problems) = read_pending(&path)?;
        let tmp = state_dir.join(".journal.jsonl.tmp");
        {
            let mut f = File::create(&tmp).map_err(|e| io_err("cannot write", &tmp, e))?;
            for p in &pending {
                f.write_all(&accepted_line(
                    &p.id,
                    &p.function,
                    &p.trace_id,
                    p.created_at,
                    &p.body,
                ))
                .map_err(|e| io_err("cannot write", &tmp, e))?;
            }
            f.sync_all().map_err(|e| io_err("cannot sync", &tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| io_err("cannot replace", &path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err("cannot open", &path, e))?;
        Ok((
            Journal {
                path,
                file: Mutex::new(file),
                fsync,
            },
            pending,
            problems,
        ))
    }

    fn append(&self, line: &[u8]) -> Result<(), String> {
        let mut f = self.file.lock().unwrap();
        f.write_all(line)
            .map_err(|e| io_err("cannot append to", &self.path, e))?;
        if self.fsync {
            f.sync_data()
                .map_err(|e| io_err("cannot sync", &self.path, e))?;
        }
        Ok(())
    }

    pub fn accepted(
        &self,
        id: &str,
        function: &str,
        trace_id: &str,
        created_at: u64,
        body: &[u8],
    ) -> Result<(), String> {
        self.append(&accepted_line(id, function, trace_id, created_at, body))
    }

    pub fn finished(&self, id: &str) -> Result<(), String> {
        let rec = Record {
            t: "f",
            id,
            function: None,
            trace: None,
            at: None,
            body: None,
        };
        let mut line = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.append(&line)
    }
}

fn accepted_line(id: &str, function: &str, trace: &str, at: u64, body: &[u8]) -> Vec<u8> {
    let raw: Option<&RawValue> = std::str::from_utf8(body)
        .ok()
        .and_then(|s| serde_json::from_str(s).ok());
    let rec = Record {
        t: "a",
        id,
        function: Some(function),
        trace: Some(trace),
        at: Some(at),
        body: Some(raw.unwrap_or_else(|| serde_json::from_str("{\"input\":null}").unwrap())),
    };
    let mut line = serde_json::to_vec(&rec).unwrap_or_default();
    line.push(b'\n');
    line
}

fn read_pending(path: &Path) -> Result<(Vec<Pending>, Vec<String>), String> {
    let mut problems = Vec::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), problems)),
        Err(e) => return Err(io_err("cannot read", path, e)),
    };
    let mut order: Vec<String> = Vec::new();
    let mut open: std::collections::HashMap<String, Pending> = std::collections::HashMap::new();
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| io_err("cannot read", path, e))?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) if r.t == "a" => {
                let (Some(function), Some(body)) = (r.function, r.body) else {
                    problems.push(format!(
                        "{}:{}: accepted record without function or body",
                        path.display(),
                        n + 1
                    ));
                    continue;
                };
                order.push(r.id.to_string());
                open.insert(
                    r.id.to_string(),
                    Pending {
                        id: r.id.to_string(),
                        function: function.to_string(),
                        trace_id: r.trace.unwrap_or_default().to_string(),
                        created_at: r.at.unwrap_or(0),
                        body: Bytes::copy_from_slice(body.get().as_bytes()),
                    },
                );
            }
            Ok(r) if r.t == "f" => {
                open.remove(r.id);
            }
            Ok(r) => problems.push(format!(
                "{}:{}: unknown record type {:?}",
                path.display(),
                n + 1,
                r.t
            )),
            // A crash in the middle of a write leaves a torn last line; anything else is damage.
            Err(e) => problems.push(format!(
                "{}:{}: unreadable record skipped: {e}",
                path.display(),
                n + 1
            )),
        }
    }
    let pending = order
        .into_iter()
        .filter_map(|id| open.remove(&id))
        .collect();
    Ok((pending, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nanofaas-persist-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn journal_replays_unfinished_and_compacts() {
        let d = tempdir("journal");
        {
            let (j, pending, problems) = Journal::open(&d, false).unwrap();
            assert!(pending.is_empty() && problems.is_empty());
            j.accepted("e1", "f", "t1", 1, br#"{"input": 1}"#).unwrap();
            j.accepted("e2", "f", "t2", 2, br#"{"input": {"deep": [1, 2]}}"#)
                .unwrap();
            j.accepted("e3", "g", "t3", 3, br#"{"input": null}"#)
                .unwrap();
            j.finished("e1").unwrap();
        }
        // A torn last line, as a crash mid-write leaves.
        let path = d.join("journal.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"t":"a","id":"e4","fun"#).unwrap();
        drop(f);
        let (j, pending, problems) = Journal::open(&d, true).unwrap();
        assert_eq!(
            pending.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["e2", "e3"]
        );
        assert_eq!(
            pending[0].body,
            Bytes::from_static(br#"{"input": {"deep": [1, 2]}}"#)
        );
        assert_eq!(pending[1].function, "g");
        assert_eq!(problems.len(), 1, "{problems:?}");
        j.finished("e2").unwrap();
        drop(j);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().count(),
            3,
            "compacted to the two pending ones, then one finish: {text}"
        );
        let (_, pending, _) = Journal::open(&d, false).unwrap();
        assert_eq!(pending.len(), 1);
        fs::remove_dir_all(d).ok();
    }

    #[test]
    fn specs_round_trip() {
        let d = tempdir("specs");
        let s = SpecStore::open(&d).unwrap();
        let mut spec = FunctionSpec::named("echo");
        spec.command = Some(vec!["./run".into()]);
        s.save(&spec).unwrap();
        fs::write(d.join("functions/broken.json"), "{").unwrap();
        let (specs, problems) = s.load();
        assert_eq!(specs, vec![spec]);
        assert_eq!(problems.len(), 1);
        s.remove("echo").unwrap();
        s.remove("echo").unwrap();
        assert!(s.load().0.is_empty());
        fs::remove_dir_all(d).ok();
    }
}
