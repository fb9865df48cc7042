//! The stream a run reads: the local stream of ingest-api (the embedded
//! default) or a Kinesis data stream.
//!
//! A run reads each shard from its checkpoint up to the end *as of the run's
//! start*: for the local stream, the newest sequence number when the shard is
//! opened; for Kinesis, records whose approximate arrival time is before the
//! run started, until the shard is caught up (`MillisBehindLatest = 0` and no
//! records) or closed (no next iterator). A `--max-records` bound stops a
//! shard earlier.
//!
//! A replay (`--from`) opens each shard at a time instead of its checkpoint:
//! Kinesis `AT_TIMESTAMP`, or the local stream's first record that arrived at
//! or after it ([`LocalStreamReader::sequence_before_arrival`]).
//!
//! Resharding (Kinesis): [`order_shards`] puts every shard after its parents;
//! a child is read only once all of its parents present in the stream were
//! read to their end (in this run or an earlier one: a finished parent is
//! re-opened at its checkpoint, which costs one empty `GetRecords`). A
//! courier's positions therefore reach the table in order across a reshard.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use courier_stream::kinesis::{KinesisStream, THROTTLE_CODES, call_error};
use courier_stream::local::{LocalStreamReader, ShardCursor};
use courier_stream::{Backoff, StreamError};

use crate::{CompactorError, SequenceNumber};

/// Which stream to read.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// The local stream under this data directory.
    Local {
        /// ingest-api's `--data-dir`.
        data_dir: PathBuf,
    },
    /// A Kinesis data stream, through the standard AWS configuration chain.
    Kinesis,
    /// A Kinesis data stream, through this client (a caller's own settings).
    KinesisClient(Client),
}

/// One record of a shard.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Its sequence number.
    pub sequence_number: SequenceNumber,
    /// Its bytes (one Avro object container).
    pub data: Bytes,
}

/// A shard and its parents (Kinesis resharding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id.
    pub shard_id: String,
    /// Parent and adjacent parent, when the shard came from a reshard.
    pub parents: Vec<String>,
    /// Whether the shard is closed (it has an ending sequence number): it
    /// takes no more records, so reading it to its current end finishes it.
    pub closed: bool,
}

/// Orders shards so that every shard comes after its parents that are in the
/// list (a parent past the retention period is gone and not waited for).
pub fn order_shards(shards: Vec<ShardInfo>) -> Vec<ShardInfo> {
    let present: HashSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
    let mut placed: HashSet<String> = HashSet::new();
    let mut pending: Vec<ShardInfo> = shards;
    pending.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    let mut out = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let before = out.len();
        let mut rest = Vec::new();
        for shard in pending {
            let ready = shard
                .parents
                .iter()
                .all(|p| !present.contains(p) || placed.contains(p));
            if ready {
                placed.insert(shard.shard_id.clone());
                out.push(shard);
            } else {
                rest.push(shard);
            }
        }
        if out.len() == before {
            // A cycle cannot happen in Kinesis; keep every shard anyway.
            out.extend(rest);
            break;
        }
        pending = rest;
    }
    out
}

/// An opened stream.
pub enum Source {
    /// The local stream, and its name.
    Local(LocalStreamReader, String),
    /// Kinesis.
    Kinesis(KinesisSource),
}

/// Reading a Kinesis stream.
#[derive(Debug, Clone)]
pub struct KinesisSource {
    client: Client,
    stream: String,
}

fn stream_err(stream: &str) -> impl Fn(StreamError) -> CompactorError + '_ {
    move |source| CompactorError::Stream {
        stream: stream.to_owned(),
        source,
    }
}

/// Attempts of one call before the run fails.
const MAX_ATTEMPTS: u32 = 10;

/// Between attempts: 100 ms, doubling, at most 5 s (the stream crate's backoff).
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

