//! Running the fleet against the ingestion API, the way a well-behaved phone
//! app does: batches samples, keeps each sample's `event_id` on every retry,
//! and backs off on `429` and `503` (honouring `Retry-After`) and on network
//! errors, with exponential backoff and jitter.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::fleet::{BoundingBox, Courier};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Base URL of the ingestion API, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// API token.
    pub token: String,
    /// Couriers in the fleet.
    pub couriers: usize,
    /// Time between two samples of one courier (0: as fast as possible).
    pub interval: Duration,
    /// Stop after this long (wall clock).
    pub duration: Option<Duration>,
    /// Stop after each courier produced this many samples.
    pub samples_per_courier: Option<u64>,
    /// Samples a phone buffers before it sends them in one request (1: single).
    pub batch_size: usize,
    /// Share of samples sent again later with the same `event_id`.
    pub duplicate_rate: f64,
    /// Share of samples held back and sent after newer ones.
    pub out_of_order_rate: f64,
    /// Share of requests that carry one deliberately invalid sample.
    pub invalid_rate: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Where couriers ride.
    pub bbox: BoundingBox,
    /// Attempts per request before giving up.
    pub max_attempts: u32,
    /// Keep the event ids the API accepted (for tests and reconciliation).
    pub record_accepted_ids: bool,
    /// Record the latency of every accepted request (for benchmarks).
    pub record_latency: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            token: String::new(),
            couriers: 100,
            interval: Duration::from_secs(2),
            duration: Some(Duration::from_secs(30)),
            samples_per_courier: None,
            batch_size: 5,
            duplicate_rate: 0.01,
            out_of_order_rate: 0.02,
            invalid_rate: 0.01,
            seed: 1,
            bbox: BoundingBox::SAO_PAULO,
            max_attempts: 8,
            record_accepted_ids: false,
            record_latency: false,
        }
    }
}

/// Counters, shared by the courier tasks and the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples put in requests (retries not counted again).
    pub samples_sent: AtomicU64,
    /// Positions the API acknowledged (`accepted` of 202 answers).
    pub accepted: AtomicU64,
    /// Rejections the API reported.
    pub rejected: AtomicU64,
    /// Requests sent, retries included.
    pub requests: AtomicU64,
    /// Requests sent again after 429, 503 or a network error.
    pub retries: AtomicU64,
    /// `429` answers.
    pub throttled: AtomicU64,
    /// `503` answers.
    pub unavailable: AtomicU64,
    /// Requests given up after `max_attempts`, or refused for good.
    pub failed_requests: AtomicU64,
    /// Duplicates sent on purpose.
    pub duplicates_sent: AtomicU64,
    /// Late samples sent on purpose.
    pub out_of_order_sent: AtomicU64,
    /// Invalid samples sent on purpose.
    pub invalid_sent: AtomicU64,
}

/// The end-of-run summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Couriers simulated.
    pub couriers: usize,
    /// Samples sent (each counted once, however often retried).
    pub samples_sent: u64,
    /// Positions acknowledged with 202.
    pub accepted: u64,
    /// Rejected, by the field the API named.
    pub rejected_by_field: BTreeMap<String, u64>,
    /// Requests, retries included.
    pub requests: u64,
    /// Retried requests.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Requests given up.
    pub failed_requests: u64,
    /// Duplicates sent on purpose (same event_id).
    pub duplicates_sent: u64,
    /// Out-of-order samples sent on purpose.
    pub out_of_order_sent: u64,
    /// Invalid samples sent on purpose.
    pub invalid_sent: u64,
    /// Wall-clock seconds.
    pub elapsed_secs: f64,
    /// Accepted positions per second.
    pub accepted_per_sec: f64,
    /// Median latency of accepted requests, ms (only with `record_latency`).
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of accepted requests, ms (only with `record_latency`).
    pub latency_p99_ms: Option<f64>,
    /// Distinct event ids accepted (only with `record_accepted_ids`).
    #[serde(skip)]
    pub accepted_ids: Option<HashSet<String>>,
}

/// Errors that stop the simulation before it starts.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The API refuses the key.
    #[error(
        "the API at {0} refuses the API key (401): create one with `ingest-api keys create NAME`"
    )]
    Unauthorized(String),
}

struct Shared {
    config: SimConfig,
    client: reqwest::Client,
    counters: Arc<Counters>,
    rejected: Mutex<BTreeMap<String, u64>>,
    accepted_ids: Mutex<HashSet<String>>,
    latencies_us: Mutex<Vec<u32>>,
}

