//! The local stream: Kinesis semantics on one machine's disk.
//!
//! Layout under the data directory:
//!
//! ```text
//! <data-dir>/<stream-name>/stream.json            {"format_version":1,"shards":4}
//! <data-dir>/<stream-name>/writer.lock            held by the one writing process
//! <data-dir>/<stream-name>/shardId-000000000000/00000000000000000001.seg
//! ```
//!
//! A shard is a sequence of segment files named by their first sequence
//! number. Sequence numbers start at 1 and increase by one per record. Each
//! record is a frame:
//!
//! ```text
//! magic "CPR1" | payload length u32 LE | CRC32 of payload u32 LE |
//! payload = sequence u64 LE | arrival ms i64 LE | key length u16 LE | key | data
//! ```
//!
//! A put appends all of its frames and calls `fdatasync` once (group commit)
//! before it reports success. The active segment grows in zero-filled steps
//! ([`PREALLOCATE_BYTES`], as PostgreSQL fills a WAL segment): most puts then
//! overwrite space the file already has, and `fdatasync` has no new file size
//! to journal, which halves its cost on ext4. The zeros after the last record
//! read as a frame that is not a record, exactly like a torn tail; a segment
//! is cut to its records when it is rolled and when the writer closes.
//!
//! A crash can leave a torn frame, or the zero-filled space, at the end of the
//! last segment: readers stop before it, and the writer truncates it when it
//! opens the stream. A damaged frame with a complete frame after it is not a
//! torn tail but corruption: the writer refuses to open the shard and a
//! reader fails, each naming the segment and offset.
//!
//! Retention never outruns the consumer: the compactor deletes the segments
//! it has committed past ([`LocalStreamReader::trim`]); the writer deletes an
//! unread segment only when the stream is over its disk cap
//! ([`LocalOptions::max_bytes`]), with an error log and a count
//! ([`LocalStream::segments_dropped`]). A reader notices such a gap in the
//! sequence numbers and fails with [`StreamError::Lost`] unless told to go on.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, OutRecord, PutOutcome, ShardMap, StreamError, StreamSink};

/// A mutex that treats poisoning as recoverable: a shard whose writer
/// panicked is re-opened (and its torn tail truncated) on its next use.
struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

const MAGIC: &[u8; 4] = b"CPR1";
const FRAME_HEADER: usize = 12;
const PAYLOAD_FIXED: usize = 18;
const SEGMENT_SUFFIX: &str = ".seg";
/// Largest payload a frame may declare; anything larger is damage.
const MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// The active segment's file grows by zero-filled steps of this size (never
/// past the segment size), so an append rarely changes the file's length.
pub const PREALLOCATE_BYTES: u64 = 1024 * 1024;
/// Zeros to write from (a static buffer: no allocation per step).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

#[derive(Debug, Serialize, Deserialize)]
struct StreamMeta {
    format_version: u32,
    shards: usize,
}

/// Options of a local stream writer.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Shards to create when the stream does not exist yet. An existing
    /// stream keeps its shard count; asking for a different one is an error.
    pub shards: usize,
    /// A segment is rolled once it holds this many bytes.
    pub segment_bytes: u64,
    /// The stream's disk cap in bytes (all shards; `None`: no cap). Over it,
    /// the oldest closed segments are deleted even though no consumer has
    /// read them: data loss, logged as an error and counted. Segments the
    /// compactor committed past are deleted by the compactor itself.
    pub max_bytes: Option<u64>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            shards: 4,
            segment_bytes: 64 * 1024 * 1024,
            max_bytes: None,
        }
    }
}

/// One record read back from the local stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecord {
    /// Sequence number within the shard (1, 2, 3, ...).
    pub sequence_number: u64,
    /// When the writer appended it, ms since the epoch.
    pub arrival_ms: i64,
    /// The partition key.
    pub partition_key: String,
    /// The record's bytes.
    pub data: Bytes,
}

fn stream_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name)
}

