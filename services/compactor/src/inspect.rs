//! What operators and the loader ask of a table: the committed runs
//! (`compactor runs`) and the status (`compactor status`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::location::Location;
use crate::source::{Source, SourceConfig};
use crate::state::TableState;
use crate::{CompactorError, SequenceNumber, app_id, manifest, state, table};

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
    let commits = state::commits_since(&table, &app_id(stream_name), after).await?;
    let mut out = Vec::with_capacity(commits.len());
    for commit in commits {
        let manifest = if commit.adds.is_empty() {
            None
        } else {
            let name = manifest::manifest_name(commit.version);
            if manifests.exists(&name).await? {
                Some(manifests.display_of(&name))
            } else {
                Some(
                    manifest::write_manifest(&table, manifests, commit.version, &commit.adds)
                        .await?,
                )
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
            let state = state::read_state(&t, &app, 1).await?;
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
