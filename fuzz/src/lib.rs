//! The fuzz harnesses of the `cargo fuzz` targets in `fuzz_targets/`, and
//! the seed inputs each target writes into its corpus when it starts.
//!
//! Each harness takes arbitrary bytes and drives the public API a service
//! uses on untrusted input. A harness panics only when that API breaks its
//! contract; the code under test panicking, aborting, allocating without
//! bound or hanging is what libFuzzer reports.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Utc};
use courier_model::avro::{
    AvroError, AvroPosition, Codec, DecodeLimits, RecordEncoder, decode_record,
    decode_record_generic, decode_record_with, encode_datum,
};
use courier_model::payload::{Envelope, parse_body};
use courier_model::position::{Position, TimeRules, UncheckedPosition};
use courier_stream::local::{LocalOptions, LocalStream, LocalStreamReader};
use courier_stream::shard_id_for_index;

// --- record_decoder ---------------------------------------------------------

/// Decodes `data` as one stream record, the way the compactor does
/// (`decode_record`: the fast decoder of our own containers, else the generic
/// reader), then validates every datum; again with a 4 KiB decompressed-block
/// cap (`decode_record_with`); and through the generic reader alone.
///
/// Then, so the fuzzer reaches the datums behind a valid header, sync marker
/// and compression: when `data` is `codec: u8, count: u64 LE, datums...`, our
/// own encoder wraps those datums, with that count (any count, also one the
/// datums cannot hold), in a record of that codec, which is decoded the same
/// way.
pub fn record_decoder(data: &[u8]) {
    decode(data);
    if let [codec, rest @ ..] = data
        && let Some((count, datums)) = rest.split_first_chunk::<8>()
    {
        let codec = [Codec::Null, Codec::Snappy, Codec::Zstandard][usize::from(*codec % 3)];
        let count = u64::from_le_bytes(*count) as usize;
        let record = ENCODERS.with_borrow_mut(|encoders| {
            encoders
                .iter_mut()
                .find(|e| e.codec() == codec)
                .expect("an encoder per codec")
                .encode(datums, count)
        });
        decode(&record);
    }
}

thread_local! {
    static ENCODERS: std::cell::RefCell<Vec<RecordEncoder>> = std::cell::RefCell::new(
        [Codec::Null, Codec::Snappy, Codec::Zstandard]
            .into_iter()
            .map(RecordEncoder::new)
            .collect(),
    );
}

/// A decompressed-block cap small enough for a fuzz input to inflate past.
const SMALL_LIMITS: DecodeLimits = DecodeLimits {
    max_block_bytes: 4096,
};

fn decode(record: &[u8]) {
    let rules = TimeRules::default();
    let decoded = decode_record(record);
    if let Ok(datums) = &decoded {
        for datum in datums.iter().flatten() {
            let _ = datum.validate(&rules);
        }
    }
    // A smaller cap may reject more, never decode differently (compared as
    // text: a NaN coordinate is not equal to itself).
    if let Ok(small) = decode_record_with(record, &SMALL_LIMITS) {
        let full = decoded
            .as_ref()
            .expect("a record decoded under a small cap decodes under the default one");
        let ok = |datums: &[Result<AvroPosition, AvroError>]| -> Vec<String> {
            datums
                .iter()
                .map(|d| format!("{:?}", d.as_ref().ok()))
                .collect()
        };
        assert_eq!(ok(&small), ok(full), "the cap changed what was decoded");
    }
    let _ = decode_record_generic(record);
}

// --- local_frame_reader -----------------------------------------------------

/// The frame magic of the local stream (its `local.rs` writes the frame format).
pub const FRAME_MAGIC: &[u8; 4] = b"CPR1";

/// Stream name used under the harness's directory.
const STREAM: &str = "fuzz";

/// What one `local_frame_reader` input asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInput {
    /// Segment files of shard 0: (first sequence number, bytes).
    pub segments: Vec<(u64, Vec<u8>)>,
    /// Also open the stream for writing (crash recovery of the last segment)
    /// and append a record when that succeeds.
    pub recover: bool,
}