fn read_meta(dir: &Path) -> Result<Option<StreamMeta>, StreamError> {
    let path = dir.join("stream.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StreamError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StreamError::io(format!("read {}", path.display()), e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StreamError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StreamError::io(format!("fsync directory {}", dir.display()), e))
}

/// Segments of a shard directory, sorted by first sequence number.
fn list_segments(shard_dir: &Path) -> Result<Vec<(u64, PathBuf)>, StreamError> {
    let entries = fs::read_dir(shard_dir)
        .map_err(|e| StreamError::io(format!("list {}", shard_dir.display()), e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| StreamError::io(format!("list {}", shard_dir.display()), e))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push((first, entry.path()));
    }
    segments.sort_by_key(|(first, _)| *first);
    Ok(segments)
}

fn segment_path(shard_dir: &Path, first_seq: u64) -> PathBuf {
    shard_dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Result of reading one frame.
enum Frame {
    Record(LocalRecord, u64),
    /// A clean end of file.
    End,
    /// An incomplete or damaged frame starting here.
    Torn,
}

fn read_frame(reader: &mut impl Read) -> std::io::Result<Frame> {
    let mut header = [0u8; FRAME_HEADER];
    match read_full(reader, &mut header)? {
        0 => return Ok(Frame::End),
        n if n < FRAME_HEADER => return Ok(Frame::Torn),
        _ => {}
    }
    if &header[0..4] != MAGIC {
        return Ok(Frame::Torn);
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if !(PAYLOAD_FIXED as u32..=MAX_PAYLOAD).contains(&len) {
        return Ok(Frame::Torn);
    }
    let mut payload = vec![0u8; len as usize];
    if read_full(reader, &mut payload)? < payload.len() || crc32fast::hash(&payload) != crc {
        return Ok(Frame::Torn);
    }
    let seq = u64::from_le_bytes(payload[0..8].try_into().unwrap_or_default());
    let arrival_ms = i64::from_le_bytes(payload[8..16].try_into().unwrap_or_default());
    let key_len = u16::from_le_bytes([payload[16], payload[17]]) as usize;
    if PAYLOAD_FIXED + key_len > payload.len() {
        return Ok(Frame::Torn);
    }
    let Ok(key) = std::str::from_utf8(&payload[PAYLOAD_FIXED..PAYLOAD_FIXED + key_len]) else {
        return Ok(Frame::Torn);
    };
    let partition_key = key.to_owned();
    let data = Bytes::from(payload).slice(PAYLOAD_FIXED + key_len..);
    Ok(Frame::Record(
        LocalRecord {
            sequence_number: seq,
            arrival_ms,
            partition_key,
            data,
        },
        (FRAME_HEADER + len as usize) as u64,
    ))
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The bytes of `file` from `from` to its end.
fn read_tail(file: &mut File, from: u64) -> std::io::Result<Vec<u8>> {
    let mut rest = Vec::new();
    file.seek(SeekFrom::Start(from))?;
    file.read_to_end(&mut rest)?;
    Ok(rest)
}

/// The offset in `tail` (bytes that start with a damaged frame) of the first
/// complete, intact frame after its start (scanning byte by byte for the
/// magic), if any: a damaged frame with such a frame after it is corruption,
/// not a torn tail.
fn complete_frame_in(tail: &[u8]) -> Option<u64> {
    let mut at = 1;
    while let Some(found) = tail
        .get(at..)
        .and_then(|rest| rest.windows(MAGIC.len()).position(|w| w == MAGIC))
    {
        let start = at + found;
        if let Ok(Frame::Record(..)) = read_frame(&mut &tail[start..]) {
            return Some(start as u64);
        }
        at = start + 1;
    }
    None
}

fn encode_frame(out: &mut Vec<u8>, seq: u64, arrival_ms: i64, key: &str, data: &[u8]) {
    let len = PAYLOAD_FIXED + key.len() + data.len();
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let payload_start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&arrival_ms.to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[payload_start..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

struct ShardWriter {
    dir: PathBuf,
    /// `None` after a failed write: the next use re-opens and recovers.
    file: Option<File>,
    /// Bytes of complete records in the active segment.
    segment_len: u64,
    /// The active segment file's length: `segment_len` and the zero-filled
    /// space after it.
    allocated: u64,
    next_seq: u64,
}

/// Writes zeros over `from..to` of `file`.
fn fill_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The file length to grow the active segment to so that it holds `end`
/// bytes: the next multiple of [`PREALLOCATE_BYTES`], but not past the
/// segment size (a segment is rolled there), and at least `end`.
fn preallocation_target(end: u64, segment_bytes: u64) -> u64 {
    end.next_multiple_of(PREALLOCATE_BYTES)
        .min(segment_bytes)
        .max(end)
}

impl ShardWriter {
    fn open(dir: PathBuf) -> Result<Self, StreamError> {
        let mut shard = Self {
            dir,
            file: None,
            segment_len: 0,
            allocated: 0,
            next_seq: 1,
        };
        shard.recover()?;
        Ok(shard)
    }

    /// Opens the last segment, truncating a torn tail (or the zero-filled
    /// space of a writer that did not close), and learns the next sequence
    /// number.
    fn recover(&mut self) -> Result<(), StreamError> {
        self.file = None;
        fs::create_dir_all(&self.dir)
            .map_err(|e| StreamError::io(format!("create {}", self.dir.display()), e))?;
        let segments = list_segments(&self.dir)?;
        let Some((first_seq, path)) = segments.last().cloned() else {
            return self.start_segment(1);
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StreamError::io(format!("open {}", path.display()), e))?;
        let mut reader = BufReader::new(&mut file);
        let mut valid_len = 0u64;
        let mut next_seq = first_seq;
        loop {
            match read_frame(&mut reader)
                .map_err(|e| StreamError::io(format!("read {}", path.display()), e))?
            {
                Frame::Record(record, len) => {
                    if record.sequence_number != next_seq {
                        return Err(StreamError::Corrupt(format!(
                            "{}: sequence {} where {} was expected",
                            path.display(),
                            record.sequence_number,
                            next_seq
                        )));
                    }
                    next_seq += 1;
                    valid_len += len;
                }
                Frame::End => break,
                Frame::Torn => {
                    drop(reader);
                    let tail = read_tail(&mut file, valid_len)
                        .map_err(|e| StreamError::io(format!("read {}", path.display()), e))?;
                    if let Some(at) = complete_frame_in(&tail) {
                        return Err(StreamError::Corrupt(format!(
                            "{}: damaged record at offset {valid_len} with complete records after it (at offset {}): not a torn tail; move the segment aside and restart to go on without it",
                            path.display(),
                            valid_len + at
                        )));
                    }
                    if tail.iter().all(|&b| b == 0) {
                        tracing::info!(
                            segment = %path.display(),
                            valid_len,
                            "cutting the zero-filled space after the last record (the writer did not close cleanly)"
                        );
                    } else {
                        tracing::warn!(
                            segment = %path.display(),
                            valid_len,
                            "truncating a torn record at the end of the local stream (an earlier crash)"
                        );
                    }
                    break;
                }
            }
        }
        file.set_len(valid_len)
            .and_then(|_| file.sync_all())
            .and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()))
            .map_err(|e| StreamError::io(format!("truncate {}", path.display()), e))?;
        self.file = Some(file);
        self.segment_len = valid_len;
        self.allocated = valid_len;
        self.next_seq = next_seq;
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), StreamError> {
        let path = segment_path(&self.dir, first_seq);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(|e| StreamError::io(format!("create {}", path.display()), e))?;
        sync_dir(&self.dir)?;
        self.file = Some(file);
        self.segment_len = 0;
        self.allocated = 0;
        self.next_seq = first_seq;
        Ok(())
    }

    /// Deletes the oldest closed segments while the shard holds more than
    /// `cap` bytes; returns how many were deleted. Never the active segment.
    fn enforce_cap(&self, cap: u64) -> Result<u64, StreamError> {
        let segments = list_segments(&self.dir)?;
        // The active segment counts by its records, not its zero-filled space.
        let sizes: Vec<u64> = segments
            .iter()
            .enumerate()
            .map(|(i, (_, path))| {
                if i + 1 == segments.len() {
                    self.segment_len
                } else {
                    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
                }
            })
            .collect();
        let mut total: u64 = sizes.iter().sum();
        let mut dropped = 0;
        for ((first_seq, path), size) in segments
            .iter()
            .zip(&sizes)
            .take(segments.len().saturating_sub(1))
        {
            if total <= cap {
                break;
            }
            fs::remove_file(path)
                .map_err(|e| StreamError::io(format!("delete {}", path.display()), e))?;
            total -= size;
            dropped += 1;
            tracing::error!(
                segment = %path.display(),
                first_sequence = first_seq,
                bytes = size,
                cap_bytes = cap,
                "deleted an UNREAD local stream segment: the stream is over its disk cap because the compactor has not committed past it; its records are lost (run the compactor, or raise the cap)"
            );
        }
        Ok(dropped)
    }

    fn append(
        &mut self,
        records: &[(&str, &[u8])],
        options: &LocalOptions,
        shard_cap: Option<u64>,
        dropped: &AtomicU64,
    ) -> Result<Vec<u64>, StreamError> {
        if self.file.is_none() {
            self.recover()?;
        }
        if self.segment_len >= options.segment_bytes {
            if let Some(file) = self.file.take() {
                // Cut the zero-filled space before the next segment exists:
                // a reader takes a segment with a successor as complete.
                file.set_len(self.segment_len)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| StreamError::io("close a full segment", e))?;
            }
            self.start_segment(self.next_seq)?;
            if let Some(cap) = shard_cap {
                dropped.fetch_add(self.enforce_cap(cap)?, Ordering::Relaxed);
            }
        }
        let arrival = now_ms();
        let mut buf = Vec::with_capacity(
            records
                .iter()
                .map(|(k, d)| FRAME_HEADER + PAYLOAD_FIXED + k.len() + d.len())
                .sum(),
        );
        let first = self.next_seq;
        for (i, (key, data)) in records.iter().enumerate() {
            encode_frame(&mut buf, first + i as u64, arrival, key, data);
        }
        let end = self.segment_len + buf.len() as u64;
        let target = preallocation_target(end, options.segment_bytes);
        let result = match self.file.as_ref() {
            Some(file) => {
                use std::os::unix::fs::FileExt;
                file.write_all_at(&buf, self.segment_len)
                    .and_then(|_| {
                        if end > self.allocated {
                            fill_zeros(file, end, target)
                        } else {
                            Ok(())
                        }
                    })
                    .and_then(|_| file.sync_data())
            }
            None => Err(std::io::Error::other("segment not open")),
        };
        if let Err(e) = result {
            // The file may hold a torn tail now: re-open (and truncate) before
            // the next append.
            self.file = None;
            return Err(StreamError::io(
                format!("append to {}", self.dir.display()),
                e,
            ));
        }
        self.allocated = self.allocated.max(target);
        self.segment_len = end;
        self.next_seq += records.len() as u64;
        Ok((first..self.next_seq).collect())
    }
}

impl Drop for ShardWriter {
    /// A clean close leaves the active segment holding only its records. Best
    /// effort: if this fails, the next writer cuts the zeros when it opens.
    fn drop(&mut self) {
        if let Some(file) = self.file.as_ref()
            && self.allocated > self.segment_len
            && let Err(e) = file.set_len(self.segment_len).and_then(|_| file.sync_all())
        {
            tracing::warn!(
                shard = %self.dir.display(),
                error = %e,
                "could not cut the zero-filled space after the last record; the next writer will"
            );
        }
    }
}

struct Inner {
    dir: PathBuf,
    name: String,
    map: ShardMap,
    shards: Vec<Mutex<ShardWriter>>,
    options: LocalOptions,
    /// Unread segments deleted over the disk cap.
    dropped: AtomicU64,
    _lock: File,
}

/// A writer of the local stream. Cheap to clone; one process at a time may
/// hold a stream open for writing.
#[derive(Clone)]
pub struct LocalStream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStream")
            .field("dir", &self.inner.dir)
            .field("shards", &self.inner.map.len())
            .finish()
    }
}

impl LocalStream {
    /// Opens (creating if needed) the stream `name` under `data_dir` for
    /// writing, recovering every shard.
    pub fn open(data_dir: &Path, name: &str, options: LocalOptions) -> Result<Self, StreamError> {
        let dir = stream_dir(data_dir, name);
        fs::create_dir_all(&dir)
            .map_err(|e| StreamError::io(format!("create {}", dir.display()), e))?;
        let lock_path = dir.join("writer.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StreamError::io(format!("open {}", lock_path.display()), e))?;
        lock.try_lock()
            .map_err(|_| StreamError::Locked(dir.display().to_string()))?;
        let shards = match read_meta(&dir)? {
            Some(meta) if meta.shards != options.shards => {
                return Err(StreamError::NotUsable {
                    name: name.into(),
                    reason: format!(
                        "it has {} shards but {} were asked for; use the same shard count or a new stream name",
                        meta.shards, options.shards
                    ),
                });
            }
            Some(meta) => meta.shards,
            None => {
                let meta = StreamMeta {
                    format_version: 1,
                    shards: options.shards.max(1),
                };
                let tmp = dir.join("stream.json.tmp");
                let json = serde_json::to_vec(&meta).unwrap_or_default();
                fs::write(&tmp, json)
                    .and_then(|_| File::open(&tmp)?.sync_all())
                    .and_then(|_| fs::rename(&tmp, dir.join("stream.json")))
                    .map_err(|e| StreamError::io("write stream.json", e))?;
                sync_dir(&dir)?;
                meta.shards
            }
        };
        let map = ShardMap::even(shards);
        let shard_writers = map
            .shards()
            .iter()
            .map(|s| ShardWriter::open(dir.join(&s.shard_id)).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                name: name.into(),
                map,
                shards: shard_writers,
                options,
                dropped: AtomicU64::new(0),
                _lock: lock,
            }),
        })
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The shard map (fixed for a local stream).
    pub fn map(&self) -> &ShardMap {
        &self.inner.map
    }

    /// Appends records to one shard with one fsync; returns their sequence
    /// numbers. Blocking: call from a blocking thread.
    pub fn append(
        &self,
        shard_index: usize,
        records: &[(&str, &[u8])],
    ) -> Result<Vec<u64>, StreamError> {
        let shard = self
            .inner
            .shards
            .get(shard_index)
            .ok_or_else(|| StreamError::NotUsable {
                name: self.inner.name.clone(),
                reason: format!("no shard with index {shard_index}"),
            })?;
        let shard_cap = self
            .inner
            .options
            .max_bytes
            .map(|cap| cap / self.inner.shards.len().max(1) as u64);
        shard
            .lock()
            .append(records, &self.inner.options, shard_cap, &self.inner.dropped)
    }

    /// Unread segments deleted because the stream was over its disk cap
    /// since this writer opened it (each one is data loss).
    pub fn segments_dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Appends every record to its shard (one fsync per shard). An I/O error
    /// on any shard fails the whole call: the writer resets the sink and
    /// retries every record (a record already written to a healthy shard may
    /// then be written twice; event ids make that harmless).
    fn put_blocking(&self, records: &[OutRecord]) -> Result<Vec<PutOutcome>, StreamError> {
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.inner.map.len()];
        for (i, r) in records.iter().enumerate() {
            by_shard[self.inner.map.index_for_hash(r.hash_key())].push(i);
        }
        let mut outcomes: Vec<Option<PutOutcome>> = vec![None; records.len()];
        for (shard_index, indices) in by_shard.iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let batch: Vec<(&str, &[u8])> = indices
                .iter()
                .map(|&i| (records[i].partition_key.as_str(), &records[i].data[..]))
                .collect();
            let shard_id = &self.inner.map.shards()[shard_index].shard_id;
            let seqs = self.append(shard_index, &batch)?;
            for (&i, seq) in indices.iter().zip(seqs) {
                outcomes[i] = Some(PutOutcome::Written {
                    shard_id: shard_id.clone(),
                    sequence_number: seq.to_string(),
                });
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StreamError::Corrupt("record not routed to a shard".into())))
            .collect()
    }
}

