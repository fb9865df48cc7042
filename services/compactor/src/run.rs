//! One compactor run, stage by stage in the order data flows:
//! [`crate::source`] (read the shards from their checkpoints),
//! [`crate::decode`] (records to positions or dead letters),
//! [`crate::dedup`] (the window of ids already in the table),
//! [`crate::rows`] (Arrow batches and Parquet files),
//! [`crate::dead_letters`], [`crate::commit`] (the one Delta commit),
//! [`crate::manifest`] and [`crate::state`] (what the next run reads back).
//! [`prepare`] runs the stages up to the commit; [`Prepared::commit`] the
//! rest; [`run`] both.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use courier_model::avro::DecodeLimits;
use serde::Serialize;

pub use crate::commit::Prepared;
use crate::dead_letters::DeadLetters;
use crate::dedup::IdsWriter;
pub use crate::inspect::{RunSummary, ShardStatus, StatusReport, runs, status};
use crate::location::Location;
pub use crate::manifest::default_manifests;
use crate::rows::RowWriter;
use crate::source::{self, ReadAhead, Source, SourceConfig};
use crate::{CompactorError, SequenceNumber, app_id, decode, dedup, manifest, state, table};

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
    /// shards (default 3 M): bounds the run's memory whatever the backlog; a
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
    /// Bounds on decoding one stream record (a record past them is
    /// dead-lettered with the reason, and the run goes on).
    pub decode_limits: DecodeLimits,
    /// Go on when records the compactor has not read are gone from the
    /// stream (counted in `records_lost`); by default the run fails and says
    /// which records are gone.
    pub accept_data_loss: bool,
    /// A replay: read every shard from the first record that arrived at or
    /// after this time (Kinesis `AT_TIMESTAMP`, the local stream by its
    /// records' arrival time) instead of from its checkpoint, and drop the
    /// positions already in the table (the `event_id`s of the partitions
    /// they fall in). The checkpoints end where a normal run's would.
    pub replay_from: Option<chrono::DateTime<chrono::Utc>>,
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
            max_positions: Some(3_000_000),
            dedup_window_ids: 3_000_000,
            dedup_commits: 24,
            target_file_rows: 1_000_000,
            progress_every: Duration::from_secs(10),
            progress_bar: false,
            decode_limits: DecodeLimits::default(),
            accept_data_loss: false,
            replay_from: None,
        }
    }
}

