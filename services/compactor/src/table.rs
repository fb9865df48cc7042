//! The Delta table: its schema, creation, the compactor's state kept in the
//! commit log, the dedup window and the Redshift COPY manifests.

use std::collections::{BTreeMap, HashSet};

/// A set of event ids: 16-byte UUIDs, hashed with foldhash (fast, and seeded
/// at random per set, so crafted client ids cannot pile into one bucket).
pub type IdSet = HashSet<uuid::Uuid, foldhash::fast::RandomState>;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType as ArrowType;
use deltalake::kernel::{Add, DataType, StructField};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::location::{Location, get_bytes};
use crate::{CompactorError, SequenceNumber};

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

/// Where the COPY manifests go, under the table root.
pub const MANIFEST_DIR: &str = "_manifests";

/// Where each run's event ids go, under the table root: a hidden directory,
/// which Delta readers and `vacuum` skip (the compactor's own `vacuum` keeps
/// the files the dedup window still needs and deletes the rest).
pub const DEDUP_DIR: &str = "_dedup";

/// commitInfo keys written by the compactor.
pub mod keys {
    /// The application id (`courier-compactor/<stream>`).
    pub const APP_ID: &str = "courier.app_id";
    /// The stream name.
    pub const STREAM: &str = "courier.stream";
    /// The run number (equals the commit's txn version).
    pub const RUN: &str = "courier.run";
    /// `{shard_id: "<last committed sequence number>"}`.
    pub const CHECKPOINTS: &str = "courier.checkpoints";
    /// The run's counts (records read, rows written, ...).
    pub const REPORT: &str = "courier.report";
    /// `{"file": "_dedup/run-....ids", "ids": n}`: the run's event ids, 16
    /// bytes each, so the next runs' dedup window need not parse Parquet.
    pub const DEDUP_IDS: &str = "courier.dedup_ids";
}

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
        .with_save_mode(SaveMode::Ignore)
        .await
        .map_err(|e| CompactorError::delta(&location.to_string(), "create", e))?;
    // SaveMode::Ignore returns the existing table when another process won the race.
    Ok(created)
}

/// One compactor commit found in the log.
#[derive(Debug, Clone)]
pub struct CompactorCommit {
    /// Table version of the commit.
    pub version: u64,
    /// Run number.
    pub run: i64,
    /// Checkpoints after the commit.
    pub checkpoints: BTreeMap<String, SequenceNumber>,
    /// Files the commit added.
    pub adds: Vec<AddedFile>,
    /// The run's counts (`courier.report`), when the commit has them.
    pub report: Option<Value>,
    /// The run's event id file (`courier.dedup_ids`), when it wrote one.
    pub ids_file: Option<IdsFile>,
}

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

    fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            file: value.get("file")?.as_str()?.to_owned(),
            ids: value.get("ids")?.as_u64()?,
        })
    }
}

/// A data file added by a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedFile {
    /// Path relative to the table root, as in the log (URL-encoded).
    pub path: String,
    /// Size in bytes.
    pub size: i64,
}

impl From<&Add> for AddedFile {
    fn from(add: &Add) -> Self {
        Self {
            path: add.path.clone(),
            size: add.size,
        }
    }
}

/// The compactor's state as read from the table.
#[derive(Debug, Clone, Default)]
pub struct TableState {
    /// The table version read.
    pub version: u64,
    /// The last committed run number (the txn version; 0 before the first run).
    pub run: i64,
    /// The last committed sequence number per shard.
    pub checkpoints: BTreeMap<String, SequenceNumber>,
    /// The newest compactor commits, newest first (at most the dedup window,
    /// at least the newest one).
    pub commits: Vec<CompactorCommit>,
}

fn parse_checkpoints(
    value: Option<&Value>,
) -> Result<BTreeMap<String, SequenceNumber>, CompactorError> {
    let mut out = BTreeMap::new();
    let Some(value) = value else {
        return Ok(out);
    };
    let map = value.as_object().ok_or_else(|| {
        CompactorError::State(format!("{} is not an object: {value}", keys::CHECKPOINTS))
    })?;
    for (shard, seq) in map {
        let text = seq.as_str().ok_or_else(|| {
            CompactorError::State(format!("checkpoint of {shard} is not a string: {seq}"))
        })?;
        out.insert(shard.clone(), SequenceNumber::parse(text)?);
    }
    Ok(out)
}

/// Parses one commit file: the compactor commit it is, if it is one of
/// `app_id`'s (any compactor's when `None`).
fn parse_commit(
    version: u64,
    bytes: &[u8],
    app_id: Option<&str>,
) -> Result<Option<CompactorCommit>, CompactorError> {
    let mut info: Option<serde_json::Map<String, Value>> = None;
    let mut adds = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let action: Value = serde_json::from_slice(line).map_err(|e| {
            CompactorError::State(format!("commit {version} has an unreadable action: {e}"))
        })?;
        if let Some(ci) = action.get("commitInfo").and_then(Value::as_object) {
            info = Some(ci.clone());
        } else if let Some(add) = action.get("add") {
            let path = add.get("path").and_then(Value::as_str);
            let size = add.get("size").and_then(Value::as_i64);
            if let (Some(path), Some(size)) = (path, size) {
                adds.push(AddedFile {
                    path: path.to_owned(),
                    size,
                });
            }
        }
    }
    let Some(info) = info else { return Ok(None) };
    let app = info.get(keys::APP_ID).and_then(Value::as_str);
    if app.is_none() || app_id.is_some_and(|wanted| app != Some(wanted)) {
        return Ok(None);
    }
    let run = info.get(keys::RUN).and_then(Value::as_i64).ok_or_else(|| {
        CompactorError::State(format!("commit {version} has no {} number", keys::RUN))
    })?;
    Ok(Some(CompactorCommit {
        version,
        run,
        checkpoints: parse_checkpoints(info.get(keys::CHECKPOINTS))?,
        adds,
        report: info.get(keys::REPORT).cloned(),
        ids_file: info.get(keys::DEDUP_IDS).and_then(IdsFile::from_json),
    }))
}

