//! Server-sent events in OpenAI's dialect: `data: {chunk}` lines, `data: [DONE]` at the end,
//! and an error object as the last event when the upstream fails mid-stream.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use serde::Serialize;

use crate::error::ApiError;
use crate::providers::chain::StreamStart;

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
