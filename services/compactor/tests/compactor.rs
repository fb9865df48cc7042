//! End-to-end tests of the compactor against a local stream and a local Delta
//! table, each in its own temporary directories.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use common::{encode, ids, local_path, position, position_with, positions, sorted};
use compactor::table::COLUMNS;
use compactor::{CompactorError, Location, RunConfig, SourceConfig};
use courier_model::position::Position;
use courier_stream::local::{LocalOptions, LocalStream};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const STREAM: &str = "positions";

struct Env {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    table: PathBuf,
    stream: LocalStream,
}

impl Env {
    fn new(shards: usize) -> Self {
        Self::with_cap(shards, None)
    }

    /// A stream with a disk cap: over it, unread segments are deleted.
    fn with_cap(shards: usize, max_bytes: Option<u64>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let table = tmp.path().join("table");
        let stream = LocalStream::open(
            &data,
            STREAM,
            LocalOptions {
                shards,
                segment_bytes: 4096,
                max_bytes,
            },
        )
        .expect("open stream");
        Self {
            _tmp: tmp,
            data,
            table,
            stream,
        }
    }

    fn source(&self) -> SourceConfig {
        SourceConfig::Local {
            data_dir: self.data.clone(),
        }
    }

    fn config(&self) -> RunConfig {
        RunConfig::new(&self.data, STREAM, &self.table)
    }

    /// Appends one record holding `positions` to `shard`; returns its sequence number.
    fn append(&self, shard: usize, positions: &[Position]) -> u64 {
        self.append_raw(shard, &encode(positions))
    }

    fn append_raw(&self, shard: usize, data: &[u8]) -> u64 {
        let seqs = self
            .stream
            .append(shard, &[("courier-0", data)])
            .expect("append");
        seqs[0]
    }
}

/// Every event_id in the table's current files (through the Delta log).
async fn table_event_ids(table: &Path) -> Vec<String> {
    common::table_event_ids(&Location::local(table)).await
}

/// Every committed run of the test stream, as `compactor runs` lists them.
async fn committed_runs(table: &Path) -> Vec<compactor::run::RunSummary> {
    let location = Location::local(table);
    compactor::run::runs(
        &location,
        STREAM,
        None,
        &compactor::run::default_manifests(&location),
    )
    .await
    .expect("runs")
}

async fn table_version(table: &Path) -> u64 {
    compactor::table::load(&Location::local(table))
        .await
        .expect("load")
        .expect("table")
        .version()
        .expect("version")
}

#[tokio::test]
async fn a_run_writes_exactly_the_positions_and_a_rerun_commits_nothing() {
    let env = Env::new(2);
    let a = positions(5);
    let b = positions(3);
    env.append(0, &a[..2]);
    env.append(0, &a[2..]);
    env.append(1, &b);

    let report = compactor::run(env.config()).await.expect("run");
    assert!(report.committed);
    assert_eq!(report.run, 1);
    assert_eq!(report.records_read, 3);
    assert_eq!(report.positions_decoded, 8);
    assert_eq!(report.rows_written, 8);
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(report.duplicates_dropped, 0);
    assert_eq!(
        report.checkpoints,
        BTreeMap::from([
            ("shardId-000000000000".to_owned(), "2".to_owned()),
            ("shardId-000000000001".to_owned(), "1".to_owned()),
        ])
    );
    let mut expected = ids(&a);
    expected.extend(ids(&b));
    assert_eq!(table_event_ids(&env.table).await, sorted(expected));

    let version = table_version(&env.table).await;
    assert_eq!(report.table_version, version);
    let again = compactor::run(env.config()).await.expect("second run");
    assert!(!again.committed);
    assert_eq!(again.records_read, 0);
    assert_eq!(again.run, 1);
    assert_eq!(table_version(&env.table).await, version);
    assert!(again.manifest.is_none());

    let status = compactor::status(&env.source(), STREAM, &Location::local(&env.table))
        .await
        .expect("status");
    assert_eq!(status.rows, 8);
    assert_eq!(status.run, 1);
    assert_eq!(status.table_version, Some(version));
    assert!(status.shards.values().all(|s| s.lag == Some(0)));
}

