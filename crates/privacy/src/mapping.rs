//! The per-request table placeholder ↔ original, and restoring placeholders in text.
//!
//! Promises: originals live only here, in memory, and are zeroed when the table is dropped
//! (every copy: a clone made by copy-on-write is zeroed on its own drop); one original always
//! maps to one placeholder; a placeholder is never issued twice or when it was reserved;
//! restoring replaces exactly the issued placeholders, in one pass, so a restored original
//! that itself looks like a placeholder is never restored again.

use crate::EntityKind;
use crate::error::RedactError;
use crate::placeholder::placeholder_text;
use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashMap, HashSet};
use zeroize::Zeroize;

/// An original value: zeroed on drop, never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SecretText(String);

impl Borrow<str> for SecretText {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// How an original is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// As it was: the text is prose (message content).
    Plain,
    /// Inside JSON source (tool-call `arguments`): control characters are escaped so a
    /// multi-line original (a private key) keeps the JSON valid. Quotes and backslashes are
    /// left alone: no detector takes a quote, and a backslash in an original comes from
    /// JSON-encoded input where it already is an escape.
    JsonText,
}

#[derive(Clone)]
struct Entry {
    placeholder: String,
    original: SecretText,
}

#[derive(Clone, Default)]
pub(crate) struct Mapping {
    entries: Vec<Entry>,
    by_placeholder: HashMap<String, usize>,
    by_original: HashMap<SecretText, usize>,
    /// Last number issued per kind (index: [`EntityKind::index`]).
    last_number: [u32; EntityKind::ALL.len()],
    /// Distinct detected values per kind; escaped look-alike placeholders are not counted.
    counts: [u32; EntityKind::ALL.len()],
    longest_placeholder: usize,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("counts", &self.counts()).field("placeholders", &self.entries.len()).finish()
    }
}

impl Mapping {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn longest_placeholder(&self) -> usize {
        self.longest_placeholder
    }

    pub(crate) fn is_issued(&self, text: &str) -> bool {
        self.by_placeholder.contains_key(text)
    }

    /// The placeholder for `original`, issuing the next free number of `kind` if it is new.
    /// `counted` is false for escaped look-alike placeholders, which are not personal data.
    pub(crate) fn placeholder_for(
        &mut self,
        kind: EntityKind,
        original: &str,
        counted: bool,
        reserved: &HashSet<String>,
        max_entities: usize,
    ) -> Result<&str, RedactError> {
        let index = match self.by_original.get(original) {
            Some(&index) => index,
            None => self.issue(kind, original, counted, reserved, max_entities)?,
        };
        Ok(self.entries.get(index).map_or("", |entry| entry.placeholder.as_str()))
    }

    fn issue(
        &mut self,
        kind: EntityKind,
        original: &str,
        counted: bool,
        reserved: &HashSet<String>,
        max_entities: usize,
    ) -> Result<usize, RedactError> {
        let too_many = RedactError::TooManyEntities { limit: max_entities };
        if self.entries.len() >= max_entities {
            return Err(too_many);
        }
        let slot = kind.index();
        let mut number = self.last_number.get(slot).copied().unwrap_or(0);
        let placeholder = loop {
            number = number.checked_add(1).ok_or_else(|| too_many.clone())?;
            let candidate = placeholder_text(kind, number);
            if !reserved.contains(&candidate) {
                break candidate;
            }
        };
        if let Some(last) = self.last_number.get_mut(slot) {
            *last = number;
        }
        if counted && let Some(count) = self.counts.get_mut(slot) {
            *count += 1;
        }
        let index = self.entries.len();
        self.longest_placeholder = self.longest_placeholder.max(placeholder.len());
        self.by_placeholder.insert(placeholder.clone(), index);
        self.by_original.insert(SecretText(original.to_owned()), index);
        self.entries.push(Entry { placeholder, original: SecretText(original.to_owned()) });
        Ok(index)
    }

    pub(crate) fn counts(&self) -> BTreeMap<EntityKind, u32> {
        EntityKind::ALL.into_iter().zip(self.counts).filter(|&(_, count)| count > 0).collect()
    }

    pub(crate) fn total(&self) -> u32 {
        self.counts.iter().sum()
    }

    /// `text` with every issued placeholder replaced by its original; borrowed when nothing
    /// was replaced.
    pub(crate) fn restore<'t>(&self, text: &'t str, insert: Insert) -> Cow<'t, str> {
        if self.entries.is_empty() || memchr::memchr(b'[', text.as_bytes()).is_none() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        if self.restore_into(text, &mut out, insert) { Cow::Owned(out) } else { Cow::Borrowed(text) }
    }

    /// Appends `text`, restored, to `out`; returns whether any placeholder was replaced.
    pub(crate) fn restore_into(&self, text: &str, out: &mut String, insert: Insert) -> bool {
        let bytes = text.as_bytes();
        let mut copied = 0;
        let mut replaced = false;
        for open in memchr::memchr_iter(b'[', bytes) {
            if open < copied {
                continue;
            }
            let window_end = bytes.len().min(open + self.longest_placeholder);
            let Some(close) = bytes.get(open + 1..window_end).and_then(|window| memchr::memchr(b']', window)) else {
                continue;
            };
            let token_end = open + close + 2;
            let Some(&index) = text.get(open..token_end).and_then(|token| self.by_placeholder.get(token)) else {
                continue;
            };
            let Some(entry) = self.entries.get(index) else {
                continue;
            };
            replaced = true;
            out.push_str(text.get(copied..open).unwrap_or_default());
            match insert {
                Insert::Plain => out.push_str(&entry.original.0),
                Insert::JsonText => push_json_escaped_controls(out, &entry.original.0),
            }
            copied = token_end;
        }
        out.push_str(text.get(copied..).unwrap_or_default());
        replaced
    }
}

fn push_json_escaped_controls(out: &mut String, original: &str) {
    if !original.chars().any(char::is_control) {
        out.push_str(original);
        return;
    }
    for ch in original.chars() {
        match ch {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if u32::from(ch) < 0x20 || ch == '\u{7f}' => out.push_str(&format!("\\u{:04x}", u32::from(ch))),
            ch => out.push(ch),
        }
    }
}
