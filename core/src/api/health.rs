//! Liveness and readiness for load balancers and orchestrators.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::supervisor::CheckHealth;

/// `GET /healthz`: the process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: actors answer and storage reads; upstream health is reported in detail.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let health = state
        .supervisor
        .send(CheckHealth)
        .timeout(Duration::from_secs(3))
        .await;
    let storage_ok = state.storage.is_healthy();
    match health {
        Ok(h) => {
            // Ready once the actors answer, storage reads, and no local model is still loading
            // (one that failed to load is reported, but does not hold up cloud traffic).
            let loading = h
                .local
                .values()
                .any(|s| *s == crate::local::ModelState::Loading);
            let ready = h.actors_ok && storage_ok && !loading;
            let degraded = h.providers.iter().any(|p| !p.healthy)
                || h.local
                    .values()
                    .any(|s| matches!(s, crate::local::ModelState::Failed(_)));
            let body = json!({
                "status": if !ready { "not_ready" } else if degraded { "degraded" } else { "ready" },
                "storage": storage_ok,
                "providers": h.providers,
                "local": h.local,
            });
            if ready {
                HttpResponse::Ok().json(body)
            } else {
                HttpResponse::ServiceUnavailable().json(body)
            }
        }
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "not_ready",
            "storage": storage_ok,
            "error": format!("supervisor did not answer: {e}"),
        })),
    }
}
