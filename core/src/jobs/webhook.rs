//! Job webhooks in the Standard Webhooks format: `webhook-id` (stable per job, the receiver's
//! idempotency key), `webhook-timestamp` (unix seconds) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`, keyed by the base64 part of a
//! `whsec_…` secret).

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// The stable message id of a job's webhook.
pub fn message_id(job_id: &str) -> String {
    format!("msg_{job_id}")
}

/// A new random `whsec_…` secret.
pub fn new_secret() -> String {
    let mut key = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut key);
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The key bytes of a `whsec_…` secret, or why it is not one.
pub fn key_of(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix(PREFIX)
        .ok_or_else(|| "must start with `whsec_` followed by base64".to_owned())?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("is not valid base64 after `whsec_`: {e}"))?;
    if key.len() < 16 {
        return Err("needs at least 16 bytes of key".to_owned());
    }
    Ok(key)
}

/// The `webhook-signature` value.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_sign_deterministically() {
        let s = new_secret();
        let key = key_of(&s).unwrap();
        assert_eq!(key.len(), 24);
        let a = signature(&key, "msg_1", 1_700_000_000, b"{}");
        assert_eq!(a, signature(&key, "msg_1", 1_700_000_000, b"{}"));
        assert_ne!(a, signature(&key, "msg_1", 1_700_000_001, b"{}"));
        assert!(a.starts_with("v1,"));
        assert!(key_of("secret").is_err());
        assert!(key_of("whsec_!!").is_err());
    }
}