/// Reads the compactor state of `app_id` from `table`: the txn version, and
/// the newest `window.max(1)` compactor commits (walking the log back from the
/// loaded version).
pub async fn read_state(
    table: &DeltaTable,
    app_id: &str,
    window: usize,
) -> Result<TableState, CompactorError> {
    let uri = table.table_url().to_string();
    let snapshot = table
        .snapshot()
        .map_err(|e| CompactorError::delta(&uri, "snapshot", e))?;
    let version = snapshot.version();
    let log_store = table.log_store();
    let txn = snapshot
        .transaction_version(log_store.as_ref(), app_id)
        .await
        .map_err(|e| CompactorError::delta(&uri, "read the application transaction", e))?
        .unwrap_or(0);
    let commits = newest_commits(table, Some(app_id), window.max(1)).await?;
    let newest = commits.first();
    let (run, checkpoints) = match newest {
        Some(c) if c.run == txn => (c.run, c.checkpoints.clone()),
        Some(c) => {
            return Err(CompactorError::State(format!(
                "the newest commit of {app_id} (version {}) is run {} but the table's transaction version is {txn}",
                c.version, c.run
            )));
        }
        None if txn == 0 => (0, BTreeMap::new()),
        None => {
            return Err(CompactorError::State(format!(
                "the table's transaction version of {app_id} is {txn} but no commit of it is left in the log (expired?); refusing to start from scratch"
            )));
        }
    };
    Ok(TableState {
        version,
        run,
        checkpoints,
        commits,
    })
}

/// The newest `wanted` compactor commits of `app_id` (of any compactor when
/// `None`), newest first, walking the log back from the loaded version.
pub async fn newest_commits(
    table: &DeltaTable,
    app_id: Option<&str>,
    wanted: usize,
) -> Result<Vec<CompactorCommit>, CompactorError> {
    let uri = table.table_url().to_string();
    let snapshot = table
        .snapshot()
        .map_err(|e| CompactorError::delta(&uri, "snapshot", e))?;
    let log_store = table.log_store();
    let mut commits = Vec::new();
    let mut next = Some(snapshot.version());
    while let Some(v) = next
        && commits.len() < wanted
    {
        let Some(bytes) = log_store
            .read_commit_entry(v)
            .await
            .map_err(|e| CompactorError::delta(&uri, "read a commit", e))?
        else {
            break; // expired from the log
        };
        if let Some(commit) = parse_commit(v, &bytes, app_id)? {
            commits.push(commit);
        }
        next = v.checked_sub(1);
    }
    Ok(commits)
}

/// The `event_id`s of the files added by `commits` (newest first), at most
/// `max_ids` of them: the newest commits' ids, stopping inside the commit that
/// reaches the budget.
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
        if ids.len() >= max_ids {
            tracing::info!(
                commits = used,
                ids = ids.len(),
                "dedup window limited by its id budget"
            );
            break;
        }
        read_commit_ids(table, &store, commit, &mut ids, max_ids).await?;
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
                for id in bytes.chunks_exact(16) {
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
    for file in &commit.adds {
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

/// The file name of the COPY manifest of a table version.
pub fn manifest_name(version: u64) -> String {
    format!("v{version:020}.json")
}

/// Writes the Redshift COPY manifest listing exactly `files` to
/// `manifests/v<version>.json` (one atomic put) and returns where it is.
pub async fn write_manifest(
    table: &DeltaTable,
    manifests: &Location,
    version: u64,
    files: &[AddedFile],
) -> Result<String, CompactorError> {
    let root = table.table_url();
    let mut entries = Vec::with_capacity(files.len());
    for file in files {
        // The log's paths are URL-encoded and relative to the table root: the
        // join is the file's absolute URI (file:// locally, s3:// on S3).
        let url = root
            .join(&file.path)
            .map_err(|e| CompactorError::State(format!("bad file path {}: {e}", file.path)))?;
        entries.push(serde_json::json!({
            "url": url.as_str(),
            "mandatory": true,
            "meta": {"content_length": file.size},
        }));
    }
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "entries": entries }))
        .map_err(|e| CompactorError::State(format!("serialize the manifest: {e}")))?;
    manifests
        .put(&manifest_name(version), bytes::Bytes::from(body))
        .await
}

/// The compactor commits of `app_id` after table version `after` (all of them
/// when `None`), oldest first.
pub async fn commits_since(
    table: &DeltaTable,
    app_id: &str,
    after: Option<u64>,
) -> Result<Vec<CompactorCommit>, CompactorError> {
    let uri = table.table_url().to_string();
    let snapshot = table
        .snapshot()
        .map_err(|e| CompactorError::delta(&uri, "snapshot", e))?;
    let first = after.map_or(0, |v| v + 1);
    let mut out = Vec::new();
    for version in first..=snapshot.version() {
        let Some(bytes) = table
            .log_store()
            .read_commit_entry(version)
            .await
            .map_err(|e| CompactorError::delta(&uri, "read a commit", e))?
        else {
            continue; // expired from the log
        };
        if let Some(commit) = parse_commit(version, &bytes, Some(app_id))? {
            out.push(commit);
        }
    }
    Ok(out)
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
