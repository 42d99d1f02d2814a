//! [`Stopping`]: the server's shutdown signal, as the long-lived streams see it.

/// Tells long-lived streams (watches, keep-alives) that the server is stopping, so that a
/// graceful shutdown does not wait for their clients to hang up.
#[derive(Clone, Debug)]
pub(crate) struct Stopping(pub(crate) tokio::sync::watch::Receiver<bool>);

impl Stopping {
    /// A signal that never fires (services called without a server).
    pub(crate) fn never() -> Stopping {
        static NEVER: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> =
            std::sync::OnceLock::new();
        Stopping(
            NEVER
                .get_or_init(|| tokio::sync::watch::channel(false).0)
                .subscribe(),
        )
    }

    /// Completes once the server is stopping, or has been dropped (its serve future with it).
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}
