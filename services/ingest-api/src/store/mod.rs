//! The position store behind the read routes: each courier's latest
//! position, the couriers near a point, and the live feed.
//!
//! Two implementations, chosen at start-up:
//!
//! - **embedded** (the default, no Redis configured): the tracker actors of
//!   this process (`pipeline::tracker`) and its own live feed. A task knows
//!   only the couriers whose positions it took.
//! - **redis** (`redis_url` set): one Redis / Valkey shared by every task
//!   ([`redis::RedisStore`]). A server-side script keeps per courier the
//!   position with the greatest `recorded_at`, its geo index and a TTL, and
//!   publishes the live feed that every task relays to its viewers.
//!
//! Ingestion never waits on the store: positions reach it only after they are
//! durable in the stream, through [`PositionStore::observe`], which never
//! blocks and never fails (the Redis store queues them, bounded, and counts
//! what it drops).

pub mod links;
pub mod redis;

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use courier_model::position::Position;
use serde::{Deserialize, Serialize};

use crate::pipeline::Pipeline;
use crate::pipeline::tracker::Near;
use links::{EmbeddedLinks, LinkRecord};

/// Mean Earth radius Redis uses for its geo commands, in metres; the embedded
/// store uses the same so both answer the same distances.
pub const EARTH_RADIUS_M: f64 = 6_372_797.560_856;

/// The largest `radius_m` of a nearby query.
pub const MAX_RADIUS_M: f64 = 50_000.0;
/// The largest `limit` of a nearby query.
pub const MAX_NEAR_LIMIT: usize = 500;
/// `limit` when the query names none.
pub const DEFAULT_NEAR_LIMIT: usize = 50;
/// The latitudes the geo index can hold (Web Mercator, as Redis's GEOADD).
pub const MAX_GEO_LAT: f64 = 85.051_128_78;

/// The latest position of a courier as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPosition {
    /// The courier.
    pub courier_id: String,
    /// The position's idempotency key.
    pub event_id: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Device time of the fix.
    #[serde(with = "micros")]
    pub recorded_at: DateTime<Utc>,
    /// When the service accepted it.
    #[serde(with = "micros")]
    pub received_at: DateTime<Utc>,
    /// Accuracy radius, metres.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub accuracy_m: Option<f64>,
    /// Speed, m/s.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub speed_mps: Option<f64>,
    /// Heading, degrees.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heading_deg: Option<f64>,
    /// The order being delivered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub order_id: Option<String>,
}

/// RFC 3339 with microseconds, as every timestamp of the API.
mod micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <&str>::deserialize(d)?;
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

impl From<&Position> for StoredPosition {
    fn from(p: &Position) -> Self {
        Self {
            courier_id: p.courier_id.to_string(),
            event_id: p.event_id.to_string(),
            lat: p.lat.get(),
            lon: p.lon.get(),
            recorded_at: p.recorded_at,
            received_at: p.received_at,
            accuracy_m: p.accuracy_m.map(|v| v.get()),
            speed_mps: p.speed_mps.map(|v| v.get()),
            heading_deg: p.heading_deg.map(|v| v.get()),
            order_id: p.order_id.as_ref().map(|o| o.to_string()),
        }
    }
}

/// A nearby query, parsed and within its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearQuery {
    /// Latitude of the centre, within [`MAX_GEO_LAT`].
    pub lat: f64,
    /// Longitude of the centre.
    pub lon: f64,
    /// Radius in metres, in (0, [`MAX_RADIUS_M`]].
    pub radius_m: f64,
    /// Couriers at most, in 1..=[`MAX_NEAR_LIMIT`].
    pub limit: usize,
}

/// One courier of a nearby answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearbyCourier {
    /// The courier.
    pub courier_id: String,
    /// Distance from the query's centre, metres.
    pub distance_m: f64,
    /// Latitude of its latest position.
    pub lat: f64,
    /// Longitude of its latest position.
    pub lon: f64,
    /// Device time of that position.
    pub recorded_at: String,
    /// Seconds between `recorded_at` and now (at least 0).
    pub age_secs: f64,
    /// Speed, m/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    /// Heading, degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
}

