//! The Kinesis data stream, through `aws-sdk-kinesis`.
//!
//! AWS settings come from the standard configuration chain (environment,
//! profile, container or instance role), so `AWS_ENDPOINT_URL` or
//! `AWS_ENDPOINT_URL_KINESIS` points it at a local server. The SDK's own
//! retries are off: callers retry only the failed entries of a `PutRecords`,
//! under their own deadline.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};

use super::{BoxFuture, OutRecord, PutOutcome, ShardMap, ShardRange, StreamError, StreamSink};

/// Client-side timeouts of Kinesis calls.
#[derive(Debug, Clone, Copy)]
pub struct KinesisTimeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// A whole API call.
    pub operation: Duration,
}

impl Default for KinesisTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            operation: Duration::from_secs(5),
        }
    }
}

/// Builds a Kinesis client from the standard AWS configuration chain, with
/// the SDK's retries disabled and the given timeouts.
pub async fn client_from_env(timeouts: KinesisTimeouts) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .operation_timeout(timeouts.operation)
                .build(),
        )
        .load()
        .await;
    Client::new(&config)
}

/// Kinesis error codes that mean "slow down": the call may be retried later.
pub const THROTTLE_CODES: [&str; 4] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "LimitExceededException",
    "KMSThrottlingException",
];

/// A failed Kinesis call as a [`StreamError::Kinesis`], throttling flagged.
pub fn call_error<E, R>(operation: &'static str, error: SdkError<E, R>) -> StreamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let throttled = error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| THROTTLE_CODES.contains(&code));
    StreamError::Kinesis {
        operation,
        message: DisplayErrorContext(&error).to_string(),
        throttled,
    }
}

fn parse_hash(value: &str, shard_id: &str) -> Result<u128, StreamError> {
    value.parse::<u128>().map_err(|_| {
        StreamError::InvalidShardMap(format!(
            "shard {shard_id} has a hash key {value:?} that is not a 128-bit integer"
        ))
    })
}

/// A Kinesis data stream addressed by name.
#[derive(Debug, Clone)]
pub struct KinesisStream {
    client: Client,
    stream_name: String,
}

impl KinesisStream {
    /// A stream handle; no call is made until the stream is used.
    pub fn new(client: Client, stream_name: impl Into<String>) -> Self {
        Self {
            client,
            stream_name: stream_name.into(),
        }
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The stream name.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// Every shard of the stream, open and closed (closed ones carry an
    /// ending sequence number), following `ListShards` pagination.
    pub async fn list_all_shards(&self) -> Result<Vec<aws_sdk_kinesis::types::Shard>, StreamError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match &token {
                // With a token, the stream name must not be sent again.
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(&self.stream_name),
            };
            let page = request
                .send()
                .await
                .map_err(|e| call_error("ListShards", e))?;
            shards.extend(page.shards().iter().cloned());
            match page.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(shards),
            }
        }
    }
}

impl StreamSink for KinesisStream {
    fn kind(&self) -> &'static str {
        "kinesis"
    }

    fn shard_map(&self) -> BoxFuture<'_, Result<ShardMap, StreamError>> {
        Box::pin(async move {
            let shards = self.list_all_shards().await?;
            let mut open = Vec::new();
            for shard in &shards {
                let closed = shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some();
                if closed {
                    continue;
                }
                let range = shard.hash_key_range().ok_or_else(|| {
                    StreamError::InvalidShardMap(format!(
                        "shard {} has no hash key range",
                        shard.shard_id()
                    ))
                })?;
                open.push(ShardRange {
                    shard_id: shard.shard_id().to_owned(),
                    start_hash: parse_hash(range.starting_hash_key(), shard.shard_id())?,
                    end_hash: parse_hash(range.ending_hash_key(), shard.shard_id())?,
                });
            }
            ShardMap::new(open)
        })
    }

    fn put_records(
        &self,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, StreamError>> {
        Box::pin(async move {
            let mut entries = Vec::with_capacity(records.len());
            for record in records {
                let mut entry = PutRecordsRequestEntry::builder()
                    .data(Blob::new(record.data.to_vec()))
                    .partition_key(record.partition_key);
                if let Some(hash) = record.explicit_hash_key {
                    entry = entry.explicit_hash_key(hash.to_string());
                }
                entries.push(entry.build().map_err(|e| StreamError::Kinesis {
                    operation: "PutRecords",
                    message: format!("invalid entry: {e}"),
                    throttled: false,
                })?);
            }
            let expected = entries.len();
            let output = self
                .client
                .put_records()
                .stream_name(&self.stream_name)
                .set_records(Some(entries))
                .send()
                .await
                .map_err(|e| call_error("PutRecords", e))?;
            if output.records().len() != expected {
                return Err(StreamError::Kinesis {
                    operation: "PutRecords",
                    message: format!(
                        "answered {} entries for {} records",
                        output.records().len(),
                        expected
                    ),
                    throttled: false,
                });
            }
            Ok(output
                .records()
                .iter()
                .map(|entry| {
                    match (
                        entry.error_code(),
                        entry.sequence_number(),
                        entry.shard_id(),
                    ) {
                        (None, Some(seq), Some(shard)) => PutOutcome::Written {
                            shard_id: shard.to_owned(),
                            sequence_number: seq.to_owned(),
                        },
                        (code, _, _) => PutOutcome::Failed {
                            code: code.unwrap_or("MissingSequenceNumber").to_owned(),
                            message: entry.error_message().unwrap_or_default().to_owned(),
                        },
                    }
                })
                .collect())
        })
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(async move {
            let output = self
                .client
                .describe_stream_summary()
                .stream_name(&self.stream_name)
                .send()
                .await
                .map_err(|e| call_error("DescribeStreamSummary", e))?;
            let status = output
                .stream_description_summary()
                .map(|s| s.stream_status().clone());
            match status {
                Some(StreamStatus::Active | StreamStatus::Updating) => Ok(()),
                other => Err(StreamError::NotUsable {
                    name: self.stream_name.clone(),
                    reason: format!("status is {other:?}"),
                }),
            }
        })
    }

    fn reset(&self) -> BoxFuture<'_, Result<(), StreamError>> {
        // The SDK client keeps no state that a failure could corrupt.
        Box::pin(async { Ok(()) })
    }
}
