//! Acknowledgements: a request waits on one [`Ack`] that completes when every
//! piece of its positions is durable, or fails as soon as one piece fails.
//! If every holder of a piece is dropped without completing it (an actor
//! died), the request sees the failure too: nothing is ever reported as
//! written by default.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Why positions did not become durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The stream did not take the write before the request's deadline.
    #[error("the stream did not take the write in time: {0}")]
    Unavailable(String),
    /// A pipeline actor stopped while it held the positions.
    #[error("the write pipeline lost its worker; retry")]
    Dropped,
}

struct AckState {
    remaining: AtomicUsize,
    failed: Mutex<Option<WriteError>>,
    tx: Mutex<Option<oneshot::Sender<Result<(), WriteError>>>>,
}

/// One request's acknowledgement, shared by the pieces of its positions.
#[derive(Clone)]
pub struct Ack(Arc<AckState>);

impl Ack {
    /// An acknowledgement expecting `pieces` completions.
    pub fn new(pieces: usize) -> (Self, oneshot::Receiver<Result<(), WriteError>>) {
        let (tx, rx) = oneshot::channel();
        let state = AckState {
            remaining: AtomicUsize::new(pieces),
            failed: Mutex::new(None),
            tx: Mutex::new(Some(tx)),
        };
        (Self(Arc::new(state)), rx)
    }

    /// One more piece to wait for (a piece was split in two).
    pub fn add_piece(&self) {
        self.0.remaining.fetch_add(1, Ordering::AcqRel);
    }

    /// Completes one piece.
    pub fn complete(&self, result: Result<(), WriteError>) {
        if let Err(e) = result {
            let mut failed = self.0.failed.lock();
            if failed.is_none() {
                *failed = Some(e.clone());
            }
            drop(failed);
            // Fail fast: the request can answer 503 now.
            if let Some(tx) = self.0.tx.lock().take() {
                let _ = tx.send(Err(e));
            }
        }
        if self.0.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(tx) = self.0.tx.lock().take()
        {
            let outcome = match self.0.failed.lock().clone() {
                Some(e) => Err(e),
                None => Ok(()),
            };
            let _ = tx.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn completes_when_every_piece_is_done() {
        let (ack, rx) = Ack::new(2);
        ack.add_piece();
        ack.complete(Ok(()));
        ack.complete(Ok(()));
        ack.complete(Ok(()));
        assert_eq!(rx.await, Ok(Ok(())));
    }

    #[tokio::test]
    async fn fails_as_soon_as_one_piece_fails() {
        let (ack, rx) = Ack::new(3);
        ack.complete(Err(WriteError::Unavailable("down".into())));
        assert!(matches!(rx.await, Ok(Err(WriteError::Unavailable(_)))));
    }

    #[tokio::test]
    async fn a_dropped_ack_is_a_failure_not_a_success() {
        let (ack, rx) = Ack::new(1);
        drop(ack);
        assert!(rx.await.is_err());
    }
}
