//! `make bench-ingest`: the ingestion service on the local sink, on loopback,
//! under many concurrent clients, beside a bare actix-web route that only
//! parses the same JSON, measured in the same run with the same load
//! generator: the courier simulator (`courier-sim`), one simulated courier
//! per connection, sending as fast as its answers come back. Prints positions/s, requests/s, p50/p99 latency and the
//! server's peak RSS, and the Kinesis cost of the aggregated record format.
//!
//! Each (server, scenario) pair gets a fresh server process, so peak RSS is
//! per scenario. Settings (environment):
//! - `BENCH_SECONDS` measured seconds per scenario (default 10), after 2 s of warm-up;
//! - `BENCH_SINGLE_CONNECTIONS` connections sending single positions (default 2000);
//! - `BENCH_BATCH_CONNECTIONS` connections sending batches (default 1000);
//! - `BENCH_BATCH_SIZE` positions per batch (default 100);
//! - `BENCH_LINGER_MS` the service's linger (default: the service default, 50).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use courier_sim::sim::{Counters, SimConfig, run};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The baseline: the same JSON parsing as the service, nothing else.
fn serve_bare(addr: &str) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new()
                .route(
                    "/v1/positions",
                    web::post().to(|body: web::Bytes| async move {
                        match ingest_api::payload::parse_body(&body, 1000) {
                            Ok(envelope) => HttpResponse::Accepted().json(serde_json::json!({
                                "accepted": envelope.positions().len(),
                                "rejected": []
                            })),
                            Err(e) => HttpResponse::BadRequest().body(e.to_string()),
                        }
                    }),
                )
                .route("/readyz", web::get().to(HttpResponse::Ok))
        })
        .bind(addr)?
        .backlog(4096)
        .max_connections(50_000)
        .run()
        .await
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM so the service drains like in production.
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} never became ready");
}

