//! The Avro schema of a position and the stream record format.
//!
//! One stream record (a Kinesis record, or a record of the local stream) is a
//! complete, self-contained Avro object container file holding one block of
//! positions, so any standard Avro reader decodes it. The writer schema in the
//! header is `schema/courier_position.avsc` without its `doc` attributes.
//!
//! Encoding is on the ingestion hot path, so datums are written by hand here
//! (the schema is fixed); tests check every byte against the `apache-avro`
//! reader. Decoding uses `apache-avro`, with schema resolution, so data written
//! with an older schema version is read by the current reader.

use std::io::Write as _;
use std::str::FromStr;
use std::sync::LazyLock;

use apache_avro::Schema;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::position::{FieldError, Position, TimeRules, UncheckedPosition};

/// The current schema (version 2), as committed in `schema/courier_position.avsc`.
pub const SCHEMA_JSON: &str = include_str!("../schema/courier_position.avsc");

/// Schema version 1, kept so tests prove the current reader reads old data.
pub const SCHEMA_V1_JSON: &str = include_str!("../schema/courier_position.v1.avsc");

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    // The schema is compiled into the binary and covered by tests; a failure
    // here is a build defect, not an input error.
    Schema::parse_str(SCHEMA_JSON).expect("schema/courier_position.avsc is a valid Avro schema")
});

static WRITER_SCHEMA_JSON: LazyLock<String> = LazyLock::new(|| {
    let mut value: serde_json::Value =
        serde_json::from_str(SCHEMA_JSON).expect("schema/courier_position.avsc is valid JSON");
    strip_docs(&mut value);
    value.to_string()
});

fn strip_docs(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("doc");
            map.values_mut().for_each(strip_docs);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_docs),
        _ => {}
    }
}

/// The parsed current schema.
pub fn schema() -> &'static Schema {
    &SCHEMA
}

/// The schema written into every record header: the current schema, compact,
/// without `doc` attributes (they would cost bytes in every record).
pub fn writer_schema_json() -> &'static str {
    &WRITER_SCHEMA_JSON
}

/// Errors of decoding a stream record.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The record is not a readable Avro object container file.
    #[error("record is not a readable Avro container: {0}")]
    Container(#[source] Box<apache_avro::Error>),
    /// The record is one of our containers (our writer schema) but damaged or
    /// hostile: a count or length that its bytes cannot hold, a block that
    /// inflates past [`DecodeLimits::max_block_bytes`], a wrong sync marker.
    #[error("record is a damaged Avro container: {0}")]
    Damaged(String),
    /// A datum could not be read or mapped to a position.
    #[error("datum {index} cannot be decoded: {source}")]
    Datum {
        /// Position of the datum inside the record.
        index: usize,
        /// What went wrong.
        #[source]
        source: Box<apache_avro::Error>,
    },
}

/// The block compression codec of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// No compression.
    Null,
    /// Snappy, with the CRC32 trailer the Avro specification requires.
    Snappy,
    /// Zstandard, level 1 (fast; the size is within a few percent of level 3).
    #[default]
    Zstandard,
}

impl Codec {
    /// The name written into the `avro.codec` header.
    pub fn avro_name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Snappy => "snappy",
            Self::Zstandard => "zstandard",
        }
    }
}

impl FromStr for Codec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "null" | "none" => Ok(Self::Null),
            "snappy" => Ok(Self::Snappy),
            "zstandard" | "zstd" => Ok(Self::Zstandard),
            other => Err(format!(
                "unknown codec {other:?}: use null, snappy or zstandard"
            )),
        }
    }
}

// --- datum encoding -------------------------------------------------------

