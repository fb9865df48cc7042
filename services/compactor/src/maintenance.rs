//! Table maintenance: `optimize` (bin-packing the small files of each date
//! partition) and `vacuum` (deleting files no retained version references).
//!
//! `optimize` is our own, because delta-rs' `optimize` needs its `datafusion`
//! feature (minutes of build and gigabytes of target). It reads the small
//! Parquet files of a partition with the `parquet` crate, writes them again
//! through delta-rs' `RecordBatchWriter` (which computes the file statistics),
//! and commits the removes and adds in one `OPTIMIZE` commit with
//! `dataChange = false`: readers, the warehouse and the compactor's exactly-once
//! state see the same rows before and after. The removed files stay on storage
//! until `vacuum` deletes them after the retention; the dedup window reads the
//! runs' id files under `_dedup/`, not these, so neither step shrinks it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Date32Array, RecordBatch};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Remove};
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::CompactorError;
use crate::location::{Location, get_bytes};
use crate::table::{self, PARTITION_COLUMN};

/// What `optimize` does.
#[derive(Debug, Clone)]
pub struct OptimizeConfig {
    /// Files at least this big are left alone; small files are packed into
    /// files of about this size.
    pub target_file_bytes: u64,
    /// A partition is rewritten only when it has at least this many small files.
    pub min_files: usize,
}

impl Default for OptimizeConfig {
    fn default() -> Self {
        Self {
            target_file_bytes: 128 * 1024 * 1024,
            min_files: 2,
        }
    }
}

/// What `optimize` did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OptimizeReport {
    /// Partitions rewritten.
    pub partitions_optimized: u64,
    /// Small files replaced.
    pub files_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
    /// Bytes of the replaced files.
    pub bytes_removed: u64,
    /// Bytes of the new files.
    pub bytes_added: u64,
    /// Rows rewritten.
    pub rows_rewritten: u64,
    /// The table version after the commit (`None`: nothing to do, no commit).
    pub table_version: Option<u64>,
}

struct SmallFile {
    path: String,
    size: u64,
    remove: Remove,
}

pub(crate) fn days_of(date: &str) -> Option<i32> {
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((date - epoch).num_days()).ok()
}

/// A batch read from one of the table's Parquet files, in the table's
/// schema again: the partition column (`days` since the epoch) added, the
/// columns cast to the table's types where the file's differ.
pub(crate) fn table_batch(
    schema: &arrow::datatypes::SchemaRef,
    batch: &RecordBatch,
    days: i32,
    path: &str,
) -> Result<RecordBatch, CompactorError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        if field.name() == PARTITION_COLUMN {
            columns.push(Arc::new(Date32Array::from(vec![days; batch.num_rows()])));
            continue;
        }
        let column = batch.column_by_name(field.name()).ok_or_else(|| {
            CompactorError::State(format!("file {path} has no column {}", field.name()))
        })?;
        let column = if column.data_type() == field.data_type() {
            column.clone()
        } else {
            arrow::compute::cast(column, field.data_type()).map_err(|e| CompactorError::Arrow {
                context: "cast a column of a table file",
                source: e,
            })?
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| CompactorError::Arrow {
        context: "rebuild a batch",
        source: e,
    })
}

pub(crate) async fn load_existing(location: &Location) -> Result<DeltaTable, CompactorError> {
    table::load(location).await?.ok_or_else(|| {
        CompactorError::Config(format!(
            "there is no Delta table at {location} (run the compactor first)"
        ))
    })
}

