//! One compactor run, in two stages: [`prepare`] (read, decode, validate,
//! dedup, write Parquet and dead letters) and [`Prepared::commit`] (the single
//! Delta commit, the manifest, the trim). [`run`] does both.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use base64::Engine as _;
use courier_model::avro::{AvroPosition, decode_record};
use courier_model::position::TimeRules;
use courier_model::stream::local::LocalStreamReader;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use serde::Serialize;
use serde_json::{Value, json};

use crate::table::{self, AddedFile, TableState, keys};
use crate::{CompactorError, SequenceNumber, app_id};

/// Rows per Arrow RecordBatch handed to the Parquet writer.
pub const BATCH_ROWS: usize = 65_536;
/// Records read from the stream per call.
const READ_RECORDS: u64 = 1_000;

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The local stream's data directory.
    pub data_dir: PathBuf,
    /// The stream name.
    pub stream_name: String,
    /// The Delta table directory.
    pub table_dir: PathBuf,
    /// At most this many records per shard per run (default: to the end).
    pub max_records: Option<u64>,
    /// The dedup window: the files added by this many last compactor commits.
    pub dedup_commits: usize,
    /// Where dead-letter files go (default: `<table>_dead_letter`).
    pub dead_letter_dir: PathBuf,
    /// Roll a new set of Parquet files after about this many rows.
    pub target_file_rows: u64,
}

impl RunConfig {
    /// A configuration with the defaults.
    pub fn new(data_dir: &Path, stream_name: &str, table_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            stream_name: stream_name.to_owned(),
            table_dir: table_dir.to_owned(),
            max_records: None,
            dedup_commits: 24,
            dead_letter_dir: default_dead_letter_dir(table_dir),
            target_file_rows: 1_000_000,
        }
    }
}

/// `<table>_dead_letter`, beside the table.
pub fn default_dead_letter_dir(table_dir: &Path) -> PathBuf {
    let mut s = table_dir.as_os_str().to_owned();
    s.push("_dead_letter");
    PathBuf::from(s)
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
    /// Stream segments deleted after the commit.
    pub segments_trimmed: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// A run after [`prepare`]: Parquet written, nothing committed yet.
pub struct Prepared {
    config: RunConfig,
    table: DeltaTable,
    state: TableState,
    adds: Vec<Add>,
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
            courier_id: StringBuilder::new(),
            lat: Float64Builder::with_capacity(BATCH_ROWS),
            lon: Float64Builder::with_capacity(BATCH_ROWS),
            recorded_at: ts(),
            received_at: ts(),
            accuracy_m: Float64Builder::with_capacity(BATCH_ROWS),
            speed_mps: Float64Builder::with_capacity(BATCH_ROWS),
            heading_deg: Float64Builder::with_capacity(BATCH_ROWS),
            order_id: StringBuilder::new(),
            event_date: Date32Builder::with_capacity(BATCH_ROWS),
            len: 0,
        }
    }

    fn push(&mut self, p: &courier_model::position::Position) {
        self.event_id.append_value(p.event_id.to_string());
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

    fn finish(&mut self) -> Result<RecordBatch, CompactorError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.courier_id.finish()),
            Arc::new(self.lat.finish()),
            Arc::new(self.lon.finish()),
            Arc::new(self.recorded_at.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.accuracy_m.finish()),
            Arc::new(self.speed_mps.finish()),
            Arc::new(self.heading_deg.finish()),
            Arc::new(self.order_id.finish()),
            Arc::new(self.event_date.finish()),
        ];
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| CompactorError::Arrow {
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

struct DeadLetters {
    final_path: PathBuf,
    tmp_path: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
    count: u64,
}

impl DeadLetters {
    fn new(dir: &Path, run: i64) -> Self {
        let final_path = dir.join(format!("run-{run:020}.jsonl"));
        Self {
            tmp_path: final_path.with_extension("jsonl.tmp"),
            final_path,
            out: None,
            count: 0,
        }
    }

    fn push(&mut self, entry: Value) -> Result<(), CompactorError> {
        if self.out.is_none() {
            if let Some(dir) = self.tmp_path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| CompactorError::io(format!("create {}", dir.display()), e))?;
            }
            let file = std::fs::File::create(&self.tmp_path).map_err(|e| {
                CompactorError::io(format!("create {}", self.tmp_path.display()), e)
            })?;
            self.out = Some(std::io::BufWriter::new(file));
        }
        if let Some(out) = self.out.as_mut() {
            serde_json::to_writer(&mut *out, &entry)
                .map_err(std::io::Error::from)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|e| CompactorError::io(format!("write {}", self.tmp_path.display()), e))?;
        }
        self.count += 1;
        Ok(())
    }

    /// Makes the file durable under its final name (overwriting a crashed
    /// attempt's), or removes a stale one when there is nothing to report.
    fn finish(self) -> Result<Option<PathBuf>, CompactorError> {
        let ctx = |p: &Path| format!("finish {}", p.display());
        match self.out {
            Some(out) => {
                let file = out
                    .into_inner()
                    .map_err(|e| CompactorError::io(ctx(&self.tmp_path), e.into_error()))?;
                file.sync_all()
                    .and_then(|_| std::fs::rename(&self.tmp_path, &self.final_path))
                    .map_err(|e| CompactorError::io(ctx(&self.final_path), e))?;
                Ok(Some(self.final_path))
            }
            None => {
                match std::fs::remove_file(&self.final_path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(CompactorError::io(ctx(&self.final_path), e)),
                }
                Ok(None)
            }
        }
    }
}

