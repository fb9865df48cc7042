//! Errors of the compactor, each with the context it happened in.

use courier_stream::StreamError;
use deltalake::DeltaTableError;

/// Exit code: the run succeeded (also when there was nothing to do).
pub const EXIT_OK: u8 = 0;
/// Exit code: the run failed; nothing was committed (or the commit's outcome is
/// reported in the error).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: bad command line or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: another run committed this run number first; this run committed
/// nothing.
pub const EXIT_ALREADY_COMMITTED: u8 = 3;
/// Exit code: stopped by SIGTERM or SIGINT before its commit; this run
/// committed nothing (rerun it).
pub const EXIT_INTERRUPTED: u8 = 4;

/// Errors of a compactor run.
#[derive(Debug, thiserror::Error)]
pub enum CompactorError {
    /// Reading the stream failed.
    #[error("stream {stream}: {source}")]
    Stream {
        /// Stream name.
        stream: String,
        /// The stream error.
        #[source]
        source: StreamError,
    },
    /// A Delta table operation failed.
    #[error("delta table {table}: {context}: {source}")]
    Delta {
        /// Table URI.
        table: String,
        /// What was being done.
        context: &'static str,
        /// The delta-rs error.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// An object store (S3 or local directory) operation failed.
    #[error("{context}: {source}")]
    Storage {
        /// What was being done, with the location.
        context: String,
        /// The object store error.
        #[source]
        source: Box<deltalake::ObjectStoreError>,
    },
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// SIGTERM or SIGINT arrived before the commit; nothing was committed.
    #[error("interrupted by {0} before the commit; this run committed nothing (run it again)")]
    Interrupted(&'static str),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a Parquet file failed.
    #[error("parquet file {path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building an Arrow batch failed.
    #[error("arrow: {context}: {source}")]
    Arrow {
        /// What was being built.
        context: &'static str,
        /// The arrow error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// The table's compactor state is inconsistent or unreadable.
    #[error("compactor state: {0}")]
    State(String),
    /// Records of a Kinesis shard after the committed checkpoint expired
    /// before any run read them (the stream's retention passed).
    #[error(
        "stream {stream}, shard {shard_id}: records after the checkpoint {checkpoint} expired before they were read: the oldest record left in the shard is {oldest}; run with --accept-data-loss to go on without them"
    )]
    Expired {
        /// Stream name.
        stream: String,
        /// The shard.
        shard_id: String,
        /// The last committed sequence number.
        checkpoint: String,
        /// The oldest sequence number still in the shard.
        oldest: String,
    },
    /// Another run committed this run number first; this run committed nothing.
    #[error(
        "run {run} of {app_id} was already committed by another run (the table's transaction version is {committed}); this run committed nothing"
    )]
    AlreadyCommitted {
        /// The application id.
        app_id: String,
        /// The run number this run tried to commit.
        run: i64,
        /// The table's transaction version for the app id.
        committed: i64,
    },
}

impl CompactorError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::AlreadyCommitted { .. } => EXIT_ALREADY_COMMITTED,
            Self::Config(_) => EXIT_USAGE,
            Self::Interrupted(_) => EXIT_INTERRUPTED,
            _ => EXIT_ERROR,
        }
    }

    pub(crate) fn delta(table: &str, context: &'static str, source: DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_owned(),
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