#[tokio::test]
async fn new_data_is_read_from_the_checkpoint_compared_as_integers() {
    let env = Env::new(1);
    let mut all = Vec::new();
    for i in 0..9 {
        let p = vec![position(i)];
        env.append(0, &p);
        all.extend(p);
    }
    let first = compactor::run(env.config()).await.expect("run 1");
    assert_eq!(first.checkpoints["shardId-000000000000"], "9");
    // 10, 11, 12: "10" < "9" as strings, but not as sequence numbers.
    for i in 9..12 {
        let p = vec![position(i)];
        env.append(0, &p);
        all.extend(p);
    }
    let status = compactor::status(&env.source(), STREAM, &Location::local(&env.table))
        .await
        .expect("status");
    assert_eq!(status.shards["shardId-000000000000"].lag, Some(3));

    let second = compactor::run(env.config()).await.expect("run 2");
    assert_eq!(second.run, 2);
    assert_eq!(second.records_read, 3);
    assert_eq!(second.checkpoints["shardId-000000000000"], "12");
    let third_env_data = compactor::run(env.config()).await.expect("run 3");
    assert!(!third_env_data.committed);
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&all)));

    // --max-records reads at most that many records per shard.
    for i in 12..15 {
        env.append(0, &[position(i)]);
    }
    let mut limited = env.config();
    limited.max_records = Some(2);
    let r = compactor::run(limited).await.expect("limited run");
    assert_eq!(r.records_read, 2);
    assert_eq!(r.checkpoints["shardId-000000000000"], "14");
}

#[tokio::test]
async fn duplicates_within_and_across_runs_end_up_once() {
    let env = Env::new(2);
    let a = positions(4);
    env.append(0, &a);
    // The same positions again (a retried PutRecords), on another shard too.
    env.append(0, &a[..2]);
    env.append(1, &a[3..]);
    let first = compactor::run(env.config()).await.expect("run 1");
    assert_eq!(first.rows_written, 4);
    assert_eq!(first.duplicates_dropped, 3);

    // A later run receives an id already committed, plus a new one.
    let fresh = position(10);
    env.append(1, &[a[1].clone(), fresh.clone()]);
    let second = compactor::run(env.config()).await.expect("run 2");
    assert_eq!(second.rows_written, 1);
    assert_eq!(second.duplicates_dropped, 1);
    let mut expected = ids(&a);
    expected.push(fresh.event_id.to_string());
    assert_eq!(table_event_ids(&env.table).await, sorted(expected));
}

#[tokio::test]
async fn bad_records_are_dead_lettered_and_the_rest_is_committed() {
    let env = Env::new(1);
    let good = positions(3);
    env.append(0, &good[..1]);
    let garbage_seq = env.append_raw(0, b"this is not avro");
    // Another producer wrote a latitude of 200 degrees: structurally invalid.
    let bad = position(7);
    let invalid_seq = env.append_raw(
        0,
        &common::encode_with_lat(&[good[1].clone(), bad.clone(), good[2].clone()], 1, 200.0),
    );

    let report = compactor::run(env.config()).await.expect("run");
    assert!(report.committed);
    assert_eq!(report.records_read, 3);
    assert_eq!(report.positions_decoded, 4);
    assert_eq!(report.dead_lettered, 2);
    assert_eq!(report.rows_written, 3);
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&good)));

    let file = report.dead_letter_file.clone().expect("dead-letter file");
    // Named per attempt, and named by the commit.
    let name = Path::new(&file)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    assert!(
        name.starts_with("run-00000000000000000001-") && name.ends_with(".jsonl"),
        "{file}"
    );
    assert!(file.contains("table_dead_letter"), "{file}");
    let runs = committed_runs(&env.table).await;
    assert_eq!(
        runs[0].report.as_ref().expect("counts")["dead_letter_file"],
        file.as_str()
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .expect("read dead letters")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    let undecodable = &lines[0];
    assert_eq!(undecodable["kind"], "undecodable");
    assert_eq!(undecodable["shard_id"], "shardId-000000000000");
    assert_eq!(undecodable["sequence_number"], garbage_seq.to_string());
    assert!(
        undecodable["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("not a readable Avro container"))
    );
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(undecodable["data_base64"].as_str().expect("base64"))
            .expect("decode"),
        b"this is not avro"
    );
    let invalid = &lines[1];
    assert_eq!(invalid["kind"], "invalid");
    assert_eq!(invalid["sequence_number"], invalid_seq.to_string());
    assert_eq!(invalid["datum_index"], 1);
    assert_eq!(invalid["position"]["event_id"], bad.event_id.to_string());
    assert_eq!(invalid["position"]["lat"], 200.0);
    let lat_rule = invalid["reasons"][0].as_str().expect("reason");
    assert!(lat_rule.starts_with("lat: "), "{invalid}");
    // The reasons are counted in the report and the commit by rule, without
    // the value (the file keeps it), so the DAG can name them without reading
    // the files.
    let rule = lat_rule
        .strip_suffix(" (got 200)")
        .expect("the file's reason names the value");
    let reasons = std::collections::BTreeMap::from([
        ("undecodable record".to_owned(), 1),
        (rule.to_owned(), 1),
    ]);
    assert_eq!(report.dead_letter_reasons, reasons);
    assert_eq!(
        runs[0].report.as_ref().expect("counts")["dead_letter_reasons"],
        serde_json::json!(reasons)
    );
}

