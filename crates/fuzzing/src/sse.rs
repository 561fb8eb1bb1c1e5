//! `sse_parser`: [`SseParser`] over arbitrary bytes.
//!
//! Checks that the events (and the error, if any) do not depend on how the bytes are split
//! into chunks, and that events written back with [`SseEvent::encode`] parse to themselves.
//! A first byte below [`SMALL_CAP_MARKER`] selects a small event-size cap (and is not part of
//! the stream), so the size limit is fuzzed too.

use crate::chunks::{cut_sets, split_at};
use veil_protocol::SseEvent;
use veil_protocol::sse::{DEFAULT_MAX_EVENT_BYTES, SseError, SseParser};

/// First bytes below this choose a small cap; no real stream starts with them.
const SMALL_CAP_MARKER: u8 = 0x08;

/// What a whole stream parses to: the events dispatched, and the error that stopped it.
type Parsed = (Vec<SseEvent>, Option<SseError>);

pub fn sse_parser(data: &[u8]) {
    let (cap, stream) = match data.split_first() {
        Some((&first, rest)) if first < SMALL_CAP_MARKER => (1 + usize::from(first) * 16, rest),
        _ => (DEFAULT_MAX_EVENT_BYTES, data),
    };
    let whole = parse(cap, &[stream]);
    for cuts in cut_sets(data, stream.len(), 4) {
        let chunked = parse(cap, &split_at(stream, &cuts));
        assert_eq!(chunked, whole, "chunking at {cuts:?} changed what the stream parses to");
    }
    if whole.1.is_none() {
        let wire: Vec<u8> = whole.0.iter().flat_map(|event| event.encode().to_vec()).collect();
        let reparsed = parse(DEFAULT_MAX_EVENT_BYTES, &[&wire]);
        assert_eq!(reparsed, (whole.0, None), "encoded events did not parse back to themselves");
    }
}

fn parse(cap: usize, chunks: &[&[u8]]) -> Parsed {
    let mut parser = SseParser::with_max_event_bytes(cap);
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(error) = parser.push_into(chunk, &mut events) {
            // The parser stays failed: any further chunk must report the same error.
            assert_eq!(parser.push(b"data: more\n\n"), Err(error.clone()), "a failed parser recovered");
            return (events, Some(error));
        }
    }
    (events, None)
}
