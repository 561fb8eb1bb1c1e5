//! The per-request firewall state: replaces values by placeholders and restores them.
//!
//! Promises: `restore(redact(x)) == x` for every text, also when `x` already contains text
//! shaped like a placeholder (`[EMAIL_1]`): such text is either reserved (its number is never
//! issued) or, when that placeholder was already issued for an earlier field, replaced by a
//! fresh placeholder of its own, so the upstream never sees one placeholder meaning two things.
//! Redacted text holds no value the detector finds outside placeholders, also where replacing
//! a value changed what its neighbours read as (see `Redactor::with_revealed_values`).
//! On any error the request must be failed: part of it may already be redacted.

use crate::EntityKind;
use crate::detect::{Detector, resolve_overlaps};
use crate::error::RedactError;
use crate::mapping::{Insert, Mapping};
use crate::placeholder::shaped_spans;
use crate::restore::{Restorer, StreamRestorer};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Redaction state for one request. Create one per request; drop it (zeroing every original)
/// when the response has been restored.
pub struct Redactor {
    detector: Arc<Detector>,
    /// Shared with the [`Restorer`]s handed out; a later `redact` copies it on write, so a
    /// restorer is a snapshot of the placeholders issued before it was made.
    mapping: Arc<Mapping>,
    /// Placeholder-shaped text seen in the input before Veil issued it: never issued.
    reserved: HashSet<String>,
    bytes_seen: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("counts", &self.mapping.counts())
            .field("bytes_seen", &self.bytes_seen)
            .finish()
    }
}

/// A span to replace: a detected value, or a literal copy of an issued placeholder.
struct Replacement {
    kind: EntityKind,
    start: usize,
    end: usize,
    escape: bool,
}

/// Escapes outrank every kind on equal spans: leaving one in place would make a placeholder
/// ambiguous.
const ESCAPE_RANK: u8 = u8::MAX;

/// Rounds of redacting again for revealed values; real text needs at most one or two, so
/// more means text crafted to make the firewall work without end.
const MAX_REVEAL_ROUNDS: usize = 4;

fn replacement_span(replacement: &Replacement) -> (usize, usize, u8) {
    let rank = if replacement.escape { ESCAPE_RANK } else { replacement.kind.specificity() };
    (replacement.start, replacement.end, rank)
}

/// A stretch of the original text copied unchanged into a preview.
struct KeptPiece {
    preview_start: usize,
    original_start: usize,
    len: usize,
}

/// `text` with `replacements` (ordered, disjoint) made, using a placeholder of the right kind
/// (numbered 0) for each, and where the unchanged stretches of `text` are in it.
fn preview(text: &str, replacements: &[Replacement]) -> (String, Vec<KeptPiece>) {
    let mut preview = String::with_capacity(text.len());
    let mut kept = Vec::with_capacity(replacements.len() + 1);
    let mut copied = 0;
    for replacement in replacements {
        let Some(before) = text.get(copied..replacement.start) else {
            continue;
        };
        kept.push(KeptPiece { preview_start: preview.len(), original_start: copied, len: before.len() });
        preview.push_str(before);
        preview.push('[');
        preview.push_str(replacement.kind.label());
        preview.push_str("_0]");
        copied = replacement.end;
    }
    let rest = text.get(copied..).unwrap_or_default();
    kept.push(KeptPiece { preview_start: preview.len(), original_start: copied, len: rest.len() });
    preview.push_str(rest);
    (preview, kept)
}

impl Redactor {
    pub fn new(detector: Arc<Detector>) -> Self {
        Self { detector, mapping: Arc::default(), reserved: HashSet::new(), bytes_seen: 0 }
    }

    /// Marks placeholder-shaped text in `text` as taken, so Veil never issues those
    /// placeholders. `redact` does this for its own input; call it for text that goes upstream
    /// without being redacted, before redacting anything else.
    pub fn reserve_placeholders_in(&mut self, text: &str) {
        for (start, end, _) in shaped_spans(text) {
            if let Some(literal) = text.get(start..end)
                && !self.mapping.is_issued(literal)
                && !self.reserved.contains(literal)
            {
                self.reserved.insert(literal.to_owned());
            }
        }
    }

