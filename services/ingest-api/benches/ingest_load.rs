//! `make bench-ingest`: the ingestion service on the local sink, on loopback,
//! beside a bare actix-web route that only parses the same JSON, measured in
//! the same run with the same lean load generator (keep-alive HTTP/1.1
//! connections on raw sockets, request bodies formatted from a counter; the
//! generator shares the 2 cores with the servers, equally for both).
//!
//! Scenarios (issue 13's targets are printed beside each measured figure):
//! 1. one connection posting single positions: ingest-api p50 <= 5 ms, p99 <= 15 ms;
//! 2. single positions at `BENCH_SINGLE_CONNECTIONS` (1024) connections:
//!    ingest-api requests/s >= 0.5 of the bare route's;
//! 3. batches of `BENCH_BATCH_SIZE` (100) at `BENCH_BATCH_CONNECTIONS` (256):
//!    ingest-api positions/s >= 0.5 of the bare route's;
//! 4. single positions at half of scenario 2's ingest-api throughput (paced,
//!    latency counted from each request's scheduled time): p99 <= 25 ms.
//!
//! Each (server, scenario) pair gets a fresh server process, so peak RSS is
//! per scenario, and so is the server's CPU time per position (user and
//! system, `/proc/<pid>/stat`, over the measured window): the ratios above
//! move with how the kernel shares the 2 cores with the load generator, the
//! CPU per position much less. Settings (environment):
//! - `BENCH_SECONDS` measured seconds per scenario (default 10), after 2 s of warm-up;
//! - `BENCH_SINGLE_CONNECTIONS`, `BENCH_BATCH_CONNECTIONS`, `BENCH_BATCH_SIZE`;
//! - `BENCH_LINGER_MS` the service's optional linger (default: the service default, 0);
//! - `BENCH_KINESIS=1` adds the Kinesis sink against moto_server
//!   (`BENCH_KINESIS_CONNECTIONS`, default 64).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// CPU seconds (user and system) that process `pid` has used so far (NaN
/// when unknown). With the server's CPU per position beside its throughput,
/// a comparison does not hang on how the shared cores were scheduled.
fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf(3) only reads a configuration value.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces): utime
            // and stime are the 12th and 13th.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks_per_sec)
        })
        .unwrap_or(f64::NAN)
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
    /// Requests per second over all connections (`None`: closed loop, each
    /// connection sends as soon as its previous answer came back).
    rate: Option<f64>,
}

#[derive(Debug, Default)]
struct Outcome {
    requests_per_sec: f64,
    positions_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// Positions accepted in the measured window.
    positions: u64,
}

/// What one connection saw.
#[derive(Default)]
struct ConnStats {
    /// Latency of each accepted request, microseconds.
    latencies_us: Vec<u32>,
    accepted_requests: u64,
    errors: u64,
}

/// One request body: `batch` positions of courier `courier`, event ids from
/// `counter`.
fn body(courier: usize, batch: usize, counter: &mut u64, recorded_at: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(180 * batch + 20);
    if batch > 1 {
        out.push_str("{\"positions\":[");
    }
    for i in 0..batch {
        if i > 0 {
            out.push(',');
        }
        *counter += 1;
        let lat = -23.5 + (courier % 1000) as f64 * 1e-4 + i as f64 * 1e-6;
        let _ = write!(
            out,
            "{{\"event_id\":\"00000000-0000-4000-8000-{:012x}\",\"courier_id\":\"courier-{courier}\",\"lat\":{lat:.6},\"lon\":-46.6559,\"recorded_at\":\"{recorded_at}\",\"speed_mps\":8.2}}",
            (*counter) & 0xffff_ffff_ffff
        );
    }
    if batch > 1 {
        out.push_str("]}");
    }
    out
}

