//! The stream abstraction: a sink that puts records on shards, and the shard
//! map that says which shard owns which part of the 128-bit hash-key space.
//!
//! Two implementations share one contract, so producers and the compactor do
//! not care which one they talk to:
//! - [`kinesis::KinesisStream`]: an Amazon Kinesis data stream through
//!   `aws-sdk-kinesis` (any endpoint the standard AWS configuration chain
//!   names, for example `AWS_ENDPOINT_URL`);
//! - [`local::LocalStream`]: an append-only, fsync'd, file-backed stream in a
//!   data directory, with shards and increasing sequence numbers.

pub mod kinesis;
pub mod local;

mod backoff;
pub use backoff::Backoff;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use md5::{Digest, Md5};

/// A boxed, sendable future, for the object-safe [`StreamSink`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Kinesis limits a producer must respect.
pub mod limits {
    /// Records per `PutRecords` call.
    pub const MAX_RECORDS_PER_PUT: usize = 500;
    /// Bytes (data plus partition keys) per `PutRecords` call.
    pub const MAX_BYTES_PER_PUT: usize = 5 * 1024 * 1024;
    /// Bytes (data plus partition key) per record.
    pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
    /// Bytes of one PUT payload unit, the unit Kinesis bills puts in.
    pub const PUT_PAYLOAD_UNIT: usize = 25 * 1024;
}

/// The MD5 hash of a partition key as a 128-bit integer: the hash key Kinesis
/// uses to map a record to a shard.
pub fn partition_hash(key: &str) -> u128 {
    let digest = Md5::digest(key.as_bytes());
    u128::from_be_bytes(digest.into())
}

/// One open shard and the hash keys it owns (inclusive range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    /// The shard id, for example `shardId-000000000000`.
    pub shard_id: String,
    /// First hash key owned.
    pub start_hash: u128,
    /// Last hash key owned.
    pub end_hash: u128,
}

/// The open shards of a stream, sorted by hash range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    shards: Vec<ShardRange>,
}

impl ShardMap {
    /// A map from open shards. Fails unless the ranges cover the whole
    /// hash-key space without gaps or overlaps.
    pub fn new(mut shards: Vec<ShardRange>) -> Result<Self, StreamError> {
        shards.sort_by_key(|s| s.start_hash);
        let mut expected = 0u128;
        for (i, shard) in shards.iter().enumerate() {
            if shard.start_hash != expected || shard.end_hash < shard.start_hash {
                return Err(StreamError::InvalidShardMap(format!(
                    "open shards do not tile the hash-key space at {} (shard {})",
                    expected, shard.shard_id
                )));
            }
            if shard.end_hash == u128::MAX {
                if i + 1 != shards.len() {
                    return Err(StreamError::InvalidShardMap(
                        "a shard after the end of the hash-key space".into(),
                    ));
                }
            } else {
                expected = shard.end_hash + 1;
            }
        }
        if shards.last().map(|s| s.end_hash) != Some(u128::MAX) {
            return Err(StreamError::InvalidShardMap(
                "open shards do not reach the end of the hash-key space".into(),
            ));
        }
        Ok(Self { shards })
    }

    /// `n` shards splitting the hash-key space evenly, as `CreateStream` does.
    pub fn even(n: usize) -> Self {
        let n = n.max(1);
        let step = u128::MAX / n as u128;
        let shards = (0..n)
            .map(|i| ShardRange {
                shard_id: shard_id_for_index(i),
                start_hash: step * i as u128,
                end_hash: if i + 1 == n {
                    u128::MAX
                } else {
                    step * (i as u128 + 1) - 1
                },
            })
            .collect();
        Self { shards }
    }

    /// The open shards, sorted by their hash range.
    pub fn shards(&self) -> &[ShardRange] {
        &self.shards
    }

    /// Number of open shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: a valid map has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Index (into [`Self::shards`]) of the shard owning `hash`.
    pub fn index_for_hash(&self, hash: u128) -> usize {
        self.shards
            .partition_point(|s| s.end_hash < hash)
            .min(self.shards.len() - 1)
    }

    /// Index of the shard that a record with this partition key lands on.
    pub fn index_for_key(&self, partition_key: &str) -> usize {
        self.index_for_hash(partition_hash(partition_key))
    }
}

/// Kinesis-style shard id for a shard index.
pub fn shard_id_for_index(index: usize) -> String {
    format!("shardId-{index:012}")
}

/// A record to put on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// The partition key (Kinesis hashes it when no explicit hash key is set).
    pub partition_key: String,
    /// A hash key that pins the record to the shard owning it.
    pub explicit_hash_key: Option<u128>,
    /// The record's bytes.
    pub data: Bytes,
}

impl OutRecord {
    /// The hash key that decides the record's shard.
    pub fn hash_key(&self) -> u128 {
        self.explicit_hash_key
            .unwrap_or_else(|| partition_hash(&self.partition_key))
    }

