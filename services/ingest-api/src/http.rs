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
use serde::{Deserialize, Serialize};

use crate::auth::{ApiKey, ApiKeys};
use crate::metrics::Metrics;
use crate::payload::{BodyError, FIELDS, Rejection, parse_body};
use crate::pipeline::ack::WriteError;
use crate::pipeline::{Pipeline, SubmitError};
use crate::store::links::{self, LinkRecord};
use crate::store::{
    DEFAULT_NEAR_LIMIT, MAX_GEO_LAT, MAX_NEAR_LIMIT, MAX_RADIUS_M, NearQuery, PositionStore,
    StoreError, StoredPosition,
};
use crate::web::Web;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Shared state of the handlers.
pub struct AppState {
    /// API keys.
    pub keys: ApiKeys,
    /// Dispatch API keys: the only ones that create and revoke tracking links.
    pub dispatch_keys: ApiKeys,
    /// Longest lifetime of a tracking link.
    pub tracking_link_max: Duration,
    /// The write pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Latest positions, nearby couriers and the live feed.
    pub store: Arc<PositionStore>,
    /// Metrics.
    pub metrics: Metrics,
    /// The `recorded_at` window.
    pub rules: TimeRules,
    /// Positions per request at most.
    pub max_batch: usize,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// The map pages and the assets under `/assets/`.
    pub web: Arc<Web>,
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
    /// No active tracking link for the token or link id (never says which).
    #[error("no active tracking link")]
    TrackingLinkNotFound,
    /// Unknown route.
    #[error("no route {0}")]
    NotFound(String),
    /// Method not allowed on a route.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The position store did not answer a read.
    #[error("the position store is unavailable; retry after {}s", retry_after_secs(.0))]
    StoreUnavailable(Duration),
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::debug!(error = %e, "position store read failed; answering 503");
        ApiError::StoreUnavailable(Duration::from_secs(1))
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
            Self::CourierNotFound(_) | Self::NotFound(_) | Self::TrackingLinkNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable { .. } | Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"ingest-api\""));
            }
            Self::RateLimited(wait) | Self::StoreUnavailable(wait) => {
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
            Self::TrackingLinkNotFound => "tracking_link_not_found",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Unavailable { .. } => "unavailable",
            Self::StoreUnavailable(_) => "store_unavailable",
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
    authenticate_with(req, &state.keys)
}

/// A dispatch key (not a courier-app key) of the request.
fn authenticate_dispatch(req: &HttpRequest, state: &AppState) -> Result<Arc<ApiKey>, ApiError> {
    authenticate_with(req, &state.dispatch_keys)
}

fn authenticate_with(req: &HttpRequest, keys: &ApiKeys) -> Result<Arc<ApiKey>, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(ApiError::Unauthorized)?;
    let key = keys.authenticate(token).ok_or(ApiError::Unauthorized)?;
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
    state.store.observe(accepted);
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

