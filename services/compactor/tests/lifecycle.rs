//! The data lifecycle (issue 15) end to end: replay from a point in time
//! (the local stream by arrival time; Kinesis `AT_TIMESTAMP` against
//! moto_server), erasure of couriers (the table read back by an independent
//! reader: the Delta log's JSON parsed here and the Parquet files read with
//! the `parquet` crate), crash and rerun of an erasure, and retention. Each
//! test owns its directories, stream and server.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use arrow::array::{Array, AsArray};
use chrono::{DateTime, TimeDelta, Utc};
use common::{encode, encode_with_lat, ids, position_with, positions, sorted};
use compactor::{Location, RunConfig, SourceConfig};
use courier_model::position::Position;
use courier_stream::local::{LocalOptions, LocalStream};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

const STREAM: &str = "positions";

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    table: PathBuf,
    stream: LocalStream,
}

impl Env {
    /// Segments big enough that the runs' trims leave every record on disk
    /// (the last segment is never trimmed): a replay can reach back to the start.
    fn new(shards: usize) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_owned();
        let data = root.join("data");
        let table = root.join("table");
        let stream = LocalStream::open(
            &data,
            STREAM,
            LocalOptions {
                shards,
                segment_bytes: 64 * 1024 * 1024,
                max_bytes: None,
            },
        )
        .expect("open stream");
        Self {
            _tmp: tmp,
            root,
            data,
            table,
            stream,
        }
    }

    fn config(&self) -> RunConfig {
        self.config_for(&self.table)
    }

    fn config_for(&self, table: &Path) -> RunConfig {
        RunConfig::new(&self.data, STREAM, table)
    }

    fn append(&self, shard: usize, positions: &[Position]) -> u64 {
        self.append_raw(shard, &encode(positions))
    }

    fn append_raw(&self, shard: usize, data: &[u8]) -> u64 {
        self.stream
            .append(shard, &[("courier-0", data)])
            .expect("append")[0]
    }

    fn dead_letters(&self) -> PathBuf {
        self.root.join("table_dead_letter")
    }

    fn compactor(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_compactor"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("COMPACTOR_LOG_FORMAT", "json")
            .args(args)
            .stdin(Stdio::null());
        command
    }
}

fn json_line(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON line ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn run_ok(mut command: impl std::borrow::BorrowMut<Command>) -> Value {
    let out = command.borrow_mut().output().expect("run the compactor");
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    json_line(&out)
}

/// Waits until the clock's millisecond is past `ms` (arrival times are in ms).
fn clock_past(ms: i64) -> DateTime<Utc> {
    loop {
        let now = Utc::now();
        if now.timestamp_millis() > ms {
            return now;
        }
        std::thread::yield_now();
    }
}

/// A point in time strictly between what was appended before the call and
/// what is appended after it.
fn time_between() -> DateTime<Utc> {
    let before = clock_past(Utc::now().timestamp_millis());
    let at = clock_past(before.timestamp_millis());
    clock_past(at.timestamp_millis());
    at
}

/// The table as an independent reader sees it: the Delta log's JSON commits
/// replayed here (add and remove), the active files read with the `parquet`
/// crate. Returns (event_id, courier_id) per row, sorted, and the sum of the
/// active files' `numRecords`.
fn read_table(table: &Path) -> (Vec<(String, String)>, u64) {
    let log = table.join("_delta_log");
    let mut commits: Vec<PathBuf> = std::fs::read_dir(&log)
        .expect("the log")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    commits.sort();
    let mut active: BTreeMap<String, u64> = BTreeMap::new();
    for commit in commits {
        let text = std::fs::read_to_string(&commit).expect("a commit");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: Value = serde_json::from_str(line).expect("an action");
            if let Some(add) = action.get("add") {
                let stats: Value = serde_json::from_str(add["stats"].as_str().expect("stats"))
                    .expect("stats JSON");
                assert!(
                    add.get("deletionVector").is_none_or(Value::is_null),
                    "no deletion vectors"
                );
                active.insert(
                    add["path"].as_str().expect("path").to_owned(),
                    stats["numRecords"].as_u64().expect("numRecords"),
                );
            } else if let Some(remove) = action.get("remove") {
                active.remove(remove["path"].as_str().expect("path"));
            }
        }
    }
    let root = url::Url::from_directory_path(table).expect("table URL");
    let mut rows = Vec::new();
    for (path, records) in &active {
        let file = root
            .join(path)
            .expect("file URL")
            .to_file_path()
            .expect("a local file");
        let bytes = bytes::Bytes::from(std::fs::read(&file).expect("a data file"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        let mut in_file = 0u64;
        for batch in reader {
            let batch = batch.expect("batch");
            let column = |name: &str| {
                arrow::compute::cast(
                    batch.column_by_name(name).expect("column"),
                    &arrow::datatypes::DataType::Utf8,
                )
                .expect("cast")
            };
            let (events, couriers) = (column("event_id"), column("courier_id"));
            let (events, couriers) = (events.as_string::<i32>(), couriers.as_string::<i32>());
            for i in 0..events.len() {
                rows.push((events.value(i).to_owned(), couriers.value(i).to_owned()));
                in_file += 1;
            }
        }
        assert_eq!(in_file, *records, "numRecords of {path} matches its rows");
    }
    rows.sort();
    let total = active.values().sum();
    (rows, total)
}

fn event_ids_of(rows: &[(String, String)]) -> Vec<String> {
    rows.iter().map(|(e, _)| e.clone()).collect()
}

fn table_version(table: &Path) -> i64 {
    let log = table.join("_delta_log");
    std::fs::read_dir(&log)
        .expect("log")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse::<i64>().ok()
        })
        .max()
        .expect("a commit")
}

