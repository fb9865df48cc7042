//! Routes, their errors and the request metrics middleware.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, ContentType, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::{SecondsFormat, Utc};
use courier_model::position::{CourierId, Position, TimeRules};
use futures::StreamExt;
use serde::Serialize;

use crate::auth::{ApiKey, ApiKeys};
use crate::live::MAP_HTML;
use crate::metrics::Metrics;
use crate::payload::{BodyError, FIELDS, Rejection, parse_body};
use crate::pipeline::ack::WriteError;
use crate::pipeline::{Pipeline, SubmitError};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Shared state of the handlers.
pub struct AppState {
    /// API keys.
    pub keys: ApiKeys,
    /// The write pipeline and tracker.
    pub pipeline: Arc<Pipeline>,
    /// Metrics.
    pub metrics: Metrics,
    /// The `recorded_at` window.
    pub rules: TimeRules,
    /// Positions per request at most.
    pub max_batch: usize,
    /// Body size limit.
    pub max_body_bytes: usize,
}

/// Body of `202` and `422` answers to `POST /v1/positions`.
#[derive(Debug, Serialize)]
pub struct PostResponse {
    /// Positions durably written.
    pub accepted: usize,
    /// Every broken rule, by position index.
    pub rejected: Vec<Rejection>,
}

/// Body of every other error answer.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

/// Every error answer of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or an unknown bearer token.
    #[error("missing or unknown API key: send Authorization: Bearer <token>")]
    Unauthorized,
    /// The key's rate limit is exhausted.
    #[error("rate limit of this API key exceeded; retry after {}s", retry_after_secs(.0))]
    RateLimited(Duration),
    /// Not `application/json`.
    #[error("Content-Type must be application/json (got {0})")]
    UnsupportedMediaType(String),
    /// The body is over the limit.
    #[error("request body is larger than {0} bytes; send fewer positions per request")]
    PayloadTooLarge(usize),
    /// Malformed JSON or shape.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A path parameter breaks its rule.
    #[error("{field}: {message}")]
    InvalidParameter {
        /// The parameter.
        field: &'static str,
        /// The rule.
        message: String,
    },
    /// No position was valid.
    #[error("no position was valid")]
    NoneValid(PostResponse),
    /// Unknown courier.
    #[error("no position is known for courier {0}")]
    CourierNotFound(String),
    /// Unknown route.
    #[error("no route {0}")]
    NotFound(String),
    /// Method not allowed on a route.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The service cannot take the write now.
    #[error("{reason}; retry after {}s with the same event_id values", retry_after_secs(.retry_after))]
    Unavailable {
        /// Why.
        reason: String,
        /// When to retry.
        retry_after: Duration,
    },
}

fn retry_after_secs(d: &Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let (reason, secs) = match &e {
            SubmitError::Overloaded => ("the service is overloaded".to_owned(), 1),
            SubmitError::NotReady => ("the stream has not been reached yet".to_owned(), 2),
            SubmitError::ShuttingDown => ("the service is shutting down".to_owned(), 1),
            SubmitError::Write(WriteError::Dropped) => (e.to_string(), 1),
            SubmitError::Write(WriteError::Unavailable(_)) => {
                ("the stream did not take the write in time".to_owned(), 2)
            }
        };
        ApiError::Unavailable {
            reason,
            retry_after: Duration::from_secs(secs),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(_) | Self::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            Self::NoneValid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CourierNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"ingest-api\""));
            }
            Self::RateLimited(wait) => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs(wait).to_string()));
            }
            Self::Unavailable { retry_after, .. } => {
                res.insert_header((
                    header::RETRY_AFTER,
                    retry_after_secs(retry_after).to_string(),
                ));
            }
            Self::MethodNotAllowed(allow) => {
                res.insert_header((header::ALLOW, *allow));
            }
            _ => {}
        }
        if let Self::NoneValid(body) = self {
            return res.json(body);
        }
        let code = match self {
            Self::Unauthorized => "unauthorized",
            Self::RateLimited(_) => "rate_limited",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Body(BodyError::Malformed { .. }) => "malformed_json",
            Self::Body(BodyError::BatchSize { .. }) => "invalid_batch_size",
            Self::InvalidParameter { .. } => "invalid_parameter",
            Self::NoneValid(_) => "no_valid_position",
            Self::CourierNotFound(_) => "courier_not_found",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Unavailable { .. } => "unavailable",
        };
        let (line, column) = match self {
            Self::Body(BodyError::Malformed { line, column, .. }) => (Some(*line), Some(*column)),
            _ => (None, None),
        };
        let field = match self {
            Self::Body(BodyError::BatchSize { .. }) => Some("positions"),
            Self::InvalidParameter { field, .. } => Some(*field),
            _ => None,
        };
        res.json(ErrorBody {
            error: code,
            message: self.to_string(),
            line,
            column,
            field,
        })
    }
}

fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Arc<ApiKey>, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(ApiError::Unauthorized)?;
    let key = state
        .keys
        .authenticate(token)
        .ok_or(ApiError::Unauthorized)?;
    key.check_rate().map_err(ApiError::RateLimited)?;
    Ok(key)
}

fn check_json(req: &HttpRequest) -> Result<(), ApiError> {
    let value = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if value.is_empty() {
        Err(ApiError::UnsupportedMediaType("no Content-Type".into()))
    } else {
        Err(ApiError::UnsupportedMediaType(value.to_owned()))
    }
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::Body(BodyError::Malformed {
                message: format!("could not read the request body: {e}"),
                line: 0,
                column: 0,
            })
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `POST /v1/positions`
pub async fn post_positions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = authenticate(&req, &state)?;
    check_json(&req)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let received_at = Utc::now();
    let envelope = parse_body(&body, state.max_batch)?;
    let items = envelope.positions();
    let mut accepted: Vec<Position> = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, raw) in items.iter().enumerate() {
        match raw.check(index, received_at, &state.rules) {
            Ok(position) => accepted.push(position),
            Err(rejections) => {
                let field = rejections
                    .first()
                    .map(|r| r.field.as_str())
                    .filter(|f| *f == "$" || FIELDS.contains(f))
                    .unwrap_or("unknown_field");
                state
                    .metrics
                    .positions_rejected
                    .with_label_values(&[field])
                    .inc();
                rejected.extend(rejections);
            }
        }
    }
    if accepted.is_empty() {
        return Err(ApiError::NoneValid(PostResponse {
            accepted: 0,
            rejected,
        }));
    }
    if let Err(e) = state.pipeline.write(&accepted).await {
        let reason = match &e {
            SubmitError::Overloaded => "overloaded",
            SubmitError::NotReady => "not_ready",
            SubmitError::ShuttingDown => "shutting_down",
            SubmitError::Write(_) => "stream_unavailable",
        };
        state.metrics.refused.with_label_values(&[reason]).inc();
        tracing::warn!(key = %key.name, positions = accepted.len(), error = %e, "positions not written; answering 503");
        return Err(e.into());
    }
    let n = accepted.len();
    state.metrics.positions_accepted.inc_by(n as u64);
    state.pipeline.observe(accepted);
    Ok(HttpResponse::Accepted().json(PostResponse {
        accepted: n,
        rejected,
    }))
}

/// A position as returned by `GET /v1/couriers/{courier_id}/position`.
#[derive(Debug, Serialize)]
struct PositionView<'a> {
    courier_id: &'a str,
    event_id: String,
    lat: f64,
    lon: f64,
    recorded_at: String,
    received_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed_mps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heading_deg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<&'a str>,
}

impl<'a> From<&'a Position> for PositionView<'a> {
    fn from(p: &'a Position) -> Self {
        Self {
            courier_id: p.courier_id.as_str(),
            event_id: p.event_id.to_string(),
            lat: p.lat.get(),
            lon: p.lon.get(),
            recorded_at: p.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            received_at: p.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            accuracy_m: p.accuracy_m.map(|v| v.get()),
            speed_mps: p.speed_mps.map(|v| v.get()),
            heading_deg: p.heading_deg.map(|v| v.get()),
            order_id: p.order_id.as_ref().map(|o| o.as_str()),
        }
    }
}

