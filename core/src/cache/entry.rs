//! A stored answer and its on-disk form: a CRC-32 of the body, then the body (postcard), so a
//! torn or damaged value is recognised and dropped instead of served.

use serde::{Deserialize, Serialize};

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Unix seconds when stored.
    pub created_s: u64,
    /// Unix seconds after which it is not served (0: never expires).
    pub expires_s: u64,
    /// Public model name asked for.
    pub model: String,
    /// Provider and upstream model that answered.
    pub provider: String,
    /// Upstream model that answered.
    pub upstream_model: String,
    /// Semantic partition and question, when the request may be answered semantically.
    pub semantic: Option<Semantic>,
    /// The answer (`ChatResponse` JSON).
    pub response: Vec<u8>,
    /// What the original call cost, in picodollars: what each hit saves.
    pub cost_pusd: u64,
}

/// The semantic side of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Semantic {
    /// [`super::key::partition`].
    pub partition: String,
    /// The last user message.
    pub question: String,
    /// Its unit MiniLM embedding.
    pub embedding: Vec<f32>,
}

/// Why a stored value was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Too short to hold a checksum.
    #[error("truncated value")]
    Truncated,
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// The body does not parse.
    #[error("undecodable body: {0}")]
    Body(String),
}

impl Entry {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_allocvec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Check and parse stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < 4 {
            return Err(DecodeError::Truncated);
        }
        let (sum, body) = bytes.split_at(4);
        if crc32fast::hash(body).to_le_bytes() != sum {
            return Err(DecodeError::Checksum);
        }
        postcard::from_bytes(body).map_err(|e| DecodeError::Body(e.to_string()))
    }

    /// Whether it has expired at `now_s`.
    pub fn expired(&self, now_s: u64) -> bool {
        self.expires_s != 0 && self.expires_s <= now_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_detected() {
        let e = Entry {
            created_s: 1,
            expires_s: 0,
            model: "m".into(),
            provider: "p".into(),
            upstream_model: "u".into(),
            semantic: None,
            response: b"{}".to_vec(),
            cost_pusd: 5,
        };
        let mut bytes = e.encode();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(Entry::decode(&bytes), Err(DecodeError::Checksum)));
        assert!(matches!(
            Entry::decode(&bytes[..2]),
            Err(DecodeError::Truncated)
        ));
    }
}
