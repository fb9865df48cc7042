//! Writer actors own the sink. They group records from the batchers into
//! `PutRecords` calls (at most 500 records and 5 MiB), resend only the failed
//! entries with exponential backoff and full jitter, and give a record up at
//! its deadline (its requests then answer `503`).
//!
//! A writer runs under an actix `Supervisor`. When the sink reports an error
//! after which its state is unknown (a local I/O error), the writer stops; the
//! supervisor restarts it, the records of its in-flight calls go back to the
//! front of its queue, the sink is reset, and writing resumes. The queue lives
//! in the actor value, which survives the restart, and the mailbox is kept by
//! the supervisor: nothing queued is lost.
//!
//! A panic is different: it kills the actor with its queue, so the requests
//! waiting on those records see their acknowledgement dropped and answer
//! `503` (never `202`). The pipeline's watchdog notices the dead writer
//! within [`super::WATCHDOG_EVERY`] and starts a new one in its slot
//! (`ingest_writer_panics_total`); until then `/readyz` reports it.
//!
//! A record that the stream puts on another shard than the one its batcher
//! was routed to means the shard map is stale (a reshard): the writer counts
//! it and asks the pipeline to reload the shard map at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use courier_stream::{OutRecord, PutOutcome, StreamError, StreamSink, limits};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::ack::{Ack, WriteError};
use super::batcher::DoneSignal;
use super::budget::Permit;
use crate::metrics::Metrics;

/// A record ready to be written, with everything waiting on it.
pub struct WriteRecord {
    /// The record.
    pub record: OutRecord,
    /// Positions in it.
    pub positions: usize,
    /// Requests waiting for it.
    pub acks: Vec<Ack>,
    /// Budget held until it is written or given up.
    pub permits: Vec<Permit>,
    /// Give up after this instant.
    pub deadline: Instant,
    /// The shard the routing table chose for it (`None`: not checked).
    pub shard_id: Option<Arc<str>>,
    /// Tells the batcher when the record is done with (written, given up,
    /// or dropped), so the shard's next flush may go (group commit).
    pub done: Option<DoneSignal>,
}

impl Message for WriteRecord {
    type Result = ();
}

struct Pending {
    write: WriteRecord,
    attempts: u32,
    not_before: Instant,
}

/// Backoff between attempts of failed entries: the stream crate's one
/// backoff, with full jitter ([`RetryPolicy::delay`]).
pub type RetryPolicy = courier_stream::Backoff;

/// What the writers know about the stream's health, for `/readyz`.
#[derive(Debug, Default)]
pub struct SinkHealth {
    consecutive_failures: AtomicU32,
    probe_ok: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// Consecutive failed calls after which the stream counts as unreachable.
const UNHEALTHY_AFTER: u32 = 3;

impl SinkHealth {
    /// A put or a probe succeeded.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
    }

    /// A put failed as a whole.
    pub fn record_failure(&self, error: &StreamError) {
        self.consecutive_failures.fetch_add(1, Ordering::AcqRel);
        *self.last_error.lock() = Some(error.to_string());
    }

    /// Result of the periodic health check.
    pub fn record_probe(&self, result: &Result<(), StreamError>) {
        match result {
            Ok(()) => {
                self.probe_ok.store(true, Ordering::Release);
                self.record_success();
            }
            Err(e) => {
                self.probe_ok.store(false, Ordering::Release);
                *self.last_error.lock() = Some(e.to_string());
            }
        }
    }

    /// Whether the stream looks reachable.
    pub fn is_up(&self) -> bool {
        self.probe_ok.load(Ordering::Acquire)
            && self.consecutive_failures.load(Ordering::Acquire) < UNHEALTHY_AFTER
    }

    /// The last error seen, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// A writer actor.
pub struct Writer {
    sink: Arc<dyn StreamSink>,
    queue: VecDeque<Pending>,
    inflight: HashMap<u64, Vec<Pending>>,
    next_call: u64,
    concurrency: usize,
    retry: RetryPolicy,
    metrics: Metrics,
    health: Arc<SinkHealth>,
    resetting: bool,
    stale_routes: Option<Arc<Notify>>,
    #[cfg(any(test, feature = "test-hooks"))]
    panic_next: Option<Arc<AtomicBool>>,
}

impl Writer {
    /// A writer over `sink`.
    pub fn new(
        sink: Arc<dyn StreamSink>,
        concurrency: usize,
        retry: RetryPolicy,
        metrics: Metrics,
        health: Arc<SinkHealth>,
    ) -> Self {
        Self {
            sink,
            queue: VecDeque::new(),
            inflight: HashMap::new(),
            next_call: 0,
            concurrency,
            retry,
            metrics,
            health,
            resetting: false,
            stale_routes: None,
            #[cfg(any(test, feature = "test-hooks"))]
            panic_next: None,
        }
    }

