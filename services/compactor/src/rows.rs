//! Stage four, rows: valid positions become Arrow batches and Parquet files
//! (not yet referenced by the table), with the dedup window applied in the
//! same task (see [`RowWriter`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Schema, SchemaRef};
use courier_model::position::Position;
use delta_kernel::expressions::Scalar;
use deltalake::DeltaTable;
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use indexmap::IndexMap;

use crate::CompactorError;
use crate::dedup::{IdSet, IdsFile, IdsWriter};

/// Rows per Arrow RecordBatch handed to the Parquet writer.
pub const BATCH_ROWS: usize = 65_536;

/// Positions per message from the decoding side to the writer task: decoded
/// positions are several times larger than their Arrow rows, so they travel
/// in small chunks ([`CHUNKS_IN_FLIGHT`] at most) and the writer task
/// gathers them into Arrow batches of [`BATCH_ROWS`].
const CHUNK_POSITIONS: usize = 8_192;

/// Chunks queued for the writer task at most.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The Arrow columns of one `event_date` partition's rows: the table's
/// columns without the partition column, which is in the files' path.
struct Rows {
    schema: SchemaRef,
    event_id: StringBuilder,
    courier_id: StringBuilder,
    lat: Float64Builder,
    lon: Float64Builder,
    recorded_at: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    accuracy_m: Float64Builder,
    speed_mps: Float64Builder,
    heading_deg: Float64Builder,
    order_id: StringBuilder,
    len: usize,
}

impl Rows {
    fn new(schema: SchemaRef) -> Self {
        let ts = || TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC");
        Self {
            schema,
            event_id: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 36),
            courier_id: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16),
            lat: Float64Builder::with_capacity(BATCH_ROWS),
            lon: Float64Builder::with_capacity(BATCH_ROWS),
            recorded_at: ts(),
            received_at: ts(),
            accuracy_m: Float64Builder::with_capacity(BATCH_ROWS),
            speed_mps: Float64Builder::with_capacity(BATCH_ROWS),
            heading_deg: Float64Builder::with_capacity(BATCH_ROWS),
            order_id: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16),
            len: 0,
        }
    }

    fn push(&mut self, p: &Position) {
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.event_id
            .append_value(p.event_id.as_uuid().hyphenated().encode_lower(&mut id));
        self.courier_id.append_value(p.courier_id.as_str());
        self.lat.append_value(p.lat.get());
        self.lon.append_value(p.lon.get());
        self.recorded_at
            .append_value(p.recorded_at.timestamp_micros());
        self.received_at
            .append_value(p.received_at.timestamp_micros());
        self.accuracy_m.append_option(p.accuracy_m.map(|v| v.get()));
        self.speed_mps.append_option(p.speed_mps.map(|v| v.get()));
        self.heading_deg
            .append_option(p.heading_deg.map(|v| v.get()));
        self.order_id
            .append_option(p.order_id.as_ref().map(|o| o.as_str()));
        self.len += 1;
    }

    /// The batch so far; the builders start over with their full capacity
    /// (a finished Arrow builder keeps none, and regrowing it by doubling for
    /// every batch cost more than filling it).
    fn finish(&mut self) -> Result<RecordBatch, CompactorError> {
        let schema = self.schema.clone();
        let mut full = std::mem::replace(self, Self::new(schema.clone()));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(full.event_id.finish()),
            Arc::new(full.courier_id.finish()),
            Arc::new(full.lat.finish()),
            Arc::new(full.lon.finish()),
            Arc::new(full.recorded_at.finish()),
            Arc::new(full.received_at.finish()),
            Arc::new(full.accuracy_m.finish()),
            Arc::new(full.speed_mps.finish()),
            Arc::new(full.heading_deg.finish()),
            Arc::new(full.order_id.finish()),
        ];
        RecordBatch::try_new(schema, columns).map_err(|e| CompactorError::Arrow {
            context: "build a record batch",
            source: e,
        })
    }
}

/// The `event_date` partition of a position: days since the epoch (UTC) of
/// its `recorded_at`.
fn event_day(position: &Position) -> i32 {
    i32::try_from(position.recorded_at.timestamp().div_euclid(86_400)).unwrap_or(i32::MAX)
}

/// The rows not yet written, split by `event_date` partition as they arrive.
///
/// delta-rs' `RecordBatchWriter::write` splits every batch by partition
/// itself: it converts the partition column to rows, hashes each one and
/// copies every column of the batch into each partition's batch. A stream's
/// positions fall almost all on one or two days, so the split is done here,
/// one comparison per position, and each partition's batch goes to
/// `write_partition` as it is.
struct DayRows {
    schema: SchemaRef,
    /// Open partitions (days since the epoch), usually one.
    days: Vec<(i32, Rows)>,
}

