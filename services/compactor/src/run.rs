//! One compactor run, in two stages: [`prepare`] (read, decode, validate,
//! dedup, write Parquet and dead letters) and [`Prepared::commit`] (the single
//! Delta commit, the manifest, the trim). [`run`] does both.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use base64::Engine as _;
use courier_model::avro::{AvroPosition, decode_record};
use courier_model::position::{Position, TimeRules};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::logstore::object_store::buffered::BufWriter;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use serde::Serialize;
use serde_json::{Value, json};

use tokio::io::AsyncWriteExt as _;

use crate::location::Location;
use crate::source::{self, Source, SourceConfig};
use crate::table::{self, AddedFile, TableState, keys};
use crate::{CompactorError, SequenceNumber, app_id};

/// Rows per Arrow RecordBatch handed to the Parquet writer.
pub const BATCH_ROWS: usize = 65_536;

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The stream to read.
    pub source: SourceConfig,
    /// The stream name.
    pub stream_name: String,
    /// The Delta table.
    pub table: Location,
    /// At most this many records per shard per run (default: to the end).
    pub max_records: Option<u64>,
    /// At most about this many positions per run, shared evenly between the
    /// shards (default 4 M): bounds the run's memory whatever the backlog; a
    /// run that stops early says so (`backlog`) and the next one reads on.
    pub max_positions: Option<u64>,
    /// The dedup window holds at most about this many event ids from earlier
    /// commits (the newest commits first; default 3 M).
    pub dedup_window_ids: usize,
    /// The dedup window: the files added by this many last compactor commits.
    pub dedup_commits: usize,
    /// Where dead-letter files go (default: `<table>_dead_letter`).
    pub dead_letters: Location,
    /// Where the COPY manifests go (default: `<table>/_manifests`).
    pub manifests: Location,
    /// Roll a new set of Parquet files after about this many rows.
    pub target_file_rows: u64,
    /// Log the progress this often (when there is no progress bar).
    pub progress_every: Duration,
    /// Draw a progress bar on stderr (a terminal) instead of progress logs.
    pub progress_bar: bool,
}

impl RunConfig {
    /// A run of the local stream under `data_dir` into the local table `table_dir`.
    pub fn new(data_dir: &Path, stream_name: &str, table_dir: &Path) -> Self {
        Self::with(
            SourceConfig::Local {
                data_dir: data_dir.to_owned(),
            },
            stream_name,
            Location::local(table_dir),
        )
    }

    /// A run of `source` into `table`, with the defaults.
    pub fn with(source: SourceConfig, stream_name: &str, table: Location) -> Self {
        Self {
            source,
            stream_name: stream_name.to_owned(),
            dead_letters: default_dead_letters(&table),
            manifests: default_manifests(&table),
            table,
            max_records: None,
            max_positions: Some(4_000_000),
            dedup_window_ids: 3_000_000,
            dedup_commits: 24,
            target_file_rows: 1_000_000,
            progress_every: Duration::from_secs(10),
            progress_bar: false,
        }
    }
}

/// `<table>_dead_letter`, beside the table.
pub fn default_dead_letters(table: &Location) -> Location {
    table.with_suffix("_dead_letter")
}

/// `<table>/_manifests` (a hidden directory of the table: Delta readers and
/// `vacuum` leave directories starting with `_` alone).
pub fn default_manifests(table: &Location) -> Location {
    table.child(table::MANIFEST_DIR)
}

