//! Shared setup of the Docker-tier tests (`docker.rs`, `docker_seed.rs`): the engine or a loud
//! skip, the project's images, the provider's config, and the engine's view of a function.

use super::config;
use nanofaas_control_plane::provider::docker::api::Engine;
use nanofaas_control_plane::provider::docker::unix::{socket_path, UnixTransport};
use nanofaas_control_plane::provider::docker::LABEL_FUNCTION;
use nanofaas_control_plane::Config;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The engine, or `None` (after saying so) when there is none and it is not required
/// (`NANOFAAS_REQUIRE_DOCKER=1` turns a missing engine into a panic).
pub async fn engine_or_skip() -> Option<Engine> {
    let required = std::env::var("NANOFAAS_REQUIRE_DOCKER").as_deref() == Ok("1");
    let socket = match socket_path("", std::env::var("DOCKER_HOST").ok().as_deref()) {
        Ok(s) => s,
        Err(e) if required => panic!("NANOFAAS_REQUIRE_DOCKER=1 but {e}"),
        Err(e) => {
            eprintln!("SKIPPED: docker tests need a container engine: {e}");
            return None;
        }
    };
    let engine = Engine::new(
        Arc::new(UnixTransport::new(socket)),
        Duration::from_secs(30),
    );
    if let Err(e) = engine.ping().await {
        if required {
            panic!("NANOFAAS_REQUIRE_DOCKER=1 but {e}");
        }
        eprintln!("SKIPPED: docker tests need a container engine: {e}");
        return None;
    }
    Some(engine)
}

/// `scripts/docker-images.sh <what>` with the tag `latest` (reused when unchanged); panics
/// with its stderr when it fails.
pub fn docker_images(what: &str) {
    let out = Command::new(repo_root().join("scripts/docker-images.sh"))
        .arg(what)
        .env("NANOFAAS_IMAGE_TAG", "latest")
        .output()
        .expect("run scripts/docker-images.sh");
    assert!(
        out.status.success(),
        "scripts/docker-images.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test config with the Docker provider, a short stop grace and start backoff, and no
/// prewarmed containers (these tests check the cold path and count containers by function;
/// `docker_prewarm.rs` turns them on).
pub fn docker_config() -> Config {
    let mut c = config();
    c.provider.kind = nanofaas_control_plane::config::ProviderKind::Docker;
    c.provider.docker.prewarm = 0;
    c.provider.stop_grace_ms = 2000;
    c.pool.start_backoff_ms = 300;
    c.pool.start_backoff_max_ms = 1000;
    c
}

/// Containers of a function as the engine sees them (running or not).
pub async fn containers(engine: &Engine, function: &str) -> Vec<String> {
    engine
        .list(&[format!("{LABEL_FUNCTION}={function}")])
        .await
        .expect("list containers")
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Waits (bounded) until the engine has no container of the function.
pub async fn none_left(engine: &Engine, function: &str) -> Vec<String> {
    for _ in 0..150 {
        let left = containers(engine, function).await;
        if left.is_empty() {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    containers(engine, function).await
}
