//! Debug capture: the one way content may be kept (DESIGN §3.1 exception (a)). A key's
//! owner turns it on for at most 24 hours; while it is on, each call through that key
//! is captured — the request as the client sent it and the response as the client got
//! it, bounded in size — sealed with the installation's capture key bound to the owner,
//! and stored until the capture window ends. Only the owner can read it back, through
//! the API; enabling, disabling and reading are audited; expired captures are purged.
//!
//! Sealing and storing happen on a writer task, off the request path.

use std::sync::Arc;
use tokio::sync::mpsc;
use veil_domain::{KeyId, Timestamp, UserId};
use veil_secrets::Sealer;
use veil_store::{NewCapture, Store};

/// Captured response bytes beyond this are dropped (and the capture marked truncated).
pub const MAX_CAPTURED_RESPONSE: usize = 1 << 20;
const QUEUE_CAPACITY: usize = 1_024;

/// What is bound to a sealed capture: it opens only for this owner and request.
pub fn associated_data(user: UserId, request_id: &str) -> Vec<u8> {
    format!("capture:{user}:{request_id}").into_bytes()
}

pub struct Capturing {
    key_id: KeyId,
    user_id: UserId,
    request_id: String,
    expires_at: Timestamp,
    time: Timestamp,
    request: serde_json::Value,
    response: Vec<u8>,
    truncated: bool,
}

impl Capturing {
    pub fn new(
        key_id: KeyId,
        user_id: UserId,
        request_id: String,
        expires_at: Timestamp,
        request: serde_json::Value,
    ) -> Self {
        Self {
            key_id,
            user_id,
            request_id,
            expires_at,
            time: Timestamp::now(),
            request,
            response: Vec::new(),
            truncated: false,
        }
    }

    pub fn append(&mut self, bytes: &[u8]) {
        let room = MAX_CAPTURED_RESPONSE.saturating_sub(self.response.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.response.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    pub fn finish(self, sink: &CaptureSink, status: u16) {
        let payload = serde_json::json!({
            "status": status,
            "request": self.request,
            "response": String::from_utf8_lossy(&self.response),
            "truncated": self.truncated,
        });
        let job = CaptureJob {
            key_id: self.key_id,
            user_id: self.user_id,
            request_id: self.request_id,
            time: self.time,
            expires_at: self.expires_at,
            payload: payload.to_string().into_bytes(),
        };
        if sink.queue.try_send(job).is_err() {
            tracing::warn!("debug capture dropped: queue full or writer stopped");
        }
    }
}

struct CaptureJob {
    key_id: KeyId,
    user_id: UserId,
    request_id: String,
    time: Timestamp,
    expires_at: Timestamp,
    payload: Vec<u8>,
}

#[derive(Clone)]
pub struct CaptureSink {
    queue: mpsc::Sender<CaptureJob>,
}

pub struct CaptureWriter {
    queue: mpsc::Receiver<CaptureJob>,
    store: Arc<dyn Store>,
    sealer: Option<Sealer>,
}

pub fn channel(store: Arc<dyn Store>, sealer: Option<Sealer>) -> (CaptureSink, CaptureWriter) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    (CaptureSink { queue: tx }, CaptureWriter { queue: rx, store, sealer })
}

impl CaptureWriter {
    /// Runs until every sink is dropped.
    pub async fn run(mut self) {
        while let Some(mut job) = self.queue.recv().await {
            let sealed = self
                .sealer
                .as_ref()
                .and_then(|sealer| sealer.seal(&associated_data(job.user_id, &job.request_id), &job.payload));
            // The plaintext is not needed past this point.
            zeroize::Zeroize::zeroize(&mut job.payload);
            let Some((nonce, ciphertext)) = sealed else {
                tracing::error!("debug capture could not be sealed; discarded");
                continue;
            };
            let capture = NewCapture {
                key_id: job.key_id,
                user_id: job.user_id,
                request_id: job.request_id,
                time: job.time,
                expires_at: job.expires_at,
                nonce,
                ciphertext,
            };
            if let Err(error) = self.store.insert_capture(&capture).await {
                tracing::warn!(error = %error, "storing a debug capture failed");
            }
        }
    }
}
