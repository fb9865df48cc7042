//! Stage six, commit: the one Delta commit of a run (its files, checkpoints,
//! counts and `txn`), exactly once, then the manifest and the trim of the
//! local stream.

use std::collections::BTreeMap;
use std::time::Instant;

use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use serde_json::{Value, json};

use crate::dedup::IdsFile;
use crate::location::Location;
use crate::run::{RunConfig, RunReport};
use crate::source::Source;
use crate::state::{AddedFile, TableState, keys};
use crate::{CompactorError, SequenceNumber, app_id, manifest, state, table};

/// A run after [`crate::run::prepare`]: Parquet written, nothing committed yet.
pub struct Prepared {
    pub(crate) config: RunConfig,
    pub(crate) source: Source,
    pub(crate) table: DeltaTable,
    pub(crate) state: TableState,
    pub(crate) adds: Vec<Add>,
    pub(crate) ids_file: Option<IdsFile>,
    pub(crate) checkpoints: BTreeMap<String, SequenceNumber>,
    /// This attempt's random id: in its commit, its dead-letter and id files.
    pub(crate) attempt: String,
    pub(crate) report: RunReport,
    pub(crate) started: Instant,
    /// The erased couriers the run skipped (read at its start).
    pub(crate) erased: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("report", &self.report)
            .finish()
    }
}

impl Prepared {
    /// The report so far (before the commit).
    pub fn report(&self) -> &RunReport {
        &self.report
    }

    /// The commit stage: checks that no other run committed this run number, then
    /// commits the files, the checkpoints and the txn in one Delta commit,
    /// writes the COPY manifest and trims the stream.
    pub async fn commit(self) -> Result<RunReport, CompactorError> {
        self.commit_inner(true).await
    }

    /// [`Prepared::commit`] without the pre-commit check of the txn version:
    /// only delta-rs' conflict checker stands between two racing runs. For
    /// tests of that checker only (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
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
        // An erasure recorded while this run read may name couriers whose
        // positions it wrote: commit nothing; the next run skips them.
        let erased_now = crate::erasure::erased_couriers(&self.config.table).await?;
        let new: Vec<&String> = erased_now.difference(&self.erased).collect();
        if !new.is_empty() {
            return Err(CompactorError::State(format!(
                "{} courier(s) were erased while this run read the stream (an erasure request under {}/_erasure/ appeared); this run committed nothing: run again (it skips them)",
                new.len(),
                self.config.table
            )));
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
            (
                keys::ATTEMPT.to_owned(),
                Value::String(self.attempt.clone()),
            ),
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
            // The commit may have landed though its answer was lost (delta-rs
            // then retries the put and meets its own commit as a conflict, or
            // the error is the lost answer itself): the log says whose it is.
            Err(error) => match self.landed().await? {
                Landed::Ours(version) => {
                    tracing::warn!(
                        run,
                        version,
                        error = %error,
                        "the commit landed though its answer was lost; it is this attempt's"
                    );
                    version
                }
                Landed::Other(committed) => {
                    return Err(CompactorError::AlreadyCommitted {
                        app_id: app,
                        run,
                        committed,
                    });
                }
                Landed::No => return Err(CompactorError::delta(&uri, "commit", error)),
            },
        };
        self.report.committed = true;
        self.report.table_version = version;
        if !self.adds.is_empty() {
            let files: Vec<AddedFile> = self.adds.iter().map(AddedFile::from).collect();
            let manifest =
                manifest::write_manifest(&self.table, &self.config.manifests, version, &files)
                    .await?;
            self.report.manifest = Some(manifest);
        }
        // Retention of the local stream: the committed checkpoints cover these segments.
        self.report.segments_trimmed = self.source.trim(&self.checkpoints);
        Ok(self.finish_report())
    }

    /// Whether this run's commit is in the log after a failed commit call:
    /// this attempt's (its attempt id), another attempt's, or none.
    async fn landed(&self) -> Result<Landed, CompactorError> {
        let app = app_id(&self.config.stream_name);
        let Some(table) = table::load(&self.config.table).await? else {
            return Ok(Landed::No);
        };
        let newest = state::newest_commits(&table, Some(&app), 1).await?;
        Ok(match newest.first() {
            Some(c) if c.run == self.report.run && c.attempt.as_deref() == Some(&self.attempt) => {
                Landed::Ours(c.version)
            }
            Some(c) if c.run >= self.report.run => Landed::Other(c.run),
            _ => Landed::No,
        })
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
            "records_lost": r.records_lost,
            "shards_with_loss": r.shards_with_loss,
            "rows_written": r.rows_written,
            "files_added": r.files_added,
            "dead_letter_file": r.dead_letter_file,
            "dead_letter_reasons": r.dead_letter_reasons,
            "replay_from": r.replay_from,
            "replay_skipped_existing": r.replay_skipped_existing,
            "erased_skipped": r.erased_skipped,
        })
    }

    fn finish_report(mut self) -> RunReport {
        self.report.duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(0);
        self.report
    }
}

/// Whose commit of a run is in the log.
enum Landed {
    /// This attempt's, at this table version.
    Ours(u64),
    /// Another attempt's (the run number it committed).
    Other(i64),
    /// None.
    No,
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
