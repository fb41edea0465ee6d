//! No orphans: the owner identity this control plane labels its containers with, and the
//! sweep at start-up: the engine reached, `provider.docker.network` checked, and the
//! containers carrying [`super::LABEL_OWNER`] of a dead control plane of this host removed
//! (those of another host's are never touched). Shutdown removes every container this control
//! plane owns (`mod.rs`); `stop` removes one.

use super::container::{LABEL_FUNCTION, LABEL_INSTANCE, LABEL_OWNER};
use super::DockerProvider;
use crate::provider::shared::{identity_alive, join_all, process_identity};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `hostname/pid:starttime` of this process: unique across PID reuse, and tells which host's
/// process table can answer whether the owner lives.
pub(super) fn owner_identity() -> String {
    format!("{}/{}", hostname(), process_identity())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether `owner` is a dead control plane of this host (only those can be judged here; the
/// containers of another host's control plane are never touched).
fn owner_dead_here(owner: &str, my_host: &str) -> bool {
    let Some((host, proc_id)) = owner.rsplit_once('/') else {
        return false;
    };
    if host != my_host {
        return false;
    }
    // An identity we cannot read is left alone; one that reads but is not running is dead.
    let parses = proc_id
        .split_once(':')
        .is_some_and(|(p, t)| p.parse::<u32>().is_ok() && t.parse::<u64>().is_ok());
    parses && !identity_alive(proc_id)
}

/// At start-up: checks the engine (a logged no-op when it cannot be reached) and the
/// configured network, then removes the containers of dead owners of this host; how many.
pub(super) async fn cleanup(p: &DockerProvider) -> usize {
    if let Err(e) = p.engine.ping().await {
        tracing::error!(error = %e, "the docker provider cannot reach its engine; DEPLOYMENT and JOB functions will fail to start until it is reachable");
        return 0;
    }
    if let Some(net) = &p.settings.network {
        match p.engine.network_exists(net).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(network = %net, "provider.docker.network names a network the engine does not have; create it (docker network create {net})")
            }
            Err(e) => tracing::warn!(error = %e, "cannot check provider.docker.network"),
        }
    }
    let list = match p.engine.list(&[LABEL_OWNER.to_string()]).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list containers to remove orphans");
            return 0;
        }
    };
    let me = hostname();
    let orphans: Vec<_> = list
        .into_iter()
        .filter(|c| {
            let owner = c.label(LABEL_OWNER).unwrap_or_default();
            owner != p.owner && owner_dead_here(owner, &me)
        })
        .collect();
    let removed = AtomicUsize::new(0);
    join_all(orphans.iter().map(|c| {
        let removed = &removed;
        async move {
            match p.engine.remove(&c.id).await {
                Ok(()) => {
                    removed.fetch_add(1, Ordering::SeqCst);
                    tracing::warn!(
                        container = %c.id.chars().take(12).collect::<String>(),
                        instance = c.label(LABEL_INSTANCE).unwrap_or_default(),
                        function = c.label(LABEL_FUNCTION).unwrap_or_default(),
                        "removed a container left behind by a control plane that died"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot remove an orphaned container"),
            }
        }
    }))
    .await;
    removed.into_inner()
}

#[cfg(test)]
mod tests {
    use super::super::container::LABEL_KIND;
    use super::super::tests::{provider, settings};
    use super::*;
    use crate::provider::Provider;
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn orphans_of_dead_owners_on_this_host_are_removed_and_others_kept() {
        let (p, mut v) = provider(settings());
        let task = tokio::spawn({
            let p = p.clone();
            async move { p.cleanup_orphans().await }
        });
        v.expect("GET", "/_ping").await.reply(200, "OK");
        let list = v.expect("GET", "/containers/json?all=true&filters=").await;
        assert!(
            list.path().contains("dev.nanofaas.owner"),
            "{}",
            list.path()
        );
        let host = hostname();
        list.json(
            200,
            json!([
                {"Id": "dead1", "Labels": {LABEL_OWNER: format!("{host}/1:1"), LABEL_INSTANCE: "a"}},
                // A generic (prewarmed) container a dead control plane left is an orphan too.
                {"Id": "deadstem", "Labels": {LABEL_OWNER: format!("{host}/1:1"), LABEL_KIND: "prewarmed", LABEL_FUNCTION: "(prewarmed)"}},
                {"Id": "mine", "Labels": {LABEL_OWNER: p.owner()}},
                {"Id": "other-host", "Labels": {LABEL_OWNER: "elsewhere/1:1"}},
                {"Id": "garbage", "Labels": {LABEL_OWNER: "???"}},
            ]),
        );
        v.expect("DELETE", "/containers/dead1").await.reply(204, "");
        v.expect("DELETE", "/containers/deadstem")
            .await
            .reply(204, "");
        assert_eq!(task.await.unwrap(), 2);
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn an_unreachable_engine_makes_cleanup_a_logged_no_op() {
        let (p, mut v) = provider(settings());
        let task = tokio::spawn({
            let p = p.clone();
            async move { p.cleanup_orphans().await }
        });
        v.expect("GET", "/_ping").await.fail("connection refused");
        assert_eq!(task.await.unwrap(), 0);
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[test]
    fn owners_dead_only_on_this_host() {
        let me = hostname();
        assert!(!owner_dead_here(&owner_identity(), &me));
        assert!(owner_dead_here(&format!("{me}/1:1"), &me));
        assert!(!owner_dead_here("elsewhere/1:1", &me));
        assert!(!owner_dead_here("garbage", &me));
    }
}
