//! Call records leave the request path through a bounded queue and reach the store in
//! batches: a batch is written when it has [`MAX_BATCH`] records or when the batch window
//! passes since its first record, whichever comes first. On shutdown the writer drains
//! the queue and writes everything still in it.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use veil_domain::CallRecord;
use veil_store::Store;

const QUEUE_CAPACITY: usize = 65_536;
const MAX_BATCH: usize = 512;
const WRITE_ATTEMPTS: u32 = 5;

/// The sending half, cheap to clone into every call.
#[derive(Clone, Debug)]
pub struct RecordSink {
    queue: mpsc::Sender<CallRecord>,
}

impl RecordSink {
    /// Queues a record without waiting. If the store has been unreachable long enough to
    /// fill the queue, the record is dropped and counted rather than stalling calls.
    pub fn submit(&self, record: CallRecord) {
        if let Err(error) = self.queue.try_send(record) {
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "queue full",
                mpsc::error::TrySendError::Closed(_) => "writer stopped",
            };
            tracing::error!(reason, "call record dropped");
        }
    }
}

/// The receiving half: owned by the writer task.
pub struct RecordWriter {
    queue: mpsc::Receiver<CallRecord>,
    store: Arc<dyn Store>,
    window: Duration,
}

pub fn channel(store: Arc<dyn Store>, window: Duration) -> (RecordSink, RecordWriter) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    (RecordSink { queue: tx }, RecordWriter { queue: rx, store, window })
}

impl RecordWriter {
    /// Runs until every [`RecordSink`] is dropped, then writes what is left and returns.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = self.queue.recv().await {
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.window;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, self.queue.recv()).await {
                    Ok(Some(record)) => batch.push(record),
                    Ok(None) | Err(_) => break,
                }
            }
            self.write(&mut batch).await;
        }
    }

    async fn write(&self, batch: &mut Vec<CallRecord>) {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=WRITE_ATTEMPTS {
            match self.store.insert_call_records(batch, &[]).await {
                Ok(()) => {
                    batch.clear();
                    return;
                }
                Err(error) => {
                    tracing::warn!(attempt, records = batch.len(), error = %error, "writing call records failed");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        tracing::error!(records = batch.len(), "call records lost after repeated store failures");
        batch.clear();
    }
}
