//! Batchers aggregate encoded positions of one shard into stream records.
//! The HTTP workers already parsed, validated and Avro-encoded the
//! positions (that work runs on every core); they append a request's bytes
//! for a shard straight into the shard's batcher under a short lock. A
//! batcher only concatenates bytes, counts, and compresses a record when it
//! flushes.
//!
//! Flushing is a group commit per shard: when no write of the shard is in
//! flight, what the batcher holds goes out at once (the appending worker
//! sends the batcher's actor one message to flush); while one is, appends
//! only accumulate, with no message and no thread woken, and go out as soon
//! as the write returns. A record is also closed at its size or count
//! limit. Two optional brakes: `linger` (hold a record that long after its
//! first position, for larger records at a cost in latency; off by default)
//! and per-shard pacing within the Kinesis shard limits (a hot shard is
//! slowed before the stream throttles it).
//!
//! Each batcher's actor runs on the actor threads: it flushes an idle
//! shard, takes the writer's "done" signal, runs the linger and pacing
//! timers, and ends a retired shard. Compression and the hand-over to a
//! writer happen there, never on an HTTP worker: flushing inline on the
//! workers saved no more CPU and lengthened the latency tail at half the
//! maximum load (docs/performance.md, stop 27).
//!
//! Every record is addressed with the shard's starting hash key as explicit
//! hash key, so it lands on the shard that owns all of its couriers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use bytes::Bytes;
use courier_model::avro::RecordEncoder;
use courier_stream::OutRecord;
use parking_lot::Mutex;

use super::WriterSlot;
use super::ack::Ack;
use super::budget::Permit;
use super::writer::WriteRecord;
use crate::metrics::Metrics;

/// Encoded positions of one request for one shard.
pub struct Append {
    /// Concatenated Avro datums.
    pub datums: Vec<u8>,
    /// End offset of each datum in `datums`.
    pub ends: Vec<u32>,
    /// Courier id of the first position (the record's partition key).
    pub first_key: String,
    /// The request's acknowledgement (one piece).
    pub ack: Ack,
    /// Budget held by these positions.
    pub permit: Permit,
    /// The request's deadline.
    pub deadline: Instant,
}

/// How long a retired batcher (its shard closed by a reshard) keeps taking
/// appends from requests that routed with the old shard map.
const RETIRED_FOR: Duration = Duration::from_secs(60);

/// Record limits and timing.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// Encoded bytes per record.
    pub max_bytes: usize,
    /// Positions per record.
    pub max_positions: usize,
    /// Optional extra wait: hold a record this long after its first position
    /// even when no write is in flight (fewer, larger records for a cost in
    /// latency). Zero (the default) flushes as soon as the shard's previous
    /// write returned (group commit).
    pub linger: Duration,
    /// Per-shard rate the batcher keeps its flushes within (Kinesis shard
    /// limits); `None`: no pacing (the local stream).
    pub pacing: Option<ShardRate>,
}

impl BatchLimits {
    /// Capacity of a record's datum buffer: its size limit, at most 1 MiB
    /// (a buffer grows past it only for a record that large).
    fn buffer_bytes(&self) -> usize {
        self.max_bytes.min(1 << 20)
    }
}

/// A shard's write rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRate {
    /// Bytes (data and partition key) per second.
    pub bytes_per_sec: u64,
    /// Records per second.
    pub records_per_sec: u64,
}

/// Two token buckets (bytes and records) of one shard, each holding at most
/// one second of its rate: a shard is slowed down before the stream
/// throttles it.
#[derive(Debug)]
struct Pacer {
    rate: ShardRate,
    bytes: f64,
    records: f64,
    at: Instant,
}

