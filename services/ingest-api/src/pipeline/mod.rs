//! The write pipeline: HTTP workers → batchers (one per open shard) →
//! writer actors (own the sink) → the stream; and the latest-position
//! tracker actors.
//!
//! ```text
//! HTTP workers (every core): parse, validate, Avro-encode, route by MD5(courier_id)
//!      │ append (bytes of one request for one shard, Ack, Permit), under the shard's lock
//!      ▼
//! Batcher per shard (its actor on the arbiter threads flushes): concatenate;
//!      │ group commit (one flush of the shard in flight; what accumulates
//!      │ meanwhile goes next), Kinesis pacing
//!      │ WriteRecord (one Avro container file, explicit hash key of the shard)
//!      ▼
//! Writer × N (supervised): PutRecords ≤ 500 records / 5 MiB, retry failed entries
//!      ▼
//! Kinesis or the local stream ──► Ack completes ──► 202
//! ```

pub mod ack;
pub mod batcher;
pub mod budget;
pub mod tracker;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use arc_swap::{ArcSwap, ArcSwapOption};
use courier_model::avro::{Codec, RecordEncoder, encode_datum};
use courier_model::position::Position;
use courier_stream::{ShardMap, StreamError, StreamSink, partition_hash};
use tokio::sync::Notify;

use self::ack::{Ack, WriteError};
use self::batcher::{Append, BatchLimits, Batcher};
use self::budget::Budget;
use self::tracker::{Latest, Observe, Tracker};
use self::writer::{RetryPolicy, SinkHealth, Writer};
use crate::live::LiveFeed;
use crate::metrics::Metrics;

/// Why positions could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The shard map is not known yet (the stream was never reached).
    #[error("the stream has not been reached yet")]
    NotReady,
    /// The in-flight budget is exhausted.
    #[error("too many positions waiting to be written")]
    Overloaded,
    /// The write failed or timed out.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Record limits.
    pub limits: BatchLimits,
    /// Record compression.
    pub codec: Codec,
    /// Writer actors.
    pub writers: usize,
    /// Concurrent calls per writer.
    pub writer_concurrency: usize,
    /// Retry backoff.
    pub retry: RetryPolicy,
    /// Request deadline.
    pub write_timeout: Duration,
    /// In-flight limits.
    pub max_inflight_positions: usize,
    /// In-flight limits.
    pub max_inflight_bytes: usize,
    /// Tracker shards.
    pub tracker_shards: usize,
    /// Tracker TTL.
    pub tracker_ttl: Duration,
    /// Couriers held by all tracker shards together, at most.
    pub tracker_max_couriers: usize,
    /// Actor threads (0: half the CPUs, at least one). The actors do little
    /// per message; the HTTP workers do the per-request work. On 2 CPUs one
    /// actor thread took 20 % less CPU per request than two at 1,024
    /// connections: fewer threads to wake and to preempt the workers
    /// (docs/performance.md).
    pub actor_threads: usize,
    /// Live feed events kept for a slow viewer.
    pub stream_buffer: usize,
}

/// The writer a batcher hands its records to: replaced by the watchdog when
/// the writer dies of a panic.
pub type WriterSlot = Arc<ArcSwap<Addr<Writer>>>;

/// How often the watchdog looks for dead writers.
pub const WATCHDOG_EVERY: Duration = Duration::from_millis(100);

/// Least time between two shard-map reloads asked for by misrouted records.
const STALE_REFRESH_GAP: Duration = Duration::from_secs(1);

/// Bytes reserved per position for its Avro datum: a datum with every
/// optional field and a 20-character order id is about 130 bytes, one with
/// none about 90.
const DATUM_BYTES_HINT: usize = 128;

/// Everything needed to start a writer (again).
struct WriterFactory {
    sink: Arc<dyn StreamSink>,
    concurrency: usize,
    retry: RetryPolicy,
    metrics: Metrics,
    health: Arc<SinkHealth>,
    stale_routes: Arc<Notify>,
    #[cfg(any(test, feature = "test-hooks"))]
    panic_next: Arc<std::sync::atomic::AtomicBool>,
}

impl WriterFactory {
    fn start(&self, arbiter: &ArbiterHandle) -> Addr<Writer> {
        let writer = Writer::new(
            Arc::clone(&self.sink),
            self.concurrency,
            self.retry,
            self.metrics.clone(),
            Arc::clone(&self.health),
        )
        .with_stale_routes(Arc::clone(&self.stale_routes));
        #[cfg(any(test, feature = "test-hooks"))]
        let writer = writer.with_panic_hook(Arc::clone(&self.panic_next));
        Supervisor::start_in_arbiter(arbiter, |_| writer)
    }
}

/// The shard map and the batcher of each shard.
pub struct RoutingTable {
    map: ShardMap,
    batchers: Vec<Arc<Batcher>>,
}

/// The running pipeline.
pub struct Pipeline {
    sink: Arc<dyn StreamSink>,
    table: ArcSwapOption<RoutingTable>,
    arbiters: Vec<Arbiter>,
    writers: Vec<WriterSlot>,
    writer_factory: WriterFactory,
    trackers: Vec<Addr<Tracker>>,
    live: LiveFeed,
    options: PipelineOptions,
    metrics: Metrics,
    health: Arc<SinkHealth>,
    budget: Arc<Budget>,
    next_arbiter: AtomicUsize,
    shutting_down: std::sync::atomic::AtomicBool,
    refresh_lock: tokio::sync::Mutex<()>,
}