impl<'a> From<&'a StoredPosition> for PositionView<'a> {
    fn from(p: &'a StoredPosition) -> Self {
        Self {
            courier_id: p.courier_id.as_str(),
            event_id: p.event_id.clone(),
            lat: p.lat,
            lon: p.lon,
            recorded_at: p.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            received_at: p.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            accuracy_m: p.accuracy_m,
            speed_mps: p.speed_mps,
            heading_deg: p.heading_deg,
            order_id: p.order_id.as_deref(),
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
    match state.store.latest(courier_id.as_str()).await? {
        Some(position) => Ok(HttpResponse::Ok().json(PositionView::from(&position))),
        None => Err(ApiError::CourierNotFound(courier_id.to_string())),
    }
}

/// `DELETE /v1/couriers/{courier_id}/position` (dispatch key): erases the
/// courier from the live store: its latest position and its entries in the
/// nearby index (the shared store: the position hash, the geo and last-seen
/// entries; the embedded store: the tracker's entry). Idempotent: `204`
/// whether or not anything was there. The durable stream and the lake are
/// not touched (their erasure is the compactor's and the DAG's). A position
/// of the courier accepted after the call is stored again.
pub async fn erase_position(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = authenticate_dispatch(&req, &state)?;
    let courier_id = CourierId::parse(&path).map_err(|e| ApiError::InvalidParameter {
        field: "courier_id",
        message: e.message,
    })?;
    let removed = state.store.erase(courier_id.as_str()).await?;
    state.metrics.couriers_erased.inc();
    tracing::info!(
        key = %key.name,
        courier = %courier_id,
        removed,
        "courier erased from the position store"
    );
    Ok(HttpResponse::NoContent().finish())
}

/// Parses the query of `GET /v1/couriers/near`: every parameter once, each
/// within its bounds; an error names the parameter and its rule.
pub fn parse_near_query(query: &str) -> Result<NearQuery, ApiError> {
    let invalid =
        |field: &'static str, message: String| ApiError::InvalidParameter { field, message };
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| invalid("query", format!("cannot be read: {e}")))?
        .into_inner();
    let mut values: [Option<&str>; 4] = [None; 4];
    const NAMES: [&str; 4] = ["lat", "lon", "radius_m", "limit"];
    for (name, value) in &pairs {
        let Some(i) = NAMES.iter().position(|n| n == name) else {
            return Err(invalid(
                "query",
                format!("unknown parameter {name}; expected lat, lon, radius_m, limit"),
            ));
        };
        if values[i].replace(value.as_str()).is_some() {
            return Err(invalid(NAMES[i], "must be given once".into()));
        }
    }
    let number = |i: usize| -> Result<f64, ApiError> {
        let raw = values[i].ok_or_else(|| invalid(NAMES[i], "is required".into()))?;
        raw.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| invalid(NAMES[i], format!("must be a number (got {raw:?})")))
    };
    let lat = number(0)?;
    if !(-MAX_GEO_LAT..=MAX_GEO_LAT).contains(&lat) {
        return Err(invalid(
            "lat",
            format!("must be between -{MAX_GEO_LAT} and {MAX_GEO_LAT} (the geo index's range)"),
        ));
    }
    let lon = number(1)?;
    if !(-180.0..=180.0).contains(&lon) {
        return Err(invalid("lon", "must be between -180 and 180".into()));
    }
    let radius_m = number(2)?;
    if !(radius_m > 0.0 && radius_m <= MAX_RADIUS_M) {
        return Err(invalid(
            "radius_m",
            format!("must be greater than 0 and at most {MAX_RADIUS_M}"),
        ));
    }
    let limit = match values[3] {
        None => DEFAULT_NEAR_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_NEAR_LIMIT).contains(n))
            .ok_or_else(|| {
                invalid(
                    "limit",
                    format!("must be a whole number between 1 and {MAX_NEAR_LIMIT} (got {raw:?})"),
                )
            })?,
    };
    Ok(NearQuery {
        lat,
        lon,
        radius_m,
        limit,
    })
}

/// `GET /v1/couriers/near?lat=&lon=&radius_m=&limit=`: the couriers within
/// the radius, nearest first, with the age of their position.
pub async fn get_near(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &state)?;
    let query = parse_near_query(req.query_string())?;
    let couriers = state.store.near(query).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "lat": query.lat,
        "lon": query.lon,
        "radius_m": query.radius_m,
        "couriers": couriers,
    })))
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
    if !state.store.live_available() {
        return Err(ApiError::StoreUnavailable(Duration::from_secs(1)));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(state.pipeline.live().subscribe()))
}

/// Largest body of `POST /v1/tracking-links`.
const LINK_BODY_MAX: usize = 4096;

/// Body of `POST /v1/tracking-links`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    order_id: String,
    courier_id: String,
    expires_at: String,
}

/// Checks a link request at `now`: the ids by courier-model's rules, and
/// `expires_at` after `now` and within `max` of it.
fn check_link_request(
    req: &LinkRequest,
    now: chrono::DateTime<Utc>,
    max: Duration,
) -> Result<LinkRecord, ApiError> {
    let order_id = courier_model::position::OrderId::parse(&req.order_id).map_err(|e| {
        ApiError::InvalidParameter {
            field: "order_id",
            message: e.message,
        }
    })?;
    let courier_id = CourierId::parse(&req.courier_id).map_err(|e| ApiError::InvalidParameter {
        field: "courier_id",
        message: e.message,
    })?;
    let invalid = |message: String| ApiError::InvalidParameter {
        field: "expires_at",
        message,
    };
    let expires_at = chrono::DateTime::parse_from_rfc3339(&req.expires_at)
        .map_err(|e| invalid(format!("must be an RFC 3339 time ({e})")))?
        .with_timezone(&Utc);
    if expires_at <= now {
        return Err(invalid("must be in the future".into()));
    }
    let latest = now + chrono::TimeDelta::from_std(max).unwrap_or(chrono::TimeDelta::MAX);
    if expires_at > latest {
        return Err(invalid(format!(
            "must be at most {} s from now (tracking_link_max_secs)",
            max.as_secs()
        )));
    }
    Ok(LinkRecord {
        order_id: order_id.to_string(),
        courier_id: courier_id.to_string(),
        created_at: now,
        expires_at,
    })
}