#[tokio::test]
async fn positions_the_service_accepted_are_never_rejected_for_their_time() {
    // A deployment that accepts fixes up to 14 days old (phones offline for
    // days) and clocks a little ahead: the compactor keeps every one.
    let env = Env::new(1);
    let id = || uuid::Uuid::now_v7().to_string();
    let accepted = vec![
        position_with(1, &id(), TimeDelta::days(-10)),
        position_with(2, &id(), TimeDelta::days(-13)),
        position_with(3, &id(), TimeDelta::minutes(30)),
        position_with(4, &id(), TimeDelta::seconds(-2)),
    ];
    env.append(0, &accepted);
    let report = compactor::run(env.config()).await.expect("run");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert_eq!(report.rows_written, 4);
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&accepted)));
}

#[tokio::test]
async fn each_position_lands_in_the_partition_of_its_recorded_date() {
    // Three days interleaved in one record, as a backlog across midnight
    // arrives: the rows stage splits them by date itself.
    let env = Env::new(1);
    let id = || uuid::Uuid::now_v7().to_string();
    let days = [0, -1, -2];
    let accepted: Vec<Position> = (0..30)
        .map(|i| position_with(i, &id(), TimeDelta::days(days[i % 3])))
        .collect();
    env.append(0, &accepted);
    let report = compactor::run(env.config()).await.expect("run");
    assert_eq!(report.rows_written, 30, "{report:?}");
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &accepted {
        expected
            .entry(p.recorded_at.date_naive().to_string())
            .or_default()
            .push(p.event_id.to_string());
    }
    for ids in expected.values_mut() {
        ids.sort();
    }
    assert_eq!(expected.len(), 3);
    assert_eq!(
        common::table_event_ids_by_date(&Location::local(&env.table)).await,
        expected
    );
    assert_eq!(report.files_added, 3, "one file per date: {report:?}");
}

/// `record` with its first block's datum count (one zigzag byte, right after
/// the header) replaced by `count`.
fn with_datum_count(record: &[u8], count: i64) -> Vec<u8> {
    let at =
        courier_model::avro::RecordEncoder::new(courier_model::avro::Codec::Zstandard).header_len();
    let mut out = record[..at].to_vec();
    let mut z = ((count << 1) ^ (count >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out.extend_from_slice(&record[at + 1..]);
    out
}

#[tokio::test]
async fn a_poisoned_record_is_dead_lettered_with_its_reason_and_the_run_goes_on() {
    let env = Env::new(1);
    let before = positions(3);
    let after = positions(2);
    env.append(0, &before);
    // An Avro block that declares 2^40 datums: once an allocation of 152 TiB
    // that aborted every run at this record, forever.
    let poisoned = with_datum_count(&encode(&positions(1)), 1 << 40);
    let poisoned_seq = env.append_raw(0, &poisoned);
    // A record cut short.
    let full = encode(&positions(4));
    let truncated_seq = env.append_raw(0, &full[..full.len() - 10]);
    let last_seq = env.append(0, &after);

    let report = compactor::run(env.config()).await.expect("run");
    assert!(report.committed);
    assert_eq!(report.records_read, 4);
    assert_eq!(report.dead_lettered, 2);
    assert_eq!(report.rows_written, 5);
    assert_eq!(
        report.checkpoints["shardId-000000000000"],
        last_seq.to_string()
    );
    let mut all = before.clone();
    all.extend(after.clone());
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&all)));

    let file = report.dead_letter_file.expect("dead-letter file");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .expect("read dead letters")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["kind"], "undecodable");
    assert_eq!(lines[0]["shard_id"], "shardId-000000000000");
    assert_eq!(lines[0]["sequence_number"], poisoned_seq.to_string());
    let reason = lines[0]["reasons"][0].as_str().expect("reason");
    assert!(reason.contains("declares 1099511627776 datums"), "{reason}");
    assert_eq!(lines[1]["sequence_number"], truncated_seq.to_string());
    let reason = lines[1]["reasons"][0].as_str().expect("reason");
    assert!(reason.contains("damaged Avro container"), "{reason}");

    // The next run starts after them: nothing is read twice.
    let again = compactor::run(env.config()).await.expect("run 2");
    assert_eq!(again.records_read, 0);
}