/// Packs the small files of every partition into files of about the target
/// size, in one commit.
pub async fn optimize(
    location: &Location,
    config: &OptimizeConfig,
) -> Result<OptimizeReport, CompactorError> {
    let table = load_existing(location).await?;
    let uri = location.to_string();
    let snapshot = table
        .snapshot()
        .map_err(|e| CompactorError::delta(&uri, "snapshot", e))?;
    // Small files per partition (the `event_date` value).
    let mut partitions: BTreeMap<String, Vec<SmallFile>> = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        let size = u64::try_from(file.size()).unwrap_or(0);
        if size >= config.target_file_bytes {
            continue;
        }
        let date = file
            .partition_values_map()
            .get(PARTITION_COLUMN)
            .cloned()
            .flatten()
            .ok_or_else(|| {
                CompactorError::State(format!("file {} has no {PARTITION_COLUMN}", file.path()))
            })?;
        partitions.entry(date).or_default().push(SmallFile {
            path: file.path().into_owned(),
            size,
            remove: file.remove_action(false),
        });
    }

    let store = table.object_store();
    let mut report = OptimizeReport::default();
    let mut actions: Vec<Action> = Vec::new();
    for (date, mut files) in partitions {
        if files.len() < config.min_files {
            continue;
        }
        let days = days_of(&date).ok_or_else(|| {
            CompactorError::State(format!("partition {PARTITION_COLUMN}={date} is not a date"))
        })?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        // Bins of about the target size; a bin of one file is left alone.
        let mut bins: Vec<Vec<SmallFile>> = vec![Vec::new()];
        let mut bin_bytes = 0u64;
        for file in files {
            if bin_bytes + file.size > config.target_file_bytes
                && !bins.last().is_none_or(Vec::is_empty)
            {
                bins.push(Vec::new());
                bin_bytes = 0;
            }
            bin_bytes += file.size;
            if let Some(bin) = bins.last_mut() {
                bin.push(file);
            }
        }
        let mut touched = false;
        for bin in bins.into_iter().filter(|b| b.len() >= 2) {
            let mut writer = RecordBatchWriter::for_table(&table)
                .map_err(|e| CompactorError::delta(&uri, "create the writer", e))?;
            let schema = writer.arrow_schema();
            for file in &bin {
                let path = deltalake::Path::from(file.path.as_str());
                let bytes = get_bytes(store.as_ref(), &path).await.map_err(|e| {
                    CompactorError::Storage {
                        context: format!("read {} of table {uri}", file.path),
                        source: Box::new(e),
                    }
                })?;
                let perr = |source| CompactorError::Parquet {
                    path: file.path.clone(),
                    source,
                };
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .map_err(perr)?
                    .with_batch_size(65_536)
                    .build()
                    .map_err(perr)?;
                for batch in reader {
                    let batch = batch.map_err(|e| CompactorError::Arrow {
                        context: "read a small file",
                        source: e,
                    })?;
                    report.rows_rewritten += batch.num_rows() as u64;
                    let rebuilt = table_batch(&schema, &batch, days, &file.path)?;
                    writer
                        .write(rebuilt)
                        .await
                        .map_err(|e| CompactorError::delta(&uri, "write Parquet", e))?;
                }
            }
            let adds: Vec<Add> = writer
                .flush()
                .await
                .map_err(|e| CompactorError::delta(&uri, "finish Parquet files", e))?;
            for mut add in adds {
                add.data_change = false;
                report.files_added += 1;
                report.bytes_added += u64::try_from(add.size).unwrap_or(0);
                actions.push(Action::Add(add));
            }
            for file in bin {
                report.files_removed += 1;
                report.bytes_removed += file.size;
                actions.push(Action::Remove(file.remove));
            }
            touched = true;
        }
        if touched {
            report.partitions_optimized += 1;
        }
    }
    if actions.is_empty() {
        return Ok(report);
    }
    let operation = DeltaOperation::Optimize {
        predicate: None,
        target_size: i64::try_from(config.target_file_bytes).unwrap_or(i64::MAX),
    };
    let done = CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(|e| CompactorError::delta(&uri, "commit the optimize", e))?;
    report.table_version = Some(done.version());
    Ok(report)
}