/// `POST /v1/tracking-links` (dispatch key): a new customer tracking link
/// for one order and the courier carrying it. The answer holds the token,
/// once; the service keeps only its hash.
pub async fn create_tracking_link(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = authenticate_dispatch(&req, &state)?;
    check_json(&req)?;
    let body = read_body(&req, payload, LINK_BODY_MAX).await?;
    let request: LinkRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Body(BodyError::Malformed {
            message: e.to_string(),
            line: e.line(),
            column: e.column(),
        })
    })?;
    let record = check_link_request(&request, Utc::now(), state.tracking_link_max)?;
    let token = links::new_token();
    let link_id = links::link_id(&token);
    state.store.put_link(&link_id, &record).await?;
    state.metrics.tracking_links_created.inc();
    tracing::info!(
        key = %key.name,
        link_id = %link_id,
        order_id = %record.order_id,
        "tracking link created"
    );
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "link_id": link_id,
            "token": token,
            "url": format!("/track#{token}"),
            "api_url": "/v1/track",
            "api_header": TRACKING_TOKEN_HEADER,
            "order_id": record.order_id,
            "courier_id": record.courier_id,
            "expires_at": record.expires_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        })))
}

/// `DELETE /v1/tracking-links/{link_id}` (dispatch key): ends the link now
/// (at delivery, or a link sent by mistake).
pub async fn revoke_tracking_link(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = authenticate_dispatch(&req, &state)?;
    if !links::valid_link_id(&path) || !state.store.revoke_link(&path).await? {
        return Err(ApiError::TrackingLinkNotFound);
    }
    state.metrics.tracking_links_revoked.inc();
    tracing::info!(key = %key.name, link_id = %path.as_str(), "tracking link revoked");
    Ok(HttpResponse::NoContent().finish())
}

/// The request header that carries a customer tracking token.
pub const TRACKING_TOKEN_HEADER: &str = "x-tracking-token";

/// `GET /v1/track` with the token in the `X-Tracking-Token` header (no key:
/// the token is the credential; never in a path, so it reaches no access
/// log): while the link is active, the latest position of its courier and
/// nothing else; otherwise (also with no or a malformed header) `404` that
/// says nothing about the courier. The request logger records the route
/// pattern only and no header.
pub async fn get_tracking(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = req
        .headers()
        .get(TRACKING_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    let link = if links::well_formed(token) {
        state.store.link(&links::link_id(token)).await?
    } else {
        None
    };
    let Some(link) = link else {
        state.metrics.tracking_links_not_found.inc();
        return Err(ApiError::TrackingLinkNotFound);
    };
    let position = state.store.latest(&link.courier_id).await?;
    // The store answered, but the link may have expired meanwhile.
    let now = Utc::now();
    if !link.active_at(now) {
        state.metrics.tracking_links_not_found.inc();
        return Err(ApiError::TrackingLinkNotFound);
    }
    state.metrics.tracking_links_served.inc();
    let position = position.map(|p| {
        let age = (now - p.recorded_at).num_milliseconds().max(0) as f64 / 1e3;
        serde_json::json!({
            "lat": p.lat,
            "lon": p.lon,
            "recorded_at": p.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "age_secs": age,
            "speed_mps": p.speed_mps,
            "heading_deg": p.heading_deg,
        })
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .json(serde_json::json!({
            "order_id": link.order_id,
            "expires_at": link.expires_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "position": position,
        })))
}

/// `GET /track`: the customer's page, opened as `/track#<token>` (the
/// fragment never leaves the browser). The same page for every token: it
/// reads the token from `location.hash`, asks `GET /v1/track` with it in the
/// `X-Tracking-Token` header and shows what that answers on the map; never
/// cached and never sending its URL as a referrer. Its CSP
/// allows this origin and, for images, the configured tile host only.
pub async fn tracking_page(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, state.web.csp.as_str()))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("x-robots-tag", "noindex"))
        .body(state.web.track_html.clone())
}

/// `GET /map`: the live map page (no key needed for the page; it asks for
/// one to read the stream). Its CSP allows this origin and, for images, the
/// configured tile host only.
pub async fn map_page(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, state.web.csp.as_str()))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(state.web.map_html.clone())
}

