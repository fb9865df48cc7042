//! Retention: `compactor retention` removes whole `event_date` partitions
//! older than the lake's retention by ONE Delta commit of remove actions (no
//! file is rewritten; `vacuum` deletes the files once its own retention has
//! passed), and, when asked, deletes dead-letter files older than theirs
//! (in AWS an S3 lifecycle rule does that instead). Idempotent: with nothing
//! expired there is no commit.

use std::collections::BTreeMap;

use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::DeltaOperation;
use futures::TryStreamExt as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::CompactorError;
use crate::location::Location;
use crate::table::PARTITION_COLUMN;

/// The commitInfo key of a retention commit.
pub const COMMIT_KEY: &str = "courier.retention";

/// What `retention` does.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Keep the partitions of the last this many days before today (UTC):
    /// `event_date < today - keep_days` is removed. At least 1.
    pub keep_days: u32,
    /// "Now" (tests give their own).
    pub now: chrono::DateTime<chrono::Utc>,
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Dead-letter files to expire, and how many days they are kept.
    pub dead_letters: Option<(Location, u32)>,
}

/// What `retention` did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RetentionReport {
    /// Partitions before this date (`YYYY-MM-DD`) are expired.
    pub cutoff_date: String,
    /// The partitions removed (or that would be), oldest first.
    pub partitions_removed: Vec<String>,
    /// Data files removed from the table (deleted later by `vacuum`).
    pub files_removed: u64,
    /// Rows removed (the files' `numRecords`).
    pub rows_removed: u64,
    /// The table version after the commit (`None`: nothing to do or dry run,
    /// no commit).
    pub table_version: Option<u64>,
    /// Whether nothing was changed on purpose.
    pub dry_run: bool,
    /// Dead-letter files last written before this time were expired (none
    /// when no dead-letter location was given).
    pub dead_letter_cutoff: Option<String>,
    /// Dead-letter files deleted (or that would be).
    pub dead_letter_files_deleted: Vec<String>,
}

/// Removes the expired partitions of the table at `location` (one commit)
/// and expires the dead-letter files.
pub async fn retention(
    location: &Location,
    config: &RetentionConfig,
) -> Result<RetentionReport, CompactorError> {
    if config.keep_days < 1 {
        return Err(CompactorError::Config(
            "--keep-days must be at least 1: 0 would remove every partition before today".into(),
        ));
    }
    let today = config.now.date_naive();
    let cutoff = today - chrono::Days::new(u64::from(config.keep_days));
    let cutoff_text = cutoff.format("%Y-%m-%d").to_string();
    let mut report = RetentionReport {
        cutoff_date: cutoff_text.clone(),
        dry_run: config.dry_run,
        ..RetentionReport::default()
    };
    let uri = location.to_string();
    if let Some(table) = crate::table::load(location).await? {
        let snapshot = table
            .snapshot()
            .map_err(|e| CompactorError::delta(&uri, "snapshot", e))?;
        let mut partitions: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut actions = Vec::new();
        for file in snapshot.log_data().iter() {
            let date = file
                .partition_values_map()
                .get(PARTITION_COLUMN)
                .cloned()
                .flatten()
                .ok_or_else(|| {
                    CompactorError::State(format!("file {} has no {PARTITION_COLUMN}", file.path()))
                })?;
            let day = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|e| {
                CompactorError::State(format!(
                    "file {}: {PARTITION_COLUMN} {date:?} is not a date: {e}",
                    file.path()
                ))
            })?;
            if day >= cutoff {
                continue;
            }
            let stats = file.stats().ok_or_else(|| {
                CompactorError::State(format!(
                    "file {} has no stats: its rows cannot be counted",
                    file.path()
                ))
            })?;
            let rows = serde_json::from_str::<Value>(&stats)
                .ok()
                .and_then(|v| v.get("numRecords").and_then(Value::as_u64))
                .ok_or_else(|| {
                    CompactorError::State(format!("file {} has no numRecords", file.path()))
                })?;
            let entry = partitions.entry(date).or_default();
            entry.0 += 1;
            entry.1 += rows;
            actions.push(Action::Remove(file.remove_action(true)));
        }
        report.partitions_removed = partitions.keys().cloned().collect();
        report.files_removed = partitions.values().map(|p| p.0).sum();
        report.rows_removed = partitions.values().map(|p| p.1).sum();
        if !actions.is_empty() && !config.dry_run {
            let metadata = vec![(
                COMMIT_KEY.to_owned(),
                json!({
                    "cutoff_date": cutoff_text,
                    "partitions_removed": report.partitions_removed,
                    "files_removed": report.files_removed,
                    "rows_removed": report.rows_removed,
                }),
            )];
            let done = CommitBuilder::from(CommitProperties::default().with_metadata(metadata))
                .with_actions(actions)
                .build(
                    Some(snapshot),
                    table.log_store(),
                    DeltaOperation::Delete {
                        predicate: Some(format!("{PARTITION_COLUMN} < '{cutoff_text}'")),
                    },
                )
                .await
                .map_err(|e| CompactorError::delta(&uri, "commit the retention", e))?;
            report.table_version = Some(done.version());
            tracing::info!(
                version = done.version(),
                partitions = report.partitions_removed.len(),
                files = report.files_removed,
                rows = report.rows_removed,
                "expired partitions removed"
            );
        }
    }
    if let Some((dead, keep_days)) = &config.dead_letters {
        let cutoff = config.now - chrono::Duration::days(i64::from(*keep_days));
        report.dead_letter_cutoff = Some(cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        report.dead_letter_files_deleted = expire_files(dead, cutoff, config.dry_run).await?;
    }
    Ok(report)
}

/// Deletes the `.jsonl` files under `location` last written before `cutoff`.
async fn expire_files(
    location: &Location,
    cutoff: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
) -> Result<Vec<String>, CompactorError> {
    if let Some(path) = location.local_path()
        && !path.exists()
    {
        return Ok(Vec::new());
    }
    let store = location.store()?;
    let listed: Vec<deltalake::ObjectMeta> = store
        .list(None)
        .try_collect()
        .await
        .map_err(|e| location.store_error("list", "", e))?;
    let mut deleted = Vec::new();
    for meta in listed {
        let name = meta.location.to_string();
        if !name.ends_with(".jsonl") || meta.last_modified >= cutoff {
            continue;
        }
        if !dry_run {
            location.delete(&name).await?;
        }
        deleted.push(location.display_of(&name));
    }
    deleted.sort();
    Ok(deleted)
}