enum Outcome {
    /// The answer and the latency of the attempt that got it.
    Accepted(Value, Duration),
    Rejected(Value),
    GiveUp,
}

impl Shared {
    async fn post(&self, body: &Value, rng_seed: u64) -> Outcome {
        let url = format!("{}/v1/positions", self.config.url);
        let mut backoff = Duration::from_millis(100);
        let mut jitter = rand::rngs::StdRng::seed_from_u64(rng_seed);
        for attempt in 1..=self.config.max_attempts {
            if attempt > 1 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let attempt_started = Instant::now();
            let res = self
                .client
                .post(&url)
                .bearer_auth(&self.config.token)
                .json(body)
                .send()
                .await;
            let wait = match res {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match status {
                        202 => {
                            let body = r.json().await.unwrap_or(Value::Null);
                            return Outcome::Accepted(body, attempt_started.elapsed());
                        }
                        422 => return Outcome::Rejected(r.json().await.unwrap_or(Value::Null)),
                        429 | 503 => {
                            let counter = if status == 429 {
                                &self.counters.throttled
                            } else {
                                &self.counters.unavailable
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            retry_after.unwrap_or(backoff)
                        }
                        _ => {
                            let text = r.text().await.unwrap_or_default();
                            tracing::warn!(status, body = %text, "request refused; not retrying");
                            return Outcome::GiveUp;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "request failed; retrying");
                    backoff
                }
            };
            // Full jitter on top of the server's hint, so a fleet told to
            // wait does not come back in one wave.
            let extra = jitter.random_range(0..=backoff.as_millis() as u64);
            tokio::time::sleep(wait + Duration::from_millis(extra)).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        Outcome::GiveUp
    }

    fn record(&self, outcome: &Outcome, sent: &[Value]) {
        let (body, accepted) = match outcome {
            Outcome::Accepted(b, _) => (b, true),
            Outcome::Rejected(b) => (b, false),
            Outcome::GiveUp => {
                self.counters
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if accepted {
            self.counters
                .accepted
                .fetch_add(body["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
        }
        let mut rejected_idx = HashSet::new();
        if let Some(items) = body["rejected"].as_array() {
            let mut by_field = self.rejected.lock();
            for r in items {
                let index = r["index"].as_u64().unwrap_or(u64::MAX);
                // Count each rejected position once, by its first field.
                if rejected_idx.insert(index) {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    *by_field
                        .entry(r["field"].as_str().unwrap_or("?").to_owned())
                        .or_default() += 1;
                }
            }
        }
        if accepted && self.config.record_accepted_ids {
            let mut ids = self.accepted_ids.lock();
            for (i, s) in sent.iter().enumerate() {
                if !rejected_idx.contains(&(i as u64))
                    && let Some(id) = s["event_id"].as_str()
                {
                    ids.insert(id.to_owned());
                }
            }
        }
    }
}

async fn run_courier(shared: Arc<Shared>, index: usize, deadline: Option<Instant>) {
    let config = &shared.config;
    let mut courier = Courier::new(config.seed, index, config.bbox);
    let dt = config.interval.as_secs_f64().max(1.0);
    // Spread the fleet over the first interval.
    if !config.interval.is_zero() {
        let offset = config.interval.mul_f64(courier.chance());
        tokio::time::sleep(offset).await;
    }
    let mut ticker = (!config.interval.is_zero()).then(|| {
        let mut t = tokio::time::interval(config.interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut buffer: Vec<Value> = Vec::with_capacity(config.batch_size + 2);
    let mut held_back: Option<Value> = None;
    let mut last_sent: Option<Value> = None;
    let mut produced = 0u64;
    let mut request_no = 0u64;
    let mut latencies = Vec::new();
    loop {
        let done_by_count = config.samples_per_courier.is_some_and(|n| produced >= n);
        let done_by_time = deadline.is_some_and(|d| Instant::now() >= d);
        if done_by_count || done_by_time {
            break;
        }
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        courier.advance(dt);
        let sample = courier.sample(Utc::now(), TimeDelta::zero());
        produced += 1;
        let value = serde_json::to_value(&sample).unwrap_or_default();
        if held_back.is_none() && courier.chance() < config.out_of_order_rate {
            held_back = Some(value);
            continue;
        }
        buffer.push(value);
        if buffer.len() < config.batch_size {
            continue;
        }
        if let Some(late) = held_back.take() {
            shared
                .counters
                .out_of_order_sent
                .fetch_add(1, Ordering::Relaxed);
            buffer.push(late);
        }
        if let Some(prev) = last_sent.take()
            && courier.chance() < config.duplicate_rate
        {
            shared
                .counters
                .duplicates_sent
                .fetch_add(1, Ordering::Relaxed);
            buffer.push(prev);
        }
        if courier.chance() < config.invalid_rate {
            let (bad, _field) = courier.invalid_sample(Utc::now());
            shared.counters.invalid_sent.fetch_add(1, Ordering::Relaxed);
            buffer.push(bad);
        }
        send(
            &shared,
            &mut buffer,
            &mut last_sent,
            index,
            &mut request_no,
            &mut latencies,
        )
        .await;
    }
    if let Some(late) = held_back.take() {
        shared
            .counters
            .out_of_order_sent
            .fetch_add(1, Ordering::Relaxed);
        buffer.push(late);
    }
    if !buffer.is_empty() {
        send(
            &shared,
            &mut buffer,
            &mut last_sent,
            index,
            &mut request_no,
            &mut latencies,
        )
        .await;
    }
    if !latencies.is_empty() {
        shared.latencies_us.lock().extend(latencies);
    }
}

async fn send(
    shared: &Shared,
    buffer: &mut Vec<Value>,
    last_sent: &mut Option<Value>,
    index: usize,
    request_no: &mut u64,
    latencies: &mut Vec<u32>,
) {
    let fresh = buffer.len() as u64;
    shared
        .counters
        .samples_sent
        .fetch_add(fresh, Ordering::Relaxed);
    let body = if buffer.len() == 1 {
        buffer[0].clone()
    } else {
        json!({ "positions": buffer })
    };
    *request_no += 1;
    let seed = shared.config.seed ^ ((index as u64) << 32) ^ *request_no;
    let outcome = shared.post(&body, seed).await;
    if let Outcome::Accepted(_, latency) = &outcome
        && shared.config.record_latency
    {
        latencies.push(latency.as_micros().min(u32::MAX as u128) as u32);
    }
    shared.record(&outcome, buffer);
    *last_sent = buffer.first().cloned();
    buffer.clear();
}

/// Runs the fleet until its duration or sample count. `counters` are live
/// while it runs (for a progress display).
pub async fn run(config: SimConfig, counters: Arc<Counters>) -> Result<Summary, SimError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.couriers.max(1))
        .timeout(Duration::from_secs(30))
        .build()?;
    // Fail fast on a wrong key rather than retrying it a thousand times.
    let probe = client
        .get(format!("{}/v1/couriers/probe/position", config.url))
        .bearer_auth(&config.token)
        .send()
        .await;
    if matches!(&probe, Ok(r) if r.status() == 401) {
        return Err(SimError::Unauthorized(config.url.clone()));
    }
    let started = Instant::now();
    let deadline = config.duration.map(|d| started + d);
    let shared = Arc::new(Shared {
        client,
        counters: Arc::clone(&counters),
        rejected: Mutex::new(BTreeMap::new()),
        accepted_ids: Mutex::new(HashSet::new()),
        latencies_us: Mutex::new(Vec::new()),
        config,
    });
    let tasks: Vec<_> = (0..shared.config.couriers)
        .map(|i| tokio::spawn(run_courier(Arc::clone(&shared), i, deadline)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = std::mem::take(&mut *shared.latencies_us.lock());
    latencies.sort_unstable();
    let percentile = |p: f64| {
        (!latencies.is_empty()).then(|| {
            let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
            latencies[i] as f64 / 1000.0
        })
    };
    let c = &shared.counters;
    let accepted = c.accepted.load(Ordering::Relaxed);
    Ok(Summary {
        couriers: shared.config.couriers,
        samples_sent: c.samples_sent.load(Ordering::Relaxed),
        accepted,
        rejected_by_field: shared.rejected.lock().clone(),
        requests: c.requests.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
        throttled: c.throttled.load(Ordering::Relaxed),
        unavailable: c.unavailable.load(Ordering::Relaxed),
        failed_requests: c.failed_requests.load(Ordering::Relaxed),
        duplicates_sent: c.duplicates_sent.load(Ordering::Relaxed),
        out_of_order_sent: c.out_of_order_sent.load(Ordering::Relaxed),
        invalid_sent: c.invalid_sent.load(Ordering::Relaxed),
        elapsed_secs: elapsed,
        latency_p50_ms: percentile(0.50),
        latency_p99_ms: percentile(0.99),
        accepted_per_sec: accepted as f64 / elapsed.max(1e-9),
        accepted_ids: shared
            .config
            .record_accepted_ids
            .then(|| shared.accepted_ids.lock().clone()),
    })
}
