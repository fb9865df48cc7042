//! Erasure of couriers: the ledger of requests under `<table>/_erasure/`,
//! the couriers every run skips, and `compactor erase`, which removes a
//! courier's rows from the Delta table (files rewritten without them, in one
//! commit per pass, no deletion vectors) and their lines from the dead
//! letters.
//!
//! # The ledger
//!
//! One small JSON object per request, `<table>/_erasure/<request id>.json`:
//! the request id, the courier ids, when it was recorded, the table version
//! then, and per tier (`lake`, `dead_letters`) `status` (`pending` or
//! `done`), `done_at`, what was removed and where. It is written first, so
//! every run that starts afterwards skips the couriers, then updated as each
//! tier completes. Unknown tiers and fields written by other tools are kept.
//!
//! # Crash safety and idempotence
//!
//! The lake commit carries the request in its `commitInfo`
//! (`courier.erasure`: request id, rows removed, files rewritten), so a rerun
//! counts what an earlier attempt committed and removes only rows still
//! there: none after a completed commit, so it commits nothing. Files written
//! by an attempt that crashed before its commit are never referenced by the
//! log; `vacuum` deletes them. Dead-letter files are rewritten whole (one put
//! each) without the couriers' lines: a rerun finds none left.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::datatypes::DataType as ArrowType;
use base64::Engine as _;
use courier_model::avro::{DecodeLimits, decode_record_with};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::CompactorError;
use crate::location::{Location, get_bytes};
use crate::table::{self, PARTITION_COLUMN};

/// Where the erasure requests are kept, under the table root (a hidden
/// directory: Delta readers and `vacuum` leave it alone).
pub const ERASURE_DIR: &str = "_erasure";

/// The commitInfo key of an erasure commit.
pub const COMMIT_KEY: &str = "courier.erasure";

/// Tier names in the ledger.
pub const LAKE: &str = "lake";
/// The dead-letter tier.
pub const DEAD_LETTERS: &str = "dead_letters";

/// Tier status values.
pub const PENDING: &str = "pending";
/// A tier that is done.
pub const DONE: &str = "done";

/// One erasure request as the ledger keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErasureRequest {
    /// The request id (the file name).
    pub request_id: String,
    /// The couriers to erase, sorted.
    pub courier_ids: Vec<String>,
    /// When the request was recorded (RFC 3339, UTC).
    pub requested_at: String,
    /// The table version when it was recorded (`None`: no table yet).
    pub table_version_at_request: Option<u64>,
    /// Per tier: `status`, `done_at` and what was removed.
    pub tiers: BTreeMap<String, TierStatus>,
    /// Other fields (written by other tools), kept as they are.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// The state of one tier of a request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TierStatus {
    /// `pending` or `done`.
    pub status: String,
    /// When the tier was completed (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    /// Other fields: the counts (`rows_removed`, `lines_removed`, ...).
    #[serde(flatten)]
    pub details: serde_json::Map<String, Value>,
}

impl TierStatus {
    fn pending() -> Self {
        Self {
            status: PENDING.to_owned(),
            ..Self::default()
        }
    }
}