/// The JSON run report printed on stdout.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunReport {
    /// The stream.
    pub stream: String,
    /// The table directory.
    pub table: String,
    /// This run's number (the txn version it committed or tried).
    pub run: i64,
    /// Whether this run committed.
    pub committed: bool,
    /// Stream records read.
    pub records_read: u64,
    /// Positions decoded from the records.
    pub positions_decoded: u64,
    /// Valid positions dropped as duplicates (within the run or the window).
    pub duplicates_dropped: u64,
    /// Records or positions written to the dead-letter file.
    pub dead_lettered: u64,
    /// Rows written to the table.
    pub rows_written: u64,
    /// Parquet files added.
    pub files_added: u64,
    /// The table version after the run.
    pub table_version: u64,
    /// Checkpoints after the run (decimal strings).
    pub checkpoints: BTreeMap<String, String>,
    /// The COPY manifest of the files added, if any.
    pub manifest: Option<String>,
    /// The dead-letter file, if any.
    pub dead_letter_file: Option<String>,
    /// Shards not read because a parent shard is not read to its end yet
    /// (resharding; they are read by a later run).
    pub shards_deferred: Vec<String>,
    /// Whether the run stopped before the end of the stream because of
    /// `max_positions` (or deferred shards): run again to read on.
    pub backlog: bool,
    /// Stream segments deleted after the commit.
    pub segments_trimmed: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// A run after [`prepare`]: Parquet written, nothing committed yet.
pub struct Prepared {
    config: RunConfig,
    source: Source,
    table: DeltaTable,
    state: TableState,
    adds: Vec<Add>,
    ids_file: Option<table::IdsFile>,
    checkpoints: BTreeMap<String, SequenceNumber>,
    report: RunReport,
    started: Instant,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("report", &self.report)
            .finish()
    }
}

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
    event_date: Date32Builder,
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
            event_date: Date32Builder::with_capacity(BATCH_ROWS),
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
        let days = p.recorded_at.timestamp().div_euclid(86_400);
        self.event_date
            .append_value(i32::try_from(days).unwrap_or(i32::MAX));
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
            Arc::new(full.event_date.finish()),
        ];
        RecordBatch::try_new(schema, columns).map_err(|e| CompactorError::Arrow {
            context: "build a record batch",
            source: e,
        })
    }
}

fn avro_json(p: &AvroPosition) -> Value {
    json!({
        "event_id": p.event_id,
        "courier_id": p.courier_id,
        "lat": p.lat,
        "lon": p.lon,
        "recorded_at": p.recorded_at,
        "received_at": p.received_at,
        "accuracy_m": p.accuracy_m,
        "speed_mps": p.speed_mps,
        "heading_deg": p.heading_deg,
        "order_id": p.order_id,
    })
}

/// An object written as a stream (a multipart upload; a temporary file
/// locally) that appears whole under its name only when finished: a crashed
/// attempt leaves nothing under that name.
struct StreamedObject {
    out: BufWriter,
    /// How errors name it.
    display: String,
}

impl StreamedObject {
    fn new(store: deltalake::logstore::ObjectStoreRef, path: &str, display: String) -> Self {
        Self {
            out: BufWriter::new(store, deltalake::Path::from(path)),
            display,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CompactorError> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| CompactorError::io(format!("write {}", self.display), e))
    }

    async fn finish(mut self) -> Result<(), CompactorError> {
        self.out
            .shutdown()
            .await
            .map_err(|e| CompactorError::io(format!("finish {}", self.display), e))
    }
}

struct DeadLetters {
    location: Location,
    name: String,
    /// Opened on the first dead letter (no directory or file without one).
    out: Option<StreamedObject>,
    line: Vec<u8>,
    count: u64,
}

impl DeadLetters {
    fn new(location: Location, run: i64) -> Self {
        Self {
            location,
            name: format!("run-{run:020}.jsonl"),
            out: None,
            line: Vec::new(),
            count: 0,
        }
    }

    async fn push(&mut self, entry: Value) -> Result<(), CompactorError> {
        let out = match &mut self.out {
            Some(out) => out,
            None => self.out.insert(StreamedObject::new(
                self.location.store()?,
                &self.name,
                self.location.display_of(&self.name),
            )),
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &entry)
            .map_err(|e| CompactorError::State(format!("serialize a dead letter: {e}")))?;
        self.line.push(b'\n');
        out.write(&self.line).await?;
        self.count += 1;
        Ok(())
    }

    /// Completes the upload (a rerun of the same run number replaces the
    /// file), or deletes a stale file of a crashed attempt when there is
    /// nothing to report.
    async fn finish(self) -> Result<Option<String>, CompactorError> {
        match self.out {
            Some(out) => {
                out.finish().await?;
                Ok(Some(self.location.display_of(&self.name)))
            }
            None => {
                self.location.delete(&self.name).await?;
                Ok(None)
            }
        }
    }
}

