//! How the end of an instance is told and waited for, the same for every provider and for the
//! pool, the job backend and the prewarm pool that watch instances.
//!
//! A provider hands out an [`ExitWatch`] with each instance it starts: `None` while the instance
//! lives, then `Some(why)` once it is gone. Nothing here polls: a waiter sleeps on the watch
//! channel until the provider writes the reason, or drops its sender (a provider that forgot the
//! instance counts as its end too, so no waiter ever hangs on a lost sender).

use tokio::sync::watch;

/// Tells when an instance is gone: `None` while it lives, then `Some(why)`.
pub type ExitWatch = watch::Receiver<Option<String>>;

/// Waits until the instance is gone (or its provider dropped the watch).
pub async fn wait_exit(exited: &mut ExitWatch) {
    let _ = exited.wait_for(|e| e.is_some()).await;
}

/// Waits until the instance is gone and says why.
pub async fn exit_reason(exited: &mut ExitWatch) -> String {
    wait_exit(exited).await;
    let why = exited.borrow().clone();
    why.unwrap_or_else(|| "the provider forgot the instance".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_reason_is_the_one_written_or_a_dropped_sender() {
        let (tx, mut rx) = watch::channel(None);
        let waiter = tokio::spawn(async move { exit_reason(&mut rx).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "returned while the instance lives");
        tx.send_replace(Some("killed by signal 9".into()));
        assert_eq!(waiter.await.unwrap(), "killed by signal 9");

        let (tx, mut rx) = watch::channel(None);
        drop(tx);
        assert_eq!(
            exit_reason(&mut rx).await,
            "the provider forgot the instance"
        );
    }
}
