//! Batcher actors aggregate encoded positions of one shard into stream
//! records. The HTTP workers already parsed, validated and Avro-encoded the
//! positions (that work runs on every core); a batcher only concatenates
//! bytes, counts, and compresses a record when it flushes.
//!
//! Flushing is a group commit per shard: when no write of the shard is in
//! flight, what the batcher holds goes out at once; while one is, appends
//! accumulate and go out as soon as it returns. A record is also closed at
//! its size or count limit. Two optional brakes: `linger` (hold a record
//! that long after its first position, for larger records at a cost in
//! latency; off by default) and per-shard pacing within the Kinesis shard
//! limits (a hot shard is slowed before the stream throttles it).
//!
//! Every record is addressed with the shard's starting hash key as explicit
//! hash key, so it lands on the shard that owns all of its couriers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use courier_model::avro::RecordEncoder;
use courier_stream::OutRecord;

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

impl Message for Append {
    type Result = ();
}

/// Flush now and from now on flush every append at once (shutdown).
pub struct FlushNow;

impl Message for FlushNow {
    type Result = ();
}

/// The shard closed (resharding): flush, flush every later append at once,
/// and stop after a while.
pub struct Retire;

impl Message for Retire {
    type Result = ();
}

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

/// A batcher actor for one shard.
///
/// Group commit: at most one flush of the shard is in flight. While it is,
/// appends accumulate; when it returns ([`WriteDone`]) what accumulated goes
/// out at once as the next record (up to the record limits; a longer backlog
/// goes record by record, each as soon as the one before it returned). So at
/// low load a position waits for one write, and records grow by themselves
/// with load.
pub struct Batcher {
    hash_key: u128,
    shard_id: Arc<str>,
    writer: WriterSlot,
    encoder: RecordEncoder,
    limits: BatchLimits,
    immediate: bool,
    buf: Vec<u8>,
    count: usize,
    first_key: Option<String>,
    acks: Vec<Ack>,
    permits: Vec<Permit>,
    deadline: Option<Instant>,
    /// When the open record got its first position.
    opened: Option<Instant>,
    /// Sealed records waiting for the in-flight write (or for pacing).
    ready: VecDeque<WriteRecord>,
    /// Records handed to the writer and not yet done.
    inflight: usize,
    /// A pacing timer will pump.
    pacing_armed: bool,
    /// A linger timer will pump.
    linger_armed: bool,
    pacer: Option<Pacer>,
    metrics: Metrics,
}

impl Batcher {
    /// A batcher writing records for the shard `shard_id` starting at
    /// `hash_key`, through the writer in `writer`.
    pub fn new(
        hash_key: u128,
        shard_id: Arc<str>,
        writer: WriterSlot,
        encoder: RecordEncoder,
        limits: BatchLimits,
        metrics: Metrics,
    ) -> Self {
        Self {
            hash_key,
            shard_id,
            writer,
            encoder,
            buf: Vec::with_capacity(limits.max_bytes.min(1 << 20)),
            pacer: limits.pacing.map(|rate| Pacer::new(rate, Instant::now())),
            limits,
            immediate: false,
            count: 0,
            first_key: None,
            acks: Vec::new(),
            permits: Vec::new(),
            deadline: None,
            opened: None,
            ready: VecDeque::new(),
            inflight: 0,
            pacing_armed: false,
            linger_armed: false,
            metrics,
        }
    }

    /// Closes the open record: compresses it and queues it for the writer.
    fn seal(&mut self) {
        if self.count == 0 {
            return;
        }
        let data = self.encoder.encode(&self.buf, self.count);
        self.metrics.records_built.inc();
        self.metrics
            .records_routed
            .with_label_values(&[&*self.shard_id])
            .inc();
        self.metrics.record_positions.observe(self.count as f64);
        self.metrics.record_bytes.observe(data.len() as f64);
        self.ready.push_back(WriteRecord {
            record: OutRecord {
                partition_key: self.first_key.take().unwrap_or_default(),
                explicit_hash_key: Some(self.hash_key),
                data: Bytes::from(data),
            },
            positions: self.count,
            acks: std::mem::take(&mut self.acks),
            permits: std::mem::take(&mut self.permits),
            deadline: self.deadline.take().unwrap_or_else(Instant::now),
            shard_id: Some(Arc::clone(&self.shard_id)),
            done: None,
        });
        self.buf.clear();
        self.count = 0;
        self.opened = None;
    }

