//! Fuzzing nanofaas's parsers on stable Rust.
//!
//! - [`targets`]: plain `fn(&[u8])` targets (invocation and spec bodies as the API checks them,
//!   the strict JSON rules against serde_json, the watchdog's envelope, the CLI's manifest
//!   loader, the hot-path HTTP client's response parsing). A target panics when a property
//!   breaks.
//! - [`mutate`]: a deterministic PRNG, byte-level mutations with a per-target dictionary, and a
//!   structure-aware JSON generator.
//! - [`fuzz`]: a bounded, coverage-blind mutation fuzzer: seeds (plus any files in
//!   `crates/fuzz/corpus/<target>/`), generated and mutated inputs, each run under
//!   `catch_unwind` and timed against a per-input budget. The `nanofaas-fuzz` binary adds an
//!   allocation limit and a hang watchdog (see docs/testing.md).

pub mod http;
pub mod mutate;
pub mod targets;

use mutate::Rng;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};
use targets::Target;

/// How long and how hard to fuzz one target.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    /// Stop after this many inputs even if time is left.
    pub max_execs: u64,
    pub seed: u64,
    pub max_len: usize,
    /// An input that takes longer than this is a finding.
    pub budget: Duration,
    /// Extra seeds: every file in `<dir>/<target>/`.
    pub corpus_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            duration: Duration::from_secs(10),
            max_execs: u64::MAX,
            seed: 1,
            max_len: 4096,
            budget: Duration::from_millis(500),
            corpus_dir: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Panic(String),
    Slow(Duration),
}

#[derive(Debug, Clone)]
pub struct Crash {
    pub input: Vec<u8>,
    pub finding: Finding,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub execs: u64,
    pub elapsed: Duration,
    pub slowest: Duration,
    pub crash: Option<Crash>,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics inside targets are recorded for the report instead of printed.
fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let fuzzing = LAST_PANIC.with(|p| {
                let mut p = p.borrow_mut();
                if p.is_some() {
                    *p = Some(format!("{info}"));
                    true
                } else {
                    false
                }
            });
            if !fuzzing {
                previous(info);
            }
        }));
    });
}

/// Runs one input; a panic becomes `Err(message)`.
pub fn run_one(t: &Target, data: &[u8]) -> Result<Duration, String> {
    quiet_panics();
    LAST_PANIC.with(|p| *p.borrow_mut() = Some(String::new()));
    let start = Instant::now();
    let r = panic::catch_unwind(AssertUnwindSafe(|| (t.run)(data)));
    let took = start.elapsed();
    let msg = LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_default();
    match r {
        Ok(()) => Ok(took),
        Err(_) => Err(msg),
    }
}

fn check(t: &Target, s: &Settings, data: &[u8]) -> Result<Duration, Finding> {
    match run_one(t, data) {
        Err(m) => Err(Finding::Panic(m)),
        Ok(d) if d > s.budget => {
            // Once more, to tell a slow input from a busy machine.
            match run_one(t, data) {
                Ok(d2) if d2 > s.budget => Err(Finding::Slow(d.min(d2))),
                Ok(d2) => Ok(d2),
                Err(m) => Err(Finding::Panic(m)),
            }
        }
        Ok(d) => Ok(d),
    }
}

/// The seeds of a target: built-in ones and the corpus folder's files.
pub fn seeds(t: &Target, corpus_dir: Option<&Path>) -> Vec<Vec<u8>> {
    let mut seeds = (t.seeds)();
    if let Some(dir) = corpus_dir {
        if let Ok(entries) = std::fs::read_dir(dir.join(t.name)) {
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                if let Ok(b) = std::fs::read(&f) {
                    seeds.push(b);
                }
            }
        }
    }
    seeds
}

/// Fuzzes `t` until the time or the input count runs out, or the first finding (minimised).
/// `each` sees every input before it runs (the binary keeps it for its hang and memory reports).
pub fn fuzz(t: &Target, s: &Settings, each: &mut dyn FnMut(&[u8])) -> Report {
    let start = Instant::now();
    let corpus = seeds(t, s.corpus_dir.as_deref());
    let mut rng = Rng::new(s.seed ^ fxhash(t.name.as_bytes()));
    let mut execs = 0u64;
    let mut slowest = Duration::ZERO;
    let mut found = None;
    let mut input = Vec::with_capacity(s.max_len);
    // Every seed as it is first, then generated and mutated inputs.
    let mut next_seed = 0;
    while execs < s.max_execs && (start.elapsed() < s.duration || next_seed < corpus.len()) {
        input.clear();
        if next_seed < corpus.len() {
            input.extend_from_slice(&corpus[next_seed]);
            next_seed += 1;
        } else {
            match t.generate {
                Some(g) if rng.chance(3) => input.extend_from_slice(&g(&mut rng)),
                _ => {
                    let i = rng.below(corpus.len());
                    input.extend_from_slice(&corpus[i])
                }
            }
            if !rng.chance(5) || input.is_empty() {
                mutate::mutate(&mut rng, &mut input, t.dict, &corpus, s.max_len);
            }
        }
        each(&input);
        execs += 1;
        match check(t, s, &input) {
            Ok(d) => slowest = slowest.max(d),
            Err(f) => {
                found = Some(minimize(t, s, input.clone(), f));
                break;
            }
        }
    }
    Report {
        execs,
        elapsed: start.elapsed(),
        slowest,
        crash: found,
    }
}

/// Removes chunks of the input while it still fails the same way (bounded).
pub fn minimize(t: &Target, s: &Settings, mut input: Vec<u8>, finding: Finding) -> Crash {
    let same = |f: &Finding| std::mem::discriminant(f) == std::mem::discriminant(&finding);
    let mut tries = 0;
    let mut chunk = input.len().div_ceil(2).max(1);
    let mut last = finding.clone();
    while chunk >= 1 && tries < 2000 {
        let mut i = 0;
        let mut shrunk = false;
        while i < input.len() && tries < 2000 {
            let mut candidate = input.clone();
            candidate.drain(i..(i + chunk).min(input.len()));
            tries += 1;
            match check(t, s, &candidate) {
                Err(f) if same(&f) => {
                    input = candidate;
                    last = f;
                    shrunk = true;
                }
                _ => i += chunk,
            }
        }
        if !shrunk {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    Crash {
        input,
        finding: last,
    }
}

/// A stable hash (file names of findings, per-target seeds).
pub fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The input as a Rust byte string literal, ready for a regression test.
pub fn rust_literal(b: &[u8]) -> String {
    let mut s = String::from("b\"");
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}
