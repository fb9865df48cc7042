//! The shared position store on Redis / Valkey (ElastiCache in AWS).
//!
//! Keys, all under the configured prefix `P` (a test or a second deployment
//! on the same server uses its own):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P pos:<courier_id>` | hash `r`, `p` | `recorded_at` in µs since the epoch; the position as JSON; expires after the TTL without news |
//! | `P geo` | geo set | each courier at its latest position |
//! | `P seen` | sorted set | each courier by when it was last heard of (ms), to drop silent ones from `P geo` |
//! | `P live` | channel | the live feed: each batch as ready server-sent event frames |
//! | `P link:<link_id>` | string | a customer tracking link ([`super::links::LinkRecord`] as JSON), keyed by the SHA-256 of its token; expires at the link's `expires_at` (`PXAT`) |
//!
//! Writes: [`RedisStore::observe`] puts positions on a bounded queue (counted
//! in positions, `store_queue_positions`) and returns; one task drains it, up
//! to [`BATCH`] positions per call of [`UPDATE`], a Lua script that replaces a
//! courier's position only by one with a greater `recorded_at`, moves it in
//! the geo index, refreshes its TTL, forgets silent couriers in the index and
//! publishes the batch, atomically. A full queue or a failed call drops the
//! update (`ingest_store_updates_dropped_total{reason}`); the store is a view
//! of the stream, so nothing acknowledged is lost, and the next position of
//! the courier repairs it.
//!
//! Reads go through one reconnecting connection ([`ConnectionManager`]) with
//! a timeout; an error is [`StoreError::Unavailable`] (the routes answer 503).
//! The live feed is a subscription of its own, re-established with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use courier_model::position::Position;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, Script};
use tokio::sync::mpsc;

use super::links::LinkRecord;
use super::{MAX_GEO_LAT, NearQuery, NearbyCourier, StoreError, StoredPosition};
use crate::live::frame;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// Positions per call of the update script, at most.
pub const BATCH: usize = 1000;

/// Silent couriers dropped from the geo index per update call, at most.
const PRUNE: usize = 256;

/// KEYS: geo index, last-seen index, then each position's hash.
/// ARGV: TTL ms, now ms, channel, frames to publish, the geo index's largest
/// latitude, silent couriers to prune at most, then five per position:
/// courier id, recorded_at µs, lon, lat, JSON.
pub const UPDATE: &str = r#"
local geo, seen = KEYS[1], KEYS[2]
local ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_lat = tonumber(ARGV[5])
local updated = 0
for i = 3, #KEYS do
  local key = KEYS[i]
  local a = 6 + (i - 3) * 5
  local id, rec = ARGV[a + 1], tonumber(ARGV[a + 2])
  local cur = redis.call('HGET', key, 'r')
  if (not cur) or tonumber(cur) < rec then
    redis.call('HSET', key, 'r', ARGV[a + 2], 'p', ARGV[a + 5])
    local lat = tonumber(ARGV[a + 4])
    if lat <= max_lat and lat >= -max_lat then
      redis.call('GEOADD', geo, ARGV[a + 3], ARGV[a + 4], id)
    else
      redis.call('ZREM', geo, id)
    end
    updated = updated + 1
  end
  redis.call('PEXPIRE', key, ttl)
  redis.call('ZADD', seen, now, id)
end
local gone = redis.call('ZRANGEBYSCORE', seen, '-inf', now - ttl, 'LIMIT', 0, tonumber(ARGV[6]))
if #gone > 0 then
  redis.call('ZREM', geo, unpack(gone))
  redis.call('ZREM', seen, unpack(gone))
end
-- the indexes go too once the whole fleet has been silent for the TTL
redis.call('PEXPIRE', geo, ttl)
redis.call('PEXPIRE', seen, ttl)
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return updated
"#;

/// KEYS: geo index, last-seen index. ARGV: lon, lat, radius m, limit, the
/// prefix of position hashes. Answers `{id, distance, json}` nearest first;
/// a courier whose hash expired is dropped from both indexes and the search
/// runs again, so the answer holds exactly the live couriers in the radius.
pub const NEAR: &str = r#"
for attempt = 1, 32 do
  local hits = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
    'BYRADIUS', ARGV[3], 'm', 'ASC', 'COUNT', ARGV[4], 'WITHDIST')
  local out, stale = {}, {}
  for _, h in ipairs(hits) do
    local p = redis.call('HGET', ARGV[5] .. h[1], 'p')
    if p then
      out[#out + 1] = {h[1], h[2], p}
    else
      stale[#stale + 1] = h[1]
    end
  end
  if #stale == 0 then
    return out
  end
  redis.call('ZREM', KEYS[1], unpack(stale))
  redis.call('ZREM', KEYS[2], unpack(stale))
end
return redis.error_reply('too many expired couriers in the geo index; retry')
"#;

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db` or `rediss://...` (TLS).
    pub url: String,
    /// AUTH password (ElastiCache auth token), if any.
    pub password: Option<String>,
    /// Prefix of every key and of the channel.
    pub key_prefix: String,
    /// Timeout of one call and of a connection attempt.
    pub timeout: Duration,
    /// Forget a courier after this long without news.
    pub ttl: Duration,
    /// Positions queued for the store at most; beyond, updates are dropped.
    pub max_queued: usize,
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL or settings are not usable.
    #[error("redis_url: {0}")]
    Config(#[from] redis::RedisError),
}

struct Keys {
    prefix: String,
    geo: String,
    seen: String,
    channel: String,
    link: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: format!("{prefix}pos:"),
            geo: format!("{prefix}geo"),
            seen: format!("{prefix}seen"),
            channel: format!("{prefix}live"),
            link: format!("{prefix}link:"),
        }
    }

    fn link(&self, link_id: &str) -> String {
        format!("{}{link_id}", self.link)
    }

    fn position(&self, courier_id: &str) -> String {
        format!("{}{courier_id}", self.prefix)
    }
}

