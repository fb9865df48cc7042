//! `compactor`: the command line of the compactor library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use compactor::error::{EXIT_ERROR, EXIT_OK, EXIT_USAGE};
use compactor::maintenance::{OptimizeConfig, VacuumConfig};
use compactor::{CompactorError, Location, RunConfig, SourceConfig};

/// Compacts the courier position stream into a Delta table, exactly once.
///
/// Every flag can also be set by the environment variable named in its help
/// (flags win). AWS access (Kinesis, S3) uses the standard AWS configuration
/// chain: AWS_REGION, credentials from the environment, profile or task role,
/// and AWS_ENDPOINT_URL (with AWS_ALLOW_HTTP=true) for a local server.
///
/// Exit codes: 0 ok (also when there was nothing to do); 1 error (nothing
/// committed unless the error says otherwise); 2 bad usage or configuration;
/// 3 another run committed this run number first (this run committed
/// nothing); 4 interrupted by SIGTERM/SIGINT before the commit (nothing
/// committed; run again).
///
/// Table columns, in this fixed order (Redshift COPY matches Parquet columns by
/// position): event_id string, courier_id string, lat double, lon double,
/// recorded_at timestamp (µs, UTC), received_at timestamp (µs, UTC),
/// accuracy_m double null, speed_mps double null, heading_deg double null,
/// order_id string null, event_date date (partition column: in the path, not
/// in the Parquet files).
#[derive(Debug, Parser)]
#[command(name = "compactor", version, about, long_about)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` for CloudWatch.
    #[arg(long, env = "COMPACTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Also write the JSON this command prints on stdout, whole, as one
    /// object at this URI: a local file path or `s3://bucket/key` (an
    /// orchestrator reads the run report from there, never from log lines).
    #[arg(long, env = "COMPACTOR_OUTPUT_URI", global = true)]
    output_uri: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum SourceKind {
    /// The local stream of ingest-api (needs --data-dir).
    Local,
    /// An Amazon Kinesis data stream.
    Kinesis,
}

#[derive(Debug, clap::Args)]
struct TableArgs {
    /// The Delta table: a local directory (created if missing) or s3://bucket/prefix.
    #[arg(long, env = "COMPACTOR_TABLE_URI")]
    table_uri: String,
}

#[derive(Debug, clap::Args)]
struct StreamArgs {
    /// Which stream to read.
    #[arg(long, env = "COMPACTOR_SOURCE", value_enum, default_value_t = SourceKind::Local)]
    source: SourceKind,
    /// Data directory of the local stream (with --source local).
    #[arg(long, env = "COMPACTOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Name of the stream.
    #[arg(long, env = "COMPACTOR_STREAM_NAME")]
    stream_name: String,
}