/// Reads one HTTP/1.1 response (status line, headers, `Content-Length`
/// body) from `stream`, keeping any excess in `buf`; returns the status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap_or_default();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let total = end + 4 + length;
            while buf.len() < total {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One keep-alive connection sending requests until `end` (closed loop, or
/// every `interval` when paced; a paced request's latency counts from its
/// scheduled time, so a late answer also delays what the next one measures).
#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: String,
    token: String,
    courier: usize,
    batch: usize,
    connected: Arc<tokio::sync::Barrier>,
    mut window: tokio::sync::watch::Receiver<Option<(Instant, Instant)>>,
    interval: Option<Duration>,
    recorded_at: String,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut counter = (courier as u64) << 32 | rand_offset();
    // Connect first, and start when every connection is open: the TCP
    // handshakes of a thousand connections are not part of any request's
    // latency (they would delay the paced scenario's first requests).
    let mut attempts = 0;
    let stream = loop {
        match TcpStream::connect(&addr).await {
            Ok(s) => break Some(s),
            Err(_) if attempts < 500 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => break None,
        }
    };
    connected.wait().await;
    let Ok(window) = window.wait_for(Option::is_some).await.map(|w| *w) else {
        return stats;
    };
    let (Some(mut stream), Some((start, end))) = (stream, window) else {
        stats.errors += 1;
        return stats;
    };
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    let mut next = start;
    if let Some(every) = interval {
        // Spread the connections' schedules over one interval.
        next += every.mul_f64((courier % 997) as f64 / 997.0);
    }
    while Instant::now() < end {
        if interval.is_some() {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
        let body = body(courier, batch, &mut counter, &recorded_at);
        let request = format!(
            "POST /v1/positions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = if interval.is_some() {
            next
        } else {
            Instant::now()
        };
        if stream.write_all(request.as_bytes()).await.is_err() {
            stats.errors += 1;
            break;
        }
        match read_response(&mut stream, &mut buf).await {
            Ok(202) => {
                stats.accepted_requests += 1;
                let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                stats.latencies_us.push(us);
            }
            Ok(_) => stats.errors += 1,
            Err(_) => {
                stats.errors += 1;
                break;
            }
        }
        if let Some(every) = interval {
            next += every;
        }
    }
    stats
}

fn rand_offset() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 & 0xffff)
        .unwrap_or(0)
}

/// Runs `scenario` against `base` for `duration`.
async fn load(base: &str, token: &str, scenario: Scenario, duration: Duration) -> Outcome {
    let addr = base.trim_start_matches("http://").to_owned();
    let recorded_at = (chrono::Utc::now() - chrono::TimeDelta::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let interval = scenario
        .rate
        .map(|rate| Duration::from_secs_f64(scenario.connections as f64 / rate.max(1.0)));
    let connected = Arc::new(tokio::sync::Barrier::new(scenario.connections + 1));
    let (window, window_rx) = tokio::sync::watch::channel(None);
    let tasks: Vec<_> = (0..scenario.connections)
        .map(|i| {
            tokio::spawn(connection(
                addr.clone(),
                token.to_owned(),
                i,
                scenario.batch,
                connected.clone(),
                window_rx.clone(),
                interval,
                recorded_at.clone(),
            ))
        })
        .collect();
    connected.wait().await;
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + duration;
    let _ = window.send(Some((start, end)));
    let mut latencies = Vec::new();
    let (mut accepted, mut errors) = (0u64, 0u64);
    for task in tasks {
        if let Ok(stats) = task.await {
            latencies.extend(stats.latencies_us);
            accepted += stats.accepted_requests;
            errors += stats.errors;
        }
    }
    let elapsed = (Instant::now() - start).as_secs_f64();
    latencies.sort_unstable();
    let pct = |q: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i] as f64 / 1000.0
        }
    };
    Outcome {
        requests_per_sec: accepted as f64 / elapsed,
        positions_per_sec: (accepted * scenario.batch as u64) as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
        positions: accepted * scenario.batch as u64,
    }
}

