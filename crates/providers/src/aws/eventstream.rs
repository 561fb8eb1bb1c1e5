//! An incremental decoder for AWS's binary event stream framing
//! (`application/vnd.amazon.eventstream`), which Bedrock's `ConverseStream` answers in.
//!
//! Each message on the wire is:
//!
//! ```text
//! total length (u32 BE) | headers length (u32 BE) | prelude CRC32 (u32 BE)
//! headers | payload | message CRC32 (u32 BE)
//! ```
//!
//! where the prelude CRC covers the first 8 bytes and the message CRC everything before
//! it (both CRC32/IEEE). A header is a name (u8 length, UTF-8), a type byte and a value
//! whose size depends on the type; only string headers carry what a relay needs
//! (`:message-type`, `:event-type`, `:exception-type`, …), so the other types are
//! checked and skipped.
//!
//! Promises: frames may be split across chunks at any byte; both checksums are verified
//! before a message is handed out; a frame larger than [`MAX_MESSAGE_BYTES`] is refused
//! as soon as its prelude arrives, so a hostile upstream cannot grow memory without
//! bound; after an error the decoder stays failed (the rest of the stream cannot be
//! framed reliably). Only the unfinished frame is buffered.

use bytes::{Buf, Bytes, BytesMut};
use veil_protocol::sse::SseEvent;

/// Largest message accepted, prelude and checksums included.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

const PRELUDE_BYTES: usize = 12;
const CRC_BYTES: usize = 4;
/// A message with no headers and no payload: prelude plus message CRC.
const MIN_MESSAGE_BYTES: usize = PRELUDE_BYTES + CRC_BYTES;

/// Header value types, as the framing numbers them.
mod header_type {
    pub const BOOL_TRUE: u8 = 0;
    pub const BOOL_FALSE: u8 = 1;
    pub const BYTE: u8 = 2;
    pub const SHORT: u8 = 3;
    pub const INTEGER: u8 = 4;
    pub const LONG: u8 = 5;
    pub const BYTE_ARRAY: u8 = 6;
    pub const STRING: u8 = 7;
    pub const TIMESTAMP: u8 = 8;
    pub const UUID: u8 = 9;
}