    /// `text` with every detected value replaced by its placeholder (`[EMAIL_1]`), borrowed
    /// when nothing was found.
    pub fn redact<'t>(&mut self, text: &'t str) -> Result<Cow<'t, str>, RedactError> {
        let limits = self.detector.limits();
        let seen = self.bytes_seen.saturating_add(text.len());
        if seen > limits.max_input_bytes {
            return Err(RedactError::InputTooLarge { limit: limits.max_input_bytes });
        }
        self.bytes_seen = seen;

        let mut replacements = self.escapes_and_reserve(text);
        let mut findings = Vec::new();
        self.detector.collect(text, &mut findings);
        replacements.extend(findings.into_iter().map(|finding| Replacement {
            kind: finding.kind,
            start: finding.start,
            end: finding.end,
            escape: false,
        }));
        if replacements.is_empty() {
            return Ok(Cow::Borrowed(text));
        }
        let replacements = self.with_revealed_values(text, resolve_overlaps(replacements, replacement_span))?;

        let mapping = Arc::make_mut(&mut self.mapping);
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for replacement in replacements {
            let (Some(before), Some(original)) =
                (text.get(copied..replacement.start), text.get(replacement.start..replacement.end))
            else {
                continue;
            };
            out.push_str(before);
            let placeholder = mapping.placeholder_for(
                replacement.kind,
                original,
                !replacement.escape,
                &self.reserved,
                limits.max_entities,
            )?;
            out.push_str(placeholder);
            copied = replacement.end;
        }
        out.push_str(text.get(copied..).unwrap_or_default());
        Ok(Cow::Owned(out))
    }

    /// `replacements` plus the values that replacing them reveals. A placeholder puts `[` and
    /// `]` where the text had other characters, and detection depends on neighbours: in
    /// `a@b.or13812345678` the number is glued to the address and no value, but next to
    /// `[EMAIL_1]` it is a phone number that would leave unredacted. So the text is redacted
    /// again, with stand-ins for the placeholders, until nothing new is found (values that
    /// would straddle a placeholder are not taken: they were values of the text before).
    /// Text that keeps revealing values after a few rounds is refused (fail closed).
    fn with_revealed_values(
        &self,
        text: &str,
        mut replacements: Vec<Replacement>,
    ) -> Result<Vec<Replacement>, RedactError> {
        if replacements.iter().all(|replacement| replacement.escape) {
            // An escape swaps a placeholder for a placeholder: no neighbour changes.
            return Ok(replacements);
        }
        for _ in 0..MAX_REVEAL_ROUNDS {
            let (preview, kept) = preview(text, &replacements);
            let mut found = Vec::new();
            self.detector.collect(&preview, &mut found);
            let revealed: Vec<Replacement> = found
                .into_iter()
                .filter_map(|finding| {
                    let index = kept.partition_point(|piece| piece.preview_start <= finding.start).checked_sub(1)?;
                    let piece = kept.get(index).filter(|piece| finding.end <= piece.preview_start + piece.len)?;
                    // Inside a kept piece the preview is the text, moved by a fixed offset.
                    let start = piece.original_start + (finding.start - piece.preview_start);
                    Some(Replacement {
                        kind: finding.kind,
                        start,
                        end: start + (finding.end - finding.start),
                        escape: false,
                    })
                })
                .collect();
            if revealed.is_empty() {
                return Ok(replacements);
            }
            // Revealed values lie outside every replacement, so none of those is dropped.
            replacements.extend(revealed);
            replacements = resolve_overlaps(replacements, replacement_span);
        }
        Err(RedactError::KeepsRevealing { rounds: MAX_REVEAL_ROUNDS })
    }

    /// Literal copies of already-issued placeholders in `text` (to be replaced), after
    /// reserving every other placeholder-shaped text in it.
    fn escapes_and_reserve(&mut self, text: &str) -> Vec<Replacement> {
        let mut escapes = Vec::new();
        for (start, end, kind) in shaped_spans(text) {
            let Some(literal) = text.get(start..end) else {
                continue;
            };
            if self.mapping.is_issued(literal) {
                escapes.push(Replacement { kind, start, end, escape: true });
            } else if !self.reserved.contains(literal) {
                self.reserved.insert(literal.to_owned());
            }
        }
        escapes
    }

    /// `text` (prose) with every placeholder this redactor issued replaced by its original.
    pub fn restore<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.mapping.restore(text, Insert::Plain)
    }

    /// See [`Restorer::restore_json_text`].
    pub fn restore_json_text<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.mapping.restore(text, Insert::JsonText)
    }

    /// Distinct values replaced so far, per kind (kinds with none are left out).
    pub fn counts(&self) -> BTreeMap<EntityKind, u32> {
        self.mapping.counts()
    }

    /// Distinct values replaced so far, all kinds together.
    pub fn total(&self) -> u32 {
        self.mapping.total()
    }

    /// A cheap, clonable, read-only handle for the response side (`Send + Sync`, `'static`).
    /// It knows the placeholders issued so far; make it after the request is redacted.
    pub fn restorer(&self) -> Restorer {
        Restorer::new(Arc::clone(&self.mapping))
    }

    /// A restorer for one streamed text channel; see [`StreamRestorer`].
    pub fn stream_restorer(&self) -> StreamRestorer {
        self.restorer().stream()
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }
}

#[cfg(test)]
mod tests;
