//! The Delta table: its schema (a contract with the warehouse), creation and
//! loading.

use deltalake::kernel::{DataType, StructField};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use serde_json::Value;

use crate::CompactorError;
use crate::location::Location;

/// The table's columns in their fixed order (Redshift `COPY ... FORMAT AS
/// PARQUET` matches columns by position): name, Delta type, nullable.
///
/// `event_date` (the UTC date of `recorded_at`) is the partition column: Delta
/// keeps it in the path and the log only, so the Parquet files hold the first
/// ten columns.
pub const COLUMNS: [(&str, &str, bool); 11] = [
    ("event_id", "string", false),
    ("courier_id", "string", false),
    ("lat", "double", false),
    ("lon", "double", false),
    ("recorded_at", "timestamp", false),
    ("received_at", "timestamp", false),
    ("accuracy_m", "double", true),
    ("speed_mps", "double", true),
    ("heading_deg", "double", true),
    ("order_id", "string", true),
    ("event_date", "date", false),
];

/// The partition column.
pub const PARTITION_COLUMN: &str = "event_date";

/// How long the Delta log keeps commits (`delta.logRetentionDuration`, set
/// explicitly when the compactor creates a table). The next run's state is in
/// the newest compactor commit, so it survives log cleanup as long as the
/// compactor commits more often than this; if it does not, the run fails
/// loudly instead of starting from scratch (see docs/operations.md).
pub const LOG_RETENTION: &str = "interval 365 days";

fn delta_columns() -> Vec<StructField> {
    COLUMNS
        .iter()
        .map(|(name, ty, nullable)| {
            let data_type = match *ty {
                "string" => DataType::STRING,
                "double" => DataType::DOUBLE,
                "timestamp" => DataType::TIMESTAMP,
                _ => DataType::DATE,
            };
            StructField::new(*name, data_type, *nullable)
        })
        .collect()
}

fn open(location: &Location) -> Result<DeltaTable, CompactorError> {
    location.ensure_exists()?;
    DeltaTableBuilder::from_url(location.url().clone())
        .and_then(|b| b.with_storage_options(location.options().clone()).build())
        .map_err(|e| CompactorError::delta(&location.to_string(), "open", e))
}

/// Loads the table at `location`, or `None` when there is no Delta table there.
pub async fn load(location: &Location) -> Result<Option<DeltaTable>, CompactorError> {
    if let Some(path) = location.local_path()
        && !path.exists()
    {
        return Ok(None);
    }
    let mut table = open(location)?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(CompactorError::delta(&location.to_string(), "load", e)),
    }
}

/// Loads the table at `location`, creating it (schema [`COLUMNS`], partitioned
/// by `event_date`) when missing.
pub async fn open_or_create(location: &Location) -> Result<DeltaTable, CompactorError> {
    if let Some(table) = load(location).await? {
        return Ok(table);
    }
    let table = open(location)?;
    let created = table
        .create()
        .with_table_name("courier_positions")
        .with_comment("Courier GPS positions, written by the compactor")
        .with_columns(delta_columns())
        .with_partition_columns([PARTITION_COLUMN])
        .with_configuration_property(
            deltalake::TableProperty::LogRetentionDuration,
            Some(LOG_RETENTION),
        )
        .with_save_mode(SaveMode::Ignore)
        .await
        .map_err(|e| CompactorError::delta(&location.to_string(), "create", e))?;
    // SaveMode::Ignore returns the existing table when another process won the race.
    Ok(created)
}

/// Sum of `numRecords` in the stats of the table's active files, and the
/// number of files.
pub fn row_count(table: &DeltaTable) -> Result<(u64, u64), CompactorError> {
    let snapshot = table
        .snapshot()
        .map_err(|e| CompactorError::delta(table.table_url().as_str(), "snapshot", e))?;
    let mut rows = 0u64;
    let mut files = 0u64;
    for file in snapshot.log_data().iter() {
        files += 1;
        let stats = file
            .stats()
            .ok_or_else(|| CompactorError::State(format!("file {} has no stats", file.path())))?;
        let value: Value = serde_json::from_str(&stats)
            .map_err(|e| CompactorError::State(format!("stats of {}: {e}", file.path())))?;
        rows += value.get("numRecords").and_then(Value::as_u64).unwrap_or(0);
    }
    Ok((rows, files))
}

/// The batches (64 K rows) of one column of a Parquet file, read alone (a
/// projection: the other columns are not decoded). `path` names the file in
/// errors, as does a missing column.
pub(crate) fn one_column(
    bytes: bytes::Bytes,
    path: &str,
    column: &str,
) -> Result<impl Iterator<Item = Result<arrow::array::ArrayRef, CompactorError>>, CompactorError> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let perr = |source| CompactorError::Parquet {
        path: path.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(perr)?;
    let index = builder
        .schema()
        .index_of(column)
        .map_err(|e| perr(e.into()))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(perr)?;
    let path = path.to_owned();
    Ok(reader.map(move |batch| {
        batch
            .map(|b| b.column(0).clone())
            .map_err(|e| CompactorError::Parquet {
                path: path.clone(),
                source: e.into(),
            })
    }))
}
