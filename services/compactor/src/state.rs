//! Stage eight, state: what the next run needs, kept in the commit log
//! itself. Each compactor commit's `commitInfo` holds the app id, the run
//! number, the per-shard checkpoints, the run's counts, its id file and its
//! attempt id; the Delta `txn` of the app id holds the run number too.

use std::collections::BTreeMap;

use deltalake::DeltaTable;
use deltalake::kernel::Add;
use serde_json::Value;

use crate::dedup::IdsFile;
use crate::{CompactorError, SequenceNumber};

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
    /// A random id of the attempt that made the commit: a run whose commit
    /// landed but whose answer was lost recognises its own commit by it.
    pub const ATTEMPT: &str = "courier.attempt";
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
    /// The id of the attempt that committed (`courier.attempt`).
    pub attempt: Option<String>,
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
        attempt: info
            .get(keys::ATTEMPT)
            .and_then(Value::as_str)
            .map(str::to_owned),
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
