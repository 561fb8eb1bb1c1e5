//! Call records leave the request path through a bounded queue and reach the store in
//! batches, each call's record together with the ledger rows that settle it (its hold and
//! its charge) in one transaction: a batch is written when it has [`MAX_BATCH`] calls or
//! when the batch window passes since its first call, whichever comes first. On shutdown
//! the writer drains the queue and writes everything still in it.
//!
//! With `[billing] durability = "strict"` there is no batch window, and a call's answer
//! waits for its record and settlement to be committed ([`Committed`]), so a hard crash
//! loses nothing already answered; with `batched` (the default) it may lose the last window.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use veil_domain::{CallRecord, LedgerEntry};
use veil_store::Store;

const QUEUE_CAPACITY: usize = 65_536;
const MAX_BATCH: usize = 512;
const WRITE_ATTEMPTS: u32 = 5;

/// The sending half, cheap to clone into every call.
#[derive(Clone, Debug)]
pub struct RecordSink {
    queue: mpsc::Sender<Settled>,
    /// Whether callers wait for the commit (strict durability).
    strict: bool,
    /// Calls submitted and not yet written (or given up on), shared with the writer.
    pending: Arc<AtomicUsize>,
}

/// One finished call: its record and the ledger rows that settle it.
#[derive(Debug)]
struct Settled {
    record: CallRecord,
    ledger: Vec<LedgerEntry>,
    /// Told once the batch holding this call is committed (strict durability only).
    committed: Option<oneshot::Sender<()>>,
}

/// Resolves when a submitted call is durable: at once with batched durability, after the
/// commit with strict durability. A failed write resolves it too (the failure is logged):
/// the answer is not held back forever for a store that is down.
#[derive(Debug, Default)]
pub struct Committed(Option<oneshot::Receiver<()>>);

impl Future for Committed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            None => Poll::Ready(()),
            Some(receiver) => match Pin::new(receiver).poll(cx) {
                Poll::Ready(_) => {
                    self.0 = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl RecordSink {
    /// Queues a record without waiting. If the store has been unreachable long enough to
    /// fill the queue, the record is dropped and counted rather than stalling calls.
    pub fn submit(&self, record: CallRecord, ledger: Vec<LedgerEntry>) -> Committed {
        let (committed, waiter) = if self.strict {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Committed(Some(rx)))
        } else {
            (None, Committed(None))
        };
        // Counted before sending, so the writer never uncounts a call not yet counted.
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = self.queue.try_send(Settled { record, ledger, committed }) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "queue full",
                mpsc::error::TrySendError::Closed(_) => "writer stopped",
            };
            // The in-memory balance already moved; only the durable copy is lost.
            tracing::error!(reason, "call record and settlement dropped");
        }
        waiter
    }

    /// Calls whose record and settlement wait in the queue or in the batch being written.
    pub fn depth(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// The receiving half: owned by the writer task.
pub struct RecordWriter {
    queue: mpsc::Receiver<Settled>,
    store: Arc<dyn Store>,
    window: Duration,
    pending: Arc<AtomicUsize>,
}

/// `window` zero means strict durability: no batching delay, and callers wait for commits.
pub fn channel(store: Arc<dyn Store>, window: Duration) -> (RecordSink, RecordWriter) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let pending = Arc::new(AtomicUsize::new(0));
    (
        RecordSink { queue: tx, strict: window.is_zero(), pending: Arc::clone(&pending) },
        RecordWriter { queue: rx, store, window, pending },
    )
}

impl RecordWriter {
    /// Runs until every [`RecordSink`] is dropped, then writes what is left and returns.
    pub async fn run(mut self) {
        let mut batch = Batch::default();
        while let Some(first) = self.queue.recv().await {
            batch.add(first);
            let deadline = tokio::time::Instant::now() + self.window;
            while batch.records.len() < MAX_BATCH {
                // With no window (strict durability) take only what is already queued.
                let next = if self.window.is_zero() {
                    self.queue.try_recv().ok()
                } else {
                    tokio::time::timeout_at(deadline, self.queue.recv()).await.ok().flatten()
                };
                match next {
                    Some(settled) => batch.add(settled),
                    None => break,
                }
            }
            let written = batch.records.len();
            self.write(&mut batch).await;
            self.pending.fetch_sub(written, Ordering::Relaxed);
        }
    }

    async fn write(&self, batch: &mut Batch) {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=WRITE_ATTEMPTS {
            match self.store.insert_call_records(&batch.records, &batch.ledger).await {
                Ok(()) => {
                    for waiter in batch.waiters.drain(..) {
                        // The caller may have gone (client disconnect): nothing to tell.
                        let _ = waiter.send(());
                    }
                    batch.clear();
                    return;
                }
                Err(error) => {
                    tracing::warn!(attempt, records = batch.records.len(), error = %error, "writing call records failed");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        tracing::error!(
            records = batch.records.len(),
            ledger_rows = batch.ledger.len(),
            "call records and settlements lost after repeated store failures"
        );
        batch.clear();
    }
}

#[derive(Default)]
struct Batch {
    records: Vec<CallRecord>,
    ledger: Vec<LedgerEntry>,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn add(&mut self, settled: Settled) {
        self.records.push(settled.record);
        self.ledger.extend(settled.ledger);
        self.waiters.extend(settled.committed);
    }

    /// Dropping the waiters resolves them too (see [`Committed`]).
    fn clear(&mut self) {
        self.records.clear();
        self.ledger.clear();
        self.waiters.clear();
    }
}
