//! Server-sent events: an incremental parser for upstream streams and the encoder for
//! writing events back out.
//!
//! The parser follows the WHATWG event-stream rules: LF, CRLF and CR line endings (a
//! CRLF may be split across chunks), `:` comment lines, `event` and `data` fields (one
//! leading space stripped, several `data` lines joined with `\n`), `id` and `retry`
//! ignored, an event dispatched on a blank line and dropped when it had no `data` line,
//! and an unfinished event at the end of the stream discarded. Two departures, both
//! deliberate: invalid UTF-8 is an error instead of being replaced (an upstream sending
//! it is broken), and one pending event may hold at most [`DEFAULT_MAX_EVENT_BYTES`]
//! (or the configured cap) so a hostile upstream cannot grow memory without bound.
//! Nothing is buffered beyond the event being parsed.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Largest pending event (its unfinished line plus the data gathered so far).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event. `event` is `None` for unnamed events (OpenAI sends only those;
/// Anthropic names every event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// An unnamed event carrying `data`.
    pub fn data(data: impl Into<String>) -> Self {
        Self { event: None, data: data.into() }
    }

    /// A named event carrying `data`.
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        Self { event: Some(event.into()), data: data.into() }
    }

    /// OpenAI's end-of-stream marker, `data: [DONE]`.
    pub fn done() -> Self {
        Self::data("[DONE]")
    }

    /// Whether this is OpenAI's end-of-stream marker.
    pub fn is_done(&self) -> bool {
        self.event.is_none() && self.data == "[DONE]"
    }

    /// The event in wire form: `event: NAME` when named, one `data:` line per line of
    /// data, and the blank line that dispatches it. Parsing the result gives back an
    /// equal event (as long as `event` holds no line break).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.data.len() + 16);
        if let Some(name) = &self.event {
            out.put_slice(b"event: ");
            out.put_slice(name.as_bytes());
            out.put_u8(b'\n');
        }
        for line in split_lines(&self.data) {
            out.put_slice(b"data: ");
            out.put_slice(line.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
        out.freeze()
    }
}

/// Splits on LF, CRLF and CR, like the parser does, so `encode` never writes a bare CR
/// that the reader would take for a line end inside a `data:` line.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event stream event is larger than {limit} bytes")]
    EventTooLarge { limit: usize },
    #[error("an event stream line is not valid UTF-8")]
    InvalidUtf8,
}

/// Incremental parser: feed it bytes as they arrive with [`SseParser::push`], which
/// returns the events completed by that chunk.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the line being read (no line terminator).
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF starting the next chunk belongs to it.
    after_cr: bool,
    /// No line has been completed yet (a leading BOM is stripped from the first line).
    at_stream_start: bool,
    event_name: String,
    /// The data lines of the pending event, each followed by `\n`.
    data: String,
    max_event_bytes: usize,
    failed: Option<SseError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            at_stream_start: true,
            event_name: String::new(),
            data: String::new(),
            max_event_bytes,
            failed: None,
        }
    }

    /// Parses `chunk` and returns the events it completed, in order. After an error the
    /// parser stays failed: the rest of the stream cannot be trusted.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        self.push_into(chunk, &mut events)?;
        Ok(events)
    }

    /// Like [`SseParser::push`], appending to `events` (saves an allocation per chunk).
    pub fn push_into<E: Extend<SseEvent>>(&mut self, chunk: &[u8], events: &mut E) -> Result<(), SseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.parse(chunk, events);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.line = Vec::new();
            self.data = String::new();
        }
        result
    }

    fn parse<E: Extend<SseEvent>>(&mut self, mut chunk: &[u8], events: &mut E) -> Result<(), SseError> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, terminator) = (&chunk[..end], chunk[end]);
            let mut rest = &chunk[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                self.check_size(head.len())?;
                self.take_line(head, events)?;
            } else {
                self.check_size(head.len())?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.take_line(&line, events)?;
                // Keep the allocation for the next long line.
                line.clear();
                self.line = line;
            }
            chunk = rest;
        }
        if !chunk.is_empty() {
            self.check_size(chunk.len())?;
            self.line.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// Fails when `incoming` more bytes would push the pending event past the cap.
    fn check_size(&self, incoming: usize) -> Result<(), SseError> {
        let pending = self.line.len() + self.data.len() + self.event_name.len();
        if pending.saturating_add(incoming) > self.max_event_bytes {
            return Err(SseError::EventTooLarge { limit: self.max_event_bytes });
        }
        Ok(())
    }

    fn take_line<E: Extend<SseEvent>>(&mut self, mut line: &[u8], events: &mut E) -> Result<(), SseError> {
        if self.at_stream_start {
            self.at_stream_start = false;
            line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => {
                self.event_name.clear();
                self.event_name.push_str(value);
            }
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // `id` and `retry` steer browser reconnection, which a relay never does;
            // unknown fields are ignored by the spec.
            _ => {}
        }
        Ok(())
    }

    fn dispatch<E: Extend<SseEvent>>(&mut self, events: &mut E) {
        let event_name = std::mem::take(&mut self.event_name);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        let event = (!event_name.is_empty()).then_some(event_name);
        events.extend(std::iter::once(SseEvent { event, data }));
    }
}

