//! `compactor`: the command line of the compactor library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use compactor::error::{EXIT_ERROR, EXIT_OK};
use compactor::{CompactorError, RunConfig};

/// Compacts the courier position stream into a Delta table, exactly once.
///
/// Exit codes: 0 ok (also when there was nothing to do); 1 error (nothing
/// committed unless the error says otherwise); 3 another run committed this
/// run number first (this run committed nothing).
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Data directory of the local stream.
    #[arg(long, env = "COMPACTOR_DATA_DIR")]
    data_dir: PathBuf,
    /// Name of the local stream.
    #[arg(long, env = "COMPACTOR_STREAM_NAME")]
    stream_name: String,
    /// Path of the Delta table (a local directory; created if missing).
    #[arg(long, env = "COMPACTOR_TABLE_URI")]
    table_uri: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read every shard from its checkpoint to its end as of the start, write
    /// the new positions to the table in one commit, print a JSON run report.
    Run {
        #[command(flatten)]
        common: Common,
        /// Read at most this many records per shard in this run.
        #[arg(long, env = "COMPACTOR_MAX_RECORDS")]
        max_records: Option<u64>,
        /// Dedup window: the event ids in the files added by this many last
        /// compactor commits (plus everything in this run).
        #[arg(long, env = "COMPACTOR_DEDUP_COMMITS", default_value_t = 24)]
        dedup_commits: usize,
        /// Where the dead-letter files (`run-<run>.jsonl`) go. Default:
        /// `<table-uri>_dead_letter`.
        #[arg(long, env = "COMPACTOR_DEAD_LETTER_URI")]
        dead_letter_uri: Option<PathBuf>,
        /// Finish the Parquet files (one per date partition) after about this many rows.
        #[arg(long, env = "COMPACTOR_TARGET_FILE_ROWS", default_value_t = 1_000_000)]
        target_file_rows: u64,
    },
    /// Print the table version, checkpoints, row count and lag per shard as JSON.
    Status {
        #[command(flatten)]
        common: Common,
    },
}

/// One line: an orchestrator that keeps only the last log line (Airflow's
/// `EcsRunTaskOperator` pushes it to XCom) gets the whole report.
fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CompactorError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CompactorError::State(format!("serialize the report: {e}")))?;
    println!("{text}");
    Ok(())
}

async fn execute(cli: Cli) -> Result<(), CompactorError> {
    match cli.command {
        Command::Run {
            common,
            max_records,
            dedup_commits,
            dead_letter_uri,
            target_file_rows,
        } => {
            let mut config =
                RunConfig::new(&common.data_dir, &common.stream_name, &common.table_uri);
            config.max_records = max_records;
            config.dedup_commits = dedup_commits;
            config.target_file_rows = target_file_rows.max(1);
            if let Some(dir) = dead_letter_uri {
                config.dead_letter_dir = dir;
            }
            let report = compactor::run(config).await?;
            tracing::info!(
                run = report.run,
                committed = report.committed,
                records = report.records_read,
                rows = report.rows_written,
                duplicates = report.duplicates_dropped,
                dead_lettered = report.dead_lettered,
                files = report.files_added,
                version = report.table_version,
                duration_ms = report.duration_ms,
                "compactor run finished"
            );
            print_json(&report)
        }
        Command::Status { common } => {
            let report =
                compactor::status(&common.data_dir, &common.stream_name, &common.table_uri).await?;
            print_json(&report)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,buoyant_kernel=warn,delta_kernel=warn,deltalake_core=warn",
                )
            }),
        )
        .init();
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
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            tracing::error!(error = %e, "compactor failed");
            ExitCode::from(e.exit_code())
        }
    }
}