impl DayRows {
    /// For a table whose Arrow schema (partition column included) is `table_schema`.
    fn new(table_schema: &SchemaRef) -> Self {
        let columns: Vec<_> = table_schema
            .fields()
            .iter()
            .filter(|f| f.name() != crate::table::PARTITION_COLUMN)
            .cloned()
            .collect();
        Self {
            // As delta-rs derives its files' schema: without metadata.
            schema: Arc::new(Schema::new(columns)),
            days: Vec::new(),
        }
    }

    fn push(&mut self, position: &Position) {
        let day = event_day(position);
        let rows = match self.days.iter().position(|(d, _)| *d == day) {
            Some(i) => &mut self.days[i].1,
            None => {
                self.days.push((day, Rows::new(self.schema.clone())));
                let last = self.days.len() - 1;
                &mut self.days[last].1
            }
        };
        rows.push(position);
    }

    /// Rows across the open partitions.
    fn len(&self) -> usize {
        self.days.iter().map(|(_, rows)| rows.len).sum()
    }

    /// The batch of every partition that has rows (`event_date` days,
    /// batch); the partitions that had none since the last call are closed.
    fn finish(&mut self) -> Result<Vec<(i32, RecordBatch)>, CompactorError> {
        self.days.retain(|(_, rows)| rows.len > 0);
        self.days
            .iter_mut()
            .map(|(day, rows)| Ok((*day, rows.finish()?)))
            .collect()
    }
}

/// The partition values of the `event_date` partition `day` (days since the epoch).
fn partition_values(day: i32) -> IndexMap<String, Scalar> {
    IndexMap::from([(crate::table::PARTITION_COLUMN.to_owned(), Scalar::Date(day))])
}

/// Columns whose values are all distinct: no dictionary encoding. A
/// dictionary of unique values only grows until the writer gives it up for
/// plain encoding, after hashing every value into it. (Coordinates and times
/// repeat enough for dictionaries to pay: 21 instead of 28 bytes per row.)
const DISTINCT_COLUMNS: [&str; 1] = ["event_id"];