    /// Bytes this record counts for against the Kinesis limits.
    pub fn billed_len(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// What happened to one record of a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Durably written.
    Written {
        /// Shard the record landed on.
        shard_id: String,
        /// Its sequence number (decimal text; compare as integers).
        sequence_number: String,
    },
    /// Not written; may be retried.
    Failed {
        /// The service's error code, for example
        /// `ProvisionedThroughputExceededException`.
        code: String,
        /// The service's message.
        message: String,
    },
}

impl PutOutcome {
    /// Whether the failure is the shard's throughput limit.
    pub fn is_throttled(&self) -> bool {
        matches!(self, Self::Failed { code, .. } if code == "ProvisionedThroughputExceededException")
    }
}

/// Errors of stream operations.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A file operation of the local stream failed.
    #[error("local stream: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The local stream's files are damaged in a way a torn tail cannot explain.
    #[error("local stream is corrupt: {0}")]
    Corrupt(String),
    /// The local stream is already open for writing by another process.
    #[error(
        "local stream {0} is locked by another writer (is another ingest-api running on the same data directory?)"
    )]
    Locked(String),
    /// A Kinesis API call failed as a whole.
    #[error("kinesis {operation} failed: {message}")]
    Kinesis {
        /// The API operation.
        operation: &'static str,
        /// The service's or client's message.
        message: String,
        /// Whether the error is the stream's throughput limit.
        throttled: bool,
    },
    /// The stream does not exist or is not active.
    #[error("stream {name} is not usable: {reason}")]
    NotUsable {
        /// Stream name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The shards' hash ranges are inconsistent.
    #[error("invalid shard map: {0}")]
    InvalidShardMap(String),
    /// Records a consumer has not read are gone from the stream (deleted over
    /// the disk cap, or expired past the retention).
    #[error(
        "records {first_missing} to {last_missing} of shard {shard_id} are gone before they were read ({count} records lost); run with --accept-data-loss to go on without them"
    )]
    Lost {
        /// The shard.
        shard_id: String,
        /// The first missing sequence number.
        first_missing: u64,
        /// The last missing sequence number.
        last_missing: u64,
        /// How many records are missing.
        count: u64,
    },
}

impl StreamError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the sink's state is unknown after this error, so the writer
    /// must be restarted and the sink reset (re-opened) before it is used
    /// again. A local I/O error leaves a file in an unknown state; a failed
    /// network call does not.
    pub fn needs_reset(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::Corrupt(_))
    }

    /// Whether the error is the stream's throughput limit.
    pub fn is_throttled(&self) -> bool {
        matches!(
            self,
            Self::Kinesis {
                throttled: true,
                ..
            }
        )
    }
}

/// A stream a producer puts records on.
pub trait StreamSink: Send + Sync + 'static {
    /// A short name for logs and metrics (`kinesis` or `local`).
    fn kind(&self) -> &'static str;

    /// The open shards and their hash ranges.
    fn shard_map(&self) -> BoxFuture<'_, Result<ShardMap, StreamError>>;

    /// Puts records; the outcomes are in the order of `records`. An `Err`
    /// means the call failed as a whole (nothing is known to be written).
    fn put_records(
        &self,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, StreamError>>;

    /// Whether the stream can take writes now.
    fn check_health(&self) -> BoxFuture<'_, Result<(), StreamError>>;

    /// Re-establishes the sink after an error for which
    /// [`StreamError::needs_reset`] holds.
    fn reset(&self) -> BoxFuture<'_, Result<(), StreamError>>;

    /// Unread segments deleted over a disk cap since the sink opened (each
    /// one is data loss; only the local stream has such a cap).
    fn segments_dropped(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_map_tiles_the_hash_space() {
        for n in [1, 2, 3, 4, 7, 64] {
            let map = ShardMap::even(n);
            assert_eq!(map.len(), n);
            ShardMap::new(map.shards().to_vec()).expect("tiles");
            assert_eq!(map.index_for_hash(0), 0);
            assert_eq!(map.index_for_hash(u128::MAX), n - 1);
        }
    }

    #[test]
    fn every_hash_lands_in_the_shard_that_owns_it() {
        let map = ShardMap::even(4);
        for key in ["a", "courier-1", "courier-2", "zzz", ""] {
            let hash = partition_hash(key);
            let shard = &map.shards()[map.index_for_key(key)];
            assert!(shard.start_hash <= hash && hash <= shard.end_hash, "{key}");
        }
    }

    #[test]
    fn a_map_with_a_gap_is_rejected() {
        let shards = vec![
            ShardRange {
                shard_id: "a".into(),
                start_hash: 0,
                end_hash: 10,
            },
            ShardRange {
                shard_id: "b".into(),
                start_hash: 12,
                end_hash: u128::MAX,
            },
        ];
        assert!(ShardMap::new(shards).is_err());
    }

    #[test]
    fn md5_matches_the_kinesis_definition() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(partition_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e_u128);
    }
}
