//! The response side: putting originals back, for whole texts and for streams.
//!
//! Promises: only placeholders Veil issued for this request are replaced (anything else that
//! looks like one is left as it is); streaming restore over any chunking emits exactly what
//! restoring the whole text would, holding back at most one partial placeholder (shorter than
//! the longest issued one) between chunks, so memory stays flat in the stream's length.

use crate::EntityKind;
use crate::mapping::{Insert, Mapping};
use crate::placeholder::could_become_placeholder;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A read-only view of one request's placeholders, cheap to clone and to send across tasks.
#[derive(Clone)]
pub struct Restorer {
    mapping: Arc<Mapping>,
}

impl std::fmt::Debug for Restorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restorer").field("counts", &self.mapping.counts()).finish()
    }
}

impl Restorer {
    pub(crate) fn new(mapping: Arc<Mapping>) -> Self {
        Self { mapping }
    }

    /// `text` (prose) with every issued placeholder replaced by its original.
    pub fn restore<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.mapping.restore(text, Insert::Plain)
    }

    /// Like [`restore`](Self::restore) for text that is JSON source (tool-call `arguments`):
    /// control characters in originals (the line breaks of a private key) are escaped, so
    /// the result stays valid JSON.
    pub fn restore_json_text<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.mapping.restore(text, Insert::JsonText)
    }

    /// Whether no placeholder was issued (restoring is then the identity).
    pub fn is_empty(&self) -> bool {
        self.mapping.is_empty()
    }

    pub fn counts(&self) -> BTreeMap<EntityKind, u32> {
        self.mapping.counts()
    }

    pub fn total(&self) -> u32 {
        self.mapping.total()
    }

    /// A restorer for one streamed text channel (one per choice's content, one per tool
    /// call's arguments, …): placeholders never span two channels, so each needs its own.
    pub fn stream(&self) -> StreamRestorer {
        StreamRestorer { mapping: Arc::clone(&self.mapping), pending: String::new(), insert: Insert::Plain }
    }

    /// A stream restorer for a channel that carries JSON source (streamed tool-call
    /// `arguments`, Anthropic `partial_json`); see [`restore_json_text`](Self::restore_json_text).
    pub fn stream_json_text(&self) -> StreamRestorer {
        StreamRestorer { mapping: Arc::clone(&self.mapping), pending: String::new(), insert: Insert::JsonText }
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }
}

/// Restores one stream of text pieces whose placeholders may be split across pieces
/// (`"[EMA"` + `"IL_1] ok"`). Feed every piece to [`push`](Self::push) and emit what it
/// returns; at the end of the channel emit [`finish`](Self::finish).
pub struct StreamRestorer {
    mapping: Arc<Mapping>,
    /// Held-back tail: starts with `[` and may still become a placeholder.
    pending: String,
    insert: Insert,
}

impl std::fmt::Debug for StreamRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRestorer").field("pending_bytes", &self.pending.len()).finish()
    }
}

impl StreamRestorer {
    /// Restored text that is safe to emit now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.mapping.is_empty() || (self.pending.is_empty() && memchr::memchr(b'[', piece.as_bytes()).is_none()) {
            return piece.to_owned();
        }
        self.pending.push_str(piece);
        let hold_from = match memchr::memrchr(b'[', self.pending.as_bytes()) {
            Some(open)
                if self
                    .pending
                    .get(open..)
                    .is_some_and(|tail| could_become_placeholder(tail, self.mapping.longest_placeholder())) =>
            {
                open
            }
            _ => self.pending.len(),
        };
        let mut out = String::with_capacity(hold_from);
        self.mapping.restore_into(self.pending.get(..hold_from).unwrap_or_default(), &mut out, self.insert);
        self.pending.replace_range(..hold_from, "");
        out
    }

    /// Whatever is still held back, restored. The restorer can be reused afterwards.
    pub fn finish(&mut self) -> String {
        let mut out = String::with_capacity(self.pending.len());
        self.mapping.restore_into(&self.pending, &mut out, self.insert);
        self.pending.clear();
        out
    }

    /// Whether a partial placeholder is being held back.
    pub fn is_holding(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests;