/// What can end an [`SseStream`]: the byte source's own error, or a parse error.
#[derive(Debug, thiserror::Error)]
pub enum SseStreamError<E> {
    #[error("the byte stream failed")]
    Transport(#[source] E),
    #[error(transparent)]
    Parse(#[from] SseError),
}

/// Turns a stream of byte chunks into a stream of events, parsing each chunk as it
/// arrives. An unfinished event at the end of the byte stream is discarded; after an
/// error the stream ends.
pub fn events<S, E>(bytes: S) -> SseStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    SseStream { bytes: Some(bytes), parser: SseParser::new(), ready: VecDeque::new() }
}

/// See [`events`].
pub struct SseStream<S> {
    /// `None` once the byte stream ended or failed.
    bytes: Option<S>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
}

impl<S, E> Stream for SseStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<SseEvent, SseStreamError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            let Some(bytes) = this.bytes.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(bytes).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.bytes = None,
                Poll::Ready(Some(Err(error))) => {
                    this.bytes = None;
                    return Poll::Ready(Some(Err(SseStreamError::Transport(error))));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Err(error) = this.parser.push_into(&chunk, &mut this.ready) {
                        this.bytes = None;
                        this.ready.clear();
                        return Poll::Ready(Some(Err(error.into())));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn parse_all(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.push(chunk)?);
        }
        Ok(events)
    }

    /// A stream exercising every rule: comments, named events, multi-line data, all
    /// three line endings, ignored fields, an event without data, a field without a
    /// colon, a value without the optional space, non-ASCII text and an unfinished
    /// trailing event.
    const SAMPLE: &[u8] = b": keep-alive\r\n\
        data: {\"a\":1}\r\n\r\n\
        event: ping\ndata: x\ndata:  two spaces\n\n\
        id: 7\rretry: 100\rdata:no-space\r\r\
        event: lonely\n\n\
        data\n\n\
        data: h\xC3\xA9llo \xE2\x82\xAC\r\n\r\n\
        data: [DONE]\n\n\
        data: unfinished\n";

    fn sample_events() -> Vec<SseEvent> {
        vec![
            SseEvent::data("{\"a\":1}"),
            SseEvent::named("ping", "x\n two spaces"),
            SseEvent::data("no-space"),
            SseEvent::data(""),
            SseEvent::data("héllo €"),
            SseEvent::done(),
        ]
    }

    #[test]
    fn parses_a_sample_stream_in_one_chunk() {
        assert_eq!(parse_all(&[SAMPLE]).unwrap(), sample_events());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        for at in 0..=SAMPLE.len() {
            let (a, b) = SAMPLE.split_at(at);
            assert_eq!(parse_all(&[a, b]).unwrap(), sample_events(), "split at {at}");
        }
    }

    #[test]
    fn every_pair_of_split_points_gives_the_same_events() {
        for first in 0..=SAMPLE.len() {
            for second in first..=SAMPLE.len() {
                let chunks = [&SAMPLE[..first], &SAMPLE[first..second], &SAMPLE[second..]];
                assert_eq!(parse_all(&chunks).unwrap(), sample_events(), "splits at {first}, {second}");
            }
        }
    }

