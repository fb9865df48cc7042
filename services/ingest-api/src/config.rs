//! Settings: built-in defaults, then an optional TOML file (`--config`), then
//! environment variables (`INGEST_*`), then command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use courier_model::avro::Codec;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Which stream the service writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// The embedded, file-backed stream in `--data-dir`.
    Local,
    /// An Amazon Kinesis data stream (standard AWS configuration chain).
    Kinesis,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for CloudWatch and other collectors).
    Json,
}

/// Every setting of `ingest-api serve`, with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// HTTP worker threads (0: one per CPU).
    pub http_workers: usize,
    /// Threads of the write pipeline's actors: batchers, writers, trackers
    /// (0: half the CPUs, at least one).
    pub actor_threads: usize,
    /// HTTP keep-alive: an idle client connection is closed after this many
    /// seconds (0: no keep-alive). Keep it above a load balancer's idle
    /// timeout (AWS ALB: 60 s), so the balancer, not the service, closes
    /// idle connections and never sends a request on a closing one.
    pub keep_alive_secs: u64,
    /// Stream sink.
    pub sink: SinkKind,
    /// Directory of the local stream.
    pub data_dir: PathBuf,
    /// Stream name (Kinesis stream, or directory of the local stream).
    pub stream_name: String,
    /// Shards of the local stream when it is created.
    pub local_shards: usize,
    /// Local stream: roll a segment at this size.
    pub local_segment_bytes: u64,
    /// Local stream: disk cap in bytes (0: none). Segments the compactor
    /// committed past are deleted by the compactor; over the cap, the oldest
    /// unread ones are deleted too (data loss: an error log and a metric).
    pub local_max_bytes: u64,
    /// File of API keys, one `NAME:SHA256_HEX[:REQUESTS_PER_SECOND]` per line.
    pub api_keys_file: Option<PathBuf>,
    /// API keys inline, same format, lines separated by newlines or commas
    /// (for secrets injected as environment variables).
    pub api_keys: Option<String>,
    /// Dispatch API keys (same format as `api_keys`): the only credentials
    /// that create and revoke customer tracking links. None: no one can.
    pub dispatch_api_keys: Option<String>,
    /// Longest lifetime of a customer tracking link, seconds.
    pub tracking_link_max_secs: u64,
    /// Positions per request at most.
    pub max_batch_positions: usize,
    /// Request body size limit in bytes.
    pub max_body_bytes: usize,
    /// How far `recorded_at` may be in the future, seconds.
    pub max_future_secs: u64,
    /// How old `recorded_at` may be, seconds.
    pub max_age_secs: u64,
    /// Stream record: flush after this many bytes of encoded positions.
    pub record_max_bytes: usize,
    /// Stream record: flush after this many positions.
    pub record_max_positions: usize,
    /// Optional extra wait: hold a stream record this long after its first
    /// position even when no write of its shard is in flight, milliseconds
    /// (0: off; records go out as soon as the shard's previous write
    /// returned, a group commit).
    pub linger_ms: u64,
    /// Kinesis only: bytes per second each batcher keeps its shard within
    /// (0: no pacing). Divide the shard limit (1 MiB/s) among the tasks.
    pub kinesis_shard_bytes_per_sec: u64,
    /// Kinesis only: records per second each batcher keeps its shard within
    /// (0: no pacing). Divide the shard limit (1000/s) among the tasks.
    pub kinesis_shard_records_per_sec: u64,
    /// Block compression of stream records.
    pub codec: Codec,
    /// Writer actors.
    pub writers: usize,
    /// Concurrent `PutRecords` calls per writer.
    pub writer_concurrency: usize,
    /// Positions accepted but not yet durable, at most (then 503).
    pub max_inflight_positions: usize,
    /// Encoded bytes accepted but not yet durable, at most (then 503).
    pub max_inflight_bytes: usize,
    /// How long a request waits for its positions to be durable before 503, ms.
    pub write_timeout_ms: u64,
    /// First retry delay of failed entries, ms (exponential with full jitter).
    pub retry_base_ms: u64,
    /// Largest retry delay, ms.
    pub retry_max_ms: u64,
    /// Timeout of one Kinesis call, ms.
    pub kinesis_call_timeout_ms: u64,
    /// How often the shard map and stream health are refreshed, seconds.
    pub refresh_secs: u64,
    /// Grace period for draining on SIGTERM, seconds (ECS waits 30 by default).
    pub shutdown_grace_secs: u64,
    /// Latest-position tracker actors.
    pub tracker_shards: usize,
    /// Forget a courier's latest position after this many seconds without news.
    pub tracker_ttl_secs: u64,
    /// Couriers whose latest position is held, at most, over all tracker
    /// shards; beyond it, the courier silent longest is forgotten.
    pub tracker_max_couriers: usize,
    /// Live stream (`GET /v1/positions/stream`): events kept for a slow
    /// viewer before it skips ahead.
    pub stream_buffer: usize,
    /// The shared position store: a Redis / Valkey URL (`redis://` or
    /// `rediss://` for TLS). None: the embedded store of this process.
    pub redis_url: Option<String>,
    /// AUTH password of the store (the ElastiCache auth token).
    pub redis_password: Option<String>,
    /// Prefix of every key and channel the service uses in the store.
    pub redis_key_prefix: String,
    /// Timeout of one store call and of a connection attempt, ms.
    pub redis_timeout_ms: u64,
    /// Positions queued for the shared store at most; beyond, updates are
    /// dropped (counted).
    pub store_queue_positions: usize,
    /// Directory holding the npm packages the pages use (`leaflet/dist/`
    /// inside it), served under `/assets/`; filled by
    /// `scripts/web-assets.sh`. Needed only with `map_tile_url`.
    pub assets_dir: PathBuf,
    /// Tile source of the maps: an OpenStreetMap-style URL template
    /// (`https://tile.openstreetmap.org/{z}/{x}/{y}.png`); the pages' CSP
    /// allows its host for images and nothing else external. None: the maps
    /// draw a lat/lon grid and load nothing from elsewhere.
    pub map_tile_url: Option<String>,
    /// Attribution shown under the tiles (plain text).
    pub map_tile_attribution: String,
    /// Largest zoom level the tile source serves.
    pub map_tile_max_zoom: u8,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http_workers: 0,
            actor_threads: 0,
            keep_alive_secs: 75,
            sink: SinkKind::Local,
            data_dir: PathBuf::from("data"),
            stream_name: "courier-positions".into(),
            local_shards: 4,
            local_segment_bytes: 64 * 1024 * 1024,
            local_max_bytes: 0,
            api_keys_file: None,
            api_keys: None,
            dispatch_api_keys: None,
            tracking_link_max_secs: 12 * 3600,
            max_batch_positions: 1000,
            max_body_bytes: 1024 * 1024,
            max_future_secs: 5 * 60,
            max_age_secs: 7 * 24 * 3600,
            record_max_bytes: 512 * 1024,
            record_max_positions: 5000,
            linger_ms: 0,
            kinesis_shard_bytes_per_sec: 1024 * 1024,
            kinesis_shard_records_per_sec: 1000,
            codec: Codec::Zstandard,
            writers: 2,
            writer_concurrency: 4,
            max_inflight_positions: 200_000,
            max_inflight_bytes: 64 * 1024 * 1024,
            write_timeout_ms: 5000,
            retry_base_ms: 50,
            retry_max_ms: 2000,
            kinesis_call_timeout_ms: 2000,
            refresh_secs: 5,
            shutdown_grace_secs: 25,
            tracker_shards: 4,
            tracker_ttl_secs: 24 * 3600,
            tracker_max_couriers: 500_000,
            stream_buffer: 4096,
            redis_url: None,
            redis_password: None,
            redis_key_prefix: "courier:".into(),
            redis_timeout_ms: 500,
            store_queue_positions: 100_000,
            assets_dir: PathBuf::from("services/ingest-api/web/node_modules"),
            map_tile_url: None,
            map_tile_attribution: "© OpenStreetMap contributors".into(),
            map_tile_max_zoom: 19,
            log_format: LogFormat::Text,
        }
    }
}

