//! `nanofaas-fuzz`: runs the fuzz targets for a bounded time each.
//!
//! ```text
//! nanofaas-fuzz [--seconds S] [--seed N] [--max-len B] [--budget-ms MS] [--execs N]
//!               [--corpus DIR] [--out DIR] [--list] [TARGET...]
//! ```
//! No target named: all of them. Exit 0 when nothing was found, 1 when a target failed (the
//! minimised input is written to `--out` and printed as a Rust literal), 2 for a usage error,
//! 3 when an input hung, 4 when an input asked for too much memory.

use nanofaas_fuzz::targets::{self, TARGETS};
use nanofaas_fuzz::{fuzz, fxhash, rust_literal, Finding, Settings};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Any one allocation above this, or this much live memory, is a finding.
const MAX_ALLOC: usize = 64 << 20;
const MAX_LIVE: usize = 1 << 30;

struct Bounded;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static REPORTING: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        over(l.size());
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        over(l.size());
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        over(new);
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Bounded = Bounded;

fn over(size: usize) {
    if (size > MAX_ALLOC || LIVE.load(Ordering::Relaxed) + size > MAX_LIVE)
        && !REPORTING.swap(true, Ordering::SeqCst)
    {
        // Allocation is allowed again from here on (REPORTING is set).
        report_current(&format!(
            "asked for {size} bytes ({} live); the limits are {MAX_ALLOC} per allocation and {MAX_LIVE} live",
            LIVE.load(Ordering::Relaxed)
        ), "memory");
        std::process::exit(4);
    }
}

/// What is running now, for the hang and memory reports.
struct Current {
    target: &'static str,
    input: Vec<u8>,
    out: PathBuf,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
/// Milliseconds since START when the current input started; 0 between inputs.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn report_current(why: &str, kind: &str) {
    let guard = CURRENT.try_lock();
    let Ok(guard) = guard else {
        eprintln!("nanofaas-fuzz: {why} (input unavailable)");
        return;
    };
    if let Some(c) = guard.as_ref() {
        let path = save(&c.out, c.target, kind, &c.input);
        eprintln!(
            "nanofaas-fuzz: {}: {why}\n  input saved to {}\n  input: {}",
            c.target,
            path.display(),
            rust_literal(&c.input)
        );
    } else {
        eprintln!("nanofaas-fuzz: {why}");
    }
}

fn save(out: &Path, target: &str, kind: &str, input: &[u8]) -> PathBuf {
    let dir = out.join(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{kind}-{:016x}", fxhash(input)));
    let _ = std::fs::write(&path, input);
    path
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "nanofaas-fuzz: {msg}\nusage: nanofaas-fuzz [--seconds S] [--seed N] [--max-len B] [--budget-ms MS] [--execs N] [--corpus DIR] [--out DIR] [--list] [TARGET...]"
    );
    std::process::exit(2)
}

fn main() {
    let mut s = Settings {
        corpus_dir: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/corpus"
        ))),
        ..Settings::default()
    };
    let mut out = PathBuf::from("target/fuzz");
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |what: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs {what}")))
        };
        let num = |v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{v:?} is not a number")))
        };
        match a.as_str() {
            "--seconds" => {
                let v = val("seconds");
                let secs: f64 = v
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("{v:?} is not a number")));
                if !(secs.is_finite() && secs >= 0.0) {
                    usage("--seconds must be a positive number");
                }
                s.duration = Duration::from_secs_f64(secs);
            }
            "--seed" => s.seed = num(val("a number")),
            "--max-len" => s.max_len = num(val("bytes")) as usize,
            "--budget-ms" => s.budget = Duration::from_millis(num(val("milliseconds"))),
            "--execs" => s.max_execs = num(val("a count")),
            "--corpus" => s.corpus_dir = Some(PathBuf::from(val("a folder"))),
            "--out" => out = PathBuf::from(val("a folder")),
            "--list" => {
                for t in TARGETS {
                    println!("{}", t.name);
                }
                return;
            }
            "-h" | "--help" => usage("runs the fuzz targets"),
            n if n.starts_with('-') => usage(&format!("unknown option {n}")),
            n => names.push(n.to_string()),
        }
    }
    let chosen: Vec<&targets::Target> = if names.is_empty() {
        TARGETS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                targets::target(n).unwrap_or_else(|| usage(&format!("no target {n:?} (--list)")))
            })
            .collect()
    };
    // The hang watchdog: an input running far past its budget ends the run.
    let hang_after = (s.budget * 10).max(Duration::from_secs(5));
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let started = STARTED_MS.load(Ordering::Relaxed);
        if started != 0 && now_ms().saturating_sub(started) > hang_after.as_millis() as u64 {
            REPORTING.store(true, Ordering::SeqCst);
            report_current(
                &format!("an input ran for more than {hang_after:?}"),
                "hang",
            );
            std::process::exit(3);
        }
    });
    let mut failed = 0;
    for t in chosen {
        let mut each = |input: &[u8]| {
            STARTED_MS.store(0, Ordering::Relaxed);
            {
                let mut c = CURRENT.lock().unwrap();
                match c.as_mut() {
                    Some(c) if c.target == t.name => {
                        c.input.clear();
                        c.input.extend_from_slice(input);
                    }
                    _ => {
                        *c = Some(Current {
                            target: t.name,
                            input: input.to_vec(),
                            out: out.clone(),
                        })
                    }
                }
            }
            STARTED_MS.store(now_ms(), Ordering::Relaxed);
        };
        let r = fuzz(t, &s, &mut each);
        STARTED_MS.store(0, Ordering::Relaxed);
        let rate = r.execs as f64 / r.elapsed.as_secs_f64().max(1e-9);
        match r.crash {
            None => println!(
                "{:<18} ok: {} inputs in {:.1} s ({:.0}/s), slowest {:?}",
                t.name,
                r.execs,
                r.elapsed.as_secs_f64(),
                rate,
                r.slowest
            ),
            Some(c) => {
                failed += 1;
                let (kind, what) = match &c.finding {
                    Finding::Panic(m) => ("crash", m.clone()),
                    Finding::Slow(d) => (
                        "slow",
                        format!("took {d:?}, over the {:?} budget", s.budget),
                    ),
                };
                let path = save(&out, t.name, kind, &c.input);
                println!(
                    "{:<18} FAILED after {} inputs: {what}\n  minimised input ({} bytes) saved to {}\n  input: {}",
                    t.name,
                    r.execs,
                    c.input.len(),
                    path.display(),
                    rust_literal(&c.input)
                );
            }
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
