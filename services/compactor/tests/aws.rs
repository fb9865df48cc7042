//! The compactor against real AWS protocols: Kinesis and S3 served by
//! `moto_server` (each test starts its own on a free port), through the real
//! `aws-sdk-kinesis` client and delta-rs' S3 object store. The binary tests
//! configure everything through the environment, as the ECS task does.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use common::{encode, ids, positions, sorted, table_event_ids};
use compactor::{Location, RunConfig, SourceConfig};
use courier_model::position::Position;
use serde_json::Value;
use test_support::{fault_proxy, moto};

const BUCKET: &str = "lake";
const TABLE: &str = "s3://lake/tables/positions";

struct Aws {
    moto: moto::MotoServer,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
}

impl Aws {
    async fn start(shards: i32) -> Self {
        let moto = moto::MotoServer::start().await;
        let kinesis = moto::kinesis_client(&moto.endpoint);
        let stream = "courier-positions".to_owned();
        moto::create_stream(&kinesis, &stream, shards).await;
        let created = reqwest::Client::new()
            .put(format!("{}/{BUCKET}", moto.endpoint))
            .send()
            .await
            .expect("CreateBucket");
        assert!(created.status().is_success(), "CreateBucket: {created:?}");
        Self {
            moto,
            kinesis,
            stream,
        }
    }