/// What `vacuum` does.
#[derive(Debug, Clone)]
pub struct VacuumConfig {
    /// Files removed (or never committed) less than this long ago are kept.
    pub retention: Duration,
    /// Only list what would be deleted.
    pub dry_run: bool,
    /// The event id files (`_dedup/`) of this many newest compactor commits
    /// are kept whatever their age: the runs' dedup window reads them.
    pub dedup_commits: usize,
}

/// What `vacuum` did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VacuumReport {
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
    /// Files deleted (or that would be, on a dry run).
    pub files_deleted: Vec<String>,
    /// Event id files under `_dedup/` deleted (or that would be): those of
    /// commits older than the dedup window and of runs that never committed,
    /// once older than the retention.
    pub id_files_deleted: Vec<String>,
}

/// Deletes data files that no version within the retention references,
/// including the files of runs that crashed before their commit (full mode).
/// The table's `_delta_log`, the manifests under `_manifests` and anything else
/// in a directory starting with `_` or `.` are never touched, except the event
/// id files under `_dedup/` that the dedup window no longer needs.
pub async fn vacuum(
    location: &Location,
    config: &VacuumConfig,
) -> Result<VacuumReport, CompactorError> {
    let table = load_existing(location).await?;
    let uri = location.to_string();
    let retention = chrono::Duration::from_std(config.retention)
        .map_err(|e| CompactorError::Config(format!("retention {:?}: {e}", config.retention)))?;
    let result = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .with_dry_run(config.dry_run)
        .await;
    let (table, metrics) = match result {
        Ok(done) => done,
        Err(DeltaTableError::NotATable(e)) => {
            return Err(CompactorError::Config(format!(
                "{uri} is not a Delta table: {e}"
            )));
        }
        Err(e) => return Err(CompactorError::delta(&uri, "vacuum", e)),
    };
    let mut files_deleted = metrics.files_deleted;
    files_deleted.sort();
    let id_files_deleted = vacuum_id_files(&table, config, retention).await?;
    Ok(VacuumReport {
        dry_run: metrics.dry_run,
        files_deleted,
        id_files_deleted,
    })
}

/// Deletes the event id files older than the retention that none of the
/// newest `dedup_commits` compactor commits names. Deleting one too many only
/// costs speed: a commit without its id file is read from its Parquet files.
async fn vacuum_id_files(
    table: &DeltaTable,
    config: &VacuumConfig,
    retention: chrono::Duration,
) -> Result<Vec<String>, CompactorError> {
    let uri = table.table_url().to_string();
    let keep: std::collections::HashSet<String> =
        crate::state::newest_commits(table, None, config.dedup_commits.max(1))
            .await?
            .into_iter()
            .filter_map(|commit| commit.ids_file.map(|f| f.file))
            .collect();
    let cutoff = chrono::Utc::now() - retention;
    let store = table.object_store();
    let prefix = deltalake::Path::from(crate::dedup::DEDUP_DIR);
    let listed: Vec<deltalake::ObjectMeta> =
        store.list(Some(&prefix)).try_collect().await.map_err(|e| {
            CompactorError::delta(&uri, "list the event id files", DeltaTableError::from(e))
        })?;
    let mut deleted = Vec::new();
    for meta in listed {
        let name = meta.location.to_string();
        if keep.contains(&name) || meta.last_modified >= cutoff {
            continue;
        }
        if !config.dry_run {
            match store.delete(&meta.location).await {
                Ok(()) | Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
                Err(e) => {
                    return Err(CompactorError::delta(
                        &uri,
                        "delete an event id file",
                        DeltaTableError::from(e),
                    ));
                }
            }
        }
        deleted.push(name);
    }
    deleted.sort();
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dates_become_days_since_the_epoch() {
        assert_eq!(days_of("1970-01-01"), Some(0));
        assert_eq!(days_of("2026-11-24"), Some(20_781));
        assert_eq!(days_of("1969-12-31"), Some(-1));
        assert_eq!(days_of("2026-13-01"), None);
    }
}