impl ErasureRequest {
    /// Whether every tier is done.
    pub fn complete(&self) -> bool {
        self.tiers.values().all(|t| t.status == DONE)
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ledger(table: &Location) -> Location {
    table.child(ERASURE_DIR)
}

/// Every erasure request recorded for `table`, sorted by request id. An
/// unreadable request fails (skipping it would bring erased data back).
pub async fn requests(table: &Location) -> Result<Vec<ErasureRequest>, CompactorError> {
    if let Some(path) = table.local_path()
        && !path.join(ERASURE_DIR).exists()
    {
        return Ok(Vec::new());
    }
    let dir = ledger(table);
    let store = dir.store()?;
    let listed: Vec<deltalake::ObjectMeta> = store
        .list(None)
        .try_collect()
        .await
        .map_err(|e| dir.store_error("list", "", e))?;
    let mut out = Vec::new();
    for meta in listed {
        let name = meta.location.to_string();
        if !name.ends_with(".json") || name.contains('/') {
            continue;
        }
        let bytes = get_bytes(store.as_ref(), &meta.location)
            .await
            .map_err(|e| dir.store_error("read", &name, e))?;
        let request: ErasureRequest = serde_json::from_slice(&bytes).map_err(|e| {
            CompactorError::State(format!(
                "erasure request {} is not readable ({e}): fix or restore it; runs refuse to start without knowing whom to skip",
                dir.display_of(&name)
            ))
        })?;
        out.push(request);
    }
    out.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    Ok(out)
}

/// The couriers of every erasure request of `table`: runs drop their positions.
pub async fn erased_couriers(table: &Location) -> Result<BTreeSet<String>, CompactorError> {
    Ok(requests(table)
        .await?
        .into_iter()
        .flat_map(|r| r.courier_ids)
        .collect())
}

async fn write_request(table: &Location, request: &ErasureRequest) -> Result<(), CompactorError> {
    let body = serde_json::to_vec_pretty(request)
        .map_err(|e| CompactorError::State(format!("serialize the erasure request: {e}")))?;
    ledger(table)
        .put(
            &format!("{}.json", request.request_id),
            bytes::Bytes::from(body),
        )
        .await?;
    Ok(())
}

/// A request id: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with `.`
/// (it names a file).
pub fn check_request_id(id: &str) -> Result<(), CompactorError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CompactorError::Config(format!(
            "--request-id {id:?}: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'"
        )))
    }
}

/// What `erase` does.
#[derive(Debug, Clone)]
pub struct EraseConfig {
    /// The Delta table.
    pub table: Location,
    /// The request id (idempotence key).
    pub request_id: String,
    /// The couriers to erase.
    pub courier_ids: Vec<String>,
    /// The dead-letter files.
    pub dead_letters: Location,
    /// `vacuum`'s retention: the old files are deleted by the first vacuum
    /// after this much time past the erasure commit...
    pub vacuum_retention: Duration,
    /// ...and vacuum runs at least this often.
    pub vacuum_interval: Duration,
}

/// What `erase` printed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EraseReport {
    /// The request id.
    pub request_id: String,
    /// The couriers erased.
    pub courier_ids: Vec<String>,
    /// Rows removed from the table by this request (all its commits,
    /// this attempt's and earlier ones').
    pub lake_rows_removed: u64,
    /// Data files rewritten without the rows (all its commits).
    pub lake_files_rewritten: u64,
    /// The table version after the erasure (`None`: no table).
    pub table_version: Option<u64>,
    /// The table versions of the request's erasure commits.
    pub lake_commits: Vec<u64>,
    /// Dead-letter lines removed by this attempt (a rerun finds none).
    pub dead_letter_lines_removed: u64,
    /// Dead-letter files rewritten (or deleted when nothing was left) by this attempt.
    pub dead_letter_files_rewritten: u64,
    /// Dead-letter lines kept because no courier id could be read from
    /// them (a record that does not decode at all).
    pub dead_letter_lines_unattributable: u64,
    /// By when `vacuum` will have deleted the files the erasure replaced
    /// (the last erasure commit + the vacuum retention + the vacuum
    /// interval); `None` when no file was replaced.
    pub old_files_deleted_by: Option<String>,
    /// Whether every tier of the request is done.
    pub complete: bool,
}

/// Test hook (feature `test-hooks`): the process exits at the named point
/// when `COMPACTOR_TEST_CRASH_AT` names it, as a crash would stop it there.
fn crash_point(point: &str) {
    #[cfg(feature = "test-hooks")]
    if std::env::var("COMPACTOR_TEST_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("test hook: crashing at {point}");
        std::process::exit(86);
    }
    let _ = point;
}