    fn s3_options(&self) -> HashMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", self.moto.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn table(&self) -> Location {
        Location::parse(TABLE)
            .expect("table URI")
            .with_options(self.s3_options())
    }

    fn config(&self) -> RunConfig {
        RunConfig::with(
            SourceConfig::KinesisClient(self.kinesis.clone()),
            &self.stream,
            self.table(),
        )
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> String {
        self.kinesis
            .put_record()
            .stream_name(&self.stream)
            .partition_key(key)
            .data(Blob::new(data))
            .send()
            .await
            .expect("PutRecord")
            .sequence_number()
            .to_owned()
    }

    async fn put_each(&self, positions: &[Position]) {
        for p in positions {
            self.put(p.courier_id.as_str(), encode(std::slice::from_ref(p)))
                .await;
        }
    }

    /// The environment of the compactor task, as Terraform sets it.
    fn task_env(&self, command: &mut Command) {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("COMPACTOR_SOURCE", "kinesis")
            .env("COMPACTOR_STREAM_NAME", &self.stream)
            .env("COMPACTOR_TABLE_URI", TABLE)
            .env("COMPACTOR_DEAD_LETTER_URI", "s3://lake/dead-letter")
            .env("COMPACTOR_MANIFEST_URI", "s3://lake/manifests")
            .env("COMPACTOR_LOG_FORMAT", "json")
            .env("AWS_ENDPOINT_URL", &self.moto.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true");
    }

    fn compactor(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_compactor"));
        self.task_env(&mut command);
        command.args(args).stdin(Stdio::null());
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

#[tokio::test]
async fn kinesis_to_an_s3_table_exactly_once_with_dead_letters_and_manifests() {
    let aws = Aws::start(1).await;
    // Nine records on one shard: seven positions, a producer retry of the
    // first, and a record that is not Avro.
    let first = positions(7);
    aws.put_each(&first).await;
    aws.put("courier-0", encode(&first[..1])).await;
    let garbage_seq = aws.put("courier-x", b"not avro at all".to_vec()).await;

    let report = compactor::run(aws.config()).await.expect("run 1");
    assert!(report.committed);
    assert_eq!(report.records_read, 9);
    assert_eq!(report.rows_written, 7);
    assert_eq!(report.duplicates_dropped, 1);
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.checkpoints["shardId-000000000000"], "9");
    assert_eq!(table_event_ids(&aws.table()).await, sorted(ids(&first)));

    // The manifest is on S3 and lists the table's s3:// files with their sizes.
    let manifest = report.manifest.clone().expect("manifest");
    let name = format!("v{:020}.json", report.table_version);
    assert_eq!(manifest, format!("{TABLE}/_manifests/{name}"));
    let body = aws
        .table()
        .child("_manifests")
        .get(&name)
        .await
        .expect("get")
        .expect("the manifest exists");
    let manifest: Value = serde_json::from_slice(&body).expect("json");
    let entries = manifest["entries"].as_array().expect("entries");
    assert_eq!(entries.len() as u64, report.files_added);
    for entry in entries {
        let url = entry["url"].as_str().expect("url");
        assert!(url.starts_with(&format!("{TABLE}/event_date=")), "{url}");
        assert_eq!(entry["mandatory"], true);
        let key = url.trim_start_matches(&format!("s3://{BUCKET}/"));
        let object = Location::parse(&format!("s3://{BUCKET}/"))
            .expect("bucket")
            .with_options(aws.s3_options())
            .get(key)
            .await
            .expect("GetObject")
            .expect("the listed file exists");
        assert!(object.starts_with(b"PAR1"), "a Parquet file at {key}");
        assert_eq!(
            entry["meta"]["content_length"].as_u64(),
            Some(object.len() as u64)
        );
    }

    // The dead letter is beside the table, with the reason and the position in the stream.
    let dead = report.dead_letter_file.clone().expect("dead letters");
    // Named per attempt: `run-<run>-<attempt>.jsonl`.
    let prefix = format!("{TABLE}_dead_letter/run-00000000000000000001-");
    assert!(
        dead.starts_with(&prefix) && dead.ends_with(".jsonl"),
        "{dead}"
    );
    let body = aws
        .table()
        .with_suffix("_dead_letter")
        .get(dead.rsplit('/').next().expect("file name"))
        .await
        .expect("get")
        .expect("the dead-letter file exists");
    let letter: Value =
        serde_json::from_slice(body.split(|b| *b == b'\n').next().expect("line")).expect("json");
    assert_eq!(letter["kind"], "undecodable");
    assert_eq!(letter["sequence_number"], garbage_seq.as_str());
    assert_eq!(letter["shard_id"], "shardId-000000000000");

    // The run's event ids are on S3 too, in the id file its commit names.
    let table = compactor::table::load(&aws.table())
        .await
        .expect("load")
        .expect("table");
    let commits = compactor::state::newest_commits(&table, None, 1)
        .await
        .expect("commits");
    let ids_file = commits[0].ids_file.clone().expect("an id file");
    assert_eq!(ids_file.ids, 7);
    assert!(
        ids_file
            .file
            .starts_with("_dedup/run-00000000000000000001-")
    );
    let body = aws
        .table()
        .get(&ids_file.file)
        .await
        .expect("get")
        .expect("the id file exists");
    assert_eq!(body.len(), 7 * 16);

    // Records 10, 11, 12 come after "9" (compared as integers, not strings);
    // record 13, a late retry of run 1's position, is dropped by the window.
    let second = positions(3);
    aws.put_each(&second).await;
    aws.put("courier-1", encode(&first[1..2])).await;
    let report2 = compactor::run(aws.config()).await.expect("run 2");
    assert_eq!(report2.records_read, 4);
    assert_eq!(report2.rows_written, 3);
    assert_eq!(report2.duplicates_dropped, 1);
    assert_eq!(report2.checkpoints["shardId-000000000000"], "13");
    let again = compactor::run(aws.config()).await.expect("run 3");
    assert!(!again.committed, "nothing new: no commit");
    let mut all = ids(&first);
    all.extend(ids(&second));
    assert_eq!(table_event_ids(&aws.table()).await, sorted(all));

    // Every committed run can be listed, with its counts and manifest.
    let runs = compactor::run::runs(
        &aws.table(),
        &aws.stream,
        None,
        &compactor::run::default_manifests(&aws.table()),
    )
    .await
    .expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].run, 1);
    assert_eq!(runs[0].report.as_ref().expect("counts")["rows_written"], 7);
    assert_eq!(runs[1].table_version, report2.table_version);
    assert_eq!(runs[1].manifest, report2.manifest);
    let later = compactor::run::runs(
        &aws.table(),
        &aws.stream,
        Some(report.table_version),
        &compactor::run::default_manifests(&aws.table()),
    )
    .await
    .expect("runs after run 1");
    assert_eq!(later.len(), 1);

    let status = compactor::status(
        &SourceConfig::KinesisClient(aws.kinesis.clone()),
        &aws.stream,
        &aws.table(),
    )
    .await
    .expect("status");
    assert_eq!(status.rows, 10);
    assert_eq!(status.run, 2);
    let shard = &status.shards["shardId-000000000000"];
    assert_eq!(shard.checkpoint.as_deref(), Some("13"));
    assert_eq!(shard.lag, None, "Kinesis cannot count records behind");
    assert_eq!(shard.lag_ms, Some(0));
}

