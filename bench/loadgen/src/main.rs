//! `loadgen`: a closed-loop HTTP/1.1 load generator for the nanofaas benchmarks.
//!
//! N connections, each kept alive and sending its next request as soon as the previous answer
//! is read. After a warm-up, every request started and answered within the measured window is
//! counted: latency percentiles (p50, p99), mean, max, requests per second, and errors
//! (transport failures and non-2xx answers).
//!
//! ```text
//! loadgen [-c N] [-d SECS] [-w SECS] [-n REQUESTS] [-m METHOD] [-b BODY] [-H 'Name: value']... [-t THREADS] [--json] URL
//! ```
//!
//! With `-n`, the measured window ends once that many requests have been sent (all connections
//! together), or at `-d` if that comes first (no limit unless `-d` is given): a fixed amount of
//! work, for instruction counts under `valgrind --tool=callgrind`.
//!
//! Exit codes: 0 done, 1 no request succeeded, 2 bad arguments.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const USAGE: &str =
    "usage: loadgen [-c CONNECTIONS] [-d SECONDS] [-w WARMUP_SECONDS] [-n REQUESTS] [-m METHOD] \
[-b BODY] [-H 'Name: value']... [-t THREADS] [--json] URL";

#[derive(Debug, Clone, PartialEq)]
struct Args {
    url: String,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    method: Method,
    body: Bytes,
    headers: Vec<(String, String)>,
    threads: usize,
    json: bool,
    /// Requests to send after the warm-up (`-n`), all connections together.
    requests: Option<u64>,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        connections: 1,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        method: Method::GET,
        body: Bytes::new(),
        headers: Vec::new(),
        threads: 1,
        json: false,
        requests: None,
    };
    let mut method: Option<Method> = None;
    let mut duration_given = false;
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "-c" | "--connections" => {
                a.connections = positive(&value(arg)?, arg)?;
            }
            "-d" | "--duration" => {
                a.duration = seconds(&value(arg)?, arg)?;
                duration_given = true;
            }
            "-n" | "--requests" => a.requests = Some(positive(&value(arg)?, arg)? as u64),
            "-w" | "--warmup" => a.warmup = seconds(&value(arg)?, arg)?,
            "-t" | "--threads" => a.threads = positive(&value(arg)?, arg)?,
            "-m" | "--method" => {
                let v = value(arg)?;
                method = Some(
                    Method::from_bytes(v.as_bytes()).map_err(|_| format!("bad method {v:?}"))?,
                );
            }
            "-b" | "--body" => a.body = Bytes::from(value(arg)?),
            "-H" | "--header" => {
                let v = value(arg)?;
                let (k, val) = v
                    .split_once(':')
                    .ok_or_else(|| format!("header {v:?} is not 'Name: value'"))?;
                a.headers
                    .push((k.trim().to_string(), val.trim().to_string()));
            }
            "--json" => a.json = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => {
                if !a.url.is_empty() {
                    return Err(format!("more than one URL\n{USAGE}"));
                }
                a.url = s.to_string();
            }
        }
    }
    if a.url.is_empty() {
        return Err(format!("no URL\n{USAGE}"));
    }
    if a.duration.is_zero() {
        return Err("the duration must be positive".into());
    }
    if a.requests.is_some() && !duration_given {
        // Bounded all the same: a day.
        a.duration = Duration::from_secs(86_399);
    }
    a.method = method.unwrap_or(if a.body.is_empty() {
        Method::GET
    } else {
        Method::POST
    });
    Ok(a)
}

fn positive(v: &str, name: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} must be a positive whole number, got {v:?}")),
    }
}

fn seconds(v: &str, name: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if (0.0..86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{name} must be a number of seconds, got {v:?}")),
    }
}

/// What every request looks like.
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    errors: u64,
    /// When the last measured request was answered.
    last: Option<Instant>,
}

/// What `-n` leaves to send, shared by the connections.
struct Budget(std::sync::atomic::AtomicU64);

