//! Reading a Server-Sent Events stream (`GET /v1/events`) in the command line: bytes in,
//! `(event, id, data)` out. Only what Hestia sends is handled: `event:`, `id:`, `data:` fields
//! and comment lines (heartbeats), which are skipped.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// One event of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    pub id: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Events from a streaming response body.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: Vec<u8>,
    end: Option<String>,
}

impl SseReader {
    pub fn new(body: BoxStream<'static, reqwest::Result<Bytes>>) -> SseReader {
        SseReader {
            body,
            buffer: Vec::new(),
            end: None,
        }
    }

    /// The next event; `None` when the stream ended (see [`SseReader::end_reason`]).
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(block) = self.take_block() {
                if let Some(event) = parse_block(&block) {
                    return Some(event);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => {
                    self.end = Some(error.to_string());
                    return None;
                }
                None => {
                    self.end = Some("the server closed it".into());
                    return None;
                }
            }
        }
    }

    /// Why the stream ended.
    pub fn end_reason(&self) -> String {
        self.end.clone().unwrap_or_else(|| "still open".into())
    }

    /// The next complete block (up to a blank line), without the blank line.
    fn take_block(&mut self) -> Option<String> {
        let text = &self.buffer;
        let end = (0..text.len()).find_map(|i| {
            if text[i..].starts_with(b"\n\n") {
                Some((i, 2))
            } else if text[i..].starts_with(b"\r\n\r\n") {
                Some((i, 4))
            } else {
                None
            }
        })?;
        let block = String::from_utf8_lossy(&text[..end.0]).into_owned();
        self.buffer.drain(..end.0 + end.1);
        Some(block)
    }
}

/// One block's fields; `None` for a block of comments only.
fn parse_block(block: &str) -> Option<SseEvent> {
    let mut event = SseEvent::default();
    let mut data = Vec::new();
    let mut any = false;
    for line in block.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "event" => event.event = value.to_owned(),
            "id" => event.id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if !any {
        return None;
    }
    if event.event.is_empty() {
        event.event = "message".into();
    }
    event.data = data.join("\n");
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(chunks: &[&'static str]) -> SseReader {
        let chunks: Vec<reqwest::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect();
        SseReader::new(futures_util::stream::iter(chunks).boxed())
    }

    #[tokio::test]
    async fn events_split_across_chunks_are_put_together_and_heartbeats_skipped() {
        let mut events = reader(&[
            ": heartbeat\n\nevent: st",
            "ate\nid: 1\ndata: {\"to\":",
            "\"ready\"}\n\ndata: a\ndata: b\n\n",
        ]);
        let first = events.next().await.expect("an event");
        assert_eq!(first.event, "state");
        assert_eq!(first.id.as_deref(), Some("1"));
        assert_eq!(first.data, "{\"to\":\"ready\"}");
        let second = events.next().await.expect("another");
        assert_eq!(
            (second.event.as_str(), second.data.as_str()),
            ("message", "a\nb")
        );
        assert_eq!(events.next().await, None);
        assert_eq!(events.end_reason(), "the server closed it");
    }
}