#[tokio::test]
async fn after_a_reshard_parents_are_read_to_their_end_before_their_children() {
    let aws = Aws::start(2).await;
    let before = positions(12);
    aws.put_each(&before).await;
    aws.kinesis
        .update_shard_count()
        .stream_name(&aws.stream)
        .target_shard_count(3)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .expect("UpdateShardCount");
    let after = positions(6);
    aws.put_each(&after).await;
    let shards = aws
        .kinesis
        .list_shards()
        .stream_name(&aws.stream)
        .send()
        .await
        .expect("ListShards");
    let children: BTreeSet<String> = shards
        .shards()
        .iter()
        .filter(|s| s.parent_shard_id().is_some())
        .map(|s| s.shard_id().to_owned())
        .collect();
    assert!(!children.is_empty(), "the reshard made child shards");

    // One record per shard: the parents are not at their end, so no child is read.
    let mut limited = aws.config();
    limited.max_records = Some(1);
    let first = compactor::run(limited).await.expect("limited run");
    assert_eq!(first.records_read, 2, "one record of each parent");
    let deferred: BTreeSet<String> = first.shards_deferred.iter().cloned().collect();
    assert_eq!(deferred, children);
    assert!(first.checkpoints.keys().all(|s| !children.contains(s)));

    // To the end: the parents finish, then their children are read.
    let second = compactor::run(aws.config()).await.expect("full run");
    assert!(
        second.shards_deferred.is_empty(),
        "{:?}",
        second.shards_deferred
    );
    let mut all = ids(&before);
    all.extend(ids(&after));
    assert_eq!(table_event_ids(&aws.table()).await, sorted(all));
    assert!(!compactor::run(aws.config()).await.expect("rerun").committed);
}

// Multi-threaded: the proxy answers while the run waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_shards_are_read_ahead_concurrently_within_the_window() {
    let aws = Aws::start(6).await;
    let batch = positions(60);
    aws.put_each(&batch).await;
    // Every GetRecords is held: a reader that read one shard after the
    // other would have exactly one call in flight, whatever the wait.
    let proxy = fault_proxy::FaultProxy::start(&aws.moto.endpoint).await;
    proxy.stall("GetRecords", 0);
    let config = RunConfig::with(
        SourceConfig::KinesisClient(moto::kinesis_client(&proxy.endpoint)),
        &aws.stream,
        aws.table(),
    );
    let run = tokio::spawn(compactor::run(config));
    wait_until(
        Duration::from_secs(30),
        "a GetRecords of every shard in the read-ahead window",
        || proxy.held() >= compactor::source::READ_AHEAD_SHARDS,
    )
    .await;
    assert!(!run.is_finished(), "the run waits on the held reads");
    proxy.restore();

    // Released, the run reads every record once, in one commit.
    let report = run.await.expect("join").expect("run");
    assert_eq!(report.records_read, 60, "{report:?}");
    assert_eq!(report.rows_written, 60, "{report:?}");
    assert_eq!(table_event_ids(&aws.table()).await, sorted(ids(&batch)));
    assert!(!compactor::run(aws.config()).await.expect("rerun").committed);
}

