//! `make bench-compactor`: fills a local stream with N positions and compacts
//! it into a local Delta table with the release `compactor` binary, run after
//! run until it reports no backlog (as a schedule would). Prints rows/s (and
//! per core), the compactor's peak RSS (each run's own, by `wait4`) and
//! Parquet bytes per row, for N/5, N, 2N and 4N positions, to show that
//! memory does not grow with the input, then issue 13's targets beside the
//! measured figures.
//!
//! Environment: `BENCH_POSITIONS` (default 5,000,000), `BENCH_SHARDS` (4),
//! `BENCH_RECORD_POSITIONS` positions per stream record (1000), `BENCH_COURIERS`
//! (20,000), `BENCH_LOG` (the runs' `RUST_LOG`, `warn`), `BENCH_WRAPPER` (a
//! profiler command each run goes under, e.g. `heaptrack`).

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

/// Runs one child to its end and returns its stdout and its own peak RSS
/// in MiB (`wait4`: per child, not the largest child so far).
#[allow(clippy::zombie_processes)] // reaped by wait4, which std does not see
fn run_measured(mut cmd: Command) -> (std::process::ExitStatus, Vec<u8>, f64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("compactor starts");
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout).expect("read stdout");
    }
    let mut status = 0;
    // SAFETY: wait4 on our own child, writing into the structs we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4 failed");
    (
        std::process::ExitStatus::from_raw(status),
        stdout,
        usage.ru_maxrss as f64 / 1024.0,
    )
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
        "| positions | stream fill s | runs | compact s | rows/s | rows/s per core | peak RSS MiB | Parquet bytes/row | files |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut results: Vec<(u64, u32, f64, f64)> = Vec::new();
    let log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    // A profiler to run each compactor run under, e.g. `heaptrack` or
    // `perf record -g` (the peak RSS is then the profiler's and the
    // compactor's together).
    let wrapper: Vec<String> = std::env::var("BENCH_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for size in [n / 5, n, 2 * n, 4 * n] {
        let dir = tempfile::tempdir().expect("tmp");
        let fill_s = fill(dir.path(), size, shards, per_record, couriers);
        let table = dir.path().join("table");
        let started = Instant::now();
        let (mut rows, mut files, mut runs, mut rss) = (0u64, 0u64, 0u32, 0f64);
        loop {
            let mut cmd = match wrapper.split_first() {
                Some((program, args)) => {
                    let mut cmd = Command::new(program);
                    cmd.args(args).arg(env!("CARGO_BIN_EXE_compactor"));
                    cmd
                }
                None => Command::new(env!("CARGO_BIN_EXE_compactor")),
            };
            cmd.args(["run", "--stream-name", "bench"])
                .arg("--data-dir")
                .arg(dir.path())
                .arg("--table-uri")
                .arg(&table)
                .env("RUST_LOG", &log)
                .stderr(Stdio::inherit());
            let (status, stdout, peak) = run_measured(cmd);
            assert!(status.success(), "compactor failed: {status:?}");
            rss = rss.max(peak);
            // The report is the last line (a profiler may print before it).
            let report: serde_json::Value = String::from_utf8_lossy(&stdout)
                .lines()
                .rev()
                .find_map(|line| serde_json::from_str(line).ok())
                .expect("a JSON report on stdout");
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
        let rate = rows as f64 / secs;
        println!(
            "| {size} | {fill_s:.1} | {runs} | {secs:.1} | {rate:.0} | {:.0} | {rss:.0} | {:.1} | {files} |",
            rate / cores,
            parquet as f64 / rows as f64,
        );
        results.push((size, runs, rate, rss));
    }
    // Issue 13's targets, over the sizes that took more than one run (a
    // multi-run backlog), at the default settings.
    let backlog: Vec<_> = results.iter().filter(|r| r.1 > 1).collect();
    let backlog = if backlog.is_empty() {
        results.iter().collect()
    } else {
        backlog
    };
    let slowest = backlog.iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
    let peak = results.iter().map(|r| r.3).fold(0.0, f64::max);
    // Flat: once the input needs more than one run, a larger input takes
    // more runs, not more memory (the largest size's peak against the
    // smallest multi-run size's).
    let smallest = backlog.iter().map(|r| r.3).next().unwrap_or(peak);
    let largest = backlog.iter().map(|r| r.3).next_back().unwrap_or(peak);
    println!();
    println!("Issue 13's targets (default settings, {cores} cores):");
    println!();
    println!("| target | wanted | measured | ratio measured/wanted | |");
    println!("|---|---|---:|---:|---|");
    let line = |what: &str, wanted: &str, measured: String, ratio: f64, ok: bool| {
        println!(
            "| {what} | {wanted} | {measured} | {ratio:.2} | {} |",
            if ok { "met" } else { "MISSED" }
        );
    };
    line(
        "rows/s over a multi-run backlog (slowest size)",
        ">= 1,500,000",
        format!("{slowest:.0} ({:.0} per core)", slowest / cores),
        slowest / 1.5e6,
        slowest >= 1.5e6,
    );
    line(
        "peak RSS (largest of all runs)",
        "<= 256 MiB",
        format!("{peak:.0} MiB"),
        peak / 256.0,
        peak <= 256.0,
    );
    line(
        "peak RSS flat in the input size (largest size's / smallest multi-run size's)",
        "<= 1.1",
        format!("{:.2}", largest / smallest),
        largest / smallest / 1.1,
        largest / smallest <= 1.1,
    );
}
