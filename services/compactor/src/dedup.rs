//! Stage three, dedup: the window of event ids already in the table (from
//! each run's id file, or its Parquet files), and the id file of this run.
//! The window's guarantee is documented on [`window_ids`].

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType as ArrowType;
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::{DeltaTable, DeltaTableError};
use serde_json::Value;

use crate::CompactorError;
use crate::location::{StreamedObject, get_bytes};
use crate::rows::BATCH_ROWS;
use crate::state::{CompactorCommit, TableState};

/// A set of event ids: 16-byte UUIDs in one flat table (open addressing,
/// linear probing, at most 80 % full), hashed with foldhash (fast, and seeded
/// at random per set, so crafted client ids cannot pile into one place).
///
/// Sized once per run for the window and the run's own ids
/// ([`IdSet::reserve`]), it takes 20 bytes per id where a `HashSet` took up
/// to 34 (power-of-two buckets plus control bytes) and, while it doubled,
/// both tables at once: the dedup set was the largest part of the
/// compactor's peak memory.
#[derive(Default)]
pub struct IdSet {
    /// `0` marks an empty slot; the nil UUID is kept in `has_nil`.
    slots: Vec<u128>,
    len: usize,
    has_nil: bool,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for IdSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdSet")
            .field("len", &self.len())
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl IdSet {
    /// Ids held.
    pub fn len(&self) -> usize {
        self.len + usize::from(self.has_nil)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for `additional` more ids without growing again.
    pub fn reserve(&mut self, additional: usize) {
        let wanted = self.len.saturating_add(additional);
        if wanted > self.limit() {
            self.grow_to(wanted);
        }
    }

    fn limit(&self) -> usize {
        self.slots.len() / 5 * 4
    }

    fn grow_to(&mut self, ids: usize) {
        let slots = (ids.max(16) / 4 * 5).saturating_add(5);
        let old = std::mem::replace(&mut self.slots, vec![0u128; slots]);
        advise_huge_pages(&mut self.slots);
        touch_in_parallel(&mut self.slots);
        self.len = 0;
        for id in old.into_iter().filter(|&v| v != 0) {
            self.insert_raw(id);
        }
    }

    fn slot(&self, id: u128) -> usize {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(id);
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// Adds `id`; `false` when it was already there.
    pub fn insert(&mut self, id: uuid::Uuid) -> bool {
        let id = id.as_u128();
        if id == 0 {
            return !std::mem::replace(&mut self.has_nil, true);
        }
        if self.len + 1 > self.limit() {
            // Only when a run goes past what it reserved: by half again.
            self.grow_to(self.len + 1 + self.len / 2);
        }
        self.insert_raw(id)
    }

    fn insert_raw(&mut self, id: u128) -> bool {
        let n = self.slots.len();
        let mut i = self.slot(id);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = id;
                    self.len += 1;
                    return true;
                }
                v if v == id => return false,
                _ => i = if i + 1 == n { 0 } else { i + 1 },
            }
        }
    }

    /// Starts loading the slot where `id` would go into the cache, for an
    /// [`IdSet::insert`] or [`IdSet::contains`] of it a little later: the
    /// table is far larger than the caches, so each lookup waits on memory
    /// unless the next ones are already on their way (callers prefetch the
    /// id [`PREFETCH_AHEAD`] places ahead).
    #[inline]
    pub fn prefetch(&self, id: &uuid::Uuid) {
        #[cfg(target_arch = "x86_64")]
        if !self.slots.is_empty() {
            let slot = self.slot(id.as_u128());
            let address = self.slots[slot..].as_ptr().cast::<i8>();
            // SAFETY: a prefetch is a hint; it reads nothing into the program
            // and faults on no address (this one is inside the table anyway).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address);
            }
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &uuid::Uuid) -> bool {
        let id = id.as_u128();
        if id == 0 {
            return self.has_nil;
        }
        if self.slots.is_empty() {
            return false;
        }
        let n = self.slots.len();
        let mut i = self.slot(id);
        loop {
            match self.slots[i] {
                0 => return false,
                v if v == id => return true,
                _ => i = if i + 1 == n { 0 } else { i + 1 },
            }
        }
    }
}