#[tokio::test]
async fn a_replay_over_a_compacted_range_writes_no_duplicate_beyond_the_dedup_window() {
    let env = Env::new(2);
    let from = time_between();
    let mut all = Vec::new();
    // Three runs with a dedup window of one commit: a replay of the first two
    // runs' range is beyond the window.
    for round in 0..3 {
        let batch = positions(6);
        env.append(0, &batch[..3]);
        env.append(1, &batch[3..]);
        all.extend(ids(&batch));
        let mut config = env.config();
        config.dedup_commits = 1;
        let report = compactor::run(config).await.expect("run");
        assert_eq!(report.rows_written, 6, "round {round}");
    }
    // And positions no run has read yet.
    let fresh = positions(4);
    env.append(1, &fresh);
    all.extend(ids(&fresh));
    let before = compactor::run::runs(
        &Location::local(&env.table),
        STREAM,
        None,
        &compactor::run::default_manifests(&Location::local(&env.table)),
    )
    .await
    .expect("runs");

    let mut replay = env.config();
    replay.dedup_commits = 1;
    replay.replay_from = Some(from);
    let report = compactor::run(replay).await.expect("replay");
    assert!(report.committed);
    assert_eq!(report.records_read, 7);
    assert_eq!(report.positions_decoded, 22);
    assert_eq!(report.rows_written, 4, "only the positions never written");
    assert_eq!(report.replay_skipped_existing, 18);
    assert_eq!(report.duplicates_dropped, 0);
    assert_eq!(
        report.replay_from.as_deref(),
        Some(
            from.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .as_str()
        )
    );
    assert_eq!(
        report.checkpoints,
        BTreeMap::from([
            ("shardId-000000000000".to_owned(), "3".to_owned()),
            ("shardId-000000000001".to_owned(), "4".to_owned()),
        ])
    );
    let (rows, total) = read_table(&env.table);
    assert_eq!(event_ids_of(&rows), sorted(all));
    assert_eq!(total, 22);

    // The next normal run starts from the replay's checkpoints.
    let next = compactor::run(env.config()).await.expect("next run");
    assert_eq!(next.records_read, 0);
    assert!(!next.committed);
    let runs = compactor::run::runs(
        &Location::local(&env.table),
        STREAM,
        None,
        &compactor::run::default_manifests(&Location::local(&env.table)),
    )
    .await
    .expect("runs");
    assert_eq!(runs.len(), before.len() + 1);
}

