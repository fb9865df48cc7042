//! Batcher actors aggregate encoded positions of one shard into stream
//! records. The HTTP workers already parsed, validated and Avro-encoded the
//! positions (that work runs on every core); a batcher only concatenates
//! bytes, counts, and compresses a record when it flushes: at the record's
//! size or count limit, or `linger` after its first position.
//!
//! Every record is addressed with the shard's starting hash key as explicit
//! hash key, so it lands on the shard that owns all of its couriers.

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
    /// Flush this long after the first position.
    pub linger: Duration,
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
    generation: u64,
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
            limits,
            immediate: false,
            count: 0,
            first_key: None,
            acks: Vec::new(),
            permits: Vec::new(),
            deadline: None,
            generation: 0,
            metrics,
        }
    }

    fn flush(&mut self) {
        if self.count == 0 {
            return;
        }
        self.generation += 1;
        let data = self.encoder.encode(&self.buf, self.count);
        self.metrics.records_built.inc();
        self.metrics
            .records_routed
            .with_label_values(&[&*self.shard_id])
            .inc();
        self.metrics.record_positions.observe(self.count as f64);
        self.metrics.record_bytes.observe(data.len() as f64);
        let write = WriteRecord {
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
        };
        self.buf.clear();
        self.count = 0;
        // A stopped writer drops the record and with it the acks: the
        // requests then answer 503, never 202. The slot holds the writer
        // started last (a dead one is replaced by the watchdog).
        self.writer.load().do_send(write);
    }

    fn full(&self) -> bool {
        self.buf.len() >= self.limits.max_bytes || self.count >= self.limits.max_positions
    }

    fn push_piece(&mut self, piece: Piece<'_>, ctx: &mut Context<Self>) {
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
            self.flush();
        }
        if self.count == 0 {
            let generation = self.generation;
            if !self.immediate {
                ctx.run_later(self.limits.linger, move |act, _| {
                    if act.generation == generation {
                        act.flush();
                    }
                });
            }
            self.first_key = Some(first_key.to_owned());
        }
        self.buf.extend_from_slice(datums);
        self.count += count;
        self.acks.push(ack);
        self.permits.push(permit);
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        if self.immediate || self.full() {
            self.flush();
        }
    }
}

impl Actor for Batcher {
    type Context = Context<Self>;
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
            self.push_piece(piece, ctx);
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
                self.push_piece(piece, ctx);
                start = i + 1;
                piece_start = end;
            }
        }
    }
}

impl Handler<FlushNow> for Batcher {
    type Result = ();

    fn handle(&mut self, _: FlushNow, _ctx: &mut Self::Context) {
        self.immediate = true;
        self.flush();
    }
}

impl Handler<Retire> for Batcher {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        self.immediate = true;
        self.flush();
        // Requests that routed with the old shard map may still arrive for a
        // short while; after that nothing addresses this batcher.
        ctx.run_later(Duration::from_secs(60), |_, ctx| ctx.stop());
    }
}