/// The run's event ids, streamed to `_dedup/run-<run>-<random>.ids` under the
/// table root (16 raw bytes per id): the next runs' dedup window reads this
/// instead of parsing the ids back out of Parquet. The random part keeps two
/// racing runs of the same number off each other's file; the loser's is an
/// orphan that `vacuum` deletes.
struct IdsWriter {
    file: String,
    out: StreamedObject,
    /// The ids of the current batch, written by [`IdsWriter::write_batch`].
    batch: Vec<u8>,
    count: u64,
}

impl IdsWriter {
    fn new(table: &DeltaTable, run: i64) -> Self {
        let file = format!(
            "{}/run-{run:020}-{}.ids",
            table::DEDUP_DIR,
            uuid::Uuid::new_v4().simple()
        );
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

    fn push(&mut self, id: &uuid::Uuid) {
        self.batch.extend_from_slice(id.as_bytes());
        self.count += 1;
    }

    async fn write_batch(&mut self) -> Result<(), CompactorError> {
        self.out.write(&self.batch).await?;
        self.batch.clear();
        Ok(())
    }

    /// Completes the upload; no file when the run wrote no rows.
    async fn finish(mut self) -> Result<Option<table::IdsFile>, CompactorError> {
        if self.count == 0 {
            return Ok(None);
        }
        self.write_batch().await?;
        self.out.finish().await?;
        Ok(Some(table::IdsFile {
            file: self.file,
            ids: self.count,
        }))
    }
}

fn undecodable(
    shard_id: &str,
    seq: &SequenceNumber,
    index: Option<usize>,
    error: String,
    data: &[u8],
) -> Value {
    json!({
        "kind": "undecodable",
        "reasons": [error],
        "shard_id": shard_id,
        "sequence_number": seq.as_str(),
        "datum_index": index,
        "data_base64": base64::engine::general_purpose::STANDARD.encode(data),
    })
}

/// Stage one: reads every shard from its checkpoint to its end as of now (or
/// `max_records` per shard), writes the valid, new positions as Parquet files
/// (not yet referenced by the table) and the dead letters.
pub async fn prepare(config: RunConfig) -> Result<Prepared, CompactorError> {
    let started = Instant::now();
    let run_started = chrono::Utc::now();
    let app = app_id(&config.stream_name);
    let uri = config.table.to_string();
    let table = table::open_or_create(&config.table).await?;
    let state = table::read_state(&table, &app, config.dedup_commits).await?;
    // Recover a manifest lost to a crash right after the previous commit.
    if let Some(last) = state.commits.first()
        && !last.adds.is_empty()
        && !config
            .manifests
            .exists(&table::manifest_name(last.version))
            .await?
    {
        tracing::info!(
            version = last.version,
            "writing the manifest a previous run did not finish"
        );
        table::write_manifest(&table, &config.manifests, last.version, &last.adds).await?;
    }
    let window = &state.commits[..config.dedup_commits.min(state.commits.len())];
    let window_started = Instant::now();
    let seen = table::window_ids(&table, window, config.dedup_window_ids).await?;
    let window_ms = window_started.elapsed().as_millis();
    let run = state.run + 1;
    tracing::info!(
        table = %uri,
        stream = %config.stream_name,
        run,
        table_version = state.version,
        dedup_window_ids = seen.len(),
        dedup_window_ms = window_ms,
        "compactor run started"
    );

    let source = Source::open(&config.source, &config.stream_name).await?;
    let writer = RecordBatchWriter::for_table(&table)
        .map_err(|e| CompactorError::delta(&uri, "create the writer", e))?
        .with_writer_properties(writer_properties());
    // Reading, decoding and validating run here; dedup, the Arrow batches,
    // the id file and Parquet encoding in the writer task: two cores busy,
    // and at most two batches of positions in flight between them.
    let (batches, batch_rx) = tokio::sync::mpsc::channel::<Vec<Position>>(2);
    let written = Arc::new(Written::default());
    let mut writer_task = Some(tokio::spawn(write_positions(
        WriterTask {
            rows: Rows::new(writer.arrow_schema()),
            writer,
            seen,
            ids: IdsWriter::new(&table, run),
            written: written.clone(),
            uri: uri.clone(),
            target_rows: config.target_file_rows,
        },
        batch_rx,
    )));
    let mut pending: Vec<Position> = Vec::with_capacity(BATCH_ROWS);
    let mut dead = DeadLetters::new(config.dead_letters.clone(), run);
    let mut report = RunReport {
        stream: config.stream_name.clone(),
        table: uri.clone(),
        run,
        ..RunReport::default()
    };
    let mut checkpoints = state.checkpoints.clone();
    let rules = TimeRules::default();
    let shards = source.shards().await?;
    let mut finished: HashMap<String, bool> =
        shards.iter().map(|s| (s.shard_id.clone(), false)).collect();
    let mut last_progress = Instant::now();
    let per_shard_positions = config
        .max_positions
        .map(|max| max.div_ceil(shards.len().max(1) as u64));
    let bar = config.progress_bar.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });

    for shard in &shards {
        let shard_id = shard.shard_id.as_str();
        if !source::readable(shard, &finished) {
            tracing::info!(shard = shard_id, parents = ?shard.parents, "a parent shard is not read to its end yet; this shard waits for a later run");
            report.shards_deferred.push(shard_id.to_owned());
            report.backlog = true;
            continue;
        }
        let after = state.checkpoints.get(shard_id);
        let mut reader = source
            .open_shard(shard, after, config.max_records, run_started)
            .await?;
        let mut last_seq = after.cloned();
        let mut shard_positions = 0u64;
        let mut stopped_early = false;
        'read: loop {
            let batch = reader.next_batch().await?;
            if batch.is_empty() {
                break;
            }
            for record in batch {
                if per_shard_positions.is_some_and(|budget| shard_positions >= budget) {
                    // Whole records only: the checkpoint stays on the last one read.
                    stopped_early = true;
                    report.backlog = true;
                    break 'read;
                }
                report.records_read += 1;
                let seq = record.sequence_number;
                let datums = match decode_record(&record.data) {
                    Ok(d) => d,
                    Err(e) => {
                        dead.push(undecodable(
                            shard_id,
                            &seq,
                            None,
                            e.to_string(),
                            &record.data,
                        ))
                        .await?;
                        last_seq = Some(seq);
                        continue;
                    }
                };
                shard_positions += datums.len() as u64;
                for (index, datum) in datums.into_iter().enumerate() {
                    let avro = match datum {
                        Ok(a) => a,
                        Err(e) => {
                            dead.push(undecodable(
                                shard_id,
                                &seq,
                                Some(index),
                                e.to_string(),
                                &record.data,
                            ))
                            .await?;
                            continue;
                        }
                    };
                    report.positions_decoded += 1;
                    let position = match avro.validate(&rules) {
                        Ok(p) => p,
                        Err(errors) => {
                            let reasons: Vec<String> =
                                errors.iter().map(ToString::to_string).collect();
                            dead.push(json!({
                                "kind": "invalid",
                                "reasons": reasons,
                                "shard_id": shard_id,
                                "sequence_number": seq.as_str(),
                                "datum_index": index,
                                "position": avro_json(&avro),
                            }))
                            .await?;
                            continue;
                        }
                    };
                    pending.push(position);
                    if pending.len() >= BATCH_ROWS {
                        let full = std::mem::replace(&mut pending, Vec::with_capacity(BATCH_ROWS));
                        if batches.send(full).await.is_err() {
                            return Err(writer_failed(writer_task.take()).await);
                        }
                    }
                }
                last_seq = Some(seq);
            }
            if let Some(bar) = &bar {
                bar.set_message(format!(
                    "{shard_id}: {} records read, {} rows, {} duplicates, {} dead letters; {}",
                    report.records_read,
                    written.rows(),
                    written.duplicates(),
                    dead.count,
                    reader.lag()
                ));
            } else if last_progress.elapsed() >= config.progress_every {
                last_progress = Instant::now();
                tracing::info!(
                    shard = shard_id,
                    records_read = report.records_read,
                    positions = report.positions_decoded,
                    rows = written.rows(),
                    duplicates = written.duplicates(),
                    dead_lettered = dead.count,
                    lag = %reader.lag(),
                    "progress"
                );
            }
        }
        // A closed shard whose last records were left for the next run is not finished.
        finished.insert(shard_id.to_owned(), reader.finished() && !stopped_early);
        if let Some(seq) = last_seq
            && Some(&seq) != after
        {
            checkpoints.insert(shard_id.to_owned(), seq);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !pending.is_empty() && batches.send(pending).await.is_err() {
        return Err(writer_failed(writer_task.take()).await);
    }
    drop(batches);
    let (adds, ids_file) = match writer_task.take() {
        Some(task) => task
            .await
            .map_err(|e| CompactorError::State(format!("the Parquet writer task failed: {e}")))??,
        None => (Vec::new(), None),
    };
    report.rows_written = written.rows();
    report.duplicates_dropped = written.duplicates();
    report.dead_lettered = dead.count;
    report.dead_letter_file = dead.finish().await?;
    report.files_added = adds.len() as u64;
    report.table_version = state.version;
    report.checkpoints = checkpoints
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    Ok(Prepared {
        config,
        source,
        table,
        state,
        adds,
        ids_file,
        checkpoints,
        report,
        started,
    })
}