#[tokio::test]
async fn a_replay_over_a_gap_writes_exactly_the_missing_rows() {
    let env = Env::new(1);
    let start = time_between();
    let early = positions(5);
    env.append(0, &early[..2]);
    env.append(0, &early[2..]);
    let later_start = time_between();
    let late = positions(4);
    env.append(0, &late);

    // A table built from a later start: the early positions are its gap.
    let table = env.root.join("rebuilt");
    let mut first = env.config_for(&table);
    first.replay_from = Some(later_start);
    let report = compactor::run(first)
        .await
        .expect("replay from the later start");
    assert_eq!(report.rows_written, 4);
    assert_eq!(report.records_read, 1);
    assert_eq!(event_ids_of(&read_table(&table).0), sorted(ids(&late)));

    // Through the binary, configured by the environment (COMPACTOR_FROM).
    let report = run_ok(
        env.compactor(&["run"])
            .env("COMPACTOR_SOURCE", "local")
            .env("COMPACTOR_DATA_DIR", &env.data)
            .env("COMPACTOR_STREAM_NAME", STREAM)
            .env("COMPACTOR_TABLE_URI", &table)
            .env("COMPACTOR_FROM", start.to_rfc3339()),
    );
    assert_eq!(
        report["rows_written"], 5,
        "exactly the missing rows: {report}"
    );
    assert_eq!(report["replay_skipped_existing"], 4);
    assert_eq!(report["records_read"], 3);
    let mut expected = ids(&early);
    expected.extend(ids(&late));
    let (rows, total) = read_table(&table);
    assert_eq!(event_ids_of(&rows), sorted(expected));
    assert_eq!(total, 9);

    // A time that is not RFC 3339 is bad usage.
    let out = env
        .compactor(&[
            "run",
            "--source",
            "local",
            "--stream-name",
            STREAM,
            "--from",
            "yesterday",
        ])
        .arg("--data-dir")
        .arg(&env.data)
        .arg("--table-uri")
        .arg(&table)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}

/// Positions of couriers `courier-0`..`courier-6` over two days.
fn two_days(n: usize) -> Vec<Position> {
    (0..n)
        .map(|i| {
            let offset = if i % 2 == 0 {
                TimeDelta::milliseconds(-1500)
            } else {
                TimeDelta::days(-1)
            };
            position_with(i, &uuid::Uuid::now_v7().to_string(), offset)
        })
        .collect()
}

fn dead_letter_lines(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dead letters") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")),
        );
    }
    out
}