impl StreamArgs {
    fn source(&self) -> Result<SourceConfig, CompactorError> {
        match (self.source, &self.data_dir) {
            (SourceKind::Kinesis, _) => Ok(SourceConfig::Kinesis),
            (SourceKind::Local, Some(dir)) => Ok(SourceConfig::Local {
                data_dir: dir.clone(),
            }),
            (SourceKind::Local, None) => Err(CompactorError::Config(
                "--source local needs --data-dir (COMPACTOR_DATA_DIR), the directory ingest-api writes its stream to".into(),
            )),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read every shard from its checkpoint to its end as of the start, write
    /// the new positions to the table in one commit, print a JSON run report.
    Run {
        #[command(flatten)]
        stream: StreamArgs,
        #[command(flatten)]
        table: TableArgs,
        /// Read at most this many records per shard in this run.
        #[arg(long, env = "COMPACTOR_MAX_RECORDS")]
        max_records: Option<u64>,
        /// Read at most about this many positions in this run, shared evenly
        /// by the shards (bounds memory; `backlog: true` in the report means
        /// run again). 0: no limit.
        #[arg(long, env = "COMPACTOR_MAX_POSITIONS", default_value_t = 3_000_000)]
        max_positions: u64,
        /// Dedup window: the event ids of this many last compactor commits
        /// (read from each run's id file under `<table>/_dedup/`, or from its
        /// Parquet files when that is gone), plus everything in this run...
        #[arg(long, env = "COMPACTOR_DEDUP_COMMITS", default_value_t = 24)]
        dedup_commits: usize,
        /// ...but no more commits once this many ids are in the window.
        #[arg(long, env = "COMPACTOR_DEDUP_WINDOW_IDS", default_value_t = 3_000_000)]
        dedup_window_ids: usize,
        /// Where the dead-letter files (`run-<run>.jsonl`) go: a directory or
        /// s3:// prefix. Default: `<table-uri>_dead_letter`.
        #[arg(long, env = "COMPACTOR_DEAD_LETTER_URI")]
        dead_letter_uri: Option<String>,
        /// Where the COPY manifests (`v<table version>.json`) go: a directory
        /// or s3:// prefix. Default: `<table-uri>/_manifests`.
        #[arg(long, env = "COMPACTOR_MANIFEST_URI")]
        manifest_uri: Option<String>,
        /// Finish the Parquet files (one per date partition) after about this many rows.
        #[arg(long, env = "COMPACTOR_TARGET_FILE_ROWS", default_value_t = 1_000_000)]
        target_file_rows: u64,
        /// Log the progress every this many seconds (on a terminal with text
        /// logs, a progress bar instead).
        #[arg(long, env = "COMPACTOR_PROGRESS_SECS", default_value_t = 10)]
        progress_secs: u64,
        /// Largest decompressed size of one block of a stream record, in
        /// bytes: a record that inflates past it is dead-lettered, not read.
        #[arg(long, env = "COMPACTOR_MAX_BLOCK_BYTES", default_value_t = 16 * 1024 * 1024)]
        max_block_bytes: usize,
        /// Go on when records not yet read are gone from the stream (deleted
        /// over the local stream's disk cap): they are counted in the
        /// report's `records_lost`. Without it such a run fails (exit 1) and
        /// names the records that are gone.
        #[arg(long, env = "COMPACTOR_ACCEPT_DATA_LOSS")]
        accept_data_loss: bool,
        /// Replay: read every shard from the first record that arrived at or
        /// after this RFC 3339 time (Kinesis AT_TIMESTAMP; the local stream by
        /// its records' arrival time, as far back as its segments are still
        /// on disk) to the end as of the start, instead of from the
        /// checkpoints. Positions already in the table are not written again
        /// (the event ids of the event_date partitions they fall in are read
        /// from the table, beyond the dedup window); the checkpoints end where
        /// a normal run's would (never moved back). Report: `replay_from`,
        /// `replay_skipped_existing`.
        #[arg(long, env = "COMPACTOR_FROM", value_parser = parse_time)]
        from: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Erase couriers: record the request under `<table>/_erasure/<id>.json`
    /// (every run skips the couriers from then on), rewrite the table's files
    /// holding their rows without them (one commit, no deletion vectors),
    /// then the dead-letter files without their lines; print a JSON report.
    /// Idempotent: rerun with the same request id to finish what a crash
    /// left; nothing is removed twice.
    Erase {
        #[command(flatten)]
        table: TableArgs,
        /// The request id (1-128 of A-Z a-z 0-9 . _ -): the idempotence key.
        #[arg(long, env = "COMPACTOR_ERASURE_REQUEST_ID")]
        request_id: String,
        /// A courier to erase (repeat for several).
        #[arg(long = "courier-id", required = true)]
        courier_ids: Vec<String>,
        /// Where the dead-letter files are. Default: `<table-uri>_dead_letter`.
        #[arg(long, env = "COMPACTOR_DEAD_LETTER_URI")]
        dead_letter_uri: Option<String>,
        /// `vacuum`'s retention in hours, for the `old_files_deleted_by` deadline.
        #[arg(long, env = "COMPACTOR_VACUUM_RETENTION_HOURS", default_value_t = 168)]
        vacuum_retention_hours: u64,
        /// How often `vacuum` runs at least, in hours (the maintenance DAG: daily).
        #[arg(long, env = "COMPACTOR_VACUUM_INTERVAL_HOURS", default_value_t = 24)]
        vacuum_interval_hours: u64,
    },
    /// List the erasure requests of the table as JSON: couriers, per tier
    /// (lake, dead_letters) status and times, `complete` and `pending`.
    ErasureStatus {
        #[command(flatten)]
        table: TableArgs,
        /// Only this request (an empty list when there is none).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Remove the event_date partitions older than today (UTC) minus
    /// --keep-days, by one commit of remove actions (no rewrite; `vacuum`
    /// deletes the files later); optionally delete dead-letter files older
    /// than --dead-letter-keep-days. Nothing expired: no commit.
    Retention {
        #[command(flatten)]
        table: TableArgs,
        /// Days of partitions kept before today: event_date < today - N is removed. At least 1.
        #[arg(long, env = "COMPACTOR_LAKE_RETENTION_DAYS")]
        keep_days: u32,
        /// Where the dead-letter files are (a directory or s3:// prefix).
        /// Default: `<table-uri>_dead_letter`. Used only with --dead-letter-keep-days.
        #[arg(long, env = "COMPACTOR_DEAD_LETTER_URI")]
        dead_letter_uri: Option<String>,
        /// Delete the dead-letter files (`*.jsonl`) last written more than
        /// this many days ago. Without it dead letters are left alone (in AWS
        /// an S3 lifecycle rule expires them).
        #[arg(long, env = "COMPACTOR_DEAD_LETTER_RETENTION_DAYS")]
        dead_letter_keep_days: Option<u32>,
        /// "Now" as RFC 3339 (tests; default: the clock).
        #[arg(long, value_parser = parse_time)]
        now: Option<chrono::DateTime<chrono::Utc>>,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the table version, row and file counts, and per shard the
    /// checkpoint and the lag, as JSON.
    Status {
        #[command(flatten)]
        stream: StreamArgs,
        #[command(flatten)]
        table: TableArgs,
    },
    /// List the committed runs after a table version (all when omitted) as a
    /// JSON array: version, run, checkpoints, counts and manifest of each.
    /// A loader that lost a run's stdout finds every run here.
    Runs {
        #[command(flatten)]
        table: TableArgs,
        /// Name of the stream whose runs to list.
        #[arg(long, env = "COMPACTOR_STREAM_NAME")]
        stream_name: String,
        /// Only runs committed after this table version.
        #[arg(long)]
        after_version: Option<u64>,
        /// Where the COPY manifests are. Default: `<table-uri>/_manifests`.
        #[arg(long, env = "COMPACTOR_MANIFEST_URI")]
        manifest_uri: Option<String>,
    },
    /// Rewrite the small files of each date partition into files of about the
    /// target size, in one commit that changes no data.
    Optimize {
        #[command(flatten)]
        table: TableArgs,
        /// Target file size in MiB; files at least this big are left alone.
        #[arg(long, env = "COMPACTOR_TARGET_FILE_MIB", default_value_t = 128)]
        target_file_mib: u64,
        /// Only partitions with at least this many small files are rewritten.
        #[arg(long, env = "COMPACTOR_OPTIMIZE_MIN_FILES", default_value_t = 2)]
        min_files: usize,
    },
    /// Delete files no table version within the retention references, and
    /// files that were never committed (a crashed run's), once older than the
    /// retention.
    Vacuum {
        #[command(flatten)]
        table: TableArgs,
        /// Keep files removed less than this many hours ago (time travel,
        /// readers still on an older version, the dedup window, runs in
        /// progress). At least 1.
        #[arg(long, env = "COMPACTOR_VACUUM_RETENTION_HOURS", default_value_t = 168)]
        retention_hours: u64,
        /// Keep the event id files (`_dedup/`) of this many newest compactor
        /// commits whatever their age: set it as for `run`.
        #[arg(long, env = "COMPACTOR_DEDUP_COMMITS", default_value_t = 24)]
        dedup_commits: usize,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// An RFC 3339 time (`2026-12-01T10:00:00Z`, any offset), as UTC.
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-12-01T10:00:00Z: {e}"))
}

/// Prints `value` as one line of JSON on stdout and, with `--output-uri`,
/// writes the same bytes as one object there (before printing, so a report on
/// stdout means the object is written too).
async fn emit<T: serde::Serialize>(value: &T, output: Option<&str>) -> Result<(), CompactorError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CompactorError::State(format!("serialize the report: {e}")))?;
    if let Some(uri) = output {
        let written =
            compactor::location::put_object(uri, bytes::Bytes::from(format!("{text}\n"))).await?;
        tracing::info!(output = %written, "output written");
    }
    println!("{text}");
    Ok(())
}

/// Resolves on SIGTERM (ECS stopping the task) or SIGINT, with its name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

async fn execute(
    command: Command,
    log_format: LogFormat,
    output: Option<&str>,
) -> Result<(), CompactorError> {
    match command {
        Command::Run {
            stream,
            table,
            max_records,
            max_positions,
            dedup_commits,
            dedup_window_ids,
            dead_letter_uri,
            manifest_uri,
            target_file_rows,
            progress_secs,
            max_block_bytes,
            accept_data_loss,
            from,
        } => {
            let mut config = RunConfig::with(
                stream.source()?,
                &stream.stream_name,
                Location::parse(&table.table_uri)?,
            );
            config.max_records = max_records;
            config.dedup_commits = dedup_commits;
            config.max_positions = (max_positions > 0).then_some(max_positions);
            config.dedup_window_ids = dedup_window_ids;
            config.target_file_rows = target_file_rows.max(1);
            config.progress_every = Duration::from_secs(progress_secs.max(1));
            config.decode_limits.max_block_bytes = max_block_bytes.max(1024);
            config.accept_data_loss = accept_data_loss;
            config.replay_from = from;
            config.progress_bar = matches!(log_format, LogFormat::Text)
                && std::io::IsTerminal::is_terminal(&std::io::stderr());
            if let Some(uri) = dead_letter_uri {
                config.dead_letters = Location::parse(&uri)?;
            }
            if let Some(uri) = manifest_uri {
                config.manifests = Location::parse(&uri)?;
            }
            let report = compactor::run::run_until(config, shutdown_signal()).await?;
            tracing::info!(
                run = report.run,
                committed = report.committed,
                records = report.records_read,
                positions = report.positions_decoded,
                rows = report.rows_written,
                duplicates = report.duplicates_dropped,
                dead_lettered = report.dead_lettered,
                replay_skipped_existing = report.replay_skipped_existing,
                erased_skipped = report.erased_skipped,
                files = report.files_added,
                version = report.table_version,
                backlog = report.backlog,
                manifest = report.manifest.as_deref().unwrap_or(""),
                checkpoints = ?report.checkpoints,
                duration_ms = report.duration_ms,
                "compactor run finished"
            );
            emit(&report, output).await
        }
        Command::Erase {
            table,
            request_id,
            courier_ids,
            dead_letter_uri,
            vacuum_retention_hours,
            vacuum_interval_hours,
        } => {
            let table = Location::parse(&table.table_uri)?;
            let dead_letters = match dead_letter_uri {
                Some(uri) => Location::parse(&uri)?,
                None => compactor::run::default_dead_letters(&table),
            };
            let config = compactor::erasure::EraseConfig {
                table,
                request_id,
                courier_ids,
                dead_letters,
                vacuum_retention: Duration::from_secs(vacuum_retention_hours * 3600),
                vacuum_interval: Duration::from_secs(vacuum_interval_hours * 3600),
            };
            let report = compactor::erasure::erase(&config).await?;
            tracing::info!(
                request = %report.request_id,
                lake_rows_removed = report.lake_rows_removed,
                lake_files_rewritten = report.lake_files_rewritten,
                dead_letter_lines_removed = report.dead_letter_lines_removed,
                version = ?report.table_version,
                "erasure finished"
            );
            emit(&report, output).await
        }
        Command::ErasureStatus { table, request_id } => {
            let list = compactor::erasure::status(
                &Location::parse(&table.table_uri)?,
                request_id.as_deref(),
            )
            .await?;
            emit(&list, output).await
        }
        Command::Retention {
            table,
            keep_days,
            dead_letter_uri,
            dead_letter_keep_days,
            now,
            dry_run,
        } => {
            let table = Location::parse(&table.table_uri)?;
            let dead_letters = match (dead_letter_uri, dead_letter_keep_days) {
                (Some(uri), Some(days)) => Some((Location::parse(&uri)?, days)),
                (None, Some(days)) => Some((compactor::run::default_dead_letters(&table), days)),
                (_, None) => None,
            };
            let config = compactor::retention::RetentionConfig {
                keep_days,
                now: now.unwrap_or_else(chrono::Utc::now),
                dry_run,
                dead_letters,
            };
            let report = compactor::retention::retention(&table, &config).await?;
            tracing::info!(
                cutoff = %report.cutoff_date,
                partitions = report.partitions_removed.len(),
                files = report.files_removed,
                rows = report.rows_removed,
                version = ?report.table_version,
                dead_letter_files = report.dead_letter_files_deleted.len(),
                "retention finished"
            );
            emit(&report, output).await
        }
        Command::Status { stream, table } => {
            let report = compactor::status(
                &stream.source()?,
                &stream.stream_name,
                &Location::parse(&table.table_uri)?,
            )
            .await?;
            emit(&report, output).await
        }
        Command::Runs {
            table,
            stream_name,
            after_version,
            manifest_uri,
        } => {
            let table = Location::parse(&table.table_uri)?;
            let manifests = match manifest_uri {
                Some(uri) => Location::parse(&uri)?,
                None => compactor::run::default_manifests(&table),
            };
            let runs =
                compactor::run::runs(&table, &stream_name, after_version, &manifests).await?;
            emit(&runs, output).await
        }
        Command::Optimize {
            table,
            target_file_mib,
            min_files,
        } => {
            let config = OptimizeConfig {
                target_file_bytes: target_file_mib.max(1) * 1024 * 1024,
                min_files: min_files.max(2),
            };
            let report =
                compactor::maintenance::optimize(&Location::parse(&table.table_uri)?, &config)
                    .await?;
            tracing::info!(
                partitions = report.partitions_optimized,
                removed = report.files_removed,
                added = report.files_added,
                version = ?report.table_version,
                "optimize finished"
            );
            emit(&report, output).await
        }
        Command::Vacuum {
            table,
            retention_hours,
            dedup_commits,
            dry_run,
        } => {
            if retention_hours < 1 {
                return Err(CompactorError::Config(
                    "--retention-hours must be at least 1: files younger than that may belong to a run that has not committed yet".into(),
                ));
            }
            let config = VacuumConfig {
                retention: Duration::from_secs(retention_hours * 3600),
                dry_run,
                dedup_commits,
            };
            let report =
                compactor::maintenance::vacuum(&Location::parse(&table.table_uri)?, &config)
                    .await?;
            tracing::info!(
                deleted = report.files_deleted.len(),
                id_files_deleted = report.id_files_deleted.len(),
                dry_run,
                "vacuum finished"
            );
            emit(&report, output).await
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,buoyant_kernel=warn,delta_kernel=warn,deltalake_core=warn,aws_config=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// glibc's malloc raises its mmap threshold (up to 32 MiB) each time a large
/// block is freed, after which the run's large transient buffers (Parquet
/// files being written, read batches) come from the heap and their memory
/// stays with the process after they are freed. A fixed threshold keeps
/// every block of 1 MiB or more in its own mapping, returned when freed (and
/// grown by `mremap`, without a copy): about 30 MiB less peak RSS in the
/// benchmark (docs/performance.md).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(execute(
        cli.command,
        cli.log_format,
        cli.output_uri.as_deref(),
    )) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            let code = e.exit_code();
            tracing::error!(error = %e, exit_code = code, "compactor failed");
            if code == EXIT_USAGE {
                eprintln!("error: {e}");
            }
            ExitCode::from(code)
        }
    }
}