/// `GET /v1/couriers/{courier_id}/position`
pub async fn get_latest(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &state)?;
    let courier_id = CourierId::parse(&path).map_err(|e| ApiError::InvalidParameter {
        field: "courier_id",
        message: e.message,
    })?;
    match state.pipeline.latest(courier_id.as_str()).await {
        Some(position) => Ok(HttpResponse::Ok().json(PositionView::from(&position))),
        None => Err(ApiError::CourierNotFound(courier_id.to_string())),
    }
}

/// `GET /v1/positions/stream`: accepted positions as server-sent events
/// (see [`crate::live`]).
pub async fn stream_positions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &state)?;
    if state.pipeline.is_shutting_down() {
        return Err(SubmitError::ShuttingDown.into());
    }
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(state.pipeline.live().subscribe()))
}

/// Content security policy of the map page: its own inline script and
/// style, requests to this origin only; nothing from anywhere else.
const MAP_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /map`: the live map page (no key needed for the page; it asks for
/// one to read the stream).
pub async fn map_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, MAP_CSP))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(MAP_HTML)
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the stream is reachable, routes are known, load is below
/// 90 % of the in-flight budget, and shutdown has not begun.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let pipeline = &state.pipeline;
    let stream = pipeline.health().is_up();
    let routes = pipeline.has_routes();
    let utilization = pipeline.budget().utilization();
    let not_overloaded = utilization < 0.9;
    let running = !pipeline.is_shutting_down();
    let ready = stream && routes && not_overloaded && running;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "stream_reachable": stream,
            "shard_map_loaded": routes,
            "not_overloaded": not_overloaded,
            "not_shutting_down": running,
        },
        "sink": pipeline.sink_kind(),
        "inflight_utilization": utilization,
        "last_stream_error": pipeline.health().last_error(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "2"))
            .json(body)
    }
}

/// `GET /metrics`
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// `GET /openapi.json`
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(OPENAPI_JSON)
}

/// Default service of the app: a JSON 404.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "{} {}",
        req.method(),
        req.path()
    )))
}

fn method_not_allowed(
    allow: &'static str,
) -> impl Fn() -> futures::future::Ready<Result<HttpResponse, ApiError>> + Clone {
    move || futures::future::ready(Err(ApiError::MethodNotAllowed(allow)))
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/positions")
            .route(web::post().to(post_positions))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/positions/stream")
            .route(web::get().to(stream_positions))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/v1/couriers/{courier_id}/position")
            .route(web::get().to(get_latest))
            .route(web::head().to(get_latest))
            .default_service(web::to(method_not_allowed("GET, HEAD"))),
    );
    for (path, handler) in [
        ("/healthz", web::get().to(healthz)),
        ("/readyz", web::get().to(readyz)),
        ("/metrics", web::get().to(metrics)),
        ("/openapi.json", web::get().to(openapi)),
        ("/map", web::get().to(map_page)),
    ] {
        cfg.service(
            web::resource(path)
                .route(handler)
                .route(web::head().to(head_ok))
                .default_service(web::to(method_not_allowed("GET, HEAD"))),
        );
    }
}

async fn head_ok(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // HEAD answers like GET without a body.
    match req.path() {
        "/readyz" => {
            let res = readyz(state).await;
            HttpResponse::build(res.status()).finish()
        }
        _ => HttpResponse::Ok().finish(),
    }
}

/// Counts and times every request by route pattern and status, logs server
/// errors, and closes connections once shutdown has begun.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().clone();
    let mut res = next.call(req).await?;
    if let Some(state) = state {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let status = res.status();
        state
            .metrics
            .http_requests
            .with_label_values(&[route.as_str(), status.as_str()])
            .inc();
        state
            .metrics
            .http_duration
            .with_label_values(&[route.as_str()])
            .observe(started.elapsed().as_secs_f64());
        if status.is_server_error() {
            tracing::warn!(%method, route, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(%method, route, status = status.as_u16(), "request");
        }
        if state.pipeline.is_shutting_down() {
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    Ok(res)
}