/// Asks Linux for 2 MiB pages under the set's table (where transparent huge
/// pages are enabled for `madvise`d memory, the usual default): lookups land
/// on random slots of a table of 100+ MiB, and with 4 KiB pages nearly each
/// one missed the TLB and first touches faulted page by page. Only advice:
/// without huge pages everything works the same, slower.
fn advise_huge_pages(slots: &mut [u128]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = slots.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(slots);
        let aligned = start.next_multiple_of(HUGE);
        if end >= aligned + HUGE {
            let len = (end - aligned) / HUGE * HUGE;
            // SAFETY: advice on whole pages inside our own allocation; it
            // changes no contents and no mapping's permissions.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// Faults the pages of a fresh table in, its two halves on two threads at
/// once. The first write to each page of a new mapping makes the kernel
/// find and zero a page: for the 100+ MiB table of a run with a full window,
/// about 0.4 s of one core, which the window's inserts paid one random page
/// at a time while the other core waited. (The table is all zeros already;
/// the stores only fault the pages in.)
fn touch_in_parallel(slots: &mut [u128]) {
    /// Slots per 4 KiB page: one store each faults every page in (or, with
    /// 2 MiB pages, the first store of each).
    const PAGE_SLOTS: usize = 4096 / std::mem::size_of::<u128>();
    fn touch(part: &mut [u128]) {
        for page in part.chunks_mut(PAGE_SLOTS) {
            // SAFETY: a store of the value already there, into our own slice;
            // volatile so that it is not elided as a store of a known zero.
            unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
        }
    }
    if slots.len() < 16 * 1024 * PAGE_SLOTS {
        touch(slots);
        return;
    }
    let (first, second) = slots.split_at_mut(slots.len() / 2);
    std::thread::scope(|scope| {
        scope.spawn(|| touch(second));
        touch(first);
    });
}

/// How far ahead of an insert its slot is prefetched ([`IdSet::prefetch`]):
/// enough lookups in flight to cover a memory round trip.
pub const PREFETCH_AHEAD: usize = 16;

/// Where each run's event ids go, under the table root: a hidden directory,
/// which Delta readers and `vacuum` skip (the compactor's own `vacuum` keeps
/// the files the dedup window still needs and deletes the rest).
pub const DEDUP_DIR: &str = "_dedup";

/// A run's event ids: `ids` raw 16-byte UUIDs, one after the other, in `file`
/// (relative to the table root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsFile {
    /// Path relative to the table root.
    pub file: String,
    /// How many ids it holds.
    pub ids: u64,
}

impl IdsFile {
    /// The commitInfo value.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"file": self.file, "ids": self.ids})
    }

    pub(crate) fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            file: value.get("file")?.as_str()?.to_owned(),
            ids: value.get("ids")?.as_u64()?,
        })
    }
}

/// The dedup window: the `event_id`s of the files added by `commits` (newest
/// first). What it guarantees:
///
/// - every id of the newest commit (the last run), whatever `max_ids` says,
///   so a client's retry of any position of the last run, even a run that
///   read its whole `--max-positions`, is always dropped;
/// - then every id of the commits before it, newest first, while the window
///   holds fewer than `max_ids`;
/// - where the budget ends inside a commit, that commit's newest ids are
///   the ones kept (its id file is read from its end).
pub async fn window_ids(
    table: &DeltaTable,
    commits: &[CompactorCommit],
    max_ids: usize,
    run_ids: usize,
) -> Result<IdSet, CompactorError> {
    let store = table.object_store();
    let mut ids = IdSet::default();
    // The id files say how many ids they hold, and the run says how many it
    // may add: one allocation, no rehashing.
    let known: u64 = commits
        .iter()
        .filter_map(|c| c.ids_file.as_ref().map(|f| f.ids))
        .sum();
    let newest = commits
        .first()
        .and_then(|c| c.ids_file.as_ref())
        .map_or(0, |f| f.ids);
    let window = usize::try_from(known)
        .unwrap_or(max_ids)
        .min(max_ids.max(usize::try_from(newest).unwrap_or(usize::MAX)));
    ids.reserve(window.saturating_add(run_ids));
    for (used, commit) in commits.iter().enumerate() {
        // The newest commit always whole: the window is never smaller than a run.
        let budget = if used == 0 { usize::MAX } else { max_ids };
        if ids.len() >= budget {
            tracing::info!(
                commits = used,
                ids = ids.len(),
                "dedup window limited by its id budget"
            );
            break;
        }
        read_commit_ids(table, &store, commit, &mut ids, budget).await?;
    }
    Ok(ids)
}

