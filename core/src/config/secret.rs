//! Where a secret lives, and the secret once loaded.
//!
//! Config files never hold secrets: they name a location (`env::OPENAI_API_KEY`,
//! `file::/run/secrets/openai`, or `none`). The loaded value is a [`SecretString`], whose
//! `Debug` prints a placeholder, so it cannot end up in a log or an error by accident.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reference to a secret, as written in config.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretLocation {
    /// Read from this environment variable at start-up.
    Env(String),
    /// Read from this file at start-up (trailing newline trimmed).
    File(String),
    /// No credential (local servers such as Ollama or vLLM).
    None,
}

/// Why a secret location could not be parsed or loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The location string has no known scheme.
    #[error("expected `env::NAME`, `file::PATH` or `none`, found `{0}` (secrets are never written inline)")]
    BadLocation(String),
    /// The named environment variable is not set.
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// The named file could not be read.
    #[error("cannot read secret file `{path}`: {reason}")]
    File {
        /// The file that failed.
        path: String,
        /// The I/O error, without the file's contents.
        reason: String,
    },
}

impl SecretLocation {
    /// Parse `env::NAME`, `file::PATH` or `none`.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        if let Some(name) = s.strip_prefix("env::") {
            if !name.is_empty() {
                return Ok(Self::Env(name.to_owned()));
            }
        } else if let Some(path) = s.strip_prefix("file::") {
            if !path.is_empty() {
                return Ok(Self::File(path.to_owned()));
            }
        } else if s == "none" {
            return Ok(Self::None);
        }
        // Never echo something that might be the secret itself.
        let shown = if s.len() > 12 || !s.contains("::") {
            "<redacted>".to_owned()
        } else {
            s.to_owned()
        };
        Err(SecretError::BadLocation(shown))
    }

    /// Load the secret now; `Ok(None)` for [`SecretLocation::None`].
    pub fn load(&self) -> Result<Option<SecretString>, SecretError> {
        match self {
            Self::Env(name) => std::env::var(name)
                .map(|v| Some(SecretString::from(v)))
                .map_err(|_| SecretError::MissingEnv(name.clone())),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|v| {
                    Some(SecretString::from(
                        v.trim_end_matches(['\n', '\r']).to_owned(),
                    ))
                })
                .map_err(|e| SecretError::File {
                    path: path.clone(),
                    reason: e.kind().to_string(),
                }),
            Self::None => Ok(None),
        }
    }
}

impl fmt::Display for SecretLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(n) => write!(f, "env::{n}"),
            Self::File(p) => write!(f, "file::{p}"),
            Self::None => f.write_str("none"),
        }
    }
}

impl fmt::Debug for SecretLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for SecretLocation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for SecretLocation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations_and_never_echoes_inline_secrets() {
        assert_eq!(
            SecretLocation::parse("env::X"),
            Ok(SecretLocation::Env("X".into()))
        );
        assert_eq!(
            SecretLocation::parse("file::/a/b"),
            Ok(SecretLocation::File("/a/b".into()))
        );
        assert_eq!(SecretLocation::parse("none"), Ok(SecretLocation::None));
        let err = SecretLocation::parse("sk-live-1234567890abcdef").err();
        let shown = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(!shown.contains("sk-live"), "{shown}");
        assert!(SecretLocation::parse("env::").is_err());
    }

    #[test]
    fn missing_env_is_named() {
        let loc = SecretLocation::Env("SWITCHYARD_TEST_SURELY_UNSET_VAR".into());
        assert_eq!(
            loc.load().err(),
            Some(SecretError::MissingEnv(
                "SWITCHYARD_TEST_SURELY_UNSET_VAR".into()
            ))
        );
    }
}