impl StreamSink for LocalStream {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn segments_dropped(&self) -> u64 {
        LocalStream::segments_dropped(self)
    }

    fn shard_map(&self) -> BoxFuture<'_, Result<ShardMap, StreamError>> {
        let map = self.inner.map.clone();
        Box::pin(async move { Ok(map) })
    }

    fn put_records(
        &self,
        records: Vec<OutRecord>,
    ) -> BoxFuture<'_, Result<Vec<PutOutcome>, StreamError>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.put_blocking(&records))
                .await
                .map_err(|e| StreamError::io("append task", std::io::Error::other(e)))?
        })
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), StreamError>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                for (shard, range) in this.inner.shards.iter().zip(this.inner.map.shards()) {
                    if shard.lock().file.is_none() {
                        return Err(StreamError::NotUsable {
                            name: this.inner.name.clone(),
                            reason: format!("shard {} failed its last write", range.shard_id),
                        });
                    }
                }
                fs::metadata(&this.inner.dir)
                    .map(|_| ())
                    .map_err(|e| StreamError::io("stat the stream directory", e))
            })
            .await
            .map_err(|e| StreamError::io("health task", std::io::Error::other(e)))?
        })
    }

    fn reset(&self) -> BoxFuture<'_, Result<(), StreamError>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                for shard in &this.inner.shards {
                    shard.lock().recover()?;
                }
                Ok(())
            })
            .await
            .map_err(|e| StreamError::io("reset task", std::io::Error::other(e)))?
        })
    }
}

