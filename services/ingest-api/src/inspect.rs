//! `ingest-api stream-stats`: counts what the local stream holds, decoding
//! every record, so an operator (or `make demo`) can reconcile what the API
//! acknowledged with what is durably in the stream.

use std::collections::HashSet;
use std::path::Path;

use courier_model::avro::decode_record;
use courier_stream::StreamError;
use courier_stream::local::LocalStreamReader;
use serde::Serialize;

/// Counts of one shard.
#[derive(Debug, Default, Serialize)]
pub struct ShardStats {
    /// Shard id.
    pub shard_id: String,
    /// Stream records.
    pub records: u64,
    /// Record bytes.
    pub bytes: u64,
    /// Positions decoded.
    pub positions: u64,
    /// First sequence number retained.
    pub first_sequence: Option<u64>,
    /// Last sequence number.
    pub last_sequence: Option<u64>,
}

/// Counts of a whole local stream.
#[derive(Debug, Default, Serialize)]
pub struct StreamStats {
    /// Stream name.
    pub stream: String,
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// Stream records.
    pub records: u64,
    /// Positions decoded.
    pub positions: u64,
    /// Distinct event ids (positions minus duplicates from retries).
    pub distinct_event_ids: u64,
    /// Records that are not readable Avro containers, or hold a bad datum.
    pub undecodable_records: u64,
}

/// Reads and decodes the whole local stream.
pub fn local_stream_stats(data_dir: &Path, stream: &str) -> Result<StreamStats, StreamError> {
    let reader = LocalStreamReader::open(data_dir, stream)?;
    let mut stats = StreamStats {
        stream: stream.to_owned(),
        ..StreamStats::default()
    };
    let mut ids = HashSet::new();
    for shard in reader.map().shards() {
        let mut s = ShardStats {
            shard_id: shard.shard_id.clone(),
            ..ShardStats::default()
        };
        let mut cursor = reader.cursor(&shard.shard_id, None)?;
        loop {
            let batch = cursor.next_batch(4096)?;
            if batch.is_empty() {
                break;
            }
            for record in batch {
                s.first_sequence.get_or_insert(record.sequence_number);
                s.last_sequence = Some(record.sequence_number);
                s.records += 1;
                s.bytes += record.data.len() as u64;
                match decode_record(&record.data) {
                    Ok(datums) => {
                        let mut bad = false;
                        for datum in datums {
                            match datum {
                                Ok(p) => {
                                    s.positions += 1;
                                    ids.insert(p.event_id);
                                }
                                Err(_) => bad = true,
                            }
                        }
                        stats.undecodable_records += u64::from(bad);
                    }
                    Err(_) => stats.undecodable_records += 1,
                }
            }
        }
        stats.records += s.records;
        stats.positions += s.positions;
        stats.shards.push(s);
    }
    stats.distinct_event_ids = ids.len() as u64;
    Ok(stats)
}
