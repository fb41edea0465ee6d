//! `nanofaas-kube-fake`: the fake Kubernetes API server as a process.
//!
//! Prints `listening on http://127.0.0.1:PORT` on stdout once it serves; stops on SIGTERM or
//! SIGINT, removing every container it started. Exit codes: 0 stopped, 1 could not start,
//! 2 bad usage.

use nanofaas_kube_fake::{Containers, FakeApi, Options};
use std::io::Write;
use std::time::Duration;

const USAGE: &str = "usage: nanofaas-kube-fake [options]
  --containers docker|fake   run pods as Docker containers (default) or fake them
  --bind ADDR                address to serve on (default 127.0.0.1:0)
  --nodes N                  simulated nodes (default 3)
  --history N                watch changes kept before 410 Gone (default 10000)
  --ready-delay-ms N         fake containers: bound to Ready (default 50)
  --backoff-ms N             first restart/pull back-off, doubling (default 1000)
  --backoff-max-ms N         back-off ceiling (default 10000)
  --bookmark-ms N            between watch bookmarks (default 5000)
  --node-lost-ms N           from a node failure to its pods' deletion (default 200)
  --kubeconfig PATH          write a kubeconfig pointing at this server
  --namespace NS             the kubeconfig's namespace (default default)
Control endpoints under /_fake/ (see the crate documentation).";

fn usage(msg: &str) -> ! {
    eprintln!("nanofaas-kube-fake: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn main() {
    let mut o = Options::default();
    let mut kubeconfig = None;
    let mut namespace = "default".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return;
        }
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        let ms = |v: String| -> Duration {
            Duration::from_millis(
                v.parse()
                    .unwrap_or_else(|_| usage(&format!("{a}: not a number of milliseconds: {v}"))),
            )
        };
        let num = |v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{a}: not a number: {v}")))
        };
        match a.as_str() {
            "--containers" => {
                o.containers = match val().as_str() {
                    "docker" => Containers::Docker,
                    "fake" => Containers::Fake,
                    v => usage(&format!("--containers: docker or fake, not {v}")),
                }
            }
            "--bind" => {
                let v = val();
                o.bind = v
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--bind: not an address: {v}")))
            }
            "--nodes" => o.nodes = num(val()).max(1),
            "--history" => o.history_window = num(val()).max(1),
            "--ready-delay-ms" => o.fake_ready_delay = ms(val()),
            "--backoff-ms" => o.backoff = ms(val()),
            "--backoff-max-ms" => o.backoff_max = ms(val()),
            "--bookmark-ms" => o.bookmark_interval = ms(val()).max(Duration::from_millis(10)),
            "--node-lost-ms" => o.node_lost_delay = ms(val()),
            "--kubeconfig" => kubeconfig = Some(val()),
            "--namespace" => namespace = val(),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("nanofaas-kube-fake: cannot start a runtime: {e}");
            std::process::exit(1)
        });
    let code = rt.block_on(async move {
        if o.containers == Containers::Docker {
            if let Err(e) = nanofaas_kube_fake::docker::available().await {
                eprintln!("nanofaas-kube-fake: the container engine does not answer ({e}); use --containers fake to run without it");
                return 1;
            }
        }
        let fake = match FakeApi::start(o).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("nanofaas-kube-fake: cannot listen: {e}");
                return 1;
            }
        };
        if let Some(path) = kubeconfig {
            if let Err(e) = std::fs::write(&path, fake.kubeconfig(&namespace)) {
                eprintln!("nanofaas-kube-fake: cannot write {path}: {e}");
                fake.shutdown().await;
                return 1;
            }
        }
        println!("listening on {}", fake.url());
        let _ = std::io::stdout().flush();
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("nanofaas-kube-fake: cannot handle SIGTERM: {e}");
                fake.shutdown().await;
                return 1;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        fake.shutdown().await;
        eprintln!("nanofaas-kube-fake: stopped");
        0
    });
    std::process::exit(code)
}