    /// Notifies `stale` when a record lands on another shard than routed.
    pub fn with_stale_routes(mut self, stale: Arc<Notify>) -> Self {
        self.stale_routes = Some(stale);
        self
    }

    /// Test hook: when `flag` is set, the next record this writer receives
    /// makes it panic (the flag is cleared).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn with_panic_hook(mut self, flag: Arc<AtomicBool>) -> Self {
        self.panic_next = Some(flag);
        self
    }

    fn succeed(&self, pending: Pending) {
        self.metrics.records_written.inc();
        self.metrics
            .bytes_written
            .inc_by(pending.write.record.data.len() as u64);
        for ack in &pending.write.acks {
            ack.complete(Ok(()));
        }
    }

    fn give_up(&self, pending: Pending, reason: &str) {
        self.metrics.records_failed.inc();
        tracing::warn!(
            positions = pending.write.positions,
            attempts = pending.attempts,
            reason,
            "giving up a stream record at its deadline; its requests answer 503"
        );
        for ack in &pending.write.acks {
            ack.complete(Err(WriteError::Unavailable(reason.to_owned())));
        }
    }

    fn retry_or_give_up(&mut self, mut pending: Pending, reason: &str, now: Instant) {
        pending.attempts += 1;
        let delay = self.retry.delay(pending.attempts);
        if now + delay >= pending.write.deadline {
            self.give_up(pending, reason);
        } else {
            self.metrics.records_retried.inc();
            pending.not_before = now + delay;
            self.queue.push_back(pending);
        }
    }

    /// Starts as many calls as allowed with the records that are due.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        // Deadlines first: a record nobody waits for any more is not sent.
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(p) = self.queue.pop_front() {
            if p.write.deadline <= now {
                self.give_up(p, "deadline passed while queued");
            } else {
                kept.push_back(p);
            }
        }
        self.queue = kept;
        if self.resetting {
            return;
        }
        while self.inflight.len() < self.concurrency {
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            let mut rest = VecDeque::with_capacity(self.queue.len());
            while let Some(p) = self.queue.pop_front() {
                let len = p.write.record.billed_len();
                if p.not_before <= now
                    && batch.len() < limits::MAX_RECORDS_PER_PUT
                    && bytes + len <= limits::MAX_BYTES_PER_PUT
                {
                    bytes += len;
                    batch.push(p);
                } else {
                    rest.push_back(p);
                }
            }
            self.queue = rest;
            if batch.is_empty() {
                break;
            }
            self.start_call(batch, ctx);
        }
    }

    fn start_call(&mut self, batch: Vec<Pending>, ctx: &mut Context<Self>) {
        let id = self.next_call;
        self.next_call += 1;
        let records: Vec<OutRecord> = batch.iter().map(|p| p.write.record.clone()).collect();
        self.inflight.insert(id, batch);
        let sink = Arc::clone(&self.sink);
        let started = Instant::now();
        ctx.spawn(
            async move { sink.put_records(records).await }
                .into_actor(self)
                .map(move |result, act, ctx| act.on_result(id, started, result, ctx)),
        );
    }

    fn on_result(
        &mut self,
        id: u64,
        started: Instant,
        result: Result<Vec<PutOutcome>, StreamError>,
        ctx: &mut Context<Self>,
    ) {
        self.metrics
            .put_duration
            .observe(started.elapsed().as_secs_f64());
        let Some(batch) = self.inflight.remove(&id) else {
            return;
        };
        let now = Instant::now();
        match result {
            Ok(outcomes) => {
                self.health.record_success();
                let mut failed = 0;
                let mut misrouted = 0u64;
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        PutOutcome::Written { ref shard_id, .. } => {
                            if pending
                                .write
                                .shard_id
                                .as_deref()
                                .is_some_and(|routed| routed != shard_id.as_str())
                            {
                                misrouted += 1;
                            }
                            self.succeed(pending);
                        }
                        PutOutcome::Failed {
                            ref code,
                            ref message,
                        } => {
                            failed += 1;
                            if outcome.is_throttled() {
                                self.metrics.records_throttled.inc();
                            }
                            let reason = format!("{code}: {message}");
                            self.retry_or_give_up(pending, &reason, now);
                        }
                    }
                }
                if misrouted > 0 {
                    self.metrics.misrouted_records.inc_by(misrouted);
                    tracing::debug!(
                        records = misrouted,
                        "records landed on another shard than routed: the shard map is stale (reshard); reloading it"
                    );
                    if let Some(stale) = &self.stale_routes {
                        stale.notify_one();
                    }
                }
                let result = if failed == 0 { "ok" } else { "partial" };
                self.metrics.put_calls.with_label_values(&[result]).inc();
            }
            Err(error) => {
                self.metrics.put_calls.with_label_values(&["error"]).inc();
                if error.is_throttled() {
                    self.metrics.records_throttled.inc_by(batch.len() as u64);
                } else {
                    self.health.record_failure(&error);
                }
                tracing::warn!(%error, records = batch.len(), "stream put failed");
                if error.needs_reset() {
                    // Back to the front of the queue, then restart and reset.
                    for p in batch.into_iter().rev() {
                        self.queue.push_front(p);
                    }
                    ctx.stop();
                    return;
                }
                let reason = error.to_string();
                for pending in batch {
                    self.retry_or_give_up(pending, &reason, now);
                }
            }
        }
        self.pump(ctx);
    }

    fn start_reset(&mut self, ctx: &mut Context<Self>) {
        let sink = Arc::clone(&self.sink);
        ctx.spawn(
            async move { sink.reset().await }.into_actor(self).map(
                |result, act, ctx| match result {
                    Ok(()) => {
                        tracing::info!(
                            sink = act.sink.kind(),
                            "stream sink reset; writing resumes"
                        );
                        act.resetting = false;
                        act.pump(ctx);
                    }
                    Err(error) => {
                        tracing::error!(%error, "stream sink reset failed; trying again");
                        act.health.record_failure(&error);
                        let delay = act.retry.max;
                        ctx.run_later(delay, |act, ctx| act.start_reset(ctx));
                    }
                },
            ),
        );
    }
}