/// A setting outside its allowed range.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or a value could not be read.
    #[error("cannot load settings: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value breaks a rule.
    #[error("setting {name} {rule}")]
    Invalid {
        /// Setting name.
        name: &'static str,
        /// The rule.
        rule: String,
    },
}

impl Settings {
    /// Checks ranges and the Kinesis hard limits.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let max_record = courier_stream::limits::MAX_RECORD_BYTES - 4096;
        let checks: [(&'static str, bool, String); 15] = [
            (
                "max_batch_positions",
                self.max_batch_positions >= 1,
                "must be at least 1".into(),
            ),
            (
                "max_body_bytes",
                self.max_body_bytes >= 1024,
                "must be at least 1024".into(),
            ),
            (
                "record_max_bytes",
                (1024..=max_record).contains(&self.record_max_bytes),
                format!(
                    "must be between 1024 and {max_record} (a Kinesis record holds 1 MiB with its header)"
                ),
            ),
            (
                "record_max_positions",
                self.record_max_positions >= 1,
                "must be at least 1".into(),
            ),
            ("writers", self.writers >= 1, "must be at least 1".into()),
            (
                "writer_concurrency",
                self.writer_concurrency >= 1,
                "must be at least 1".into(),
            ),
            (
                "local_shards",
                (1..=1024).contains(&self.local_shards),
                "must be between 1 and 1024".into(),
            ),
            (
                "actor_threads",
                self.actor_threads <= 256,
                "must be at most 256 (0: half the CPUs)".into(),
            ),
            (
                "tracker_shards",
                self.tracker_shards >= 1,
                "must be at least 1".into(),
            ),
            (
                "tracker_max_couriers",
                self.tracker_max_couriers >= 1,
                "must be at least 1".into(),
            ),
            (
                "write_timeout_ms",
                self.write_timeout_ms >= 100,
                "must be at least 100".into(),
            ),
            (
                "stream_buffer",
                (1..=1 << 20).contains(&self.stream_buffer),
                "must be between 1 and 1048576".into(),
            ),
            (
                "redis_timeout_ms",
                (10..=60_000).contains(&self.redis_timeout_ms),
                "must be between 10 and 60000".into(),
            ),
            (
                "tracking_link_max_secs",
                (60..=7 * 24 * 3600).contains(&self.tracking_link_max_secs),
                "must be between 60 and 604800".into(),
            ),
            (
                "store_queue_positions",
                self.store_queue_positions >= self.max_batch_positions,
                "must be at least max_batch_positions".into(),
            ),
        ];
        for (name, ok, rule) in checks {
            if !ok {
                return Err(SettingsError::Invalid { name, rule });
            }
        }
        if let Some(template) = &self.map_tile_url {
            crate::web::tile_origin(template).map_err(|e| SettingsError::Invalid {
                name: "map_tile_url",
                rule: e
                    .to_string()
                    .trim_start_matches("setting map_tile_url ")
                    .to_owned(),
            })?;
        }
        if !(1..=22).contains(&self.map_tile_max_zoom) {
            return Err(SettingsError::Invalid {
                name: "map_tile_max_zoom",
                rule: "must be between 1 and 22".into(),
            });
        }
        if self.max_inflight_positions < self.max_batch_positions {
            return Err(SettingsError::Invalid {
                name: "max_inflight_positions",
                rule: "must be at least max_batch_positions".into(),
            });
        }
        Ok(())
    }

