//! `GET /v1/models` and `GET /v1/models/{id}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::AppState;
use crate::error::ApiError;

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

fn object<'a>(state: &AppState, id: &'a str) -> ModelObject<'a> {
    ModelObject {
        id,
        object: "model",
        created: state.started_unix,
        owned_by: "switchyard",
    }
}

/// List the public model names.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.auth.authenticate(&req)?;
    let mut data: Vec<ModelObject<'_>> = state
        .models
        .names()
        .iter()
        .map(|n| object(&state, n))
        .collect();
    for (name, model_state) in state.local.states() {
        if model_state == crate::local::ModelState::Ready {
            data.push(ModelObject {
                owned_by: "switchyard-local",
                ..object(&state, name)
            });
        }
    }
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data,
    }))
}

/// Describe one model (configured name, or `provider/model`).
pub async fn retrieve(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.auth.authenticate(&req)?;
    if state
        .local
        .states()
        .iter()
        .any(|(n, s)| *n == id.as_str() && *s == crate::local::ModelState::Ready)
    {
        return Ok(HttpResponse::Ok().json(ModelObject {
            owned_by: "switchyard-local",
            ..object(&state, &id)
        }));
    }
    state.models.resolve(&id)?;
    Ok(HttpResponse::Ok().json(object(&state, &id)))
}