#[tokio::test]
async fn a_crash_before_the_commit_is_redone_once() {
    let env = Env::new(2);
    let a = positions(6);
    env.append(0, &a[..3]);
    env.append(1, &a[3..]);
    env.append_raw(1, b"garbage");

    // Stage one only: Parquet and dead letters written, then "crash".
    let prepared = compactor::prepare(env.config()).await.expect("prepare");
    assert_eq!(prepared.report().rows_written, 6);
    let dead_letters = prepared.report().dead_letter_file.clone().expect("dl");
    drop(prepared);
    assert_eq!(table_version(&env.table).await, 0, "nothing committed");

    let report = compactor::run(env.config()).await.expect("rerun");
    assert!(report.committed);
    assert_eq!(report.run, 1);
    assert_eq!(report.rows_written, 6);
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&a)));
    // Dead letters are named per attempt: the redo wrote its own file (the
    // crashed attempt's is left alone, never overwritten), and the commit
    // names the redo's.
    let redo = report
        .dead_letter_file
        .clone()
        .expect("the redo's dead letters");
    assert_ne!(redo, dead_letters);
    assert!(Path::new(&dead_letters).exists() && Path::new(&redo).exists());
    let runs = committed_runs(&env.table).await;
    assert_eq!(
        runs[0].report.as_ref().expect("counts")["dead_letter_file"],
        redo.as_str()
    );
    assert_eq!(
        std::fs::read_to_string(&dead_letters)
            .expect("read")
            .lines()
            .count(),
        1
    );
}

async fn race(use_precheck: bool, txn_only: bool) {
    let env = Env::new(1);
    let a = if txn_only { Vec::new() } else { positions(4) };
    if txn_only {
        // The winner then commits no files, only its txn and checkpoints:
        // only the conflict checker's txn (app id) rule can stop the loser.
        env.append_raw(0, b"garbage");
    } else {
        env.append(0, &a);
    }
    // Create the table first so both runs start from the same version.
    compactor::table::open_or_create(&Location::local(&env.table))
        .await
        .expect("create");
    let first = compactor::prepare(env.config()).await.expect("prepare 1");
    let second = compactor::prepare(env.config()).await.expect("prepare 2");
    assert_eq!(first.report().run, 1);
    assert_eq!(second.report().run, 1);
    // Each attempt writes its own dead-letter file: the loser can neither
    // overwrite nor delete the winner's.
    let loser_letters = second.report().dead_letter_file.clone();
    if txn_only {
        assert_ne!(first.report().dead_letter_file, loser_letters);
    }

    let won = first.commit().await.expect("the first commit wins");
    assert!(won.committed);
    let version = table_version(&env.table).await;

    let lost = if use_precheck {
        second.commit().await
    } else {
        second.commit_without_precheck().await
    };
    let err = lost.expect_err("the second run must not commit");
    assert!(
        matches!(err, CompactorError::AlreadyCommitted { run: 1, .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), 3);
    assert_eq!(
        table_version(&env.table).await,
        version,
        "nothing committed"
    );
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&a)));
    let status = compactor::status(&env.source(), STREAM, &Location::local(&env.table))
        .await
        .expect("status");
    assert_eq!(status.run, 1);
    if let Some(file) = &won.dead_letter_file {
        let letters = std::fs::read_to_string(file).expect("the winner's dead letters survive");
        assert_eq!(letters.lines().count(), 1);
        assert_ne!(Some(file), loser_letters.as_ref());
    }
}

#[tokio::test]
async fn racing_runs_commit_once_and_the_loser_exits_3() {
    race(true, false).await;
}

#[tokio::test]
async fn the_conflict_checker_rejects_a_concurrent_commit_of_the_same_app_id() {
    race(false, false).await;
    race(false, true).await;
}