/// Parquet writer settings: snappy (fast, what delta-rs uses by default) and
/// row groups of 128 K rows, so the writer holds at most one such row group of
/// Arrow data besides the encoded file.
fn writer_properties() -> parquet::file::properties::WriterProperties {
    parquet::file::properties::WriterProperties::builder()
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
type WriterOutput = (Vec<Add>, Option<table::IdsFile>);

/// What the writer task owns.
struct WriterTask {
    writer: RecordBatchWriter,
    rows: Rows,
    /// The dedup window, then every id of this run too.
    seen: table::IdSet,
    ids: IdsWriter,
    written: Arc<Written>,
    uri: String,
    target_rows: u64,
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
    while let Some(positions) = batches.recv().await {
        let mut duplicates = 0u64;
        for position in &positions {
            let id = position.event_id.as_uuid();
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
        if task.rows.len == 0 {
            continue;
        }
        task.ids.write_batch().await?;
        let batch = task.rows.finish()?;
        let rows = batch.num_rows() as u64;
        task.writer
            .write(batch)
            .await
            .map_err(|e| CompactorError::delta(&task.uri, "write Parquet", e))?;
        task.written.rows.fetch_add(rows, Ordering::Relaxed);
        in_files += rows;
        if in_files >= task.target_rows {
            adds.extend(finish_files(&mut task.writer, &task.uri).await?);
            in_files = 0;
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

impl Prepared {
    /// The report so far (before the commit).
    pub fn report(&self) -> &RunReport {
        &self.report
    }

    /// Stage two: checks that no other run committed this run number, then
    /// commits the files, the checkpoints and the txn in one Delta commit,
    /// writes the COPY manifest and trims the stream.
    pub async fn commit(self) -> Result<RunReport, CompactorError> {
        self.commit_inner(true).await
    }

    /// [`Prepared::commit`] without the pre-commit check of the txn version:
    /// only delta-rs' conflict checker stands between two racing runs. For
    /// tests of that checker.
    #[doc(hidden)]
    pub async fn commit_without_precheck(self) -> Result<RunReport, CompactorError> {
        self.commit_inner(false).await
    }

    async fn commit_inner(mut self, precheck: bool) -> Result<RunReport, CompactorError> {
        let app = app_id(&self.config.stream_name);
        let uri = self.report.table.clone();
        let run = self.report.run;
        if self.report.records_read == 0 {
            // Nothing to do: no commit.
            self.report.run = self.state.run;
            return Ok(self.finish_report());
        }
        if precheck {
            let committed = current_txn(&self.config.table, &app).await?;
            if committed >= run || committed != self.state.run {
                return Err(CompactorError::AlreadyCommitted {
                    app_id: app,
                    run,
                    committed,
                });
            }
        }
        let checkpoints: serde_json::Map<String, Value> = self
            .checkpoints
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect();
        let mut metadata = vec![
            (keys::APP_ID.to_owned(), Value::String(app.clone())),
            (
                keys::STREAM.to_owned(),
                Value::String(self.config.stream_name.clone()),
            ),
            (keys::RUN.to_owned(), Value::from(run)),
            (keys::CHECKPOINTS.to_owned(), Value::Object(checkpoints)),
            (keys::REPORT.to_owned(), self.committed_counts()),
        ];
        if let Some(ids) = &self.ids_file {
            metadata.push((keys::DEDUP_IDS.to_owned(), ids.to_json()));
        }
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(&app, run))
            .with_metadata(metadata);
        let actions: Vec<Action> = self.adds.iter().cloned().map(Action::Add).collect();
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(vec![table::PARTITION_COLUMN.to_owned()]),
            predicate: None,
        };
        // Built on the snapshot read at the start of the run: any commit since
        // goes through the conflict checker, which fails us on a txn of our app id.
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| CompactorError::delta(&uri, "snapshot", e))?;
        let result = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await;
        let version = match result {
            Ok(done) => done.version(),
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(conflict),
            }) => {
                let committed = current_txn(&self.config.table, &app).await?;
                if committed >= run {
                    return Err(CompactorError::AlreadyCommitted {
                        app_id: app,
                        run,
                        committed,
                    });
                }
                return Err(CompactorError::delta(
                    &uri,
                    "commit",
                    DeltaTableError::Transaction {
                        source: TransactionError::CommitConflict(conflict),
                    },
                ));
            }
            Err(e) => return Err(CompactorError::delta(&uri, "commit", e)),
        };
        self.report.committed = true;
        self.report.table_version = version;
        if !self.adds.is_empty() {
            let files: Vec<AddedFile> = self.adds.iter().map(AddedFile::from).collect();
            let manifest =
                table::write_manifest(&self.table, &self.config.manifests, version, &files).await?;
            self.report.manifest = Some(manifest);
        }
        // Retention of the local stream: the committed checkpoints cover these segments.
        self.report.segments_trimmed = self.source.trim(&self.checkpoints);
        Ok(self.finish_report())
    }

    /// The counts of the run, kept in the commit itself (`courier.report`) so
    /// that `compactor runs` can list every run even when its stdout was lost.
    fn committed_counts(&self) -> Value {
        let r = &self.report;
        json!({
            "records_read": r.records_read,
            "positions_decoded": r.positions_decoded,
            "duplicates_dropped": r.duplicates_dropped,
            "dead_lettered": r.dead_lettered,
            "rows_written": r.rows_written,
            "files_added": r.files_added,
            "dead_letter_file": r.dead_letter_file,
        })
    }

    fn finish_report(mut self) -> RunReport {
        self.report.duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(0);
        self.report
    }
}