    /// The linger time.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    /// The per-shard pacing of the batchers: the Kinesis limits set, on the
    /// Kinesis sink only (the local stream has no shard limits).
    pub fn shard_pacing(&self) -> Option<crate::pipeline::batcher::ShardRate> {
        (self.sink == SinkKind::Kinesis
            && self.kinesis_shard_bytes_per_sec > 0
            && self.kinesis_shard_records_per_sec > 0)
            .then_some(crate::pipeline::batcher::ShardRate {
                bytes_per_sec: self.kinesis_shard_bytes_per_sec,
                records_per_sec: self.kinesis_shard_records_per_sec,
            })
    }

    /// The write deadline of a request.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// The HTTP keep-alive of idle connections.
    pub fn keep_alive(&self) -> actix_web::http::KeepAlive {
        match self.keep_alive_secs {
            0 => actix_web::http::KeepAlive::Disabled,
            secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
        }
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Courier position ingestion API: validates GPS positions, encodes them as
/// Avro and answers 202 once they are durably in the stream (Kinesis, or an
/// embedded file-backed stream).
#[derive(Debug, Parser)]
#[command(name = "ingest-api", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeArgs>),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Decode the whole local stream and print its counts as JSON (records,
    /// positions, distinct event ids, undecodable records, per shard).
    StreamStats {
        /// Data directory of the local stream.
        #[arg(long, env = "INGEST_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Stream name.
        #[arg(long, env = "INGEST_STREAM_NAME", default_value = "courier-positions")]
        stream_name: String,
    },
}

/// `ingest-api keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random token (give it to the client) and the line to add
    /// to the API keys file (it holds only the token's SHA-256).
    Create {
        /// A name for the key, 1-64 characters of [A-Za-z0-9_-].
        name: String,
        /// Requests per second allowed for this key (omit: unlimited).
        #[arg(long)]
        rps: Option<f64>,
    },
}

