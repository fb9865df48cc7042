//! `make bench-compactor`: fills a local stream with N positions and compacts
//! it into a local Delta table with the release `compactor` binary, run after
//! run until it reports no backlog (as a schedule would). Prints rows/s, the
//! compactor's peak RSS and Parquet bytes per row, for N/5, N, 2N and 4N
//! positions, to show that memory does not grow with the input.
//!
//! Environment: `BENCH_POSITIONS` (default 5,000,000), `BENCH_SHARDS` (4),
//! `BENCH_RECORD_POSITIONS` positions per stream record (1000), `BENCH_COURIERS`
//! (20,000).

use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use courier_model::avro::{Codec, RecordEncoder, encode_datum};
use courier_model::position::{Position, TimeRules, UncheckedPosition};
use courier_stream::local::{LocalOptions, LocalStream};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fill(
    dir: &std::path::Path,
    positions: u64,
    shards: usize,
    per_record: usize,
    couriers: u64,
) -> f64 {
    let started = Instant::now();
    let stream = LocalStream::open(
        dir,
        "bench",
        LocalOptions {
            shards,
            segment_bytes: 64 * 1024 * 1024,
            max_bytes: None,
        },
    )
    .expect("open stream");
    let now = Utc::now();
    let rules = TimeRules::default();
    let mut encoders: Vec<RecordEncoder> = (0..shards)
        .map(|_| RecordEncoder::new(Codec::Zstandard))
        .collect();
    let mut buffers: Vec<(Vec<u8>, usize, String)> = (0..shards)
        .map(|_| (Vec::new(), 0, String::new()))
        .collect();
    for i in 0..positions {
        let courier = format!("courier-{:06}", i % couriers);
        let shard = stream.map().index_for_key(&courier);
        let input = UncheckedPosition {
            courier_id: Some(&courier),
            lat: Some(-23.6 + (i % 1000) as f64 * 1e-4),
            lon: Some(-46.7 + (i % 997) as f64 * 1e-4),
            recorded_at: Some(now - TimeDelta::seconds((i % 3600) as i64)),
            speed_mps: Some(7.5),
            heading_deg: Some((i % 360) as f64),
            accuracy_m: Some(5.0),
            ..Default::default()
        };
        let position = Position::try_new(&input, now, &rules).expect("valid");
        let (buf, count, key) = &mut buffers[shard];
        if *count == 0 {
            *key = courier.clone();
        }
        encode_datum(&position, buf);
        *count += 1;
        if *count == per_record {
            let record = encoders[shard].encode(buf, *count);
            stream
                .append(shard, &[(key.as_str(), &record)])
                .expect("append");
            buf.clear();
            *count = 0;
        }
    }
    for (shard, (buf, count, key)) in buffers.iter().enumerate() {
        if *count > 0 {
            let record = encoders[shard].encode(buf, *count);
            stream
                .append(shard, &[(key.as_str(), &record)])
                .expect("append");
        }
    }
    started.elapsed().as_secs_f64()
}

fn peak_child_rss_mib() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn dir_bytes(dir: &std::path::Path, suffix: &str) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                total += dir_bytes(&path, suffix);
            } else if path.to_string_lossy().ends_with(suffix) {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "compactor_load is a benchmark: run it with `make bench-compactor` (cargo bench)."
        );
        return;
    }
    let n: u64 = env_or("BENCH_POSITIONS", 5_000_000);
    let shards: usize = env_or("BENCH_SHARDS", 4);
    let per_record: usize = env_or("BENCH_RECORD_POSITIONS", 1000);
    let couriers: u64 = env_or("BENCH_COURIERS", 20_000);
    println!(
        "compactor benchmark: {shards} shards, {per_record} positions per record, {couriers} couriers, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| positions | stream fill s | runs | compact s | rows/s | peak RSS MiB | Parquet bytes/row | files |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Smaller run first: getrusage(RUSAGE_CHILDREN) reports the largest child
    // so far, so the second line is the max of both runs.
    let log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    for size in [n / 5, n, 2 * n, 4 * n] {
        let dir = tempfile::tempdir().expect("tmp");
        let fill_s = fill(dir.path(), size, shards, per_record, couriers);
        let table = dir.path().join("table");
        let started = Instant::now();
        let (mut rows, mut files, mut runs) = (0u64, 0u64, 0u32);
        loop {
            let out = Command::new(env!("CARGO_BIN_EXE_compactor"))
                .args(["run", "--stream-name", "bench"])
                .arg("--data-dir")
                .arg(dir.path())
                .arg("--table-uri")
                .arg(&table)
                .env("RUST_LOG", &log)
                .stderr(Stdio::inherit())
                .output()
                .expect("compactor runs");
            assert!(out.status.success(), "compactor failed: {:?}", out.status);
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
            rows += report["rows_written"].as_u64().unwrap_or(0);
            files += report["files_added"].as_u64().unwrap_or(0);
            runs += 1;
            if report["backlog"] != true {
                break;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(rows, size, "every position written once");
        let parquet = dir_bytes(&table, ".parquet");
        println!(
            "| {size} | {fill_s:.1} | {runs} | {secs:.1} | {:.0} | {:.0} | {:.1} | {files} |",
            rows as f64 / secs,
            peak_child_rss_mib(),
            parquet as f64 / rows as f64,
        );
    }
}