fn couriers_of(lines: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .filter_map(|l| l["position"]["courier_id"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn an_erasure_removes_every_row_of_the_courier_and_runs_skip_it_from_then_on() {
    let env = Env::new(2);
    let table = env.table.to_str().expect("utf-8").to_owned();
    let first = two_days(28);
    env.append(0, &first[..14]);
    env.append(1, &first[14..]);
    // Invalid positions (dead letters) of courier-3 and courier-1.
    let bad3 = position_with(3, &uuid::Uuid::now_v7().to_string(), TimeDelta::seconds(-1));
    let bad1 = position_with(1, &uuid::Uuid::now_v7().to_string(), TimeDelta::seconds(-1));
    env.append_raw(0, &encode_with_lat(&[bad3], 0, 200.0));
    env.append_raw(1, &encode_with_lat(&[bad1], 0, 200.0));
    // A record that decodes to nothing: no courier can be read from it.
    env.append_raw(1, b"not avro at all");
    let report = compactor::run(env.config()).await.expect("run");
    assert_eq!(report.rows_written, 28);
    assert_eq!(report.dead_lettered, 3);
    let (before, _) = read_table(&env.table);
    let erased: Vec<&(String, String)> = before.iter().filter(|(_, c)| c == "courier-3").collect();
    assert_eq!(erased.len(), 4);
    let kept: Vec<(String, String)> = before
        .iter()
        .filter(|(_, c)| c != "courier-3")
        .cloned()
        .collect();
    let version_before = table_version(&env.table);

    let report = run_ok(env.compactor(&[
        "erase",
        "--table-uri",
        &table,
        "--request-id",
        "req-1",
        "--courier-id",
        "courier-3",
    ]));
    assert_eq!(report["request_id"], "req-1");
    assert_eq!(report["courier_ids"], serde_json::json!(["courier-3"]));
    assert_eq!(report["lake_rows_removed"], 4);
    // The two runs' files of two partitions each hold courier-3's rows.
    let rewritten = report["lake_files_rewritten"].as_u64().expect("files");
    assert!(rewritten >= 2, "{report}");
    assert_eq!(report["table_version"], version_before + 1);
    assert_eq!(report["dead_letter_lines_removed"], 1);
    assert_eq!(report["dead_letter_files_rewritten"], 1);
    assert_eq!(report["dead_letter_lines_unattributable"], 1);
    assert_eq!(report["complete"], true);
    let deadline: DateTime<Utc> = report["old_files_deleted_by"]
        .as_str()
        .expect("a deadline")
        .parse()
        .expect("RFC 3339");
    assert!(
        deadline > Utc::now() + TimeDelta::hours(191)
            && deadline < Utc::now() + TimeDelta::hours(193)
    );

    let (after, total) = read_table(&env.table);
    assert_eq!(
        after, kept,
        "no row of courier-3, every other row untouched"
    );
    assert_eq!(total, 24);
    let lines = dead_letter_lines(&env.dead_letters());
    assert_eq!(couriers_of(&lines), ["courier-1"]);
    assert_eq!(lines.len(), 2, "the unattributable line is kept");
    // The commit is no compactor run: the run list and the checkpoints stay.
    let runs = compactor::run::runs(
        &Location::local(&env.table),
        STREAM,
        None,
        &compactor::run::default_manifests(&Location::local(&env.table)),
    )
    .await
    .expect("runs");
    assert_eq!(runs.len(), 1);

    // The courier's positions still in the stream stay out of the next runs.
    let second = two_days(14);
    env.append(0, &second);
    let bad3 = position_with(3, &uuid::Uuid::now_v7().to_string(), TimeDelta::seconds(-1));
    env.append_raw(1, &encode_with_lat(&[bad3], 0, 200.0));
    let report = compactor::run(env.config())
        .await
        .expect("run after the erasure");
    assert_eq!(
        report.records_read, 2,
        "from the checkpoint, not from the start"
    );
    assert_eq!(report.erased_skipped, 3, "two valid, one invalid");
    assert_eq!(report.rows_written, 12);
    assert_eq!(
        report.dead_lettered, 0,
        "an erased courier's invalid position is no dead letter"
    );
    // And out of a replay of everything.
    let mut replay = env.config();
    replay.replay_from = Some(DateTime::from_timestamp_millis(0).expect("epoch"));
    let report = compactor::run(replay).await.expect("replay");
    assert_eq!(report.rows_written, 0);
    assert_eq!(report.erased_skipped, 4 + 1 + 3);
    let (rows, total) = read_table(&env.table);
    assert!(rows.iter().all(|(_, c)| c != "courier-3"));
    assert_eq!(total, 36);
    assert!(
        couriers_of(&dead_letter_lines(&env.dead_letters()))
            .iter()
            .all(|c| c != "courier-3")
    );

    // A rerun removes nothing twice and commits nothing.
    let version = table_version(&env.table);
    let again = run_ok(env.compactor(&[
        "erase",
        "--table-uri",
        &table,
        "--request-id",
        "req-1",
        "--courier-id",
        "courier-3",
    ]));
    assert_eq!(again["lake_rows_removed"], 4);
    assert_eq!(again["table_version"], version);
    assert_eq!(again["dead_letter_lines_removed"], 0);
    assert_eq!(table_version(&env.table), version);
    // The same id for other couriers is refused.
    let out = env
        .compactor(&[
            "erase",
            "--table-uri",
            &table,
            "--request-id",
            "req-1",
            "--courier-id",
            "courier-4",
        ])
        .output()
        .expect("erase");
    assert_eq!(out.status.code(), Some(2));

    let status = run_ok(env.compactor(&["erasure-status", "--table-uri", &table]));
    let list = status.as_array().expect("a list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["request_id"], "req-1");
    assert_eq!(list[0]["complete"], true);
    assert_eq!(list[0]["pending"], serde_json::json!([]));
    assert_eq!(list[0]["tiers"]["lake"]["status"], "done");
    assert_eq!(list[0]["tiers"]["lake"]["rows_removed"], 4);
    assert_eq!(list[0]["tiers"]["dead_letters"]["lines_removed"], 1);
    assert!(list[0]["tiers"]["lake"]["done_at"].is_string());
    let none = run_ok(env.compactor(&[
        "erasure-status",
        "--table-uri",
        &table,
        "--request-id",
        "other",
    ]));
    assert_eq!(none, serde_json::json!([]));
}

#[tokio::test]
async fn a_crash_mid_erasure_is_finished_by_a_rerun() {
    let env = Env::new(1);
    let table = env.table.to_str().expect("utf-8").to_owned();
    let all = two_days(21);
    env.append(0, &all);
    compactor::run(env.config()).await.expect("run");
    let count = |rows: &[(String, String)], c: &str| rows.iter().filter(|(_, x)| x == c).count();
    let (before, _) = read_table(&env.table);
    assert_eq!(count(&before, "courier-2"), 3);
    assert_eq!(count(&before, "courier-5"), 3);
    let version = table_version(&env.table);
    let erase = |request: &str, courier: &str| {
        env.compactor(&[
            "erase",
            "--table-uri",
            &table,
            "--request-id",
            request,
            "--courier-id",
            courier,
        ])
    };

    // Killed after writing the new files, before the commit.
    let out = erase("crash-1", "courier-2")
        .env("COMPACTOR_TEST_CRASH_AT", "lake_files_written")
        .output()
        .expect("erase");
    assert_eq!(
        out.status.code(),
        Some(86),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(table_version(&env.table), version, "nothing committed");
    let status = run_ok(env.compactor(&[
        "erasure-status",
        "--table-uri",
        &table,
        "--request-id",
        "crash-1",
    ]));
    assert_eq!(status[0]["complete"], false);
    assert_eq!(
        status[0]["pending"],
        serde_json::json!(["dead_letters", "lake"])
    );
    // Recorded: a run skips the courier already.
    env.append(0, &two_days(7));
    let report = compactor::run(env.config()).await.expect("run");
    assert_eq!(report.erased_skipped, 1);
    let version = table_version(&env.table);
    let report = run_ok(&mut erase("crash-1", "courier-2"));
    assert_eq!(report["lake_rows_removed"], 3);
    assert_eq!(report["table_version"], version + 1);
    assert_eq!(report["complete"], true);
    let (rows, _) = read_table(&env.table);
    assert_eq!(count(&rows, "courier-2"), 0);

    // Killed right after the commit, before the ledger says so.
    let out = erase("crash-2", "courier-5")
        .env("COMPACTOR_TEST_CRASH_AT", "lake_committed")
        .output()
        .expect("erase");
    assert_eq!(out.status.code(), Some(86));
    let committed = table_version(&env.table);
    assert_eq!(committed, version + 2);
    let report = run_ok(&mut erase("crash-2", "courier-5"));
    assert_eq!(
        report["lake_rows_removed"], 4,
        "the earlier attempt's commit counted: {report}"
    );
    assert_eq!(
        report["table_version"], committed,
        "nothing committed twice"
    );
    assert_eq!(report["lake_commits"], serde_json::json!([committed]));
    assert!(report["old_files_deleted_by"].is_string());
    let (rows, total) = read_table(&env.table);
    assert_eq!(count(&rows, "courier-5"), 0);
    assert_eq!(total as usize, rows.len());
    assert_eq!(rows.len(), 28 - 1 - 3 - 4);
}

#[tokio::test]
async fn retention_removes_exactly_the_expired_partitions_in_one_commit() {
    let env = Env::new(1);
    let table = env.table.to_str().expect("utf-8").to_owned();
    let now = common::now();
    let mut by_age: HashMap<i64, Vec<Position>> = HashMap::new();
    for (i, days) in [10i64, 6, 5, 1, 0].into_iter().cycle().take(15).enumerate() {
        let p = position_with(
            i,
            &uuid::Uuid::now_v7().to_string(),
            TimeDelta::days(-days) - TimeDelta::seconds(1),
        );
        by_age.entry(days).or_default().push(p);
    }
    for ps in by_age.values() {
        env.append(0, ps);
    }
    // One dead letter file.
    let bad = position_with(1, &uuid::Uuid::now_v7().to_string(), TimeDelta::seconds(-1));
    env.append_raw(0, &encode_with_lat(&[bad], 0, 200.0));
    compactor::run(env.config()).await.expect("run");
    let date = |days: i64| {
        ((now - TimeDelta::seconds(1)) - TimeDelta::days(days))
            .date_naive()
            .format("%Y-%m-%d")
            .to_string()
    };
    let now_text = now.to_rfc3339();
    let version = table_version(&env.table);

    let dry = run_ok(env.compactor(&[
        "retention",
        "--table-uri",
        &table,
        "--keep-days",
        "5",
        "--now",
        &now_text,
        "--dry-run",
    ]));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["table_version"], Value::Null);
    assert_eq!(table_version(&env.table), version);

    let expired: BTreeSet<String> = [date(10), date(6)]
        .into_iter()
        .filter(|d| {
            *d < (now.date_naive() - chrono::Days::new(5))
                .format("%Y-%m-%d")
                .to_string()
        })
        .collect();
    let report = run_ok(env.compactor(&[
        "retention",
        "--table-uri",
        &table,
        "--keep-days",
        "5",
        "--now",
        &now_text,
    ]));
    assert_eq!(
        report["cutoff_date"],
        (now.date_naive() - chrono::Days::new(5))
            .format("%Y-%m-%d")
            .to_string()
    );
    assert_eq!(report["partitions_removed"], serde_json::json!(expired));
    assert_eq!(report["partitions_removed"], dry["partitions_removed"]);
    assert_eq!(report["rows_removed"], 6);
    assert_eq!(report["files_removed"], 2);
    assert_eq!(report["table_version"], version + 1);
    let (rows, total) = read_table(&env.table);
    let mut kept = Vec::new();
    for days in [5, 1, 0] {
        kept.extend(ids(&by_age[&days]));
    }
    assert_eq!(event_ids_of(&rows), sorted(kept));
    assert_eq!(total, 9);
    // The log: one commit of removes only.
    let commit = std::fs::read_to_string(
        env.table
            .join("_delta_log")
            .join(format!("{:020}.json", version + 1)),
    )
    .expect("the commit");
    assert!(!commit.contains("\"add\""));
    assert_eq!(commit.matches("\"remove\"").count(), 2);

    // Idempotent: nothing expired is no commit.
    let again = run_ok(env.compactor(&[
        "retention",
        "--table-uri",
        &table,
        "--keep-days",
        "5",
        "--now",
        &now_text,
    ]));
    assert_eq!(again["table_version"], Value::Null);
    assert_eq!(again["partitions_removed"], serde_json::json!([]));
    assert_eq!(table_version(&env.table), version + 1);
    // The next run still finds its checkpoint.
    let next = compactor::run(env.config()).await.expect("run");
    assert_eq!(next.records_read, 0);

    // Dead letters: kept while younger than their retention, then deleted.
    let young = run_ok(env.compactor(&[
        "retention",
        "--table-uri",
        &table,
        "--keep-days",
        "5",
        "--now",
        &now_text,
        "--dead-letter-keep-days",
        "2",
    ]));
    assert_eq!(young["dead_letter_files_deleted"], serde_json::json!([]));
    let later = (Utc::now() + TimeDelta::days(3)).to_rfc3339();
    let old = run_ok(env.compactor(&[
        "retention",
        "--table-uri",
        &table,
        "--keep-days",
        "5",
        "--now",
        &later,
        "--dead-letter-uri",
        env.dead_letters().to_str().expect("utf-8"),
        "--dead-letter-keep-days",
        "2",
    ]));
    assert_eq!(
        old["dead_letter_files_deleted"]
            .as_array()
            .expect("list")
            .len(),
        1
    );
    assert_eq!(
        std::fs::read_dir(env.dead_letters()).expect("dir").count(),
        0
    );
    // --keep-days 0 is refused.
    let out = env
        .compactor(&["retention", "--table-uri", &table, "--keep-days", "0"])
        .output()
        .expect("retention");
    assert_eq!(out.status.code(), Some(2));
}

mod kinesis {
    use aws_sdk_kinesis::primitives::Blob;
    use test_support::moto;

    use super::*;

    const BUCKET: &str = "lake";

    fn s3_options(endpoint: &str) -> HashMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// moto_server serves Kinesis `AT_TIMESTAMP` iterators: a replay reads
    /// from the time on, and writes exactly what the table lacks.
    #[tokio::test]
    async fn a_kinesis_replay_at_a_timestamp_writes_exactly_the_missing_rows() {
        let server = moto::MotoServer::start().await;
        let kinesis = moto::kinesis_client(&server.endpoint);
        let stream = "courier-positions";
        moto::create_stream(&kinesis, stream, 2).await;
        let created = reqwest::Client::new()
            .put(format!("{}/{BUCKET}", server.endpoint))
            .send()
            .await
            .expect("CreateBucket");
        assert!(created.status().is_success());
        let put = |ps: Vec<Position>| {
            let kinesis = kinesis.clone();
            async move {
                for p in ps {
                    kinesis
                        .put_record()
                        .stream_name(stream)
                        .partition_key(p.courier_id.as_str())
                        .data(Blob::new(encode(std::slice::from_ref(&p))))
                        .send()
                        .await
                        .expect("PutRecord");
                }
            }
        };
        let table = |prefix: &str| {
            Location::parse(&format!("s3://{BUCKET}/{prefix}"))
                .expect("table")
                .with_options(s3_options(&server.endpoint))
        };
        let config = |prefix: &str| {
            let mut c = RunConfig::with(
                SourceConfig::KinesisClient(kinesis.clone()),
                stream,
                table(prefix),
            );
            c.dedup_commits = 1;
            c
        };
        let start = time_between();
        let early = positions(6);
        put(early.clone()).await;
        let later = time_between();
        let late = positions(5);
        put(late.clone()).await;

        // The whole table, then a replay over it: nothing written twice.
        let full = compactor::run(config("full")).await.expect("run");
        assert_eq!(full.rows_written, 11);
        let mut replay = config("full");
        replay.replay_from = Some(start);
        let report = compactor::run(replay).await.expect("replay");
        assert_eq!(report.records_read, 11);
        assert_eq!(report.rows_written, 0);
        assert_eq!(report.replay_skipped_existing, 11);
        assert_eq!(report.checkpoints, full.checkpoints);

        // A table from the later time, then the replay of its gap.
        let mut gap = config("gap");
        gap.replay_from = Some(later);
        let report = compactor::run(gap).await.expect("replay from later");
        assert_eq!(report.rows_written, 5);
        assert_eq!(
            common::table_event_ids(&table("gap")).await,
            sorted(ids(&late))
        );
        let mut fill = config("gap");
        fill.replay_from = Some(start);
        let report = compactor::run(fill).await.expect("replay the gap");
        assert_eq!(report.rows_written, 6);
        assert_eq!(report.replay_skipped_existing, 5);
        let mut all = ids(&early);
        all.extend(ids(&late));
        assert_eq!(common::table_event_ids(&table("gap")).await, sorted(all));
    }
}
