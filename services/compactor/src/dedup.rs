//! Stage three, dedup: the window of event ids already in the table (from
//! each run's id file, or its Parquet files), and the id file of this run.
//! The window's guarantee is documented on [`window_ids`].

use std::collections::HashSet;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType as ArrowType;
use deltalake::{DeltaTable, DeltaTableError};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::CompactorError;
use crate::location::{StreamedObject, get_bytes};
use crate::rows::BATCH_ROWS;
use crate::state::{CompactorCommit, TableState};

/// A set of event ids: 16-byte UUIDs, hashed with foldhash (fast, and seeded
/// at random per set, so crafted client ids cannot pile into one bucket).
pub type IdSet = HashSet<uuid::Uuid, foldhash::fast::RandomState>;

/// Where each run's event ids go, under the table root: a hidden directory,
/// which Delta readers and `vacuum` skip (the compactor's own `vacuum` keeps
/// the files the dedup window still needs and deletes the rest).
pub const DEDUP_DIR: &str = "_dedup";

/// A run's event ids: `ids` raw 16-byte UUIDs, one after the other, in `file`
/// (relative to the table root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsFile {
    /// Path relative to the table root.
    pub file: String,
    /// How many ids it holds.
    pub ids: u64,
}

impl IdsFile {
    /// The commitInfo value.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"file": self.file, "ids": self.ids})
    }

    pub(crate) fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            file: value.get("file")?.as_str()?.to_owned(),
            ids: value.get("ids")?.as_u64()?,
        })
    }
}

/// The dedup window: the `event_id`s of the files added by `commits` (newest
/// first). What it guarantees:
///
/// - every id of the newest commit (the last run), whatever `max_ids` says,
///   so a client's retry of any position of the last run, even a run that
///   read its whole `--max-positions`, is always dropped;
/// - then every id of the commits before it, newest first, while the window
///   holds fewer than `max_ids`;
/// - where the budget ends inside a commit, that commit's newest ids are
///   the ones kept (its id file is read from its end).
pub async fn window_ids(
    table: &DeltaTable,
    commits: &[CompactorCommit],
    max_ids: usize,
) -> Result<IdSet, CompactorError> {
    let store = table.object_store();
    let mut ids = IdSet::default();
    // The id files say how many ids they hold: one allocation, no rehashing.
    let known: u64 = commits
        .iter()
        .filter_map(|c| c.ids_file.as_ref().map(|f| f.ids))
        .sum();
    ids.reserve(usize::try_from(known).unwrap_or(max_ids).min(max_ids));
    for (used, commit) in commits.iter().enumerate() {
        // The newest commit always whole: the window is never smaller than a run.
        let budget = if used == 0 { usize::MAX } else { max_ids };
        if ids.len() >= budget {
            tracing::info!(
                commits = used,
                ids = ids.len(),
                "dedup window limited by its id budget"
            );
            break;
        }
        read_commit_ids(table, &store, commit, &mut ids, budget).await?;
    }
    Ok(ids)
}

/// The ids of one commit: from its id file when it has a complete one, from
/// the `event_id` column of its Parquet files otherwise (commits of older
/// versions, or an id file lost).
async fn read_commit_ids(
    table: &DeltaTable,
    store: &deltalake::logstore::ObjectStoreRef,
    commit: &CompactorCommit,
    ids: &mut IdSet,
    max_ids: usize,
) -> Result<(), CompactorError> {
    if let Some(file) = &commit.ids_file {
        match read_ids_file(store, file).await {
            Ok(bytes) => {
                // Newest first: a cut keeps the newest ids.
                for id in bytes.chunks_exact(16).rev() {
                    if ids.len() >= max_ids {
                        break;
                    }
                    if let Ok(id) = uuid::Uuid::from_slice(id) {
                        ids.insert(id);
                    }
                }
                return Ok(());
            }
            Err(problem) => tracing::warn!(
                version = commit.version,
                file = %file.file,
                problem,
                "reading the commit's event ids from its Parquet files instead"
            ),
        }
    }
    // Newest files first (a run adds them in the order it wrote them).
    for file in commit.adds.iter().rev() {
        if ids.len() >= max_ids {
            break;
        }
        let location = deltalake::Path::from_url_path(&file.path)
            .map_err(|e| CompactorError::State(format!("bad file path {}: {e}", file.path)))?;
        let bytes = match get_bytes(store.as_ref(), &location).await {
            Ok(b) => b,
            Err(deltalake::ObjectStoreError::NotFound { .. }) => {
                tracing::warn!(file = %file.path, "dedup window file is gone (vacuumed?); skipped");
                continue;
            }
            Err(e) => {
                return Err(CompactorError::delta(
                    table.table_url().as_str(),
                    "read a dedup window file",
                    DeltaTableError::from(e),
                ));
            }
        };
        read_event_ids(bytes, &file.path, ids, max_ids)?;
    }
    Ok(())
}