async fn current_txn(table: &Location, app: &str) -> Result<i64, CompactorError> {
    let Some(table) = table::load(table).await? else {
        return Ok(0);
    };
    let snapshot = table
        .snapshot()
        .map_err(|e| CompactorError::delta(table.table_url().as_str(), "snapshot", e))?;
    Ok(snapshot
        .transaction_version(table.log_store().as_ref(), app)
        .await
        .map_err(|e| CompactorError::delta(table.table_url().as_str(), "read the transaction", e))?
        .unwrap_or(0))
}

/// A whole run: [`prepare`], then [`Prepared::commit`].
pub async fn run(config: RunConfig) -> Result<RunReport, CompactorError> {
    prepare(config).await?.commit().await
}

/// [`run`], stopped before its commit when `shutdown` resolves (with the
/// signal's name): nothing is committed and the next run redoes the work. Once
/// the commit has started it is finished (one atomic put, then the manifest).
pub async fn run_until(
    config: RunConfig,
    shutdown: impl std::future::Future<Output = &'static str>,
) -> Result<RunReport, CompactorError> {
    let prepared = tokio::select! {
        prepared = prepare(config) => prepared?,
        signal = shutdown => {
            tracing::warn!(signal, "stopping before the commit; this run committed nothing");
            return Err(CompactorError::Interrupted(signal));
        }
    };
    prepared.commit().await
}

