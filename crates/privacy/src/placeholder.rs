//! The placeholder syntax `[LABEL_N]`: building placeholders and finding placeholder-shaped text.
//!
//! A placeholder starts with `[`, ends with the first `]` after it and holds no other bracket,
//! so two placeholders can never overlap and a scan can decide at every `[` on its own. That
//! property is what makes restoring chunk by chunk equal to restoring the whole text.

use crate::EntityKind;

/// Longest placeholder-shaped text worth looking at: `[` + longest label + `_` + a `u32` + `]`.
pub(crate) const MAX_SHAPED_LEN: usize = 1 + 6 + 1 + 10 + 1;

pub(crate) fn placeholder_text(kind: EntityKind, number: u32) -> String {
    format!("[{}_{}]", kind.label(), number)
}

/// Byte spans `(start, end)` of every well-formed `[LABEL_N]` in `text` whose label is one of
/// the entity labels, in order. Used to find text that looks like a placeholder before Veil
/// has issued anything, so the numbers in it are never issued.
pub(crate) fn shaped_spans(text: &str) -> impl Iterator<Item = (usize, usize, EntityKind)> + '_ {
    let bytes = text.as_bytes();
    memchr::memchr_iter(b'[', bytes).filter_map(move |start| {
        let window_end = bytes.len().min(start + MAX_SHAPED_LEN);
        let window = bytes.get(start + 1..window_end)?;
        let close = memchr::memchr(b']', window)?;
        let inner = text.get(start + 1..start + 1 + close)?;
        let kind = shaped_kind(inner)?;
        Some((start, start + close + 2, kind))
    })
}

/// The kind named by the inside of a placeholder (`EMAIL_12`), if it is well formed.
fn shaped_kind(inner: &str) -> Option<EntityKind> {
    let (label, number) = inner.rsplit_once('_')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    EntityKind::from_label(label)
}

/// Whether `tail` (which starts with `[` and holds no `]`) could still grow into a placeholder
/// of at most `longest` bytes; a stream restorer holds such a tail back.
pub(crate) fn could_become_placeholder(tail: &str, longest: usize) -> bool {
    tail.len() < longest
        && tail.starts_with('[')
        && tail.bytes().skip(1).all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_bracketed_label_and_number() {
        assert_eq!(placeholder_text(EntityKind::CnId, 12), "[CN_ID_12]");
        assert!(placeholder_text(EntityKind::Secret, u32::MAX).len() <= MAX_SHAPED_LEN);
    }

    #[test]
    fn finds_only_well_formed_placeholders_with_known_labels() {
        let text = "a [EMAIL_1] b [CN_ID_22][NAME_1] [EMAIL_] [EMAIL_x] [[IP_3] [PHONE_4";
        let found: Vec<_> = shaped_spans(text).map(|(s, e, kind)| (&text[s..e], kind)).collect();
        assert_eq!(
            found,
            vec![("[EMAIL_1]", EntityKind::Email), ("[CN_ID_22]", EntityKind::CnId), ("[IP_3]", EntityKind::Ip)]
        );
    }

    #[test]
    fn partial_placeholders_are_recognised_until_too_long() {
        assert!(could_become_placeholder("[EMA", 9));
        assert!(could_become_placeholder("[EMAIL_1", 9));
        assert!(!could_become_placeholder("[EMAIL_10", 9));
        assert!(!could_become_placeholder("[ema", 9));
        assert!(!could_become_placeholder("[EMAIL 1", 9));
    }
}