/// The bytes of a complete id file, or why not.
async fn read_ids_file(
    store: &deltalake::logstore::ObjectStoreRef,
    file: &IdsFile,
) -> Result<bytes::Bytes, String> {
    let bytes = get_bytes(store.as_ref(), &deltalake::Path::from(file.file.as_str()))
        .await
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 != file.ids.saturating_mul(16) {
        return Err(format!(
            "{} bytes where {} ids take {}",
            bytes.len(),
            file.ids,
            file.ids.saturating_mul(16)
        ));
    }
    Ok(bytes)
}

/// Reads only the `event_id` column of one Parquet file into `ids`, until
/// `ids` holds `max_ids`.
pub fn read_event_ids(
    bytes: bytes::Bytes,
    path: &str,
    ids: &mut IdSet,
    max_ids: usize,
) -> Result<(), CompactorError> {
    let perr = |source| CompactorError::Parquet {
        path: path.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(perr)?;
    let index = builder
        .schema()
        .index_of("event_id")
        .map_err(|e| CompactorError::Arrow {
            context: "find event_id",
            source: e,
        })?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(perr)?;
    for batch in reader {
        let batch = batch.map_err(|e| CompactorError::Arrow {
            context: "read event_id",
            source: e,
        })?;
        let column = arrow::compute::cast(batch.column(0), &ArrowType::Utf8).map_err(|e| {
            CompactorError::Arrow {
                context: "cast event_id",
                source: e,
            }
        })?;
        let strings = column.as_string::<i32>();
        for i in 0..strings.len() {
            if ids.len() >= max_ids {
                return Ok(());
            }
            if strings.is_valid(i)
                && let Ok(id) = uuid::Uuid::try_parse(strings.value(i))
            {
                ids.insert(id);
            }
        }
    }
    Ok(())
}

/// The run's event ids, streamed to `_dedup/run-<run>-<random>.ids` under the
/// table root (16 raw bytes per id): the next runs' dedup window reads this
/// instead of parsing the ids back out of Parquet. The random part keeps two
/// racing runs of the same number off each other's file; the loser's is an
/// orphan that `vacuum` deletes.
pub(crate) struct IdsWriter {
    file: String,
    out: StreamedObject,
    /// The ids of the current batch, written by [`IdsWriter::write_batch`].
    batch: Vec<u8>,
    count: u64,
}

impl IdsWriter {
    pub(crate) fn new(table: &DeltaTable, run: i64, attempt: &str) -> Self {
        let file = format!("{}/run-{run:020}-{attempt}.ids", DEDUP_DIR);
        let display = format!(
            "{}/{file}",
            table.table_url().as_str().trim_end_matches('/')
        );
        Self {
            out: StreamedObject::new(table.object_store(), &file, display),
            file,
            batch: Vec::with_capacity(BATCH_ROWS * 16),
            count: 0,
        }
    }

    pub(crate) fn push(&mut self, id: &uuid::Uuid) {
        self.batch.extend_from_slice(id.as_bytes());
        self.count += 1;
    }

    pub(crate) async fn write_batch(&mut self) -> Result<(), CompactorError> {
        self.out.write(&self.batch).await?;
        self.batch.clear();
        Ok(())
    }

    /// Completes the upload; no file when the run wrote no rows.
    pub(crate) async fn finish(mut self) -> Result<Option<IdsFile>, CompactorError> {
        if self.count == 0 {
            return Ok(None);
        }
        self.write_batch().await?;
        self.out.finish().await?;
        Ok(Some(IdsFile {
            file: self.file,
            ids: self.count,
        }))
    }
}

/// The dedup window of a run: the ids of the newest `commits` compactor
/// commits of `state`, within `max_ids` (see [`window_ids`]); logs its size
/// and how long it took to read.
pub async fn window(
    table: &DeltaTable,
    state: &TableState,
    commits: usize,
    max_ids: usize,
) -> Result<IdSet, CompactorError> {
    let started = std::time::Instant::now();
    let newest = &state.commits[..commits.min(state.commits.len())];
    let seen = window_ids(table, newest, max_ids).await?;
    tracing::info!(
        dedup_window_ids = seen.len(),
        dedup_window_ms = started.elapsed().as_millis(),
        "dedup window read"
    );
    Ok(seen)
}