    /// Sends what is ready when no write of this shard is in flight, unless
    /// the linger or the shard's pacing says to wait (then a timer pumps).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.inflight > 0 || self.pacing_armed {
            return;
        }
        let now = Instant::now();
        if let Some(opened) = self.opened
            && self.ready.is_empty()
            && !self.immediate
            && !self.limits.linger.is_zero()
            && now < opened + self.limits.linger
        {
            if !self.linger_armed {
                self.linger_armed = true;
                ctx.run_later(opened + self.limits.linger - now, |act, ctx| {
                    act.linger_armed = false;
                    act.pump(ctx);
                });
            }
            return;
        }
        self.seal();
        // One record per flush: a retried record is never overtaken by a
        // later one of its shard (a partial failure cannot reorder a
        // courier's positions); what waits behind it goes in the next flush.
        let Some(len) = self.ready.front().map(|w| w.record.billed_len()) else {
            return;
        };
        if let Some(pacer) = self.pacer.as_mut() {
            let wait = pacer.wait(len, now);
            if !wait.is_zero() {
                self.metrics.pacing_delay.observe(wait.as_secs_f64());
                self.pace(wait, ctx);
                return;
            }
            pacer.take(len);
        }
        let Some(mut write) = self.ready.pop_front() else {
            return;
        };
        write.done = Some(DoneSignal::new(ctx.address().recipient()));
        self.inflight = 1;
        self.metrics.batcher_inflight_records.inc();
        // A stopped writer drops the record and with it the acks: the
        // requests then answer 503, never 202. The slot holds the writer
        // started last (a dead one is replaced by the watchdog).
        self.writer.load().do_send(write);
    }

    fn pace(&mut self, after: Duration, ctx: &mut Context<Self>) {
        self.pacing_armed = true;
        ctx.run_later(after, |act, ctx| {
            act.pacing_armed = false;
            act.pump(ctx);
        });
    }

    fn push_piece(&mut self, piece: Piece<'_>) {
        let Piece {
            datums,
            count,
            first_key,
            ack,
            permit,
            deadline,
        } = piece;
        if self.count > 0
            && (self.buf.len() + datums.len() > self.limits.max_bytes
                || self.count + count > self.limits.max_positions)
        {
            self.seal();
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
        if self.buf.len() >= self.limits.max_bytes || self.count >= self.limits.max_positions {
            self.seal();
        }
    }
}

impl Actor for Batcher {
    type Context = Context<Self>;
}

impl Handler<WriteDone> for Batcher {
    type Result = ();

    fn handle(&mut self, _: WriteDone, ctx: &mut Self::Context) {
        self.inflight = self.inflight.saturating_sub(1);
        self.metrics.batcher_inflight_records.dec();
        self.pump(ctx);
    }
}

impl Handler<Append> for Batcher {
    type Result = ();

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) {
        let Append {
            datums,
            ends,
            first_key,
            ack,
            mut permit,
            deadline,
        } = msg;
        if datums.len() <= self.limits.max_bytes && ends.len() <= self.limits.max_positions {
            let piece = Piece {
                datums: &datums,
                count: ends.len(),
                first_key: &first_key,
                ack,
                permit,
                deadline,
            };
            self.push_piece(piece);
            self.pump(ctx);
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
                self.push_piece(piece);
                start = i + 1;
                piece_start = end;
            }
        }
        self.pump(ctx);
    }
}

impl Handler<FlushNow> for Batcher {
    type Result = ();

    fn handle(&mut self, _: FlushNow, ctx: &mut Self::Context) {
        self.immediate = true;
        self.pump(ctx);
    }
}

impl Handler<Retire> for Batcher {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        self.immediate = true;
        self.pump(ctx);
        // Requests that routed with the old shard map may still arrive for a
        // short while; after that nothing addresses this batcher.
        ctx.run_later(Duration::from_secs(60), |_, ctx| ctx.stop());
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
