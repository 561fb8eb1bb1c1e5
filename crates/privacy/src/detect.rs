//! Finding personal data and secrets in text: compiled patterns, their validators, and the
//! deterministic resolution of overlapping findings (most text covered wins).
//!
//! Promises: matching time is linear in the text (the `regex` crate, no backtracking, and
//! every rescan bounded by a pattern's maximum length), every candidate passes a structural or
//! checksum validator before it counts, and the same text always yields the same findings. A
//! [`Detector`] is built once and shared (`Arc`); it holds no per-request state.
//!
//! Speed: patterns led by a literal run over the whole text on the regex engine's SIMD
//! prefilter; digit-based patterns run only inside digit runs and IPv6 only inside runs with
//! colons, found by one cheap byte loop (see `Locate`). A unit property checks that this
//! finds exactly what running every pattern over the whole text finds.
//!
//! Decisions worth knowing:
//! - Boundaries are ASCII: a value glued to ASCII letters or digits is not a match
//!   (`id13812345678`), but one glued to CJK text is (`电话13812345678`). A JSON escape such
//!   as `\n` or `\u00e9` right before a value counts as a boundary, so values inside
//!   JSON-encoded text (tool-call `arguments`) are found and the escape is never cut.
//! - `1.2.3.4` is an IPv4 address; `1.2.3.4.5` (a version string) is not, nor is any address
//!   with a leading-zero octet (`01.02.03.04` reads as a date). Loopback and unspecified
//!   addresses (`127.0.0.1`, `0.0.0.0`, `::1`, `::`) identify no one and are left alone.
//! - Cards need 13–19 digits, a first digit 2–6 (the issuer ranges in use) and a valid Luhn
//!   digit; about one random number in ten passes Luhn, so those few are still replaced.
//! - Phones: `+<country> …` forms (8–15 digits), North-American numbers written with
//!   separators (a bare 10-digit run is not taken: it is more often an id), Chinese mobiles.

use crate::EntityKind;
use crate::checks::{cn_id_valid, entropy_bits_per_char, iban_length, iban_mod97_valid, luhn_valid};
use crate::error::{BuildError, RedactError};
use regex::Regex;
use std::net::Ipv6Addr;

/// Bounds on what one request may ask the firewall to do; past them it fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of text one [`crate::Redactor`] accepts (all fields of one request together).
    pub max_input_bytes: usize,
    /// Distinct values one [`crate::Redactor`] may replace.
    pub max_entities: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_input_bytes: 32 * 1024 * 1024, max_entities: 100_000 }
    }
}

/// One validated value in a text: its kind and byte span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: EntityKind,
    pub start: usize,
    pub end: usize,
}

/// Which validator turns a regex candidate into a finding.
#[derive(Debug, Clone, Copy)]
enum Check {
    Email,
    PhoneInternational,
    PhoneNorthAmerican,
    PhoneChinaMobile,
    CnId,
    Card,
    Iban,
    Ipv4,
    Ipv6,
    PrefixedSecret,
    PrivateKey,
    Bearer,
}

/// Where to look again after a candidate fails validation.
#[derive(Debug, Clone, Copy)]
enum Retry {
    /// One character further, also after a match: a valid value may start inside the
    /// candidate (`12 4111 1111 1111 1111`: the card starts after `12 `), and a checksum hit
    /// by chance must not hide the real value that starts inside it. Used for bounded
    /// patterns only, so the rescans stay linear.
    NextChar,
    /// After the rejected candidate: its tail cannot start a value of this kind.
    AfterMatch,
}

const SECRET_PREFIXED: &str = concat!(
    r"sk-[A-Za-z0-9_\-]{20,}",
    r"|A(?:KIA|SIA)[0-9A-Z]{16}",
    r"|gh[opsur]_[A-Za-z0-9]{36,}",
    r"|github_pat_[A-Za-z0-9_]{22,}",
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}",
    r"|AIza[0-9A-Za-z_\-]{35}",
    r"|eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*",
);