/// Reads the local stream. Any number of readers may run beside the writer;
/// a reader stops at the last complete record.
#[derive(Debug, Clone)]
pub struct LocalStreamReader {
    dir: PathBuf,
    map: ShardMap,
}

impl LocalStreamReader {
    /// Opens an existing stream for reading.
    pub fn open(data_dir: &Path, name: &str) -> Result<Self, StreamError> {
        let dir = stream_dir(data_dir, name);
        let meta = read_meta(&dir)?.ok_or_else(|| StreamError::NotUsable {
            name: name.into(),
            reason: format!("no local stream at {}", dir.display()),
        })?;
        Ok(Self {
            dir,
            map: ShardMap::even(meta.shards),
        })
    }

    /// The shard map.
    pub fn map(&self) -> &ShardMap {
        &self.map
    }

    /// A cursor over one shard, positioned after sequence number `after`
    /// (`None`: from the oldest retained record).
    pub fn cursor(&self, shard_id: &str, after: Option<u64>) -> Result<ShardCursor, StreamError> {
        if !self.map.shards().iter().any(|s| s.shard_id == shard_id) {
            return Err(StreamError::NotUsable {
                name: self.dir.display().to_string(),
                reason: format!("no shard {shard_id}"),
            });
        }
        Ok(ShardCursor {
            dir: self.dir.join(shard_id),
            shard_id: shard_id.to_owned(),
            after: after.unwrap_or(0),
            current: None,
            allow_gaps: false,
            lost: 0,
        })
    }

    /// The sequence number of the newest complete record of a shard.
    pub fn latest_sequence(&self, shard_id: &str) -> Result<Option<u64>, StreamError> {
        let mut cursor = self.cursor(shard_id, None)?;
        // Jump to the last segment: earlier ones end before it starts.
        let segments = list_segments(&cursor.dir)?;
        let Some((first, _)) = segments.last() else {
            return Ok(None);
        };
        cursor.after = first.saturating_sub(1);
        let mut latest = (*first > 1).then(|| first - 1);
        loop {
            let batch = cursor.next_batch_limited(10_000, 8 * 1024 * 1024)?;
            match batch.last() {
                Some(r) => latest = Some(r.sequence_number),
                None => return Ok(latest),
            }
        }
    }

    /// Where a replay from the arrival time `at_ms` (ms since the epoch)
    /// starts: the sequence number to read after so that the first record
    /// read is the shard's first retained record that arrived at or after
    /// `at_ms` (Kinesis `AT_TIMESTAMP`). A time before the oldest retained
    /// record starts at that record (what was trimmed is gone); a time after
    /// the newest gives the newest (nothing to read). Arrival times come from
    /// the one writer's clock, in append order; the search skips whole
    /// segments by their first record and reads only the one it lands in.
    pub fn sequence_before_arrival(&self, shard_id: &str, at_ms: i64) -> Result<u64, StreamError> {
        let probe = self.cursor(shard_id, None)?;
        let segments = list_segments(&probe.dir)?;
        // The last segment whose first record arrived before `at_ms`.
        let mut start: Option<u64> = None;
        for (first, path) in &segments {
            let file = File::open(path)
                .map_err(|e| StreamError::io(format!("open {}", path.display()), e))?;
            let mut reader = BufReader::new(file);
            let frame = read_frame(&mut reader)
                .map_err(|e| StreamError::io(format!("read {}", path.display()), e))?;
            match frame {
                Frame::Record(record, _) if record.arrival_ms < at_ms => start = Some(*first),
                Frame::Record(..) => break,
                // An empty or torn active segment: nothing in it to compare.
                Frame::End | Frame::Torn => break,
            }
        }
        let Some(first) = start else {
            // Every retained record arrived at or after `at_ms`.
            return Ok(segments
                .first()
                .map_or(0, |(first, _)| first.saturating_sub(1)));
        };
        let mut cursor = self.cursor(shard_id, Some(first.saturating_sub(1)))?;
        let mut last = first.saturating_sub(1);
        loop {
            let batch = cursor.next_batch_limited(10_000, 8 * 1024 * 1024)?;
            if batch.is_empty() {
                return Ok(last);
            }
            for record in batch {
                if record.arrival_ms >= at_ms {
                    return Ok(record.sequence_number.saturating_sub(1));
                }
                last = record.sequence_number;
            }
        }
    }