#[tokio::test]
async fn the_manifest_lists_exactly_the_added_files_with_their_sizes() {
    let env = Env::new(2);
    // Two UTC dates: two partitions, so at least two files.
    let mut a = positions(3);
    a.push(position_with(
        3,
        &uuid::Uuid::now_v7().to_string(),
        TimeDelta::days(-2),
    ));
    env.append(0, &a[..2]);
    env.append(1, &a[2..]);
    let first = compactor::run(env.config()).await.expect("run 1");
    let manifest_path = first.manifest.clone().expect("manifest");
    assert!(manifest_path.ends_with(&format!("_manifests/v{:020}.json", first.table_version)));

    env.append(0, &positions(2));
    let second = compactor::run(env.config()).await.expect("run 2");

    for report in [&first, &second] {
        let path = report.manifest.as_ref().expect("manifest");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        let entries = manifest["entries"].as_array().expect("entries");
        assert_eq!(entries.len() as u64, report.files_added);
        let mut listed = HashSet::new();
        for entry in entries {
            assert_eq!(entry["mandatory"], true);
            let url = entry["url"].as_str().expect("url");
            let file = url::Url::parse(url)
                .expect("file url")
                .to_file_path()
                .expect("path");
            let size = std::fs::metadata(&file).expect("the file exists").len();
            assert_eq!(entry["meta"]["content_length"], size);
            assert!(url.starts_with("file:///"), "{url}");
            listed.insert(url.to_owned());
        }
        assert_eq!(listed.len(), entries.len());
    }
    assert!(first.files_added >= 2, "one file per date partition");
    // Together the manifests list exactly the table's files.
    let table = compactor::table::load(&Location::local(&env.table))
        .await
        .expect("load")
        .expect("table");
    let files: HashSet<PathBuf> = table
        .get_file_uris()
        .expect("uris")
        .map(|u| local_path(&u))
        .collect();
    assert_eq!(files.len() as u64, first.files_added + second.files_added);
}

#[tokio::test]
async fn parquet_columns_follow_the_documented_order() {
    let env = Env::new(1);
    env.append(0, &positions(2));
    compactor::run(env.config()).await.expect("run");
    let table = compactor::table::load(&Location::local(&env.table))
        .await
        .expect("load")
        .expect("table");
    let uri = table.get_file_uris().expect("uris").next().expect("a file");
    assert!(uri.contains("event_date="), "{uri}");
    let path = local_path(&uri);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).expect("open"))
            .expect("parquet");
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let expected: Vec<String> = COLUMNS[..10].iter().map(|c| c.0.to_owned()).collect();
    assert_eq!(names, expected, "event_date lives in the path only");
    let recorded = builder
        .schema()
        .field_with_name("recorded_at")
        .expect("field");
    assert_eq!(
        recorded.data_type(),
        &arrow::datatypes::DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into())
        )
    );
}

#[tokio::test]
async fn a_crash_right_after_the_commit_skips_the_work_and_restores_the_manifest() {
    let env = Env::new(1);
    let a = positions(4);
    env.append(0, &a);
    let report = compactor::run(env.config()).await.expect("run");
    let manifest = report.manifest.clone().expect("manifest");
    let written = std::fs::read(&manifest).expect("manifest written");
    // The process died between the commit and the manifest write.
    std::fs::remove_file(&manifest).expect("lose the manifest");

    let rerun = compactor::run(env.config()).await.expect("rerun");
    assert!(!rerun.committed, "the committed records are not read again");
    assert_eq!(rerun.records_read, 0);
    assert_eq!(table_version(&env.table).await, report.table_version);
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&a)));
    assert_eq!(
        std::fs::read(&manifest).expect("manifest restored"),
        written,
        "the same manifest, rebuilt from the commit"
    );
}