/// Datums of one request for one shard.
struct Group {
    datums: Vec<u8>,
    ends: Vec<u32>,
    first_key: String,
}

impl Pipeline {
    /// Starts the actor threads, writers and trackers. Batchers start when
    /// the shard map is first known ([`Pipeline::refresh`]).
    pub fn start(
        sink: Arc<dyn StreamSink>,
        options: PipelineOptions,
        metrics: Metrics,
    ) -> Arc<Self> {
        let threads = match options.actor_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        };
        let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        let health = Arc::new(SinkHealth::default());
        let writer_factory = WriterFactory {
            sink: Arc::clone(&sink),
            concurrency: options.writer_concurrency,
            retry: options.retry,
            metrics: metrics.clone(),
            health: Arc::clone(&health),
            stale_routes: Arc::new(Notify::new()),
            #[cfg(any(test, feature = "test-hooks"))]
            panic_next: Arc::default(),
        };
        let writers = (0..options.writers)
            .map(|i| {
                let addr = writer_factory.start(&arbiters[i % threads].handle());
                Arc::new(ArcSwap::from_pointee(addr))
            })
            .collect();
        let trackers = (0..options.tracker_shards)
            .map(|i| {
                let per_shard = options
                    .tracker_max_couriers
                    .div_ceil(options.tracker_shards.max(1));
                let tracker = Tracker::new(options.tracker_ttl, per_shard, metrics.clone());
                Tracker::start_in_arbiter(&arbiters[(i + 1) % threads].handle(), |_| tracker)
            })
            .collect();
        let budget = Budget::new(
            options.max_inflight_positions,
            options.max_inflight_bytes,
            metrics.clone(),
        );
        let live = LiveFeed::new(options.stream_buffer, metrics.clone());
        Arc::new(Self {
            sink,
            table: ArcSwapOption::empty(),
            arbiters,
            writers,
            writer_factory,
            trackers,
            live,
            options,
            metrics,
            health,
            budget,
            next_arbiter: AtomicUsize::new(0),
            shutting_down: false.into(),
            refresh_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn arbiter(&self) -> ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters[i].handle()
    }

    /// The sink's kind (`local` or `kinesis`).
    pub fn sink_kind(&self) -> &'static str {
        self.sink.kind()
    }

    /// Stream health as the writers and the last probe see it.
    pub fn health(&self) -> &SinkHealth {
        &self.health
    }

    /// The in-flight budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Whether every writer actor is alive (a dead one is replaced within
    /// [`WATCHDOG_EVERY`]).
    pub fn writers_alive(&self) -> bool {
        self.writers.iter().all(|slot| slot.load().connected())
    }

    /// Starts a new writer in the slot of every writer that died (a panic);
    /// returns how many were restarted.
    pub fn restart_dead_writers(&self) -> usize {
        let mut restarted = 0;
        for (i, slot) in self.writers.iter().enumerate() {
            if slot.load().connected() {
                continue;
            }
            let arbiter = self.arbiters[i % self.arbiters.len()].handle();
            slot.store(Arc::new(self.writer_factory.start(&arbiter)));
            self.metrics.writer_panics.inc();
            restarted += 1;
            tracing::error!(
                writer = i,
                "writer actor died (panic); started a new one. The requests it held were answered 503"
            );
        }
        restarted
    }

    /// Test hook: the next record a writer receives makes it panic.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn inject_writer_panic(&self) {
        self.writer_factory
            .panic_next
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether routing is possible (the shard map is known).
    pub fn has_routes(&self) -> bool {
        self.table.load().is_some()
    }

    /// Probes the stream's health and, when `with_map`, reloads the shard
    /// map, starting batchers for new shards and retiring closed ones.
    pub async fn refresh(&self, with_map: bool) -> Result<(), StreamError> {
        let _guard = self.refresh_lock.lock().await;
        let probe = self.sink.check_health().await;
        self.health.record_probe(&probe);
        self.metrics.stream_up.set(i64::from(probe.is_ok()));
        self.metrics
            .local_segments_dropped
            .set(i64::try_from(self.sink.segments_dropped()).unwrap_or(i64::MAX));
        if let Err(e) = &probe {
            tracing::warn!(error = %e, "stream health check failed");
        }
        if !with_map && self.table.load().is_some() {
            return probe;
        }
        let map = self.sink.shard_map().await?;
        let current = self.table.load_full();
        if current.as_ref().is_some_and(|t| t.map == map) {
            return probe;
        }
        let mut existing: HashMap<(String, u128), Arc<Batcher>> = HashMap::new();
        if let Some(table) = &current {
            for (shard, batcher) in table.map.shards().iter().zip(&table.batchers) {
                existing.insert(
                    (shard.shard_id.clone(), shard.start_hash),
                    Arc::clone(batcher),
                );
            }
        }
        let batchers: Vec<Arc<Batcher>> = map
            .shards()
            .iter()
            .enumerate()
            .map(|(i, shard)| {
                existing
                    .remove(&(shard.shard_id.clone(), shard.start_hash))
                    .unwrap_or_else(|| {
                        Batcher::start(
                            &self.arbiter(),
                            shard.start_hash,
                            Arc::from(shard.shard_id.as_str()),
                            Arc::clone(&self.writers[i % self.writers.len()]),
                            RecordEncoder::new(self.options.codec),
                            self.options.limits.clone(),
                            self.metrics.clone(),
                        )
                    })
            })
            .collect();
        tracing::info!(
            shards = map.len(),
            sink = self.sink.kind(),
            "routing table updated"
        );
        self.metrics.shards.set(map.len() as i64);
        self.table
            .store(Some(Arc::new(RoutingTable { map, batchers })));
        for retired in existing.into_values() {
            retired.retire();
        }
        probe
    }