/// How the candidates of a pattern are located before its regex runs. Regexes led by a
/// literal are searched by the regex engine's own SIMD prefilter; the others would run a DFA
/// over every byte (a few hundred MB/s each), so they only see the short runs of text that
/// could hold a match. A cheap byte loop finds those runs.
#[derive(Debug, Clone, Copy)]
enum Locate {
    /// The whole text: the regex holds a literal (`@`, `+`, `sk-`, `-----BEGIN`, `bearer`).
    Anywhere,
    /// Digit runs (digits joined by one or two of ` .-()`) with at least `min_digits` digits
    /// and `min_dots` dots, plus one byte of context each side (`+`, `(`, `X`).
    DigitRun { min_digits: usize, min_dots: usize },
    /// Two ASCII letters right before a digit run that starts with two digits (`DE89…`).
    IbanStart,
    /// Runs of hex digits, `:` and `.` holding at least two colons.
    HexColonRun,
}

struct PatternSpec {
    kind: EntityKind,
    check: Check,
    retry: Retry,
    locate: Locate,
    source: &'static str,
}

/// Every pattern. Classes are ASCII on purpose (the DFA never falls back to a slower engine
/// on non-ASCII text); the e-mail local part also takes Latin letters with diacritics.
const PATTERNS: &[PatternSpec] = &[
    PatternSpec {
        kind: EntityKind::Email,
        check: Check::Email,
        retry: Retry::AfterMatch,
        locate: Locate::Anywhere,
        source: r"[A-Za-z0-9._%+\-\x{C0}-\x{24F}]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}",
    },
    PatternSpec {
        kind: EntityKind::Phone,
        check: Check::PhoneInternational,
        retry: Retry::NextChar,
        locate: Locate::Anywhere,
        source: r"\+[0-9][0-9 .()\-]{6,24}[0-9]",
    },
    PatternSpec {
        kind: EntityKind::Phone,
        check: Check::PhoneNorthAmerican,
        retry: Retry::NextChar,
        locate: Locate::DigitRun { min_digits: 10, min_dots: 0 },
        source: r"(?:1[ .\-]?)?(?:\([2-9][0-9]{2}\)[ .\-]?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}",
    },
    PatternSpec {
        kind: EntityKind::Phone,
        check: Check::PhoneChinaMobile,
        retry: Retry::NextChar,
        locate: Locate::DigitRun { min_digits: 11, min_dots: 0 },
        source: r"(?:\+86[ \-]?|0086[ \-]?)?1[3-9][0-9](?:[ \-]?[0-9]{4}){2}",
    },
    PatternSpec {
        kind: EntityKind::CnId,
        check: Check::CnId,
        retry: Retry::NextChar,
        locate: Locate::DigitRun { min_digits: 17, min_dots: 0 },
        source: r"[1-9][0-9]{16}[0-9Xx]",
    },
    PatternSpec {
        kind: EntityKind::Card,
        check: Check::Card,
        retry: Retry::NextChar,
        locate: Locate::DigitRun { min_digits: 13, min_dots: 0 },
        source: r"[2-6][0-9](?:[ \-]?[0-9]){11,17}",
    },
    PatternSpec {
        kind: EntityKind::Iban,
        check: Check::Iban,
        retry: Retry::NextChar,
        locate: Locate::IbanStart,
        source: r"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}",
    },
    PatternSpec {
        kind: EntityKind::Ip,
        check: Check::Ipv4,
        retry: Retry::NextChar,
        locate: Locate::DigitRun { min_digits: 4, min_dots: 3 },
        source: r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}",
    },
    PatternSpec {
        kind: EntityKind::Ip,
        check: Check::Ipv6,
        retry: Retry::NextChar,
        locate: Locate::HexColonRun,
        source: r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?",
    },
    PatternSpec {
        kind: EntityKind::Secret,
        check: Check::PrefixedSecret,
        retry: Retry::AfterMatch,
        locate: Locate::Anywhere,
        source: SECRET_PREFIXED,
    },
    PatternSpec {
        kind: EntityKind::Secret,
        check: Check::PrivateKey,
        retry: Retry::AfterMatch,
        locate: Locate::Anywhere,
        source: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\:,\-]*)",
    },
    PatternSpec {
        kind: EntityKind::Secret,
        check: Check::Bearer,
        retry: Retry::AfterMatch,
        locate: Locate::Anywhere,
        source: r"[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+[A-Za-z0-9._~+/=\-]{20,}",
    },
];