#[tokio::test]
async fn optimize_packs_small_files_and_vacuum_deletes_what_no_version_needs() {
    use compactor::maintenance::{OptimizeConfig, VacuumConfig, optimize, vacuum};
    let env = Env::new(1);
    let table = Location::local(&env.table);
    let mut all = Vec::new();
    for _ in 0..4 {
        let batch = positions(5);
        env.append(0, &batch);
        all.extend(batch);
        compactor::run(env.config()).await.expect("run");
    }
    let before = common::files_per_partition(&table).await;
    assert!(before.values().all(|n| *n == 4), "{before:?}");
    let version = table_version(&env.table).await;

    let report = optimize(&table, &OptimizeConfig::default())
        .await
        .expect("optimize");
    assert_eq!(report.files_removed as usize, 4 * before.len());
    assert_eq!(report.files_added as usize, before.len());
    assert_eq!(report.rows_rewritten, 20);
    assert_eq!(report.table_version, Some(version + 1));
    let after = common::files_per_partition(&table).await;
    assert!(after.values().all(|n| *n == 1), "{after:?}");
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&all)));
    // The commit changes no data: every action says so.
    let log = std::fs::read_to_string(
        env.table
            .join("_delta_log")
            .join(format!("{:020}.json", version + 1)),
    )
    .expect("commit file");
    let mut actions = 0;
    for line in log.lines() {
        let action: serde_json::Value = serde_json::from_str(line).expect("json");
        if let Some(info) = action.get("commitInfo") {
            assert_eq!(info["operation"], "OPTIMIZE");
        }
        for kind in ["add", "remove"] {
            if let Some(a) = action.get(kind) {
                assert_eq!(a["dataChange"], false, "{line}");
                actions += 1;
            }
        }
    }
    assert_eq!(actions, 5 * before.len());
    let again = optimize(&table, &OptimizeConfig::default())
        .await
        .expect("optimize again");
    assert_eq!(again.table_version, None, "nothing left to pack");

    // The dedup window still covers the rows optimize moved.
    env.append(0, &all[..1]);
    let retry = compactor::run(env.config())
        .await
        .expect("run after optimize");
    assert_eq!(retry.duplicates_dropped, 1);
    assert_eq!(retry.rows_written, 0);

    // A crashed run's Parquet file that no commit references.
    let partition = env.table.join(format!(
        "event_date={}",
        after.keys().next().expect("a partition")
    ));
    let orphan = partition.join("part-00000-crashed-run.snappy.parquet");
    std::fs::write(&orphan, b"PAR1 never committed").expect("orphan");

    // A crashed run's id file, beside those of the four runs that wrote rows
    // (the retry above wrote none).
    let dedup = env.table.join("_dedup");
    let orphan_ids = dedup.join("run-00000000000000000009-crashed.ids");
    std::fs::write(&orphan_ids, [0u8; 16]).expect("orphan ids");
    assert_eq!(id_files(&env.table).len(), 4 + 1);

    let dry = vacuum(
        &table,
        &VacuumConfig {
            retention: std::time::Duration::from_secs(3600),
            dry_run: true,
            dedup_commits: 24,
        },
    )
    .await
    .expect("dry run");
    assert!(
        dry.files_deleted.is_empty() && dry.id_files_deleted.is_empty(),
        "all younger than an hour: {dry:?}"
    );
    let done = vacuum(
        &table,
        &VacuumConfig {
            retention: std::time::Duration::ZERO,
            dry_run: false,
            dedup_commits: 3,
        },
    )
    .await
    .expect("vacuum");
    assert_eq!(done.files_deleted.len(), 4 * before.len() + 1, "{done:?}");
    assert!(!orphan.exists());
    // The id files of the three newest runs stay (the window reads them:
    // the retry has none, runs 4 and 3 have theirs); runs 1 and 2's and the
    // orphan go.
    assert_eq!(done.id_files_deleted.len(), 3, "{done:?}");
    assert!(!orphan_ids.exists());
    assert_eq!(id_files(&env.table).len(), 2);
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&all)));
    assert!(
        env.table
            .join("_manifests")
            .read_dir()
            .expect("manifests")
            .count()
            >= 4,
        "manifests are not data files"
    );
    // The table and the compactor go on.
    let more = positions(2);
    env.append(0, &more);
    let last = compactor::run(env.config())
        .await
        .expect("run after vacuum");
    assert_eq!(last.rows_written, 2);
}

/// The files under the table's `_dedup/`, sorted.
fn id_files(table: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(table.join("_dedup")) {
        Ok(dir) => dir.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// The `courier.dedup_ids` of the table's newest commit.
fn newest_ids_file(table: &Path) -> serde_json::Value {
    let version = std::fs::read_dir(table.join("_delta_log"))
        .expect("log")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().into_string().expect("utf-8");
            name.strip_suffix(".json")?.parse::<u64>().ok()
        })
        .max()
        .expect("a commit");
    let log = std::fs::read_to_string(table.join("_delta_log").join(format!("{version:020}.json")))
        .expect("commit");
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|action| {
            action
                .get("commitInfo")
                .map(|i| i["courier.dedup_ids"].clone())
        })
        .expect("commitInfo")
}