/// Flags of `ingest-api serve`. Each is also read from the environment
/// variable shown, and overrides the settings file, which overrides the
/// defaults.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct ServeArgs {
    /// TOML settings file (keys as in the README's configuration table).
    #[arg(long, env = "INGEST_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "INGEST_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// HTTP worker threads, 0 for one per CPU [default: 0].
    #[arg(long, env = "INGEST_HTTP_WORKERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_workers: Option<usize>,
    /// Threads of the pipeline's actors (batchers, writers, trackers), 0 for
    /// half the CPUs and at least one [default: 0].
    #[arg(long, env = "INGEST_ACTOR_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_threads: Option<usize>,
    /// Seconds an idle keep-alive connection stays open, 0 for none;
    /// keep it above the load balancer's idle timeout (ALB: 60) [default: 75].
    #[arg(long, env = "INGEST_KEEP_ALIVE_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_secs: Option<u64>,
    /// Stream sink [default: local].
    #[arg(long, env = "INGEST_SINK", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkKind>,
    /// Data directory of the local stream [default: data].
    #[arg(long, env = "INGEST_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Stream name [default: courier-positions].
    #[arg(long, env = "INGEST_STREAM_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// Shards of a new local stream [default: 4].
    #[arg(long, env = "INGEST_LOCAL_SHARDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_shards: Option<usize>,
    /// Local stream segment size in bytes [default: 67108864].
    #[arg(long, env = "INGEST_LOCAL_SEGMENT_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_segment_bytes: Option<u64>,
    /// Local stream disk cap in bytes, 0 for none [default: 0]. Unread
    /// segments are deleted only over it (data loss, logged and counted).
    #[arg(long, env = "INGEST_LOCAL_MAX_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_max_bytes: Option<u64>,
    /// API keys file: lines `NAME:SHA256_HEX[:REQUESTS_PER_SECOND]`.
    #[arg(long, env = "INGEST_API_KEYS_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys inline (same format; newline- or comma-separated).
    #[arg(long, env = "INGEST_API_KEYS", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<String>,
    /// Dispatch API keys (same format as --api-keys): they alone create and
    /// revoke customer tracking links [default: none, no one can].
    #[arg(long, env = "INGEST_DISPATCH_API_KEYS", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch_api_keys: Option<String>,
    /// Longest lifetime of a customer tracking link in seconds [default: 43200].
    #[arg(long, env = "INGEST_TRACKING_LINK_MAX_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_link_max_secs: Option<u64>,
    /// Positions per request at most [default: 1000].
    #[arg(long, env = "INGEST_MAX_BATCH_POSITIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_positions: Option<usize>,
    /// Request body limit in bytes [default: 1048576].
    #[arg(long, env = "INGEST_MAX_BODY_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Seconds `recorded_at` may be ahead of the server [default: 300].
    #[arg(long, env = "INGEST_MAX_FUTURE_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_future_secs: Option<u64>,
    /// Seconds `recorded_at` may be behind the server [default: 604800].
    #[arg(long, env = "INGEST_MAX_AGE_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// Flush a stream record at this many encoded bytes [default: 524288].
    #[arg(long, env = "INGEST_RECORD_MAX_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_max_bytes: Option<usize>,
    /// Flush a stream record at this many positions [default: 5000].
    #[arg(long, env = "INGEST_RECORD_MAX_POSITIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_max_positions: Option<usize>,
    /// Hold a stream record this many ms after its first position even when
    /// no write of its shard is in flight (larger records, more latency); 0:
    /// off, records go as soon as the shard's previous write returned [default: 0].
    #[arg(long, env = "INGEST_LINGER_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linger_ms: Option<u64>,
    /// Kinesis: bytes per second a shard's batcher stays within; 0: no pacing [default: 1048576].
    #[arg(long, env = "INGEST_KINESIS_SHARD_BYTES_PER_SEC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinesis_shard_bytes_per_sec: Option<u64>,
    /// Kinesis: records per second a shard's batcher stays within; 0: no pacing [default: 1000].
    #[arg(long, env = "INGEST_KINESIS_SHARD_RECORDS_PER_SEC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinesis_shard_records_per_sec: Option<u64>,
    /// Record compression: null, snappy or zstandard [default: zstandard].
    #[arg(long, env = "INGEST_CODEC", value_parser = parse_codec)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<Codec>,
    /// Writer actors [default: 2].
    #[arg(long, env = "INGEST_WRITERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writers: Option<usize>,
    /// Concurrent PutRecords calls per writer [default: 4].
    #[arg(long, env = "INGEST_WRITER_CONCURRENCY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_concurrency: Option<usize>,
    /// Positions accepted but not yet durable, at most; beyond it, 503 [default: 200000].
    #[arg(long, env = "INGEST_MAX_INFLIGHT_POSITIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inflight_positions: Option<usize>,
    /// Encoded bytes accepted but not yet durable, at most [default: 67108864].
    #[arg(long, env = "INGEST_MAX_INFLIGHT_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inflight_bytes: Option<usize>,
    /// Milliseconds a request waits for durability before 503 [default: 5000].
    #[arg(long, env = "INGEST_WRITE_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout_ms: Option<u64>,
    /// First retry delay in ms [default: 50].
    #[arg(long, env = "INGEST_RETRY_BASE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_base_ms: Option<u64>,
    /// Largest retry delay in ms [default: 2000].
    #[arg(long, env = "INGEST_RETRY_MAX_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_ms: Option<u64>,
    /// Timeout of one Kinesis call in ms [default: 2000].
    #[arg(long, env = "INGEST_KINESIS_CALL_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinesis_call_timeout_ms: Option<u64>,
    /// Seconds between shard-map and health refreshes [default: 5].
    #[arg(long, env = "INGEST_REFRESH_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_secs: Option<u64>,
    /// Seconds to drain on SIGTERM before exiting [default: 25].
    #[arg(long, env = "INGEST_SHUTDOWN_GRACE_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// Latest-position tracker actors [default: 4].
    #[arg(long, env = "INGEST_TRACKER_SHARDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_shards: Option<usize>,
    /// Seconds after which a silent courier's latest position is forgotten [default: 86400].
    #[arg(long, env = "INGEST_TRACKER_TTL_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_ttl_secs: Option<u64>,
    /// Couriers whose latest position is held, at most; beyond it the one
    /// silent longest is forgotten [default: 500000].
    #[arg(long, env = "INGEST_TRACKER_MAX_COURIERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_max_couriers: Option<usize>,
    /// Live stream events kept for a slow viewer before it skips ahead [default: 4096].
    #[arg(long, env = "INGEST_STREAM_BUFFER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_buffer: Option<usize>,
    /// Shared position store: redis:// or rediss:// URL; unset, each task
    /// keeps its own [default: none].
    #[arg(long, env = "INGEST_REDIS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// AUTH password of the shared store (ElastiCache auth token).
    #[arg(long, env = "INGEST_REDIS_PASSWORD", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password: Option<String>,
    /// Prefix of the keys and channel in the shared store [default: courier:].
    #[arg(long, env = "INGEST_REDIS_KEY_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_key_prefix: Option<String>,
    /// Timeout of one shared store call in ms [default: 500].
    #[arg(long, env = "INGEST_REDIS_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_timeout_ms: Option<u64>,
    /// Positions queued for the shared store at most; beyond, updates are
    /// dropped and counted [default: 100000].
    #[arg(long, env = "INGEST_STORE_QUEUE_POSITIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_queue_positions: Option<usize>,
    /// Directory of the npm packages the map pages use (leaflet/dist inside),
    /// served under /assets/; filled by scripts/web-assets.sh
    /// [default: services/ingest-api/web/node_modules].
    #[arg(long, env = "INGEST_ASSETS_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assets_dir: Option<PathBuf>,
    /// Map tile source, an OpenStreetMap-style URL template such as
    /// https://tile.openstreetmap.org/{z}/{x}/{y}.png; the pages' CSP allows
    /// its host for images [default: none, the maps draw an offline grid].
    #[arg(long, env = "INGEST_MAP_TILE_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_tile_url: Option<String>,
    /// Attribution shown under the tiles, plain text [default: © OpenStreetMap contributors].
    #[arg(long, env = "INGEST_MAP_TILE_ATTRIBUTION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_tile_attribution: Option<String>,
    /// Largest zoom level of the tile source, 1-22 [default: 19].
    #[arg(long, env = "INGEST_MAP_TILE_MAX_ZOOM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_tile_max_zoom: Option<u8>,
    /// Log format: text or json [default: text]. Levels: RUST_LOG (default info).
    #[arg(long, env = "INGEST_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    s.parse()
}