fn stream_err(stream: &str) -> impl Fn(courier_model::stream::StreamError) -> CompactorError + '_ {
    move |source| CompactorError::Stream {
        stream: stream.to_owned(),
        source,
    }
}

/// Stage one: reads every shard from its checkpoint to its end as of now (or
/// `max_records` per shard), writes the valid, new positions as Parquet files
/// (not yet referenced by the table) and the dead letters.
pub async fn prepare(config: RunConfig) -> Result<Prepared, CompactorError> {
    let started = Instant::now();
    let app = app_id(&config.stream_name);
    let uri = config.table_dir.display().to_string();
    let table = table::open_or_create(&config.table_dir).await?;
    let state = table::read_state(&table, &app, config.dedup_commits).await?;
    // Recover a manifest lost to a crash right after the previous commit.
    if let Some(last) = state.commits.first()
        && !last.adds.is_empty()
        && !table::manifest_path(&config.table_dir, last.version).exists()
    {
        table::write_manifest(&table, &config.table_dir, last.version, &last.adds)?;
    }
    let window = &state.commits[..config.dedup_commits.min(state.commits.len())];
    let mut seen = table::window_ids(&table, window).await?;
    let run = state.run + 1;

    let reader = LocalStreamReader::open(&config.data_dir, &config.stream_name)
        .map_err(stream_err(&config.stream_name))?;
    let mut writer = RecordBatchWriter::for_table(&table)
        .map_err(|e| CompactorError::delta(&uri, "create the writer", e))?;
    let mut rows = Rows::new(writer.arrow_schema());
    let mut dead = DeadLetters::new(&config.dead_letter_dir, run);
    let mut report = RunReport {
        stream: config.stream_name.clone(),
        table: uri.clone(),
        run,
        ..RunReport::default()
    };
    let mut adds: Vec<Add> = Vec::new();
    let mut rows_in_files = 0u64;
    let mut checkpoints = state.checkpoints.clone();
    let rules = TimeRules::default();

    for shard in reader.map().shards() {
        let shard_id = shard.shard_id.as_str();
        let after = match state.checkpoints.get(shard_id) {
            Some(seq) => Some(seq.to_u64().ok_or_else(|| {
                CompactorError::State(format!(
                    "checkpoint {seq} of {shard_id} does not fit a local sequence number"
                ))
            })?),
            None => None,
        };
        let latest = reader
            .latest_sequence(shard_id)
            .map_err(stream_err(&config.stream_name))?
            .unwrap_or(0);
        let start = after.unwrap_or(0);
        let mut target = latest;
        if let Some(max) = config.max_records {
            target = target.min(start.saturating_add(max));
        }
        if target <= start {
            continue;
        }
        let mut cursor = reader
            .cursor(shard_id, after)
            .map_err(stream_err(&config.stream_name))?;
        while cursor.position() < target {
            let want = (target - cursor.position()).min(READ_RECORDS);
            let batch = cursor
                .next_batch(usize::try_from(want).unwrap_or(usize::MAX))
                .map_err(stream_err(&config.stream_name))?;
            if batch.is_empty() {
                break;
            }
            for record in batch {
                report.records_read += 1;
                let seq = record.sequence_number;
                let datums = match decode_record(&record.data) {
                    Ok(d) => d,
                    Err(e) => {
                        dead.push(json!({
                            "kind": "undecodable",
                            "reasons": [e.to_string()],
                            "shard_id": shard_id,
                            "sequence_number": seq.to_string(),
                            "datum_index": null,
                            "data_base64": base64::engine::general_purpose::STANDARD.encode(&record.data),
                        }))?;
                        continue;
                    }
                };
                for (index, datum) in datums.into_iter().enumerate() {
                    let avro = match datum {
                        Ok(a) => a,
                        Err(e) => {
                            dead.push(json!({
                                "kind": "undecodable",
                                "reasons": [e.to_string()],
                                "shard_id": shard_id,
                                "sequence_number": seq.to_string(),
                                "datum_index": index,
                                "data_base64": base64::engine::general_purpose::STANDARD.encode(&record.data),
                            }))?;
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
                                "sequence_number": seq.to_string(),
                                "datum_index": index,
                                "position": avro_json(&avro),
                            }))?;
                            continue;
                        }
                    };
                    if !seen.insert(*position.event_id.as_uuid()) {
                        report.duplicates_dropped += 1;
                        continue;
                    }
                    rows.push(&position);
                    if rows.len >= BATCH_ROWS {
                        let n = rows.len as u64;
                        write_batch(&mut writer, &mut rows, &uri).await?;
                        report.rows_written += n;
                        rows_in_files += n;
                        if rows_in_files >= config.target_file_rows {
                            adds.extend(flush(&mut writer, &uri).await?);
                            rows_in_files = 0;
                        }
                    }
                }
            }
        }
        if cursor.position() > start {
            checkpoints.insert(shard_id.to_owned(), SequenceNumber::from(cursor.position()));
        }
    }
    if rows.len > 0 {
        let n = rows.len as u64;
        write_batch(&mut writer, &mut rows, &uri).await?;
        report.rows_written += n;
    }
    adds.extend(flush(&mut writer, &uri).await?);
    report.dead_lettered = dead.count;
    report.dead_letter_file = dead.finish()?.map(|p| p.display().to_string());
    report.files_added = adds.len() as u64;
    report.table_version = state.version;
    report.checkpoints = checkpoints
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    Ok(Prepared {
        config,
        table,
        state,
        adds,
        checkpoints,
        report,
        started,
    })
}