#[tokio::test]
async fn the_dedup_window_reads_each_runs_id_file_and_falls_back_to_parquet() {
    let env = Env::new(1);
    let first = positions(5);
    env.append(0, &first);
    compactor::run(env.config()).await.expect("run 1");

    // The commit names the run's id file: 16 raw bytes per event id.
    let named = newest_ids_file(&env.table);
    assert_eq!(named["ids"], 5, "{named}");
    let id_file = env.table.join(named["file"].as_str().expect("file"));
    assert_eq!(id_files(&env.table), vec![id_file.clone()]);
    let bytes = std::fs::read(&id_file).expect("id file");
    let mut in_file: Vec<String> = bytes
        .chunks_exact(16)
        .map(|raw| uuid::Uuid::from_slice(raw).expect("uuid").to_string())
        .collect();
    in_file.sort();
    assert_eq!(in_file, sorted(ids(&first)));

    env.append(0, &first[..1]); // a producer retry
    let dropped = |config: RunConfig| async move {
        compactor::prepare(config)
            .await
            .expect("prepare")
            .report()
            .duplicates_dropped
    };
    // An id file cut short is not trusted: the ids come from the Parquet files.
    std::fs::write(&id_file, &bytes[..40]).expect("truncate");
    assert_eq!(dropped(env.config()).await, 1, "from Parquet");
    // A whole id file is enough without the Parquet files (optimized away and vacuumed).
    std::fs::write(&id_file, &bytes).expect("restore");
    let parquet: Vec<PathBuf> = common::files_per_partition(&Location::local(&env.table))
        .await
        .keys()
        .flat_map(|date| {
            std::fs::read_dir(env.table.join(format!("event_date={date}")))
                .expect("partition")
                .map(|e| e.expect("entry").path())
        })
        .collect();
    let moved: Vec<(PathBuf, PathBuf)> = parquet
        .iter()
        .map(|p| (p.clone(), p.with_extension("moved")))
        .collect();
    for (from, to) in &moved {
        std::fs::rename(from, to).expect("move the Parquet file away");
    }
    assert_eq!(dropped(env.config()).await, 1, "from the id file");
    // Neither: the window has nothing of run 1 (and says so in the logs).
    std::fs::remove_file(&id_file).expect("remove id file");
    assert_eq!(dropped(env.config()).await, 0, "nothing left to read");
    for (from, to) in &moved {
        std::fs::rename(to, from).expect("move back");
    }
    let report = compactor::run(env.config()).await.expect("run 2");
    assert_eq!((report.duplicates_dropped, report.rows_written), (1, 0));
    assert!(
        newest_ids_file(&env.table).is_null(),
        "a run that writes no rows writes no id file"
    );
}

#[tokio::test]
async fn a_run_stops_at_its_position_budget_and_the_next_reads_on() {
    let env = Env::new(2);
    let mut all = Vec::new();
    for _ in 0..5 {
        for shard in 0..2 {
            let batch = positions(3);
            env.append(shard, &batch);
            all.extend(batch);
        }
    }
    let mut runs = Vec::new();
    loop {
        let mut config = env.config();
        config.max_positions = Some(12); // 6 per shard: two records of three
        let report = compactor::run(config).await.expect("run");
        runs.push((report.records_read, report.rows_written, report.backlog));
        if !report.backlog {
            break;
        }
        assert!(runs.len() < 10, "runs must progress: {runs:?}");
    }
    assert_eq!(
        runs,
        vec![(4, 12, true), (4, 12, true), (2, 6, false)],
        "bounded runs that read on from their checkpoints"
    );
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&all)));
}

#[tokio::test]
async fn the_dedup_window_stops_at_its_id_budget() {
    let env = Env::new(1);
    let first = positions(5);
    env.append(0, &first);
    compactor::run(env.config()).await.expect("run 1");
    env.append(0, &positions(5));
    compactor::run(env.config()).await.expect("run 2");

    // A retry of a run-1 position: inside the default window, dropped.
    env.append(0, &first[..1]);
    let mut narrow = env.config();
    narrow.dedup_window_ids = 5; // only run 2's ids fit
    let prepared = compactor::prepare(narrow).await.expect("prepare narrow");
    assert_eq!(
        prepared.report().duplicates_dropped,
        0,
        "run 1 is outside a window of 5 ids"
    );
    drop(prepared);
    let report = compactor::run(env.config()).await.expect("run 3");
    assert_eq!(report.duplicates_dropped, 1);
    assert_eq!(report.rows_written, 0);
}

