//! `bedrock_eventstream`: Bedrock's binary event-stream framing
//! ([`EventStreamDecoder`]) and what the provider makes of its messages.
//!
//! Random bytes almost never carry valid CRC32s, so every input is decoded twice: as it is
//! (checksum rejection) and with the checksums of each frame it declares recomputed, which
//! lets the fuzzer reach header and payload parsing. Checks that messages and errors do not
//! depend on how the bytes are chunked; the decoded messages then go, as named SSE events,
//! through the Bedrock stream translation (see [`crate::upstream`]).

use crate::chunks::{cut_sets, split_at};
use crate::upstream::check_stream;
use veil_protocol::translate::UpstreamFormat;
use veil_providers::aws::eventstream::{EventMessage, EventStreamDecoder, EventStreamError};

const PRELUDE_BYTES: usize = 12;
const CRC_BYTES: usize = 4;
/// A frame with no headers and no payload.
const MIN_FRAME_BYTES: usize = PRELUDE_BYTES + CRC_BYTES;
/// A small cap so that the size check is fuzzed too; real frames are far smaller than the
/// default but this keeps hostile lengths from being awaited forever.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub fn bedrock_eventstream(data: &[u8]) {
    check_framing(data, data);
    let repaired = with_valid_checksums(data);
    if repaired != data {
        check_framing(data, &repaired);
    }
}

fn check_framing(seed: &[u8], bytes: &[u8]) {
    let whole = decode(&[bytes]);
    for cuts in cut_sets(seed, bytes.len(), 4) {
        let chunked = decode(&split_at(bytes, &cuts));
        match (&whole, &chunked) {
            // Messages completed before an error in the same chunk are dropped with it, so
            // after an error only the error itself must agree.
            ((_, Err(expected)), (_, Err(got))) => {
                assert_eq!(got, expected, "chunking at {cuts:?} changed the framing error");
            }
            _ => assert_eq!(chunked, whole, "chunking at {cuts:?} changed the decoded messages"),
        }
    }
    let events: Vec<_> = whole.0.iter().filter_map(|message| message.to_sse_event().ok().flatten()).collect();
    check_stream(UpstreamFormat::Bedrock, &events);
}

/// The messages decoded from `chunks`, and whether the stream ended cleanly (`Ok(true)`
/// when a frame was left unfinished).
fn decode(chunks: &[&[u8]]) -> (Vec<EventMessage>, Result<bool, EventStreamError>) {
    let mut decoder = EventStreamDecoder::with_max_message_bytes(MAX_MESSAGE_BYTES);
    let mut messages = Vec::new();
    for chunk in chunks {
        match decoder.push(chunk) {
            Ok(decoded) => messages.extend(decoded),
            Err(error) => {
                assert_eq!(
                    decoder.push(&[0; MIN_FRAME_BYTES]).err(),
                    Some(error.clone()),
                    "a failed decoder recovered"
                );
                return (messages, Err(error));
            }
        }
    }
    (messages, Ok(decoder.has_partial_message()))
}

/// `data` with the prelude and message CRC32 of every whole frame it declares recomputed,
/// up to the first frame whose length cannot be a frame.
fn with_valid_checksums(data: &[u8]) -> Vec<u8> {
    let mut bytes = data.to_vec();
    let mut at = 0;
    while let Some(prelude) = bytes.get(at..at + PRELUDE_BYTES) {
        let declared = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]);
        let Ok(total) = usize::try_from(declared) else { break };
        if total < MIN_FRAME_BYTES || total > bytes.len() - at {
            break;
        }
        let prelude_crc = crc32fast::hash(&bytes[at..at + 8]);
        bytes[at + 8..at + PRELUDE_BYTES].copy_from_slice(&prelude_crc.to_be_bytes());
        let crc_at = at + total - CRC_BYTES;
        let message_crc = crc32fast::hash(&bytes[at..crc_at]);
        bytes[crc_at..at + total].copy_from_slice(&message_crc.to_be_bytes());
        at += total;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_providers::aws::eventstream::encode_message;

    #[test]
    fn recomputed_checksums_let_a_corrupted_frame_decode() {
        let mut frames = encode_message(&[(":message-type", "event"), (":event-type", "messageStop")], b"{}");
        frames.extend(encode_message(&[(":message-type", "event")], b"x"));
        frames[8] ^= 1;
        let last = frames.len() - 1;
        frames[last] ^= 1;
        assert_eq!(decode(&[&frames]).1, Err(EventStreamError::PreludeChecksum));

        let (messages, end) = decode(&[&with_valid_checksums(&frames)]);
        assert_eq!(end, Ok(false));
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].event_type(), Some("messageStop"));
    }

    #[test]
    fn an_impossible_length_stops_the_repair() {
        let mut frames = encode_message(&[], b"payload");
        frames[3] = 0xFF;
        assert_eq!(with_valid_checksums(&frames), frames);
    }
}