    /// Runs [`Pipeline::refresh`] with the shard map every `every` (one
    /// `ListShards`, far below its limit of 1000 calls per second and
    /// stream), so a reshard is followed within one period whether or not
    /// the stream still reports `UPDATING`; and at once (at most once a
    /// second) when a writer saw a record land on another shard than routed.
    /// Also starts the watchdog that replaces dead writers.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) {
        let this = Arc::clone(self);
        actix_rt::spawn(async move {
            let stale_routes = Arc::clone(&this.writer_factory.stale_routes);
            loop {
                let stale = tokio::select! {
                    _ = actix_rt::time::sleep(every) => false,
                    _ = stale_routes.notified() => true,
                };
                if let Err(e) = this.refresh(true).await {
                    tracing::debug!(error = %e, "refresh failed");
                }
                if stale {
                    this.metrics.shard_map_reloads.inc();
                    actix_rt::time::sleep(STALE_REFRESH_GAP).await;
                }
            }
        });
        let weak = Arc::downgrade(self);
        actix_rt::spawn(async move {
            loop {
                actix_rt::time::sleep(WATCHDOG_EVERY).await;
                let Some(this) = weak.upgrade() else { return };
                if this.is_shutting_down() {
                    return;
                }
                this.restart_dead_writers();
            }
        });
    }

    /// Encodes, routes and writes positions; returns once all are durable.
    pub async fn write(&self, positions: &[Position]) -> Result<(), SubmitError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let Some(table) = self.table.load_full() else {
            return Err(SubmitError::NotReady);
        };
        let mut groups: Vec<Option<Group>> = (0..table.map.len()).map(|_| None).collect();
        let mut total_bytes = 0usize;
        let shards = per_courier_run(positions, |key| {
            table.map.index_for_hash(partition_hash(key))
        });
        // Each group's buffers sized for its positions up front: growing them
        // datum by datum showed in the batch profile (2 % in reallocation).
        let mut per_shard = vec![0usize; if positions.len() > 1 { groups.len() } else { 0 }];
        for &shard in &shards {
            if let Some(n) = per_shard.get_mut(shard) {
                *n += 1;
            }
        }
        for (p, shard) in positions.iter().zip(shards) {
            let count = per_shard.get(shard).copied().unwrap_or(1);
            let group = groups[shard].get_or_insert_with(|| Group {
                datums: Vec::with_capacity(count * DATUM_BYTES_HINT),
                ends: Vec::with_capacity(count),
                first_key: p.courier_id.as_str().to_owned(),
            });
            let before = group.datums.len();
            encode_datum(p, &mut group.datums);
            total_bytes += group.datums.len() - before;
            group.ends.push(group.datums.len() as u32);
        }
        let mut permit = self
            .budget
            .try_acquire(positions.len(), total_bytes)
            .ok_or(SubmitError::Overloaded)?;
        let pieces = groups.iter().filter(|g| g.is_some()).count();
        let (ack, done) = Ack::new(pieces);
        let deadline = Instant::now() + self.options.write_timeout;
        for (shard, group) in groups.into_iter().enumerate() {
            let Some(group) = group else { continue };
            let part = permit.split(group.ends.len(), group.datums.len());
            table.batchers[shard].append(Append {
                datums: group.datums,
                ends: group.ends,
                first_key: group.first_key,
                ack: ack.clone(),
                permit: part,
                deadline,
            });
        }
        drop(ack);
        drop(permit);
        // The writer gives records up at the deadline; the extra second only
        // guards against a stalled actor.
        match tokio::time::timeout(self.options.write_timeout + Duration::from_secs(1), done).await
        {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(_)) => Err(WriteError::Dropped.into()),
            Err(_) => {
                Err(WriteError::Unavailable("no answer from the write pipeline".into()).into())
            }
        }
    }

    /// The live feed of accepted positions.
    pub fn live(&self) -> &LiveFeed {
        &self.live
    }

    /// Hands accepted (durable) positions to the live feed and the tracker
    /// shards.
    pub fn observe(&self, positions: Vec<Position>) {
        self.live.publish(&positions);
        let n = self.trackers.len();
        let keep = kept_of_each_run(&positions);
        if let &[kept] = keep.as_slice() {
            // The usual request (one courier's positions): the request's own
            // vector carries the one position kept, with no regrouping.
            let mut positions = positions;
            positions.swap(0, kept);
            positions.truncate(1);
            let i = tracker_index(positions[0].courier_id.as_str(), n);
            self.trackers[i].do_send(Observe(positions));
            return;
        }
        let mut shards: Vec<Vec<Position>> = (0..n).map(|_| Vec::new()).collect();
        for (i, p) in take_kept(positions, &keep, |key| tracker_index(key, n)) {
            shards[i].push(p);
        }
        for (tracker, batch) in self.trackers.iter().zip(shards) {
            if !batch.is_empty() {
                tracker.do_send(Observe(batch));
            }
        }
    }

    /// Forgets a courier's latest position (erasure); whether it was known.
    pub async fn forget(&self, courier_id: &str) -> bool {
        let i = tracker_index(courier_id, self.trackers.len());
        self.trackers[i]
            .send(tracker::Forget(courier_id.to_owned()))
            .await
            .unwrap_or(false)
    }

    /// The latest accepted position of a courier.
    pub async fn latest(&self, courier_id: &str) -> Option<Position> {
        let i = tracker_index(courier_id, self.trackers.len());
        self.trackers[i]
            .send(Latest(courier_id.to_owned()))
            .await
            .ok()
            .flatten()
    }

    /// Stops taking writes, flushes every batcher, and waits until every
    /// accepted position is written or given up, at most until `deadline`.
    pub async fn drain(&self, deadline: Instant) -> bool {
        self.flush_all();
        while self.budget.positions_in_use() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Switches every batcher to flush at once (shutdown has begun).
    pub fn flush_all(&self) {
        if let Some(table) = self.table.load_full() {
            for b in &table.batchers {
                b.flush_now();
            }
        }
    }

    /// Refuses new writes from now on and ends the live streams (so that the
    /// server's graceful stop does not wait for their viewers).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.live.close();
        self.flush_all();
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Stops the actor threads.
    pub fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// `index_of(courier_id)` for each position, called once per run of one
/// courier's positions: a request's positions are mostly one courier's, and
/// the index is an MD5 (it showed in the batch profile at two per position).
fn per_courier_run(positions: &[Position], index_of: impl Fn(&str) -> usize) -> Vec<usize> {
    let mut last: Option<(&str, usize)> = None;
    positions
        .iter()
        .map(|p| {
            let key = p.courier_id.as_str();
            match last {
                Some((k, i)) if k == key => i,
                _ => {
                    let i = index_of(key);
                    last = Some((key, i));
                    i
                }
            }
        })
        .collect()
}

/// The index of the position a tracker would keep (the first with the
/// greatest `recorded_at`: the tracker's own rule) in each run of one
/// courier's consecutive positions. A request is usually one courier's
/// batch: its tracker shard then handles one position, not the whole batch,
/// with the same outcome.
fn kept_of_each_run(positions: &[Position]) -> Vec<usize> {
    let mut keep: Vec<usize> = Vec::new();
    for (i, p) in positions.iter().enumerate() {
        match keep.last_mut() {
            Some(k) if positions[*k].courier_id == p.courier_id => {
                if p.recorded_at > positions[*k].recorded_at {
                    *k = i;
                }
            }
            _ => keep.push(i),
        }
    }
    keep
}

/// Moves the positions at `keep` (ascending indices) out of `positions`,
/// each with `index_of` its courier.
fn take_kept(
    mut positions: Vec<Position>,
    keep: &[usize],
    index_of: impl Fn(&str) -> usize,
) -> Vec<(usize, Position)> {
    // From the last kept index down, `swap_remove` moves only elements
    // behind every index still to take.
    let mut out: Vec<(usize, Position)> = keep
        .iter()
        .rev()
        .map(|&i| {
            let p = positions.swap_remove(i);
            (index_of(p.courier_id.as_str()), p)
        })
        .collect();
    out.reverse();
    out
}

/// The tracker shard that keeps `courier_id`'s latest position (of `n`).
fn tracker_index(courier_id: &str, n: usize) -> usize {
    (partition_hash(courier_id) % n.max(1) as u128) as usize
}
#[cfg(test)]
mod tests {
    use super::*;
    use courier_model::position::{TimeRules, UncheckedPosition};
    use courier_stream::local::{LocalOptions, LocalStream};

    fn position(courier: &str) -> Position {
        position_at(courier, 1.0)
    }

    fn position_at(courier: &str, lat: f64) -> Position {
        let now = chrono::Utc::now();
        let unchecked = UncheckedPosition {
            courier_id: Some(courier),
            lat: Some(lat),
            lon: Some(2.0),
            recorded_at: Some(now),
            ..UncheckedPosition::default()
        };
        Position::try_new(&unchecked, now, &TimeRules::default()).expect("valid position")
    }

    /// A position of `courier` at `lat` recorded `secs` before `base`.
    fn recorded_before(
        base: chrono::DateTime<chrono::Utc>,
        courier: &str,
        lat: f64,
        secs: i64,
    ) -> Position {
        let mut p = position_at(courier, lat);
        p.recorded_at = base - chrono::TimeDelta::seconds(secs);
        p
    }

    #[test]
    fn each_run_of_one_courier_reaches_the_tracker_as_the_position_it_would_keep() {
        let base = chrono::Utc::now();
        let at = |courier: &str, lat: f64, secs: i64| recorded_before(base, courier, lat, secs);
        let positions = vec![
            at("a", 1.0, 30),
            at("a", 2.0, 10), // the latest of the first run
            at("a", 3.0, 10), // as late, later in the request: not kept
            at("a", 4.0, 20),
            at("b", 5.0, 0),
            at("a", 6.0, 50), // a new run of "a": a position of its own
        ];
        let index = |key: &str| usize::from(key == "b");
        let keep = kept_of_each_run(&positions);
        let kept: Vec<(usize, &str, f64)> = take_kept(positions, &keep, index)
            .iter()
            .map(|(i, p)| (*i, p.courier_id.as_str().to_owned(), p.lat.get()))
            .map(|(i, c, lat)| (i, if c == "a" { "a" } else { "b" }, lat))
            .collect();
        assert_eq!(kept, vec![(0, "a", 2.0), (1, "b", 5.0), (0, "a", 6.0)]);
    }

    #[test]
    fn a_one_courier_request_is_one_run_with_the_position_the_general_rule_keeps() {
        let base = chrono::Utc::now();
        let at = |courier: &str, lat: f64, secs: i64| recorded_before(base, courier, lat, secs);
        let one = vec![
            at("a", 1.0, 30),
            at("a", 2.0, 10),
            at("a", 3.0, 10),
            at("a", 4.0, 20),
        ];
        let keep = kept_of_each_run(&one);
        assert_eq!(keep, vec![1], "one run; the first of the latest");
        let general = take_kept(one.clone(), &keep, |_| 0);
        assert_eq!(general.len(), 1);
        assert_eq!(one[keep[0]].lat.get(), general[0].1.lat.get());
        assert_eq!(kept_of_each_run(&one[..1]), vec![0]);
        assert!(kept_of_each_run(&[]).is_empty());
        let two = vec![at("a", 1.0, 0), at("b", 2.0, 0)];
        assert_eq!(
            kept_of_each_run(&two),
            vec![0, 1],
            "two couriers take the general path"
        );
    }

    /// One writer, one tracker, small budgets: records of at most
    /// `record_positions` positions.
    fn small_options(record_positions: usize) -> PipelineOptions {
        PipelineOptions {
            limits: BatchLimits {
                max_bytes: 64 * 1024,
                max_positions: record_positions,
                linger: Duration::ZERO,
                pacing: None,
            },
            codec: Codec::Null,
            writers: 1,
            writer_concurrency: 1,
            retry: RetryPolicy {
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
            write_timeout: Duration::from_secs(5),
            max_inflight_positions: 1000,
            max_inflight_bytes: 1 << 20,
            tracker_shards: 1,
            tracker_ttl: Duration::from_secs(60),
            tracker_max_couriers: 10,
            actor_threads: 1,
            stream_buffer: 16,
        }
    }

    /// Without the watchdog running, a writer that panicked stays dead: the
    /// pipeline reports it (what `/readyz` shows as `writers_running`), the
    /// write it held fails, and `restart_dead_writers` puts a new writer in
    /// its slot, through which the batchers write again.
    #[actix_rt::test]
    async fn a_dead_writer_is_reported_and_replaced_in_its_slot() {
        let dir = tempfile::tempdir().expect("tmp");
        let sink = LocalStream::open(dir.path(), "s", LocalOptions::default()).expect("open");
        let metrics = Metrics::new();
        let pipeline = Pipeline::start(Arc::new(sink), small_options(100), metrics.clone());
        pipeline.refresh(true).await.expect("local stream");
        assert!(pipeline.writers_alive());
        assert_eq!(pipeline.restart_dead_writers(), 0);

        pipeline.inject_writer_panic();
        let result = pipeline.write(&[position("c1")]).await;
        assert!(
            matches!(result, Err(SubmitError::Write(WriteError::Dropped))),
            "{result:?}"
        );
        // The writer's mailbox closes as its task is dropped, on its own
        // thread: wait for it (bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        while pipeline.writers_alive() || pipeline.budget().positions_in_use() > 0 {
            assert!(Instant::now() < deadline, "the dead writer never showed");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }

        assert_eq!(pipeline.restart_dead_writers(), 1);
        assert!(pipeline.writers_alive());
        assert_eq!(metrics.writer_panics.get(), 1);
        pipeline
            .write(&[position("c2")])
            .await
            .expect("written through the new writer");
        pipeline.stop();
    }

    /// Over the local stream's disk cap, unread segments go: each refresh
    /// publishes how many, so an alert can fire on the first one.
    #[actix_rt::test]
    async fn unread_segments_deleted_over_the_disk_cap_show_in_a_metric() {
        let dir = tempfile::tempdir().expect("tmp");
        let sink = LocalStream::open(
            dir.path(),
            "s",
            LocalOptions {
                shards: 1,
                segment_bytes: 1024,
                max_bytes: Some(2048),
            },
        )
        .expect("open");
        let metrics = Metrics::new();
        let pipeline = Pipeline::start(Arc::new(sink.clone()), small_options(1), metrics.clone());
        pipeline.refresh(true).await.expect("local stream");
        assert_eq!(metrics.local_segments_dropped.get(), 0);
        for i in 0..60 {
            pipeline
                .write(&[position(&format!("courier-{i}"))])
                .await
                .expect("written");
        }
        assert!(sink.segments_dropped() > 0, "the cap deleted segments");
        pipeline.refresh(false).await.expect("refresh");
        assert_eq!(
            metrics.local_segments_dropped.get(),
            i64::try_from(sink.segments_dropped()).expect("small")
        );
        pipeline.stop();
    }

    /// The local stream behind a gate: every put waits until the test lets
    /// it through (`open`), and the first `fail_entries` record entries of
    /// puts answer throttled (a partial failure) instead of being written.
    struct GatedSink {
        inner: LocalStream,
        gate: tokio::sync::Semaphore,
        /// Puts started (entered the gate).
        calls: AtomicUsize,
        /// Records in each put, in order.
        sizes: parking_lot::Mutex<Vec<usize>>,
        fail_entries: AtomicUsize,
    }

    impl GatedSink {
        fn new(inner: LocalStream, open: bool) -> Arc<Self> {
            Arc::new(Self {
                inner,
                gate: tokio::sync::Semaphore::new(if open {
                    tokio::sync::Semaphore::MAX_PERMITS
                } else {
                    0
                }),
                calls: AtomicUsize::new(0),
                sizes: parking_lot::Mutex::new(Vec::new()),
                fail_entries: AtomicUsize::new(0),
            })
        }

        /// Lets `n` more puts through.
        fn open(&self, n: usize) {
            self.gate.add_permits(n);
        }
    }

    impl StreamSink for GatedSink {
        fn kind(&self) -> &'static str {
            "gated"
        }
        fn shard_map(&self) -> courier_stream::BoxFuture<'_, Result<ShardMap, StreamError>> {
            self.inner.shard_map()
        }
        fn put_records(
            &self,
            records: Vec<courier_stream::OutRecord>,
        ) -> courier_stream::BoxFuture<'_, Result<Vec<courier_stream::PutOutcome>, StreamError>>
        {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                self.sizes.lock().push(records.len());
                self.gate
                    .acquire()
                    .await
                    .map_err(|_| StreamError::Corrupt("gate closed".into()))?
                    .forget();
                let mut outcomes = Vec::with_capacity(records.len());
                let mut keep = Vec::new();
                for record in records {
                    let fail = self
                        .fail_entries
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if fail {
                        outcomes.push(Some(courier_stream::PutOutcome::Failed {
                            code: "ProvisionedThroughputExceededException".into(),
                            message: "injected".into(),
                        }));
                    } else {
                        outcomes.push(None);
                        keep.push(record);
                    }
                }
                let mut written = self.inner.put_records(keep).await?.into_iter();
                Ok(outcomes
                    .into_iter()
                    .map(|o| {
                        o.or_else(|| written.next())
                            .expect("one outcome per record")
                    })
                    .collect())
            })
        }
        fn check_health(&self) -> courier_stream::BoxFuture<'_, Result<(), StreamError>> {
            self.inner.check_health()
        }
        fn reset(&self) -> courier_stream::BoxFuture<'_, Result<(), StreamError>> {
            self.inner.reset()
        }
    }

    /// A local stream of `shards` shards named `s` in a new temporary
    /// directory (kept alive by the returned guard).
    fn local_stream(shards: usize) -> (tempfile::TempDir, LocalStream) {
        let dir = tempfile::tempdir().expect("tmp");
        let options = LocalOptions {
            shards,
            ..LocalOptions::default()
        };
        let local = LocalStream::open(dir.path(), "s", options).expect("open");
        (dir, local)
    }

    /// Every position in the local stream, per shard in stream order, as
    /// (courier, lat), with the positions of each record.
    fn stream_contents(dir: &std::path::Path) -> Vec<Vec<Vec<(String, f64)>>> {
        let reader = courier_stream::local::LocalStreamReader::open(dir, "s").expect("reader");
        reader
            .map()
            .shards()
            .iter()
            .map(|shard| {
                let mut cursor = reader.cursor(&shard.shard_id, None).expect("cursor");
                let mut records = Vec::new();
                loop {
                    let batch = cursor.next_batch(1000).expect("read");
                    if batch.is_empty() {
                        break;
                    }
                    for r in batch {
                        let positions = courier_model::avro::decode_record(&r.data)
                            .expect("decode")
                            .into_iter()
                            .map(|p| {
                                let p = p.expect("datum");
                                (p.courier_id, p.lat)
                            })
                            .collect();
                        records.push(positions);
                    }
                }
                records
            })
            .collect()
    }

    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Group commit: while a shard's write is in flight nothing is
    /// acknowledged, and what arrives meanwhile waits and then goes out as
    /// one record in one put, as soon as the first write returns.
    #[actix_rt::test]
    async fn a_shard_write_in_flight_holds_the_next_batch_and_no_ack_comes_before_the_write() {
        let (dir, local) = local_stream(1);
        let sink = GatedSink::new(local, false);
        let metrics = Metrics::new();
        let pipeline = Pipeline::start(sink.clone(), small_options(1000), metrics.clone());
        pipeline.refresh(true).await.expect("local stream");

        let first_pipeline = Arc::clone(&pipeline);
        let mut first =
            actix_rt::spawn(async move { first_pipeline.write(&[position_at("c1", 1.0)]).await });
        wait_until("the first put", || sink.calls.load(Ordering::SeqCst) == 1).await;
        assert_eq!(metrics.batcher_inflight_records.get(), 1);

        let mut later = Vec::new();
        for i in 0..10 {
            let p = Arc::clone(&pipeline);
            later.push(actix_rt::spawn(async move {
                p.write(&[position_at(&format!("c{}", i % 3), 2.0 + f64::from(i))])
                    .await
            }));
        }
        wait_until("the later positions to be held", || {
            pipeline.budget().positions_in_use() == 11
        })
        .await;
        // Still one put: the shard's next batch waits for the write in flight.
        assert_eq!(sink.calls.load(Ordering::SeqCst), 1);
        // Nothing acknowledged before its write: no request has an answer.
        assert!(futures::FutureExt::now_or_never(&mut first).is_none());
        for request in &mut later {
            assert!(futures::FutureExt::now_or_never(request).is_none());
        }
        assert!(
            stream_contents(dir.path())[0].is_empty(),
            "nothing written yet"
        );

        sink.open(1);
        first.await.expect("join").expect("first written");
        wait_until("the second put", || sink.calls.load(Ordering::SeqCst) == 2).await;
        for request in &mut later {
            assert!(futures::FutureExt::now_or_never(request).is_none());
        }
        sink.open(1);
        for request in later {
            request.await.expect("join").expect("written");
        }
        let shards = stream_contents(dir.path());
        assert_eq!(shards[0].len(), 2, "two records: {shards:?}");
        assert_eq!(shards[0][0].len(), 1);
        assert_eq!(
            shards[0][1].len(),
            10,
            "the held positions went as one record"
        );
        assert_eq!(*sink.sizes.lock(), vec![1, 1]);
        // The budget and the in-flight count are released just after the
        // acknowledgements.
        wait_until("the budget released and no record in flight", || {
            pipeline.budget().positions_in_use() == 0 && metrics.batcher_inflight_records.get() == 0
        })
        .await;
        pipeline.stop();
    }

    /// Each courier's positions reach its shard in the order they were
    /// submitted, through group commits and through partial failures whose
    /// failed entries are retried (a shard's next batch waits for the retry).
    #[actix_rt::test]
    async fn positions_of_a_courier_stay_in_order_within_a_shard_through_partial_failures() {
        let dir = tempfile::tempdir().expect("tmp");
        let local = LocalStream::open(
            dir.path(),
            "s",
            LocalOptions {
                shards: 2,
                ..LocalOptions::default()
            },
        )
        .expect("open");
        let sink = GatedSink::new(local, true);
        sink.fail_entries.store(5, Ordering::SeqCst);
        let metrics = Metrics::new();
        let mut options = small_options(7);
        options.writer_concurrency = 4;
        options.writers = 2;
        options.max_inflight_positions = 10_000;
        let pipeline = Pipeline::start(sink.clone(), options, metrics.clone());
        pipeline.refresh(true).await.expect("local stream");

        // Submitted in order (the runtime is single-threaded: spawned tasks
        // start in the order they were spawned), answered in any order.
        let couriers = ["a", "b", "c", "d", "e"];
        let mut requests = Vec::new();
        for step in 0..60 {
            for courier in couriers {
                let p = Arc::clone(&pipeline);
                let position = position_at(courier, f64::from(step));
                requests.push(actix_rt::spawn(async move { p.write(&[position]).await }));
            }
        }
        for request in requests {
            request.await.expect("join").expect("written");
        }
        assert_eq!(
            metrics.records_throttled.get(),
            5,
            "the partial failures happened"
        );
        let mut seen: HashMap<String, Vec<f64>> = HashMap::new();
        for shard in stream_contents(dir.path()) {
            for (courier, lat) in shard.into_iter().flatten() {
                seen.entry(courier).or_default().push(lat);
            }
        }
        for courier in couriers {
            let lats = &seen[courier];
            let expected: Vec<f64> = (0..60).map(f64::from).collect();
            assert_eq!(lats, &expected, "courier {courier} in submission order");
        }
        pipeline.stop();
    }

    /// The HTTP workers append to a shard's batcher themselves, from every
    /// core: appends from several threads at once, racing each other and
    /// the flushes, lose nothing, duplicate nothing, and keep each courier's
    /// positions in the order its requests were submitted.
    #[actix_rt::test]
    async fn appends_from_several_threads_at_once_lose_nothing_and_keep_each_couriers_order() {
        const THREADS: usize = 4;
        // Latitudes 0..STEPS, each a valid latitude.
        const STEPS: usize = 90;
        let (dir, local) = local_stream(2);
        let mut options = small_options(16);
        options.writers = 2;
        options.writer_concurrency = 2;
        options.max_inflight_positions = 100_000;
        options.max_inflight_bytes = 64 << 20;
        let pipeline = Pipeline::start(Arc::new(local), options, Metrics::new());
        pipeline.refresh(true).await.expect("local stream");

        let couriers = |t: usize| [0, 1, 2].map(|k| format!("t{t}-c{k}"));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let p = Arc::clone(&pipeline);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("runtime");
                    // Every request of the thread is submitted (appended)
                    // in order when first polled, then all are awaited
                    // together: up to the whole thread's load in flight.
                    // Every third request carries all three couriers.
                    let requests: Vec<Vec<Position>> = (0..STEPS)
                        .flat_map(|step| {
                            let lat = step as f64;
                            let [a, b, c] = couriers(t);
                            if step % 3 == 0 {
                                vec![vec![
                                    position_at(&a, lat),
                                    position_at(&b, lat),
                                    position_at(&c, lat),
                                ]]
                            } else {
                                vec![
                                    vec![position_at(&a, lat)],
                                    vec![position_at(&b, lat)],
                                    vec![position_at(&c, lat)],
                                ]
                            }
                        })
                        .collect();
                    runtime.block_on(async {
                        let writes = requests.iter().map(|r| p.write(r));
                        futures::future::join_all(writes).await
                    })
                })
            })
            .collect();
        for thread in threads {
            for result in thread.join().expect("thread") {
                result.expect("written");
            }
        }
        let mut seen: HashMap<String, Vec<f64>> = HashMap::new();
        for shard in stream_contents(dir.path()) {
            for (courier, lat) in shard.into_iter().flatten() {
                seen.entry(courier).or_default().push(lat);
            }
        }
        let expected: Vec<f64> = (0..STEPS).map(|s| s as f64).collect();
        assert_eq!(seen.len(), THREADS * 3);
        for t in 0..THREADS {
            for courier in couriers(t) {
                assert_eq!(
                    seen[&courier], expected,
                    "courier {courier}: once each, in order"
                );
            }
        }
        pipeline.stop();
    }

    /// Pacing: a shard allowed one record a second sends its first record
    /// at once and holds the next until the rate allows; what arrives in
    /// the meantime joins the held flush's successor, nothing is lost, and
    /// a courier's positions keep their order.
    #[actix_rt::test]
    async fn a_paced_shard_holds_its_next_record_until_its_rate_allows_and_loses_nothing() {
        let (dir, local) = local_stream(1);
        let metrics = Metrics::new();
        let mut options = small_options(1000);
        options.limits.pacing = Some(batcher::ShardRate {
            bytes_per_sec: 1 << 30,
            records_per_sec: 1,
        });
        let pipeline = Pipeline::start(Arc::new(local), options, metrics.clone());
        pipeline.refresh(true).await.expect("local stream");

        pipeline
            .write(&[position_at("c", 0.0)])
            .await
            .expect("the first record goes at once");
        assert_eq!(metrics.pacing_delay.get_sample_count(), 0);
        let mut requests = Vec::new();
        for i in 1..=4 {
            let p = Arc::clone(&pipeline);
            requests.push(actix_rt::spawn(async move {
                p.write(&[position_at("c", f64::from(i))]).await
            }));
        }
        for request in requests {
            request.await.expect("join").expect("written once paced");
        }
        assert!(
            metrics.pacing_delay.get_sample_count() >= 1,
            "the second record waited for the shard's rate"
        );
        let lats: Vec<f64> = stream_contents(dir.path())[0]
            .iter()
            .flatten()
            .map(|(_, lat)| *lat)
            .collect();
        assert_eq!(lats, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        pipeline.stop();
    }

    /// Shutdown drains: positions held behind a write in flight are flushed
    /// and written once it returns, and `drain` reports an empty pipeline.
    #[actix_rt::test]
    async fn shutdown_drains_what_waits_behind_a_write_in_flight() {
        let dir = tempfile::tempdir().expect("tmp");
        let local = LocalStream::open(
            dir.path(),
            "s",
            LocalOptions {
                shards: 1,
                ..LocalOptions::default()
            },
        )
        .expect("open");
        let sink = GatedSink::new(local, false);
        let pipeline = Pipeline::start(sink.clone(), small_options(1000), Metrics::new());
        pipeline.refresh(true).await.expect("local stream");
        let mut requests = Vec::new();
        for i in 0..5 {
            let p = Arc::clone(&pipeline);
            requests.push(actix_rt::spawn(async move {
                p.write(&[position_at("c", f64::from(i))]).await
            }));
        }
        wait_until("all five held", || {
            pipeline.budget().positions_in_use() == 5
        })
        .await;
        pipeline.begin_shutdown();
        assert!(matches!(
            pipeline.write(&[position("late")]).await,
            Err(SubmitError::ShuttingDown)
        ));
        let drained = {
            let p = Arc::clone(&pipeline);
            actix_rt::spawn(async move { p.drain(Instant::now() + Duration::from_secs(10)).await })
        };
        sink.open(tokio::sync::Semaphore::MAX_PERMITS / 2);
        assert!(
            drained.await.expect("join"),
            "drained within the grace period"
        );
        for request in requests {
            request.await.expect("join").expect("written before exit");
        }
        let lats: Vec<f64> = stream_contents(dir.path())[0]
            .iter()
            .flatten()
            .map(|(_, lat)| *lat)
            .collect();
        assert_eq!(lats, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        pipeline.stop();
    }
}