/// Erases `config.courier_ids`: records the request, rewrites the table's
/// files that hold their rows, then the dead-letter files; idempotent.
pub async fn erase(config: &EraseConfig) -> Result<EraseReport, CompactorError> {
    check_request_id(&config.request_id)?;
    let mut couriers = BTreeSet::new();
    for id in &config.courier_ids {
        courier_model::position::CourierId::parse(id)
            .map_err(|e| CompactorError::Config(format!("--courier-id {id:?}: {e}")))?;
        couriers.insert(id.clone());
    }
    if couriers.is_empty() {
        return Err(CompactorError::Config(
            "erase needs at least one --courier-id".into(),
        ));
    }
    let courier_ids: Vec<String> = couriers.iter().cloned().collect();
    let name = format!("{}.json", config.request_id);
    let mut request = match ledger(&config.table).get(&name).await? {
        Some(bytes) => {
            let request: ErasureRequest = serde_json::from_slice(&bytes).map_err(|e| {
                CompactorError::State(format!(
                    "erasure request {} is not readable: {e}",
                    ledger(&config.table).display_of(&name)
                ))
            })?;
            if request.courier_ids != courier_ids {
                return Err(CompactorError::Config(format!(
                    "request {} was recorded for couriers {:?}, not {:?}: a request id names one request; use a new id",
                    config.request_id, request.courier_ids, courier_ids
                )));
            }
            tracing::info!(request = %config.request_id, "erasure request already recorded; finishing it");
            request
        }
        None => {
            let version = table::load(&config.table)
                .await?
                .map(|t| t.version().unwrap_or(0));
            let request = ErasureRequest {
                request_id: config.request_id.clone(),
                courier_ids: courier_ids.clone(),
                requested_at: now_text(),
                table_version_at_request: version,
                tiers: [
                    (LAKE.to_owned(), TierStatus::pending()),
                    (DEAD_LETTERS.to_owned(), TierStatus::pending()),
                ]
                .into(),
                other: Default::default(),
            };
            write_request(&config.table, &request).await?;
            tracing::info!(request = %config.request_id, couriers = courier_ids.len(), "erasure request recorded: runs skip these couriers from now on");
            request
        }
    };
    crash_point("recorded");

    let lake = erase_lake(&config.table, &request, &couriers).await?;
    let deadline = lake.last_commit_ms.and_then(|ms| {
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)?;
        let wait =
            chrono::Duration::from_std(config.vacuum_retention + config.vacuum_interval).ok()?;
        Some((at + wait).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    });
    let lake_tier = request.tiers.entry(LAKE.to_owned()).or_default();
    if lake_tier.status != DONE || lake.new_commits > 0 {
        lake_tier.status = DONE.to_owned();
        lake_tier.done_at = Some(now_text());
    }
    lake_tier
        .details
        .insert("rows_removed".into(), json!(lake.rows));
    lake_tier
        .details
        .insert("files_rewritten".into(), json!(lake.files));
    lake_tier
        .details
        .insert("commits".into(), json!(lake.commits));
    lake_tier
        .details
        .insert("old_files_deleted_by".into(), json!(deadline));
    write_request(&config.table, &request).await?;

    let dead = erase_dead_letters(&config.dead_letters, &couriers).await?;
    let dead_tier = request.tiers.entry(DEAD_LETTERS.to_owned()).or_default();
    let before_lines = dead_tier
        .details
        .get("lines_removed")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let before_files = dead_tier
        .details
        .get("files_rewritten")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if dead_tier.status != DONE || dead.lines > 0 {
        dead_tier.status = DONE.to_owned();
        dead_tier.done_at = Some(now_text());
    }
    dead_tier
        .details
        .insert("lines_removed".into(), json!(before_lines + dead.lines));
    dead_tier
        .details
        .insert("files_rewritten".into(), json!(before_files + dead.files));
    dead_tier
        .details
        .insert("lines_unattributable".into(), json!(dead.unattributable));
    dead_tier
        .details
        .insert("uri".into(), json!(config.dead_letters.to_string()));
    write_request(&config.table, &request).await?;

    Ok(EraseReport {
        request_id: config.request_id.clone(),
        courier_ids,
        lake_rows_removed: lake.rows,
        lake_files_rewritten: lake.files,
        table_version: lake.version,
        lake_commits: lake.commits,
        dead_letter_lines_removed: dead.lines,
        dead_letter_files_rewritten: dead.files,
        dead_letter_lines_unattributable: dead.unattributable,
        old_files_deleted_by: deadline,
        complete: request.complete(),
    })
}