/// Input layout: a flags byte, then the segment bytes.
///
/// * bit 0, framed: the rest is a list of chunks `len: u8, payload`, each
///   turned into a frame with the right magic, length and CRC (so the fuzzer
///   reaches the payload parsing behind the CRC); a `len` of 0 ends the list
///   and the bytes after it are appended as they are (a torn or damaged tail).
///   Without it the rest is the segment file byte for byte.
/// * bit 1, two segments: the rest starts with `first: u8, split: u16 LE`;
///   the segment bytes are cut at `split` into a segment starting at sequence
///   1 and one starting at `first + 2`.
/// * bit 2, recover: see [`LocalInput::recover`].
pub fn parse_local_input(data: &[u8]) -> LocalInput {
    let Some((&flags, rest)) = data.split_first() else {
        return LocalInput {
            segments: vec![(1, Vec::new())],
            recover: false,
        };
    };
    let (second, rest) = match rest {
        [first, lo, hi, rest @ ..] if flags & 2 != 0 => (
            Some((
                u64::from(*first) + 2,
                usize::from(u16::from_le_bytes([*lo, *hi])),
            )),
            rest,
        ),
        _ => (None, rest),
    };
    let bytes = if flags & 1 != 0 {
        frames_from_chunks(rest)
    } else {
        rest.to_vec()
    };
    let segments = match second {
        Some((first_seq, split)) => {
            let split = split.min(bytes.len());
            vec![
                (1, bytes[..split].to_vec()),
                (first_seq, bytes[split..].to_vec()),
            ]
        }
        None => vec![(1, bytes)],
    };
    LocalInput {
        segments,
        recover: flags & 4 != 0,
    }
}

/// One frame around `payload`, as the local stream writes it.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of one record frame: sequence, arrival, key length, key, data.
pub fn record_payload(seq: u64, arrival_ms: i64, key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + key.len() + data.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&arrival_ms.to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(data);
    out
}

fn frames_from_chunks(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        if len == 0 {
            out.extend_from_slice(tail);
            break;
        }
        let (payload, tail) = tail.split_at(usize::from(len).min(tail.len()));
        out.extend_from_slice(&frame(payload));
        rest = tail;
    }
    out
}

/// The directory the harness rewrites for every input: one per process,
/// under `TMPDIR` (scripts/fuzz.sh points that at a directory of its own, in
/// memory where it can, and removes it after the run).
fn local_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| std::env::temp_dir().join(format!("courier-fuzz-{}", std::process::id())))
}

/// Writes the input's segments as shard 0 of a one-shard local stream, then
/// reads the shard through the public reader API (a cursor in small bounded
/// batches, and the latest sequence), after the writer's recovery if asked.
pub fn local_frame_reader(data: &[u8]) {
    let input = parse_local_input(data);
    let base = local_base();
    let stream_dir = base.join(STREAM);
    let shard_id = shard_id_for_index(0);
    let shard_dir = stream_dir.join(&shard_id);
    match fs::remove_dir_all(&stream_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("harness: clear {}: {e}", stream_dir.display()),
    }
    fs::create_dir_all(&shard_dir).expect("harness: create the shard directory");
    fs::write(
        stream_dir.join("stream.json"),
        br#"{"format_version":1,"shards":1}"#,
    )
    .expect("harness: write stream.json");
    for (first_seq, bytes) in &input.segments {
        fs::write(shard_dir.join(format!("{first_seq:020}.seg")), bytes)
            .expect("harness: write a segment");
    }

    if input.recover {
        let options = LocalOptions {
            shards: 1,
            ..LocalOptions::default()
        };
        if let Ok(stream) = LocalStream::open(base, STREAM, options) {
            let _ = stream.append(0, &[("fuzz-key", b"fuzz-data".as_slice())]);
        }
    }

    let reader = LocalStreamReader::open(base, STREAM).expect("harness: stream.json is valid");
    let _ = reader.latest_sequence(&shard_id);
    let mut cursor = reader
        .cursor(&shard_id, None)
        .expect("harness: shard 0 exists");
    let mut last = 0u64;
    // Every successful call returns records or ends the loop, and a segment
    // holds fewer frames than bytes: the bound is never reached by a reader
    // that advances.
    for _ in 0..100_000 {
        match cursor.next_batch_limited(3, 64) {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => {
                assert!(batch.len() <= 3, "a batch larger than asked for");
                for record in &batch {
                    assert!(
                        record.sequence_number > last,
                        "sequence {} returned after {last}",
                        record.sequence_number
                    );
                    last = record.sequence_number;
                }
                assert_eq!(cursor.position(), last, "cursor position after a batch");
            }
            Err(_) => break,
        }
    }
}