/// Parquet writer settings: snappy (fast, what delta-rs uses by default),
/// row groups of 128 K rows, so the writer holds at most one such row group of
/// Arrow data besides the encoded file, and plain encoding for the columns of
/// distinct values ([`DISTINCT_COLUMNS`]).
pub(crate) fn writer_properties() -> parquet::file::properties::WriterProperties {
    DISTINCT_COLUMNS
        .iter()
        .fold(
            parquet::file::properties::WriterProperties::builder(),
            |builder, column| {
                builder.set_column_dictionary_enabled(
                    parquet::schema::types::ColumnPath::from(*column),
                    false,
                )
            },
        )
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_created_by(format!("courier compactor {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Counts kept by the writer task, read by the progress output and the report.
#[derive(Default)]
struct Written {
    rows: AtomicU64,
    duplicates: AtomicU64,
    /// Positions of a replay already in the table (their partition's files).
    existing: AtomicU64,
}

impl Written {
    fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
}

/// What the writer task hands back: the files it added and the run's id file.
type WriterOutput = (Vec<Add>, Option<IdsFile>);

/// What the writer task owns.
struct WriterTask {
    writer: RecordBatchWriter,
    rows: DayRows,
    /// The dedup window, then every id of this run too.
    seen: IdSet,
    ids: IdsWriter,
    written: Arc<Written>,
    uri: String,
    target_rows: u64,
    /// A replay's check against the table itself.
    existing: Option<ExistingIds>,
}

/// The event ids already in the table, per `event_date` partition, loaded
/// the first time a replayed position of that date comes by (only the
/// `event_id` column of the partition's files, as of the run's snapshot):
/// a replay writes no position twice, however far back it reaches, beyond
/// the dedup window.
pub(crate) struct ExistingIds {
    store: deltalake::logstore::ObjectStoreRef,
    /// The snapshot's files per partition (days since the epoch).
    files: std::collections::HashMap<i32, Vec<String>>,
    loaded: std::collections::HashSet<i32>,
    ids: IdSet,
}

impl ExistingIds {
    /// The files of every partition of `table`'s loaded snapshot.
    pub(crate) fn of(table: &DeltaTable) -> Result<Self, CompactorError> {
        let snapshot = table
            .snapshot()
            .map_err(|e| CompactorError::delta(table.table_url().as_str(), "snapshot", e))?;
        let mut files: std::collections::HashMap<i32, Vec<String>> = Default::default();
        for file in snapshot.log_data().iter() {
            let date = file
                .partition_values_map()
                .get(crate::table::PARTITION_COLUMN)
                .cloned()
                .flatten()
                .and_then(|d| crate::maintenance::days_of(&d))
                .ok_or_else(|| {
                    CompactorError::State(format!(
                        "file {} has no valid {} partition value",
                        file.path(),
                        crate::table::PARTITION_COLUMN
                    ))
                })?;
            files
                .entry(date)
                .or_default()
                .push(file.path().into_owned());
        }
        Ok(Self {
            store: table.object_store(),
            files,
            loaded: Default::default(),
            ids: IdSet::default(),
        })
    }

    /// Whether `position` is in the table already (loading its partition's
    /// ids the first time).
    async fn contains(&mut self, position: &Position, uri: &str) -> Result<bool, CompactorError> {
        let day = event_day(position);
        if self.loaded.insert(day) {
            let started = std::time::Instant::now();
            let before = self.ids.len();
            for path in self.files.get(&day).map(Vec::as_slice).unwrap_or_default() {
                // The snapshot's paths are decoded already (as optimize reads them).
                let location = deltalake::Path::from(path.as_str());
                let bytes = crate::location::get_bytes(self.store.as_ref(), &location)
                    .await
                    .map_err(|e| CompactorError::Storage {
                        context: format!("read {path} of table {uri} (replay check)"),
                        source: Box::new(e),
                    })?;
                crate::dedup::read_event_ids(bytes, path, &mut self.ids, usize::MAX)?;
            }
            tracing::info!(
                event_date_days = day,
                ids = self.ids.len() - before,
                ms = started.elapsed().as_millis(),
                "replay: event ids of a partition loaded from the table"
            );
        }
        Ok(self.ids.contains(position.event_id.as_uuid()))
    }
}

/// The writer task: drops the positions already seen, writes the rest as
/// Parquet (files finished every `target_rows` rows) and their ids to the id
/// file; returns the Add actions and the id file.
async fn write_positions(
    mut task: WriterTask,
    mut batches: tokio::sync::mpsc::Receiver<Vec<Position>>,
) -> Result<WriterOutput, CompactorError> {
    let mut adds = Vec::new();
    let mut in_files = 0u64;
    loop {
        let next = batches.recv().await;
        let last = next.is_none();
        if let Some(positions) = next {
            let mut duplicates = 0u64;
            let mut existing = 0u64;
            for (i, position) in positions.iter().enumerate() {
                if let Some(ahead) = positions.get(i + crate::dedup::PREFETCH_AHEAD) {
                    task.seen.prefetch(ahead.event_id.as_uuid());
                }
                let id = position.event_id.as_uuid();
                if let Some(table) = task.existing.as_mut()
                    && table.contains(position, &task.uri).await?
                {
                    existing += 1;
                    continue;
                }
                if task.seen.insert(*id) {
                    task.ids.push(id);
                    task.rows.push(position);
                } else {
                    duplicates += 1;
                }
            }
            drop(positions);
            task.written
                .duplicates
                .fetch_add(duplicates, Ordering::Relaxed);
            task.written.existing.fetch_add(existing, Ordering::Relaxed);
        }
        let pending = task.rows.len();
        if pending == 0 || (pending < BATCH_ROWS && !last) {
            if last {
                break;
            }
            continue;
        }
        task.ids.write_batch().await?;
        for (day, batch) in task.rows.finish()? {
            let rows = batch.num_rows() as u64;
            task.writer
                .write_partition(batch, &partition_values(day), WriteMode::Default)
                .await
                .map_err(|e| CompactorError::delta(&task.uri, "write Parquet", e))?;
            task.written.rows.fetch_add(rows, Ordering::Relaxed);
            in_files += rows;
        }
        if in_files >= task.target_rows {
            adds.extend(finish_files(&mut task.writer, &task.uri).await?);
            in_files = 0;
        }
        if last {
            break;
        }
    }
    adds.extend(finish_files(&mut task.writer, &task.uri).await?);
    Ok((adds, task.ids.finish().await?))
}

async fn finish_files(
    writer: &mut RecordBatchWriter,
    uri: &str,
) -> Result<Vec<Add>, CompactorError> {
    writer
        .flush()
        .await
        .map_err(|e| CompactorError::delta(uri, "finish Parquet files", e))
}

/// The error of a writer task that stopped taking batches.
async fn writer_failed(
    task: Option<tokio::task::JoinHandle<Result<WriterOutput, CompactorError>>>,
) -> CompactorError {
    match task {
        Some(task) => match task.await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => CompactorError::State("the Parquet writer stopped early".into()),
            Err(e) => CompactorError::State(format!("the Parquet writer task failed: {e}")),
        },
        None => CompactorError::State("the Parquet writer is gone".into()),
    }
}

/// The rows stage as the reading side sees it: valid positions go in, in
/// chunks of [`CHUNK_POSITIONS`], to the writer task, which drops the ones the
/// dedup window has seen, builds Arrow batches, writes Parquet and the run's
/// id file. Reading and decoding run on one core, this task on the other;
/// at most [`CHUNKS_IN_FLIGHT`] chunks are in flight between them.
pub(crate) struct RowWriter {
    batches: tokio::sync::mpsc::Sender<Vec<Position>>,
    task: Option<tokio::task::JoinHandle<Result<WriterOutput, CompactorError>>>,
    written: Arc<Written>,
    pending: Vec<Position>,
}

impl RowWriter {
    /// Starts the writer task for `table`, with the dedup window `seen`.
    pub(crate) fn spawn(
        table: &DeltaTable,
        seen: IdSet,
        ids: IdsWriter,
        target_rows: u64,
        existing: Option<ExistingIds>,
    ) -> Result<Self, CompactorError> {
        let uri = table.table_url().to_string();
        let writer = RecordBatchWriter::for_table(table)
            .map_err(|e| CompactorError::delta(&uri, "create the writer", e))?
            .with_writer_properties(writer_properties());
        let (batches, batch_rx) = tokio::sync::mpsc::channel::<Vec<Position>>(CHUNKS_IN_FLIGHT);
        let written = Arc::new(Written::default());
        let task = tokio::spawn(write_positions(
            WriterTask {
                rows: DayRows::new(&writer.arrow_schema()),
                writer,
                seen,
                ids,
                written: written.clone(),
                uri,
                target_rows,
                existing,
            },
            batch_rx,
        ));
        Ok(Self {
            batches,
            task: Some(task),
            written,
            pending: Vec::with_capacity(CHUNK_POSITIONS),
        })
    }

    /// Adds one valid position (sent on with a full batch).
    pub(crate) async fn push(&mut self, position: Position) -> Result<(), CompactorError> {
        self.pending.push(position);
        if self.pending.len() >= CHUNK_POSITIONS {
            let full = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_POSITIONS));
            self.send(full).await?;
        }
        Ok(())
    }

    async fn send(&mut self, batch: Vec<Position>) -> Result<(), CompactorError> {
        if self.batches.send(batch).await.is_err() {
            return Err(writer_failed(self.task.take()).await);
        }
        Ok(())
    }

    /// Rows written so far.
    pub(crate) fn rows(&self) -> u64 {
        self.written.rows()
    }

    /// Duplicates dropped so far.
    pub(crate) fn duplicates(&self) -> u64 {
        self.written.duplicates()
    }

    /// Sends the last batch and waits for the writer: the files it added,
    /// the run's id file and the final counts.
    pub(crate) async fn finish(mut self) -> Result<RowsWritten, CompactorError> {
        let last = std::mem::take(&mut self.pending);
        if !last.is_empty() {
            self.send(last).await?;
        }
        let Self {
            batches,
            task,
            written,
            ..
        } = self;
        drop(batches);
        let (adds, ids_file) = match task {
            Some(task) => task.await.map_err(|e| {
                CompactorError::State(format!("the Parquet writer task failed: {e}"))
            })??,
            None => return Err(CompactorError::State("the Parquet writer is gone".into())),
        };
        Ok(RowsWritten {
            adds,
            ids_file,
            rows: written.rows(),
            duplicates: written.duplicates(),
            existing: written.existing.load(Ordering::Relaxed),
        })
    }
}

/// What the rows stage produced.
pub(crate) struct RowsWritten {
    /// The Parquet files added (not yet committed).
    pub(crate) adds: Vec<Add>,
    /// The run's id file, when it wrote rows.
    pub(crate) ids_file: Option<IdsFile>,
    /// Rows written.
    pub(crate) rows: u64,
    /// Positions dropped as duplicates.
    pub(crate) duplicates: u64,
    /// Positions of a replay found in the table already.
    pub(crate) existing: u64,
}