/// The lake tier's outcome.
#[derive(Debug, Default)]
struct LakeOutcome {
    rows: u64,
    files: u64,
    version: Option<u64>,
    commits: Vec<u64>,
    new_commits: u64,
    last_commit_ms: Option<i64>,
}

/// A scan and rewrite ends after this many passes (a pass that finds rows a
/// run committed while the erasure ran, or a commit lost to a conflict, makes
/// another).
const MAX_PASSES: usize = 5;

async fn erase_lake(
    location: &Location,
    request: &ErasureRequest,
    couriers: &BTreeSet<String>,
) -> Result<LakeOutcome, CompactorError> {
    let uri = location.to_string();
    let Some(mut table) = table::load(location).await? else {
        return Ok(LakeOutcome::default());
    };
    let mut outcome = earlier_commits(&table, request).await?;
    // Files known to hold none of the couriers' rows.
    let mut clean: HashSet<String> = HashSet::new();
    for pass in 0..MAX_PASSES {
        let snapshot = table
            .snapshot()
            .map_err(|e| CompactorError::delta(&uri, "snapshot", e))?;
        let store = table.object_store();
        let mut actions: Vec<Action> = Vec::new();
        let mut new_files: Vec<String> = Vec::new();
        let (mut rows, mut files) = (0u64, 0u64);
        let candidates: Vec<_> = snapshot
            .log_data()
            .iter()
            .filter(|f| !clean.contains(&*f.path()))
            .map(|f| {
                (
                    f.path().into_owned(),
                    f.partition_values_map()
                        .get(PARTITION_COLUMN)
                        .cloned()
                        .flatten(),
                    f.remove_action(true),
                )
            })
            .collect();
        for (path, date, remove) in candidates {
            let bytes = get_bytes(store.as_ref(), &deltalake::Path::from(path.as_str()))
                .await
                .map_err(|e| CompactorError::Storage {
                    context: format!("read {path} of table {uri}"),
                    source: Box::new(e),
                })?;
            let matches = count_courier_rows(bytes.clone(), &path, couriers)?;
            if matches == 0 {
                clean.insert(path);
                continue;
            }
            let days = date
                .as_deref()
                .and_then(crate::maintenance::days_of)
                .ok_or_else(|| {
                    CompactorError::State(format!("file {path} has no valid {PARTITION_COLUMN}"))
                })?;
            for add in rewrite_without(&table, bytes, &path, days, couriers).await? {
                new_files.push(add.path.clone());
                actions.push(Action::Add(add));
            }
            actions.push(Action::Remove(remove));
            rows += matches;
            files += 1;
        }
        if actions.is_empty() {
            break;
        }
        crash_point("lake_files_written");
        let metadata = vec![(
            COMMIT_KEY.to_owned(),
            json!({
                "request_id": request.request_id,
                "rows_removed": rows,
                "files_rewritten": files,
            }),
        )];
        let result = CommitBuilder::from(CommitProperties::default().with_metadata(metadata))
            .with_actions(actions)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Delete { predicate: None },
            )
            .await;
        match result {
            Ok(done) => {
                let version = done.version();
                tracing::info!(request = %request.request_id, version, rows, files, "erasure commit");
                crash_point("lake_committed");
                outcome.rows += rows;
                outcome.files += files;
                outcome.commits.push(version);
                outcome.new_commits += 1;
                outcome.last_commit_ms = Some(chrono::Utc::now().timestamp_millis());
                clean.extend(new_files);
            }
            Err(e) if pass + 1 < MAX_PASSES => {
                tracing::warn!(request = %request.request_id, error = %e, "erasure commit failed (a concurrent commit?); scanning again");
            }
            Err(e) => return Err(CompactorError::delta(&uri, "commit the erasure", e)),
        }
        table = table::load(location).await?.ok_or_else(|| {
            CompactorError::State(format!("the table at {uri} disappeared during the erasure"))
        })?;
        if pass + 1 == MAX_PASSES {
            return Err(CompactorError::State(format!(
                "erasure {}: rows of the couriers were still found after {MAX_PASSES} passes (runs that started before the request keep committing them?); run erase again",
                request.request_id
            )));
        }
    }
    outcome.version = Some(table.version().unwrap_or(0));
    Ok(outcome)
}

