//! The production [`Transport`]: HTTP/1.1 over the engine's Unix socket, one connection per
//! request (connecting to a local socket costs microseconds; long-lived calls such as `wait`
//! and followed logs hold their own connection and close it when dropped).

use super::api::{ApiRequest, ApiResponse, BodyStream, Transport, TransportError};
use crate::dispatch::BoxFuture;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

pub struct UnixTransport {
    path: PathBuf,
}

impl UnixTransport {
    pub fn new(path: impl Into<PathBuf>) -> UnixTransport {
        UnixTransport { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The socket to use: `setting` (a path or `unix://` URL) when given, else `DOCKER_HOST` when it
/// is a `unix://` URL, else `/var/run/docker.sock`. Other schemes are refused with a message.
pub fn socket_path(setting: &str, docker_host: Option<&str>) -> Result<PathBuf, String> {
    let (raw, from) = if !setting.is_empty() {
        (setting, "provider.docker.socket")
    } else if let Some(h) = docker_host.filter(|h| !h.is_empty()) {
        (h, "DOCKER_HOST")
    } else {
        return Ok(PathBuf::from("/var/run/docker.sock"));
    };
    if let Some(p) = raw.strip_prefix("unix://") {
        if p.is_empty() {
            return Err(format!("{from} {raw:?} names no socket path"));
        }
        return Ok(PathBuf::from(p));
    }
    if raw.contains("://") {
        return Err(format!(
            "{from} {raw:?}: only unix:// sockets are supported (the engine must be on this machine)"
        ));
    }
    Ok(PathBuf::from(raw))
}

impl Transport for UnixTransport {
    fn send(&self, req: ApiRequest) -> BoxFuture<'_, Result<ApiResponse, TransportError>> {
        Box::pin(async move {
            let stream = UnixStream::connect(&self.path)
                .await
                .map_err(|e| TransportError(e.to_string()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| TransportError(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut builder = Request::builder()
                .method(req.method)
                .uri(req.path)
                .header(header::HOST, "docker");
            if req.body.is_some() {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
            }
            let request = builder
                .body(Full::new(req.body.unwrap_or_default()))
                .map_err(|e| TransportError(e.to_string()))?;
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| TransportError(e.to_string()))?;
            let status = resp.status().as_u16();
            let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(16);
            let mut body = resp.into_body();
            tokio::spawn(async move {
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => {
                            if let Ok(data) = f.into_data() {
                                if tx.send(Ok(data)).await.is_err() {
                                    return; // the reader went away: drop the connection
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string())).await;
                            return;
                        }
                    }
                }
            });
            Ok(ApiResponse {
                status,
                body: BodyStream(rx),
            })
        })
    }

    fn describe(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_from_setting_then_docker_host_then_default() {
        assert_eq!(
            socket_path("", None).unwrap(),
            PathBuf::from("/var/run/docker.sock")
        );
        assert_eq!(
            socket_path("", Some("unix:///run/user/1000/podman/podman.sock")).unwrap(),
            PathBuf::from("/run/user/1000/podman/podman.sock")
        );
        assert_eq!(
            socket_path("/x.sock", Some("unix:///y.sock")).unwrap(),
            PathBuf::from("/x.sock")
        );
        assert_eq!(
            socket_path("unix:///z.sock", None).unwrap(),
            PathBuf::from("/z.sock")
        );
        let e = socket_path("", Some("tcp://10.0.0.1:2375")).unwrap_err();
        assert!(e.contains("DOCKER_HOST") && e.contains("unix://"), "{e}");
        assert!(socket_path("unix://", None).is_err());
    }

    /// A real HTTP exchange over a Unix socket served by a tiny in-test server.
    #[tokio::test]
    async fn speaks_http_over_a_unix_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = std::env::temp_dir().join(format!("nanofaas-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("engine.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            // Read the request head and its 7-byte body.
            while !String::from_utf8_lossy(&got).contains("{\"a\":1}") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed early");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\n\r\n{\"Id\":\"abc\"}")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let t = UnixTransport::new(&sock);
        let resp = t
            .send(ApiRequest {
                method: http::Method::POST,
                path: "/containers/create?name=x".into(),
                body: Some(Bytes::from_static(b"{\"a\":1}")),
            })
            .await
            .unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(
            &resp.body.collect(1024).await.unwrap()[..],
            b"{\"Id\":\"abc\"}"
        );
        let req = server.await.unwrap();
        assert!(
            req.starts_with("POST /containers/create?name=x HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        let missing = UnixTransport::new(dir.join("nope.sock"))
            .send(ApiRequest {
                method: http::Method::GET,
                path: "/_ping".into(),
                body: None,
            })
            .await;
        assert!(missing.is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
