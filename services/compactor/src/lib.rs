//! The compactor: reads the courier position stream (Kinesis or the local
//! stream) from its last committed checkpoint, decodes and validates every
//! position, drops duplicate `event_id`s, and appends the rest to a Delta
//! table in ONE commit per run, exactly once.
//!
//! # Exactly once
//!
//! Each commit carries, in its `commitInfo`:
//! - `courier.app_id` (`courier-compactor/<stream>`), `courier.stream`,
//! - `courier.run` (the run number, 1, 2, ...),
//! - `courier.checkpoints`: `{shard_id: "<last sequence number committed>"}`
//!   as decimal strings (compared as integers of any length, never as strings),
//!
//! and a Delta application transaction (`txn`) with the same app id and
//! `version = run`. A run reads the newest compactor commit and the txn
//! version at start; before committing it checks that no other run committed
//! its run number (exit code 3 if one did), and the commit itself is built on
//! the snapshot read at start, so a run that commits in between makes ours
//! fail in delta-rs' conflict checker (a winning commit with a `txn` of the
//! same app id is a `ConcurrentTransaction` conflict). A crash before the
//! commit redoes the work (the Parquet files written are never referenced by
//! the log; `vacuum` removes them); a crash after it starts from the new
//! checkpoints.
//!
//! # Table layout (a contract with the warehouse)
//!
//! See [`table::COLUMNS`]. The Parquet files hold the first ten columns in
//! this order; `event_date` is a Delta partition column and, as Delta does,
//! lives only in the directory name (`event_date=YYYY-MM-DD/`) and the log,
//! NOT in the Parquet files. A Redshift `COPY ... FORMAT AS PARQUET` (which
//! matches columns by position) must therefore load into a 10-column staging
//! table, and `event_date` is derived in the `MERGE` as
//! `TRUNC(recorded_at)` (UTC).
//!
//! # Duplicates
//!
//! The dedup window is the set of `event_id`s of the last `--dedup-commits`
//! compactor commits (from each run's id file, or its Parquet files), plus
//! every id seen in the current run. It always holds every id of the last run
//! (so retrying any position of a run, even one that read its whole budget,
//! is dropped by the next run); then older runs' ids, newest first, up to
//! `--dedup-window-ids`. See [`dedup::window_ids`]. The warehouse load's
//! first-copy-wins rule on `event_id` is the second line of defence.
#![warn(missing_docs)]

// The stages of a run, in the order data flows through them.
pub mod commit;
pub mod dead_letters;
pub mod decode;
pub mod dedup;
pub mod manifest;
pub mod rows;
pub mod source;
pub mod state;

pub mod erasure;
pub mod error;
pub mod inspect;
pub mod location;
pub mod maintenance;
pub mod retention;
pub mod run;
pub mod table;

pub use commit::Prepared;
pub use error::CompactorError;
pub use inspect::{StatusReport, status};
pub use location::Location;
pub use run::{RunConfig, RunReport, prepare, run};
pub use source::SourceConfig;

/// The application id of the compactor of `stream`.
pub fn app_id(stream: &str) -> String {
    format!("courier-compactor/{stream}")
}

/// A stream sequence number: a non-negative decimal integer of any length
/// (Kinesis uses up to 128 digits, more than a `u128` holds; the local stream
/// and moto count 1, 2, 3, ...). Ordered as an integer, never as a string
/// (`"10" > "9"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Parses a decimal string (leading zeros are dropped).
    pub fn parse(text: &str) -> Result<Self, CompactorError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CompactorError::State(format!(
                "checkpoint {text:?} is not a sequence number"
            )));
        }
        let trimmed = text.trim_start_matches('0');
        Ok(Self(
            if trimmed.is_empty() { "0" } else { trimmed }.to_owned(),
        ))
    }

    /// The canonical decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as a `u64` (local stream sequence numbers), if it fits.
    pub fn to_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

impl From<u64> for SequenceNumber {
    fn from(value: u64) -> Self {
        Self(value.to_string())
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Canonical (no leading zeros): more digits is greater; equal lengths
        // compare digit by digit.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_integers() {
        assert!("10" < "9", "strings compare the wrong way");
        let seq = |t: &str| SequenceNumber::parse(t).expect("sequence number");
        assert!(seq("10") > seq("9"));
        assert!(seq("009") < seq("10"));
        assert_eq!(seq("0010"), seq("10"));
        assert_eq!(seq("000").as_str(), "0");
        // Kinesis sequence numbers do not fit a u128.
        let kinesis = "49590338271490256608559692538361571095921575989136588898";
        let bigger = "49590338271490256608559692538361571095921575989136588899";
        assert!(kinesis.parse::<u128>().is_err());
        assert!(seq(bigger) > seq(kinesis));
        assert!(seq(kinesis) > seq("99999999999999999999999999999999999999999"));
        assert_eq!(seq("12").to_u64(), Some(12));
        assert_eq!(seq(kinesis).to_u64(), None);
        assert!(SequenceNumber::parse("x").is_err());
        assert!(SequenceNumber::parse("-1").is_err());
        assert!(SequenceNumber::parse("").is_err());
    }
}