impl Source {
    /// Opens the stream `name`.
    pub async fn open(config: &SourceConfig, name: &str) -> Result<Self, CompactorError> {
        match config {
            SourceConfig::Local { data_dir } => Ok(Self::Local(
                LocalStreamReader::open(data_dir, name).map_err(stream_err(name))?,
                name.to_owned(),
            )),
            SourceConfig::Kinesis => {
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(5))
                            .operation_attempt_timeout(Duration::from_secs(30))
                            .build(),
                    )
                    .load()
                    .await;
                Ok(Self::Kinesis(KinesisSource {
                    client: Client::new(&config),
                    stream: name.to_owned(),
                }))
            }
            SourceConfig::KinesisClient(client) => Ok(Self::Kinesis(KinesisSource {
                client: client.clone(),
                stream: name.to_owned(),
            })),
        }
    }

    /// The shards, parents first.
    pub async fn shards(&self) -> Result<Vec<ShardInfo>, CompactorError> {
        let shards = match self {
            Self::Local(reader, _) => reader
                .map()
                .shards()
                .iter()
                .map(|s| ShardInfo {
                    shard_id: s.shard_id.clone(),
                    parents: Vec::new(),
                    closed: false,
                })
                .collect(),
            Self::Kinesis(k) => k.list_shards().await?,
        };
        Ok(order_shards(shards))
    }

    /// Opens a shard after `after` (`None`: from the oldest retained record),
    /// bounded by the end as of now and by `max_records`.
    pub async fn open_shard(
        &self,
        shard: &ShardInfo,
        after: Option<&SequenceNumber>,
        max_records: Option<u64>,
        run_started: chrono::DateTime<chrono::Utc>,
        accept_data_loss: bool,
        replay_from: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<ShardReader, CompactorError> {
        let shard_id = shard.shard_id.as_str();
        match self {
            Self::Local(reader, name) => {
                let name = name.clone();
                let after = match (replay_from, after) {
                    // A replay: from the first record that arrived at or after the time.
                    (Some(from), _) => Some(
                        reader
                            .sequence_before_arrival(shard_id, from.timestamp_millis())
                            .map_err(stream_err(&name))?,
                    ),
                    (None, Some(seq)) => Some(seq.to_u64().ok_or_else(|| {
                        CompactorError::State(format!(
                            "checkpoint {seq} of {shard_id} does not fit a local sequence number"
                        ))
                    })?),
                    (None, None) => None,
                };
                let latest = reader
                    .latest_sequence(shard_id)
                    .map_err(stream_err(&name))?
                    .unwrap_or(0);
                let start = after.unwrap_or(0);
                let mut target = latest;
                if let Some(max) = max_records {
                    target = target.min(start.saturating_add(max));
                }
                let cursor = reader
                    .cursor(shard_id, after)
                    .map_err(stream_err(&name))?
                    .allow_gaps(accept_data_loss);
                Ok(ShardReader::Local {
                    cursor,
                    target,
                    name,
                })
            }
            Self::Kinesis(k) => {
                let mut lost = false;
                if replay_from.is_none()
                    && let Some(checkpoint) = after
                    && let Some(oldest) = k.oldest(shard_id).await?
                    && oldest > *checkpoint
                {
                    // The checkpoint's own record has expired: so may have
                    // the records after it that no run has read.
                    let expired = CompactorError::Expired {
                        stream: k.stream.clone(),
                        shard_id: shard_id.to_owned(),
                        checkpoint: checkpoint.to_string(),
                        oldest: oldest.to_string(),
                    };
                    if !accept_data_loss {
                        return Err(expired);
                    }
                    tracing::error!(error = %expired, "going on without the expired records as asked");
                    lost = true;
                }
                let (iterator, last) = match replay_from {
                    Some(from) => (k.iterator_at(shard_id, from).await?, None),
                    None => (k.iterator(shard_id, after).await?, after.cloned()),
                };
                Ok(ShardReader::Kinesis {
                    source: k.clone(),
                    shard_id: shard_id.to_owned(),
                    iterator,
                    last,
                    replay_from,
                    remaining: max_records,
                    run_started,
                    closed: shard.closed,
                    behind_ms: None,
                    state: KinesisState::Reading,
                    lost,
                })
            }
        }
    }

    /// The newest record per shard, where the source can tell cheaply (the
    /// local stream); Kinesis tells only how far behind a reader is, in
    /// milliseconds ([`Source::millis_behind`]).
    pub fn latest_local(&self, shard_id: &str) -> Result<Option<u64>, CompactorError> {
        match self {
            Self::Local(reader, name) => reader.latest_sequence(shard_id).map_err(stream_err(name)),
            Self::Kinesis(_) => Ok(None),
        }
    }

    /// How many milliseconds the record after `after` is behind the tip of a
    /// Kinesis shard (`None` for the local stream or a closed, finished shard).
    pub async fn millis_behind(
        &self,
        shard_id: &str,
        after: Option<&SequenceNumber>,
    ) -> Result<Option<i64>, CompactorError> {
        let Self::Kinesis(k) = self else {
            return Ok(None);
        };
        let Some(iterator) = k.iterator(shard_id, after).await? else {
            return Ok(None);
        };
        let out = k.get_records(&iterator, 1).await?;
        Ok(match out {
            Fetched::Records(out) => out.millis_behind_latest(),
            Fetched::Expired => None,
        })
    }

    /// Deletes local segments at or before the committed checkpoints.
    pub fn trim(&self, checkpoints: &BTreeMap<String, SequenceNumber>) -> u64 {
        let Self::Local(reader, _) = self else {
            return 0;
        };
        let mut trimmed = 0;
        for (shard, seq) in checkpoints {
            let Some(through) = seq.to_u64() else {
                continue;
            };
            match reader.trim(shard, through) {
                Ok(n) => trimmed += n as u64,
                Err(e) => {
                    tracing::warn!(shard = %shard, error = %e, "trim failed; retried next run")
                }
            }
        }
        trimmed
    }
}