#[tokio::test]
async fn the_binary_is_configured_by_the_environment_of_its_ecs_task() {
    let aws = Aws::start(2).await;
    let batch = positions(20);
    aws.put_each(&batch).await;

    let out = aws.compactor(&["run"]).output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_line(&out);
    assert_eq!(report["rows_written"], 20);
    let manifest = report["manifest"].as_str().expect("manifest");
    assert!(manifest.starts_with("s3://lake/manifests/v"), "{manifest}");
    // Logs are JSON lines on stderr, ending with the one-line summary.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect();
    let summary = logs
        .iter()
        .find(|l| l["message"] == "compactor run finished")
        .expect("summary line");
    assert_eq!(summary["rows"], 20);

    // A second batch lands in the same date partition: two small files.
    let more = positions(5);
    aws.put_each(&more).await;
    let out = aws.compactor(&["run"]).output().expect("run 2");
    assert_eq!(out.status.code(), Some(0));
    let version_2 = json_line(&out)["table_version"].as_u64().expect("version");

    // The orchestrator reads the report and the runs list from S3, never
    // from log lines: the object holds exactly what stdout printed.
    let out = aws
        .compactor(&["runs", "--after-version", "0"])
        .env(
            "COMPACTOR_OUTPUT_URI",
            "s3://lake/reports/dag-run-1/runs.json",
        )
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = json_line(&out);
    assert_eq!(runs.as_array().map(Vec::len), Some(2));
    let stored = Location::parse("s3://lake/reports/dag-run-1")
        .expect("reports")
        .with_options(aws.s3_options())
        .get("runs.json")
        .await
        .expect("read the runs object")
        .expect("the runs object exists");
    let stored: Value = serde_json::from_slice(&stored).expect("runs object is JSON");
    assert_eq!(stored, runs);

    let out = aws.compactor(&["optimize"]).output().expect("optimize");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let optimized = json_line(&out);
    assert!(
        optimized["files_removed"].as_u64() >= Some(2),
        "{optimized}"
    );
    assert_eq!(optimized["table_version"].as_u64(), Some(version_2 + 1));
    let mut all = ids(&batch);
    all.extend(ids(&more));
    assert_eq!(table_event_ids(&aws.table()).await, sorted(all));
    assert!(
        common::files_per_partition(&aws.table())
            .await
            .values()
            .all(|n| *n == 1)
    );

    let out = aws
        .compactor(&["vacuum", "--retention-hours", "1", "--dry-run"])
        .output()
        .expect("vacuum");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vacuum = json_line(&out);
    assert_eq!(vacuum["dry_run"], true);
    assert_eq!(
        vacuum["files_deleted"].as_array().map(Vec::len),
        Some(0),
        "the replaced files are younger than the retention"
    );

    let out = aws.compactor(&["status"]).output().expect("status");
    assert_eq!(out.status.code(), Some(0));
    let status = json_line(&out);
    assert_eq!(status["rows"], 25);
    assert_eq!(
        status["files"].as_u64(),
        Some(optimized["files_added"].as_u64().expect("n"))
    );
}