fn start_bare() -> Server {
    let port = free_port();
    let exe = std::env::current_exe().expect("own path");
    let child = Command::new(exe)
        .args(["--serve-bare", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("bare server starts");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

fn start_service(data_dir: &std::path::Path, key_line: &str, linger: Option<u64>) -> Server {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingest-api"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("INGEST_API_KEYS", key_line)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(ms) = linger {
        cmd.args(["--linger-ms", &ms.to_string()]);
    }
    Server {
        child: cmd.spawn().expect("ingest-api starts"),
        base: format!("http://127.0.0.1:{port}"),
    }
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    connections: usize,
    batch: usize,
}

struct Outcome {
    requests_per_sec: f64,
    positions_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Drives `base` with the courier simulator: `connections` couriers sending as
/// fast as their answers come back (no think time), `batch` samples per
/// request, no retries; a warm-up run first, then the measured run.
async fn drive(
    base: &str,
    token: &str,
    scenario: Scenario,
    warmup: Duration,
    measure: Duration,
) -> Outcome {
    let config = |duration| SimConfig {
        url: base.to_owned(),
        token: token.to_owned(),
        couriers: scenario.connections,
        interval: Duration::ZERO,
        duration: Some(duration),
        samples_per_courier: None,
        batch_size: scenario.batch,
        duplicate_rate: 0.0,
        out_of_order_rate: 0.0,
        invalid_rate: 0.0,
        seed: 1,
        max_attempts: 1,
        record_latency: true,
        ..SimConfig::default()
    };
    run(config(warmup), Arc::new(Counters::default()))
        .await
        .expect("warm-up run");
    let s = run(config(measure), Arc::new(Counters::default()))
        .await
        .expect("measured run");
    Outcome {
        requests_per_sec: (s.requests - s.failed_requests) as f64 / s.elapsed_secs,
        positions_per_sec: s.accepted_per_sec,
        p50_ms: s.latency_p50_ms.unwrap_or(f64::NAN),
        p99_ms: s.latency_p99_ms.unwrap_or(f64::NAN),
        errors: s.failed_requests,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-bare") {
        serve_bare(&args[i + 1]).expect("bare server");
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("ingest_load is a benchmark: run it with `make bench-ingest` (cargo bench).");
        return;
    }
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let linger: Option<u64> = std::env::var("BENCH_LINGER_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let scenarios = [
        Scenario {
            name: "single positions",
            connections: env_or("BENCH_SINGLE_CONNECTIONS", 2000),
            batch: 1,
        },
        Scenario {
            name: "batches",
            connections: env_or("BENCH_BATCH_CONNECTIONS", 1000),
            batch: env_or("BENCH_BATCH_SIZE", 100),
        },
    ];
    let (token, line) = ingest_api::auth::create_key("bench", None).expect("key");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let warmup = Duration::from_secs(2);
    let measure = Duration::from_secs(seconds);
    println!(
        "ingest benchmark: {seconds}s per scenario after {}s warm-up, {} CPUs, service linger {} ms",
        warmup.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        linger.unwrap_or(ingest_api::Settings::default().linger_ms)
    );
    println!();
    println!(
        "| scenario | server | conns | positions/s | requests/s | p50 ms | p99 ms | errors | peak RSS MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut cost_dir = None;
    for scenario in scenarios {
        let mut results = Vec::new();
        for target in ["bare route", "ingest-api"] {
            let data_dir = tempfile::tempdir().expect("tmp");
            let server = if target == "bare route" {
                start_bare()
            } else {
                start_service(data_dir.path(), &line, linger)
            };
            let outcome = runtime.block_on(async {
                wait_ready(&server.base).await;
                drive(&server.base, &token, scenario, warmup, measure).await
            });
            let rss = peak_rss_mib(server.child.id());
            drop(server);
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.0} |",
                scenario.name,
                target,
                scenario.connections,
                outcome.positions_per_sec,
                outcome.requests_per_sec,
                outcome.p50_ms,
                outcome.p99_ms,
                outcome.errors,
                rss
            );
            if target == "ingest-api" && scenario.batch > 1 {
                cost_dir = Some(data_dir);
            }
            results.push(outcome);
        }
        let ratio_pos = results[1].positions_per_sec / results[0].positions_per_sec;
        let ratio_req = results[1].requests_per_sec / results[0].requests_per_sec;
        println!(
            "|   | ingest-api / bare | | {:.0} % | {:.0} % | | | | |",
            ratio_pos * 100.0,
            ratio_req * 100.0
        );
    }
    if let Some(dir) = cost_dir {
        print_kinesis_cost(dir.path());
    }
}

/// Kinesis cost per million positions from what the service actually wrote.
fn print_kinesis_cost(data_dir: &std::path::Path) {
    use courier_stream::limits::PUT_PAYLOAD_UNIT;
    use courier_stream::local::LocalStreamReader;
    let reader = LocalStreamReader::open(data_dir, "courier-positions").expect("stream");
    let (mut records, mut units, mut positions, mut bytes, mut datum_bytes) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for shard in reader.map().shards() {
        let mut cursor = reader.cursor(&shard.shard_id, None).expect("cursor");
        loop {
            let batch = cursor.next_batch(4096).expect("read");
            if batch.is_empty() {
                break;
            }
            for r in batch {
                let len = r.data.len() + r.partition_key.len();
                records += 1;
                bytes += len as u64;
                units += len.div_ceil(PUT_PAYLOAD_UNIT) as u64;
                for p in courier_model::avro::decode_record(&r.data)
                    .expect("decode")
                    .into_iter()
                    .flatten()
                {
                    positions += 1;
                    // One position as its own record: its datum plus its
                    // partition key (the courier id).
                    let mut datum = Vec::new();
                    if let Ok(position) = p.validate(&courier_model::position::TimeRules::default())
                    {
                        courier_model::avro::encode_datum(&position, &mut datum);
                    }
                    datum_bytes += (datum.len() + p.courier_id.len()) as u64;
                }
            }
        }
    }
    if positions == 0 {
        return;
    }
    let per_million = 1_000_000.0 / positions as f64;
    println!();
    println!(
        "Kinesis cost per million positions (from the batch scenario's stream: {positions} positions in {records} records):"
    );
    println!("| format | records | PUT payload units | bytes |");
    println!("|---|---:|---:|---:|");
    println!(
        "| aggregated (Avro container per record) | {:.0} | {:.0} | {:.0} MB |",
        records as f64 * per_million,
        units as f64 * per_million,
        bytes as f64 * per_million / 1e6
    );
    println!(
        "| one record per position | 1000000 | 1000000 | {:.0} MB |",
        datum_bytes as f64 * per_million / 1e6
    );
}