struct Shared {
    conn: ConnectionManager,
    keys: Keys,
    options: RedisOptions,
    metrics: Metrics,
    queued: AtomicUsize,
    subscribed: AtomicBool,
    near: Script,
}

/// The Redis store (cheap to share: the handles are reference counted).
pub struct RedisStore {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Vec<Position>>,
}

impl RedisStore {
    /// Connects lazily (the service starts while the store is down) and
    /// starts the update task and the live feed subscription on the current
    /// runtime. Live frames are relayed to `pipeline`'s feed.
    pub fn start(
        options: RedisOptions,
        pipeline: Arc<Pipeline>,
        metrics: Metrics,
    ) -> Result<Self, RedisSetupError> {
        if options.url.starts_with("rediss:") {
            // rustls has two crypto providers compiled in (the AWS SDK's);
            // pick one for the process. Err: one is installed already.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let mut info = options.url.as_str().into_connection_info()?;
        if let Some(password) = &options.password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let shared = Arc::new(Shared {
            conn,
            keys: Keys::new(&options.key_prefix),
            options,
            metrics,
            queued: AtomicUsize::new(0),
            subscribed: AtomicBool::new(false),
            near: Script::new(NEAR),
        });
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(update_loop(Arc::clone(&shared), rx));
        tokio::spawn(subscribe_loop(Arc::clone(&shared), client, pipeline));
        Ok(Self { shared, queue })
    }

    /// Queues positions for the store; drops them (counted) when the queue
    /// is full. Never blocks.
    pub fn observe(&self, positions: Vec<Position>) {
        let n = positions.len();
        let s = &self.shared;
        let queued = s.queued.fetch_add(n, Ordering::AcqRel);
        if queued + n > s.options.max_queued {
            s.queued.fetch_sub(n, Ordering::AcqRel);
            s.metrics
                .store_updates_dropped
                .with_label_values(&["queue_full"])
                .inc_by(n as u64);
            return;
        }
        s.metrics.store_queued_positions.add(n as i64);
        if self.queue.send(positions).is_err() {
            // The update task is gone (the runtime is stopping).
            s.queued.fetch_sub(n, Ordering::AcqRel);
            s.metrics.store_queued_positions.sub(n as i64);
        }
    }

    /// The latest position of a courier.
    pub async fn latest(&self, courier_id: &str) -> Result<Option<StoredPosition>, StoreError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(s.keys.position(courier_id)).arg("p");
        let json: Option<String> = s.call("latest", cmd.query_async(&mut conn)).await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    /// The couriers within the radius, nearest first.
    pub async fn near(&self, q: NearQuery) -> Result<Vec<NearbyCourier>, StoreError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let mut invocation = s.near.prepare_invoke();
        invocation
            .key(&s.keys.geo)
            .key(&s.keys.seen)
            .arg(q.lon)
            .arg(q.lat)
            .arg(q.radius_m)
            .arg(q.limit)
            .arg(&s.keys.prefix);
        let hits: Vec<(String, String, String)> =
            s.call("near", invocation.invoke_async(&mut conn)).await?;
        let now = Utc::now();
        hits.iter()
            .map(|(_, distance, json)| {
                let p: StoredPosition =
                    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let d: f64 = distance
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("distance {distance}")))?;
                Ok(NearbyCourier::new(&p, d, now))
            })
            .collect()
    }

    /// Erases a courier: its position hash and its geo and last-seen entries,
    /// in one transaction. Whether anything was there.
    pub async fn erase(&self, courier_id: &str) -> Result<bool, StoreError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(s.keys.position(courier_id))
            .zrem(&s.keys.geo, courier_id)
            .zrem(&s.keys.seen, courier_id);
        let (pos, geo, seen): (i64, i64, i64) =
            s.call("erase", pipe.query_async(&mut conn)).await?;
        Ok(pos + geo + seen > 0)
    }

    /// Keeps a tracking link until its `expires_at`.
    pub async fn put_link(&self, link_id: &str, record: &LinkRecord) -> Result<(), StoreError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(s.keys.link(link_id))
            .arg(json)
            .arg("PXAT")
            .arg(record.expires_at.timestamp_millis());
        s.call("link_put", cmd.query_async::<()>(&mut conn)).await
    }

    /// A tracking link, while it is active.
    pub async fn get_link(&self, link_id: &str) -> Result<Option<LinkRecord>, StoreError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(s.keys.link(link_id));
        let json: Option<String> = s.call("link_get", cmd.query_async(&mut conn)).await?;
        let record = json
            .map(|j| {
                serde_json::from_str::<LinkRecord>(&j)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()?;
        Ok(record.filter(|r| r.active_at(Utc::now())))
    }

    /// Ends a tracking link; whether one was there.
    pub async fn delete_link(&self, link_id: &str) -> Result<bool, StoreError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(s.keys.link(link_id));
        let n: i64 = s.call("link_delete", cmd.query_async(&mut conn)).await?;
        Ok(n > 0)
    }

    /// Whether the live feed subscription is up.
    pub fn subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::Acquire)
    }

    /// A plain connection to the store for other routes (tracking links).
    pub fn connection(&self) -> ConnectionManager {
        self.shared.conn.clone()
    }

    /// The configured key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.shared.options.key_prefix
    }
}