impl Pacer {
    fn new(rate: ShardRate, now: Instant) -> Self {
        Self {
            rate,
            bytes: rate.bytes_per_sec as f64,
            records: rate.records_per_sec as f64,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.bytes = (self.bytes + secs * self.rate.bytes_per_sec as f64)
            .min(self.rate.bytes_per_sec as f64);
        self.records = (self.records + secs * self.rate.records_per_sec as f64)
            .min(self.rate.records_per_sec as f64);
    }

    /// How long until a record of `bytes` may go (zero: now). A record larger
    /// than one second of the rate goes when the bucket is full.
    fn wait(&mut self, bytes: usize, now: Instant) -> Duration {
        self.refill(now);
        let need_bytes = (bytes as f64).min(self.rate.bytes_per_sec as f64);
        let need_records = 1f64.min(self.rate.records_per_sec as f64);
        let short_bytes =
            (need_bytes - self.bytes).max(0.0) / self.rate.bytes_per_sec.max(1) as f64;
        let short_records =
            (need_records - self.records).max(0.0) / self.rate.records_per_sec.max(1) as f64;
        Duration::from_secs_f64(short_bytes.max(short_records))
    }

    fn take(&mut self, bytes: usize) {
        self.bytes -= bytes as f64;
        self.records -= 1.0;
    }
}

/// Sent back to a batcher when a record it handed to a writer is written or
/// given up (or dropped with a dead writer): the shard's next flush may go.
pub struct WriteDone;

impl Message for WriteDone {
    type Result = ();
}

/// Travels with a record to the writer; when dropped (the record written,
/// given up, or lost with its actor) it tells the batcher.
pub struct DoneSignal(Option<Recipient<WriteDone>>);

impl DoneSignal {
    /// A signal to `batcher`.
    pub fn new(batcher: Recipient<WriteDone>) -> Self {
        Self(Some(batcher))
    }
}

impl Drop for DoneSignal {
    fn drop(&mut self) {
        if let Some(batcher) = self.0.take() {
            batcher.do_send(WriteDone);
        }
    }
}

/// A run of whole datums with everything that waits on them.
struct Piece<'a> {
    datums: &'a [u8],
    count: usize,
    first_key: &'a str,
    ack: Ack,
    permit: Permit,
    deadline: Instant,
}

/// A closed record, not compressed yet.
struct Sealed {
    datums: Vec<u8>,
    count: usize,
    first_key: String,
    acks: Vec<Ack>,
    permits: Vec<Permit>,
    deadline: Instant,
}

/// What a batcher holds, behind its lock.
struct State {
    /// The open record's datums.
    buf: Vec<u8>,
    count: usize,
    first_key: Option<String>,
    acks: Vec<Ack>,
    permits: Vec<Permit>,
    deadline: Option<Instant>,
    /// When the open record got its first position.
    opened: Option<Instant>,
    /// A cleared buffer for the next open record.
    spare: Option<Vec<u8>>,
    /// Closed records waiting for the shard's write in flight.
    ready: VecDeque<Sealed>,
    /// The shard's one flush is taken: a record is being compressed, waits
    /// for pacing, or is with a writer.
    busy: bool,
    /// Flush every append at once (shutdown, retired shard).
    immediate: bool,
    /// The actor stopped: nothing can flush any more.
    closed: bool,
    /// A linger timer will pump.
    linger_armed: bool,
    /// A flush message is on its way to the actor.
    flush_asked: bool,
}

impl State {
    fn new(limits: &BatchLimits) -> Self {
        Self {
            buf: Vec::with_capacity(limits.buffer_bytes()),
            count: 0,
            first_key: None,
            acks: Vec::new(),
            permits: Vec::new(),
            deadline: None,
            opened: None,
            spare: None,
            ready: VecDeque::new(),
            busy: false,
            immediate: false,
            closed: false,
            linger_armed: false,
            flush_asked: false,
        }
    }