#[tokio::test]
async fn records_deleted_before_the_compactor_read_them_fail_the_run_loudly() {
    // The compactor has not run for a while and the stream went over its
    // disk cap: the oldest unread segments are gone.
    let env = Env::with_cap(1, Some(16 * 1024));
    let first = positions(3);
    env.append(0, &first);
    let report = compactor::run(env.config()).await.expect("run 1");
    assert_eq!(report.rows_written, 3);
    let mut later = Vec::new();
    for _ in 0..80 {
        let batch = positions(2);
        env.append(0, &batch);
        later.extend(batch);
    }
    assert!(
        env.stream.segments_dropped() > 0,
        "the cap deleted segments"
    );

    let err = compactor::run(env.config())
        .await
        .expect_err("a gap fails the run");
    let text = err.to_string();
    assert!(
        text.contains("records 2 to ") && text.contains("are gone before they were read"),
        "{text}"
    );
    assert!(text.contains("--accept-data-loss"), "{text}");
    assert_eq!(
        table_event_ids(&env.table).await,
        sorted(ids(&first)),
        "nothing committed"
    );

    // Told to go on, it writes what is left and counts what is gone.
    let mut config = env.config();
    config.accept_data_loss = true;
    let report = compactor::run(config)
        .await
        .expect("run with loss accepted");
    assert!(report.committed);
    assert!(report.records_lost > 0);
    assert_eq!(report.records_read + report.records_lost, 80);
    assert_eq!(report.rows_written, report.records_read * 2);
}

#[tokio::test]
async fn retries_of_every_position_of_a_full_run_are_dropped_by_the_next_run() {
    let env = Env::new(2);
    let mut sent = Vec::new();
    for shard in 0..2 {
        for _ in 0..4 {
            let batch = positions(3);
            env.append(shard, &batch);
            sent.extend(batch);
        }
    }
    // A run that reads its whole budget, with a window budget far smaller
    // than the run.
    let config = || {
        let mut c = env.config();
        c.max_positions = Some(24);
        c.dedup_window_ids = 5;
        c
    };
    let first = compactor::run(config()).await.expect("run 1");
    assert_eq!(first.rows_written, 24);
    assert!(!first.backlog);
    // Every client retries every position, in the next run.
    for (shard, chunk) in sent.chunks(12).enumerate() {
        for record in chunk.chunks(3) {
            env.append(shard, record);
        }
    }
    let second = compactor::run(config()).await.expect("run 2");
    assert_eq!(second.duplicates_dropped, 24, "{second:?}");
    assert_eq!(second.rows_written, 0);
    assert_eq!(table_event_ids(&env.table).await, sorted(ids(&sent)));
}

#[tokio::test]
async fn a_window_cut_inside_a_run_keeps_that_runs_newest_ids() {
    let env = Env::new(1);
    let old = positions(6);
    env.append(0, &old);
    compactor::run(env.config()).await.expect("run 1");
    env.append(0, &positions(2));
    compactor::run(env.config()).await.expect("run 2");
    // Window: run 2 whole (2 ids) + 2 more: run 1's two newest.
    env.append(0, &[old[0].clone(), old[4].clone(), old[5].clone()]);
    let mut narrow = env.config();
    narrow.dedup_window_ids = 4;
    let report = compactor::run(narrow).await.expect("run 3");
    assert_eq!(
        report.duplicates_dropped, 2,
        "old[4] and old[5] are in the window"
    );
    assert_eq!(report.rows_written, 1, "old[0] fell outside it");
}

#[tokio::test]
async fn a_new_table_keeps_its_log_for_a_year_so_the_next_runs_state_survives_cleanup() {
    let env = Env::new(1);
    env.append(0, &positions(2));
    compactor::run(env.config()).await.expect("run");
    // Read the table's metaData action straight from the log.
    let log = std::fs::read_to_string(env.table.join("_delta_log/00000000000000000000.json"))
        .expect("the creating commit");
    let metadata = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("action"))
        .find_map(|a| a.get("metaData").cloned())
        .expect("a metaData action");
    assert_eq!(
        metadata["configuration"]["delta.logRetentionDuration"],
        compactor::table::LOG_RETENTION
    );
}