/// The ids of one commit: from its id file when it has a complete one, from
/// the `event_id` column of its Parquet files otherwise (commits of older
/// versions, or an id file lost).
async fn read_commit_ids(
    table: &DeltaTable,
    store: &deltalake::logstore::ObjectStoreRef,
    commit: &CompactorCommit,
    ids: &mut IdSet,
    max_ids: usize,
) -> Result<(), CompactorError> {
    if let Some(file) = &commit.ids_file {
        match read_ids_file(store, file, ids, max_ids).await {
            Ok(()) => return Ok(()),
            Err(problem) => tracing::warn!(
                version = commit.version,
                file = %file.file,
                problem,
                "reading the commit's event ids from its Parquet files instead"
            ),
        }
    }
    // Newest files first (a run adds them in the order it wrote them).
    for file in commit.adds.iter().rev() {
        if ids.len() >= max_ids {
            break;
        }
        let location = deltalake::Path::from_url_path(&file.path)
            .map_err(|e| CompactorError::State(format!("bad file path {}: {e}", file.path)))?;
        let bytes = match get_bytes(store.as_ref(), &location).await {
            Ok(b) => b,
            Err(deltalake::ObjectStoreError::NotFound { .. }) => {
                tracing::warn!(file = %file.path, "dedup window file is gone (vacuumed?); skipped");
                continue;
            }
            Err(e) => {
                return Err(CompactorError::delta(
                    table.table_url().as_str(),
                    "read a dedup window file",
                    DeltaTableError::from(e),
                ));
            }
        };
        read_event_ids(bytes, &file.path, ids, max_ids)?;
    }
    Ok(())
}

/// Bytes of an id file read at once (64 K ids): the window is read in
/// ranges from the file's end, so loading it never holds a whole file (at
/// the default `--max-positions`, 64 MiB) beside the set.
const IDS_RANGE_BYTES: u64 = 16 * 65_536;

/// Adds the ids of a complete id file to `ids`, newest first (a cut keeps
/// the newest), until `ids` holds `max_ids`; or says why the file cannot be
/// read (missing or incomplete: the size is checked first, so nothing was
/// added; a read failing part-way leaves its ids, and the commit's Parquet
/// files add the rest).
async fn read_ids_file(
    store: &deltalake::logstore::ObjectStoreRef,
    file: &IdsFile,
    ids: &mut IdSet,
    max_ids: usize,
) -> Result<(), String> {
    let path = deltalake::Path::from(file.file.as_str());
    let size = store.head(&path).await.map_err(|e| e.to_string())?.size;
    let expected = file.ids.saturating_mul(16);
    if size != expected {
        return Err(format!(
            "{size} bytes where {} ids take {expected}",
            file.ids
        ));
    }
    let mut end = size;
    while end > 0 && ids.len() < max_ids {
        let start = end.saturating_sub(IDS_RANGE_BYTES);
        let bytes = store
            .get_range(&path, start..end)
            .await
            .map_err(|e| e.to_string())?;
        let newest_first: Vec<uuid::Uuid> = bytes
            .chunks_exact(16)
            .rev()
            .filter_map(|id| uuid::Uuid::from_slice(id).ok())
            .collect();
        for (i, id) in newest_first.iter().enumerate() {
            if ids.len() >= max_ids {
                break;
            }
            if let Some(ahead) = newest_first.get(i + PREFETCH_AHEAD) {
                ids.prefetch(ahead);
            }
            ids.insert(*id);
        }
        end = start;
    }
    Ok(())
}

