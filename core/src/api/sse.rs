//! Server-sent events in OpenAI's dialect: `data: {chunk}` lines, `data: [DONE]` at the end,
//! and an error object as the last event when the upstream fails mid-stream.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use serde::Serialize;

use crate::error::ApiError;
use crate::providers::chain::StreamStart;
use crate::types::ChatChunk;

/// Encode one `data:` event.
pub fn event<T: Serialize>(value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    let _ = std::io::Write::write_all(&mut buf, b"data: ");
    let _ = serde_json::to_writer(&mut buf, value);
    let _ = std::io::Write::write_all(&mut buf, b"\n\n");
    buf.into_inner().freeze()
}

/// The terminating event.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

enum Phase {
    First,
    Rest,
    Done,
}

/// Turn a started upstream stream into the client's SSE byte stream. Usage is always asked of
/// upstreams (for accounting) but only shown to clients that asked for it.
pub fn openai_stream(
    start: StreamStart,
    include_usage: bool,
) -> BoxStream<'static, Result<Bytes, actix_web::Error>> {
    let StreamStart { first, rest, .. } = start;
    let rest = rest
        .filter_map(move |item| {
            let item = match item {
                Ok(mut chunk) if !include_usage => {
                    chunk.usage = None;
                    (!chunk.choices.is_empty()).then_some(Ok(chunk))
                }
                other => Some(other),
            };
            futures_util::future::ready(item)
        })
        .boxed();
    let state = (Some(first), rest, Phase::First);
    futures_util::stream::unfold(state, |(mut first, mut rest, phase)| async move {
        match phase {
            Phase::First => {
                let chunk = first.take()?;
                Some((Ok(event(&chunk)), (None, rest, Phase::Rest)))
            }
            Phase::Rest => match rest.next().await {
                Some(Ok(chunk)) => Some((Ok(event(&chunk)), (None, rest, Phase::Rest))),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "upstream failed mid-stream; ending the stream with an error event");
                    let api: ApiError = e.into();
                    Some((Ok(event(&api.openai_body())), (None, rest, Phase::Done)))
                }
                None => Some((Ok(Bytes::from_static(DONE)), (None, rest, Phase::Done))),
            },
            Phase::Done => None,
        }
    })
    .boxed()
}

/// One named event: `event: {name}` and its JSON `data:` line (the Anthropic and Responses
/// dialects name every event).
pub fn named_event(name: &str, data: &serde_json::Value) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    let _ = std::io::Write::write_all(&mut buf, b"event: ");
    let _ = std::io::Write::write_all(&mut buf, name.as_bytes());
    let _ = std::io::Write::write_all(&mut buf, b"\ndata: ");
    let _ = serde_json::to_writer(&mut buf, data);
    let _ = std::io::Write::write_all(&mut buf, b"\n\n");
    buf.into_inner().freeze()
}

/// What a client dialect with its own event protocol supplies to re-encode internal chunks.
pub trait EventEncoder: Send + 'static {
    /// Events for one upstream chunk.
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>);
    /// Events that close a stream that ended well.
    fn finish(&mut self, out: &mut Vec<Bytes>);
    /// Events that end a stream the upstream broke mid-way.
    fn fail(&mut self, error: &ApiError, out: &mut Vec<Bytes>);
}

/// A started upstream stream as `enc`'s events: each chunk's as it arrives, then the closing
/// events, or the failure events (and nothing after them) when the upstream breaks.
pub fn encoded_stream<E: EventEncoder>(
    start: StreamStart,
    enc: E,
) -> BoxStream<'static, Result<Bytes, actix_web::Error>> {
    let StreamStart { first, rest, .. } = start;
    let items = futures_util::stream::once(futures_util::future::ready(Some(Ok(first))))
        .chain(rest.map(Some))
        .chain(futures_util::stream::once(futures_util::future::ready(
            None,
        )));
    items
        .scan((enc, false), |(enc, failed), item| {
            if *failed {
                return futures_util::future::ready(None);
            }
            let mut out = Vec::new();
            match item {
                Some(Ok(chunk)) => enc.chunk(&chunk, &mut out),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "upstream failed mid-stream; ending the stream with the dialect's error events");
                    *failed = true;
                    enc.fail(&e.into(), &mut out);
                }
                None => enc.finish(&mut out),
            }
            futures_util::future::ready(Some(futures_util::stream::iter(out.into_iter().map(Ok))))
        })
        .flatten()
        .boxed()
}
