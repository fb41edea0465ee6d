//! The seed's function-image recipe on the Docker provider: the gated Docker tier, like
//! `docker.rs`. Without a reachable engine every test prints SKIPPED and passes, unless
//! `NANOFAAS_REQUIRE_DOCKER=1`, which turns a missing engine into a failure.
//!
//! The seed's Python runtime README builds a function image with three lines on top of the
//! runtime image, `FROM nanofaas/python-runtime:<tag>`, `COPY handler.py /app/handler.py`,
//! `ENV HANDLER_MODULE=handler`, where the tag is the one our docs give (`latest`, built by
//! `scripts/docker-images.sh`). Here that recipe is built from local images only (no pull) and
//! run by the Docker provider cold, then warm in the same container and process; the same for a
//! function written against the original nanofaas's Python SDK (`nanofaas.sdk`).

mod common;

use common::docker::*;
use common::*;
use nanofaas_control_plane::provider::docker::api::Engine;
use serde_json::{json, Value};
use std::process::Command;

/// The seed's recipe, as its README writes it (the tag is ours: `latest`).
const SEED_RECIPE: &str = "FROM nanofaas/python-runtime:latest\n\
                           \n\
                           COPY handler.py /app/handler.py\n\
                           \n\
                           ENV HANDLER_MODULE=handler\n";

/// A handler of the seed's shape: `handle(request)` with the whole request.
const SEED_HANDLER: &str = r#"
import os

def handle(request):
    return {"echo": request.get("input", "").upper(), "pid": os.getpid()}
"#;

/// A function written against the original SDK: decorated, called with the input only.
const SDK_HANDLER: &str = r#"
import os
from nanofaas.sdk import nanofaas_function, context

logger = context.get_logger(__name__)

@nanofaas_function
def handle(input_data):
    words = str(input_data.get("text", "")).split()
    logger.info("counting %d words", len(words))
    return {"words": len(words), "executionId": context.get_execution_id(), "pid": os.getpid()}
"#;

/// `scripts/docker-images.sh python` (reused when unchanged), then `recipe` with `handler.py`
/// built as `image`. Nothing is pulled: the recipe's base is the local runtime image.
fn build_function_image(image: &str, recipe: &str, handler: &str) {
    docker_images("python");
    let dir = std::env::temp_dir().join(format!(
        "nanofaas-seed-image-{}-{}",
        image.replace(['/', ':'], "-"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), recipe).unwrap();
    std::fs::write(dir.join("handler.py"), handler).unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "--pull=false", "-t", image])
        .arg(&dir)
        .output()
        .expect("run docker build");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "building {image} from the seed's recipe failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deploys `image`, invokes it `calls` times with `input`; the first call is cold, the others
/// warm in the same container and process. Returns the outputs.
async fn cold_then_warm(engine: &Engine, tag: &str, image: &str, input: Value) -> Vec<Value> {
    let cp = Cp::start(docker_config()).await;
    let name = format!("seed-{tag}-{}", std::process::id());
    let r = cp
        .post(
            "/v1/functions",
            json!({"name": name, "image": image, "timeoutMs": 20000}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mut outs = Vec::new();
    for i in 0..3 {
        let r = cp
            .post_h(
                &format!("/v1/functions/{name}:invoke"),
                &[],
                json!({ "input": input }),
            )
            .await;
        assert_eq!(r.status, 200, "call {i}: {}", r.text());
        let cold = if i == 0 { "true" } else { "false" };
        assert_eq!(r.header("x-cold-start"), Some(cold), "call {i}");
        let body = r.json();
        assert_eq!(body["status"], "success", "{body}");
        outs.push(body);
    }
    let pids: Vec<&Value> = outs.iter().map(|o| &o["output"]["pid"]).collect();
    assert!(
        pids.iter().all(|p| *p == pids[0]),
        "one warm process: {pids:?}"
    );
    assert_eq!(containers(engine, &name).await.len(), 1, "one container");
    cp.shutdown().await;
    let left = none_left(engine, &name).await;
    assert!(left.is_empty(), "shutdown left containers: {left:?}");
    outs
}

#[tokio::test]
async fn the_seeds_three_line_image_recipe_runs_cold_then_warm() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let image = "nanofaas/test-seed-recipe:latest";
    tokio::task::spawn_blocking(move || build_function_image(image, SEED_RECIPE, SEED_HANDLER))
        .await
        .expect("image build");
    let outs = cold_then_warm(&engine, "recipe", image, json!("hello")).await;
    for o in &outs {
        assert_eq!(o["output"]["echo"], "HELLO", "{o}");
    }
}

#[tokio::test]
async fn a_function_written_for_the_original_sdk_runs_in_the_seeds_image_recipe() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let image = "nanofaas/test-seed-sdk:latest";
    tokio::task::spawn_blocking(move || build_function_image(image, SEED_RECIPE, SDK_HANDLER))
        .await
        .expect("image build");
    let outs = cold_then_warm(&engine, "sdk", image, json!({"text": "one two three"})).await;
    for o in &outs {
        assert_eq!(o["output"]["words"], 3, "the input only reached it: {o}");
        assert_eq!(
            o["output"]["executionId"], o["executionId"],
            "context.get_execution_id() is the execution's id: {o}"
        );
    }
}