/// One committed run, as `compactor runs` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    /// The table version the run committed.
    pub table_version: u64,
    /// The run number.
    pub run: i64,
    /// Checkpoints after the run.
    pub checkpoints: BTreeMap<String, String>,
    /// The run's counts as committed (`records_read`, `rows_written`, ...).
    pub report: Option<Value>,
    /// Files the run added.
    pub files_added: usize,
    /// The COPY manifest of those files (written now if the run's own write
    /// was lost to a crash), or `None` when the run added no file.
    pub manifest: Option<String>,
}

/// The committed runs of `stream_name` after table version `after`, oldest first.
pub async fn runs(
    table_location: &Location,
    stream_name: &str,
    after: Option<u64>,
    manifests: &Location,
) -> Result<Vec<RunSummary>, CompactorError> {
    let Some(table) = table::load(table_location).await? else {
        return Ok(Vec::new());
    };
    let commits = table::commits_since(&table, &app_id(stream_name), after).await?;
    let mut out = Vec::with_capacity(commits.len());
    for commit in commits {
        let manifest = if commit.adds.is_empty() {
            None
        } else {
            let name = table::manifest_name(commit.version);
            if manifests.exists(&name).await? {
                Some(manifests.display_of(&name))
            } else {
                Some(table::write_manifest(&table, manifests, commit.version, &commit.adds).await?)
            }
        };
        out.push(RunSummary {
            table_version: commit.version,
            run: commit.run,
            checkpoints: commit
                .checkpoints
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            report: commit.report,
            files_added: commit.adds.len(),
            manifest,
        });
    }
    Ok(out)
}

