//! The server's shutdown, as seen by long-lived calls.
//!
//! tonic's graceful shutdown waits for every open call to end, and a health `Watch` or an
//! idle `ModelStreamInfer` never ends by itself: they watch this signal and wind down
//! (a stream stops reading new requests and closes once the ones in flight are answered).

use std::future::Future;

use tokio::sync::watch;

/// A cheap, cloneable view of "the server is shutting down".
#[derive(Debug, Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A signal that never fires (services used outside [`crate::serve`]).
    pub(crate) fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive forever so `wait` pends instead of seeing a closed channel.
        std::mem::forget(tx);
        Self(rx)
    }

    /// Whether shutdown has started.
    pub(crate) fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until shutdown starts.
    pub(crate) async fn wait(&mut self) {
        if self.0.wait_for(|&stopping| stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Splits a shutdown future into a [`Stop`] for the services and the future to give tonic,
/// which fires the signal before completing.
pub(crate) fn split(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (Stop, impl Future<Output = ()> + Send) {
    let (tx, rx) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    (Stop(rx), signal)
}
