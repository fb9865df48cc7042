use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use courier_sim::fleet::BoundingBox;
use courier_sim::sim::{Counters, SimConfig, run};

/// Simulates a fleet of delivery couriers sending GPS positions to ingest-api.
#[derive(Debug, Parser)]
#[command(name = "courier-sim", version, about)]
struct Args {
    /// Base URL of ingest-api.
    #[arg(long, env = "SIM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API token (create one with `ingest-api keys create NAME`).
    #[arg(long, env = "SIM_TOKEN", hide_env_values = true)]
    token: String,
    /// Couriers in the fleet.
    #[arg(long, env = "SIM_COURIERS", default_value_t = 100)]
    couriers: usize,
    /// Milliseconds between two samples of one courier (0: as fast as possible).
    #[arg(long, env = "SIM_INTERVAL_MS", default_value_t = 2000)]
    interval_ms: u64,
    /// Seconds to run (ignored with --samples-per-courier).
    #[arg(long, env = "SIM_DURATION_SECS", default_value_t = 30)]
    duration_secs: u64,
    /// Stop after each courier produced this many samples.
    #[arg(long, env = "SIM_SAMPLES_PER_COURIER")]
    samples_per_courier: Option<u64>,
    /// Samples per request (1 sends single positions).
    #[arg(long, env = "SIM_BATCH_SIZE", default_value_t = 5)]
    batch_size: usize,
    /// Share of samples re-sent later with the same event_id.
    #[arg(long, env = "SIM_DUPLICATE_RATE", default_value_t = 0.01)]
    duplicate_rate: f64,
    /// Share of samples held back and sent after newer ones.
    #[arg(long, env = "SIM_OUT_OF_ORDER_RATE", default_value_t = 0.02)]
    out_of_order_rate: f64,
    /// Share of requests carrying one invalid sample.
    #[arg(long, env = "SIM_INVALID_RATE", default_value_t = 0.01)]
    invalid_rate: f64,
    /// Seed of every random choice.
    #[arg(long, env = "SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Where couriers ride: min_lat,min_lon,max_lat,max_lon [default: central São Paulo].
    #[arg(long, env = "SIM_BBOX", value_parser = BoundingBox::parse)]
    bbox: Option<BoundingBox>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn rate(name: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "--{name} must be between 0 and 1 (got {v})"
    );
    Ok(v)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(Args::parse()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("courier-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(args.couriers >= 1, "--couriers must be at least 1");
    anyhow::ensure!(
        (1..=1000).contains(&args.batch_size),
        "--batch-size must be 1 to 1000"
    );
    let config = SimConfig {
        url: args.url.trim_end_matches('/').to_owned(),
        token: args.token,
        couriers: args.couriers,
        interval: Duration::from_millis(args.interval_ms),
        duration: args
            .samples_per_courier
            .is_none()
            .then(|| Duration::from_secs(args.duration_secs)),
        samples_per_courier: args.samples_per_courier,
        batch_size: args.batch_size,
        duplicate_rate: rate("duplicate-rate", args.duplicate_rate)?,
        out_of_order_rate: rate("out-of-order-rate", args.out_of_order_rate)?,
        invalid_rate: rate("invalid-rate", args.invalid_rate)?,
        seed: args.seed,
        bbox: args.bbox.unwrap_or(BoundingBox::SAO_PAULO),
        ..SimConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let counters = Arc::new(Counters::default());
    let summary = runtime.block_on(async {
        let progress = tokio::spawn(show_progress(Arc::clone(&counters), config.duration));
        let result = run(config, counters).await;
        progress.abort();
        result
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("couriers          {}", summary.couriers);
        println!("samples sent      {}", summary.samples_sent);
        println!("accepted          {}", summary.accepted);
        let rejected: u64 = summary.rejected_by_field.values().sum();
        println!("rejected          {rejected}");
        for (field, n) in &summary.rejected_by_field {
            println!("  {field:<16}{n}");
        }
        println!(
            "sent on purpose   {} duplicates, {} out of order, {} invalid",
            summary.duplicates_sent, summary.out_of_order_sent, summary.invalid_sent
        );
        println!(
            "requests          {} ({} retried; {} x 429, {} x 503; {} given up)",
            summary.requests,
            summary.retries,
            summary.throttled,
            summary.unavailable,
            summary.failed_requests
        );
        println!(
            "achieved rate     {:.0} positions/s over {:.1} s",
            summary.accepted_per_sec, summary.elapsed_secs
        );
    }
    Ok(summary.failed_requests == 0)
}

async fn show_progress(counters: Arc<Counters>, duration: Option<Duration>) {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = match duration {
            Some(d) => indicatif::ProgressBar::new(d.as_secs()),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let started = std::time::Instant::now();
    let mut last_log = started;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let msg = format!(
            "sent {} accepted {} rejected {} retried {} ({:.0}/s)",
            counters.samples_sent.load(Ordering::Relaxed),
            accepted,
            counters.rejected.load(Ordering::Relaxed),
            counters.retries.load(Ordering::Relaxed),
            accepted as f64 / started.elapsed().as_secs_f64().max(1e-9)
        );
        match &bar {
            Some(bar) => {
                bar.set_position(started.elapsed().as_secs());
                bar.set_message(msg);
            }
            None if last_log.elapsed() >= Duration::from_secs(5) => {
                tracing::info!("{msg}");
                last_log = std::time::Instant::now();
            }
            None => {}
        }
    }
}