/// `GET|HEAD /assets/{path}`: the map script and the Leaflet files, from
/// memory (read at startup); only the files of [`crate::web`], with their
/// content type, cache headers and an ETag (`304` on a match).
pub async fn asset(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(asset) = state.web.assets.get(path.as_str()) else {
        return Err(ApiError::NotFound(format!(
            "{} {}",
            req.method(),
            req.path()
        )));
    };
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == asset.etag));
    let mut res = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, asset.cache_control))
        .insert_header((header::ETAG, asset.etag.as_str()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if matches {
        return Ok(res.finish());
    }
    // HEAD: the server sends the headers of this answer without its body.
    res.insert_header((header::CONTENT_TYPE, asset.content_type));
    Ok(res.body(asset.body.clone()))
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The checks `/readyz` reports, in the order of its `checks` object.
pub const READINESS_CHECKS: [&str; 5] = [
    "stream_reachable",
    "shard_map_loaded",
    "not_overloaded",
    "not_shutting_down",
    "writers_running",
];

/// `GET /readyz`: the stream is reachable, routes are known, load is below
/// 90 % of the in-flight budget, shutdown has not begun, and every writer
/// actor is running.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let pipeline = &state.pipeline;
    let stream = pipeline.health().is_up();
    let routes = pipeline.has_routes();
    let utilization = pipeline.budget().utilization();
    let not_overloaded = utilization < 0.9;
    let running = !pipeline.is_shutting_down();
    let writers = pipeline.writers_alive();
    let values = [stream, routes, not_overloaded, running, writers];
    let ready = values.iter().all(|ok| *ok);
    let checks: serde_json::Map<String, serde_json::Value> = READINESS_CHECKS
        .iter()
        .zip(values)
        .map(|(name, ok)| ((*name).to_owned(), serde_json::Value::Bool(ok)))
        .collect();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
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

/// Every route with the methods it serves (the `Allow` header of its `405`).
/// The OpenAPI document has exactly these paths and methods (tested).
pub const ROUTES: [(&str, &str); 14] = [
    ("/v1/positions", "POST"),
    ("/v1/tracking-links", "POST"),
    ("/v1/tracking-links/{link_id}", "DELETE"),
    ("/v1/track", "GET"),
    ("/track", "GET"),
    ("/v1/positions/stream", "GET"),
    ("/v1/couriers/near", "GET"),
    ("/v1/couriers/{courier_id}/position", "GET, HEAD, DELETE"),
    ("/healthz", "GET, HEAD"),
    ("/readyz", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
    ("/openapi.json", "GET, HEAD"),
    ("/map", "GET, HEAD"),
    ("/assets/{path}", "GET, HEAD"),
];

/// The methods `path` serves, from [`ROUTES`].
fn allowed(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("GET, HEAD", |(_, allow)| *allow)
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/positions")
            .route(web::post().to(post_positions))
            .default_service(web::to(method_not_allowed(allowed("/v1/positions")))),
    )
    .service(
        web::resource("/v1/positions/stream")
            .route(web::get().to(stream_positions))
            .default_service(web::to(method_not_allowed(allowed("/v1/positions/stream")))),
    )
    .service(
        web::resource("/v1/couriers/near")
            .route(web::get().to(get_near))
            .default_service(web::to(method_not_allowed(allowed("/v1/couriers/near")))),
    )
    .service(
        web::resource("/v1/tracking-links")
            .route(web::post().to(create_tracking_link))
            .default_service(web::to(method_not_allowed(allowed("/v1/tracking-links")))),
    )
    .service(
        web::resource("/v1/tracking-links/{link_id}")
            .route(web::delete().to(revoke_tracking_link))
            .default_service(web::to(method_not_allowed(allowed(
                "/v1/tracking-links/{link_id}",
            )))),
    )
    .service(
        web::resource("/v1/track")
            .route(web::get().to(get_tracking))
            .default_service(web::to(method_not_allowed(allowed("/v1/track")))),
    )
    .service(
        web::resource("/track")
            .route(web::get().to(tracking_page))
            .default_service(web::to(method_not_allowed(allowed("/track")))),
    )
    .service(
        web::resource("/assets/{path:.+}")
            .route(web::get().to(asset))
            .route(web::head().to(asset))
            .default_service(web::to(method_not_allowed(allowed("/assets/{path}")))),
    )
    .service(
        web::resource("/v1/couriers/{courier_id}/position")
            .route(web::get().to(get_latest))
            .route(web::head().to(get_latest))
            .route(web::delete().to(erase_position))
            .default_service(web::to(method_not_allowed(allowed(
                "/v1/couriers/{courier_id}/position",
            )))),
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
                .default_service(web::to(method_not_allowed(allowed(path)))),
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
/// errors, and closes connections once shutdown has begun. It records the
/// route *pattern*, never the path nor a header: no id of a path and no
/// tracking token (header `X-Tracking-Token`) reaches a log line or a
/// metric label.
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

/// The OpenAPI document against the code: every route and method, every
/// status an error or handler can answer on each route, and every rule of
/// courier-model that a schema can express.
#[cfg(test)]
mod openapi_contract {
    use std::collections::BTreeSet;

    use courier_model::position::{
        AccuracyMeters, CourierId, HeadingDeg, Latitude, Longitude, MAX_ID_LEN, OrderId, SpeedMps,
    };
    use serde_json::Value;

    use super::*;
    use crate::config::Settings;

    type Op = (&'static str, &'static str);
    const POST: Op = ("/v1/positions", "post");
    const STREAM: Op = ("/v1/positions/stream", "get");
    const LATEST: Op = ("/v1/couriers/{courier_id}/position", "get");
    const LATEST_HEAD: Op = ("/v1/couriers/{courier_id}/position", "head");
    const NEAR: Op = ("/v1/couriers/near", "get");
    const LINK_CREATE: Op = ("/v1/tracking-links", "post");
    const LINK_REVOKE: Op = ("/v1/tracking-links/{link_id}", "delete");
    const TRACK: Op = ("/v1/track", "get");
    const TRACK_PAGE: Op = ("/track", "get");
    const ERASE: Op = ("/v1/couriers/{courier_id}/position", "delete");

    fn doc() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
    }

    fn documented(doc: &Value, (path, method): Op) -> BTreeSet<u16> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is not documented"))
            .keys()
            .map(|k| k.parse().expect("a numeric status"))
            .collect()
    }

    /// The operations on which an error can be answered. The match is
    /// exhaustive: a new variant does not compile until its routes are named.
    fn operations_of(error: &ApiError) -> Vec<Op> {
        match error {
            ApiError::Unauthorized | ApiError::RateLimited(_) => {
                vec![
                    POST,
                    STREAM,
                    LATEST,
                    LATEST_HEAD,
                    NEAR,
                    LINK_CREATE,
                    LINK_REVOKE,
                    ERASE,
                ]
            }
            ApiError::UnsupportedMediaType(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::Body(_) => vec![POST, LINK_CREATE],
            ApiError::NoneValid(_) => vec![POST],
            ApiError::InvalidParameter { .. } => {
                vec![LATEST, LATEST_HEAD, NEAR, LINK_CREATE, ERASE]
            }
            ApiError::CourierNotFound(_) => vec![LATEST, LATEST_HEAD],
            ApiError::TrackingLinkNotFound => vec![LINK_REVOKE, TRACK],
            ApiError::StoreUnavailable(_) => vec![
                STREAM,
                LATEST,
                LATEST_HEAD,
                NEAR,
                LINK_CREATE,
                LINK_REVOKE,
                TRACK,
                ERASE,
            ],
            // The default service, for paths that are no route at all.
            ApiError::NotFound(_) => vec![],
            // Checked per path below: the first method of each path
            // documents the 405 of the methods it does not serve.
            ApiError::MethodNotAllowed(_) => vec![],
            ApiError::Unavailable { .. } => vec![POST, STREAM],
        }
    }

    fn every_error() -> Vec<ApiError> {
        let mut errors = vec![
            ApiError::Unauthorized,
            ApiError::RateLimited(Duration::from_secs(1)),
            ApiError::UnsupportedMediaType("text/plain".into()),
            ApiError::PayloadTooLarge(1024),
            ApiError::Body(BodyError::Malformed {
                message: "x".into(),
                line: 1,
                column: 1,
            }),
            ApiError::Body(BodyError::BatchSize { got: 0, max: 1 }),
            ApiError::InvalidParameter {
                field: "courier_id",
                message: "x".into(),
            },
            ApiError::NoneValid(PostResponse {
                accepted: 0,
                rejected: vec![],
            }),
            ApiError::CourierNotFound("c".into()),
            ApiError::TrackingLinkNotFound,
            ApiError::NotFound("GET /x".into()),
            ApiError::MethodNotAllowed("GET"),
            ApiError::StoreUnavailable(Duration::from_secs(1)),
        ];
        errors.extend(
            [
                SubmitError::NotReady,
                SubmitError::Overloaded,
                SubmitError::ShuttingDown,
                SubmitError::Write(WriteError::Dropped),
                SubmitError::Write(WriteError::Unavailable("x".into())),
            ]
            .map(ApiError::from),
        );
        errors
    }

    #[test]
    fn the_document_has_exactly_the_routes_and_methods_served() {
        let doc = doc();
        let paths = doc["paths"].as_object().expect("paths");
        let served: BTreeSet<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
        let in_document: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        assert_eq!(served, in_document);
        for (path, allow) in ROUTES {
            let methods: BTreeSet<String> =
                allow.split(", ").map(|m| m.to_ascii_lowercase()).collect();
            let in_doc: BTreeSet<String> = paths[path]
                .as_object()
                .expect("operations")
                .keys()
                .filter(|k| *k != "parameters")
                .cloned()
                .collect();
            assert_eq!(methods, in_doc, "{path}");
            let first = allow
                .split(", ")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let first: &'static str = match first.as_str() {
                "post" => "post",
                "delete" => "delete",
                _ => "get",
            };
            assert!(
                documented(&doc, (path, first)).contains(&405),
                "{first} {path} does not document the 405 of other methods"
            );
        }
    }

    #[test]
    fn every_status_the_code_can_answer_is_documented_on_its_route() {
        let doc = doc();
        for error in every_error() {
            let status = error.status_code().as_u16();
            for op in operations_of(&error) {
                assert!(
                    documented(&doc, op).contains(&status),
                    "{} {} can answer {status} ({error}) but does not document it",
                    op.1,
                    op.0
                );
            }
        }
        // Success and readiness answers of the handlers.
        let successes: [(Op, u16); 20] = [
            (ERASE, StatusCode::NO_CONTENT.as_u16()),
            (("/assets/{path}", "get"), 200),
            (POST, StatusCode::ACCEPTED.as_u16()),
            (LINK_CREATE, StatusCode::CREATED.as_u16()),
            (LINK_REVOKE, StatusCode::NO_CONTENT.as_u16()),
            (TRACK, 200),
            (TRACK_PAGE, 200),
            (NEAR, 200),
            (STREAM, 200),
            (LATEST, 200),
            (LATEST_HEAD, 200),
            (("/healthz", "get"), 200),
            (("/healthz", "head"), 200),
            (("/readyz", "get"), 200),
            (("/readyz", "get"), StatusCode::SERVICE_UNAVAILABLE.as_u16()),
            (("/readyz", "head"), 200),
            (
                ("/readyz", "head"),
                StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            ),
            (("/metrics", "get"), 200),
            (("/openapi.json", "get"), 200),
            (("/map", "get"), 200),
        ];
        for (op, status) in successes {
            assert!(
                documented(&doc, op).contains(&status),
                "{} {} {status}",
                op.1,
                op.0
            );
        }
    }

    /// The characters a pattern's `[...]` class allows, among printable ASCII.
    fn class_chars(pattern: &str) -> BTreeSet<char> {
        let class = pattern
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(class, _)| class.chars().collect::<Vec<char>>())
            .expect("a [...] class");
        let mut chars = BTreeSet::new();
        let mut i = 0;
        while i < class.len() {
            if i + 2 < class.len() && class[i + 1] == '-' {
                chars.extend(class[i]..=class[i + 2]);
                i += 3;
            } else {
                chars.insert(class[i]);
                i += 1;
            }
        }
        chars
    }

    fn check_id_schema(schema: &Value, what: &str, parse: fn(&str) -> bool) {
        let pattern = schema["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no pattern"));
        assert_eq!(
            pattern,
            format!("^[A-Za-z0-9_-]{{1,{MAX_ID_LEN}}}$"),
            "{what}"
        );
        assert_eq!(schema["minLength"], 1, "{what}");
        assert_eq!(schema["maxLength"], MAX_ID_LEN, "{what}");
        let accepted: BTreeSet<char> = (' '..='~').filter(|c| parse(&c.to_string())).collect();
        assert_eq!(accepted, class_chars(pattern), "{what}: character class");
        assert!(!parse(""), "{what}: empty");
        assert!(parse(&"a".repeat(MAX_ID_LEN)), "{what}: longest");
        assert!(!parse(&"a".repeat(MAX_ID_LEN + 1)), "{what}: too long");
    }

    #[test]
    fn id_patterns_and_lengths_are_the_rules_of_courier_model() {
        let doc = doc();
        let courier = |s: &str| CourierId::parse(s).is_ok();
        let order = |s: &str| OrderId::parse(s).is_ok();
        let params = doc["paths"]["/v1/couriers/{courier_id}/position"]["parameters"]
            .as_array()
            .expect("path parameters");
        let param = params
            .iter()
            .find(|p| p["name"] == "courier_id" && p["in"] == "path")
            .expect("courier_id parameter");
        check_id_schema(&param["schema"], "path courier_id", courier);
        let schemas = &doc["components"]["schemas"];
        for schema in ["Position", "StoredPosition"] {
            let props = &schemas[schema]["properties"];
            check_id_schema(
                &props["courier_id"],
                &format!("{schema}.courier_id"),
                courier,
            );
            check_id_schema(&props["order_id"], &format!("{schema}.order_id"), order);
        }
        let link = &schemas["TrackingLinkRequest"]["properties"];
        check_id_schema(
            &link["courier_id"],
            "TrackingLinkRequest.courier_id",
            courier,
        );
        check_id_schema(&link["order_id"], "TrackingLinkRequest.order_id", order);
        check_id_schema(
            &schemas["TrackingLink"]["properties"]["courier_id"],
            "TrackingLink.courier_id",
            courier,
        );
    }

    /// The link request's rules: ids, and an expiry after now and within the
    /// maximum lifetime; every broken rule names its field.
    #[test]
    fn tracking_link_requests_are_checked_field_by_field() {
        let now = Utc::now();
        let max = Duration::from_secs(3600);
        let request = |order: &str, courier: &str, expires: chrono::DateTime<Utc>| LinkRequest {
            order_id: order.into(),
            courier_id: courier.into(),
            expires_at: expires.to_rfc3339(),
        };
        let minute = chrono::TimeDelta::seconds(60);
        let ok = check_link_request(&request("o-1", "c-1", now + minute), now, max).expect("ok");
        assert_eq!(
            (ok.order_id.as_str(), ok.courier_id.as_str()),
            ("o-1", "c-1")
        );
        assert_eq!(ok.expires_at, now + minute);
        let field = |r: LinkRequest| match check_link_request(&r, now, max) {
            Err(ApiError::InvalidParameter { field, .. }) => field,
            other => panic!("{r:?}: {other:?}"),
        };
        assert_eq!(field(request("o 1", "c-1", now + minute)), "order_id");
        assert_eq!(field(request("o-1", "", now + minute)), "courier_id");
        assert_eq!(field(request("o-1", "c-1", now)), "expires_at");
        let too_late = now + chrono::TimeDelta::seconds(3601);
        assert_eq!(field(request("o-1", "c-1", too_late)), "expires_at");
        let at_max = now + chrono::TimeDelta::seconds(3600);
        assert!(check_link_request(&request("o-1", "c-1", at_max), now, max).is_ok());
        let mut garbled = request("o-1", "c-1", now + minute);
        garbled.expires_at = "tomorrow".into();
        assert_eq!(field(garbled), "expires_at");
    }

    #[test]
    fn numeric_bounds_and_the_batch_limit_are_the_rules_of_the_code() {
        let doc = doc();
        let props = &doc["components"]["schemas"]["Position"]["properties"];
        type Check = fn(f64) -> bool;
        let fields: [(&str, Check); 5] = [
            ("lat", |v| Latitude::new(v).is_ok()),
            ("lon", |v| Longitude::new(v).is_ok()),
            ("accuracy_m", |v| AccuracyMeters::new(v).is_ok()),
            ("speed_mps", |v| SpeedMps::new(v).is_ok()),
            ("heading_deg", |v| HeadingDeg::new(v).is_ok()),
        ];
        let step = |v: f64, up: bool| {
            let d = v.abs().max(1.0) * 1e-9;
            if up { v + d } else { v - d }
        };
        for (field, ok) in fields {
            let schema = &props[field];
            let min = schema["minimum"].as_f64();
            let max = schema["maximum"].as_f64();
            let exclusive_max = schema["exclusiveMaximum"].as_f64();
            assert!(
                min.is_some() || max.is_some() || exclusive_max.is_some(),
                "{field}"
            );
            if let Some(min) = min {
                assert!(ok(min) && !ok(step(min, false)), "{field} minimum {min}");
            } else {
                assert!(ok(-1e300), "{field} has a lower bound the document omits");
            }
            match (max, exclusive_max) {
                (Some(max), None) => assert!(ok(max) && !ok(step(max, true)), "{field} maximum"),
                (None, Some(max)) => {
                    assert!(!ok(max) && ok(step(max, false)), "{field} exclusiveMaximum")
                }
                (None, None) => assert!(ok(1e300), "{field} has an upper bound the document omits"),
                (Some(_), Some(_)) => panic!("{field}: both maximum and exclusiveMaximum"),
            }
        }
        let batch = &doc["components"]["schemas"]["PositionBatch"]["properties"]["positions"];
        assert_eq!(batch["minItems"], 1);
        assert_eq!(batch["maxItems"], Settings::default().max_batch_positions);
    }

    #[test]
    fn nearby_parameters_are_the_bounds_of_the_code() {
        let doc = doc();
        let params = doc["paths"]["/v1/couriers/near"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let schema = |name: &str| {
            params
                .iter()
                .find(|p| p["name"] == name && p["in"] == "query")
                .unwrap_or_else(|| panic!("parameter {name}"))["schema"]
                .clone()
        };
        assert_eq!(schema("lat")["maximum"].as_f64(), Some(MAX_GEO_LAT));
        assert_eq!(schema("lat")["minimum"].as_f64(), Some(-MAX_GEO_LAT));
        assert_eq!(schema("radius_m")["maximum"].as_f64(), Some(MAX_RADIUS_M));
        assert_eq!(schema("radius_m")["exclusiveMinimum"].as_f64(), Some(0.0));
        assert_eq!(schema("limit")["maximum"], MAX_NEAR_LIMIT);
        assert_eq!(schema("limit")["default"], DEFAULT_NEAR_LIMIT);
        let ok = |q: &str| parse_near_query(q).is_ok();
        let field = |q: &str| match parse_near_query(q) {
            Err(ApiError::InvalidParameter { field, .. }) => field,
            other => panic!("{q}: {other:?}"),
        };
        assert!(ok(&format!(
            "lat={MAX_GEO_LAT}&lon=180&radius_m={MAX_RADIUS_M}&limit={MAX_NEAR_LIMIT}"
        )));
        assert!(ok("lat=-1&lon=-180&radius_m=0.001"));
        assert_eq!(
            parse_near_query("lat=1&lon=2&radius_m=3")
                .map(|q| q.limit)
                .ok(),
            Some(DEFAULT_NEAR_LIMIT)
        );
        assert_eq!(field("lat=86&lon=0&radius_m=1"), "lat");
        assert_eq!(field("lon=0&radius_m=1"), "lat");
        assert_eq!(field("lat=0&lon=180.5&radius_m=1"), "lon");
        assert_eq!(field("lat=0&lon=0&radius_m=0"), "radius_m");
        assert_eq!(
            field(&format!("lat=0&lon=0&radius_m={}", MAX_RADIUS_M + 1.0)),
            "radius_m"
        );
        assert_eq!(field("lat=0&lon=0&radius_m=NaN"), "radius_m");
        assert_eq!(field("lat=0&lon=0&radius_m=1&limit=0"), "limit");
        assert_eq!(
            field(&format!(
                "lat=0&lon=0&radius_m=1&limit={}",
                MAX_NEAR_LIMIT + 1
            )),
            "limit"
        );
        assert_eq!(field("lat=0&lat=1&lon=0&radius_m=1"), "lat");
        assert_eq!(field("lat=0&lon=0&radius_m=1&radius=2"), "query");
    }

    #[test]
    fn readiness_checks_are_the_ones_readyz_reports() {
        let doc = doc();
        let required: BTreeSet<&str> =
            doc["components"]["schemas"]["Readiness"]["properties"]["checks"]["required"]
                .as_array()
                .expect("required checks")
                .iter()
                .filter_map(Value::as_str)
                .collect();
        let reported: BTreeSet<&str> = READINESS_CHECKS.into_iter().collect();
        assert_eq!(required, reported);
        let documented: BTreeSet<&str> =
            doc["components"]["schemas"]["Readiness"]["properties"]["checks"]["properties"]
                .as_object()
                .expect("check properties")
                .keys()
                .map(String::as_str)
                .collect();
        assert_eq!(documented, reported);
    }
}