impl Actor for Writer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A tick drives retries whose backoff ended and deadlines that passed.
        ctx.run_interval(Duration::from_millis(20), |act, ctx| act.pump(ctx));
        if self.resetting {
            self.start_reset(ctx);
        }
    }
}

impl Supervised for Writer {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics.writer_restarts.inc();
        let mut calls: Vec<_> = self.inflight.drain().collect();
        calls.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        for (_, batch) in calls {
            for p in batch.into_iter().rev() {
                self.queue.push_front(p);
            }
        }
        self.resetting = true;
        tracing::warn!(
            queued = self.queue.len(),
            "writer restarting after a sink failure"
        );
    }
}

impl Handler<WriteRecord> for Writer {
    type Result = ();

    fn handle(&mut self, write: WriteRecord, ctx: &mut Self::Context) {
        self.queue.push_back(Pending {
            write,
            attempts: 0,
            not_before: Instant::now(),
        });
        #[cfg(any(test, feature = "test-hooks"))]
        if self
            .panic_next
            .as_ref()
            .is_some_and(|flag| flag.swap(false, Ordering::AcqRel))
        {
            panic!("injected writer panic (test hook)");
        }
        if self.inflight.len() < self.concurrency {
            self.pump(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::budget::Budget;
    use bytes::Bytes;
    use courier_stream::local::{LocalOptions, LocalStream, LocalStreamReader};
    use courier_stream::{BoxFuture, ShardMap};
    use std::sync::atomic::AtomicUsize;

    /// Fault injection a real disk cannot be asked for: the local stream,
    /// whose first `fail_first` puts fail with an I/O error.
    struct FlakyDisk {
        inner: LocalStream,
        fail_first: usize,
        calls: AtomicUsize,
        resets: AtomicUsize,
    }

    impl StreamSink for FlakyDisk {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn shard_map(&self) -> BoxFuture<'_, Result<ShardMap, StreamError>> {
            self.inner.shard_map()
        }
        fn put_records(
            &self,
            records: Vec<OutRecord>,
        ) -> BoxFuture<'_, Result<Vec<PutOutcome>, StreamError>> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
                return Box::pin(async {
                    Err(StreamError::Io {
                        context: "injected".into(),
                        source: std::io::Error::other("disk on fire"),
                    })
                });
            }
            self.inner.put_records(records)
        }
        fn check_health(&self) -> BoxFuture<'_, Result<(), StreamError>> {
            self.inner.check_health()
        }
        fn reset(&self) -> BoxFuture<'_, Result<(), StreamError>> {
            self.resets.fetch_add(1, Ordering::SeqCst);
            self.inner.reset()
        }
    }

    fn record(
        i: usize,
        budget: &Arc<Budget>,
    ) -> (
        WriteRecord,
        tokio::sync::oneshot::Receiver<Result<(), WriteError>>,
    ) {
        let (ack, rx) = Ack::new(1);
        let write = WriteRecord {
            record: OutRecord {
                partition_key: format!("k{i}"),
                explicit_hash_key: None,
                data: Bytes::from(format!("record-{i}")),
            },
            positions: 1,
            acks: vec![ack],
            permits: budget.try_acquire(1, 10).into_iter().collect(),
            deadline: Instant::now() + Duration::from_secs(10),
            shard_id: None,
            done: None,
        };
        (write, rx)
    }

    #[actix_rt::test]
    async fn a_restarted_writer_loses_nothing_it_had_queued() {
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
        let sink = Arc::new(FlakyDisk {
            inner: local,
            fail_first: 2,
            calls: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
        });
        let metrics = Metrics::new();
        let budget = Budget::new(1000, 100_000, metrics.clone());
        let writer = Writer::new(
            sink.clone(),
            1,
            RetryPolicy {
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
            metrics.clone(),
            Arc::new(SinkHealth::default()),
        );
        let addr = Supervisor::start(|_| writer);
        let mut waiting = Vec::new();
        for i in 0..50 {
            let (write, rx) = record(i, &budget);
            addr.do_send(write);
            waiting.push(rx);
        }
        for rx in waiting {
            assert_eq!(rx.await, Ok(Ok(())));
        }
        assert!(metrics.writer_restarts.get() >= 1);
        assert!(sink.resets.load(Ordering::SeqCst) >= 1);
        assert_eq!(budget.positions_in_use(), 0);

        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        let mut data = Vec::new();
        for shard in reader.map().shards() {
            let mut cursor = reader.cursor(&shard.shard_id, None).expect("cursor");
            data.extend(
                cursor
                    .next_batch(1000)
                    .expect("read")
                    .into_iter()
                    .map(|r| r.data),
            );
        }
        data.sort();
        data.dedup();
        assert_eq!(data.len(), 50, "every record written exactly as sent");
    }

    /// A record the stream puts on another shard than routed (a stale shard
    /// map) is counted and wakes the shard-map reload; one on its shard is not.
    #[actix_rt::test]
    async fn a_record_on_another_shard_than_routed_asks_for_a_shard_map_reload() {
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
        let only_shard = local.shard_map().await.expect("map").shards()[0]
            .shard_id
            .clone();
        let metrics = Metrics::new();
        let budget = Budget::new(1000, 100_000, metrics.clone());
        let stale = Arc::new(Notify::new());
        let writer = Writer::new(
            Arc::new(local),
            1,
            RetryPolicy {
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
            metrics.clone(),
            Arc::new(SinkHealth::default()),
        )
        .with_stale_routes(Arc::clone(&stale));
        let addr = Supervisor::start(|_| writer);

        let (mut write, rx) = record(0, &budget);
        write.shard_id = Some(Arc::from(only_shard.as_str()));
        addr.do_send(write);
        assert_eq!(rx.await, Ok(Ok(())));
        assert_eq!(metrics.misrouted_records.get(), 0);

        let (mut write, rx) = record(1, &budget);
        write.shard_id = Some(Arc::from("shardId-000000000007"));
        addr.do_send(write);
        assert_eq!(rx.await, Ok(Ok(())), "a misrouted record is still written");
        assert_eq!(metrics.misrouted_records.get(), 1);
        tokio::time::timeout(Duration::from_secs(5), stale.notified())
            .await
            .expect("the reload was asked for");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            base: Duration::from_millis(50),
            max: Duration::from_millis(400),
        };
        // The ceiling doubles with each attempt until the cap, then stays.
        let ceilings: Vec<u128> = (1..=8).map(|a| policy.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 400, 400, 400, 400]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_millis(400));
        // Every jittered delay lies within 1 ms ..= its attempt's ceiling, and
        // the delays of a later attempt reach beyond an earlier ceiling (with
        // 200 uniform draws from 1..=400 ms, all of them at most 200 ms has a
        // probability of 2^-200).
        for attempt in 1..20 {
            let ceiling = policy.ceiling(attempt);
            let draws: Vec<Duration> = (0..200).map(|_| policy.delay(attempt)).collect();
            for d in &draws {
                assert!(
                    *d >= Duration::from_millis(1) && *d <= ceiling,
                    "attempt {attempt}: {d:?} outside 1 ms ..= {ceiling:?}"
                );
            }
            if attempt >= 2 {
                let previous = policy.ceiling(attempt - 1);
                let longest = draws.iter().max().copied().unwrap_or_default();
                assert!(
                    attempt > 4 || longest > previous,
                    "attempt {attempt}: no delay beyond the previous ceiling {previous:?}"
                );
            }
        }
    }
}