async fn write_batch(
    writer: &mut RecordBatchWriter,
    rows: &mut Rows,
    uri: &str,
) -> Result<(), CompactorError> {
    let batch = rows.finish()?;
    writer
        .write(batch)
        .await
        .map_err(|e| CompactorError::delta(uri, "write Parquet", e))
}

async fn flush(writer: &mut RecordBatchWriter, uri: &str) -> Result<Vec<Add>, CompactorError> {
    writer
        .flush()
        .await
        .map_err(|e| CompactorError::delta(uri, "finish Parquet files", e))
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
            let committed = current_txn(&self.config.table_dir, &app).await?;
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
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(&app, run))
            .with_metadata([
                (keys::APP_ID.to_owned(), Value::String(app.clone())),
                (
                    keys::STREAM.to_owned(),
                    Value::String(self.config.stream_name.clone()),
                ),
                (keys::RUN.to_owned(), Value::from(run)),
                (keys::CHECKPOINTS.to_owned(), Value::Object(checkpoints)),
            ]);
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
                let committed = current_txn(&self.config.table_dir, &app).await?;
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
            let path = table::write_manifest(&self.table, &self.config.table_dir, version, &files)?;
            self.report.manifest = Some(path.display().to_string());
        }
        // Retention: the committed checkpoints cover these segments.
        let reader = LocalStreamReader::open(&self.config.data_dir, &self.config.stream_name)
            .map_err(stream_err(&self.config.stream_name))?;
        for (shard, seq) in &self.checkpoints {
            let Some(through) = seq.to_u64() else {
                continue;
            };
            match reader.trim(shard, through) {
                Ok(n) => self.report.segments_trimmed += n as u64,
                Err(e) => {
                    tracing::warn!(shard = %shard, error = %e, "trim failed; retried next run")
                }
            }
        }
        Ok(self.finish_report())
    }

    fn finish_report(mut self) -> RunReport {
        self.report.duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(0);
        self.report
    }
}

async fn current_txn(table_dir: &Path, app: &str) -> Result<i64, CompactorError> {
    let Some(table) = table::load(table_dir).await? else {
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

/// Per-shard status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardStatus {
    /// Last committed sequence number (decimal string), if any.
    pub checkpoint: Option<String>,
    /// Newest sequence number in the stream, if any.
    pub latest: Option<String>,
    /// Records not yet committed (latest − checkpoint).
    pub lag: u64,
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
    /// Per shard.
    pub shards: BTreeMap<String, ShardStatus>,
}

/// Reads the table's compactor state and the stream's lag.
pub async fn status(
    data_dir: &Path,
    stream_name: &str,
    table_dir: &Path,
) -> Result<StatusReport, CompactorError> {
    let app = app_id(stream_name);
    let (version, state, rows) = match table::load(table_dir).await? {
        Some(t) => {
            let state = table::read_state(&t, &app, 1).await?;
            (Some(state.version), state, table::row_count(&t)?)
        }
        None => (None, TableState::default(), 0),
    };
    let reader = LocalStreamReader::open(data_dir, stream_name).map_err(stream_err(stream_name))?;
    let mut shards = BTreeMap::new();
    let mut ids: HashSet<String> = state.checkpoints.keys().cloned().collect();
    ids.extend(reader.map().shards().iter().map(|s| s.shard_id.clone()));
    for id in ids {
        let latest = if reader.map().shards().iter().any(|s| s.shard_id == id) {
            reader
                .latest_sequence(&id)
                .map_err(stream_err(stream_name))?
        } else {
            None
        };
        let checkpoint = state.checkpoints.get(&id).cloned();
        let done = checkpoint
            .as_ref()
            .and_then(SequenceNumber::to_u64)
            .unwrap_or(0);
        let lag = latest.unwrap_or(0).saturating_sub(done);
        shards.insert(
            id,
            ShardStatus {
                checkpoint: checkpoint.map(|c| c.to_string()),
                latest: latest.map(|l| l.to_string()),
                lag,
            },
        );
    }
    Ok(StatusReport {
        table_version: version,
        run: state.run,
        rows,
        shards,
    })
}
