//! Test support for Switchyard's end-to-end tests: the mock upstream provider server.
//!
//! The mock speaks providers' real wire formats over real HTTP, with knobs for the ways real
//! providers misbehave (latency, slow first token, error statuses, 429 with `Retry-After`,
//! connection resets, truncated streams, malformed JSON). It is fast enough to be the upstream
//! in load benchmarks.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod mock;
