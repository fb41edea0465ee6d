//! The harness of the `http_response` target: a Unix socket server in this thread's runtime
//! that answers every connection with the current input and closes it, and the hot-path client
//! asking it. Only [`exchange`] knows which client it is.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// The largest body the client is asked to accept.
pub const MAX_BODY: usize = 256 * 1024;
/// Longer than any answer of this harness should take; more is a hang.
const LIMIT: Duration = Duration::from_secs(5);

struct Harness {
    rt: tokio::runtime::Runtime,
    answer: Arc<Mutex<Vec<u8>>>,
    client: nanofaas_h1::Client,
    endpoint: nanofaas_h1::Endpoint,
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn harness() -> Harness {
    static N: AtomicUsize = AtomicUsize::new(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let name = format!(
        "@nanofaas-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let answer = Arc::new(Mutex::new(Vec::new()));
    let listener = {
        let _g = rt.enter();
        UnixListener::bind(&*nanofaas_h1::unix_path(&name)).expect("bind the fuzz socket")
    };
    let a = answer.clone();
    rt.spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let bytes = a.lock().unwrap().clone();
            tokio::spawn(async move {
                // Read the request head, answer, close; then drain so that no reset races it.
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
                let _ = tokio::time::timeout(LIMIT, async {
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    });
    Harness {
        rt,
        answer,
        client: nanofaas_h1::Client::new(nanofaas_h1::ClientSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_host: 4,
        }),
        endpoint: nanofaas_h1::Endpoint::unix(&name),
    }
}

/// Sends `GET /` and has the peer answer `raw`: the status and body the client makes of it.
pub fn exchange(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(harness);
        *h.answer.lock().unwrap() = raw.to_vec();
        h.rt.block_on(async {
            let call = h.client.send_to(
                &h.endpoint,
                "fuzz",
                "GET",
                "/",
                &[],
                b"",
                MAX_BODY,
                tokio::time::Instant::now() + LIMIT,
            );
            match call.await {
                Err(nanofaas_h1::Error::Timeout) => {
                    panic!("the client did not finish within {LIMIT:?}")
                }
                Ok(r) => Ok((r.status, r.body.to_vec())),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}