/// Reads only the `event_id` column of one Parquet file into `ids`, until
/// `ids` holds `max_ids`.
pub fn read_event_ids(
    bytes: bytes::Bytes,
    path: &str,
    ids: &mut IdSet,
    max_ids: usize,
) -> Result<(), CompactorError> {
    for column in crate::table::one_column(bytes, path, "event_id")? {
        let column = arrow::compute::cast(&column?, &ArrowType::Utf8).map_err(|e| {
            CompactorError::Arrow {
                context: "cast event_id",
                source: e,
            }
        })?;
        let strings = column.as_string::<i32>();
        for i in 0..strings.len() {
            if ids.len() >= max_ids {
                return Ok(());
            }
            if strings.is_valid(i)
                && let Ok(id) = uuid::Uuid::try_parse(strings.value(i))
            {
                ids.insert(id);
            }
        }
    }
    Ok(())
}

/// The run's event ids, streamed to `_dedup/run-<run>-<random>.ids` under the
/// table root (16 raw bytes per id): the next runs' dedup window reads this
/// instead of parsing the ids back out of Parquet. The random part keeps two
/// racing runs of the same number off each other's file; the loser's is an
/// orphan that `vacuum` deletes.
pub(crate) struct IdsWriter {
    file: String,
    out: StreamedObject,
    /// The ids of the current batch, written by [`IdsWriter::write_batch`].
    batch: Vec<u8>,
    count: u64,
}

impl IdsWriter {
    pub(crate) fn new(table: &DeltaTable, run: i64, attempt: &str) -> Self {
        let file = format!("{}/run-{run:020}-{attempt}.ids", DEDUP_DIR);
        let display = format!(
            "{}/{file}",
            table.table_url().as_str().trim_end_matches('/')
        );
        Self {
            out: StreamedObject::new(table.object_store(), &file, display),
            file,
            batch: Vec::with_capacity(BATCH_ROWS * 16),
            count: 0,
        }
    }

    pub(crate) fn push(&mut self, id: &uuid::Uuid) {
        self.batch.extend_from_slice(id.as_bytes());
        self.count += 1;
    }

    pub(crate) async fn write_batch(&mut self) -> Result<(), CompactorError> {
        self.out.write(&self.batch).await?;
        self.batch.clear();
        Ok(())
    }

    /// Completes the upload; no file when the run wrote no rows.
    pub(crate) async fn finish(mut self) -> Result<Option<IdsFile>, CompactorError> {
        if self.count == 0 {
            return Ok(None);
        }
        self.write_batch().await?;
        self.out.finish().await?;
        Ok(Some(IdsFile {
            file: self.file,
            ids: self.count,
        }))
    }
}

/// The dedup window of a run: the ids of the newest `commits` compactor
/// commits of `state`, within `max_ids` (see [`window_ids`]); logs its size
/// and how long it took to read.
pub async fn window(
    table: &DeltaTable,
    state: &TableState,
    commits: usize,
    max_ids: usize,
    run_ids: usize,
) -> Result<IdSet, CompactorError> {
    let started = std::time::Instant::now();
    let newest = &state.commits[..commits.min(state.commits.len())];
    let seen = window_ids(table, newest, max_ids, run_ids).await?;
    tracing::info!(
        dedup_window_ids = seen.len(),
        dedup_window_ms = started.elapsed().as_millis(),
        "dedup window read"
    );
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_set_keeps_each_id_once_and_grows_past_its_reservation() {
        let mut set = IdSet::default();
        assert!(set.is_empty());
        assert!(!set.contains(&uuid::Uuid::nil()));
        set.reserve(1000);
        let slots = set.slots.len();
        let ids: Vec<uuid::Uuid> = (0..5000u128)
            .map(|i| uuid::Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) + 1))
            .collect();
        for id in &ids[..1000] {
            assert!(set.insert(*id));
        }
        assert_eq!(set.slots.len(), slots, "no growth within the reservation");
        for id in &ids {
            set.insert(*id);
        }
        assert_eq!(set.len(), 5000);
        for id in &ids {
            assert!(!set.insert(*id), "a second insert is a duplicate");
            assert!(set.contains(id));
        }
        assert!(!set.contains(&uuid::Uuid::from_u128(u128::MAX)));
        // The nil UUID (the empty-slot marker) is an id like any other.
        assert!(set.insert(uuid::Uuid::nil()));
        assert!(!set.insert(uuid::Uuid::nil()));
        assert!(set.contains(&uuid::Uuid::nil()));
        assert_eq!(set.len(), 5001);
    }
}