#[inline]
fn put_long(out: &mut Vec<u8>, value: i64) {
    let mut z = ((value << 1) ^ (value >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
fn put_str(out: &mut Vec<u8>, value: &str) {
    put_long(out, value.len() as i64);
    out.extend_from_slice(value.as_bytes());
}

#[inline]
fn put_double(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(&value.to_le_bytes());
}

#[inline]
fn put_opt_double(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(2); // union branch 1, zigzag encoded
            put_double(out, v);
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn to_micros(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_micros()
}

/// Appends the Avro binary encoding of one position (current schema) to `out`.
pub fn encode_datum(p: &Position, out: &mut Vec<u8>) {
    let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let event_id = p.event_id.as_uuid().hyphenated().encode_lower(&mut uuid);
    put_str(out, event_id);
    put_str(out, p.courier_id.as_str());
    put_double(out, p.lat.get());
    put_double(out, p.lon.get());
    put_long(out, to_micros(p.recorded_at));
    put_long(out, to_micros(p.received_at));
    put_opt_double(out, p.accuracy_m.map(|v| v.get()));
    put_opt_double(out, p.speed_mps.map(|v| v.get()));
    put_opt_double(out, p.heading_deg.map(|v| v.get()));
    match &p.order_id {
        None => out.push(0),
        Some(order) => {
            out.push(2);
            put_str(out, order.as_str());
        }
    }
}

// --- container (record) encoding -----------------------------------------

/// Writes Avro object container files of one block each: the stream record
/// format. The header (magic, schema, codec, sync marker) is computed once.
#[derive(Debug, Clone)]
pub struct RecordEncoder {
    codec: Codec,
    header: Vec<u8>,
    sync: [u8; 16],
    scratch: Vec<u8>,
}

impl RecordEncoder {
    /// An encoder for `codec` with a random sync marker.
    pub fn new(codec: Codec) -> Self {
        let sync: [u8; 16] = rand::random();
        let mut header = Vec::with_capacity(1024);
        header.extend_from_slice(b"Obj\x01");
        put_long(&mut header, 2); // metadata map: one block of two entries
        put_str(&mut header, "avro.schema");
        put_str(&mut header, writer_schema_json());
        put_str(&mut header, "avro.codec");
        put_str(&mut header, codec.avro_name());
        put_long(&mut header, 0); // end of map
        header.extend_from_slice(&sync);
        Self {
            codec,
            header,
            sync,
            scratch: Vec::new(),
        }
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Bytes the header adds to every record.
    pub fn header_len(&self) -> usize {
        self.header.len()
    }

    /// Builds one record from `count` concatenated datums.
    pub fn encode(&mut self, datums: &[u8], count: usize) -> Vec<u8> {
        self.scratch.clear();
        let payload: &[u8] = match self.codec {
            Codec::Null => datums,
            Codec::Snappy => {
                let max = snap::raw::max_compress_len(datums.len());
                self.scratch.resize(max + 4, 0);
                let n = snap::raw::Encoder::new()
                    .compress(datums, &mut self.scratch)
                    .unwrap_or_else(|_| unreachable!("buffer sized by max_compress_len"));
                let crc = crc32fast::hash(datums);
                self.scratch.truncate(n);
                self.scratch.extend_from_slice(&crc.to_be_bytes());
                &self.scratch
            }
            Codec::Zstandard => {
                // One compression context per thread, reused for every record
                // (creating one per record showed in the ingest profile).
                thread_local! {
                    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                        const { std::cell::RefCell::new(None) };
                }
                self.scratch
                    .reserve(zstd::zstd_safe::compress_bound(datums.len()));
                let bulk = COMPRESSOR.with_borrow_mut(|compressor| {
                    if compressor.is_none() {
                        *compressor = zstd::bulk::Compressor::new(1).ok();
                    }
                    compressor
                        .as_mut()
                        .map(|c| c.compress_to_buffer(datums, &mut self.scratch))
                });
                if !matches!(bulk, Some(Ok(_))) {
                    // No context (out of memory): a one-off stream encoder.
                    self.scratch.clear();
                    let mut encoder = zstd::stream::Encoder::new(&mut self.scratch, 1)
                        .unwrap_or_else(|e| unreachable!("zstd encoder: {e}"));
                    encoder
                        .write_all(datums)
                        .and_then(|_| encoder.finish().map(|_| ()))
                        .unwrap_or_else(|e| unreachable!("zstd into a Vec: {e}"));
                }
                &self.scratch
            }
        };
        let mut out = Vec::with_capacity(self.header.len() + payload.len() + 40);
        out.extend_from_slice(&self.header);
        put_long(&mut out, count as i64);
        put_long(&mut out, payload.len() as i64);
        out.extend_from_slice(payload);
        out.extend_from_slice(&self.sync);
        out
    }
}

// --- decoding ------------------------------------------------------------

/// A position as stored in Avro, before validation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename = "CourierPosition")]
pub struct AvroPosition {
    /// UUID text.
    pub event_id: String,
    /// Courier id.
    pub courier_id: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Microseconds since the epoch.
    pub recorded_at: i64,
    /// Microseconds since the epoch.
    pub received_at: i64,
    /// Optional accuracy.
    pub accuracy_m: Option<f64>,
    /// Optional speed.
    pub speed_mps: Option<f64>,
    /// Optional heading.
    pub heading_deg: Option<f64>,
    /// Optional order (schema version 2).
    #[serde(default)]
    pub order_id: Option<String>,
}

impl AvroPosition {
    /// The datum borrowing this position's strings.
    pub fn as_datum(&self) -> AvroDatum<'_> {
        AvroDatum {
            event_id: &self.event_id,
            courier_id: &self.courier_id,
            lat: self.lat,
            lon: self.lon,
            recorded_at: self.recorded_at,
            received_at: self.received_at,
            accuracy_m: self.accuracy_m,
            speed_mps: self.speed_mps,
            heading_deg: self.heading_deg,
            order_id: self.order_id.as_deref(),
        }
    }

    /// Validates the stored position with the same rules the ingestion
    /// service applies (the `recorded_at` window measured from `received_at`).
    pub fn validate(&self, rules: &TimeRules) -> Result<Position, Vec<FieldError>> {
        self.as_datum().validate(rules)
    }
}

/// A position as stored in Avro, before validation, its strings borrowed
/// from the decoded block ([`visit_record`]): the decoder allocates nothing
/// per datum, and validation copies only what a [`Position`] keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AvroDatum<'a> {
    /// UUID text.
    pub event_id: &'a str,
    /// Courier id.
    pub courier_id: &'a str,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Microseconds since the epoch.
    pub recorded_at: i64,
    /// Microseconds since the epoch.
    pub received_at: i64,
    /// Optional accuracy.
    pub accuracy_m: Option<f64>,
    /// Optional speed.
    pub speed_mps: Option<f64>,
    /// Optional heading.
    pub heading_deg: Option<f64>,
    /// Optional order (schema version 2).
    pub order_id: Option<&'a str>,
}

impl AvroDatum<'_> {
    /// Validates the stored position with the same rules the ingestion
    /// service applies (the `recorded_at` window measured from `received_at`).
    pub fn validate(&self, rules: &TimeRules) -> Result<Position, Vec<FieldError>> {
        let received_at = DateTime::from_timestamp_micros(self.received_at).ok_or_else(|| {
            vec![FieldError::new(
                "received_at",
                "is out of the representable range",
            )]
        })?;
        let recorded_at = DateTime::from_timestamp_micros(self.recorded_at).ok_or_else(|| {
            vec![FieldError::new(
                "recorded_at",
                "is out of the representable range",
            )]
        })?;
        let unchecked = UncheckedPosition {
            event_id: Some(self.event_id),
            courier_id: Some(self.courier_id),
            lat: Some(self.lat),
            lon: Some(self.lon),
            recorded_at: Some(recorded_at),
            accuracy_m: self.accuracy_m,
            speed_mps: self.speed_mps,
            heading_deg: self.heading_deg,
            order_id: self.order_id,
        };
        Position::try_new(&unchecked, received_at, rules)
    }
}

impl From<AvroDatum<'_>> for AvroPosition {
    fn from(d: AvroDatum<'_>) -> Self {
        Self {
            event_id: d.event_id.to_owned(),
            courier_id: d.courier_id.to_owned(),
            lat: d.lat,
            lon: d.lon,
            recorded_at: d.recorded_at,
            received_at: d.received_at,
            accuracy_m: d.accuracy_m,
            speed_mps: d.speed_mps,
            heading_deg: d.heading_deg,
            order_id: d.order_id.map(str::to_owned),
        }
    }
}

/// Bounds on what decoding one stream record may cost, whatever its bytes
/// say: every count and length read from a record is checked against these
/// and against the bytes that are really there before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest decompressed size of one block (default 16 MiB: a Kinesis
    /// record holds at most 1 MiB, and positions compress about 1.6 : 1).
    pub max_block_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_block_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The fewest bytes one datum can take: two strings of at least a length
/// byte, two doubles, two longs of at least one byte, three union branches.
pub const MIN_DATUM_BYTES: usize = 1 + 1 + 8 + 8 + 1 + 1 + 3;

/// Decodes every datum of one stream record with the default
/// [`DecodeLimits`]; see [`decode_record_with`].
pub fn decode_record(record: &[u8]) -> Result<Vec<Result<AvroPosition, AvroError>>, AvroError> {
    decode_record_with(record, &DecodeLimits::default())
}

/// Decodes every datum of one stream record, resolving the writer schema
/// against the current schema. A broken container fails as a whole (with the
/// reason); a datum that cannot be mapped fails alone.
///
/// Records written by our own encoder (the current or the previous schema,
/// any of our codecs) take a hand-written decoder that bounds every count and
/// length before use (datums per block against the block's bytes, the
/// decompressed size against `limits`, varints to ten bytes); one of ours
/// that is damaged fails with [`AvroError::Damaged`]. Any other record goes
/// through `apache-avro`'s generic reader with full schema resolution, its
/// allocations capped at the same size, and stops at its first bad datum.
pub fn decode_record_with(
    record: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<Result<AvroPosition, AvroError>>, AvroError> {
    let mut out = Vec::new();
    visit_record(record, limits, |_, datum| {
        out.push(datum.map(AvroPosition::from));
    })?;
    Ok(out)
}

/// Decodes every datum of one stream record like [`decode_record_with`], but
/// hands each one to `visit` (with its index) as it is read, its strings
/// borrowed from the decoded block: nothing is allocated per datum on the
/// fast path. Returns how many datums were visited.
///
/// A record that fails as a whole may have visited some datums before the
/// damage was found: a caller that must not act on a damaged record's datums
/// collects what it visits and acts once this returns `Ok`.
pub fn visit_record(
    record: &[u8],
    limits: &DecodeLimits,
    mut visit: impl FnMut(usize, Result<AvroDatum<'_>, AvroError>),
) -> Result<usize, AvroError> {
    match fast::visit(record, limits, |index, datum| visit(index, Ok(datum))) {
        Ok(count) => Ok(count),
        Err(fast::Reject::Damaged(why)) => Err(AvroError::Damaged(why)),
        Err(fast::Reject::NotOurs) => {
            let datums = decode_record_generic(record)?;
            let count = datums.len();
            for (index, datum) in datums.into_iter().enumerate() {
                match datum {
                    Ok(p) => visit(index, Ok(p.as_datum())),
                    Err(e) => visit(index, Err(e)),
                }
            }
            Ok(count)
        }
    }
}

/// The generic reader's allocation cap (apache-avro keeps one per process;
/// the first setter wins).
fn cap_generic_allocations() {
    static CAP: LazyLock<usize> = LazyLock::new(|| {
        apache_avro::util::max_allocation_bytes(DecodeLimits::default().max_block_bytes * 2)
    });
    LazyLock::force(&CAP);
}

/// Decodes one record with `apache-avro`'s generic reader only (no fast
/// path). A datum the reader cannot read fails the whole record (the bytes
/// after it are not trustworthy, and a hostile datum count must not make us
/// collect errors forever); a datum read but not mappable to a position
/// fails alone.
pub fn decode_record_generic(
    record: &[u8],
) -> Result<Vec<Result<AvroPosition, AvroError>>, AvroError> {
    cap_generic_allocations();
    let reader = apache_avro::Reader::builder(record)
        .reader_schema(schema())
        .build()
        .map_err(|e| AvroError::Container(Box::new(e)))?;
    let mut out = Vec::new();
    for (index, value) in reader.enumerate() {
        let value = value.map_err(|e| AvroError::Container(Box::new(e)))?;
        out.push(
            apache_avro::from_value::<AvroPosition>(&value).map_err(|source| AvroError::Datum {
                index,
                source: Box::new(source),
            }),
        );
    }
    Ok(out)
}

mod fast {
    use std::sync::LazyLock;

    use std::borrow::Cow;
    use std::io::Read as _;

    use super::{
        AvroDatum, DecodeLimits, MIN_DATUM_BYTES, SCHEMA_V1_JSON, strip_docs, writer_schema_json,
    };

    /// The header schema text of the previous version, as our encoder wrote it.
    pub(super) static V1_WRITER_SCHEMA: LazyLock<String> = LazyLock::new(|| {
        let mut value: serde_json::Value = serde_json::from_str(SCHEMA_V1_JSON)
            .expect("schema/courier_position.v1.avsc is valid JSON");
        strip_docs(&mut value);
        value.to_string()
    });

    struct Cursor<'a> {
        data: &'a [u8],
        at: usize,
    }

    impl<'a> Cursor<'a> {
        fn new(data: &'a [u8]) -> Self {
            Self { data, at: 0 }
        }

        fn done(&self) -> bool {
            self.at >= self.data.len()
        }

        fn remaining(&self) -> usize {
            self.data.len().saturating_sub(self.at)
        }

        fn long(&mut self) -> Option<i64> {
            let mut value: u64 = 0;
            for shift in (0..64).step_by(7) {
                let byte = *self.data.get(self.at)?;
                self.at += 1;
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
                }
            }
            None
        }

        fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
            let end = self.at.checked_add(n)?;
            let out = self.data.get(self.at..end)?;
            self.at = end;
            Some(out)
        }

        fn sized(&mut self) -> Option<&'a [u8]> {
            let n = usize::try_from(self.long()?).ok()?;
            self.bytes(n)
        }

        fn str(&mut self) -> Option<&'a str> {
            std::str::from_utf8(self.sized()?).ok()
        }

        fn double(&mut self) -> Option<f64> {
            let raw: [u8; 8] = self.bytes(8)?.try_into().ok()?;
            Some(f64::from_le_bytes(raw))
        }

        fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
            match self.long()? {
                0 => Some(None),
                1 => read(self).map(Some),
                _ => None,
            }
        }
    }

    /// Why the fast decoder did not produce positions.
    #[derive(Debug)]
    pub(super) enum Reject {
        /// Not one of our containers (another writer schema or codec, or no
        /// container at all): the generic reader decides.
        NotOurs,
        /// One of ours, damaged or hostile, with the reason.
        Damaged(String),
    }

    /// Hands each position of one of our containers to `visit`, in order;
    /// returns how many. Every count and length is checked against the bytes
    /// that are there (and the decompressed size against `limits`) before it
    /// is used.
    pub(super) fn visit(
        record: &[u8],
        limits: &DecodeLimits,
        mut visit: impl FnMut(usize, AvroDatum<'_>),
    ) -> Result<usize, Reject> {
        let mut c = Cursor::new(record);
        if c.bytes(4) != Some(b"Obj\x01".as_slice()) {
            return Err(Reject::NotOurs);
        }
        let (schema, codec) = header(&mut c).ok_or(Reject::NotOurs)?;
        let has_order_id = match schema {
            s if s == writer_schema_json().as_bytes() => true,
            s if s == V1_WRITER_SCHEMA.as_bytes() => false,
            _ => return Err(Reject::NotOurs),
        };
        let codec = codec.unwrap_or(b"null");
        if !matches!(codec, b"null" | b"snappy" | b"zstandard") {
            return Err(Reject::NotOurs);
        }
        let damaged = |why: String| Reject::Damaged(why);
        let sync = c
            .bytes(16)
            .ok_or_else(|| damaged("the header ends before its sync marker".into()))?;
        let mut visited = 0usize;
        let mut block = 0usize;
        while !c.done() {
            let count = c
                .long()
                .ok_or_else(|| damaged(format!("block {block}: truncated datum count")))?;
            let size = c
                .long()
                .ok_or_else(|| damaged(format!("block {block}: truncated byte size")))?;
            let (Ok(count), Ok(size)) = (usize::try_from(count), usize::try_from(size)) else {
                return Err(damaged(format!(
                    "block {block}: negative datum count {count} or byte size {size}"
                )));
            };
            let payload = c.bytes(size).ok_or_else(|| {
                damaged(format!(
                    "block {block}: declares {size} bytes, only {} remain",
                    c.remaining()
                ))
            })?;
            if c.bytes(16) != Some(sync) {
                return Err(damaged(format!(
                    "block {block}: sync marker missing or wrong (truncated or spliced record)"
                )));
            }
            let datums = inflate(codec, payload, limits)
                .map_err(|why| damaged(format!("block {block}: {why}")))?;
            // Bound the count by the bytes before reserving anything.
            if count > datums.len() / MIN_DATUM_BYTES {
                return Err(damaged(format!(
                    "block {block}: declares {count} datums in {} bytes (at most {} fit)",
                    datums.len(),
                    datums.len() / MIN_DATUM_BYTES
                )));
            }
            let mut d = Cursor::new(&datums);
            for index in 0..count {
                let position = datum(&mut d, has_order_id).ok_or_else(|| {
                    damaged(format!(
                        "block {block}: datum {index} is truncated or malformed"
                    ))
                })?;
                visit(visited, position);
                visited += 1;
            }
            if !d.done() {
                return Err(damaged(format!(
                    "block {block}: {} bytes after its {count} datums",
                    d.remaining()
                )));
            }
            block += 1;
        }
        Ok(visited)
    }

    /// The header's metadata map: the writer schema and the codec.
    fn header<'a>(c: &mut Cursor<'a>) -> Option<(&'a [u8], Option<&'a [u8]>)> {
        let (mut schema, mut codec) = (None, None);
        loop {
            let mut count = c.long()?;
            if count == 0 {
                break;
            }
            if count < 0 {
                count = count.checked_neg()?;
                c.long()?; // block size in bytes
            }
            // Each entry takes at least two bytes: a count beyond that fails
            // on the bytes, never on an allocation.
            for _ in 0..count {
                let key = c.sized()?;
                let value = c.sized()?;
                match key {
                    b"avro.schema" => schema = Some(value),
                    b"avro.codec" => codec = Some(value),
                    _ => {}
                }
            }
        }
        Some((schema?, codec))
    }

    /// A block's datums, decompressed, never larger than the limit.
    fn inflate<'a>(
        codec: &[u8],
        payload: &'a [u8],
        limits: &DecodeLimits,
    ) -> Result<Cow<'a, [u8]>, String> {
        let max = limits.max_block_bytes;
        match codec {
            b"snappy" => {
                let split = payload
                    .len()
                    .checked_sub(4)
                    .ok_or("snappy block shorter than its checksum")?;
                let (compressed, crc) = payload.split_at(split);
                let len =
                    snap::raw::decompress_len(compressed).map_err(|e| format!("snappy: {e}"))?;
                if len > max {
                    return Err(format!(
                        "snappy block declares {len} bytes, over the {max}-byte limit"
                    ));
                }
                let raw = snap::raw::Decoder::new()
                    .decompress_vec(compressed)
                    .map_err(|e| format!("snappy: {e}"))?;
                if crc32fast::hash(&raw).to_be_bytes() != crc {
                    return Err("snappy block fails its CRC-32".into());
                }
                Ok(raw.into())
            }
            b"zstandard" => {
                // One decompression context per thread, reused for every
                // block: creating one (and its 128 KiB input buffer) per
                // record cost more than a small record's decompression.
                thread_local! {
                    static DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
                        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
                }
                let mut raw = Vec::with_capacity(payload.len().saturating_mul(4).min(max));
                DCTX.with_borrow_mut(|context| {
                    // `with_context` starts a new session on the context.
                    zstd::stream::read::Decoder::with_context(payload, context)
                        .take(max as u64 + 1)
                        .read_to_end(&mut raw)
                })
                .map_err(|e| format!("zstd: {e}"))?;
                if raw.len() > max {
                    return Err(format!("zstd block inflates past the {max}-byte limit"));
                }
                Ok(raw.into())
            }
            _ => Ok(payload.into()),
        }
    }

    /// One datum of our schema (with or without `order_id`).
    fn datum<'a>(d: &mut Cursor<'a>, has_order_id: bool) -> Option<AvroDatum<'a>> {
        Some(AvroDatum {
            event_id: d.str()?,
            courier_id: d.str()?,
            lat: d.double()?,
            lon: d.double()?,
            recorded_at: d.long()?,
            received_at: d.long()?,
            accuracy_m: d.optional(Cursor::double)?,
            speed_mps: d.optional(Cursor::double)?,
            heading_deg: d.optional(Cursor::double)?,
            order_id: if has_order_id {
                d.optional(Cursor::str)?
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::UncheckedPosition;
    use apache_avro::types::Value;
    use chrono::TimeDelta;
    use std::io::Read as _;

    fn sample(i: usize, full: bool) -> Position {
        let now = DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap_or_default();
        let courier = format!("courier-{i}");
        let order = format!("order-{i}");
        let input = UncheckedPosition {
            event_id: None,
            courier_id: Some(&courier),
            lat: Some(-23.5 + i as f64 * 1e-4),
            lon: Some(-46.6 - i as f64 * 1e-4),
            recorded_at: Some(now - TimeDelta::milliseconds(1500)),
            accuracy_m: full.then_some(4.5),
            speed_mps: full.then_some(8.25),
            heading_deg: full.then_some(359.5),
            order_id: full.then_some(order.as_str()),
        };
        Position::try_new(&input, now, &TimeRules::default()).expect("valid sample")
    }

    fn roundtrip(codec: Codec) {
        let positions: Vec<_> = (0..50).map(|i| sample(i, i % 2 == 0)).collect();
        let mut datums = Vec::new();
        for p in &positions {
            encode_datum(p, &mut datums);
        }
        let record = RecordEncoder::new(codec).encode(&datums, positions.len());
        let decoded: Vec<_> = decode_record(&record)
            .expect("container")
            .into_iter()
            .map(|d| {
                d.expect("datum")
                    .validate(&TimeRules::default())
                    .expect("valid")
            })
            .collect();
        assert_eq!(decoded, positions);
    }

    /// The fast path alone, its datums copied out.
    fn fast_decode(record: &[u8]) -> Result<Vec<AvroPosition>, fast::Reject> {
        let mut out = Vec::new();
        fast::visit(record, &DecodeLimits::default(), |index, datum| {
            assert_eq!(index, out.len(), "datums are visited in order");
            out.push(AvroPosition::from(datum));
        })?;
        Ok(out)
    }

    #[test]
    fn our_records_take_the_fast_path_and_decode_like_the_generic_reader() {
        for codec in [Codec::Null, Codec::Snappy, Codec::Zstandard] {
            let positions: Vec<_> = (0..40).map(|i| sample(i, i % 3 == 0)).collect();
            let mut datums = Vec::new();
            for p in &positions {
                encode_datum(p, &mut datums);
            }
            let record = RecordEncoder::new(codec).encode(&datums, positions.len());
            let fast = fast_decode(&record).expect("our own record takes the fast path");
            let generic: Vec<AvroPosition> = decode_record_generic(&record)
                .expect("container")
                .into_iter()
                .map(|d| d.expect("datum"))
                .collect();
            assert_eq!(fast, generic, "{codec:?}");
            // Damage anywhere makes the fast path refuse the record.
            for cut in [5, record.len() / 2, record.len() - 1] {
                assert!(fast_decode(&record[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn v1_records_of_our_previous_encoder_take_the_fast_path() {
        let p = sample(1, false);
        let mut datum = Vec::new();
        encode_datum(&p, &mut datum);
        datum.pop(); // v1 has no order_id: drop its (null) union branch
        let mut record = b"Obj\x01".to_vec();
        put_long(&mut record, 2);
        put_str(&mut record, "avro.schema");
        put_str(&mut record, &fast::V1_WRITER_SCHEMA);
        put_str(&mut record, "avro.codec");
        put_str(&mut record, "null");
        put_long(&mut record, 0);
        record.extend_from_slice(&[7u8; 16]);
        put_long(&mut record, 1);
        put_long(&mut record, datum.len() as i64);
        record.extend_from_slice(&datum);
        record.extend_from_slice(&[7u8; 16]);
        let fast = fast_decode(&record).expect("fast path");
        let generic = decode_record_generic(&record).expect("container");
        assert_eq!(&fast[0], generic[0].as_ref().expect("datum"));
        assert_eq!(fast[0].order_id, None);
        assert_eq!(fast[0].validate(&TimeRules::default()).expect("valid"), p);
    }

    #[test]
    fn records_round_trip_with_every_codec() {
        roundtrip(Codec::Null);
        roundtrip(Codec::Snappy);
        roundtrip(Codec::Zstandard);
    }

    #[test]
    fn a_standard_reader_sees_the_logical_types() {
        let mut datums = Vec::new();
        let p = sample(1, true);
        encode_datum(&p, &mut datums);
        let record = RecordEncoder::new(Codec::Zstandard).encode(&datums, 1);
        let reader = apache_avro::Reader::new(&record[..]).expect("header");
        assert_eq!(reader.writer_schema(), schema());
        let values: Vec<_> = reader.map(|v| v.expect("datum")).collect();
        let Value::Record(fields) = &values[0] else {
            panic!("not a record: {:?}", values[0]);
        };
        assert_eq!(fields[0].1, Value::Uuid(*p.event_id.as_uuid()));
        assert_eq!(
            fields[4].1,
            Value::TimestampMicros(p.recorded_at.timestamp_micros())
        );
    }

    #[test]
    fn data_written_with_schema_v1_is_read_by_the_current_reader() {
        let v1 = Schema::parse_str(SCHEMA_V1_JSON).expect("v1 schema");
        let mut writer = apache_avro::Writer::new(&v1, Vec::new()).expect("writer");
        let mut record = apache_avro::types::Record::new(&v1).expect("record");
        record.put("event_id", Value::Uuid(uuid::Uuid::now_v7()));
        record.put("courier_id", "courier-v1");
        record.put("lat", 1.5);
        record.put("lon", 2.5);
        record.put("recorded_at", Value::TimestampMicros(1_795_000_000_000_000));
        record.put("received_at", Value::TimestampMicros(1_795_000_001_000_000));
        record.put("accuracy_m", Value::Union(1, Box::new(Value::Double(3.0))));
        record.put("speed_mps", Value::Union(0, Box::new(Value::Null)));
        record.put("heading_deg", Value::Union(0, Box::new(Value::Null)));
        writer.append_value(record).expect("append");
        let bytes = writer.into_inner().expect("flush");

        let decoded = decode_record(&bytes).expect("container");
        let position = decoded[0].as_ref().expect("datum");
        assert_eq!(position.courier_id, "courier-v1");
        assert_eq!(position.order_id, None);
        assert_eq!(position.accuracy_m, Some(3.0));
        // The generic path visits the same datum.
        let mut visited = Vec::new();
        let count = visit_record(&bytes, &DecodeLimits::default(), |index, datum| {
            visited.push((index, datum.map(AvroPosition::from).expect("datum")));
        })
        .expect("container");
        assert_eq!(count, 1);
        assert_eq!(visited, vec![(0, position.clone())]);
    }

    #[test]
    fn visiting_a_record_sees_what_decoding_it_returns() {
        for codec in [Codec::Null, Codec::Snappy, Codec::Zstandard] {
            let positions: Vec<_> = (0..25).map(|i| sample(i, i % 2 == 0)).collect();
            let mut datums = Vec::new();
            for p in &positions {
                encode_datum(p, &mut datums);
            }
            let record = RecordEncoder::new(codec).encode(&datums, positions.len());
            let mut valid = Vec::new();
            let count = visit_record(&record, &DecodeLimits::default(), |index, datum| {
                assert_eq!(index, valid.len());
                let datum = datum.expect("datum");
                valid.push(datum.validate(&TimeRules::UNBOUNDED).expect("valid"));
            })
            .expect("our record");
            assert_eq!(count, positions.len(), "{codec:?}");
            assert_eq!(valid, positions, "{codec:?}");
            let cut = &record[..record.len() - 1];
            assert!(
                visit_record(cut, &DecodeLimits::default(), |_, _| {}).is_err(),
                "{codec:?}: a damaged record fails as a whole"
            );
        }
    }

    #[test]
    fn the_writer_schema_drops_docs_only() {
        let compact = Schema::parse_str(writer_schema_json()).expect("compact schema parses");
        assert_eq!(&compact, schema());
        assert!(!writer_schema_json().contains("\"doc\""));
    }

    #[test]
    fn a_broken_record_is_a_container_error() {
        assert!(matches!(
            decode_record(b"not avro at all"),
            Err(AvroError::Container(_))
        ));
    }

    /// One of our containers with `codec`, whose single block declares
    /// `count` datums and holds `payload` (already compressed).
    fn container(codec: Codec, count: i64, payload: &[u8]) -> Vec<u8> {
        let encoder = RecordEncoder::new(codec);
        let mut record = encoder.header.clone();
        put_long(&mut record, count);
        put_long(&mut record, payload.len() as i64);
        record.extend_from_slice(payload);
        record.extend_from_slice(&encoder.sync);
        record
    }

    fn damaged(record: &[u8]) -> String {
        match decode_record(record) {
            Err(AvroError::Damaged(why)) => why,
            other => panic!("expected a damaged-container error, got {other:?}"),
        }
    }

    #[test]
    fn a_block_declaring_more_datums_than_its_bytes_hold_is_refused_before_any_allocation() {
        let mut datums = Vec::new();
        encode_datum(&sample(1, true), &mut datums);
        // 2^40 datums: reserving room for them would ask for 152 TiB.
        let why = damaged(&container(Codec::Null, 1 << 40, &datums));
        assert!(why.contains("declares 1099511627776 datums in"), "{why}");
        let why = damaged(&container(Codec::Null, -3, &datums));
        assert!(why.contains("negative datum count"), "{why}");
    }

    /// The fuzzers' crash inputs (fuzz/regressions/record_decoder), as tests.
    #[test]
    fn the_fuzzers_crash_inputs_are_refused_as_damaged() {
        let found =
            include_bytes!("../../../fuzz/regressions/record_decoder/datum-count-2pow40.avro");
        let why = damaged(found);
        assert!(why.contains("declares 1099511627776 datums"), "{why}");
        // Our own encoder around 844 bytes of datums with a count near 2^64,
        // snappy: once a `capacity overflow` panic in the same reserve.
        let count = 0x7276_6116_0401_6a62_i64;
        let mut encoder = RecordEncoder::new(Codec::Snappy);
        let mut record = encoder.encode(&[7u8; 844], 1);
        let at = encoder.header_len();
        assert_eq!(record[at], 0x02, "a count of one, one zigzag byte");
        let mut count_bytes = Vec::new();
        put_long(&mut count_bytes, count);
        record.splice(at..=at, count_bytes);
        let why = damaged(&record);
        assert!(why.contains(&format!("declares {count} datums")), "{why}");
    }

    #[test]
    fn a_zstd_block_that_inflates_without_bound_is_refused_at_the_limit() {
        // 64 MiB of zeros compress to a few KiB.
        let bomb =
            zstd::stream::encode_all(std::io::repeat(0).take(64 << 20), 19).expect("compress");
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let record = container(Codec::Zstandard, 1, &bomb);
        let why = damaged(&record);
        assert!(
            why.contains("inflates past the 16777216-byte limit"),
            "{why}"
        );
        let small = DecodeLimits {
            max_block_bytes: 1024,
        };
        assert!(matches!(
            decode_record_with(&record, &small),
            Err(AvroError::Damaged(_))
        ));
    }

    #[test]
    fn a_snappy_block_declaring_a_huge_size_is_refused_before_decompressing() {
        // A snappy block starts with its uncompressed length: 2^31 here.
        let mut payload = vec![0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
        payload.extend_from_slice(&[0, 0, 0, 0]); // the CRC-32
        let why = damaged(&container(Codec::Snappy, 1, &payload));
        assert!(why.contains("over the 16777216-byte limit"), "{why}");
    }

    #[test]
    fn truncated_and_spliced_records_fail_with_their_reason() {
        let positions: Vec<_> = (0..5).map(|i| sample(i, true)).collect();
        let mut datums = Vec::new();
        for p in &positions {
            encode_datum(p, &mut datums);
        }
        let record = RecordEncoder::new(Codec::Null).encode(&datums, positions.len());
        let header = RecordEncoder::new(Codec::Null).header_len();
        for cut in [
            header - 3,
            header + 1,
            header + 40,
            record.len() - 20,
            record.len() - 1,
        ] {
            assert!(
                matches!(decode_record(&record[..cut]), Err(AvroError::Damaged(_))),
                "cut at {cut}"
            );
        }
        // One datum fewer than declared: the block's bytes are left over.
        let why = damaged(&container(Codec::Null, 4, &datums));
        assert!(why.contains("bytes after its 4 datums"), "{why}");
        // One more than there is.
        let why = damaged(&container(Codec::Null, 6, &datums));
        assert!(why.contains("datum 5 is truncated or malformed"), "{why}");
    }

    #[test]
    fn a_foreign_writers_record_with_a_hostile_count_fails_without_exhausting_memory() {
        // Written by apache-avro itself: a schema text other than ours, so
        // the generic reader decodes it.
        let mut writer = apache_avro::Writer::new(schema(), Vec::new()).expect("writer");
        let p = sample(2, true);
        let mut record = apache_avro::types::Record::new(schema()).expect("record");
        record.put("event_id", Value::Uuid(*p.event_id.as_uuid()));
        record.put("courier_id", p.courier_id.as_str());
        record.put("lat", p.lat.get());
        record.put("lon", p.lon.get());
        record.put(
            "recorded_at",
            Value::TimestampMicros(p.recorded_at.timestamp_micros()),
        );
        record.put(
            "received_at",
            Value::TimestampMicros(p.received_at.timestamp_micros()),
        );
        for field in ["accuracy_m", "speed_mps", "heading_deg", "order_id"] {
            record.put(field, Value::Union(0, Box::new(Value::Null)));
        }
        writer.append_value(record).expect("append");
        let bytes = writer.into_inner().expect("flush");
        assert_eq!(decode_record(&bytes).expect("container").len(), 1);

        // The block count (1, one zigzag byte 0x02) follows the header's sync marker.
        let sync = &bytes[bytes.len() - 16..];
        let at = bytes
            .windows(16)
            .position(|w| w == sync)
            .expect("sync after the header")
            + 16;
        assert_eq!(bytes[at], 0x02);
        let mut hostile = bytes[..at].to_vec();
        put_long(&mut hostile, 1 << 40);
        hostile.extend_from_slice(&bytes[at + 1..]);
        assert!(matches!(
            decode_record(&hostile),
            Err(AvroError::Container(_))
        ));
    }

    #[test]
    fn the_minimum_datum_size_is_the_smallest_datum_we_can_encode() {
        // Shortest strings, no optional field: exactly MIN_DATUM_BYTES + the
        // bytes of the two strings (and the order_id branch).
        let mut out = Vec::new();
        put_str(&mut out, "");
        put_str(&mut out, "");
        put_double(&mut out, 0.0);
        put_double(&mut out, 0.0);
        put_long(&mut out, 0);
        put_long(&mut out, 0);
        put_opt_double(&mut out, None);
        put_opt_double(&mut out, None);
        put_opt_double(&mut out, None);
        assert_eq!(out.len(), MIN_DATUM_BYTES);
    }

    #[test]
    fn longs_use_zigzag_varints() {
        for (value, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_long(&mut out, value);
            assert_eq!(out, bytes, "{value}");
        }
    }
}