/// No entity is shorter than this (`a@b.cd`), so shorter text is not scanned at all.
const SHORTEST_ENTITY: usize = 6;

/// Longest possible IBAN match: country, check digits, 30 characters each after a space.
const IBAN_MAX_SPAN: usize = 4 + 30 * 2;

struct Pattern {
    kind: EntityKind,
    check: Check,
    retry: Retry,
    locate: Locate,
    regex: Regex,
}

/// The compiled detectors. Build once at start-up and share it.
pub struct Detector {
    patterns: Vec<Pattern>,
    limits: Limits,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("patterns", &self.patterns.len()).field("limits", &self.limits).finish()
    }
}

impl Detector {
    /// A detector with the default [`Limits`].
    pub fn new() -> Result<Self, BuildError> {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Result<Self, BuildError> {
        let patterns = PATTERNS
            .iter()
            .map(|spec| {
                Ok(Pattern {
                    kind: spec.kind,
                    check: spec.check,
                    retry: spec.retry,
                    locate: spec.locate,
                    regex: Regex::new(spec.source).map_err(BuildError)?,
                })
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(Self { patterns, limits })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Every value in `text`, non-overlapping and ordered by position.
    pub fn find(&self, text: &str) -> Result<Vec<Finding>, RedactError> {
        if text.len() > self.limits.max_input_bytes {
            return Err(RedactError::InputTooLarge { limit: self.limits.max_input_bytes });
        }
        let mut found = Vec::new();
        self.collect(text, &mut found);
        Ok(resolve_overlaps(found, |finding| (finding.start, finding.end, finding.kind.specificity())))
    }

    /// Validated findings of every pattern, overlapping ones included.
    pub(crate) fn collect(&self, text: &str, out: &mut Vec<Finding>) {
        if text.len() < SHORTEST_ENTITY {
            return;
        }
        let bytes = text.as_bytes();
        for pattern in &self.patterns {
            if let Locate::Anywhere = pattern.locate {
                scan(pattern, text, 0, text.len(), out);
            }
        }
        for run in digit_runs(bytes) {
            for pattern in &self.patterns {
                match pattern.locate {
                    Locate::DigitRun { min_digits, min_dots } if run.digits >= min_digits && run.dots >= min_dots => {
                        let before = run.start.checked_sub(1).and_then(|index| bytes.get(index));
                        let start = run.start - usize::from(matches!(before, Some(b'+' | b'(')));
                        let end = run.end + usize::from(matches!(bytes.get(run.end), Some(b'X' | b'x')));
                        scan(pattern, text, start, end, out);
                    }
                    Locate::IbanStart if run.leading_digits >= 2 && run.start >= 2 => {
                        let start = run.start - 2;
                        let letters =
                            bytes.get(start..run.start).is_some_and(|pair| pair.iter().all(u8::is_ascii_alphabetic));
                        if letters {
                            let end = next_char_boundary(text, text.len().min(start + IBAN_MAX_SPAN));
                            scan_at_start(pattern, text, start, end, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        for (start, end) in hex_colon_runs(bytes) {
            for pattern in &self.patterns {
                // Inside a run every byte follows a hex digit, `:` or `.`, which no address
                // may follow, so only the run's own start can begin one.
                if let Locate::HexColonRun = pattern.locate {
                    scan_at_start(pattern, text, start, end, out);
                }
            }
        }
    }

    /// Every pattern over the whole text, without locating runs first: the reference the
    /// located search must agree with.
    #[cfg(test)]
    pub(crate) fn collect_exhaustively(&self, text: &str, out: &mut Vec<Finding>) {
        for pattern in &self.patterns {
            scan(pattern, text, 0, text.len(), out);
        }
    }
}

/// Candidates of `pattern` inside `text[from..to]`, validated against the whole text.
fn scan(pattern: &Pattern, text: &str, from: usize, to: usize, out: &mut Vec<Finding>) {
    let Some(window) = text.get(from..to) else {
        return;
    };
    let mut at = 0;
    while at < window.len() {
        let Some(candidate) = pattern.regex.find_at(window, at) else {
            break;
        };
        let (start, end) = (from + candidate.start(), from + candidate.end());
        let found = validate(pattern.check, text, start, end);
        if let Some((found_start, found_end)) = found {
            out.push(Finding { kind: pattern.kind, start: found_start, end: found_end });
        }
        let resume = match (pattern.retry, found) {
            // Overlapping alternatives are collected too; resolution picks among them.
            (Retry::NextChar, _) => next_allowed_start(pattern.check, text, start + 1, to),
            (Retry::AfterMatch, Some((_, found_end))) => found_end.max(next_char_boundary(text, start + 1)),
            (Retry::AfterMatch, None) => end.max(next_char_boundary(text, start + 1)),
        };
        at = resume - from;
    }
}

/// The first position from `from` (up to `to`) where a value of `check` may start. Skipping
/// the others (the middle of a number or word) keeps the per-character retries of
/// [`Retry::NextChar`] from calling the regex at every byte. Every validator of such a
/// pattern rejects the skipped starts itself, so the findings are the same.
fn next_allowed_start(check: Check, text: &str, from: usize, to: usize) -> usize {
    let bytes = text.as_bytes();
    let mut at = from;
    while at < to {
        if text.is_char_boundary(at) && json_escape_len(bytes, at) == 0 && boundary_before(text, at) {
            let previous = at.checked_sub(1).and_then(|index| bytes.get(index)).copied();
            let allowed = match check {
                Check::PhoneNorthAmerican | Check::PhoneChinaMobile => !joined_number_before(text, at),
                Check::Ipv4 => {
                    !(previous == Some(b'.') && at >= 2 && bytes.get(at - 2).is_some_and(u8::is_ascii_digit))
                }
                Check::Ipv6 => !matches!(previous, Some(b':' | b'.')),
                Check::Card => previous != Some(b'+'),
                _ => true,
            };
            if allowed {
                return at;
            }
        }
        at += 1;
    }
    to
}

/// The candidate of `pattern` starting exactly at `from`, if any.
fn scan_at_start(pattern: &Pattern, text: &str, from: usize, to: usize, out: &mut Vec<Finding>) {
    let Some(candidate) = text.get(from..to).and_then(|window| pattern.regex.find(window)) else {
        return;
    };
    if candidate.start() == 0
        && let Some((start, end)) = validate(pattern.check, text, from, from + candidate.end())
    {
        out.push(Finding { kind: pattern.kind, start, end });
    }
}

/// Digits joined by short separators: where every digit-based value must lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DigitRun {
    start: usize,
    end: usize,
    digits: usize,
    dots: usize,
    /// Digits before the first separator (an IBAN's check digits need two).
    leading_digits: usize,
}

fn is_run_separator(byte: u8) -> bool {
    matches!(byte, b' ' | b'.' | b'-' | b'(' | b')')
}

/// Maximal runs of digits joined by one or two separator bytes (`(415) 555-2671`): no
/// digit-based pattern allows three separators in a row, so none can span two runs.
fn digit_runs(bytes: &[u8]) -> impl Iterator<Item = DigitRun> + '_ {
    let mut resume = 0;
    std::iter::from_fn(move || {
        let start = resume + next_digit(bytes.get(resume..)?)?;
        let mut run = DigitRun { start, end: start, digits: 0, dots: 0, leading_digits: 0 };
        let mut index = start;
        let mut leading = true;
        loop {
            if bytes.get(index).is_some_and(u8::is_ascii_digit) {
                run.digits += 1;
                run.leading_digits += usize::from(leading);
                index += 1;
                run.end = index;
                continue;
            }
            leading = false;
            let separators =
                bytes.get(index..).map_or(0, |rest| rest.iter().take(3).take_while(|&&b| is_run_separator(b)).count());
            let joined = (1..=2).contains(&separators) && bytes.get(index + separators).is_some_and(u8::is_ascii_digit);
            if !joined {
                break;
            }
            run.dots +=
                bytes.get(index..index + separators).map_or(0, |seps| seps.iter().filter(|&&b| b == b'.').count());
            index += separators;
        }
        resume = run.end;
        Some(run)
    })
}

/// Position of the first ASCII digit. Tests 32 bytes at a time without branching (the loop
/// vectorises), since most chunks of prose hold no digit at all.
fn next_digit(bytes: &[u8]) -> Option<usize> {
    let mut offset = 0;
    for chunk in bytes.chunks(32) {
        if chunk.iter().fold(false, |any, byte| any | byte.is_ascii_digit()) {
            return chunk.iter().position(u8::is_ascii_digit).map(|position| offset + position);
        }
        offset += chunk.len();
    }
    None
}

/// Maximal runs of hex digits, `:` and `.` that hold at least two colons.
fn hex_colon_runs(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let is_part = |byte: &u8| byte.is_ascii_hexdigit() || *byte == b':' || *byte == b'.';
    let mut resume = 0;
    memchr::memchr_iter(b':', bytes).filter_map(move |colon| {
        if colon < resume {
            return None;
        }
        let mut start =
            colon - bytes.get(..colon).map_or(0, |before| before.iter().rev().take_while(|b| is_part(b)).count());
        // In JSON-encoded text the run may begin inside an escape (`\bad:…`, `\u00e9ab:…`);
        // an address can only start after it.
        if json_escape_len(bytes, start) == 1 {
            start += 1;
        } else if start >= 1 && json_escape_len(bytes, start - 1) == 5 {
            start += 4;
        }
        let start = start.min(colon);
        let end = colon + bytes.get(colon..).map_or(0, |after| after.iter().take_while(|b| is_part(b)).count());
        resume = end;
        let colons = bytes.get(start..end).map_or(0, |run| run.iter().filter(|&&b| b == b':').count());
        (colons >= 2).then_some((start, end))
    })
}

fn next_char_boundary(text: &str, mut index: usize) -> usize {
    while index < text.len() && !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// The accepted span for a candidate, possibly narrower than the regex match.
fn validate(check: Check, text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    // A candidate starting on the letter of a JSON escape (`\bad:…` is `\b` + `ad:…`) would
    // cut the escape; the value, if any, starts one character later. E-mail trims instead.
    if !matches!(check, Check::Email) && json_escape_len(text.as_bytes(), start) > 0 {
        return None;
    }
    match check {
        Check::Email => check_email(text, start, end),
        Check::PhoneInternational => check_phone_international(text, start, end),
        Check::PhoneNorthAmerican | Check::PhoneChinaMobile => {
            standalone_number(text, start, end).then_some((start, end))
        }
        Check::CnId => {
            let id = text.as_bytes().get(start..end)?;
            (boundary_before(text, start) && boundary_after(text, end) && cn_id_valid(id)).then_some((start, end))
        }
        Check::Card => check_card(text, start, end),
        Check::Iban => check_iban(text, start, end),
        Check::Ipv4 => check_ipv4(text, start, end),
        Check::Ipv6 => check_ipv6(text, start, end),
        Check::PrefixedSecret => check_prefixed_secret(text, start, end),
        Check::PrivateKey => check_private_key(text, start, end),
        Check::Bearer => check_bearer(text, start, end),
    }
}

// ---- boundaries -------------------------------------------------------------------------

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Whether the byte at `index` is preceded by an odd run of backslashes, i.e. escaped.
fn escaped(bytes: &[u8], index: usize) -> bool {
    let run = bytes.get(..index).map_or(0, |before| before.iter().rev().take_while(|&&b| b == b'\\').count());
    run % 2 == 1
}

/// Length of the JSON escape body (`n`, `u00e9`) starting at `index` if it is escaped, else 0.
fn json_escape_len(bytes: &[u8], index: usize) -> usize {
    if !escaped(bytes, index) {
        return 0;
    }
    match bytes.get(index) {
        Some(b'n' | b'r' | b't' | b'b' | b'f') => 1,
        Some(b'u') if bytes.get(index + 1..index + 5).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) => 5,
        _ => 0,
    }
}

/// No ASCII word character (letter, digit, `_`) glued to the left of `start`, where the end
/// of a JSON escape such as `\n` or `\u00e9` counts as a separator.
fn boundary_before(text: &str, start: usize) -> bool {
    let bytes = text.as_bytes();
    let Some(&previous) = start.checked_sub(1).and_then(|index| bytes.get(index)) else {
        return true;
    };
    if !is_word_byte(previous) {
        return true;
    }
    let escape_letter = start - 1;
    if json_escape_len(bytes, escape_letter) == 1 {
        return true;
    }
    start >= 5 && json_escape_len(bytes, start - 5) == 5
}

fn boundary_after(text: &str, end: usize) -> bool {
    text.as_bytes().get(end).is_none_or(|&next| !is_word_byte(next))
}

/// Whether `start` continues a longer number written with `.` or `-` (`12-415-555-2671`).
fn joined_number_before(text: &str, start: usize) -> bool {
    let bytes = text.as_bytes();
    start >= 2
        && matches!(bytes.get(start - 1), Some(b'.' | b'-'))
        && bytes.get(start - 2).is_some_and(u8::is_ascii_digit)
}

fn joined_number_after(text: &str, end: usize) -> bool {
    let bytes = text.as_bytes();
    matches!(bytes.get(end), Some(b'.' | b'-')) && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
}

fn standalone_number(text: &str, start: usize, end: usize) -> bool {
    boundary_before(text, start)
        && boundary_after(text, end)
        && !joined_number_before(text, start)
        && !joined_number_after(text, end)
}

/// Ends of digit groups inside `start..end` (just before a separator), longest first, `end`
/// included: the candidates when a match ran past the value into a following number.
fn group_ends(bytes: &[u8], start: usize, end: usize) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(end).chain((start + 1..end).rev().filter(move |&index| {
        bytes.get(index - 1).is_some_and(|b| b.is_ascii_digit() || *b == b')')
            && bytes.get(index).is_some_and(|b| !b.is_ascii_digit())
    }))
}

// ---- validators ------------------------------------------------------------------------

fn check_email(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let at_sign = start + memchr::memchr(b'@', bytes.get(start..end)?)?;
    // `\nuser@…` inside JSON-encoded text: the escape letter is not part of the address.
    let mut local_start = start + json_escape_len(bytes, start);
    while bytes.get(local_start) == Some(&b'.') {
        local_start += 1;
    }
    (local_start < at_sign).then_some((local_start, end))
}

fn check_phone_international(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if !boundary_before(text, start) {
        return None;
    }
    let bytes = text.as_bytes();
    group_ends(bytes, start, end)
        .find(|&candidate_end| {
            boundary_after(text, candidate_end)
                && bytes.get(start..candidate_end).is_some_and(international_phone_shape)
        })
        .map(|candidate_end| (start, candidate_end))
}

/// `+` then 8–15 digits in groups separated by single separators, at most one parenthesised
/// group, a last group of two or more digits, and not a dotted thousands figure (`+100.000.000`).
fn international_phone_shape(span: &[u8]) -> bool {
    let mut digits = 0;
    let mut group = 0;
    let mut groups_after_first_all_three = true;
    let mut groups = 0;
    let mut separator_run = 0;
    let mut only_dots = true;
    let (mut opened, mut closed) = (false, false);
    for &byte in span.iter().skip(1) {
        if byte.is_ascii_digit() {
            digits += 1;
            group += 1;
            separator_run = 0;
            continue;
        }
        if group > 0 {
            groups += 1;
            groups_after_first_all_three &= groups == 1 || group == 3;
        }
        match byte {
            b'(' if !opened => opened = true,
            b')' if opened && !closed && group > 0 => closed = true,
            b' ' | b'-' => {}
            b'.' => {}
            _ => return false,
        }
        only_dots &= byte == b'.';
        group = 0;
        separator_run += 1;
        if separator_run > 2 {
            return false;
        }
    }
    groups += 1;
    groups_after_first_all_three &= groups == 1 || group == 3;
    let thousands = only_dots && groups > 1 && groups_after_first_all_three;
    opened == closed && (8..=15).contains(&digits) && group >= 2 && !thousands
}

/// 13–19 digits, Luhn-valid, not one repeated digit, not after `+` (a phone), and when
/// written in groups the first group has four digits, as every issuer prints them.
fn check_card(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let after_plus = start > 0 && bytes.get(start - 1) == Some(&b'+');
    let first_group = bytes.get(start..end)?.iter().take_while(|b| b.is_ascii_digit()).count();
    if after_plus || !boundary_before(text, start) {
        return None;
    }
    let mut digits = [0u8; 19];
    group_ends(bytes, start, end)
        .find(|&candidate_end| {
            let grouped = start + first_group < candidate_end;
            if (grouped && first_group != 4) || !boundary_after(text, candidate_end) {
                return false;
            }
            let mut count = 0;
            for &byte in bytes.get(start..candidate_end).unwrap_or_default().iter().filter(|b| b.is_ascii_digit()) {
                match digits.get_mut(count) {
                    Some(slot) => *slot = byte - b'0',
                    None => return false,
                }
                count += 1;
            }
            let number = digits.get(..count).unwrap_or_default();
            let all_same = number.windows(2).all(|pair| pair.first() == pair.get(1));
            (13..=19).contains(&count) && !all_same && luhn_valid(number)
        })
        .map(|candidate_end| (start, candidate_end))
}

fn check_iban(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if !boundary_before(text, start) {
        return None;
    }
    let bytes = text.as_bytes();
    let country = [bytes.get(start)?.to_ascii_uppercase(), bytes.get(start + 1)?.to_ascii_uppercase()];
    let length = iban_length(country)?;
    let mut normalized = [0u8; 34];
    let mut count = 0;
    let mut found_end = start;
    for (offset, &byte) in bytes.get(start..end)?.iter().enumerate() {
        if count == length {
            break;
        }
        if byte == b' ' {
            continue;
        }
        *normalized.get_mut(count)? = byte.to_ascii_uppercase();
        count += 1;
        found_end = start + offset + 1;
    }
    let valid = count == length && boundary_after(text, found_end) && iban_mod97_valid(normalized.get(..count)?);
    valid.then_some((start, found_end))
}

fn check_ipv4(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    // `1.2.3.4.5` is a version string, not an address followed by `.5`.
    let dotted_before =
        start >= 2 && bytes.get(start - 1) == Some(&b'.') && bytes.get(start - 2).is_some_and(u8::is_ascii_digit);
    let dotted_after = bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
    if dotted_before || dotted_after || !boundary_before(text, start) || !boundary_after(text, end) {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut parts = text.get(start..end)?.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.len() > 1 && part.starts_with('0') {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    let [first, ..] = octets;
    let identifies_no_one = first == 127 || octets == [0, 0, 0, 0];
    (!identifies_no_one).then_some((start, end))
}

fn check_ipv6(text: &str, start: usize, mut end: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    if !boundary_before(text, start) || (start > 0 && matches!(bytes.get(start - 1), Some(b':' | b'.'))) {
        return None;
    }
    // A sentence may end in a colon (`at 2001:db8::1:`); `::` at the end is part of the address.
    if bytes.get(end.saturating_sub(1)) == Some(&b':') && bytes.get(end.saturating_sub(2)) != Some(&b':') {
        end -= 1;
    }
    let after_ok = match bytes.get(end) {
        None => true,
        Some(b':') => bytes.get(end + 1).is_none_or(|&b| !b.is_ascii_hexdigit() && b != b':'),
        Some(&next) => !is_word_byte(next),
    };
    let candidate = text.get(start..end)?;
    let address: Ipv6Addr = candidate.parse().ok()?;
    // Fewer than three groups (`a::b`, `fe80::1`) is more often code (`d::f`) than an address.
    let groups: usize =
        candidate.split(':').filter(|g| !g.is_empty()).map(|g| if g.contains('.') { 2 } else { 1 }).sum();
    let identifies_no_one = address.is_loopback() || address.is_unspecified();
    (after_ok && groups >= 3 && !identifies_no_one).then_some((start, end))
}

fn check_prefixed_secret(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if !boundary_before(text, start) || !boundary_after(text, end) {
        return None;
    }
    let token = text.get(start..end)?;
    // `sk-` alone is a weak prefix (`sk-learn-…`); real keys mix letters and digits.
    if let Some(body) = token.strip_prefix("sk-") {
        let has_digit = body.bytes().any(|b| b.is_ascii_digit());
        let has_letter = body.bytes().any(|b| b.is_ascii_alphabetic());
        if !has_digit || !has_letter {
            return None;
        }
    }
    Some((start, end))
}

fn check_private_key(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    // An unterminated block ends where its key-like characters end; a trailing backslash
    // would escape whatever follows in JSON-encoded text, so it stays outside the span.
    let mut trimmed = end;
    while trimmed > start && bytes.get(trimmed - 1).is_some_and(|&b| b.is_ascii_whitespace() || b == b'\\') {
        trimmed -= 1;
    }
    Some((start, trimmed))
}

fn check_bearer(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if !boundary_before(text, start) || !boundary_after(text, end) {
        return None;
    }
    let bytes = text.as_bytes();
    let token_start = start
        + "bearer".len()
        + bytes.get(start + "bearer".len()..end)?.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let token = text.get(token_start..end)?;
    let classes = [
        token.bytes().any(|b| b.is_ascii_lowercase()),
        token.bytes().any(|b| b.is_ascii_uppercase()),
        token.bytes().any(|b| b.is_ascii_digit()),
    ];
    let mixed = classes.iter().filter(|&&present| present).count() >= 2;
    (mixed && entropy_bits_per_char(token) >= 3.0).then_some((token_start, end))
}

// ---- overlap resolution ------------------------------------------------------------------

/// Keeps the non-overlapping subset that covers the most text (ties: higher rank), ordered by
/// position. This is "longest wins" generalised: one long finding beats the shorter ones
/// inside it, but a stray checksum hit straddling two real values cannot hide both of them.
/// Weighted interval scheduling, O(n log n); deterministic for any input order.
pub(crate) fn resolve_overlaps<T>(items: Vec<T>, span: impl Fn(&T) -> (usize, usize, u8)) -> Vec<T> {
    if items.len() < 2 {
        return items;
    }
    // (end, start, rank, index), sorted by end so "everything ending before x" is a prefix.
    let mut order: Vec<(usize, usize, u8, usize)> = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let (start, end, rank) = span(item);
            (end, start, rank, index)
        })
        .collect();
    order.sort_unstable();
    // best[i]: the best weight using only the first i spans of `order`; chosen[i]: whether
    // span i-1 belongs to that best set, and if so how many spans precede it compatibly.
    let mut best = vec![0u64; order.len() + 1];
    let mut chosen: Vec<Option<usize>> = vec![None; order.len() + 1];
    for (position, &(end, start, rank, _)) in order.iter().enumerate() {
        let weight = (end.saturating_sub(start) as u64) * 256 + u64::from(rank);
        let compatible = order.get(..position).map_or(0, |before| before.partition_point(|other| other.0 <= start));
        let with = best.get(compatible).copied().unwrap_or(0) + weight;
        let without = best.get(position).copied().unwrap_or(0);
        if let (Some(best_here), Some(chosen_here)) = (best.get_mut(position + 1), chosen.get_mut(position + 1)) {
            if with > without {
                *best_here = with;
                *chosen_here = Some(compatible);
            } else {
                *best_here = without;
            }
        }
    }
    let mut kept = Vec::new();
    let mut position = order.len();
    while position > 0 {
        match chosen.get(position).copied().flatten() {
            Some(compatible) => {
                if let Some(&(_, _, _, index)) = order.get(position - 1) {
                    kept.push(index);
                }
                position = compatible;
            }
            None => position -= 1,
        }
    }
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    kept.iter().rev().filter_map(|&index| slots.get_mut(index).and_then(Option::take)).collect()
}

#[cfg(test)]
mod tests;