impl ServeArgs {
    /// Defaults, then the settings file, then these flags and variables.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &self.config {
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: Settings = figment
            .merge(Serialized::defaults(self))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn defaults_are_valid() {
        let settings = ServeArgs::default().settings().expect("defaults");
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let mut file = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(
            file,
            "linger_ms = 7\nstream_name = \"from-file\"\ncodec = \"snappy\""
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(file.path().to_path_buf()),
            stream_name: Some("from-flag".into()),
            ..ServeArgs::default()
        };
        let settings = args.settings().expect("settings");
        assert_eq!(settings.linger_ms, 7);
        assert_eq!(settings.codec, Codec::Snappy);
        assert_eq!(settings.stream_name, "from-flag");
        assert_eq!(settings.max_batch_positions, 1000);
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let mut file = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(file, "lingr_ms = 7").expect("write");
        let args = ServeArgs {
            config: Some(file.path().to_path_buf()),
            ..ServeArgs::default()
        };
        let err = args.settings().unwrap_err().to_string();
        assert!(err.contains("lingr_ms"), "{err}");
    }

    #[test]
    fn actor_threads_beyond_256_are_refused() {
        let args = ServeArgs {
            actor_threads: Some(300),
            ..ServeArgs::default()
        };
        let err = args.settings().unwrap_err().to_string();
        assert!(err.contains("actor_threads"), "{err}");
    }

    #[test]
    fn a_record_size_over_the_kinesis_limit_is_refused() {
        let args = ServeArgs {
            record_max_bytes: Some(2 * 1024 * 1024),
            ..ServeArgs::default()
        };
        let err = args.settings().unwrap_err().to_string();
        assert!(err.contains("record_max_bytes"), "{err}");
    }
}

#[cfg(test)]
mod documentation {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of `serve` and its environment variable is in the README's
    /// configuration table, so the README cannot drift from `--help`.
    #[test]
    fn every_serve_flag_is_documented_in_the_readme() {
        let readme = include_str!("../../../README.md");
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve subcommand");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            assert!(
                readme.contains(&format!("`--{long}`")),
                "README misses --{long}"
            );
            let env = arg
                .get_env()
                .and_then(|e| e.to_str())
                .unwrap_or_else(|| panic!("--{long} has no environment variable"));
            assert!(readme.contains(&format!("`{env}`")), "README misses {env}");
        }
    }
}
