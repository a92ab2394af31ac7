//! Client authentication: API keys by hash, and the loopback development switch.

use std::collections::HashMap;

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::error::ApiError;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id; `None` for unauthenticated loopback calls.
    pub key_id: Option<String>,
    /// The tenant the call is accounted to.
    pub tenant: String,
    /// May read `/admin/*`.
    pub admin: bool,
}

/// Tenant of unauthenticated loopback calls.
pub const LOCAL_TENANT: &str = "local";

/// Checks presented keys against the configured hashes.
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Principal>,
    allow_loopback: bool,
    /// Digest of the credential the daemon's own job workers present (random per process).
    internal: Option<[u8; 32]>,
    /// Control-UI sign-ins.
    sessions: super::ui::Sessions,
}

impl Authenticator {
    /// Index the configured keys.
    pub fn new(cfg: &AuthConfig) -> Self {
        let by_hash = cfg
            .keys
            .iter()
            .map(|k| {
                (
                    k.hash,
                    Principal {
                        key_id: Some(k.id.clone()),
                        tenant: k.tenant.clone(),
                        admin: k.admin,
                    },
                )
            })
            .collect();
        Self {
            by_hash,
            allow_loopback: cfg.allow_unauthenticated_loopback,
            internal: None,
            sessions: super::ui::Sessions::default(),
        }
    }

    /// The control UI's sessions.
    pub fn sessions(&self) -> &super::ui::Sessions {
        &self.sessions
    }

    /// The configured key `key` belongs to, if any.
    pub fn check_key(&self, key: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_hash.get(&digest).cloned()
    }

    /// A signed-in UI session; a state-changing call must also carry the UI's header (a
    /// cross-site form cannot).
    fn session_principal(&self, req: &HttpRequest) -> Option<Result<Principal, ApiError>> {
        let p = self.sessions.get(super::ui::session_cookie(req)?)?;
        let safe = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
        if safe || req.headers().contains_key(super::ui::CSRF_HEADER) {
            Some(Ok(p))
        } else {
            Some(Err(ApiError::Forbidden(format!(
                "A call made with the UI's session cookie must carry `{}: 1`.",
                super::ui::CSRF_HEADER
            ))))
        }
    }

    /// Accept `token` from loopback as the daemon's own workers, acting for the tenant (and
    /// key) named in `x-switchyard-on-behalf-*` headers, never as an admin.
    pub fn with_internal(mut self, token: &str) -> Self {
        self.internal = Some(Sha256::digest(token.as_bytes()).into());
        self
    }

    /// Identify the caller from `Authorization: Bearer` or `x-api-key`.
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let open_loopback =
            self.allow_loopback && req.peer_addr().is_some_and(|a| a.ip().is_loopback());
        let anonymous = || Principal {
            key_id: None,
            tenant: LOCAL_TENANT.to_owned(),
            // An open loopback is a developer's own machine: it may see everything.
            admin: true,
        };
        match presented_key(req) {
            Some(key) => {
                let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
                if loopback && self.internal == Some(digest) {
                    let h = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    return Ok(Principal {
                        key_id: h(crate::jobs::actor::ON_BEHALF_KEY),
                        tenant: h(crate::jobs::actor::ON_BEHALF_TENANT)
                            .unwrap_or_else(|| LOCAL_TENANT.to_owned()),
                        admin: false,
                    });
                }
                match self.by_hash.get(&digest) {
                    Some(p) => Ok(p.clone()),
                    // SDKs insist on sending some key; with no keys configured on an open
                    // loopback, whatever they send is as good as none.
                    None if open_loopback && self.by_hash.is_empty() => Ok(anonymous()),
                    None => Err(ApiError::Unauthorized(
                        "Incorrect API key provided. Keys are configured in [auth.keys]."
                            .to_owned(),
                    )),
                }
            }
            None => {
                if let Some(r) = self.session_principal(req) {
                    return r;
                }
                if open_loopback {
                    return Ok(anonymous());
                }
                Err(ApiError::Unauthorized(
                    "You didn't provide an API key. Send it as `Authorization: Bearer KEY`."
                        .to_owned(),
                ))
            }
        }
    }
}

fn presented_key(req: &HttpRequest) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
            .trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