impl Budget {
    /// Takes one request; false once none is left.
    fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Latency summary over sorted samples (nearest rank).
#[derive(Debug, PartialEq)]
struct Summary {
    requests: usize,
    p50_us: u32,
    p99_us: u32,
    mean_us: f64,
    max_us: u32,
}

fn summarize(sorted: &[u32]) -> Summary {
    if sorted.is_empty() {
        return Summary {
            requests: 0,
            p50_us: 0,
            p99_us: 0,
            mean_us: 0.0,
            max_us: 0,
        };
    }
    let rank =
        |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
    Summary {
        requests: sorted.len(),
        p50_us: rank(0.50),
        p99_us: rank(0.99),
        mean_us: sorted.iter().map(|&v| v as f64).sum::<f64>() / sorted.len() as f64,
        max_us: *sorted.last().unwrap(),
    }
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

/// One closed-loop connection until `end`; measures requests started after `measure_from`.
/// With a budget, stops once it is used up (requests of the warm-up do not count).
async fn drive(
    addr: SocketAddr,
    t: Arc<Template>,
    measure_from: Instant,
    end: Instant,
    budget: Option<Arc<Budget>>,
) -> Stats {
    let mut stats = Stats::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    while Instant::now() < end {
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(addr).await {
                Some(s) => sender.insert(s),
                None => {
                    if Instant::now() >= measure_from {
                        stats.errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            },
        };
        if s.ready().await.is_err() {
            sender = None;
            continue;
        }
        let t0 = Instant::now();
        if t0 >= measure_from && budget.as_ref().is_some_and(|b| !b.take()) {
            break;
        }
        let ok = match s.send_request(t.request()).await {
            Ok(resp) => {
                let success = resp.status().is_success();
                match resp.into_body().collect().await {
                    Ok(_) => Some(success),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        let t1 = Instant::now();
        if t0 >= measure_from && t1 <= end {
            stats.last = Some(t1);
            match ok {
                Some(true) => stats
                    .latencies_us
                    .push((t1 - t0).as_micros().min(u32::MAX as u128) as u32),
                Some(false) => stats.errors += 1,
                None => stats.errors += 1,
            }
        }
        if ok.is_none() {
            sender = None;
        }
    }
    stats
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let uri: Uri = match args.url.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("loadgen: bad URL {:?}: {e}", args.url);
            std::process::exit(2);
        }
    };
    let (Some("http"), Some(auth)) = (uri.scheme_str(), uri.authority().cloned()) else {
        eprintln!("loadgen: only absolute http:// URLs are supported");
        std::process::exit(2);
    };
    let port = auth.port_u16().unwrap_or(80);
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    let addr = match (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(a) => a,
        None => {
            eprintln!("loadgen: cannot resolve {host}");
            std::process::exit(2);
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        HOST,
        HeaderValue::from_str(auth.as_str()).expect("authority is a valid header"),
    );
    if !args.body.is_empty() {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
    }
    for (k, v) in &args.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                headers.insert(k, v);
            }
            _ => {
                eprintln!("loadgen: bad header {k:?}: {v:?}");
                std::process::exit(2);
            }
        }
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let template = Arc::new(Template {
        method: args.method.clone(),
        uri: path.parse().expect("a path parses"),
        headers,
        body: args.body.clone(),
    });

    let mut b = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = b.enable_all().build().expect("tokio runtime");
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let budget = args
        .requests
        .map(|n| Arc::new(Budget(std::sync::atomic::AtomicU64::new(n))));
    let all = rt.block_on(async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| {
                tokio::spawn(drive(
                    addr,
                    template.clone(),
                    measure_from,
                    end,
                    budget.clone(),
                ))
            })
            .collect();
        let mut all = Stats::default();
        for t in tasks {
            if let Ok(s) = t.await {
                all.latencies_us.extend(s.latencies_us);
                all.errors += s.errors;
                all.last = all.last.max(s.last);
            }
        }
        all
    });
    let mut lat = all.latencies_us;
    lat.sort_unstable();
    let s = summarize(&lat);
    // With -n the window is as long as the requests took.
    let secs = match (args.requests, all.last) {
        (Some(_), Some(last)) => last.saturating_duration_since(measure_from).as_secs_f64(),
        _ => args.duration.as_secs_f64(),
    };
    let rps = s.requests as f64 / secs;
    if args.json {
        println!(
            "{{\"url\":\"{}\",\"connections\":{},\"duration_s\":{secs},\"requests\":{},\"errors\":{},\"rps\":{rps:.1},\"p50_us\":{},\"p99_us\":{},\"mean_us\":{:.1},\"max_us\":{}}}",
            args.url.replace('\\', "\\\\").replace('"', "\\\""), args.connections, s.requests, all.errors, s.p50_us, s.p99_us, s.mean_us, s.max_us
        );
    } else {
        println!(
            "{} c={} {secs:.1}s: {} requests, {} errors, {rps:.0} req/s, p50 {} us, p99 {} us, mean {:.0} us, max {} us",
            args.url, args.connections, s.requests, all.errors, s.p50_us, s.p99_us, s.mean_us, s.max_us
        );
    }
    if s.requests == 0 {
        eprintln!("loadgen: no request succeeded");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Args, String> {
        parse_args(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_options() {
        let a = args(&[
            "-c",
            "32",
            "-d",
            "2.5",
            "-w",
            "0",
            "-b",
            "{}",
            "-H",
            "X-Execution-Id: b",
            "--json",
            "http://h:1/x",
        ])
        .unwrap();
        assert_eq!(a.connections, 32);
        assert_eq!(a.duration, Duration::from_millis(2500));
        assert_eq!(a.warmup, Duration::ZERO);
        assert_eq!(a.method, Method::POST, "a body implies POST");
        assert_eq!(a.headers, [("X-Execution-Id".to_string(), "b".to_string())]);
        assert!(a.json);
        assert_eq!(a.requests, None);
        assert_eq!(args(&["http://h/"]).unwrap().method, Method::GET);
        let n = args(&["-n", "500", "http://h/"]).unwrap();
        assert_eq!(n.requests, Some(500));
        assert!(
            n.duration > Duration::from_secs(3600),
            "-n alone: no time limit"
        );
        let nd = args(&["-n", "5", "-d", "2", "http://h/"]).unwrap();
        assert_eq!(nd.duration, Duration::from_secs(2), "-d still caps -n");
        let b = Budget(std::sync::atomic::AtomicU64::new(2));
        assert!(b.take() && b.take() && !b.take() && !b.take());
        for bad in [
            &["-c", "0", "http://h/"][..],
            &["-n", "0", "http://h/"],
            &["-d", "x", "http://h/"],
            &["-H", "nocolon", "http://h/"],
            &[],
            &["a", "b"],
            &["--nope", "u"],
            &["-c"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        let s = summarize(&v);
        assert_eq!(
            (s.requests, s.p50_us, s.p99_us, s.max_us),
            (100, 50, 99, 100)
        );
        assert_eq!(s.mean_us, 50.5);
        assert_eq!(summarize(&[7]).p99_us, 7);
        assert_eq!(summarize(&[]).requests, 0);
    }
}