/// `<table>_dead_letter`, beside the table.
pub fn default_dead_letters(table: &Location) -> Location {
    table.with_suffix("_dead_letter")
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
    /// Dead letters by reason: `field: rule` for each rule an invalid
    /// position broke (a position breaking two counts under both), or
    /// `undecodable record`; at most 64 keys, the rest as `other reasons`.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Shards not read because a parent shard is not read to its end yet
    /// (resharding; they are read by a later run).
    pub shards_deferred: Vec<String>,
    /// Whether the run stopped before the end of the stream because of
    /// `max_positions` (or deferred shards): run again to read on.
    pub backlog: bool,
    /// Records that were gone from the stream before this run could read
    /// them (only with `accept_data_loss`; otherwise the run fails). Kinesis
    /// cannot count expired records: see `shards_with_loss`.
    pub records_lost: u64,
    /// Shards where records were gone before this run could read them (with
    /// `accept_data_loss`).
    pub shards_with_loss: Vec<String>,
    /// Stream segments deleted after the commit.
    pub segments_trimmed: u64,
    /// The replay's start time (RFC 3339), when this run was a replay (`--from`).
    pub replay_from: Option<String>,
    /// Positions a replay read that were in the table already (their
    /// partitions' files), beyond what the dedup window dropped.
    pub replay_skipped_existing: u64,
    /// Positions of erased couriers dropped (neither written nor dead-lettered).
    pub erased_skipped: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// The first stages of a run: reads every shard from its checkpoint to its
/// end as of now (or `max_records` per shard, or the run's position budget),
/// decodes, drops duplicates and writes the valid, new positions as Parquet
/// files (not yet referenced by the table) and the dead letters. Nothing is
/// committed: [`Prepared::commit`] does that.
pub async fn prepare(config: RunConfig) -> Result<Prepared, CompactorError> {
    let started = Instant::now();
    let run_started = chrono::Utc::now();
    let uri = config.table.to_string();
    let table = table::open_or_create(&config.table).await?;
    let state =
        state::read_state(&table, &app_id(&config.stream_name), config.dedup_commits).await?;
    manifest::recover_last(&table, &config.manifests, &state).await?;
    // The dedup set is sized once for the window and what this run may add.
    // (whole records are read, so a run may pass its budget by a little).
    let run_ids = config
        .max_positions
        .and_then(|max| usize::try_from(max).ok())
        .map_or(0, |max| max + max / 16);
    let seen = dedup::window(
        &table,
        &state,
        config.dedup_commits,
        config.dedup_window_ids,
        run_ids,
    )
    .await?;
    let run = state.run + 1;
    let attempt = uuid::Uuid::new_v4().simple().to_string();
    let erased = crate::erasure::erased_couriers(&config.table).await?;
    let existing = match config.replay_from {
        Some(_) => Some(crate::rows::ExistingIds::of(&table)?),
        None => None,
    };
    tracing::info!(
        table = %uri,
        stream = %config.stream_name,
        run,
        attempt = %attempt,
        table_version = state.version,
        dedup_window_ids = seen.len(),
        replay_from = ?config.replay_from,
        erased_couriers = erased.len(),
        "compactor run started"
    );

    let source = Source::open(&config.source, &config.stream_name).await?;
    let mut reading = Reading {
        rows: RowWriter::spawn(
            &table,
            seen,
            IdsWriter::new(&table, run, &attempt),
            config.target_file_rows,
            existing,
        )?,
        dead: DeadLetters::new(config.dead_letters.clone(), run, &attempt),
        report: RunReport {
            stream: config.stream_name.clone(),
            table: uri,
            run,
            replay_from: config
                .replay_from
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            ..RunReport::default()
        },
        progress: Progress::new(&config),
        erased: crate::decode::Erased {
            couriers: erased,
            skipped: 0,
        },
    };
    let mut checkpoints = state.checkpoints.clone();
    let shards = source.shards().await?;
    let mut finished: HashMap<String, bool> =
        shards.iter().map(|s| (s.shard_id.clone(), false)).collect();
    let per_shard_positions = config
        .max_positions
        .map(|max| max.div_ceil(shards.len().max(1) as u64));
    // Kinesis: the next shards that can be read already (no parent to wait
    // for) are read ahead concurrently, a window of READ_AHEAD_SHARDS.
    let mut ahead: HashMap<String, ReadAhead> = HashMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let shard_id = shard.shard_id.as_str();
        if !source::readable(shard, &finished) {
            tracing::info!(shard = shard_id, parents = ?shard.parents, "a parent shard is not read to its end yet; this shard waits for a later run");
            reading.report.shards_deferred.push(shard_id.to_owned());
            reading.report.backlog = true;
            continue;
        }
        if matches!(source, Source::Kinesis(_)) {
            for next in shards[i..].iter().take(source::READ_AHEAD_SHARDS) {
                if !ahead.contains_key(&next.shard_id) && source::readable(next, &finished) {
                    let reader = source
                        .open_shard(
                            next,
                            state.checkpoints.get(&next.shard_id),
                            config.max_records,
                            run_started,
                            config.accept_data_loss,
                            config.replay_from,
                        )
                        .await?;
                    ahead.insert(next.shard_id.clone(), ReadAhead::start(reader));
                }
            }
        }
        let after = state.checkpoints.get(shard_id);
        let reader = match ahead.remove(shard_id) {
            Some(reader) => reader,
            None => ReadAhead::start(
                source
                    .open_shard(
                        shard,
                        after,
                        config.max_records,
                        run_started,
                        config.accept_data_loss,
                        config.replay_from,
                    )
                    .await?,
            ),
        };
        let outcome = reading
            .read_shard(reader, shard_id, per_shard_positions, &config.decode_limits)
            .await?;
        // A closed shard whose last records were left for the next run is not finished.
        finished.insert(shard_id.to_owned(), outcome.finished);
        // A replay never moves a checkpoint back: records after it are read
        // again, never skipped.
        if let Some(seq) = outcome.last
            && Some(&seq) != after
            && after.is_none_or(|after| seq > *after)
        {
            checkpoints.insert(shard_id.to_owned(), seq);
        }
    }
    let Reading {
        rows,
        mut dead,
        mut report,
        progress,
        erased,
    } = reading;
    report.erased_skipped = erased.skipped;
    progress.finish();
    let written = rows.finish().await?;
    report.rows_written = written.rows;
    report.duplicates_dropped = written.duplicates;
    report.replay_skipped_existing = written.existing;
    let (adds, ids_file) = (written.adds, written.ids_file);
    report.dead_lettered = dead.count;
    report.dead_letter_reasons = std::mem::take(&mut dead.reasons);
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
        attempt,
        report,
        started,
        erased: erased.couriers,
    })
}