/// A counter or gauge of the service's `/metrics` (0 when missing).
async fn metric(base: &str, name: &str) -> f64 {
    let Ok(res) = reqwest::get(format!("{base}/metrics")).await else {
        return f64::NAN;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Measured {
    outcome: Outcome,
    /// The server's CPU microseconds per accepted position, measured window.
    cpu_us_per_position: f64,
    rss_mib: f64,
    throttled: f64,
    records: f64,
}

#[allow(clippy::too_many_arguments)]
fn measure(
    runtime: &tokio::runtime::Runtime,
    target: &str,
    scenario: Scenario,
    line: &str,
    token: &str,
    linger: Option<u64>,
    warmup: Duration,
    duration: Duration,
    data_dir: &std::path::Path,
) -> Measured {
    let server = if target == "bare route" {
        start_bare()
    } else {
        start_service(data_dir, line, linger)
    };
    let pid = server.child.id();
    let (outcome, cpu, throttled, records) = runtime.block_on(async {
        wait_ready(&server.base).await;
        load(&server.base, token, scenario, warmup).await;
        let before = cpu_seconds(pid);
        let outcome = load(&server.base, token, scenario, duration).await;
        let cpu = cpu_seconds(pid) - before;
        let throttled = metric(&server.base, "ingest_sink_records_throttled_total").await;
        let records = metric(&server.base, "ingest_sink_records_written_total").await;
        (outcome, cpu, throttled, records)
    });
    let rss_mib = peak_rss_mib(server.child.id());
    drop(server);
    let m = Measured {
        cpu_us_per_position: cpu * 1e6 / outcome.positions.max(1) as f64,
        outcome,
        rss_mib,
        throttled: if target == "bare route" {
            f64::NAN
        } else {
            throttled
        },
        records: if target == "bare route" {
            f64::NAN
        } else {
            records
        },
    };
    println!(
        "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {} |",
        scenario.name,
        target,
        scenario.connections,
        m.outcome.positions_per_sec,
        m.outcome.requests_per_sec,
        m.outcome.p50_ms,
        m.outcome.p99_ms,
        m.outcome.errors,
        m.rss_mib,
        m.cpu_us_per_position,
        if m.throttled.is_nan() {
            "-".to_owned()
        } else {
            format!("{:.0}", m.throttled)
        },
    );
    m
}

/// One line of the targets table.
fn target_line(what: &str, target: &str, measured: f64, unit: &str, ok: bool, ratio: f64) {
    println!(
        "| {what} | {target} | {measured:.2} {unit} | {ratio:.2} | {} |",
        if ok { "met" } else { "MISSED" }
    );
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
    let single_conns = env_or("BENCH_SINGLE_CONNECTIONS", 1024);
    let batch_conns = env_or("BENCH_BATCH_CONNECTIONS", 256);
    let batch_size = env_or("BENCH_BATCH_SIZE", 100);
    let (token, line) = ingest_api::auth::create_key("bench", None).expect("key");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let warmup = Duration::from_secs(2);
    let duration = Duration::from_secs(seconds);
    println!(
        "ingest benchmark: {seconds}s per scenario after {}s warm-up, {} CPUs, local sink, service linger {} ms (0: group commit only)",
        warmup.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        linger.unwrap_or(ingest_api::Settings::default().linger_ms)
    );
    println!();
    println!(
        "| scenario | server | conns | positions/s | requests/s | p50 ms | p99 ms | errors | peak RSS MiB | server CPU µs/position | throttled entries |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let one = Scenario {
        name: "single positions, one connection",
        connections: 1,
        batch: 1,
        rate: None,
    };
    let many = Scenario {
        name: "single positions",
        connections: single_conns,
        batch: 1,
        rate: None,
    };
    let batches = Scenario {
        name: "batches",
        connections: batch_conns,
        batch: batch_size,
        rate: None,
    };
    let run = |target: &str, scenario: Scenario, dir: &std::path::Path| {
        measure(
            &runtime, target, scenario, &line, &token, linger, warmup, duration, dir,
        )
    };
    let tmp = || tempfile::tempdir().expect("tmp");
    let one_bare = run("bare route", one, tmp().path());
    let one_ingest = run("ingest-api", one, tmp().path());
    let many_bare = run("bare route", many, tmp().path());
    let many_ingest = run("ingest-api", many, tmp().path());
    let batch_dir = tmp();
    let batch_bare = run("bare route", batches, tmp().path());
    let batch_ingest = run("ingest-api", batches, batch_dir.path());
    let half = Scenario {
        name: "single positions, half of max",
        connections: single_conns,
        batch: 1,
        rate: Some(many_ingest.outcome.requests_per_sec / 2.0),
    };
    let half_ingest = run("ingest-api", half, tmp().path());
    let _ = (&one_bare, &batch_ingest.records);

    println!();
    println!("Issue 13's targets (local sink):");
    println!();
    println!("| target | wanted | measured | ratio measured/wanted | |");
    println!("|---|---|---:|---:|---|");
    let p50 = one_ingest.outcome.p50_ms;
    target_line(
        "one connection, single positions: p50",
        "<= 5 ms",
        p50,
        "ms",
        p50 <= 5.0,
        p50 / 5.0,
    );
    let p99 = one_ingest.outcome.p99_ms;
    target_line(
        "one connection, single positions: p99",
        "<= 15 ms",
        p99,
        "ms",
        p99 <= 15.0,
        p99 / 15.0,
    );
    let r = many_ingest.outcome.requests_per_sec / many_bare.outcome.requests_per_sec;
    target_line(
        &format!("{single_conns} connections, single positions: requests/s vs bare route"),
        ">= 0.5",
        r,
        "",
        r >= 0.5,
        r / 0.5,
    );
    let r = batch_ingest.outcome.positions_per_sec / batch_bare.outcome.positions_per_sec;
    target_line(
        &format!("{batch_conns} connections, batches of {batch_size}: positions/s vs bare route"),
        ">= 0.5",
        r,
        "",
        r >= 0.5,
        r / 0.5,
    );
    let p99 = half_ingest.outcome.p99_ms;
    target_line(
        &format!(
            "p99 at half the max throughput ({:.0} requests/s)",
            half.rate.unwrap_or_default()
        ),
        "<= 25 ms",
        p99,
        "ms",
        p99 <= 25.0,
        p99 / 25.0,
    );
    println!();
    println!(
        "Server CPU per position in the measured window (not a target; unlike the ratios above, it does not depend on how the 2 cores were shared with the load generator):"
    );
    println!();
    println!("| scenario | bare route µs | ingest-api µs | ingest-api / bare route |");
    println!("|---|---:|---:|---:|");
    for (name, bare, ingest) in [
        (
            format!("{single_conns} connections, single positions"),
            &many_bare,
            &many_ingest,
        ),
        (
            format!("{batch_conns} connections, batches of {batch_size}"),
            &batch_bare,
            &batch_ingest,
        ),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            bare.cpu_us_per_position,
            ingest.cpu_us_per_position,
            ingest.cpu_us_per_position / bare.cpu_us_per_position
        );
    }
    print_kinesis_cost(batch_dir.path());
    if std::env::var("BENCH_KINESIS").is_ok_and(|v| v == "1") {
        kinesis_scenario(&runtime, &line, &token, warmup, duration);
    }
}

/// Optional (`BENCH_KINESIS=1`): the service on the Kinesis sink against a
/// local Kinesis API server (moto_server, as in the tests; `MOTO_SERVER` may
/// name it), `BENCH_KINESIS_CONNECTIONS` (64) connections posting single
/// positions. Latency at low load is one `PutRecords`; the per-shard pacing
/// is on (its defaults); throttled entries come from the service's metrics
/// (moto never throttles: a real stream is needed to see throttling).
fn kinesis_scenario(
    runtime: &tokio::runtime::Runtime,
    line: &str,
    token: &str,
    warmup: Duration,
    duration: Duration,
) {
    use test_support::moto::{MotoServer, create_stream, kinesis_client};
    let connections = env_or("BENCH_KINESIS_CONNECTIONS", 64);
    runtime.block_on(async {
        let moto = MotoServer::start().await;
        create_stream(&kinesis_client(&moto.endpoint), "bench", 4).await;
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ingest-api"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--sink", "kinesis", "--stream-name", "bench"])
            .env("INGEST_API_KEYS", line)
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ingest-api starts");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let scenario = Scenario {
            name: "single positions, Kinesis (moto_server)",
            connections,
            batch: 1,
            rate: None,
        };
        wait_ready(&server.base).await;
        load(&server.base, token, scenario, warmup).await;
        let before_records = metric(&server.base, "ingest_sink_records_written_total").await;
        let before_bytes = metric(&server.base, "ingest_sink_bytes_written_total").await;
        let o = load(&server.base, token, scenario, duration).await;
        let throttled = metric(&server.base, "ingest_sink_records_throttled_total").await;
        let records = metric(&server.base, "ingest_sink_records_written_total").await - before_records;
        let bytes = metric(&server.base, "ingest_sink_bytes_written_total").await - before_bytes;
        let paced = metric(&server.base, "ingest_batcher_pacing_delay_seconds_count").await;
        let positions = o.positions_per_sec * duration.as_secs_f64();
        let avg = bytes / records.max(1.0);
        let units = records * (avg / courier_stream::limits::PUT_PAYLOAD_UNIT as f64).ceil().max(1.0);
        println!();
        println!("Kinesis sink against moto_server, {connections} connections, single positions:");
        println!();
        println!(
            "| positions/s | p50 ms | p99 ms | errors | records | positions/record | throttled entries | paced flushes | PUT payload units per 300 positions (about) |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {:.0} | {:.2} | {:.2} | {} | {records:.0} | {:.1} | {throttled:.0} | {paced:.0} | {:.3} |",
            o.positions_per_sec,
            o.p50_ms,
            o.p99_ms,
            o.errors,
            positions / records.max(1.0),
            units * 300.0 / positions.max(1.0),
        );
        drop(server);
    });
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
    println!();
    println!(
        "PUT payload units per 300 positions: {:.3} (Kinesis target under sustained load of >= 10 K positions/s: <= 1)",
        units as f64 * 300.0 / positions as f64
    );
}