    /// Deletes the segments whose records are all at or before `through`
    /// (records a consumer has durably committed past). Never the last segment.
    pub fn trim(&self, shard_id: &str, through: u64) -> Result<usize, StreamError> {
        let dir = self.dir.join(shard_id);
        let segments = list_segments(&dir)?;
        let mut deleted = 0;
        for pair in segments.windows(2) {
            let (_, path) = &pair[0];
            let (next_first, _) = pair[1];
            if next_first <= through.saturating_add(1) {
                fs::remove_file(path)
                    .map_err(|e| StreamError::io(format!("delete {}", path.display()), e))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// Reads one shard forward from a position. Sequence numbers of a shard have
/// no holes, so a record further on than the next one, or a first retained
/// segment that starts after it, means records were deleted before this
/// reader got to them: [`StreamError::Lost`], unless
/// [`ShardCursor::allow_gaps`] said to go on (then they are counted in
/// [`ShardCursor::lost`]).
pub struct ShardCursor {
    dir: PathBuf,
    shard_id: String,
    /// Last sequence number returned (or the starting point).
    after: u64,
    current: Option<OpenSegment>,
    allow_gaps: bool,
    lost: u64,
}

struct OpenSegment {
    first_seq: u64,
    offset: u64,
    reader: BufReader<File>,
}

impl ShardCursor {
    /// The last sequence number this cursor returned (or started after).
    pub fn position(&self) -> u64 {
        self.after
    }

    /// Goes on past records that are gone (logging each gap as an error and
    /// counting it) instead of failing.
    pub fn allow_gaps(mut self, allow: bool) -> Self {
        self.allow_gaps = allow;
        self
    }

    /// Records found missing so far (with [`ShardCursor::allow_gaps`]).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Records `first_missing..next_present` are gone.
    fn gap(&mut self, first_missing: u64, next_present: u64) -> Result<(), StreamError> {
        let count = next_present - first_missing;
        if !self.allow_gaps {
            return Err(StreamError::Lost {
                shard_id: self.shard_id.clone(),
                first_missing,
                last_missing: next_present - 1,
                count,
            });
        }
        tracing::error!(
            shard = %self.shard_id,
            first_missing,
            last_missing = next_present - 1,
            count,
            "records of the local stream were deleted before they were read; going on without them as asked"
        );
        self.lost += count;
        self.after = next_present - 1;
        Ok(())
    }

    fn open_segment_for(&mut self, wanted: u64) -> Result<bool, StreamError> {
        let segments = list_segments(&self.dir)?;
        // The last segment whose first sequence is <= wanted; if wanted was
        // deleted, the first retained segment (and a gap).
        let index = match segments.iter().rposition(|(first, _)| *first <= wanted) {
            Some(i) => i,
            None if !segments.is_empty() => {
                self.gap(wanted, segments[0].0)?;
                0
            }
            None => return Ok(false),
        };
        let (first_seq, path) = &segments[index];
        let file =
            File::open(path).map_err(|e| StreamError::io(format!("open {}", path.display()), e))?;
        self.current = Some(OpenSegment {
            first_seq: *first_seq,
            offset: 0,
            reader: BufReader::with_capacity(256 * 1024, file),
        });
        Ok(true)
    }

    /// Opens the first of `segments` that starts after the segment starting at
    /// `finished` (none is open when there is no such segment any more).
    fn open_segment_after(
        &mut self,
        finished: u64,
        segments: &[(u64, PathBuf)],
    ) -> Result<(), StreamError> {
        self.current = None;
        if let Some((first_seq, path)) = segments.iter().find(|(first, _)| *first > finished) {
            let file = File::open(path)
                .map_err(|e| StreamError::io(format!("open {}", path.display()), e))?;
            self.current = Some(OpenSegment {
                first_seq: *first_seq,
                offset: 0,
                reader: BufReader::with_capacity(256 * 1024, file),
            });
        }
        Ok(())
    }

    /// Up to `max` records after the cursor's position. An empty result means
    /// the cursor is at the end of the shard (for now).
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<LocalRecord>, StreamError> {
        self.next_batch_limited(max, usize::MAX)
    }

    /// Like [`ShardCursor::next_batch`], but stops once the records hold
    /// `max_bytes` of data (always at least one record): a reader's memory
    /// stays bounded whatever the records' size.
    pub fn next_batch_limited(
        &mut self,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<LocalRecord>, StreamError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max && bytes < max_bytes {
            if self.current.is_none() && !self.open_segment_for(self.after + 1)? {
                break;
            }
            let Some(segment) = self.current.as_mut() else {
                break;
            };
            let frame = read_frame(&mut segment.reader)
                .map_err(|e| StreamError::io(format!("read {}", self.dir.display()), e))?;
            match frame {
                Frame::Record(record, len) => {
                    segment.offset += len;
                    if record.sequence_number <= self.after {
                        continue;
                    }
                    if record.sequence_number > self.after + 1 {
                        self.gap(self.after + 1, record.sequence_number)?;
                    }
                    self.after = record.sequence_number;
                    bytes = bytes.saturating_add(record.data.len());
                    out.push(record);
                }
                Frame::End | Frame::Torn => {
                    // Rewind to the last complete record: what the buffer
                    // holds after it may be a record still being written, or
                    // the active segment's zero-filled space.
                    let offset = segment.offset;
                    segment
                        .reader
                        .seek(SeekFrom::Start(offset))
                        .map_err(|e| StreamError::io("seek in a segment", e))?;
                    // Is there a newer segment? Then this one is complete.
                    let segments = list_segments(&self.dir)?;
                    let newer = segments.iter().any(|(first, _)| *first > segment.first_seq);
                    if !newer {
                        // End of the active segment: a later call sees
                        // records appended meanwhile.
                        break;
                    }
                    // Read its end once more: the writer may have appended
                    // (and rolled) after the read above.
                    match read_frame(&mut segment.reader)
                        .map_err(|e| StreamError::io(format!("read {}", self.dir.display()), e))?
                    {
                        Frame::Record(..) => {
                            segment
                                .reader
                                .seek(SeekFrom::Start(offset))
                                .map_err(|e| StreamError::io("seek in a segment", e))?;
                            continue;
                        }
                        Frame::Torn => {
                            return Err(StreamError::Corrupt(format!(
                                "{}: damaged record inside segment {} at offset {}",
                                self.dir.display(),
                                segment.first_seq,
                                segment.offset
                            )));
                        }
                        Frame::End => {}
                    }
                    // On to the next segment by name. Not by the next
                    // sequence wanted: after a hole in the sequence (a
                    // segment moved aside or emptied) that is still this
                    // segment, and reopening it looped forever.
                    let finished = segment.first_seq;
                    self.open_segment_after(finished, &segments)?;
                    continue;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn options(shards: usize) -> LocalOptions {
        LocalOptions {
            shards,
            segment_bytes: 1024,
            max_bytes: None,
        }
    }

    fn record(key: &str, data: &str) -> OutRecord {
        OutRecord {
            partition_key: key.into(),
            explicit_hash_key: None,
            data: Bytes::copy_from_slice(data.as_bytes()),
        }
    }

    /// A one-shard stream holding the record "one", closed; its segment.
    async fn one_record_closed(dir: &Path) -> PathBuf {
        let stream = LocalStream::open(dir, "s", options(1)).expect("open");
        stream
            .put_records(vec![record("k", "one")])
            .await
            .expect("put");
        drop(stream);
        list_segments(&dir.join("s").join("shardId-000000000000")).expect("ls")[0]
            .1
            .clone()
    }

    fn read_all(reader: &LocalStreamReader, shard: &str) -> Vec<LocalRecord> {
        let mut cursor = reader.cursor(shard, None).expect("cursor");
        let mut all = Vec::new();
        loop {
            let batch = cursor.next_batch(7).expect("read");
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    #[tokio::test]
    async fn records_are_read_back_in_order_across_segments() {
        let dir = tempfile::tempdir().expect("tmp");
        let stream = LocalStream::open(dir.path(), "s", options(1)).expect("open");
        for i in 0..100 {
            let out = stream
                .put_records(vec![record(
                    "k",
                    &format!("record-{i:03}-{}", "x".repeat(40)),
                )])
                .await
                .expect("put");
            assert_eq!(
                out[0],
                PutOutcome::Written {
                    shard_id: "shardId-000000000000".into(),
                    sequence_number: (i + 1).to_string()
                }
            );
        }
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        let all = read_all(&reader, "shardId-000000000000");
        assert_eq!(all.len(), 100);
        assert!(
            all.windows(2)
                .all(|w| w[1].sequence_number == w[0].sequence_number + 1)
        );
        assert!(
            list_segments(&dir.path().join("s/shardId-000000000000"))
                .expect("ls")
                .len()
                > 1
        );
        assert_eq!(
            reader
                .latest_sequence("shardId-000000000000")
                .expect("latest"),
            Some(100)
        );
    }

    /// Waits until the writer's clock has moved past `ms`.
    fn clock_past(ms: i64) -> i64 {
        loop {
            let now = now_ms();
            if now > ms {
                return now;
            }
            std::thread::yield_now();
        }
    }

    #[tokio::test]
    async fn a_replay_starts_at_the_first_record_that_arrived_at_or_after_a_time() {
        let dir = tempfile::tempdir().expect("tmp");
        let stream = LocalStream::open(dir.path(), "s", options(1)).expect("open");
        let shard = "shardId-000000000000";
        let put = |i: usize| {
            let stream = stream.clone();
            async move {
                stream
                    .put_records(vec![record("k", &format!("r-{i:03}-{}", "x".repeat(40)))])
                    .await
                    .expect("put");
            }
        };
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        assert_eq!(reader.sequence_before_arrival(shard, 0).expect("empty"), 0);
        for i in 0..40 {
            put(i).await;
        }
        let first_batch_end = clock_past(now_ms());
        let from = clock_past(first_batch_end);
        for i in 40..80 {
            put(i).await;
        }
        // Several segments on each side of the time.
        assert!(
            list_segments(&dir.path().join("s").join(shard))
                .expect("ls")
                .len()
                > 4
        );
        assert_eq!(reader.sequence_before_arrival(shard, from).expect("at"), 40);
        assert_eq!(
            reader
                .sequence_before_arrival(shard, 0)
                .expect("before all"),
            0
        );
        let after_all = clock_past(now_ms());
        assert_eq!(
            reader
                .sequence_before_arrival(shard, after_all)
                .expect("after all"),
            80
        );
        // Trimmed records are gone: a time before them starts at the oldest left.
        let trimmed = reader.trim(shard, 30).expect("trim");
        assert!(trimmed > 0);
        let oldest = list_segments(&dir.path().join("s").join(shard)).expect("ls")[0].0;
        assert!(oldest > 1);
        assert_eq!(
            reader
                .sequence_before_arrival(shard, 0)
                .expect("after trim"),
            oldest - 1
        );
        assert_eq!(
            reader
                .sequence_before_arrival(shard, from)
                .expect("at after trim"),
            40
        );
    }

    #[tokio::test]
    async fn a_limited_batch_stops_at_its_byte_budget() {
        let dir = tempfile::tempdir().expect("tmp");
        let stream = LocalStream::open(dir.path(), "s", options(1)).expect("open");
        for i in 0..5 {
            stream
                .put_records(vec![record("k", &format!("{i}{}", "x".repeat(99)))])
                .await
                .expect("put");
        }
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        let mut cursor = reader.cursor("shardId-000000000000", None).expect("cursor");
        let first = cursor.next_batch_limited(10, 250).expect("read");
        assert_eq!(first.len(), 3, "100 + 100 + 100 bytes reach 250");
        let one = cursor.next_batch_limited(10, 1).expect("read");
        assert_eq!(one.len(), 1, "always at least one record");
        assert_eq!(one[0].sequence_number, 4);
        assert_eq!(
            cursor
                .next_batch_limited(10, usize::MAX)
                .expect("read")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn records_go_to_the_shard_owning_their_hash() {
        let dir = tempfile::tempdir().expect("tmp");
        let stream = LocalStream::open(dir.path(), "s", options(4)).expect("open");
        let keys: Vec<String> = (0..40).map(|i| format!("courier-{i}")).collect();
        let records = keys.iter().map(|k| record(k, k)).collect();
        let outcomes = stream.put_records(records).await.expect("put");
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        for (key, outcome) in keys.iter().zip(outcomes) {
            let PutOutcome::Written { shard_id, .. } = outcome else {
                panic!("not written")
            };
            assert_eq!(
                shard_id,
                reader.map().shards()[reader.map().index_for_key(key)].shard_id
            );
        }
    }

    #[tokio::test]
    async fn a_torn_tail_is_invisible_to_readers_and_truncated_by_the_writer() {
        let dir = tempfile::tempdir().expect("tmp");
        let shard = "shardId-000000000000";
        {
            let stream = LocalStream::open(dir.path(), "s", options(1)).expect("open");
            stream
                .put_records(vec![record("k", "one"), record("k", "two")])
                .await
                .expect("put");
        }
        // Simulate a crash in the middle of an append.
        let segment = list_segments(&dir.path().join("s").join(shard)).expect("ls")[0]
            .1
            .clone();
        let mut torn = Vec::new();
        encode_frame(&mut torn, 3, 0, "k", b"three");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open");
        file.write_all(&torn[..torn.len() - 2]).expect("write");
        drop(file);

        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        assert_eq!(read_all(&reader, shard).len(), 2);

        let stream = LocalStream::open(dir.path(), "s", options(1)).expect("reopen");
        let out = stream
            .put_records(vec![record("k", "three")])
            .await
            .expect("put");
        assert!(
            matches!(&out[0], PutOutcome::Written { sequence_number, .. } if sequence_number == "3")
        );
        let data: Vec<_> = read_all(&reader, shard)
            .into_iter()
            .map(|r| r.data)
            .collect();
        assert_eq!(
            data,
            vec![Bytes::from("one"), Bytes::from("two"), Bytes::from("three")]
        );
    }

    #[tokio::test]
    async fn a_cursor_sees_records_appended_after_it_reached_the_end() {
        let dir = tempfile::tempdir().expect("tmp");
        let stream = LocalStream::open(dir.path(), "s", options(1)).expect("open");
        stream
            .put_records(vec![record("k", "a")])
            .await
            .expect("put");
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        let mut cursor = reader.cursor("shardId-000000000000", None).expect("cursor");
        assert_eq!(cursor.next_batch(10).expect("read").len(), 1);
        assert!(cursor.next_batch(10).expect("read").is_empty());
        stream
            .put_records(vec![record("k", "b")])
            .await
            .expect("put");
        let batch = cursor.next_batch(10).expect("read");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].sequence_number, 2);
    }

    #[tokio::test]
    async fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let _first = LocalStream::open(dir.path(), "s", options(1)).expect("open");
        let second = LocalStream::open(dir.path(), "s", options(1));
        assert!(matches!(second, Err(StreamError::Locked(_))));
    }

    #[tokio::test]
    async fn a_different_shard_count_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        drop(LocalStream::open(dir.path(), "s", options(2)).expect("open"));
        let again = LocalStream::open(dir.path(), "s", options(3));
        assert!(matches!(again, Err(StreamError::NotUsable { .. })));
    }

    #[tokio::test]
    async fn trim_deletes_only_segments_wholly_consumed() {
        let dir = tempfile::tempdir().expect("tmp");
        let stream = LocalStream::open(dir.path(), "s", options(1)).expect("open");
        for i in 0..60 {
            stream
                .put_records(vec![record("k", &format!("{i:0100}"))])
                .await
                .expect("put");
        }
        let shard = "shardId-000000000000";
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        let before = list_segments(&dir.path().join("s").join(shard)).expect("ls");
        let deleted = reader.trim(shard, 30).expect("trim");
        assert!(deleted > 0);
        let first_left = reader
            .cursor(shard, None)
            .expect("c")
            .allow_gaps(true)
            .next_batch(1)
            .expect("r")[0]
            .sequence_number;
        assert!(
            first_left <= 31,
            "record 31 must survive, first left is {first_left}"
        );
        assert_eq!(
            list_segments(&dir.path().join("s").join(shard))
                .expect("ls")
                .len(),
            before.len() - deleted
        );
    }

    #[tokio::test]
    async fn a_damaged_record_with_good_records_after_it_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let shard = "shardId-000000000000";
        {
            let stream = LocalStream::open(dir.path(), "s", options(1)).expect("open");
            for word in ["one", "two", "three"] {
                stream
                    .put_records(vec![record("k", word)])
                    .await
                    .expect("put");
            }
        }
        let segment = list_segments(&dir.path().join("s").join(shard)).expect("ls")[0]
            .1
            .clone();
        // Flip a byte inside the second record's payload.
        let mut bytes = fs::read(&segment).expect("read");
        let second = bytes
            .windows(3)
            .position(|w| w == b"two")
            .expect("second record");
        bytes[second] ^= 0xff;
        fs::write(&segment, &bytes).expect("write");

        let err = LocalStream::open(dir.path(), "s", options(1)).expect_err("corrupt");
        assert!(
            matches!(&err, StreamError::Corrupt(why) if why.contains("not a torn tail")),
            "{err}"
        );
        // Nothing was truncated: the third record is still there to recover by hand.
        assert_eq!(fs::read(&segment).expect("read").len(), bytes.len());
    }

    #[tokio::test]
    async fn a_zero_filled_tail_is_torn_and_truncated() {
        let dir = tempfile::tempdir().expect("tmp");
        let segment = one_record_closed(dir.path()).await;
        let len = fs::metadata(&segment).expect("stat").len();
        // A crash after the file grew but before the data reached it.
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open");
        file.write_all(&[0u8; 300]).expect("write");
        drop(file);
        let stream = LocalStream::open(dir.path(), "s", options(1)).expect("recovered");
        assert_eq!(fs::metadata(&segment).expect("stat").len(), len);
        let out = stream
            .put_records(vec![record("k", "two")])
            .await
            .expect("put");
        assert!(
            matches!(&out[0], PutOutcome::Written { sequence_number, .. } if sequence_number == "2")
        );
    }

    #[tokio::test]
    async fn the_active_segment_grows_in_zero_filled_steps_and_closes_to_its_records() {
        let dir = tempfile::tempdir().expect("tmp");
        let shard = "shardId-000000000000";
        let big = LocalOptions {
            segment_bytes: 4 * PREALLOCATE_BYTES,
            ..options(1)
        };
        let stream = LocalStream::open(dir.path(), "s", big).expect("open");
        stream
            .put_records(vec![record("k", "one")])
            .await
            .expect("put");
        let segment = list_segments(&dir.path().join("s").join(shard)).expect("ls")[0]
            .1
            .clone();
        let bytes = fs::read(&segment).expect("read");
        assert_eq!(bytes.len() as u64, PREALLOCATE_BYTES);
        let mut one = Vec::new();
        encode_frame(&mut one, 1, 0, "k", b"one");
        assert!(
            bytes[one.len()..].iter().all(|&b| b == 0),
            "zeros after the record"
        );

        // A reader stops at the zeros and later reads what was written over them.
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        let mut cursor = reader.cursor(shard, None).expect("cursor");
        assert_eq!(cursor.next_batch(10).expect("read").len(), 1);
        assert!(cursor.next_batch(10).expect("read").is_empty());
        stream
            .put_records(vec![record("k", "two")])
            .await
            .expect("put");
        let batch = cursor.next_batch(10).expect("read");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].data, Bytes::from("two"));
        assert_eq!(reader.latest_sequence(shard).expect("latest"), Some(2));
        // Appends overwrite the zeros; the file grows only in steps.
        assert_eq!(
            fs::metadata(&segment).expect("stat").len(),
            PREALLOCATE_BYTES
        );
        let large = "x".repeat(PREALLOCATE_BYTES as usize);
        stream
            .put_records(vec![record("k", &large)])
            .await
            .expect("put");
        assert_eq!(
            fs::metadata(&segment).expect("stat").len(),
            2 * PREALLOCATE_BYTES
        );

        // Closing cuts the zeros: the segment holds exactly its records.
        drop(stream);
        let records = read_all(&reader, shard);
        assert_eq!(records.len(), 3);
        let mut exact = Vec::new();
        for r in &records {
            encode_frame(&mut exact, r.sequence_number, r.arrival_ms, "k", &r.data);
        }
        assert_eq!(fs::read(&segment).expect("read"), exact);
    }

    #[tokio::test]
    async fn a_full_segment_is_cut_to_its_records_before_the_next_one_starts() {
        let dir = tempfile::tempdir().expect("tmp");
        let shard = "shardId-000000000000";
        let stream = LocalStream::open(dir.path(), "s", options(1)).expect("open");
        for i in 0..30 {
            stream
                .put_records(vec![record("k", &format!("{i:0100}"))])
                .await
                .expect("put");
        }
        let segments = list_segments(&dir.path().join("s").join(shard)).expect("ls");
        assert!(segments.len() > 2, "{} segments", segments.len());
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        // Every closed segment ends with its last record: no zeros in it.
        for (_, path) in &segments[..segments.len() - 1] {
            let bytes = fs::read(path).expect("read");
            let mut at = 0;
            while at < bytes.len() {
                match read_frame(&mut &bytes[at..]).expect("frame") {
                    Frame::Record(_, len) => at += len as usize,
                    _ => panic!("{}: not a record at offset {at}", path.display()),
                }
            }
        }
        assert_eq!(read_all(&reader, shard).len(), 30);
    }

    #[tokio::test]
    async fn zeros_then_a_complete_record_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let segment = one_record_closed(dir.path()).await;
        // Zeroed space in the middle, with a record after it.
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open");
        let mut later = vec![0u8; 64];
        encode_frame(&mut later, 3, 0, "k", b"three");
        file.write_all(&later).expect("write");
        drop(file);
        let err = LocalStream::open(dir.path(), "s", options(1)).expect_err("corrupt");
        assert!(
            matches!(&err, StreamError::Corrupt(why) if why.contains("not a torn tail")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unread_segments_are_kept_until_the_disk_cap_and_a_reader_sees_the_gap() {
        let dir = tempfile::tempdir().expect("tmp");
        let shard = "shardId-000000000000";
        let put_60 = |stream: LocalStream| async move {
            for i in 0..60 {
                stream
                    .put_records(vec![record("k", &format!("{i:0100}"))])
                    .await
                    .expect("put");
            }
            stream
        };
        // No cap: nothing is deleted however old, until a consumer trims.
        let stream = put_60(LocalStream::open(dir.path(), "s", options(1)).expect("open")).await;
        assert_eq!(stream.segments_dropped(), 0);
        let reader = LocalStreamReader::open(dir.path(), "s").expect("reader");
        let mut cursor = reader.cursor(shard, None).expect("cursor");
        assert_eq!(cursor.next_batch(1000).expect("read").len(), 60);
        drop(stream);

        // A cap of 3 KiB over segments of 1 KiB: the oldest unread ones go.
        let capped = LocalOptions {
            max_bytes: Some(3 * 1024),
            ..options(1)
        };
        let stream = put_60(LocalStream::open(dir.path(), "s", capped).expect("open")).await;
        assert!(stream.segments_dropped() > 0);
        let total: u64 = list_segments(&dir.path().join("s").join(shard))
            .expect("ls")
            .iter()
            .map(|(_, p)| fs::metadata(p).expect("stat").len())
            .sum();
        assert!(total <= 3 * 1024 + 1024 + 200, "{total} bytes left");

        // A consumer that committed record 60 finds records 61.. partly gone.
        let mut cursor = reader.cursor(shard, Some(60)).expect("cursor");
        match cursor.next_batch(1000) {
            Err(StreamError::Lost {
                first_missing,
                last_missing,
                count,
                ..
            }) => {
                assert_eq!(first_missing, 61);
                assert_eq!(count, last_missing - 60);
                assert!(last_missing < 120);
            }
            other => panic!("expected the gap, got {other:?}"),
        }
        // Told to go on, it reads what is left and counts the rest.
        let mut cursor = reader
            .cursor(shard, Some(60))
            .expect("cursor")
            .allow_gaps(true);
        let left = cursor.next_batch(1000).expect("read");
        assert_eq!(left.last().map(|r| r.sequence_number), Some(120));
        assert_eq!(left.len() as u64 + cursor.lost(), 60);
    }
}
