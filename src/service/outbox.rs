//! A server stream's outbox bounded by bytes as well as by messages.
//!
//! A channel bounded only by message count holds 64 large articles as
//! readily as 64 small ones, so what a stream reads ahead of a slow client
//! would depend on article size. Here each message takes its size out of a
//! byte budget when it is queued and gives it back when the transport takes
//! it, so the producer waits once `budget_bytes` are queued, whatever their
//! number.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::Status;

/// Budget accounting is in KiB, so a semaphore's permit count fits any
/// realistic budget.
const UNIT: usize = 1024;

/// The producing side.
pub(super) struct Outbox<T> {
    tx: mpsc::Sender<(Result<T, Status>, Option<OwnedSemaphorePermit>)>,
    budget: Arc<Semaphore>,
    budget_units: u32,
}

/// The consuming side, handed to tonic as the response stream.
pub(super) struct OutboxStream<T> {
    rx: ReceiverStream<(Result<T, Status>, Option<OwnedSemaphorePermit>)>,
}

/// A closed outbox: the client went away.
#[derive(Debug)]
pub(super) struct Gone;

/// An outbox holding at most `max_messages` messages and about
/// `budget_bytes` bytes (a message larger than the whole budget takes all
/// of it, so it still goes through).
pub(super) fn outbox<T>(max_messages: usize, budget_bytes: usize) -> (Outbox<T>, OutboxStream<T>) {
    let (tx, rx) = mpsc::channel(max_messages.max(1));
    let budget_units = u32::try_from(budget_bytes / UNIT)
        .unwrap_or(u32::MAX)
        .max(1);
    (
        Outbox {
            tx,
            budget: Arc::new(Semaphore::new(budget_units as usize)),
            budget_units,
        },
        OutboxStream {
            rx: ReceiverStream::new(rx),
        },
    )
}

impl<T> Outbox<T> {
    /// Queues a message of about `bytes` bytes, waiting for room.
    ///
    /// # Errors
    /// [`Gone`] when the client has gone away.
    pub async fn send(&self, message: T, bytes: usize) -> Result<(), Gone> {
        let units = u32::try_from(bytes / UNIT + 1)
            .unwrap_or(u32::MAX)
            .min(self.budget_units);
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(units)
            .await
            .map_err(|_| Gone)?;
        self.tx
            .send((Ok(message), Some(permit)))
            .await
            .map_err(|_| Gone)
    }

    /// Completes when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Queues the status that ends the stream.
    pub async fn end(&self, status: Status) {
        let _ = self.tx.send((Err(status), None)).await;
    }
}

impl<T> Stream for OutboxStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The permit is dropped here, as the transport takes the message.
        Pin::new(&mut self.rx)
            .poll_next(cx)
            .map(|next| next.map(|(message, _permit)| message))
    }
}