/// One decoded message: its string headers, in wire order, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    /// Only the string-typed headers; headers of other types are skipped.
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl EventMessage {
    /// The value of the first string header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// `:message-type`: `event`, `exception` or `error`.
    pub fn message_type(&self) -> Option<&str> {
        self.header(":message-type")
    }

    /// `:event-type` of an `event` message (e.g. `contentBlockDelta`).
    pub fn event_type(&self) -> Option<&str> {
        self.header(":event-type")
    }

    /// `:exception-type` of an `exception` message (e.g. `throttlingException`).
    pub fn exception_type(&self) -> Option<&str> {
        self.header(":exception-type")
    }

    /// The message as the named SSE event the protocol codecs read: an `event` becomes
    /// `event: <:event-type>` with the JSON payload as data; an `exception` becomes
    /// `event: <:exception-type>` with its payload (`{"message": …}`); an `error`
    /// (which carries its details in headers and has no payload) becomes
    /// `event: error` with `{"code": <:error-code>, "message": <:error-message>}`.
    /// `None` for a message that is none of these, which a reader skips.
    pub fn to_sse_event(&self) -> Result<Option<SseEvent>, EventStreamError> {
        let name = match self.message_type() {
            Some("event") => self.event_type(),
            Some("exception") => self.exception_type(),
            Some("error") => {
                let code = self.header(":error-code").unwrap_or_default();
                let message = self.header(":error-message").unwrap_or_default();
                let data = serde_json::json!({ "code": code, "message": message }).to_string();
                return Ok(Some(SseEvent::named("error", data)));
            }
            _ => None,
        };
        let Some(name) = name else {
            return Ok(None);
        };
        let data = std::str::from_utf8(&self.payload).map_err(|_| EventStreamError::InvalidUtf8)?;
        Ok(Some(SseEvent::named(name, data)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    #[error("an event stream message of {length} bytes is larger than {limit} bytes")]
    MessageTooLarge { length: usize, limit: usize },
    #[error("an event stream prelude declares impossible lengths")]
    InvalidLength,
    #[error("an event stream prelude checksum does not match")]
    PreludeChecksum,
    #[error("an event stream message checksum does not match")]
    MessageChecksum,
    #[error("an event stream message has malformed headers: {0}")]
    InvalidHeaders(&'static str),
    #[error("an event stream header or payload is not valid UTF-8")]
    InvalidUtf8,
}

/// Incremental decoder: feed it bytes as they arrive with [`EventStreamDecoder::push`],
/// which returns the messages completed by that chunk.
#[derive(Debug)]
pub struct EventStreamDecoder {
    /// Bytes of the unfinished frame (and, briefly, of the frames after it in a chunk).
    buffer: BytesMut,
    max_message_bytes: usize,
    failed: Option<EventStreamError>,
}

impl Default for EventStreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStreamDecoder {
    pub fn new() -> Self {
        Self::with_max_message_bytes(MAX_MESSAGE_BYTES)
    }

    pub fn with_max_message_bytes(max_message_bytes: usize) -> Self {
        Self { buffer: BytesMut::new(), max_message_bytes, failed: None }
    }

    /// Whether bytes of an unfinished frame are waiting: at the end of the body this
    /// means the stream was cut mid-message.
    pub fn has_partial_message(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Decodes `chunk` and returns the messages it completed, in order. After an error
    /// the decoder stays failed and returns that error again.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<EventMessage>, EventStreamError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.decode(chunk);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.buffer = BytesMut::new();
        }
        result
    }

    fn decode(&mut self, chunk: &[u8]) -> Result<Vec<EventMessage>, EventStreamError> {
        self.buffer.extend_from_slice(chunk);
        let mut messages = Vec::new();
        while self.buffer.len() >= PRELUDE_BYTES {
            // The prelude is checked before the rest of the frame is awaited, so a
            // corrupt or oversized length is refused without buffering it.
            let total_length = check_prelude(&self.buffer[..PRELUDE_BYTES], self.max_message_bytes)?;
            if self.buffer.len() < total_length {
                break;
            }
            let frame = self.buffer.split_to(total_length).freeze();
            messages.push(decode_frame(frame)?);
        }
        Ok(messages)
    }
}

/// Validates a prelude and returns the frame's total length.
fn check_prelude(mut prelude: &[u8], max_message_bytes: usize) -> Result<usize, EventStreamError> {
    let expected_crc = crc32fast::hash(&prelude[..8]);
    let total_length = prelude.get_u32() as usize;
    let headers_length = prelude.get_u32() as usize;
    if prelude.get_u32() != expected_crc {
        return Err(EventStreamError::PreludeChecksum);
    }
    if total_length > max_message_bytes {
        return Err(EventStreamError::MessageTooLarge { length: total_length, limit: max_message_bytes });
    }
    if total_length < MIN_MESSAGE_BYTES || headers_length > total_length - MIN_MESSAGE_BYTES {
        return Err(EventStreamError::InvalidLength);
    }
    Ok(total_length)
}

/// Decodes one whole frame whose prelude was already checked.
fn decode_frame(frame: Bytes) -> Result<EventMessage, EventStreamError> {
    let crc_at = frame.len() - CRC_BYTES;
    let mut stored_crc = &frame[crc_at..];
    if stored_crc.get_u32() != crc32fast::hash(&frame[..crc_at]) {
        return Err(EventStreamError::MessageChecksum);
    }
    let mut lengths = &frame[4..8];
    let headers_end = PRELUDE_BYTES + lengths.get_u32() as usize;
    let headers = parse_headers(&frame[PRELUDE_BYTES..headers_end])?;
    Ok(EventMessage { headers, payload: frame.slice(headers_end..crc_at) })
}

fn parse_headers(mut block: &[u8]) -> Result<Vec<(String, String)>, EventStreamError> {
    let mut headers = Vec::new();
    while !block.is_empty() {
        let name_length = usize::from(take(&mut block, 1)?[0]);
        if name_length == 0 {
            return Err(EventStreamError::InvalidHeaders("empty header name"));
        }
        let name = std::str::from_utf8(take(&mut block, name_length)?).map_err(|_| EventStreamError::InvalidUtf8)?;
        let value_type = take(&mut block, 1)?[0];
        let skip = match value_type {
            header_type::BOOL_TRUE | header_type::BOOL_FALSE => 0,
            header_type::BYTE => 1,
            header_type::SHORT => 2,
            header_type::INTEGER => 4,
            header_type::LONG | header_type::TIMESTAMP => 8,
            header_type::UUID => 16,
            header_type::BYTE_ARRAY => take_u16_length(&mut block)?,
            header_type::STRING => {
                let length = take_u16_length(&mut block)?;
                let value =
                    std::str::from_utf8(take(&mut block, length)?).map_err(|_| EventStreamError::InvalidUtf8)?;
                headers.push((name.to_owned(), value.to_owned()));
                continue;
            }
            _ => return Err(EventStreamError::InvalidHeaders("unknown header value type")),
        };
        take(&mut block, skip)?;
    }
    Ok(headers)
}

/// Takes `count` bytes off the front of `block`.
fn take<'a>(block: &mut &'a [u8], count: usize) -> Result<&'a [u8], EventStreamError> {
    if block.len() < count {
        return Err(EventStreamError::InvalidHeaders("a header runs past the header block"));
    }
    let (taken, rest) = block.split_at(count);
    *block = rest;
    Ok(taken)
}

fn take_u16_length(block: &mut &[u8]) -> Result<usize, EventStreamError> {
    let mut bytes = take(block, 2)?;
    Ok(usize::from(bytes.get_u16()))
}

/// Encodes one message with string headers, the way AWS frames it. For tests and
/// fixtures: a header name longer than 255 bytes or a value longer than 65,535 bytes
/// is cut to fit (the framing cannot express more).
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_block = Vec::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(usize::from(u8::MAX))];
        let value = &value.as_bytes()[..value.len().min(usize::from(u16::MAX))];
        header_block.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        header_block.extend_from_slice(name);
        header_block.push(header_type::STRING);
        header_block.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        header_block.extend_from_slice(value);
    }
    let total_length = MIN_MESSAGE_BYTES + header_block.len() + payload.len();
    let mut message = Vec::with_capacity(total_length);
    message.extend_from_slice(&u32::try_from(total_length).unwrap_or(u32::MAX).to_be_bytes());
    message.extend_from_slice(&u32::try_from(header_block.len()).unwrap_or(u32::MAX).to_be_bytes());
    let prelude_crc = crc32fast::hash(&message);
    message.extend_from_slice(&prelude_crc.to_be_bytes());
    message.extend_from_slice(&header_block);
    message.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&message);
    message.extend_from_slice(&message_crc.to_be_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<EventMessage>, EventStreamError> {
        let mut decoder = EventStreamDecoder::new();
        let mut messages = Vec::new();
        for chunk in chunks {
            messages.extend(decoder.push(chunk)?);
        }
        assert!(!decoder.has_partial_message());
        Ok(messages)
    }

    fn message(headers: &[(&str, &str)], payload: &str) -> EventMessage {
        EventMessage {
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    /// Three Bedrock-shaped messages: two events and an exception.
    fn sample() -> (Vec<u8>, Vec<EventMessage>) {
        let specs: [(&[(&str, &str)], &str); 3] = [
            (
                &[(":event-type", "messageStart"), (":content-type", "application/json"), (":message-type", "event")],
                r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS","role":"assistant"}"#,
            ),
            (
                &[
                    (":event-type", "contentBlockDelta"),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                r#"{"contentBlockIndex":0,"delta":{"text":"Héllo €"},"p":"abcd"}"#,
            ),
            (
                &[
                    (":exception-type", "throttlingException"),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                r#"{"message":"Too many requests, please wait before trying again."}"#,
            ),
        ];
        let mut wire = Vec::new();
        let mut messages = Vec::new();
        for (headers, payload) in specs {
            wire.extend(encode_message(headers, payload.as_bytes()));
            messages.push(message(headers, payload));
        }
        (wire, messages)
    }

    #[test]
    fn round_trips_messages() {
        let (wire, messages) = sample();
        assert_eq!(decode_all(&[&wire]).unwrap(), messages);
        assert_eq!(messages[0].event_type(), Some("messageStart"));
        assert_eq!(messages[0].message_type(), Some("event"));
        assert_eq!(messages[2].exception_type(), Some("throttlingException"));
        assert_eq!(messages[2].event_type(), None);
    }

    #[test]
    fn every_split_point_gives_the_same_messages() {
        let (wire, messages) = sample();
        for at in 0..=wire.len() {
            let (a, b) = wire.split_at(at);
            assert_eq!(decode_all(&[a, b]).unwrap(), messages, "split at {at}");
        }
    }

    #[test]
    fn byte_by_byte_gives_the_same_messages() {
        let (wire, messages) = sample();
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&chunks).unwrap(), messages);
    }

    #[test]
    fn an_unfinished_frame_is_reported_as_partial() {
        let (wire, _) = sample();
        let mut decoder = EventStreamDecoder::new();
        assert_eq!(decoder.push(&wire[..wire.len() - 1]).unwrap().len(), 2);
        assert!(decoder.has_partial_message());
    }

    // Vectors from botocore's tests/unit/test_eventstream.py (the reference decoder).

    #[test]
    fn decodes_botocores_one_string_header_vector() {
        let wire = b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10\
            application/json{'foo':'bar'}\x8d\x9c\x08\xb1";
        assert_eq!(
            decode_all(&[wire]).unwrap(),
            vec![message(&[("content-type", "application/json")], "{'foo':'bar'}")]
        );
        // Our encoder produces the very same bytes.
        assert_eq!(encode_message(&[("content-type", "application/json")], b"{'foo':'bar'}"), wire.to_vec());
    }

    #[test]
    fn decodes_botocores_empty_and_payload_only_vectors() {
        let empty = b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff";
        let payload_only = b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96";
        assert_eq!(decode_all(&[empty, payload_only]).unwrap(), vec![message(&[], ""), message(&[], "{'foo':'bar'}")]);
        assert_eq!(encode_message(&[], b""), empty.to_vec());
    }

    #[test]
    fn skips_every_non_string_header_type() {
        // botocore's ALL_HEADERS_TYPES: one header of each type 0..=9.
        let wire = b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c\
            \x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03\
            \x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05\
            \x016\x06\x00\x05bytes\x017\x07\x00\x04utf8\
            \x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef\
            \x63\x35\x36\x71";
        assert_eq!(decode_all(&[wire]).unwrap(), vec![message(&[("7", "utf8")], "")]);
    }

    #[test]
    fn decodes_botocores_error_message_vector() {
        let wire = b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e\
            \x0d:message-type\x07\x00\x05error\
            \x0b:error-code\x07\x00\x04code\
            \x0e:error-message\x07\x00\x07message\
            \x6b\x6c\xea\x3d";
        let messages = decode_all(&[wire]).unwrap();
        assert_eq!(
            messages,
            vec![message(&[(":message-type", "error"), (":error-code", "code"), (":error-message", "message")], "")]
        );
        assert_eq!(
            messages[0].to_sse_event().unwrap(),
            Some(SseEvent::named("error", r#"{"code":"code","message":"message"}"#))
        );
    }

    #[test]
    fn messages_become_named_sse_events() {
        let (wire, _) = sample();
        let events: Vec<_> = decode_all(&[&wire]).unwrap().iter().map(|m| m.to_sse_event().unwrap()).collect();
        assert_eq!(
            events,
            vec![
                Some(SseEvent::named(
                    "messageStart",
                    r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS","role":"assistant"}"#
                )),
                Some(SseEvent::named(
                    "contentBlockDelta",
                    r#"{"contentBlockIndex":0,"delta":{"text":"Héllo €"},"p":"abcd"}"#
                )),
                Some(SseEvent::named(
                    "throttlingException",
                    r#"{"message":"Too many requests, please wait before trying again."}"#
                )),
            ]
        );
        assert_eq!(message(&[(":event-type", "x")], "{}").to_sse_event(), Ok(None));
        assert_eq!(
            message(&[(":message-type", "event"), (":event-type", "x")], "").to_sse_event(),
            Ok(Some(SseEvent::named("x", "")))
        );
        let not_utf8 = EventMessage {
            headers: vec![(":message-type".into(), "event".into()), (":event-type".into(), "x".into())],
            payload: Bytes::from_static(b"\xff"),
        };
        assert_eq!(not_utf8.to_sse_event(), Err(EventStreamError::InvalidUtf8));
    }

    #[test]
    fn a_bad_prelude_checksum_is_refused_before_the_frame_arrives() {
        let mut wire = encode_message(&[(":event-type", "x")], b"{}");
        wire[8] ^= 0x01;
        let mut decoder = EventStreamDecoder::new();
        assert_eq!(decoder.push(&wire[..PRELUDE_BYTES]), Err(EventStreamError::PreludeChecksum));
        // The decoder stays failed.
        assert_eq!(decoder.push(&encode_message(&[], b"")), Err(EventStreamError::PreludeChecksum));
    }

    #[test]
    fn a_corrupted_length_fails_the_prelude_checksum() {
        // botocore's CORRUPTED_LENGTH.
        let wire = b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96";
        assert_eq!(decode_all(&[wire]), Err(EventStreamError::PreludeChecksum));
    }

    #[test]
    fn a_bad_message_checksum_is_refused() {
        // botocore's CORRUPTED_PAYLOAD and CORRUPTED_HEADERS.
        let payload = b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'\x8d\xc3e96";
        assert_eq!(decode_all(&[payload]), Err(EventStreamError::MessageChecksum));
        let headers = b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent+type\x07\x00\x10\
            application/json{'foo':'bar'}\x8d\x9c\x08\xb1";
        assert_eq!(decode_all(&[headers]), Err(EventStreamError::MessageChecksum));

        let mut wire = encode_message(&[(":event-type", "x")], b"{}");
        let last = wire.len() - 1;
        wire[last] ^= 0x80;
        assert_eq!(decode_all(&[&wire]), Err(EventStreamError::MessageChecksum));
    }

    #[test]
    fn impossible_lengths_are_refused() {
        fn prelude(total: u32, headers: u32) -> Vec<u8> {
            let mut bytes = total.to_be_bytes().to_vec();
            bytes.extend_from_slice(&headers.to_be_bytes());
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_be_bytes());
            bytes
        }
        assert_eq!(decode_all(&[&prelude(15, 0)]), Err(EventStreamError::InvalidLength));
        assert_eq!(decode_all(&[&prelude(20, 5)]), Err(EventStreamError::InvalidLength));
        let mut decoder = EventStreamDecoder::new();
        assert_eq!(
            decoder.push(&prelude(16 * 1024 * 1024 + 1, 0)),
            Err(EventStreamError::MessageTooLarge { length: 16 * 1024 * 1024 + 1, limit: MAX_MESSAGE_BYTES })
        );
        // Exactly at the cap is fine as far as the prelude goes: it waits for the rest.
        let mut decoder = EventStreamDecoder::new();
        assert_eq!(decoder.push(&prelude(16 * 1024 * 1024, 0)), Ok(vec![]));
    }

    #[test]
    fn malformed_header_blocks_are_refused() {
        fn frame_with_headers(block: &[u8]) -> Vec<u8> {
            let total = u32::try_from(MIN_MESSAGE_BYTES + block.len()).unwrap();
            let mut bytes = total.to_be_bytes().to_vec();
            bytes.extend_from_slice(&u32::try_from(block.len()).unwrap().to_be_bytes());
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_be_bytes());
            bytes.extend_from_slice(block);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_be_bytes());
            bytes
        }
        assert_eq!(
            decode_all(&[&frame_with_headers(b"\x01a\x0a")]),
            Err(EventStreamError::InvalidHeaders("unknown header value type"))
        );
        assert_eq!(
            decode_all(&[&frame_with_headers(b"\x01a\x07\x00\x05abc")]),
            Err(EventStreamError::InvalidHeaders("a header runs past the header block"))
        );
        assert_eq!(
            decode_all(&[&frame_with_headers(b"\x01a\x04\x00\x00")]),
            Err(EventStreamError::InvalidHeaders("a header runs past the header block"))
        );
        assert_eq!(
            decode_all(&[&frame_with_headers(b"\x00\x00")]),
            Err(EventStreamError::InvalidHeaders("empty header name"))
        );
        assert_eq!(decode_all(&[&frame_with_headers(b"\x01a\x07\x00\x01\xff")]), Err(EventStreamError::InvalidUtf8));
    }
}
