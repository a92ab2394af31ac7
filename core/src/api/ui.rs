//! The control UI at `/ui`: the built web app embedded in the binary, behind an admin key.
//!
//! A browser signs in once with an admin key (`POST /ui/login`); the daemon answers with a
//! random session cookie (`HttpOnly`, `SameSite=Strict`) and never sends the key back. The
//! admin API then accepts that cookie, and a state-changing call made with it must also carry
//! `x-switchyard-ui: 1`, which no cross-site form can add. On an open loopback (no keys
//! needed) the UI opens without signing in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::auth::Principal;
use super::AppState;
use crate::error::ApiError;

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The session cookie's name.
pub const COOKIE: &str = "switchyard_ui";
/// Header a cookie-authenticated state-changing call must carry.
pub const CSRF_HEADER: &str = "x-switchyard-ui";
/// How long a sign-in lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// Signed-in browsers: digest of the cookie → who signed in, and until when.
#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Sessions {
    /// Open a session; answers the cookie value.
    pub fn open(&self, who: Principal) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Ok(mut m) = self.by_digest.lock() {
            let now = Instant::now();
            m.retain(|_, (_, until)| *until > now);
            if m.len() >= MAX_SESSIONS {
                if let Some(oldest) = m.iter().min_by_key(|(_, (_, u))| *u).map(|(k, _)| *k) {
                    m.remove(&oldest);
                }
            }
            m.insert(digest, (who, now + SESSION_TTL));
        }
        token
    }

    /// Who holds this cookie value, if the session is live.
    pub fn get(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let m = self.by_digest.lock().ok()?;
        m.get(&digest)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(p, _)| p.clone())
    }

    /// End a session.
    pub fn close(&self, token: &str) {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Ok(mut m) = self.by_digest.lock() {
            m.remove(&digest);
        }
    }
}

/// The session cookie's value in a request, if any.
pub fn session_cookie(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Content Security Policy of every UI page: nothing from elsewhere, no inline scripts.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn page(status: actix_web::http::StatusCode, html: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(html)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn login_page(message: Option<&str>) -> String {
    let msg = message
        .map(|m| format!("<p class=\"err\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Switchyard · sign in</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;place-items:center;height:100vh;margin:0}}
form{{background:#1e293b;padding:2rem;border-radius:10px;width:22rem}}input{{width:100%;box-sizing:border-box;padding:.6rem;margin:.8rem 0;border-radius:6px;border:1px solid #475569;background:#0f172a;color:inherit}}
button{{padding:.6rem 1.2rem;border:0;border-radius:6px;background:#38bdf8;color:#0f172a;font-weight:600}}.err{{color:#fca5a5}}</style></head>
<body><form method="post" action="/ui/login"><h1>Switchyard</h1><p>Sign in with an admin API key (one with <code>admin = true</code>).</p>{msg}
<label>Admin key<input type="password" name="key" autocomplete="current-password" autofocus required></label>
<button type="submit">Sign in</button></form></body></html>"#
    )
}

fn not_built() -> HttpResponse {
    page(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Switchyard</title></head><body>\
         <h1>The control UI is not built into this binary</h1>\
         <p>Build it with <code>bash scripts/build-ui.sh</code> (npm ci and vite in <code>app/ui</code>), \
         then rebuild the daemon.</p></body></html>"
            .to_owned(),
    )
}

/// `GET /ui`: to the app.
pub async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// `GET /ui/{path}`: the built app's files; anything that is not a file is the app itself
/// (its pages are client-side routes).
pub async fn asset(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let path = path.into_inner();
    let wants_file = path.contains('.') && !path.ends_with(".html");
    // Whoever may read the admin API may see the UI (a key, a session cookie, open loopback).
    if super::admin::require_admin(&state, &req).is_err() {
        return if wants_file {
            actix_web::ResponseError::error_response(&ApiError::Unauthorized(
                "Sign in at /ui/ with an admin key first.".to_owned(),
            ))
        } else {
            page(actix_web::http::StatusCode::UNAUTHORIZED, login_page(None))
        };
    }
    if UI_ASSETS.is_empty() {
        return not_built();
    }
    let found = UI_ASSETS.iter().find(|(p, _)| *p == path);
    let (name, bytes) = match found {
        Some(f) => *f,
        None if wants_file => {
            return actix_web::ResponseError::error_response(&ApiError::NotFound(format!(
                "The UI has no file `{path}`."
            )))
        }
        None => match UI_ASSETS.iter().find(|(p, _)| *p == "index.html") {
            Some(f) => *f,
            None => return not_built(),
        },
    };
    // Hashed bundles never change under a name; the page itself is always fetched fresh.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-store"
    };
    HttpResponse::Ok()
        .content_type(content_type(name))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        .body(bytes)
}

/// Form of `POST /ui/login`.
#[derive(serde::Deserialize)]
pub struct Login {
    key: String,
}

fn cookie(value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// `POST /ui/login` (form `key=…`): check the key, open a session, back to the app.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Result<web::Form<Login>, actix_web::Error>,
) -> HttpResponse {
    let Ok(form) = form else {
        return page(
            actix_web::http::StatusCode::BAD_REQUEST,
            login_page(Some("Send the admin key in the form.")),
        );
    };
    match state.auth.check_key(form.key.trim()) {
        Some(p) if p.admin => {
            tracing::info!(key_id = ?p.key_id, "control UI sign-in");
            let token = state.auth.sessions().open(p);
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/ui/"))
                .insert_header((
                    header::SET_COOKIE,
                    cookie(&token, SESSION_TTL.as_secs(), is_https(&req)),
                ))
                .finish()
        }
        Some(_) => page(
            actix_web::http::StatusCode::FORBIDDEN,
            login_page(Some(
                "That key is not an admin key: set `admin = true` on it in [[auth.keys]].",
            )),
        ),
        None => page(
            actix_web::http::StatusCode::UNAUTHORIZED,
            login_page(Some("That key is not known here.")),
        ),
    }
}

/// `POST /ui/logout`: end the session.
pub async fn logout(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if let Some(t) = session_cookie(&req) {
        state.auth.sessions().close(t);
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/"))
        .insert_header((header::SET_COOKIE, cookie("", 0, is_https(&req))))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_find_and_close() {
        let s = Sessions::default();
        let who = Principal {
            key_id: Some("ops".to_owned()),
            tenant: "t".to_owned(),
            admin: true,
        };
        let token = s.open(who.clone());
        assert_eq!(token.len(), 64);
        assert_eq!(s.get(&token), Some(who));
        assert_eq!(s.get("not-a-session"), None);
        s.close(&token);
        assert_eq!(s.get(&token), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::COOKIE, "a=1; switchyard_ui=abc ; b=2"))
            .to_http_request();
        assert_eq!(session_cookie(&req), Some("abc"));
        let none = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(session_cookie(&none), None);
    }
}