/// Per-shard status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardStatus {
    /// Last committed sequence number (decimal string), if any.
    pub checkpoint: Option<String>,
    /// Newest sequence number in the stream (local stream only).
    pub latest: Option<String>,
    /// Records not yet committed (latest − checkpoint; local stream only,
    /// Kinesis cannot count them without reading them).
    pub lag: Option<u64>,
    /// How far behind the tip of the shard the first uncommitted record is,
    /// in milliseconds (Kinesis `MillisBehindLatest`; `None` for the local
    /// stream and for closed shards read to their end).
    pub lag_ms: Option<i64>,
}

/// The `status` report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    /// The table version (none: no table yet).
    pub table_version: Option<u64>,
    /// The last committed run.
    pub run: i64,
    /// Rows in the table (sum of `numRecords` of the active files).
    pub rows: u64,
    /// Active data files.
    pub files: u64,
    /// Per shard.
    pub shards: BTreeMap<String, ShardStatus>,
}

/// Reads the table's compactor state and the stream's lag.
pub async fn status(
    source: &SourceConfig,
    stream_name: &str,
    table: &Location,
) -> Result<StatusReport, CompactorError> {
    let app = app_id(stream_name);
    let (version, state, (rows, files)) = match table::load(table).await? {
        Some(t) => {
            let state = table::read_state(&t, &app, 1).await?;
            (Some(state.version), state, table::row_count(&t)?)
        }
        None => (None, TableState::default(), (0, 0)),
    };
    let source = Source::open(source, stream_name).await?;
    let mut shards = BTreeMap::new();
    let mut ids: Vec<String> = source
        .shards()
        .await?
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    for id in state.checkpoints.keys() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    for id in ids {
        let checkpoint = state.checkpoints.get(&id).cloned();
        let latest = source.latest_local(&id)?;
        let lag = latest.map(|latest| {
            let done = checkpoint
                .as_ref()
                .and_then(SequenceNumber::to_u64)
                .unwrap_or(0);
            latest.saturating_sub(done)
        });
        let lag_ms = source.millis_behind(&id, checkpoint.as_ref()).await?;
        shards.insert(
            id,
            ShardStatus {
                checkpoint: checkpoint.map(|c| c.to_string()),
                latest: latest.map(|l| l.to_string()),
                lag,
                lag_ms,
            },
        );
    }
    Ok(StatusReport {
        table_version: version,
        run: state.run,
        rows,
        files,
        shards,
    })
}