enum Fetched {
    Records(aws_sdk_kinesis::operation::get_records::GetRecordsOutput),
    Expired,
}

impl KinesisSource {
    /// Every shard, open and closed, with its parents (the one `ListShards`
    /// helper of the stream crate).
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, CompactorError> {
        let shards = KinesisStream::new(self.client.clone(), &self.stream)
            .list_all_shards()
            .await
            .map_err(|e| self.error(e))?;
        Ok(shards
            .iter()
            .map(|shard| ShardInfo {
                shard_id: shard.shard_id().to_owned(),
                parents: [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect(),
                closed: shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some(),
            })
            .collect())
    }

    fn error(&self, source: StreamError) -> CompactorError {
        stream_err(&self.stream)(source)
    }

    /// Sends the request `make` builds, retrying throttling and network
    /// errors with a backoff ([`MAX_ATTEMPTS`] in all); any other error, or
    /// the last one, is returned.
    async fn with_backoff<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut make: F,
    ) -> Result<T, SdkError<E, HttpResponse>>
    where
        E: ProvideErrorMetadata,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let mut attempt = 0;
        loop {
            match make().await {
                Err(e) if retryable(&e) && attempt + 1 < MAX_ATTEMPTS => {
                    tracing::warn!(operation, attempt, "throttled or unreachable; backing off");
                    tokio::time::sleep(BACKOFF.ceiling(attempt + 1)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn iterator(
        &self,
        shard_id: &str,
        after: Option<&SequenceNumber>,
    ) -> Result<Option<String>, CompactorError> {
        let out = self
            .with_backoff("GetShardIterator", || {
                let request = self
                    .client
                    .get_shard_iterator()
                    .stream_name(&self.stream)
                    .shard_id(shard_id);
                match after {
                    Some(seq) => request
                        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                        .starting_sequence_number(seq.as_str()),
                    None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
                }
                .send()
            })
            .await
            .map_err(|e| self.error(call_error("GetShardIterator", e)))?;
        Ok(out.shard_iterator().map(str::to_owned))
    }

    /// An iterator at the first record that arrived at or after `at`
    /// (`AT_TIMESTAMP`: a replay).
    async fn iterator_at(
        &self,
        shard_id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, CompactorError> {
        let timestamp = aws_sdk_kinesis::primitives::DateTime::from_millis(at.timestamp_millis());
        let out = self
            .with_backoff("GetShardIterator", || {
                self.client
                    .get_shard_iterator()
                    .stream_name(&self.stream)
                    .shard_id(shard_id)
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(timestamp)
                    .send()
            })
            .await
            .map_err(|e| self.error(call_error("GetShardIterator", e)))?;
        Ok(out.shard_iterator().map(str::to_owned))
    }

    /// The sequence number of the oldest record still in the shard (at its
    /// trim horizon), if it holds any. Kinesis may answer a few empty pages
    /// while it moves the iterator through empty time: read on while it is
    /// behind the tip, a bounded number of calls.
    async fn oldest(&self, shard_id: &str) -> Result<Option<SequenceNumber>, CompactorError> {
        let mut iterator = self.iterator(shard_id, None).await?;
        for _ in 0..20 {
            let Some(it) = iterator else { return Ok(None) };
            let out = match self.get_records(&it, 1).await? {
                Fetched::Records(out) => out,
                Fetched::Expired => return Ok(None),
            };
            if let Some(record) = out.records().first() {
                return SequenceNumber::parse(record.sequence_number()).map(Some);
            }
            if out.millis_behind_latest().unwrap_or(0) == 0 {
                return Ok(None);
            }
            iterator = out.next_shard_iterator().map(str::to_owned);
        }
        Ok(None)
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Fetched, CompactorError> {
        let result = self
            .with_backoff("GetRecords", || {
                self.client
                    .get_records()
                    .shard_iterator(iterator)
                    .limit(limit)
                    .send()
            })
            .await;
        match result {
            Ok(out) => Ok(Fetched::Records(out)),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(GetRecordsError::ExpiredIteratorException(_))
                ) =>
            {
                Ok(Fetched::Expired)
            }
            Err(e) => Err(self.error(call_error("GetRecords", e))),
        }
    }
}

fn retryable<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(_) => error
            .as_service_error()
            .and_then(|e| e.code())
            .is_some_and(|code| THROTTLE_CODES.contains(&code)),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Where a Kinesis shard reader is.
pub enum KinesisState {
    /// More records may come before the run's end.
    Reading,
    /// Caught up with the end as of the run's start (or the record bound).
    Done,
    /// The shard is closed and was read to its end.
    Finished,
}

/// Reads one shard forward, in batches.
pub enum ShardReader {
    /// A local shard, up to `target`.
    Local {
        /// The cursor.
        cursor: ShardCursor,
        /// The last sequence number to read.
        target: u64,
        /// For error messages.
        name: String,
    },
    /// A Kinesis shard.
    Kinesis {
        /// The stream.
        source: KinesisSource,
        /// The shard.
        shard_id: String,
        /// The next iterator (`None`: the shard is closed and fully read).
        iterator: Option<String>,
        /// The last sequence number returned (or started after).
        last: Option<SequenceNumber>,
        /// A replay's start time (an expired iterator before the first
        /// record read is re-opened there).
        replay_from: Option<chrono::DateTime<chrono::Utc>>,
        /// Records still allowed by `--max-records`.
        remaining: Option<u64>,
        /// Records that arrived after this are left for the next run.
        run_started: chrono::DateTime<chrono::Utc>,
        /// Whether the shard is closed.
        closed: bool,
        /// `MillisBehindLatest` of the last `GetRecords`.
        behind_ms: Option<i64>,
        /// Where the reader is.
        state: KinesisState,
        /// Whether records after the checkpoint had expired (with
        /// `--accept-data-loss`; how many is unknown).
        lost: bool,
    },
}

/// Records per local read or `GetRecords` call (Kinesis allows 10 000).
const BATCH: u64 = 10_000;
/// Bytes of record data per local read (a `GetRecords` answer is at most 10 MiB).
const BATCH_BYTES: usize = 8 * 1024 * 1024;

impl ShardReader {
    /// The next records, or an empty batch at the end of the run's range.
    pub async fn next_batch(&mut self) -> Result<Vec<SourceRecord>, CompactorError> {
        match self {
            Self::Local {
                cursor,
                target,
                name,
            } => {
                if cursor.position() >= *target {
                    return Ok(Vec::new());
                }
                let want = (*target - cursor.position()).min(BATCH);
                let batch = cursor
                    .next_batch_limited(usize::try_from(want).unwrap_or(usize::MAX), BATCH_BYTES)
                    .map_err(stream_err(name))?;
                Ok(batch
                    .into_iter()
                    .map(|r| SourceRecord {
                        sequence_number: SequenceNumber::from(r.sequence_number),
                        data: r.data,
                    })
                    .collect())
            }
            Self::Kinesis {
                source,
                shard_id,
                iterator,
                last,
                remaining,
                run_started,
                closed,
                behind_ms,
                state,
                replay_from,
                ..
            } => loop {
                if *state != KinesisState::Reading {
                    return Ok(Vec::new());
                }
                if *remaining == Some(0) {
                    *state = KinesisState::Done;
                    return Ok(Vec::new());
                }
                let Some(it) = iterator.clone() else {
                    *state = KinesisState::Finished;
                    return Ok(Vec::new());
                };
                let limit = remaining.unwrap_or(BATCH).min(BATCH);
                let out = match source
                    .get_records(&it, i32::try_from(limit).unwrap_or(10_000))
                    .await?
                {
                    Fetched::Records(out) => out,
                    Fetched::Expired => {
                        tracing::info!(shard = %shard_id, "shard iterator expired; re-opening after the last record read");
                        *iterator = match (last.as_ref(), *replay_from) {
                            (None, Some(from)) => source.iterator_at(shard_id, from).await?,
                            (last, _) => source.iterator(shard_id, last).await?,
                        };
                        continue;
                    }
                };
                *behind_ms = out.millis_behind_latest();
                let caught_up = out.millis_behind_latest().unwrap_or(0) == 0;
                let mut records = Vec::with_capacity(out.records().len());
                let mut past_start = false;
                for record in out.records() {
                    let arrived_after = record.approximate_arrival_timestamp().is_some_and(|t| {
                        let ms = t.to_millis().unwrap_or(i64::MAX);
                        ms > run_started.timestamp_millis()
                    });
                    if arrived_after {
                        past_start = true;
                        break;
                    }
                    let sequence_number = SequenceNumber::parse(record.sequence_number())?;
                    records.push(SourceRecord {
                        sequence_number,
                        data: Bytes::copy_from_slice(record.data().as_ref()),
                    });
                }
                if let Some(r) = records.last() {
                    *last = Some(r.sequence_number.clone());
                }
                if let Some(rem) = remaining.as_mut() {
                    *rem = rem.saturating_sub(records.len() as u64);
                }
                if past_start {
                    *state = KinesisState::Done;
                } else {
                    *iterator = out.next_shard_iterator().map(str::to_owned);
                    if iterator.is_none() {
                        *state = KinesisState::Finished;
                    } else if out.records().is_empty() && caught_up {
                        // At the end of a closed shard nothing more can come
                        // (Kinesis ends it with a null iterator; moto does not).
                        *state = if *closed {
                            KinesisState::Finished
                        } else {
                            KinesisState::Done
                        };
                    }
                }
                if !records.is_empty() || *state != KinesisState::Reading {
                    return Ok(records);
                }
            },
        }
    }

    /// How far behind the end of the run's range the reader is, for people.
    pub fn lag(&self) -> String {
        match self {
            Self::Local { cursor, target, .. } => {
                format!("{} records to go", target.saturating_sub(cursor.position()))
            }
            Self::Kinesis { behind_ms, .. } => match behind_ms {
                Some(ms) => format!("{ms} ms behind the tip"),
                None => "lag unknown".to_owned(),
            },
        }
    }

    /// Records found gone before they were read (only with
    /// `--accept-data-loss`; without it a gap fails the run).
    pub fn lost(&self) -> u64 {
        match self {
            Self::Local { cursor, .. } => cursor.lost(),
            Self::Kinesis { .. } => 0,
        }
    }

    /// Whether records of this shard were found gone before they were read
    /// (Kinesis cannot say how many expired; the local stream can).
    pub fn had_loss(&self) -> bool {
        match self {
            Self::Local { cursor, .. } => cursor.lost() > 0,
            Self::Kinesis { lost, .. } => *lost,
        }
    }

    /// Whether the shard is closed and was read to its very end (its
    /// children may be read).
    pub fn finished(&self) -> bool {
        match self {
            Self::Local { .. } => false,
            Self::Kinesis { state, .. } => *state == KinesisState::Finished,
        }
    }
}

/// Kinesis shards read ahead at once, each in its own task (a window over
/// the run's shards, in their order): their `GetRecords` round trips overlap
/// with each other and with decoding. Each holds at most two answers (one
/// queued, one being fetched; an answer is at most 10 MiB).
pub const READ_AHEAD_SHARDS: usize = 4;

type Fetch = Result<(Vec<SourceRecord>, String), CompactorError>;

/// A shard reader that, for Kinesis, fetches ahead in its own task; the
/// local stream (a file read) is read inline.
pub enum ReadAhead {
    /// Read when asked.
    Inline(ShardReader),
    /// Fetched ahead by a task, which hands the reader back at the end.
    Task {
        /// The batches and the lag after each.
        batches: tokio::sync::mpsc::Receiver<Fetch>,
        /// The task.
        task: tokio::task::JoinHandle<ShardReader>,
        /// The lag after the last batch taken.
        lag: String,
    },
}

impl ReadAhead {
    /// Starts reading ahead (Kinesis) or wraps the reader (local).
    pub fn start(reader: ShardReader) -> Self {
        if matches!(reader, ShardReader::Local { .. }) {
            return Self::Inline(reader);
        }
        let lag = reader.lag();
        let (tx, batches) = tokio::sync::mpsc::channel::<Fetch>(1);
        let task = tokio::spawn(async move {
            let mut reader = reader;
            loop {
                let batch = reader.next_batch().await;
                let end = !matches!(&batch, Ok(b) if !b.is_empty());
                let lag = reader.lag();
                if tx.send(batch.map(|b| (b, lag))).await.is_err() || end {
                    return reader;
                }
            }
        });
        Self::Task { batches, task, lag }
    }

    /// The next records, or an empty batch at the end of the run's range.
    pub async fn next_batch(&mut self) -> Result<Vec<SourceRecord>, CompactorError> {
        match self {
            Self::Inline(reader) => reader.next_batch().await,
            Self::Task { batches, lag, .. } => match batches.recv().await {
                Some(Ok((batch, after))) => {
                    *lag = after;
                    Ok(batch)
                }
                Some(Err(e)) => Err(e),
                None => Ok(Vec::new()),
            },
        }
    }

    /// How far behind the end of the run's range the reader is, for people.
    pub fn lag(&self) -> String {
        match self {
            Self::Inline(reader) => reader.lag(),
            Self::Task { lag, .. } => lag.clone(),
        }
    }

    /// Stops reading ahead and hands the reader back (what it read past the
    /// last batch taken is dropped: the checkpoint is the last record taken).
    pub async fn finish(self) -> Result<ShardReader, CompactorError> {
        match self {
            Self::Inline(reader) => Ok(reader),
            Self::Task { batches, task, .. } => {
                drop(batches);
                task.await
                    .map_err(|e| CompactorError::State(format!("a shard reading task failed: {e}")))
            }
        }
    }
}

/// The shards a run may read: every shard whose parents (present in the
/// stream) are all finished.
pub fn readable(shard: &ShardInfo, present: &HashMap<String, bool>) -> bool {
    shard
        .parents
        .iter()
        .all(|p| present.get(p).copied().unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str]) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            closed: false,
        }
    }

    #[test]
    fn parents_come_before_children() {
        // 0 split into 2 and 3; 1 and 2 merged into 4; 9's parent expired.
        let ordered = order_shards(vec![
            shard("s4", &["s1", "s2"]),
            shard("s3", &["s0"]),
            shard("s2", &["s0"]),
            shard("s1", &[]),
            shard("s0", &[]),
            shard("s9", &["gone"]),
        ]);
        let pos = |id: &str| {
            ordered
                .iter()
                .position(|s| s.shard_id == id)
                .expect("present")
        };
        assert_eq!(ordered.len(), 6);
        assert!(pos("s0") < pos("s2") && pos("s0") < pos("s3"));
        assert!(pos("s1") < pos("s4") && pos("s2") < pos("s4"));
        let finished: HashMap<String, bool> =
            [("s0".to_owned(), true), ("s1".to_owned(), false)].into();
        assert!(readable(&shard("s2", &["s0"]), &finished));
        assert!(!readable(&shard("s4", &["s1", "s2"]), &finished));
        assert!(readable(&shard("s9", &["gone"]), &finished));
    }
}
