//! Local inference for Switchyard on candle: loading weights and tokenizers, embeddings,
//! classification, summarisation and generation.
//!
//! This crate knows nothing of actix or HTTP; `switchyard-core` owns the threads, queues and
//! lifecycle around it. The models themselves arrive with the local-inference work.
