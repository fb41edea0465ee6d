//! No orphans: pods of this control plane's owner label that it does not know (left by an
//! earlier run that died, or created by a start still in flight at shutdown) are deleted,
//! and waited for. In a cluster, the owner reference to the control plane's own pod lets the
//! garbage collector do the same if that pod is deleted.

use super::{pod::LABEL_OWNER, Conn, KubernetesProvider};
use kube::api::ListParams;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Deletes the pods of this owner the provider does not know; how many there were.
pub(super) async fn remove(p: &KubernetesProvider, conn: &Conn) -> usize {
    let lp = ListParams::default().labels(&format!("{LABEL_OWNER}={}", conn.pod.owner));
    let list = match conn.pods.list(&lp).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(namespace = %conn.namespace, error = %e, "cannot list pods to remove orphans (is the namespace there, and may the service account list pods?)");
            return 0;
        }
    };
    let names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .filter(|n| p.shared.get(n).is_none())
        .collect();
    let removed = AtomicUsize::new(0);
    super::join_all(names.iter().map(|name| {
        let removed = &removed;
        async move {
            // Known from now on, so that the watch tells when it is gone.
            let entry = p
                .register_pod(name, "orphan")
                .or_else(|| p.shared.get(name));
            p.delete_and_wait(conn, name, entry, Duration::ZERO).await;
            removed.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(pod = %name, "deleted a pod left behind by an earlier run of this control plane");
        }
    }))
    .await;
    removed.into_inner()
}