/// The erasure commits of `request` already in the log (an earlier attempt's).
async fn earlier_commits(
    table: &DeltaTable,
    request: &ErasureRequest,
) -> Result<LakeOutcome, CompactorError> {
    let uri = table.table_url().to_string();
    let last = table.version().unwrap_or(0);
    let first = request.table_version_at_request.map_or(0, |v| v + 1);
    let mut outcome = LakeOutcome::default();
    for version in first..=last {
        let Some(bytes) = table
            .log_store()
            .read_commit_entry(version)
            .await
            .map_err(|e| CompactorError::delta(&uri, "read a commit", e))?
        else {
            continue;
        };
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(action) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let Some(info) = action.get("commitInfo") else {
                continue;
            };
            let Some(erasure) = info.get(COMMIT_KEY) else {
                continue;
            };
            // delta-rs keeps app metadata as given (an object); a string is
            // tolerated too.
            let erasure: Value = match erasure {
                Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                other => other.clone(),
            };
            if erasure.get("request_id").and_then(Value::as_str) != Some(&request.request_id) {
                continue;
            }
            outcome.rows += erasure
                .get("rows_removed")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            outcome.files += erasure
                .get("files_rewritten")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            outcome.commits.push(version);
            outcome.last_commit_ms = info.get("timestamp").and_then(Value::as_i64);
        }
    }
    Ok(outcome)
}

fn courier_mask(
    batch: &arrow::array::RecordBatch,
    path: &str,
    couriers: &BTreeSet<String>,
) -> Result<BooleanArray, CompactorError> {
    let column = batch
        .column_by_name("courier_id")
        .ok_or_else(|| CompactorError::State(format!("file {path} has no courier_id column")))?;
    couriers_in(column, couriers)
}

/// Which values of a `courier_id` column are one of `couriers`.
fn couriers_in(
    column: &arrow::array::ArrayRef,
    couriers: &BTreeSet<String>,
) -> Result<BooleanArray, CompactorError> {
    let column =
        arrow::compute::cast(column, &ArrowType::Utf8).map_err(|e| CompactorError::Arrow {
            context: "cast courier_id",
            source: e,
        })?;
    let strings = column.as_string::<i32>();
    Ok((0..strings.len())
        .map(|i| Some(strings.is_valid(i) && couriers.contains(strings.value(i))))
        .collect())
}

/// Rows of `couriers` in one Parquet file (reading only its `courier_id` column).
fn count_courier_rows(
    bytes: bytes::Bytes,
    path: &str,
    couriers: &BTreeSet<String>,
) -> Result<u64, CompactorError> {
    let mut count = 0u64;
    for column in table::one_column(bytes, path, "courier_id")? {
        count += couriers_in(&column?, couriers)?.true_count() as u64;
    }
    Ok(count)
}