impl Shared {
    /// Runs one call with the timeout, counting errors and the store's state.
    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.options.timeout, fut).await {
            Ok(Ok(v)) => {
                self.metrics.store_up.set(1);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(op, &e.to_string());
                Err(StoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.failed(op, "timed out");
                Err(StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.options.timeout.as_millis()
                )))
            }
        }
    }

    fn failed(&self, op: &'static str, error: &str) {
        self.metrics.store_errors.with_label_values(&[op]).inc();
        if self.metrics.store_up.get() != 0 {
            tracing::warn!(op, error, "position store call failed");
        }
        self.metrics.store_up.set(0);
    }
}

/// Drains the queue into the update script, one call at a time.
async fn update_loop(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Vec<Position>>) {
    let script = Script::new(UPDATE);
    let mut conn = s.conn.clone();
    let ttl_ms = s.options.ttl.as_millis().max(1) as u64;
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let n = batch.len();
        s.queued.fetch_sub(n, Ordering::AcqRel);
        s.metrics.store_queued_positions.sub(n as i64);
        let mut frames = Vec::with_capacity(n * 160);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&s.keys.geo)
            .key(&s.keys.seen)
            .arg(ttl_ms)
            .arg(Utc::now().timestamp_millis())
            .arg(&s.keys.channel);
        for p in &batch {
            frames.extend_from_slice(&frame(p));
        }
        invocation.arg(frames).arg(MAX_GEO_LAT).arg(PRUNE);
        for p in &batch {
            let stored = StoredPosition::from(p);
            let json = serde_json::to_string(&stored).unwrap_or_default();
            invocation
                .key(s.keys.position(p.courier_id.as_str()))
                .arg(p.courier_id.as_str())
                .arg(p.recorded_at.timestamp_micros())
                .arg(p.lon.get())
                .arg(p.lat.get())
                .arg(json);
        }
        match s
            .call("update", invocation.invoke_async::<i64>(&mut conn))
            .await
        {
            Ok(updated) => {
                s.metrics.store_updates.inc_by(updated.max(0) as u64);
                s.metrics
                    .store_updates_stale
                    .inc_by((n as u64).saturating_sub(updated.max(0) as u64));
            }
            Err(_) => {
                s.metrics
                    .store_updates_dropped
                    .with_label_values(&["store_error"])
                    .inc_by(n as u64);
            }
        }
    }
}

/// Keeps a subscription to the live channel and relays its frames to this
/// task's viewers; reconnects with backoff when it drops.
async fn subscribe_loop(s: Arc<Shared>, client: Client, pipeline: Arc<Pipeline>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if pipeline.is_shutting_down() {
            return;
        }
        let connected = tokio::time::timeout(s.options.timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&s.keys.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match connected {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                s.subscribed.store(true, Ordering::Release);
                tracing::info!(channel = %s.keys.channel, "subscribed to the shared live feed");
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    pipeline.live().publish_frames(msg.get_payload_bytes());
                }
                s.subscribed.store(false, Ordering::Release);
                s.metrics
                    .store_errors
                    .with_label_values(&["subscribe"])
                    .inc();
                tracing::warn!("the shared live feed subscription ended; reconnecting");
            }
            Ok(Err(e)) => {
                s.metrics
                    .store_errors
                    .with_label_values(&["subscribe"])
                    .inc();
                tracing::debug!(error = %e, "cannot subscribe to the shared live feed");
            }
            Err(_) => {
                s.metrics
                    .store_errors
                    .with_label_values(&["subscribe"])
                    .inc();
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