/// What the stages of one run share while it reads.
struct Reading {
    rows: RowWriter,
    dead: DeadLetters,
    report: RunReport,
    progress: Progress,
    erased: crate::decode::Erased,
}

/// How the read of one shard ended.
struct ShardOutcome {
    /// The last record read (the shard's new checkpoint), if any.
    last: Option<SequenceNumber>,
    /// Whether the shard is closed and was read to its very end.
    finished: bool,
}

impl Reading {
    /// Reads one shard to the end of the run's range, or until `budget`
    /// positions (whole records only: the checkpoint stays on the last
    /// record read).
    async fn read_shard(
        &mut self,
        mut reader: ReadAhead,
        shard_id: &str,
        budget: Option<u64>,
        limits: &DecodeLimits,
    ) -> Result<ShardOutcome, CompactorError> {
        let mut last = None;
        let mut positions = 0u64;
        let mut stopped_early = false;
        'read: loop {
            let batch = reader.next_batch().await?;
            if batch.is_empty() {
                break;
            }
            for record in batch {
                if budget.is_some_and(|budget| positions >= budget) {
                    stopped_early = true;
                    self.report.backlog = true;
                    break 'read;
                }
                self.report.records_read += 1;
                let (declared, decoded) = decode::decode_into(
                    &record,
                    shard_id,
                    limits,
                    &mut self.rows,
                    &mut self.dead,
                    &mut self.erased,
                )
                .await?;
                positions += declared;
                self.report.positions_decoded += decoded;
                last = Some(record.sequence_number);
            }
            self.progress
                .tick(shard_id, &self.report, &self.rows, &self.dead, &reader);
        }
        let reader = reader.finish().await?;
        self.report.records_lost += reader.lost();
        if reader.had_loss() {
            self.report.shards_with_loss.push(shard_id.to_owned());
        }
        Ok(ShardOutcome {
            last,
            finished: reader.finished() && !stopped_early,
        })
    }
}

/// Progress for people: a bar on a terminal, a log line every
/// `progress_every` otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    every: Duration,
    last: Instant,
}

impl Progress {
    fn new(config: &RunConfig) -> Self {
        let bar = config.progress_bar.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            every: config.progress_every,
            last: Instant::now(),
        }
    }

    fn tick(
        &mut self,
        shard_id: &str,
        report: &RunReport,
        rows: &RowWriter,
        dead: &DeadLetters,
        reader: &ReadAhead,
    ) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{shard_id}: {} records read, {} rows, {} duplicates, {} dead letters; {}",
                report.records_read,
                rows.rows(),
                rows.duplicates(),
                dead.count,
                reader.lag()
            ));
        } else if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            tracing::info!(
                shard = shard_id,
                records_read = report.records_read,
                positions = report.positions_decoded,
                rows = rows.rows(),
                duplicates = rows.duplicates(),
                dead_lettered = dead.count,
                lag = %reader.lag(),
                "progress"
            );
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
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