/// Writes the rows of one file that are not the couriers' into new files of
/// the same partition (with their statistics, `numRecords` included).
async fn rewrite_without(
    table: &DeltaTable,
    bytes: bytes::Bytes,
    path: &str,
    days: i32,
    couriers: &BTreeSet<String>,
) -> Result<Vec<Add>, CompactorError> {
    let uri = table.table_url().to_string();
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(|e| CompactorError::delta(&uri, "create the writer", e))?
        .with_writer_properties(crate::rows::writer_properties());
    let schema = writer.arrow_schema();
    let perr = |source| CompactorError::Parquet {
        path: path.to_owned(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(perr)?
        .with_batch_size(65_536)
        .build()
        .map_err(perr)?;
    for batch in reader {
        let batch = batch.map_err(|e| CompactorError::Arrow {
            context: "read a file to rewrite",
            source: e,
        })?;
        let erased = courier_mask(&batch, path, couriers)?;
        let keep = arrow::compute::not(&erased).map_err(|e| CompactorError::Arrow {
            context: "invert the erasure mask",
            source: e,
        })?;
        let kept = arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| {
            CompactorError::Arrow {
                context: "filter the erased rows",
                source: e,
            }
        })?;
        if kept.num_rows() == 0 {
            continue;
        }
        let rebuilt = crate::maintenance::table_batch(&schema, &kept, days, path)?;
        writer
            .write(rebuilt)
            .await
            .map_err(|e| CompactorError::delta(&uri, "write Parquet", e))?;
    }
    let mut adds = writer
        .flush()
        .await
        .map_err(|e| CompactorError::delta(&uri, "finish Parquet files", e))?;
    for add in &mut adds {
        add.data_change = true;
    }
    Ok(adds)
}

/// The dead-letter tier's outcome.
#[derive(Debug, Default)]
struct DeadOutcome {
    lines: u64,
    files: u64,
    unattributable: u64,
}

/// The courier ids a dead-letter line names: the invalid position's
/// `courier_id`, or those of the datums of an undecodable record that still
/// decode; none when the record does not decode at all.
fn line_couriers(entry: &Value) -> Vec<String> {
    if let Some(id) = entry
        .get("position")
        .and_then(|p| p.get("courier_id"))
        .and_then(Value::as_str)
    {
        return vec![id.to_owned()];
    }
    let Some(data) = entry.get("data_base64").and_then(Value::as_str) else {
        return Vec::new();
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
        return Vec::new();
    };
    match decode_record_with(&bytes, &DecodeLimits::default()) {
        Ok(datums) => datums
            .into_iter()
            .filter_map(Result::ok)
            .map(|p| p.courier_id)
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn erase_dead_letters(
    location: &Location,
    couriers: &BTreeSet<String>,
) -> Result<DeadOutcome, CompactorError> {
    let mut outcome = DeadOutcome::default();
    if let Some(path) = location.local_path()
        && !path.exists()
    {
        return Ok(outcome);
    }
    let store = location.store()?;
    let listed: Vec<deltalake::ObjectMeta> = store
        .list(None)
        .try_collect()
        .await
        .map_err(|e| location.store_error("list", "", e))?;
    for meta in listed {
        let name = meta.location.to_string();
        if !name.ends_with(".jsonl") {
            continue;
        }
        let bytes = get_bytes(store.as_ref(), &meta.location)
            .await
            .map_err(|e| location.store_error("read", &name, e))?;
        let mut kept = Vec::with_capacity(bytes.len());
        let mut removed = 0u64;
        for line in bytes.split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let named = serde_json::from_slice::<Value>(line)
                .map(|entry| line_couriers(&entry))
                .unwrap_or_default();
            if named.is_empty() {
                outcome.unattributable += 1;
            }
            if named.iter().any(|c| couriers.contains(c)) {
                removed += 1;
                continue;
            }
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
        if removed == 0 {
            continue;
        }
        if kept.is_empty() {
            location.delete(&name).await?;
        } else {
            location.put(&name, bytes::Bytes::from(kept)).await?;
        }
        tracing::info!(file = %location.display_of(&name), removed, "dead-letter file rewritten without the erased couriers");
        outcome.lines += removed;
        outcome.files += 1;
    }
    Ok(outcome)
}

/// One request as `erasure-status` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestStatus {
    /// The request.
    #[serde(flatten)]
    pub request: ErasureRequest,
    /// Whether every tier is done.
    pub complete: bool,
    /// The tiers still pending.
    pub pending: Vec<String>,
}

/// The erasure requests of `table` (only `request_id` when given), with
/// their tiers.
pub async fn status(
    table: &Location,
    request_id: Option<&str>,
) -> Result<Vec<RequestStatus>, CompactorError> {
    if let Some(id) = request_id {
        check_request_id(id)?;
    }
    Ok(requests(table)
        .await?
        .into_iter()
        .filter(|r| request_id.is_none_or(|id| r.request_id == id))
        .map(|request| RequestStatus {
            complete: request.complete(),
            pending: request
                .tiers
                .iter()
                .filter(|(_, t)| t.status != DONE)
                .map(|(name, _)| name.clone())
                .collect(),
            request,
        })
        .collect())
}