    /// Closes the open record (it is compressed when it is flushed).
    fn seal(&mut self, limits: &BatchLimits) {
        if self.count == 0 {
            return;
        }
        let next = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(limits.buffer_bytes()));
        self.ready.push_back(Sealed {
            datums: std::mem::replace(&mut self.buf, next),
            count: self.count,
            first_key: self.first_key.take().unwrap_or_default(),
            acks: std::mem::take(&mut self.acks),
            permits: std::mem::take(&mut self.permits),
            deadline: self.deadline.take().unwrap_or_else(Instant::now),
        });
        self.count = 0;
        self.opened = None;
    }

    fn push_piece(&mut self, piece: Piece<'_>, limits: &BatchLimits) {
        let Piece {
            datums,
            count,
            first_key,
            ack,
            permit,
            deadline,
        } = piece;
        if self.count > 0
            && (self.buf.len() + datums.len() > limits.max_bytes
                || self.count + count > limits.max_positions)
        {
            self.seal(limits);
        }
        if self.count == 0 {
            self.opened = Some(Instant::now());
            self.first_key = Some(first_key.to_owned());
        }
        self.buf.extend_from_slice(datums);
        self.count += count;
        self.acks.push(ack);
        self.permits.push(permit);
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        if self.buf.len() >= limits.max_bytes || self.count >= limits.max_positions {
            self.seal(limits);
        }
    }
}

/// The batcher of one shard, shared by the HTTP workers (which append) and
/// its actor (which flushes).
///
/// Group commit: at most one flush of the shard is in flight. While it is,
/// appends accumulate; when it returns ([`WriteDone`]) what accumulated goes
/// out at once as the next record (up to the record limits; a longer backlog
/// goes record by record, each as soon as the one before it returned). So at
/// low load a position waits for one write, and records grow by themselves
/// with load.
pub struct Batcher {
    limits: BatchLimits,
    state: Mutex<State>,
    actor: Addr<BatcherActor>,
}

impl Batcher {
    /// Starts the batcher of the shard `shard_id` starting at `hash_key`,
    /// writing through the writer in `writer`; its actor runs on `arbiter`.
    pub fn start(
        arbiter: &ArbiterHandle,
        hash_key: u128,
        shard_id: Arc<str>,
        writer: WriterSlot,
        encoder: RecordEncoder,
        limits: BatchLimits,
        metrics: Metrics,
    ) -> Arc<Self> {
        // The actor's mailbox exists before the batcher, so the batcher
        // holds its address from the start (as `start_in_arbiter` does).
        let (tx, rx) = actix::dev::channel::channel(16);
        let batcher = Arc::new(Self {
            state: Mutex::new(State::new(&limits)),
            limits,
            actor: Addr::new(tx),
        });
        let actor = BatcherActor {
            pacer: batcher
                .limits
                .pacing
                .map(|rate| Pacer::new(rate, Instant::now())),
            batcher: Arc::clone(&batcher),
            hash_key,
            shard_id,
            writer,
            encoder,
            metrics,
            paced: None,
        };
        arbiter.spawn_fn(move || {
            actix_rt::spawn(Context::with_receiver(rx).into_future(actor));
        });
        batcher
    }

    /// Takes one request's positions for this shard. The request's `ack`
    /// completes when the record holding them is written; if this batcher
    /// has stopped (a retired shard's), the positions are dropped with
    /// their acknowledgement, and the request answers `503`.
    pub fn append(&self, msg: Append) {
        let Append {
            datums,
            ends,
            first_key,
            ack,
            mut permit,
            deadline,
        } = msg;
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        if datums.len() <= self.limits.max_bytes && ends.len() <= self.limits.max_positions {
            let piece = Piece {
                datums: &datums,
                count: ends.len(),
                first_key: &first_key,
                ack,
                permit,
                deadline,
            };
            state.push_piece(piece, &self.limits);
            self.ask_flush(state);
            return;
        }
        // Larger than one record: split at datum boundaries. Each extra piece
        // is one more completion the request waits for.
        let mut start = 0usize;
        let mut piece_start = 0usize;
        let mut first = true;
        for (i, &end) in ends.iter().enumerate() {
            let end = end as usize;
            let bytes = end - piece_start;
            let count = i + 1 - start;
            let last = i + 1 == ends.len();
            let next_too_big = !last
                && (ends[i + 1] as usize - piece_start > self.limits.max_bytes
                    || count + 1 > self.limits.max_positions);
            if last || next_too_big {
                if !first {
                    ack.add_piece();
                }
                first = false;
                let part = if last {
                    let empty = permit.split(0, 0);
                    std::mem::replace(&mut permit, empty)
                } else {
                    permit.split(count, bytes)
                };
                let piece = Piece {
                    datums: &datums[piece_start..end],
                    count,
                    first_key: &first_key,
                    ack: ack.clone(),
                    permit: part,
                    deadline,
                };
                state.push_piece(piece, &self.limits);
                start = i + 1;
                piece_start = end;
            }
        }
        self.ask_flush(state);
    }