// --- json_body --------------------------------------------------------------

/// The most positions a body may hold in the harness (the service's default).
pub const MAX_BATCH: usize = 1000;

/// The receive time the harness checks positions against.
pub fn received_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).expect("a representable instant")
}

/// Parses `data` as a `POST /v1/positions` body and checks every position, as
/// the HTTP handler does; every accepted position is then encoded into a
/// stream record and decoded back as the compactor would, and must come back
/// unchanged and valid under the same rules.
pub fn json_body(data: &[u8]) {
    let Ok(envelope) = parse_body(data, MAX_BATCH) else {
        return;
    };
    if let Envelope::Batch(items) = &envelope {
        assert!(
            (1..=MAX_BATCH).contains(&items.len()),
            "a batch of {} positions was accepted",
            items.len()
        );
    }
    let rules = TimeRules::default();
    let mut accepted = Vec::new();
    for (index, raw) in envelope.positions().iter().enumerate() {
        match raw.check(index, received_at(), &rules) {
            Ok(position) => accepted.push(position),
            Err(rejections) => {
                assert!(!rejections.is_empty(), "a rejection without a reason");
                assert!(
                    rejections.iter().all(|r| r.index == index),
                    "a rejection for another position"
                );
            }
        }
    }
    if accepted.is_empty() {
        return;
    }
    let mut datums = Vec::new();
    for position in &accepted {
        encode_datum(position, &mut datums);
    }
    let record = RecordEncoder::new(Codec::Null).encode(&datums, accepted.len());
    let decoded = decode_record(&record).expect("a record of accepted positions decodes");
    assert_eq!(decoded.len(), accepted.len());
    for (datum, position) in decoded.into_iter().zip(&accepted) {
        let datum = datum.expect("a datum of an accepted position decodes");
        let back = datum
            .validate(&rules)
            .expect("an accepted position is valid when the compactor reads it");
        assert_eq!(&back, position);
    }
}

// --- seeds ------------------------------------------------------------------

/// The environment variable naming the directory a target writes its seeds
/// into when it starts (scripts/fuzz.sh sets it to the target's corpus).
pub const SEEDS_ENV: &str = "COURIER_FUZZ_SEEDS";

/// Writes the seeds of `target` into the directory named by [`SEEDS_ENV`],
/// if it is set: valid inputs made by the code under test, so the fuzzer
/// starts from records, segments and bodies the services really see.
pub fn write_seeds_from_env(target: &str) {
    let Some(dir) = std::env::var_os(SEEDS_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    fs::create_dir_all(&dir).expect("create the seed directory");
    for (name, bytes) in seeds(target) {
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
    }
}

/// The seeds of one target, by name.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "record_decoder" => record_seeds(),
        "local_frame_reader" => local_seeds(),
        "json_body" => json_seeds(),
        other => panic!("no seeds for target {other:?}"),
    }
}

fn seed_position(i: usize, full: bool) -> Position {
    let courier = format!("courier-{i}");
    let order = format!("order-{i}");
    let input = UncheckedPosition {
        event_id: None,
        courier_id: Some(&courier),
        lat: Some(-23.5 + i as f64 * 1e-3),
        lon: Some(-46.6 - i as f64 * 1e-3),
        recorded_at: Some(received_at() - TimeDelta::milliseconds(1500)),
        accuracy_m: full.then_some(4.5),
        speed_mps: full.then_some(8.25),
        heading_deg: full.then_some(359.5),
        order_id: full.then_some(order.as_str()),
    };
    Position::try_new(&input, received_at(), &TimeRules::default()).expect("a valid seed position")
}

