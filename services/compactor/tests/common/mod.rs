//! Helpers shared by the compactor's integration tests: positions, their
//! encoding as stream records, and reading a table back.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use chrono::{DateTime, TimeDelta, Utc};
use compactor::Location;
use courier_model::avro::{Codec, RecordEncoder, encode_datum};
use courier_model::position::{Position, TimeRules, UncheckedPosition};
use deltalake::logstore::object_store::ObjectStoreExt as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The test process's "now", fixed at its first use.
pub fn now() -> DateTime<Utc> {
    static NOW: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    *NOW.get_or_init(|| {
        let micros = Utc::now().timestamp_micros();
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    })
}

pub fn position_with(i: usize, event_id: &str, recorded_offset: TimeDelta) -> Position {
    let courier = format!("courier-{}", i % 7);
    let order = format!("order-{i}");
    let input = UncheckedPosition {
        event_id: Some(event_id),
        courier_id: Some(&courier),
        lat: Some(-23.5 + i as f64 * 1e-4),
        lon: Some(-46.6 - i as f64 * 1e-4),
        recorded_at: Some(now() + recorded_offset),
        accuracy_m: i.is_multiple_of(2).then_some(4.5),
        speed_mps: None,
        heading_deg: Some(90.0),
        order_id: i.is_multiple_of(3).then_some(order.as_str()),
    };
    // As a deployment with a wide window accepts them.
    let lenient = TimeRules {
        max_future: std::time::Duration::from_secs(365 * 24 * 3600),
        max_age: std::time::Duration::from_secs(365 * 24 * 3600),
    };
    Position::try_new(&input, now(), &lenient).expect("valid position")
}

pub fn position(i: usize) -> Position {
    position_with(
        i,
        &uuid::Uuid::now_v7().to_string(),
        TimeDelta::milliseconds(-1500),
    )
}

pub fn positions(n: usize) -> Vec<Position> {
    (0..n).map(position).collect()
}

pub fn ids(ps: &[Position]) -> Vec<String> {
    ps.iter().map(|p| p.event_id.to_string()).collect()
}

/// One stream record (an Avro object container) holding `positions`.
pub fn encode(positions: &[Position]) -> Vec<u8> {
    let mut datums = Vec::new();
    for p in positions {
        encode_datum(p, &mut datums);
    }
    RecordEncoder::new(Codec::Zstandard).encode(&datums, positions.len())
}

/// One stream record holding `positions`, with the latitude of the one at
/// `index` overwritten by `lat` (a value our own types refuse to hold: what
/// another producer could write).
pub fn encode_with_lat(positions: &[Position], index: usize, lat: f64) -> Vec<u8> {
    let mut datums = Vec::new();
    let mut start = 0;
    for (i, p) in positions.iter().enumerate() {
        if i == index {
            start = datums.len();
        }
        encode_datum(p, &mut datums);
    }
    let old = positions[index].lat.get().to_le_bytes();
    let at = start
        + datums[start..]
            .windows(8)
            .position(|w| w == old)
            .expect("the latitude's bytes");
    datums[at..at + 8].copy_from_slice(&lat.to_le_bytes());
    RecordEncoder::new(Codec::Zstandard).encode(&datums, positions.len())
}

/// Every event_id in the table's current files (through the Delta log, read
/// through the table's own object store: local or S3), sorted.
pub async fn table_event_ids(location: &Location) -> Vec<String> {
    sorted(
        table_event_ids_by_date(location)
            .await
            .into_values()
            .flatten()
            .collect(),
    )
}

/// The event_ids of the table's current files per `event_date` partition
/// value (as the Delta log gives it), each sorted.
pub async fn table_event_ids_by_date(location: &Location) -> BTreeMap<String, Vec<String>> {
    let table = compactor::table::load(location)
        .await
        .expect("load")
        .expect("a table");
    let store = table.object_store();
    let snapshot = table.snapshot().expect("snapshot");
    let files: Vec<(String, String)> = snapshot
        .log_data()
        .iter()
        .map(|f| {
            let date = f
                .partition_values_map()
                .get("event_date")
                .cloned()
                .flatten()
                .expect("partition value");
            (date, f.path().into_owned())
        })
        .collect();
    let mut by_date: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (date, path) in files {
        let out = by_date.entry(date).or_default();
        let bytes = store
            .get(&deltalake::Path::from(path.as_str()))
            .await
            .expect("get a data file")
            .bytes()
            .await
            .expect("read a data file");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let col = arrow::compute::cast(
                batch.column_by_name("event_id").expect("event_id"),
                &arrow::datatypes::DataType::Utf8,
            )
            .expect("cast");
            let strings = col.as_string::<i32>();
            for i in 0..strings.len() {
                out.push(strings.value(i).to_owned());
            }
        }
    }
    for ids in by_date.values_mut() {
        ids.sort();
    }
    by_date
}

/// Active data files per `event_date` partition.
pub async fn files_per_partition(location: &Location) -> BTreeMap<String, usize> {
    let table = compactor::table::load(location)
        .await
        .expect("load")
        .expect("a table");
    let snapshot = table.snapshot().expect("snapshot");
    let mut out = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        let date = file
            .partition_values_map()
            .get("event_date")
            .cloned()
            .flatten()
            .expect("partition value");
        *out.entry(date).or_insert(0) += 1;
    }
    out
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// delta-rs gives local file "URIs" as plain absolute paths.
pub fn local_path(uri: &str) -> std::path::PathBuf {
    match url::Url::parse(uri) {
        Ok(url) => url.to_file_path().expect("a file URL"),
        Err(_) => std::path::PathBuf::from(uri),
    }
}