    #[test]
    fn byte_by_byte_gives_the_same_events() {
        let chunks: Vec<&[u8]> = SAMPLE.chunks(1).collect();
        assert_eq!(parse_all(&chunks).unwrap(), sample_events());
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let events = parse_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\r\n\r\n"]).unwrap();
        assert_eq!(events, vec![SseEvent::data("a"), SseEvent::data("b")]);
        // CR then CR is a blank line: the event is dispatched without waiting.
        let events = parse_all(&[b"data: a\r", b"\r"]).unwrap();
        assert_eq!(events, vec![SseEvent::data("a")]);
    }

    #[test]
    fn a_leading_bom_is_ignored_once() {
        assert_eq!(parse_all(&[b"\xEF\xBB", b"\xBFdata: a\n\n"]).unwrap(), vec![SseEvent::data("a")]);
        // Further BOMs are part of a field name, which is then unknown.
        assert_eq!(parse_all(&[b"\n\xEF\xBB\xBFdata: a\n\n"]).unwrap(), vec![]);
    }

    #[test]
    fn event_name_resets_after_each_dispatch() {
        let events = parse_all(&[b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\n\ndata: 3\n\n"]).unwrap();
        assert_eq!(events, vec![SseEvent::named("a", "1"), SseEvent::data("2"), SseEvent::data("3")]);
    }

    #[test]
    fn invalid_utf8_is_an_error_and_the_parser_stays_failed() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(b"data: \xFF\xFE\n\n"), Err(SseError::InvalidUtf8));
        assert_eq!(parser.push(b"data: fine\n\n"), Err(SseError::InvalidUtf8));
    }

    #[test]
    fn a_huge_event_is_refused_before_memory_grows() {
        let mut parser = SseParser::with_max_event_bytes(64);
        assert_eq!(parser.push(&[b'x'; 60]), Ok(vec![]));
        assert_eq!(parser.push(&[b'x'; 10]), Err(SseError::EventTooLarge { limit: 64 }));

        // Data gathered over many lines counts too.
        let mut parser = SseParser::with_max_event_bytes(64);
        let mut result = Ok(vec![]);
        for _ in 0..20 {
            result = parser.push(b"data: 0123456789\n");
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::EventTooLarge { limit: 64 }));

        // Many small events never trip the cap: it is per event.
        let mut parser = SseParser::with_max_event_bytes(64);
        for _ in 0..1000 {
            assert_eq!(parser.push(b"data: 0123456789\n\n").unwrap().len(), 1);
        }
    }

    #[test]
    fn encode_round_trips() {
        let events = [
            SseEvent::data("{\"a\":1}"),
            SseEvent::named("message_start", "line one\nline two"),
            SseEvent::data(""),
            SseEvent::data("cr\rcrlf\r\nend\n"),
            SseEvent::done(),
        ];
        let wire: Vec<u8> = events.iter().flat_map(|e| e.encode().to_vec()).collect();
        let parsed = parse_all(&[&wire]).unwrap();
        assert_eq!(parsed[..3], events[..3]);
        // Bare CRs become line ends, exactly as a reader would see them.
        assert_eq!(parsed[3], SseEvent::data("cr\ncrlf\nend\n"));
        assert_eq!(parsed[4], SseEvent::done());
        assert_eq!(&SseEvent::named("x", "a\nb").encode()[..], b"event: x\ndata: a\ndata: b\n\n");
        assert_eq!(&SseEvent::done().encode()[..], b"data: [DONE]\n\n");
    }

    #[tokio::test]
    async fn turns_a_byte_stream_into_events() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            SAMPLE.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let events: Vec<SseEvent> = events(futures_util::stream::iter(chunks)).map(|e| e.unwrap()).collect().await;
        assert_eq!(events, sample_events());
    }

    #[tokio::test]
    async fn a_transport_error_ends_the_event_stream() {
        let chunks = vec![
            Ok(Bytes::from_static(b"data: 1\n\ndata: 2")),
            Err(std::io::Error::other("reset")),
            Ok(Bytes::from_static(b"\n\n")),
        ];
        let mut stream = events(futures_util::stream::iter(chunks));
        assert_eq!(stream.next().await.unwrap().unwrap(), SseEvent::data("1"));
        assert!(matches!(stream.next().await, Some(Err(SseStreamError::Transport(_)))));
        assert!(stream.next().await.is_none());
    }
}