/// A stream record of `count` positions, as ingest-api writes it.
pub fn seed_record(codec: Codec, count: usize) -> Vec<u8> {
    let mut datums = Vec::new();
    for i in 0..count {
        encode_datum(&seed_position(i, i % 2 == 0), &mut datums);
    }
    RecordEncoder::new(codec).encode(&datums, count)
}

fn record_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // The structured form: codec, count, datums.
    for (codec, count) in [(0u8, 1usize), (1, 2), (2, 3)] {
        let mut input = vec![codec];
        input.extend_from_slice(&(count as u64).to_le_bytes());
        for i in 0..count {
            encode_datum(&seed_position(i, i % 2 == 1), &mut input);
        }
        out.push((format!("datums-{codec}-{count}.bin"), input));
    }
    for codec in [Codec::Null, Codec::Snappy, Codec::Zstandard] {
        for count in [1, 3] {
            out.push((
                format!("{}-{count}.avro", codec.avro_name()),
                seed_record(codec, count),
            ));
        }
    }
    out
}

fn local_seeds() -> Vec<(String, Vec<u8>)> {
    let data = seed_record(Codec::Null, 1);
    let payloads: Vec<Vec<u8>> = (1..=3u64)
        .map(|seq| record_payload(seq, 1_795_000_000_000, b"courier-1", &data[..40]))
        .collect();
    let segment: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    // Raw segment files (flags 0).
    let mut raw = vec![0u8];
    raw.extend_from_slice(&segment);
    let mut torn = raw.clone();
    torn.truncate(torn.len() - 7);
    // Framed chunks (flags 1): the fuzzer's way past the CRC.
    let mut chunks = vec![1u8];
    for p in &payloads {
        chunks.push(u8::try_from(p.len()).expect("a payload under 256 bytes"));
        chunks.extend_from_slice(p);
    }
    // Two segments (flags 3), the second starting at sequence 2.
    let first_len = u16::try_from(frame(&payloads[0]).len()).expect("a short frame");
    let mut two = vec![0b011u8, 0];
    two.extend_from_slice(&first_len.to_le_bytes());
    two.extend_from_slice(&chunks[1..]);
    // Writer recovery of a torn tail (flags 5).
    let mut recover = chunks.clone();
    recover[0] = 0b101;
    recover.extend_from_slice(&[0, b'C', b'P', b'R', b'1', 9]);
    // The framed and the raw seeds must describe the same segment, the two
    // segments of `two` together the same bytes.
    assert_eq!(parse_local_input(&raw), parse_local_input(&chunks));
    let split = parse_local_input(&two).segments;
    assert_eq!(split.len(), 2);
    assert_eq!([split[0].1.clone(), split[1].1.clone()].concat(), segment);
    vec![
        ("raw-3-records.bin".into(), raw),
        ("raw-torn-tail.bin".into(), torn),
        ("framed-3-records.bin".into(), chunks),
        ("framed-two-segments.bin".into(), two),
        ("framed-recover-torn.bin".into(), recover),
    ]
}

fn json_seeds() -> Vec<(String, Vec<u8>)> {
    let single = r#"{"courier_id":"courier-1","lat":-23.5,"lon":-46.6,"recorded_at":"2026-11-18T09:06:38.500Z"}"#;
    let full = r#"{"event_id":"01936f4e-8a5c-7d3e-9b1a-4c2d8e6f0a1b","courier_id":"c-\u00e9\n","lat":0,"lon":180,"recorded_at":"2026-11-18T09:06:38+00:00","accuracy_m":4.5,"speed_mps":8.25,"heading_deg":359.5,"order_id":"order-1"}"#;
    let batch =
        format!(r#"{{"positions":[{single},{full},{{"lat":"x","latt":1,"lat":2}},[],null]}}"#);
    vec![
        ("single.json".into(), single.into()),
        ("single-every-field.json".into(), full.into()),
        ("batch-mixed.json".into(), batch.into_bytes()),
        ("batch-empty.json".into(), br#"{"positions":[]}"#.to_vec()),
        ("not-an-object.json".into(), b"[1,2,3]".to_vec()),
    ]
}