#[test]
fn bad_configuration_exits_2_and_says_what_is_missing() {
    let binary = env!("CARGO_BIN_EXE_compactor");
    let out = Command::new(binary)
        .env_clear()
        .args(["run", "--stream-name", "s", "--table-uri", "/tmp/never"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--data-dir"), "{stderr}");

    let out = Command::new(binary)
        .env_clear()
        .args([
            "status",
            "--source",
            "kinesis",
            "--stream-name",
            "s",
            "--table-uri",
            "gs://b/t",
        ])
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://"));
}

/// Waits until `done()` holds, polling; panics after `limit`.
async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(child: &std::process::Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill");
}

#[tokio::test]
async fn sigterm_while_reading_commits_nothing_and_a_kill_mid_read_is_redone_once() {
    let aws = Aws::start(2).await;
    let batch = positions(30);
    aws.put_each(&batch).await;
    let proxy = fault_proxy::FaultProxy::start(&aws.moto.endpoint).await;

    // SIGTERM while a GetRecords call hangs: exit 4, nothing committed.
    proxy.stall("GetRecords", 0);
    let child = aws
        .compactor(&["run"])
        .env("AWS_ENDPOINT_URL_KINESIS", &proxy.endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_until(Duration::from_secs(30), "a held GetRecords", || {
        proxy.held() >= 1
    })
    .await;
    signal(&child, libc::SIGTERM);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("committed nothing"));
    let runs = compactor::run::runs(
        &aws.table(),
        &aws.stream,
        None,
        &compactor::run::default_manifests(&aws.table()),
    )
    .await
    .expect("runs");
    assert!(runs.is_empty(), "nothing was committed: {runs:?}");
    proxy.restore();

    // SIGKILL after the first shard was read (its positions buffered, some
    // Parquet maybe written), while the second shard's read hangs.
    proxy.stall("GetRecords", 2);
    let mut child = aws
        .compactor(&["run"])
        .env("AWS_ENDPOINT_URL_KINESIS", &proxy.endpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let held_before = proxy.held();
    wait_until(Duration::from_secs(30), "a held GetRecords", || {
        proxy.held() > held_before
    })
    .await;
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), None, "killed by a signal");
    proxy.restore();

    // The rerun reads everything once.
    let out = aws.compactor(&["run"]).output().expect("rerun");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_line(&out);
    assert_eq!(report["run"], 1);
    assert_eq!(report["rows_written"], 30);
    assert_eq!(table_event_ids(&aws.table()).await, sorted(ids(&batch)));
}

#[tokio::test]
async fn a_commit_that_landed_but_whose_answer_was_lost_is_reported_as_committed() {
    let aws = Aws::start(1).await;
    let batch = positions(12);
    aws.put_each(&batch).await;
    // S3 through a proxy that carries out the put of the run's commit
    // (table version 1; version 0 creates the table) and then drops the
    // connection instead of answering.
    let proxy = fault_proxy::FaultProxy::start(&aws.moto.endpoint).await;
    proxy.lose_answer("PUT", "/_delta_log/00000000000000000001.json");
    let mut options = aws.s3_options();
    options.insert("AWS_ENDPOINT_URL".into(), proxy.endpoint.clone());
    let table = Location::parse(TABLE)
        .expect("table URI")
        .with_options(options);
    let config = RunConfig::with(
        SourceConfig::KinesisClient(aws.kinesis.clone()),
        &aws.stream,
        table,
    );

    let report = compactor::run(config)
        .await
        .expect("the run is not an error");
    assert_eq!(proxy.lost(), 1, "the commit's answer was lost");
    assert!(report.committed, "{report:?}");
    assert_eq!(report.table_version, 1);
    assert_eq!(report.rows_written, 12);
    assert_eq!(table_event_ids(&aws.table()).await, sorted(ids(&batch)));
    let manifest = report.manifest.expect("the manifest is written too");
    assert!(manifest.ends_with(".json"), "{manifest}");
}

// Multi-threaded: the proxy must answer while a test thread waits on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_expired_before_they_were_read_fail_the_run_unless_told_to_go_on() {
    let aws = Aws::start(1).await;
    let batch = positions(10);
    aws.put_each(&batch).await;
    let proxy = fault_proxy::FaultProxy::start(&aws.moto.endpoint).await;
    let out = aws
        .compactor(&["run", "--max-records", "4"])
        .env("AWS_ENDPOINT_URL_KINESIS", &proxy.endpoint)
        .output()
        .expect("run 1");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_line(&out)["checkpoints"]["shardId-000000000000"], "4");

    // The compactor stops for longer than the stream's retention: records
    // 1 to 6 expire, two of them never read (moto numbers records 1, 2, ...).
    proxy.expire_through(6);
    let out = aws
        .compactor(&["run"])
        .env("AWS_ENDPOINT_URL_KINESIS", &proxy.endpoint)
        .output()
        .expect("run 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("records after the checkpoint 4 expired before they were read")
            && stderr.contains("the oldest record left in the shard is 7"),
        "{stderr}"
    );
    assert_eq!(
        table_event_ids(&aws.table()).await,
        sorted(ids(&batch[..4]))
    );

    let out = aws
        .compactor(&["run", "--accept-data-loss"])
        .env("AWS_ENDPOINT_URL_KINESIS", &proxy.endpoint)
        .output()
        .expect("run 3");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_line(&out);
    assert_eq!(report["rows_written"], 4);
    assert_eq!(
        report["shards_with_loss"],
        serde_json::json!(["shardId-000000000000"])
    );
    let mut kept = batch[..4].to_vec();
    kept.extend_from_slice(&batch[6..]);
    assert_eq!(table_event_ids(&aws.table()).await, sorted(ids(&kept)));
}