    /// Asks the actor to flush when the shard is idle. Under load the shard
    /// is busy and the returning write flushes; an open record that lingers
    /// waits for its timer: no message then.
    fn ask_flush(&self, mut state: parking_lot::MutexGuard<'_, State>) {
        if state.busy || state.flush_asked || (state.linger_armed && state.ready.is_empty()) {
            return;
        }
        state.flush_asked = true;
        drop(state);
        self.actor.do_send(Flush);
    }

    /// Flushes now and every later append at once (shutdown has begun).
    pub fn flush_now(&self) {
        let mut state = self.state.lock();
        state.immediate = true;
        // The linger timer may be armed: flush without waiting for it.
        state.linger_armed = false;
        self.ask_flush(state);
    }

    /// The shard closed (resharding): flushes now and every later append at
    /// once, and stops after [`RETIRED_FOR`].
    pub fn retire(&self) {
        self.flush_now();
        self.actor.do_send(Retire);
    }
}

/// Flush what the idle shard holds.
struct Flush;

impl Message for Flush {
    type Result = ();
}

/// Stop after [`RETIRED_FOR`].
struct Retire;

impl Message for Retire {
    type Result = ();
}

/// The actor of one batcher: it flushes. It alone compresses, paces and
/// hands records to the writer, so what only that needs lives here, not
/// behind the batcher's lock.
struct BatcherActor {
    batcher: Arc<Batcher>,
    hash_key: u128,
    shard_id: Arc<str>,
    writer: WriterSlot,
    encoder: RecordEncoder,
    metrics: Metrics,
    pacer: Option<Pacer>,
    /// A compressed record held back by pacing.
    paced: Option<WriteRecord>,
}

impl BatcherActor {
    /// Sends the next record when the shard's flush is free, unless the
    /// linger says to wait (then a timer pumps). The lock is never held
    /// while compressing or while handing a record over (a record dropped on
    /// a stopped writer signals this actor, never the lock).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let limits = &self.batcher.limits;
        let sealed = {
            let mut state = self.batcher.state.lock();
            if state.busy || state.closed {
                return;
            }
            if state.ready.is_empty() {
                let Some(opened) = state.opened else { return };
                let now = Instant::now();
                if !state.immediate && !limits.linger.is_zero() && now < opened + limits.linger {
                    if !state.linger_armed {
                        state.linger_armed = true;
                        ctx.run_later(opened + limits.linger - now, |act, ctx| act.on_timer(ctx));
                    }
                    return;
                }
                state.seal(limits);
            }
            // One record per flush: a retried record is never overtaken by a
            // later one of its shard (a partial failure cannot reorder a
            // courier's positions); what waits behind it goes in the next
            // flush.
            let Some(sealed) = state.ready.pop_front() else {
                return;
            };
            state.busy = true;
            sealed
        };
        let write = self.compress(sealed);
        self.dispatch(write, ctx);
    }

    /// Builds the stream record of `sealed`.
    fn compress(&mut self, sealed: Sealed) -> WriteRecord {
        let Sealed {
            mut datums,
            count,
            first_key,
            acks,
            permits,
            deadline,
        } = sealed;
        let data = self.encoder.encode(&datums, count);
        self.metrics.records_built.inc();
        self.metrics
            .records_routed
            .with_label_values(&[&*self.shard_id])
            .inc();
        self.metrics.record_positions.observe(count as f64);
        self.metrics.record_bytes.observe(data.len() as f64);
        datums.clear();
        self.batcher.state.lock().spare.get_or_insert(datums);
        WriteRecord {
            record: OutRecord {
                partition_key: first_key,
                explicit_hash_key: Some(self.hash_key),
                data: Bytes::from(data),
            },
            positions: count,
            acks,
            permits,
            deadline,
            shard_id: Some(Arc::clone(&self.shard_id)),
            done: None,
        }
    }

    /// Hands the record holding the shard's flush to the writer, or holds it
    /// back while the shard's pacing says to wait.
    fn dispatch(&mut self, mut write: WriteRecord, ctx: &mut Context<Self>) {
        if let Some(pacer) = self.pacer.as_mut() {
            let len = write.record.billed_len();
            let wait = pacer.wait(len, Instant::now());
            if !wait.is_zero() {
                self.metrics.pacing_delay.observe(wait.as_secs_f64());
                self.paced = Some(write);
                ctx.run_later(wait, |act, ctx| act.on_timer(ctx));
                return;
            }
            pacer.take(len);
        }
        write.done = Some(DoneSignal::new(ctx.address().recipient()));
        self.metrics.batcher_inflight_records.inc();
        // A stopped writer drops the record and with it the acks: the
        // requests then answer 503, never 202. The slot holds the writer
        // started last (a dead one is replaced by the watchdog).
        self.writer.load().do_send(write);
    }

    /// A linger or pacing timer fired.
    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        self.batcher.state.lock().linger_armed = false;
        match self.paced.take() {
            Some(write) => self.dispatch(write, ctx),
            None => self.pump(ctx),
        }
    }
}

