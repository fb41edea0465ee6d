//! TLS on the public listener, with a real TLS client: `nanofaas serve` with a certificate made
//! for the test (rcgen), API tokens, and a JOB function whose result comes back by callback
//! (instances post callbacks in plain HTTP to the loopback callback listener beside the TLS API).

use nanofaas_control_plane::access::{hash_token, hex};
use nanofaas_testkit::serve_nanofaas;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

const TOKEN: &str = "nf_tls-test-admin";

/// One request over TLS (`Connection: close`); returns the status and the body.
async fn https(
    addr: &str,
    ca: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tls.read_to_end(&mut out),
    )
    .await
    .map_err(|_| "no answer within 30 s".to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_tls_with_tokens_and_callbacks() {
    let dir = std::env::temp_dir().join(format!("nanofaas-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let ca = cert.cert.der().clone();
    let (_cp, base) = serve_nanofaas(
        &dir.join("state"),
        &[
            format!("api.tls_cert={}", cert_pem.display()),
            format!("api.tls_key={}", key_pem.display()),
            format!("api.tokens=admin:{}", hex(&hash_token(TOKEN))),
        ],
    )
    .await;
    let addr = base.trim_start_matches("http://").to_string();
    let (status, body) = https(&addr, &ca, "GET", "/healthz", "").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    // A JOB: its result comes back by callback while the API speaks TLS and wants tokens.
    let spec = r#"{"name":"tls-job","executionMode":"JOB","runtimeMode":"STDIO","command":["/bin/sh","-c","cat >/dev/null; echo '{\"over\":\"tls\"}'"]}"#;
    let (status, body) = https(&addr, &ca, "POST", "/v1/functions", spec)
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = https(
        &addr,
        &ca,
        "POST",
        "/v1/functions/tls-job:invoke",
        "{\"input\":1}",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"output\":{\"over\":\"tls\"}"), "{body}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = nanofaas_testkit::http("GET", &format!("{base}/healthz"), &[], "").await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that does not trust the certificate fails the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let e = https(&addr, other.cert.der(), "GET", "/healthz", "")
        .await
        .unwrap_err();
    assert!(e.contains("TLS handshake"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