impl NearbyCourier {
    /// The answer entry for a stored position at `distance_m`.
    pub fn new(p: &StoredPosition, distance_m: f64, now: DateTime<Utc>) -> Self {
        let age = (now - p.recorded_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        Self {
            courier_id: p.courier_id.clone(),
            distance_m: (distance_m * 100.0).round() / 100.0,
            lat: p.lat,
            lon: p.lon,
            recorded_at: p.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            age_secs: age.max(0.0),
            speed_mps: p.speed_mps,
            heading_deg: p.heading_deg,
        }
    }
}

/// Great-circle distance in metres (haversine on [`EARTH_RADIUS_M`], as Redis).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dlat = p2 - p1;
    let dlon = (lon2 - lon1).to_radians();
    let a = (dlat / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// Why the store could not answer a read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer, or answered with an error.
    #[error("the position store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something this version cannot read.
    #[error("the position store holds an unreadable entry: {0}")]
    Corrupt(String),
}

/// The configured position store.
pub enum PositionStore {
    /// This process's tracker actors and live feed, and its tracking links.
    Embedded(Arc<Pipeline>, EmbeddedLinks),
    /// The shared Redis store.
    Redis(redis::RedisStore),
}

impl PositionStore {
    /// `embedded` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(..) => "embedded",
            Self::Redis(_) => "redis",
        }
    }

    /// Hands accepted (durable) positions to the store and the live feed.
    /// Never blocks and never fails.
    pub fn observe(&self, positions: Vec<Position>) {
        match self {
            Self::Embedded(pipeline, _) => pipeline.observe(positions),
            Self::Redis(store) => store.observe(positions),
        }
    }

    /// The latest position of a courier, if one is known.
    pub async fn latest(&self, courier_id: &str) -> Result<Option<StoredPosition>, StoreError> {
        match self {
            Self::Embedded(pipeline, _) => Ok(pipeline
                .latest(courier_id)
                .await
                .map(|p| StoredPosition::from(&p))),
            Self::Redis(store) => store.latest(courier_id).await,
        }
    }

    /// The couriers within the query's radius, nearest first.
    pub async fn near(&self, query: NearQuery) -> Result<Vec<NearbyCourier>, StoreError> {
        match self {
            Self::Embedded(pipeline, _) => {
                let mut all = Vec::new();
                let asks = pipeline
                    .trackers()
                    .iter()
                    .map(|t| t.send(Near(query)))
                    .collect::<Vec<_>>();
                for answer in futures::future::join_all(asks).await {
                    let found = answer.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    all.extend(found);
                }
                all.sort_by(|a: &(StoredPosition, f64), b| a.1.total_cmp(&b.1));
                all.truncate(query.limit);
                let now = Utc::now();
                Ok(all
                    .iter()
                    .map(|(p, d)| NearbyCourier::new(p, *d, now))
                    .collect())
            }
            Self::Redis(store) => store.near(query).await,
        }
    }

    /// Erases a courier: its latest position and its nearby-index entries.
    /// Whether anything was there; erasing an unknown courier is no error.
    pub async fn erase(&self, courier_id: &str) -> Result<bool, StoreError> {
        match self {
            Self::Embedded(pipeline, _) => Ok(pipeline.forget(courier_id).await),
            Self::Redis(store) => store.erase(courier_id).await,
        }
    }

    /// Keeps a customer tracking link under `link_id` until its `expires_at`.
    pub async fn put_link(&self, link_id: &str, record: &LinkRecord) -> Result<(), StoreError> {
        match self {
            Self::Embedded(_, links) => links.put(link_id.to_owned(), record.clone()),
            Self::Redis(store) => store.put_link(link_id, record).await,
        }
    }

    /// The tracking link `link_id`, while it is active (not expired, not
    /// revoked).
    pub async fn link(&self, link_id: &str) -> Result<Option<LinkRecord>, StoreError> {
        match self {
            Self::Embedded(_, links) => Ok(links.get(link_id)),
            Self::Redis(store) => store.get_link(link_id).await,
        }
    }

    /// Ends the tracking link `link_id` now; whether an active one was there.
    pub async fn revoke_link(&self, link_id: &str) -> Result<bool, StoreError> {
        match self {
            Self::Embedded(_, links) => Ok(links.remove(link_id)),
            Self::Redis(store) => store.delete_link(link_id).await,
        }
    }

    /// Whether the live feed can serve new viewers now (the Redis store:
    /// subscribed to the shared feed).
    pub fn live_available(&self) -> bool {
        match self {
            Self::Embedded(..) => true,
            Self::Redis(store) => store.subscribed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_agree_with_redis_geodist() {
        // GEODIST of (13.361389, 38.115556) and (15.087269, 37.502669) in
        // Redis's documentation: 166274.1516 m.
        let d = distance_m(38.115556, 13.361389, 37.502669, 15.087269);
        assert!((d - 166_274.151_6).abs() < 0.5, "{d}");
        assert_eq!(distance_m(1.0, 2.0, 1.0, 2.0), 0.0);
    }

    #[test]
    fn a_stored_position_round_trips_through_json() {
        let p = StoredPosition {
            courier_id: "c-1".into(),
            event_id: "0192f8e2-7c1a-7d3e-9a4b-5c6d7e8f9a0b".into(),
            lat: -23.5,
            lon: -46.6,
            recorded_at: "2026-11-24T10:15:30.250123Z".parse().expect("time"),
            received_at: "2026-11-24T10:15:31Z".parse().expect("time"),
            accuracy_m: None,
            speed_mps: Some(3.0),
            heading_deg: None,
            order_id: Some("o-1".into()),
        };
        let json = serde_json::to_string(&p).expect("json");
        assert!(
            json.contains("\"recorded_at\":\"2026-11-24T10:15:30.250123Z\""),
            "{json}"
        );
        assert!(!json.contains("accuracy_m"), "{json}");
        let back: StoredPosition = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, p);
    }
}