impl Actor for BatcherActor {
    type Context = Context<Self>;

    /// Nothing can flush any more: what the batcher still holds is dropped,
    /// which fails its requests (`503`); so are later appends.
    fn stopped(&mut self, _: &mut Self::Context) {
        let held = {
            let mut state = self.batcher.state.lock();
            state.closed = true;
            (
                std::mem::take(&mut state.acks),
                std::mem::take(&mut state.permits),
                std::mem::take(&mut state.ready),
            )
        };
        drop(held);
    }
}

impl Handler<Flush> for BatcherActor {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.batcher.state.lock().flush_asked = false;
        self.pump(ctx);
    }
}

impl Handler<WriteDone> for BatcherActor {
    type Result = ();

    fn handle(&mut self, _: WriteDone, ctx: &mut Self::Context) {
        self.batcher.state.lock().busy = false;
        self.metrics.batcher_inflight_records.dec();
        self.pump(ctx);
    }
}

impl Handler<Retire> for BatcherActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        // Requests that routed with the old shard map may still arrive for a
        // short while; after that nothing addresses this batcher.
        ctx.run_later(RETIRED_FOR, |_, ctx| ctx.stop());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Duration, secs: f64) -> bool {
        (a.as_secs_f64() - secs).abs() < 1e-6
    }

    #[test]
    fn the_pacer_keeps_a_shard_within_its_bytes_and_records_per_second() {
        let t0 = Instant::now();
        let rate = ShardRate {
            bytes_per_sec: 1000,
            records_per_sec: 4,
        };
        let mut pacer = Pacer::new(rate, t0);
        // A full bucket: one second's worth goes at once.
        assert!(pacer.wait(600, t0).is_zero());
        pacer.take(600);
        assert!(pacer.wait(400, t0).is_zero());
        pacer.take(400);
        // Empty: 500 bytes take half a second to come back.
        assert!(close(pacer.wait(500, t0), 0.5));
        let t1 = t0 + Duration::from_millis(500);
        assert!(pacer.wait(500, t1).is_zero());
        pacer.take(500);
        // A record larger than a second's worth goes when the bucket is
        // full (one second after it was empty), and leaves a debt.
        assert!(close(pacer.wait(5000, t1), 1.0));
        let t2 = t1 + Duration::from_secs(1);
        assert!(pacer.wait(5000, t2).is_zero());
        pacer.take(5000);
        assert!(close(pacer.wait(1, t2), 4.001));

        // Records: four per second, whatever their size.
        let mut pacer = Pacer::new(rate, t0);
        for _ in 0..4 {
            assert!(pacer.wait(1, t0).is_zero());
            pacer.take(1);
        }
        assert!(close(pacer.wait(1, t0), 0.25));
    }
}
