//! The id index (`ids`), the date index (`dates`) and the query indexes
//! (`sources`, `sections`, `urls`) as sorted runs in files of our own,
//! merged in the background: a small LSM tree.
//!
//! Why not sled trees (measured; BENCHMARKS.md "Query indexes in sorted
//! runs", "The date index in the runs"): each article puts one entry at a
//! random place in each index, and in sled every such entry rewrites a
//! leaf and leaves garbage behind until segment cleaning. At a million
//! articles the trees no longer fit the cache, so every batch paged leaves
//! in and out: the three query indexes took ingest at 1M from 1.6 ×
//! PostgreSQL's rate to 0.57 ×, and the date index (whose entries carry
//! every field but the body) was the largest sled tree, most of sled's
//! memory and half of the writer's work; with it gone, `ids` (one entry
//! per article at a random place too) held most of sled's memory, which
//! grew with the archive (a program that only opened sled and read `ids`
//! held 190 MiB at 1M articles; the server 280), and its
//! reads were most of the writer's remaining sled time. Here a batch's
//! entries go to
//! memory and, once per batch, to one sequentially keyed sled value; every
//! 128 Ki entries they are written out as one sorted file, and files are
//! merged in the background.
//!
//! # Layout
//! - `query-runs/run-<id>.run` in the data directory: immutable files of
//!   sorted entries (key, and its value or that it is removed), written
//!   once and replaced only by a merge. A file is blocks of about 8 KiB of
//!   entries of one index, each checksummed and compressed the way that
//!   index is read ([`BlockCodec`]), then an index of
//!   the blocks (their first keys), a Bloom filter of its date and id
//!   keys ([`Bloom`]) and a footer; see [`Run`].
//! - `meta/query_runs` in sled: the manifest, the ids of the live runs,
//!   oldest first. Its presence means the entries describe every article;
//!   its version says whether the runs hold the date and id indexes (a
//!   store made before they did keeps them in the sled trees `dates` and
//!   `ids`, moved here at open).
//! - the `query_log` sled tree: per batch (keyed by its first sequence
//!   number, [`keys::u64_key`]), that batch's entry changes, written in
//!   the batch's own transaction; so whatever is not yet in a run is
//!   there, and an open replays it into memory. An entry is removed in the
//!   transaction that puts its changes in a run.
//!
//! A key is the index's tag byte ([`Index`]) followed by the key the index
//! would have had as a sled tree ([`keys::date_key`], [`keys::label_key`],
//! [`keys::url_index_key`]; the id itself). Only date and id entries have
//! values. Newer layers
//! win: the memtable being filled, then frozen memtables being written
//! out, then runs from newest to oldest; a removal hides older entries of
//! its key until a merge into the oldest run drops both. A range read
//! merges a block of every layer; a point read (a date or id entry by its
//! key) asks the memtables, then each run whose filter does not rule the
//! key out, newest first, and reads one block there.
//!
//! # Crash safety
//! A run file is written under a temporary name, synced, renamed and its
//! directory synced before the manifest names it; the manifest and the
//! trimming of `query_log` change in one sled transaction, flushed before
//! a merged-away file is deleted. A crash anywhere leaves either the old
//! manifest with its files and log, or the new one; files that no manifest
//! names are deleted at the next open.

use std::{
    collections::{BTreeMap, VecDeque},
    fs::File,
    io::{BufWriter, Write},
    ops::Bound,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc, Mutex, RwLock,
    },
    thread,
    time::Duration,
};

use sled::Transactional;
use tracing::warn;

use crate::{
    error::{Error, Result},
    store::{keys, Order},
};

/// The directory of the run files, in the data directory.
pub const RUNS_DIR: &str = "query-runs";
/// The sled tree of changes not yet in a run.
pub const QUERY_LOG_TREE: &str = "query_log";
/// The manifest's key in `meta`.
pub const MANIFEST_KEY: &str = "query_runs";
/// A memtable is written out as a run once it holds this many entries
/// (about 26,000 articles, five entries each; some 30 MiB of memory, the
/// date entries most of it).
pub const MEMTABLE_ENTRIES: usize = 128 * 1024;
/// Uncompressed bytes of entries per block of a run file.
const BLOCK_BYTES: usize = 8 * 1024;
thread_local! {
    // A zstd context is costly to create (a new one for each block read was
    // 12 % of a one-day range's time): one per thread, reused.
    static BLOCK_COMPRESSOR: std::cell::RefCell<zstd::zstd_safe::CCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::CCtx::create());
    static BLOCK_DECOMPRESSOR: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
}

/// Run files written before entries had values (keys only); still read.
const RUN_MAGIC_KEYS_ONLY: &[u8; 8] = b"AARUNS01";
/// Run files whose entries may carry values, with a filter of their date
/// keys.
const RUN_MAGIC_DATES_FILTER: &[u8; 8] = b"AARUNS02";
/// The same, with a filter of their date and id keys (the same layout).
const RUN_MAGIC_IDS_FILTER: &[u8; 8] = b"AARUNS03";
/// The same, with how each block is stored in its block index entry
/// ([`BlockCodec`]), and each block holding one index's entries.
const RUN_MAGIC: &[u8; 8] = b"AARUNS04";
/// Uncompressed bytes of entries a rebuild sorts in memory at a time.
const REBUILD_CHUNK_BYTES: usize = 64 * 1024 * 1024;
/// `index offset (u64) ‖ index length (u64) ‖ entries (u64) ‖ crc32 of the
/// index (u32) ‖ magic (8)`, little-endian: the footer of a keys-only run.
const FOOTER_KEYS_ONLY_BYTES: usize = 8 + 8 + 8 + 4 + 8;
/// The same, then `filter length (u64) ‖ crc32 of the filter (u32)` before
/// the magic: the footer of a run with values, whose date keys (and id
/// keys, in a run of [`RUN_MAGIC`]) have a Bloom filter ([`Bloom`]) right
/// after the block index.
const FOOTER_BYTES: usize = 8 + 8 + 8 + 4 + 8 + 4 + 8;
/// Entries taken from a memtable under one read lock: first a few (a
/// short page needs no more, and each is copied), then twice as many each
/// time, up to the most.
const FIRST_MEMTABLE_CHUNK: usize = 16;
const MEMTABLE_CHUNK: usize = 256;

/// One of the indexes kept here; its value is the tag byte of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    Sources = b'S' as isize,
    Sections = b'C' as isize,
    Urls = b'U' as isize,
    /// The date index: date key → date entry.
    Dates = b'D' as isize,
    /// The id index: id → what the id holds ([`super::index::IdState`]).
    Ids = b'I' as isize,
}

impl Index {
    /// The label and url indexes (their entries are keys alone).
    pub const LABELS: [Index; 3] = [Index::Sources, Index::Sections, Index::Urls];
    pub const ALL: [Index; 5] = [
        Index::Sources,
        Index::Sections,
        Index::Urls,
        Index::Dates,
        Index::Ids,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Index::Sources => "sources",
            Index::Sections => "sections",
            Index::Urls => "urls",
            Index::Dates => "dates",
            Index::Ids => "ids",
        }
    }

    fn tag(self) -> u8 {
        self as u8
    }

    #[cfg(test)]
    fn of_tag(tag: u8) -> Option<Index> {
        Index::ALL.into_iter().find(|index| index.tag() == tag)
    }

    /// Whether the index is read by key (its entries carry values), so
    /// its keys are in a run's filter.
    fn read_by_key(tag: u8) -> bool {
        tag == Index::Dates as u8 || tag == Index::Ids as u8
    }

    /// The stored key of `key` in this index.
    pub fn key(self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(key.len() + 1);
        out.push(self.tag());
        out.extend_from_slice(key);
        out
    }
}

/// A key, and its value when present (`None`: removed). Label and url
/// entries have empty values; date entries carry the entry.
pub(crate) type Entry = (Vec<u8>, Option<Vec<u8>>);
/// The changes of some batches, by key: later changes replaced earlier.
pub type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
type Memtable = Arc<RwLock<Changes>>;
/// Entries (key without the tag byte, value) read from an index.
pub(crate) type KeyValues = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send>;
type Layer = Box<dyn Iterator<Item = Result<Entry>> + Send>;

/// The layers a read sees, taken as one snapshot.
struct View {
    active: Memtable,
    /// Being written out, oldest first.
    frozen: Vec<Memtable>,
    /// Oldest first.
    runs: Vec<Arc<Run>>,
}

/// The query indexes' entries: memtables, run files, and the `query_log`
/// tree that makes the memtables durable.
pub(crate) struct RunIndex {
    inner: Arc<Inner>,
    flusher: Mutex<Option<Flusher>>,
}

struct Flusher {
    jobs: mpsc::Sender<Job>,
    thread: thread::JoinHandle<()>,
}

struct Inner {
    dir: PathBuf,
    meta: sled::Tree,
    log: sled::Tree,
    view: RwLock<Arc<View>>,
    next_run: AtomicU64,
    /// The `query_log` key of the newest batch in the active memtable.
    newest_batch: Mutex<Option<u64>>,
    /// Set to make the flusher stop what it is doing.
    stop: AtomicBool,
    /// Whether the manifest is of version 3 or later and every run it
    /// names could be read: the entries describe every article.
    complete: AtomicBool,
    /// Whether the runs hold the date index: a manifest of version 2 or
    /// later, every run of which could be read.
    holds_dates: AtomicBool,
    /// A memtable is frozen once it holds this many entries.
    memtable_entries: AtomicUsize,
    /// Held while the runs change (manifest and view): a flush appends a
    /// run, a merge replaces some with one.
    runs_change: Mutex<()>,
}

/// A frozen memtable to write out; `covered` is the `query_log` key of its
/// newest batch.
struct Job {
    memtable: Memtable,
    covered: u64,
}

impl RunIndex {
    /// Opens the runs of the data directory `path` and replays the
    /// `query_log` into memory. Runs that no manifest names (left by a
    /// crash) are deleted; a run the manifest names that cannot be opened
    /// leaves the index incomplete (see [`RunIndex::is_complete`]), to be
    /// rebuilt.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Io`].
    pub fn open(db: &sled::Db, path: &Path) -> Result<Self> {
        let dir = path.join(RUNS_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let meta = db.open_tree(super::META_TREE)?;
        let log = db.open_tree(QUERY_LOG_TREE)?;
        let manifest = match meta.get(MANIFEST_KEY)? {
            None => None,
            Some(bytes) => Some(decode_manifest(&bytes)?),
        };
        let version = manifest.as_ref().map_or(0, |(_, version)| *version);
        let named = manifest.map(|(ids, _)| ids).unwrap_or_default();
        let mut runs = Vec::new();
        let mut readable = true;
        for &id in &named {
            match Run::open(&dir, id) {
                Ok(run) => runs.push(Arc::new(run)),
                Err(e) => {
                    warn!(error = %e, "an index run cannot be read; the indexes it holds are rebuilt");
                    readable = false;
                }
            }
        }
        // Runs from before the date or id index moved here are rebuilt
        // with it. (Those of version 3 hold everything; the next manifest
        // written says 4.)
        let complete = readable && version >= MANIFEST_WITH_IDS;
        let holds_dates = readable && version >= MANIFEST_WITH_DATES;
        let mut next_run = named.iter().max().map_or(1, |id| id + 1);
        for file in std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        {
            let file = file.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            let name = file.file_name();
            let id = parse_run_name(&name.to_string_lossy());
            if let Some(id) = id {
                next_run = next_run.max(id + 1);
            }
            if id.is_none_or(|id| !named.contains(&id)) {
                std::fs::remove_file(file.path())
                    .map_err(|e| Error::io(format!("removing {}", file.path().display()), e))?;
            }
        }
        let mut active = Changes::new();
        let mut newest_batch = None;
        for entry in &log {
            let (key, value) = entry?;
            let batch = keys::parse_u64_key(&key).ok_or_else(|| Error::Corrupt {
                key: format!("{QUERY_LOG_TREE}/{key:?}"),
                reason: "not a batch key".into(),
            })?;
            let changes = decode_changes(&value).map_err(|reason| Error::Corrupt {
                key: format!("{QUERY_LOG_TREE}/{batch}"),
                reason,
            })?;
            active.extend(changes);
            newest_batch = Some(batch);
        }
        let index = Self {
            inner: Arc::new(Inner {
                dir,
                meta,
                log,
                view: RwLock::new(Arc::new(View {
                    active: Arc::new(RwLock::new(active)),
                    frozen: Vec::new(),
                    runs,
                })),
                next_run: AtomicU64::new(next_run),
                newest_batch: Mutex::new(newest_batch),
                stop: AtomicBool::new(false),
                complete: AtomicBool::new(complete),
                holds_dates: AtomicBool::new(holds_dates),
                memtable_entries: AtomicUsize::new(MEMTABLE_ENTRIES),
                runs_change: Mutex::new(()),
            }),
            flusher: Mutex::new(None),
        };
        if complete {
            index.freeze_if_full();
        }
        Ok(index)
    }

    /// Sets how many entries a memtable holds before it is written out
    /// (at least 1).
    pub fn set_memtable_entries(&self, entries: usize) {
        self.inner
            .memtable_entries
            .store(entries.max(1), Ordering::Relaxed);
        self.freeze_if_full();
    }

    /// Whether the entries describe every article (else they must be
    /// built before they are used: see `super::build_indexes`).
    pub fn is_complete(&self) -> bool {
        self.inner.complete.load(Ordering::Acquire)
    }

    /// The sled tree that the writer's transaction puts each batch's
    /// changes in ([`encode_changes`]).
    pub fn log_tree(&self) -> &sled::Tree {
        &self.inner.log
    }

    /// Makes a committed batch's changes visible; `batch` is the batch's
    /// `query_log` key. Called by the writer, after the transaction that
    /// wrote them to `query_log`.
    pub fn apply(&self, changes: Changes, batch: u64) {
        if changes.is_empty() {
            return;
        }
        let view = self.inner.snapshot();
        view.active
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(changes);
        *self.inner.lock_newest_batch() = Some(batch);
        self.freeze_if_full();
    }

    /// Freezes the active memtable once it is full, and hands it to the
    /// flusher (started on first use).
    fn freeze_if_full(&self) {
        let inner = &self.inner;
        let mut slot = self.lock_flusher();
        if inner.stop.load(Ordering::Acquire) || !inner.complete.load(Ordering::Acquire) {
            return;
        }
        let Some(job) = inner.freeze(inner.memtable_entries.load(Ordering::Relaxed)) else {
            return;
        };
        if slot.is_none() {
            let (jobs, receiver) = mpsc::channel();
            let worker = Arc::clone(inner);
            match thread::Builder::new()
                .name("archive-query-runs".into())
                .spawn(move || worker.flush_jobs(&receiver))
            {
                Ok(thread) => *slot = Some(Flusher { jobs, thread }),
                Err(e) => {
                    // The memtable stays frozen in memory and in the log;
                    // it is written out after the next start.
                    warn!(error = %e, "could not start the query-index flusher");
                    return;
                }
            }
        }
        if let Some(flusher) = slot.as_ref() {
            let _ = flusher.jobs.send(job);
        }
    }

    fn lock_flusher(&self) -> std::sync::MutexGuard<'_, Option<Flusher>> {
        self.flusher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the flusher (a run being written is abandoned; its changes
    /// stay in `query_log`) and waits for it.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(flusher) = self.lock_flusher().take() {
            drop(flusher.jobs);
            if flusher.thread.join().is_err() {
                tracing::error!("the query-index flusher panicked");
            }
        }
    }

    /// The keys of `index` in `(lower, upper)` (bounds without the tag
    /// byte), present in the newest layer that has them, in `order`.
    pub fn range(
        &self,
        index: Index,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        order: Order,
    ) -> Box<dyn Iterator<Item = Result<Vec<u8>>> + Send> {
        Box::new(
            self.range_entries(index, lower, upper, order)
                .map(|entry| entry.map(|(key, _)| key)),
        )
    }

    /// The entries (key without the tag byte, value) of `index` in
    /// `(lower, upper)`, present in the newest layer that has them, in
    /// `order`.
    pub fn range_entries(
        &self,
        index: Index,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        order: Order,
    ) -> KeyValues {
        let tagged = |bound: Bound<Vec<u8>>, end: bool| match bound {
            Bound::Included(key) => Bound::Included(index.key(&key)),
            Bound::Excluded(key) => Bound::Excluded(index.key(&key)),
            Bound::Unbounded if end => Bound::Excluded(vec![index.tag() + 1]),
            Bound::Unbounded => Bound::Included(vec![index.tag()]),
        };
        let merged =
            self.inner
                .snapshot()
                .merged(tagged(lower, false), tagged(upper, true), order, false);
        Box::new(merged.map(|entry| {
            entry.map(|(mut key, value)| {
                key.remove(0);
                (key, value.unwrap_or_default())
            })
        }))
    }

    /// The value of `key` in `index`, if it is present.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Corrupt`] from a run's block.
    pub fn get(&self, index: Index, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = index.key(key);
        let view = self.inner.snapshot();
        for table in std::iter::once(&view.active).chain(view.frozen.iter().rev()) {
            let table = table
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(value) = table.get(&key) {
                return Ok(value.clone());
            }
        }
        for run in view.runs.iter().rev() {
            if let Some(value) = run.find(&key)? {
                return Ok(value);
            }
        }
        Ok(None)
    }

    /// Every present key of every index, in key order, with its index.
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = Result<(Index, Vec<u8>)>> {
        self.inner
            .snapshot()
            .merged(
                Bound::Unbounded,
                Bound::Unbounded,
                Order::OldestFirst,
                false,
            )
            .map(|entry| {
                let (mut key, _) = entry?;
                let index = key
                    .first()
                    .copied()
                    .and_then(Index::of_tag)
                    .ok_or_else(|| Error::Corrupt {
                        key: format!("{RUNS_DIR}/{key:?}"),
                        reason: "not a query-index key".into(),
                    })?;
                key.remove(0);
                Ok((index, key))
            })
    }

    /// Whether `key` is present in `index`.
    pub fn contains(&self, index: Index, key: &[u8]) -> Result<bool> {
        let key = index.key(key);
        let mut layers = self.range_layers(
            Bound::Included(key.clone()),
            Bound::Included(key),
            Order::OldestFirst,
        );
        Ok(layers.next().transpose()?.is_some())
    }

    fn range_layers(&self, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>, order: Order) -> Merged {
        self.inner.snapshot().merged(lower, upper, order, false)
    }

    /// Entries held by each index (present ones), by walking them.
    #[cfg(test)]
    pub fn len(&self, index: Index) -> Result<u64> {
        let mut held = 0;
        for key in self.range(
            index,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::OldestFirst,
        ) {
            key?;
            held += 1;
        }
        Ok(held)
    }

    /// Replaces everything with `entries` (tagged key and value, in any
    /// order; each present): written out as sorted runs, merged into one,
    /// named by a new manifest, with `query_log` emptied in the same
    /// transaction. No batch may be applied meanwhile (the store is being
    /// opened or repaired).
    ///
    /// Returns how many entries were added and removed against what the
    /// index held before (an entry whose value changed counts once as
    /// added, unless `same(tagged key, old value, new value)` says the two
    /// values mean the same); when the old entries cannot be read, every
    /// new entry counts as added.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Io`]; the old state is then intact.
    pub fn rebuild(
        &self,
        entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
        same: impl Fn(&[u8], &[u8], &[u8]) -> bool,
    ) -> Result<Rebuilt> {
        self.stop();
        let inner = &self.inner;
        inner.stop.store(false, Ordering::Release);
        inner.complete.store(false, Ordering::Release);
        let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut chunk_bytes = 0usize;
        let mut runs = Vec::new();
        let mut written = 0u64;
        let mut write_chunk = |chunk: &mut Vec<(Vec<u8>, Vec<u8>)>| -> Result<()> {
            chunk.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            chunk.dedup_by(|a, b| a.0 == b.0);
            written += chunk.len() as u64;
            let expected = chunk.len() as u64;
            let entries = chunk.drain(..).map(|(key, value)| Ok((key, Some(value))));
            if let Some(run) = inner.write_run(entries, false, expected)? {
                runs.push(Arc::new(run));
            }
            Ok(())
        };
        for entry in entries {
            let (key, value) = entry?;
            chunk_bytes += key.len() + value.len() + 48;
            chunk.push((key, value));
            if chunk_bytes >= REBUILD_CHUNK_BYTES {
                write_chunk(&mut chunk)?;
                chunk_bytes = 0;
            }
        }
        write_chunk(&mut chunk)?;
        let runs = if runs.len() > 1 {
            let merged = View {
                active: Arc::default(),
                frozen: Vec::new(),
                runs: runs.clone(),
            }
            .merged(
                Bound::Unbounded,
                Bound::Unbounded,
                Order::OldestFirst,
                false,
            );
            let expected = runs.iter().map(|run| run.entries).sum();
            let one = inner.write_run(merged, false, expected)?;
            for run in &runs {
                run.delete();
            }
            one.map(Arc::new).into_iter().collect()
        } else {
            runs
        };
        let old = inner.snapshot();
        let rebuilt = compare(&old, &runs, written, &same);
        let logged: Vec<sled::IVec> = inner.log.iter().keys().collect::<sled::Result<_>>()?;
        inner.commit_manifest(&runs, &logged)?;
        *inner
            .newest_batch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        *inner
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(View {
            active: Arc::default(),
            frozen: Vec::new(),
            runs,
        });
        for run in &old.runs {
            run.delete();
        }
        inner.complete.store(true, Ordering::Release);
        inner.holds_dates.store(true, Ordering::Release);
        Ok(rebuilt)
    }

    /// Whether the runs hold the date index: every run of the manifest
    /// this index was opened with could be read, and that manifest is one
    /// of runs that hold it (or the index was rebuilt since). A manifest
    /// from before the date index moved to runs says no: then the date
    /// index is the sled tree `dates`.
    pub fn holds_dates(&self) -> bool {
        self.inner.holds_dates.load(Ordering::Acquire)
    }

    /// Removes the run files of the data directory `path` (for a
    /// conversion that starts over).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove_all(path: &Path) -> Result<()> {
        let dir = path.join(RUNS_DIR);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }
}

/// The value of `key` in `index` of the closed archive in the data
/// directory `path`, whose sled database `db` is: for tools and tests
/// that look into an archive no store has open. (Like an open, this
/// deletes run files that no manifest names.)
///
/// # Errors
/// [`Error::Storage`], [`Error::Io`] or [`Error::Corrupt`].
pub fn get_closed(db: &sled::Db, path: &Path, index: Index, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let runs = RunIndex::open(db, path)?;
    runs.get(index, key)
}

/// What a [`RunIndex::rebuild`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub added: u64,
    pub removed: u64,
}

/// Compares the entries of `old` with those of `new` (key order, both).
fn compare(
    old: &View,
    new: &[Arc<Run>],
    written: u64,
    same: &impl Fn(&[u8], &[u8], &[u8]) -> bool,
) -> Rebuilt {
    let all = |view: &View| {
        view.merged(
            Bound::Unbounded,
            Bound::Unbounded,
            Order::OldestFirst,
            false,
        )
    };
    let new = View {
        active: Arc::default(),
        frozen: Vec::new(),
        runs: new.to_vec(),
    };
    let mut rebuilt = Rebuilt::default();
    let (mut olds, mut news) = (all(old), all(&new));
    let (mut a, mut b) = (olds.next(), news.next());
    loop {
        match (&a, &b) {
            (None, None) => return rebuilt,
            (Some(Err(_)), _) | (_, Some(Err(_))) => {
                return Rebuilt {
                    added: written,
                    removed: 0,
                }
            }
            (Some(Ok((old_key, old_value))), Some(Ok((new_key, new_value))))
                if old_key == new_key =>
            {
                let (old_value, new_value) = (
                    old_value.as_deref().unwrap_or_default(),
                    new_value.as_deref().unwrap_or_default(),
                );
                if old_value != new_value && !same(old_key, old_value, new_value) {
                    rebuilt.added += 1;
                }
                (a, b) = (olds.next(), news.next());
            }
            (Some(Ok((old_key, _))), Some(Ok((new_key, _)))) if old_key < new_key => {
                rebuilt.removed += 1;
                a = olds.next();
            }
            (Some(Ok(_)), None) => {
                rebuilt.removed += 1;
                a = olds.next();
            }
            _ => {
                rebuilt.added += 1;
                b = news.next();
            }
        }
    }
}

impl Drop for RunIndex {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn snapshot(&self) -> Arc<View> {
        Arc::clone(
            &self
                .view
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Moves the active memtable to the frozen ones and returns the job
    /// that writes it out, if it holds at least `entries` entries and any
    /// batch at all.
    fn freeze(&self, entries: usize) -> Option<Job> {
        let mut current = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = current
            .active
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
            >= entries;
        let covered = (*self.lock_newest_batch()).filter(|_| full)?;
        let frozen = Arc::clone(&current.active);
        let mut layers = current.frozen.clone();
        layers.push(Arc::clone(&frozen));
        *current = Arc::new(View {
            active: Arc::default(),
            frozen: layers,
            runs: current.runs.clone(),
        });
        Some(Job {
            memtable: frozen,
            covered,
        })
    }

    fn lock_newest_batch(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.newest_batch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The flusher thread: writes out each frozen memtable, and has a
    /// thread of its own merge runs after each (so a long merge never
    /// holds up the next flush, and memtables do not pile up in memory). A
    /// failed flush is logged and tried again a second later (its changes
    /// stay in memory and in `query_log` meanwhile).
    fn flush_jobs(&self, jobs: &mpsc::Receiver<Job>) {
        thread::scope(|scope| {
            let (merges, wanted) = mpsc::channel::<()>();
            let merger = thread::Builder::new()
                .name("archive-query-merge".into())
                .spawn_scoped(scope, move || {
                    while wanted.recv().is_ok() {
                        while wanted.try_recv().is_ok() {}
                        if let Err(e) = self.merge() {
                            if !self.stop.load(Ordering::Acquire) {
                                warn!(error = %e, "merging query-index runs failed; the runs stay as they are");
                            }
                        }
                    }
                });
            if let Err(e) = &merger {
                warn!(error = %e, "could not start the query-index merger; runs are not merged until the next start");
            }
            while let Ok(job) = jobs.recv() {
                loop {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    match self.flush(&job) {
                        Ok(()) => break,
                        Err(Error::TaskFailed(_)) => return,
                        Err(e) => {
                            warn!(error = %e, "writing a query-index run failed; trying again");
                            thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
                let _ = merges.send(());
            }
        });
    }

    /// Writes `job`'s memtable as a run, names it in the manifest and
    /// trims `query_log` in one transaction, then puts the run in the
    /// memtable's place.
    fn flush(&self, job: &Job) -> Result<()> {
        // A frozen memtable no longer changes, so it is written out under
        // a read lock (readers take one too) rather than copied first.
        let table = job
            .memtable
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // With no older run, a removal hides nothing. (Runs appear only
        // here, so none can appear meanwhile.)
        let keep_removed = !self.snapshot().runs.is_empty();
        let entries = table
            .iter()
            .map(|(key, value)| Ok((key.clone(), value.clone())));
        let run = self.write_run(entries, keep_removed, table.len() as u64)?;
        drop(table);
        let trimmed: Vec<sled::IVec> = self
            .log
            .range(..=keys::u64_key(job.covered))
            .keys()
            .collect::<sled::Result<_>>()?;
        let _change = self.lock_runs_change();
        // A merge may have replaced some runs meanwhile: append to what is
        // there now.
        let mut named = self.snapshot().runs.clone();
        named.extend(run.map(Arc::new));
        self.commit_manifest(&named, &trimmed)?;
        let mut current = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Arc::new(View {
            active: Arc::clone(&current.active),
            frozen: current
                .frozen
                .iter()
                .filter(|table| !Arc::ptr_eq(table, &job.memtable))
                .cloned()
                .collect(),
            runs: named,
        });
        Ok(())
    }

    fn lock_runs_change(&self) -> std::sync::MutexGuard<'_, ()> {
        self.runs_change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Merges the newest runs while the one before the newest is no
    /// larger than it (a binary counter: at most about log2(entries /
    /// memtable) runs, each entry rewritten as often). A merge into the
    /// oldest run drops removals. Runs the flusher appends meanwhile stay
    /// after the merged one.
    fn merge(&self) -> Result<()> {
        loop {
            let runs = self.snapshot().runs.clone();
            let n = runs.len();
            if n < 2 || runs[n - 2].entries > runs[n - 1].entries {
                return Ok(());
            }
            let mut from = n - 2;
            // Take in older runs the merged one would not be smaller than.
            let mut size = runs[n - 2].entries + runs[n - 1].entries;
            while from > 0 && runs[from - 1].entries <= size {
                from -= 1;
                size += runs[from].entries;
            }
            let merging = &runs[from..];
            let merged = View {
                active: Arc::default(),
                frozen: Vec::new(),
                runs: merging.to_vec(),
            }
            .merged(
                Bound::Unbounded,
                Bound::Unbounded,
                Order::OldestFirst,
                from > 0,
            );
            let run = self.write_run(merged, from > 0, size)?;
            {
                let _change = self.lock_runs_change();
                // Only this thread removes runs, so `merging` is still
                // there, in a row, at `from`.
                let now = self.snapshot().runs.clone();
                let mut named = now[..from].to_vec();
                named.extend(run.map(Arc::new));
                named.extend_from_slice(&now[from + merging.len()..]);
                self.commit_manifest(&named, &[])?;
                let mut current = self
                    .view
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *current = Arc::new(View {
                    active: Arc::clone(&current.active),
                    frozen: current.frozen.clone(),
                    runs: named,
                });
            }
            for run in merging {
                run.delete();
            }
        }
    }

    /// Writes the manifest naming `runs` and removes `trimmed` from
    /// `query_log`, in one transaction, and flushes sled.
    fn commit_manifest(&self, runs: &[Arc<Run>], trimmed: &[sled::IVec]) -> Result<()> {
        let manifest = encode_manifest(&runs.iter().map(|run| run.id).collect::<Vec<_>>());
        (&self.meta, &self.log)
            .transaction(|(meta, log)| {
                meta.insert(MANIFEST_KEY, manifest.as_slice())?;
                for key in trimmed {
                    log.remove(key)?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<std::convert::Infallible>>(
                    (),
                )
            })
            .map_err(Error::from)?;
        self.meta.flush()?;
        Ok(())
    }

    /// Writes `entries` (sorted) as a new run file, durable under its name
    /// before this returns; `None` when there was nothing to write.
    /// Removals are written only when `keep_removed`.
    fn write_run(
        &self,
        entries: impl Iterator<Item = Result<Entry>>,
        keep_removed: bool,
        expected: u64,
    ) -> Result<Option<Run>> {
        let id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let path = run_path(&self.dir, id);
        let temporary = path.with_extension("tmp");
        let io = |doing: &str, e: std::io::Error| {
            Error::io(format!("{doing} {}", temporary.display()), e)
        };
        let file = File::create(&temporary).map_err(|e| io("creating", e))?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        let mut writer = RunWriter::new(expected);
        let written = (|| -> Result<u64> {
            for entry in entries {
                let (key, value) = entry?;
                if value.is_none() && !keep_removed {
                    continue;
                }
                if writer.entries % 4096 == 0 && self.stop.load(Ordering::Acquire) {
                    return Err(Error::TaskFailed(
                        "the query-index flusher was stopped".into(),
                    ));
                }
                writer
                    .push(&mut out, &key, value.as_deref())
                    .map_err(|e| io("writing", e))?;
            }
            writer.finish(&mut out).map_err(|e| io("writing", e))?;
            Ok(writer.entries)
        })();
        let finished = written.and_then(|written| {
            let file = out
                .into_inner()
                .map_err(|e| io("writing", e.into_error()))?;
            file.sync_all().map_err(|e| io("syncing", e))?;
            Ok(written)
        });
        match finished {
            Ok(0) => {
                let _ = std::fs::remove_file(&temporary);
                Ok(None)
            }
            Ok(_) => {
                std::fs::rename(&temporary, &path).map_err(|e| io("renaming", e))?;
                File::open(&self.dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
                Run::open(&self.dir, id).map(Some)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                Err(e)
            }
        }
    }
}

impl View {
    /// The entries of every layer in the bounds, newest layer first for a
    /// key, in `order`.
    fn merged(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        order: Order,
        keep_removed: bool,
    ) -> Merged {
        let mut layers: Vec<Layer> = Vec::new();
        for table in std::iter::once(&self.active).chain(self.frozen.iter().rev()) {
            layers.push(Box::new(MemtableIter {
                table: Arc::clone(table),
                lower: lower.clone(),
                upper: upper.clone(),
                order,
                buffer: VecDeque::new(),
                exhausted: false,
                chunk: FIRST_MEMTABLE_CHUNK,
            }));
        }
        for run in self.runs.iter().rev() {
            layers.push(Box::new(RunIter::new(
                Arc::clone(run),
                lower.clone(),
                upper.clone(),
                order,
            )));
        }
        Merged::new(layers, order, keep_removed)
    }
}

/// Layers merged by key; for a key in several, the first (newest) wins.
struct Merged {
    layers: Vec<Layer>,
    heads: Vec<Option<Entry>>,
    started: bool,
    order: Order,
    keep_removed: bool,
}

impl Merged {
    fn new(layers: Vec<Layer>, order: Order, keep_removed: bool) -> Self {
        Self {
            heads: Vec::new(),
            layers,
            started: false,
            order,
            keep_removed,
        }
    }
}

impl Iterator for Merged {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for layer in &mut self.layers {
                match layer.next().transpose() {
                    Ok(head) => self.heads.push(head),
                    Err(e) => return Some(Err(e)),
                }
            }
        }
        loop {
            let mut pick: Option<usize> = None;
            for (i, head) in self.heads.iter().enumerate() {
                let Some((key, _)) = head else { continue };
                let better = match pick.and_then(|p| self.heads[p].as_ref()) {
                    None => true,
                    Some((best, _)) => match self.order {
                        Order::OldestFirst => key < best,
                        Order::NewestFirst => key > best,
                    },
                };
                if better {
                    pick = Some(i);
                }
            }
            let pick = pick?;
            let winner = self.heads[pick].clone()?;
            for i in pick..self.heads.len() {
                if self.heads[i]
                    .as_ref()
                    .is_some_and(|(key, _)| *key == winner.0)
                {
                    match self.layers[i].next().transpose() {
                        Ok(next) => self.heads[i] = next,
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
            if winner.1.is_some() || self.keep_removed {
                return Some(Ok(winner));
            }
        }
    }
}

/// A memtable's entries in bounds, read a chunk at a time so the writer
/// is never held up by a long read.
struct MemtableIter {
    table: Memtable,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    order: Order,
    buffer: VecDeque<Entry>,
    exhausted: bool,
    /// Entries to take next time.
    chunk: usize,
}

impl Iterator for MemtableIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.exhausted {
            if empty_bounds(&self.lower, &self.upper) {
                self.exhausted = true;
                return None;
            }
            let table = self
                .table
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let range = table.range::<Vec<u8>, _>((self.lower.clone(), self.upper.clone()));
            let chunk: Vec<Entry> = match self.order {
                Order::OldestFirst => range
                    .take(self.chunk)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                Order::NewestFirst => range
                    .rev()
                    .take(self.chunk)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            drop(table);
            self.exhausted = chunk.len() < self.chunk;
            self.chunk = (self.chunk * 2).min(MEMTABLE_CHUNK);
            if let Some((last, _)) = chunk.last() {
                match self.order {
                    Order::OldestFirst => self.lower = Bound::Excluded(last.clone()),
                    Order::NewestFirst => self.upper = Bound::Excluded(last.clone()),
                }
            }
            self.buffer.extend(chunk);
        }
        self.buffer.pop_front().map(Ok)
    }
}

fn empty_bounds(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
            l >= u
        }
        _ => false,
    }
}

fn above_lower(key: &[u8], lower: &Bound<Vec<u8>>) -> bool {
    match lower {
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
        Bound::Unbounded => true,
    }
}

fn below_upper(key: &[u8], upper: &Bound<Vec<u8>>) -> bool {
    match upper {
        Bound::Included(u) => key <= u.as_slice(),
        Bound::Excluded(u) => key < u.as_slice(),
        Bound::Unbounded => true,
    }
}

/// A run file, open: its block index is in memory, its blocks are read
/// with `pread` when needed (the operating system caches them).
pub(crate) struct Run {
    id: u64,
    path: PathBuf,
    file: File,
    blocks: Vec<BlockInfo>,
    entries: u64,
    /// The filter of its keys that are read by key (`None` in a keys-only
    /// run: it has none).
    filter: Option<Bloom>,
    /// Whether that filter has the id keys (a run written before the ids
    /// moved here filters its date keys only).
    filter_has_ids: bool,
}

struct BlockInfo {
    offset: u64,
    len: u32,
    raw_len: u32,
    crc: u32,
    codec: BlockCodec,
    first_key: Vec<u8>,
}

/// How a block of a run file is stored. Each index gets the one that suits
/// how it is read (measured; BENCHMARKS.md "lz4 for the date index's
/// blocks"):
/// - date entries, lz4: they are read in ranges (a BASIC page) and one by
///   one (a filtered page's candidates, BatchGet in the BASIC view), each
///   of which decompresses a whole block; zstd took about four times as
///   long to undo (943 against 4,026 MB/s on the benchmark's fields) for
///   an eighth less disk;
/// - id entries, as they are: a GetArticle reads one block, and
///   decompressing it was a sixth of the server's time per Get;
/// - label and url keys, zstd: read only in ranges, and they shrink most.
///
/// Any block that would shrink by less than a tenth is stored as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockCodec {
    Stored = 0,
    Zstd = 1,
    Lz4 = 2,
}

impl BlockCodec {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(BlockCodec::Stored),
            1 => Some(BlockCodec::Zstd),
            2 => Some(BlockCodec::Lz4),
            _ => None,
        }
    }

    /// The one for a block whose entries are of the index tagged `tag`.
    fn for_tag(tag: Option<u8>) -> Self {
        match tag {
            Some(tag) if tag == Index::Ids as u8 => BlockCodec::Stored,
            Some(tag) if tag == Index::Dates as u8 => BlockCodec::Lz4,
            _ => BlockCodec::Zstd,
        }
    }
}

fn run_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("run-{id:020}.run"))
}

fn parse_run_name(name: &str) -> Option<u64> {
    name.strip_prefix("run-")?
        .strip_suffix(".run")?
        .parse()
        .ok()
}

impl Run {
    fn open(dir: &Path, id: u64) -> Result<Self> {
        let path = run_path(dir, id);
        let damaged = |reason: String| Error::Corrupt {
            key: path.display().to_string(),
            reason,
        };
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        let read_at = |buffer: &mut [u8], at: u64| {
            file.read_exact_at(buffer, at)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))
        };
        let mut magic = [0u8; 8];
        if bytes < FOOTER_KEYS_ONLY_BYTES as u64 {
            return Err(damaged("shorter than its footer".into()));
        }
        read_at(&mut magic, bytes - 8)?;
        let footer_bytes = match &magic {
            RUN_MAGIC_KEYS_ONLY => FOOTER_KEYS_ONLY_BYTES,
            RUN_MAGIC | RUN_MAGIC_IDS_FILTER | RUN_MAGIC_DATES_FILTER
                if bytes >= FOOTER_BYTES as u64 =>
            {
                FOOTER_BYTES
            }
            _ => return Err(damaged("no run footer".into())),
        };
        let mut footer = vec![0u8; footer_bytes];
        read_at(&mut footer, bytes - footer_bytes as u64)?;
        let u64_at =
            |at: usize| u64::from_le_bytes(footer[at..at + 8].try_into().expect("8 bytes"));
        let u32_at =
            |at: usize| u32::from_le_bytes(footer[at..at + 4].try_into().expect("4 bytes"));
        let (index_offset, index_len, entries) = (u64_at(0), u64_at(8), u64_at(16));
        let index_crc = u32_at(24);
        let (filter_len, filter_crc) = if footer_bytes == FOOTER_BYTES {
            (u64_at(28), Some(u32_at(36)))
        } else {
            (0, None)
        };
        let end = index_offset
            .checked_add(index_len)
            .and_then(|end| end.checked_add(filter_len));
        if end != Some(bytes - footer_bytes as u64) {
            return Err(damaged("its block index is out of place".into()));
        }
        let filter = match filter_crc {
            None => None,
            Some(crc) => {
                let mut filter = vec![
                    0u8;
                    usize::try_from(filter_len)
                        .map_err(|_| damaged("filter too large".into()))?
                ];
                read_at(&mut filter, index_offset + index_len)?;
                if crc32fast::hash(&filter) != crc {
                    return Err(damaged("its key filter fails its checksum".into()));
                }
                Some(
                    Bloom::from_bytes(&filter)
                        .ok_or_else(|| damaged("its key filter is cut short".into()))?,
                )
            }
        };
        let mut index = vec![
            0u8;
            usize::try_from(index_len)
                .map_err(|_| damaged("block index too large".into()))?
        ];
        file.read_exact_at(&mut index, index_offset)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if crc32fast::hash(&index) != index_crc {
            return Err(damaged("its block index fails its checksum".into()));
        }
        let mut blocks = Vec::new();
        let mut at = 0usize;
        while at < index.len() {
            let mut take = |n: usize| -> Result<&[u8]> {
                let slice = index
                    .get(at..at + n)
                    .ok_or_else(|| damaged("its block index is cut short".into()))?;
                at += n;
                Ok(slice)
            };
            let offset = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
            let raw_len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
            let codec = if &magic == RUN_MAGIC {
                let byte = take(1)?[0];
                BlockCodec::from_byte(byte)
                    .ok_or_else(|| damaged(format!("a block is stored in unknown way {byte}")))?
            } else if len == raw_len {
                BlockCodec::Stored
            } else {
                BlockCodec::Zstd
            };
            if codec == BlockCodec::Stored && len != raw_len {
                return Err(damaged("a stored block's lengths disagree".into()));
            }
            let key_len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            let first_key = take(key_len)?.to_vec();
            blocks.push(BlockInfo {
                offset,
                len,
                raw_len,
                crc,
                codec,
                first_key,
            });
        }
        Ok(Self {
            id,
            path,
            file,
            blocks,
            entries,
            filter,
            filter_has_ids: &magic == RUN_MAGIC || &magic == RUN_MAGIC_IDS_FILTER,
        })
    }

    /// `key`'s entry in this run: `Some(None)` for a removal, `None` when
    /// the run does not hold the key. A date or id key the filter rules
    /// out costs no read; otherwise one block is read and searched in
    /// place.
    fn find(&self, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        let filtered = match key.first() {
            Some(&tag) if tag == Index::Ids as u8 => self.filter_has_ids,
            Some(&tag) => Index::read_by_key(tag),
            None => false,
        };
        if filtered
            && self
                .filter
                .as_ref()
                .is_some_and(|filter| !filter.may_hold(key))
        {
            return Ok(None);
        }
        let Some(i) = self
            .blocks
            .partition_point(|b| b.first_key.as_slice() <= key)
            .checked_sub(1)
        else {
            return Ok(None);
        };
        let raw = self.raw_block(i)?;
        find_entry(&raw, key).map_err(|reason| Error::Corrupt {
            key: format!("{} block {i}", self.path.display()),
            reason,
        })
    }

    /// Block `i` decompressed, checked against its checksum.
    fn raw_block(&self, i: usize) -> Result<Vec<u8>> {
        let info = &self.blocks[i];
        let damaged = |reason: String| Error::Corrupt {
            key: format!("{} block {i}", self.path.display()),
            reason,
        };
        let mut compressed = vec![0u8; info.len as usize];
        self.file
            .read_exact_at(&mut compressed, info.offset)
            .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
        if crc32fast::hash(&compressed) != info.crc {
            return Err(damaged("fails its checksum".into()));
        }
        let raw = match info.codec {
            BlockCodec::Stored => return Ok(compressed),
            BlockCodec::Lz4 => lz4_flex::block::decompress(&compressed, info.raw_len as usize)
                .map_err(|e| damaged(format!("cannot be decompressed: {e}")))?,
            BlockCodec::Zstd => {
                let mut raw = Vec::with_capacity(info.raw_len as usize);
                BLOCK_DECOMPRESSOR
                    .with(|dctx| dctx.borrow_mut().decompress(&mut raw, &compressed))
                    .map_err(|code| {
                        damaged(format!(
                            "cannot be decompressed: {}",
                            zstd::zstd_safe::get_error_name(code)
                        ))
                    })?;
                raw
            }
        };
        if raw.len() != info.raw_len as usize {
            return Err(damaged(format!(
                "decompresses to {} bytes, not {}",
                raw.len(),
                info.raw_len
            )));
        }
        Ok(raw)
    }

    /// Deletes the file (readers that still hold it keep reading it: the
    /// open descriptor outlives the name).
    fn delete(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn!(error = %e, path = %self.path.display(), "could not delete a merged query-index run; the next start does");
        }
    }
}

/// Builds a run file's blocks, index, key filter and footer.
struct RunWriter {
    block: Vec<u8>,
    first_key: Vec<u8>,
    index: Vec<u8>,
    offset: u64,
    entries: u64,
    filter: Bloom,
}

impl RunWriter {
    /// A writer for a run of at most about `entries` entries (the filter's
    /// size).
    fn new(entries: u64) -> Self {
        Self {
            block: Vec::new(),
            first_key: Vec::new(),
            index: Vec::new(),
            offset: 0,
            entries: 0,
            filter: Bloom::for_keys(entries),
        }
    }

    fn push(
        &mut self,
        out: &mut impl Write,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> std::io::Result<()> {
        // A block holds one index's entries, so it is stored the way that
        // index is read.
        if !self.block.is_empty() && self.first_key.first() != key.first() {
            self.end_block(out)?;
        }
        if self.block.is_empty() {
            self.first_key = key.to_vec();
        }
        encode_entry(&mut self.block, key, value);
        if key.first().is_some_and(|&tag| Index::read_by_key(tag)) {
            self.filter.insert(key);
        }
        self.entries += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.end_block(out)?;
        }
        Ok(())
    }

    fn end_block(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let codec = BlockCodec::for_tag(self.first_key.first().copied());
        let compressed = match codec {
            BlockCodec::Stored => Vec::new(),
            BlockCodec::Lz4 => lz4_flex::block::compress(&self.block),
            BlockCodec::Zstd => {
                let mut compressed =
                    Vec::with_capacity(zstd::zstd_safe::compress_bound(self.block.len()));
                BLOCK_COMPRESSOR
                    .with(|cctx| cctx.borrow_mut().compress(&mut compressed, &self.block, 1))
                    .map_err(|code| std::io::Error::other(zstd::zstd_safe::get_error_name(code)))?;
                compressed
            }
        };
        let (codec, compressed) =
            if codec == BlockCodec::Stored || compressed.len() * 10 >= self.block.len() * 9 {
                (BlockCodec::Stored, self.block.clone())
            } else {
                (codec, compressed)
            };
        out.write_all(&compressed)?;
        self.index.extend_from_slice(&self.offset.to_le_bytes());
        self.index
            .extend_from_slice(&(compressed.len() as u32).to_le_bytes());
        self.index
            .extend_from_slice(&(self.block.len() as u32).to_le_bytes());
        self.index
            .extend_from_slice(&crc32fast::hash(&compressed).to_le_bytes());
        self.index.push(codec as u8);
        self.index
            .extend_from_slice(&(self.first_key.len() as u32).to_le_bytes());
        self.index.extend_from_slice(&self.first_key);
        self.offset += compressed.len() as u64;
        self.block.clear();
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.end_block(out)?;
        out.write_all(&self.index)?;
        let filter = self.filter.to_bytes();
        out.write_all(&filter)?;
        let mut footer = Vec::with_capacity(FOOTER_BYTES);
        footer.extend_from_slice(&self.offset.to_le_bytes());
        footer.extend_from_slice(&(self.index.len() as u64).to_le_bytes());
        footer.extend_from_slice(&self.entries.to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(&self.index).to_le_bytes());
        footer.extend_from_slice(&(filter.len() as u64).to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(&filter).to_le_bytes());
        footer.extend_from_slice(RUN_MAGIC);
        out.write_all(&footer)
    }
}

/// A run's entries in bounds, a block at a time, in either direction.
/// A block is decompressed whole but its entries are copied out only when
/// they are returned: a short page takes a few entries of a block of each
/// run, and copying the rest was most of its time.
struct RunIter {
    run: Arc<Run>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    order: Order,
    /// The next block to read; `None` when done.
    next_block: Option<usize>,
    /// The block being read, and its entries' places in it, in the order
    /// they are returned (last first when reading backwards).
    raw: Vec<u8>,
    spans: VecDeque<Span>,
}

/// Where an entry is in a decompressed block.
struct Span {
    key: std::ops::Range<usize>,
    value: Option<std::ops::Range<usize>>,
}

/// The places of the entries [`encode_entry`] wrote into `raw`, in order.
fn entry_spans(raw: &[u8]) -> std::result::Result<Vec<Span>, String> {
    let mut spans = Vec::new();
    let mut at = 0usize;
    let length = |at: usize| -> std::result::Result<usize, String> {
        raw.get(at..at + 4)
            .map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| "cut short".to_string())
    };
    while at < raw.len() {
        let flag = raw[at];
        let key_len = length(at + 1)?;
        let key = at + 5..at + 5 + key_len;
        at = key.end;
        let value = match flag {
            REMOVED => None,
            PRESENT => Some(at..at),
            PRESENT_WITH_VALUE => {
                let value_len = length(at)?;
                let value = at + 4..at + 4 + value_len;
                at = value.end;
                Some(value)
            }
            other => return Err(format!("unknown entry flag {other}")),
        };
        if at > raw.len() {
            return Err("cut short".into());
        }
        spans.push(Span { key, value });
    }
    Ok(spans)
}

impl RunIter {
    fn new(run: Arc<Run>, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>, order: Order) -> Self {
        let blocks = &run.blocks;
        let next_block = if empty_bounds(&lower, &upper) || blocks.is_empty() {
            None
        } else {
            match order {
                // The last block starting at or before the lower bound.
                Order::OldestFirst => Some(match &lower {
                    Bound::Unbounded => 0,
                    Bound::Included(l) | Bound::Excluded(l) => blocks
                        .partition_point(|b| b.first_key.as_slice() <= l.as_slice())
                        .saturating_sub(1),
                }),
                // The last block starting inside the upper bound.
                Order::NewestFirst => {
                    let inside = blocks.partition_point(|b| below_upper(&b.first_key, &upper));
                    inside.checked_sub(1)
                }
            }
        };
        Self {
            run,
            lower,
            upper,
            order,
            next_block,
            raw: Vec::new(),
            spans: VecDeque::new(),
        }
    }
}

impl Iterator for RunIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(span) = self.spans.pop_front() {
                let key = &self.raw[span.key.clone()];
                if above_lower(key, &self.lower) && below_upper(key, &self.upper) {
                    let value = span.value.map(|value| self.raw[value].to_vec());
                    return Some(Ok((key.to_vec(), value)));
                }
                let past = match self.order {
                    Order::OldestFirst => !below_upper(key, &self.upper),
                    Order::NewestFirst => !above_lower(key, &self.lower),
                };
                if past {
                    self.spans.clear();
                    self.next_block = None;
                    return None;
                }
                continue;
            }
            let block = self.next_block?;
            let read = self.run.raw_block(block).and_then(|raw| {
                let spans = entry_spans(&raw).map_err(|reason| Error::Corrupt {
                    key: format!("{} block {block}", self.run.path.display()),
                    reason,
                })?;
                Ok((raw, spans))
            });
            let (raw, spans) = match read {
                Ok(read) => read,
                Err(e) => {
                    self.next_block = None;
                    return Some(Err(e));
                }
            };
            self.raw = raw;
            match self.order {
                Order::OldestFirst => {
                    self.spans.extend(spans);
                    self.next_block = (block + 1 < self.run.blocks.len()).then_some(block + 1);
                }
                Order::NewestFirst => {
                    self.spans.extend(spans.into_iter().rev());
                    self.next_block = block.checked_sub(1);
                }
            }
        }
    }
}

/// A Bloom filter of a run's date and id keys, so a point read of the date
/// or id index reads a block of the one run that holds the key rather than
/// one of every run (and none for an id not yet stored, the writer's
/// commonest read): 10 bits a key and 7 probes, about 1 % false
/// positives.
/// Its hash must stay the same across builds (the filter is on disk), so
/// it is FNV-1a with a murmur3 finish, not `std`'s unspecified hasher.
struct Bloom {
    words: Vec<u64>,
}

const BLOOM_BITS_PER_KEY: u64 = 10;
const BLOOM_PROBES: u64 = 7;

impl Bloom {
    fn for_keys(keys: u64) -> Self {
        let bits = keys.saturating_mul(BLOOM_BITS_PER_KEY).max(64);
        Self {
            words: vec![0; usize::try_from(bits.div_ceil(64)).unwrap_or(usize::MAX)],
        }
    }

    fn hash(key: &[u8]) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }

    /// The bits of `key` in a filter of `bits` bits: double hashing from
    /// one 64-bit hash.
    fn bits(key: &[u8], bits: u64) -> impl Iterator<Item = u64> {
        let hash = Self::hash(key);
        let (first, step) = (hash, hash.rotate_left(32) | 1);
        (0..BLOOM_PROBES).map(move |i| first.wrapping_add(i.wrapping_mul(step)) % bits)
    }

    fn insert(&mut self, key: &[u8]) {
        for bit in Self::bits(key, self.words.len() as u64 * 64) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    fn may_hold(&self, key: &[u8]) -> bool {
        Self::bits(key, self.words.len() as u64 * 64)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.words
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() % 8 == 0 && !bytes.is_empty()).then(|| Self {
            words: bytes
                .chunks_exact(8)
                .map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes")))
                .collect(),
        })
    }
}

/// `key`'s entry in a decompressed block (see [`Run::find`]): a binary
/// search over the places of its entries (a run's blocks are sorted),
/// comparing keys where they are.
fn find_entry(raw: &[u8], key: &[u8]) -> std::result::Result<Option<Option<Vec<u8>>>, String> {
    let spans = entry_spans(raw)?;
    Ok(spans
        .binary_search_by(|span| raw[span.key.clone()].cmp(key))
        .ok()
        .map(|i| spans[i].value.clone().map(|value| raw[value].to_vec())))
}

/// Manifest versions: 1, runs of the label and url indexes; 2, runs that
/// hold the date index too; 3, and the id index; 4, run files may be of
/// [`RUN_MAGIC`] (blocks stored in more than one way). An older binary
/// refuses a newer manifest (it cannot be read as one it knows), so it
/// never takes a store whose date or id index is here for one whose index
/// is empty, nor meets a run file it cannot read.
const MANIFEST_KEYS_ONLY: u8 = 1;
const MANIFEST_WITH_DATES: u8 = 2;
const MANIFEST_WITH_IDS: u8 = 3;
const MANIFEST_VERSION: u8 = 4;

fn encode_manifest(runs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + runs.len() * 8);
    out.push(MANIFEST_VERSION);
    for id in runs {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// The run ids a manifest names, and its version.
fn decode_manifest(bytes: &[u8]) -> Result<(Vec<u64>, u8)> {
    match bytes.split_first() {
        Some((&version @ MANIFEST_KEYS_ONLY..=MANIFEST_VERSION, ids)) if ids.len() % 8 == 0 => {
            Ok((
                ids.chunks_exact(8)
                    .map(|id| u64::from_le_bytes(id.try_into().expect("8 bytes")))
                    .collect(),
                version,
            ))
        }
        _ => Err(Error::Corrupt {
            key: format!("{}/{MANIFEST_KEY}", super::META_TREE),
            reason: "not a query-run manifest".into(),
        }),
    }
}

/// Entry flags: removed; present with an empty value (all that run files
/// and logs written before values existed hold); present with a value.
const REMOVED: u8 = 0;
const PRESENT: u8 = 1;
const PRESENT_WITH_VALUE: u8 = 2;

/// Appends `flag (u8) ‖ key length (u32 LE) ‖ key`, then, for a non-empty
/// value, `value length (u32 LE) ‖ value`.
fn encode_entry(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    let flag = match value {
        None => REMOVED,
        Some([]) => PRESENT,
        Some(_) => PRESENT_WITH_VALUE,
    };
    out.push(flag);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    if let Some(value) = value.filter(|value| !value.is_empty()) {
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// The entries [`encode_entry`] wrote into `raw`, in order.
fn decode_entries(raw: &[u8]) -> std::result::Result<Vec<Entry>, String> {
    Ok(entry_spans(raw)?
        .into_iter()
        .map(|span| {
            (
                raw[span.key].to_vec(),
                span.value.map(|value| raw[value].to_vec()),
            )
        })
        .collect())
}

/// A batch's changes as `query_log` holds them: [`encode_entry`] each,
/// compressed with zstd.
pub fn encode_changes(changes: &Changes) -> Vec<u8> {
    let mut raw = Vec::with_capacity(changes.len() * 64);
    for (key, value) in changes {
        encode_entry(&mut raw, key, value.as_deref());
    }
    zstd::bulk::compress(&raw, 1).expect("zstd compresses any input into memory")
}

/// The inverse of [`encode_changes`].
fn decode_changes(bytes: &[u8]) -> std::result::Result<Changes, String> {
    let raw = zstd::stream::decode_all(bytes).map_err(|e| e.to_string())?;
    Ok(decode_entries(&raw)?.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs::OpenOptions;

    fn open(dir: &Path) -> (sled::Db, RunIndex) {
        // sled releases its directory lock a moment after the last handle
        // is dropped (its flusher thread lets go on its own time).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let db = loop {
            match sled::open(dir.join("db")) {
                Ok(db) => break db,
                Err(e)
                    if e.to_string().contains("lock") && std::time::Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("opening sled: {e}"),
            }
        };
        let index = RunIndex::open(&db, dir).unwrap();
        (db, index)
    }

    fn key(n: u16) -> Vec<u8> {
        format!("k{n:05}").into_bytes()
    }

    /// Applies `changes` as the writer does: logged, then applied.
    fn commit(index: &RunIndex, batch: u64, changes: Changes) {
        index
            .log_tree()
            .insert(keys::u64_key(batch), encode_changes(&changes))
            .unwrap();
        index.apply(changes, batch);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever the batches, the merged layers (memtable, frozen ones,
        /// runs merged in the background, and everything after a reopen)
        /// read like one ordered map, in both directions and in any bounds:
        /// keys alone in one index, keys with values (empty ones among
        /// them) in the date index.
        #[test]
        fn runs_read_like_one_ordered_map(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u16..3000, any::<bool>(), 0usize..3), 1..400), 1..30),
            lower in 0u16..3000,
            span in 0u16..3000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut model = std::collections::BTreeSet::new();
            let mut dates = BTreeMap::new();
            {
                let (_db, index) = open(dir.path());
                index.rebuild(std::iter::empty(), |_, _, _| true).unwrap();
                for (n, batch) in batches.iter().enumerate() {
                    let mut changes = Changes::new();
                    for (k, present, size) in batch {
                        let key_of = |index: Index| index.key(&key(*k));
                        // A value of 0, 5 or 600 bytes, different per batch.
                        let value = format!("{n:05}").repeat([0, 1, 120][*size]).into_bytes();
                        if *present {
                            changes.insert(key_of(Index::Sources), Some(Vec::new()));
                            changes.insert(key_of(Index::Dates), Some(value.clone()));
                            model.insert(*k);
                            dates.insert(*k, value);
                        } else {
                            changes.insert(key_of(Index::Sources), None);
                            changes.insert(key_of(Index::Dates), None);
                            model.remove(k);
                            dates.remove(k);
                        }
                    }
                    commit(&index, n as u64 + 1, changes);
                    // Small memtables, so runs and merges happen.
                    if n % 3 == 2 {
                        force_freeze(&index);
                    }
                }
                check_reads(&index, &model, lower, span)?;
                check_values(&index, &dates, lower, span)?;
            }
            let (_db, index) = open(dir.path());
            prop_assert!(index.is_complete());
            prop_assert!(index.holds_dates());
            check_reads(&index, &model, lower, span)?;
            check_values(&index, &dates, lower, span)?;
            // A rebuild from the same entries changes nothing.
            let entries: Vec<_> = index
                .range_entries(Index::Dates, Bound::Unbounded, Bound::Unbounded, Order::OldestFirst)
                .map(|entry| entry.map(|(k, v)| (Index::Dates.key(&k), v)))
                .chain(index.entries().filter_map(|entry| match entry {
                    Ok((Index::Dates, _)) => None,
                    Ok((index, key)) => Some(Ok((index.key(&key), Vec::new()))),
                    Err(e) => Some(Err(e)),
                }))
                .collect();
            let rebuilt = index.rebuild(entries.into_iter(), |_, _, _| false).unwrap();
            prop_assert_eq!(rebuilt, Rebuilt::default());
            check_values(&index, &dates, lower, span)?;
        }
    }

    /// Freezes the active memtable whatever its size, and writes it out
    /// and merges on this thread.
    fn force_freeze(index: &RunIndex) {
        if let Some(job) = index.inner.freeze(0) {
            index.inner.flush(&job).unwrap();
            index.inner.merge().unwrap();
        }
    }

    fn check_values(
        index: &RunIndex,
        model: &BTreeMap<u16, Vec<u8>>,
        lower: u16,
        span: u16,
    ) -> std::result::Result<(), TestCaseError> {
        let upper = lower.saturating_add(span);
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let got: Vec<(Vec<u8>, Vec<u8>)> = index
                .range_entries(
                    Index::Dates,
                    Bound::Included(key(lower)),
                    Bound::Excluded(key(upper)),
                    order,
                )
                .collect::<Result<_>>()
                .unwrap();
            let mut wanted: Vec<(Vec<u8>, Vec<u8>)> = model
                .range(lower..upper)
                .map(|(k, v)| (key(*k), v.clone()))
                .collect();
            if order == Order::NewestFirst {
                wanted.reverse();
            }
            prop_assert_eq!(got, wanted);
        }
        for k in [lower, upper.min(2999)] {
            prop_assert_eq!(
                index.get(Index::Dates, &key(k)).unwrap(),
                model.get(&k).cloned()
            );
        }
        Ok(())
    }

    fn check_reads(
        index: &RunIndex,
        model: &std::collections::BTreeSet<u16>,
        lower: u16,
        span: u16,
    ) -> std::result::Result<(), TestCaseError> {
        let upper = lower.saturating_add(span);
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let got: Vec<Vec<u8>> = index
                .range(
                    Index::Sources,
                    Bound::Included(key(lower)),
                    Bound::Excluded(key(upper)),
                    order,
                )
                .collect::<Result<_>>()
                .unwrap();
            let mut wanted: Vec<Vec<u8>> = model.range(lower..upper).map(|k| key(*k)).collect();
            if order == Order::NewestFirst {
                wanted.reverse();
            }
            prop_assert_eq!(got, wanted);
        }
        prop_assert_eq!(index.len(Index::Sources).unwrap(), model.len() as u64);
        prop_assert_eq!(index.len(Index::Urls).unwrap(), 0);
        for k in [lower, upper.min(2999)] {
            prop_assert_eq!(
                index.contains(Index::Sources, &key(k)).unwrap(),
                model.contains(&k)
            );
        }
        Ok(())
    }

    /// The filter never rules out a key it was given, rules out most
    /// others (about 1 % get through at 10 bits a key), and reads back as
    /// written.
    #[test]
    fn the_date_key_filter_keeps_every_key_and_few_others() {
        let mut filter = Bloom::for_keys(10_000);
        let held = |n: u32| Index::Dates.key(format!("held {n}").as_bytes());
        for n in 0..10_000 {
            filter.insert(&held(n));
        }
        let filter = Bloom::from_bytes(&filter.to_bytes()).unwrap();
        assert!((0..10_000).all(|n| filter.may_hold(&held(n))));
        let through = (0..10_000)
            .filter(|n| filter.may_hold(&Index::Dates.key(format!("other {n}").as_bytes())))
            .count();
        assert!(through < 300, "{through} of 10000 others get through");
        // Fixed across builds: the filter is on disk.
        assert_eq!(Bloom::hash(b""), 0xefd0_1f60_ba99_2926);
    }

    /// Blocks that would hardly shrink are stored as they are, and read
    /// back the same as compressed ones.
    #[test]
    fn incompressible_blocks_are_stored_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, index) = open(dir.path());
        // A value of 200 bytes from a simple generator: no repeats to find.
        let value = |k: u16| -> Vec<u8> {
            let mut state = u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            (0..200)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        };
        index
            .rebuild(
                (0..2000u16).map(|k| Ok((Index::Dates.key(&key(k)), value(k)))),
                |_, _, _| true,
            )
            .unwrap();
        let run = index.inner.snapshot().runs[0].clone();
        assert!(run
            .blocks
            .iter()
            .all(|block| block.len == block.raw_len && block.codec == BlockCodec::Stored));
        for k in [0, 999, 1999] {
            assert_eq!(index.get(Index::Dates, &key(k)).unwrap(), Some(value(k)));
        }
        let all: Vec<(Vec<u8>, Vec<u8>)> = index
            .range_entries(
                Index::Dates,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::NewestFirst,
            )
            .collect::<Result<_>>()
            .unwrap();
        let wanted: Vec<(Vec<u8>, Vec<u8>)> =
            (0..2000u16).rev().map(|k| (key(k), value(k))).collect();
        assert_eq!(all, wanted);
    }

    /// Compressible entries of a label index, the id index and (if asked)
    /// the date index, rebuilt into one run.
    fn three_indexes(index: &RunIndex, dates: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = (0..1500u16)
            .flat_map(|k| {
                let value = format!("entry {k} of a news article's fields, {}", k % 7).into_bytes();
                [
                    (Index::Sources.key(&key(k)), Vec::new()),
                    (Index::Dates.key(&key(k)), value.clone()),
                    (Index::Ids.key(&key(k)), value),
                ]
            })
            .filter(|(key, _)| dates || key[0] != Index::Dates as u8)
            .collect();
        index
            .rebuild(entries.clone().into_iter().map(Ok), |_, _, _| true)
            .unwrap();
        entries.sort();
        entries
    }

    fn all_entries(index: &RunIndex) -> Vec<(Vec<u8>, Vec<u8>)> {
        let snapshot = index.inner.snapshot();
        snapshot
            .merged(
                Bound::Unbounded,
                Bound::Unbounded,
                Order::OldestFirst,
                false,
            )
            .map(|entry| {
                let (key, value) = entry.unwrap();
                (key, value.unwrap_or_default())
            })
            .collect()
    }

    /// Each block holds one index's entries and is stored the way that
    /// index is read: label keys with zstd, date entries with lz4, id
    /// entries as they are.
    #[test]
    fn each_index_is_stored_its_own_way() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, index) = open(dir.path());
        let entries = three_indexes(&index, true);
        let run = index.inner.snapshot().runs[0].clone();
        for (i, block) in run.blocks.iter().enumerate() {
            let raw = run.raw_block(i).unwrap();
            let tags: std::collections::BTreeSet<u8> = entry_spans(&raw)
                .unwrap()
                .iter()
                .map(|span| raw[span.key.start])
                .collect();
            assert_eq!(tags.len(), 1, "block {i} mixes indexes");
            let expected = match block.first_key[0] {
                b'S' => BlockCodec::Zstd,
                b'D' => BlockCodec::Lz4,
                b'I' => BlockCodec::Stored,
                other => panic!("unexpected tag {other}"),
            };
            assert_eq!(block.codec, expected, "block {i}");
            assert!(expected == BlockCodec::Stored || block.len < block.raw_len);
        }
        assert_eq!(all_entries(&index), entries);
        for k in [0, 777, 1499] {
            let (key, value) = &entries[entries
                .binary_search_by(|(key_, _)| key_.as_slice().cmp(&Index::Dates.key(&key(k))))
                .unwrap()];
            assert_eq!(
                index.get(Index::Dates, &key[1..]).unwrap().as_ref(),
                Some(value)
            );
        }
    }

    /// A run file written before blocks said how they are stored (magic
    /// `AARUNS03`: a block is zstd unless its length is its raw length),
    /// named by a manifest of version 3, still reads, and the index is
    /// complete (nothing to rebuild): every store made before has them.
    #[test]
    fn run_files_of_the_format_before_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let entries = {
            let (db, index) = open(dir.path());
            // Only zstd and stored blocks: what the format before wrote.
            let entries = three_indexes(&index, false);
            let run = index.inner.snapshot().runs[0].clone();
            let bytes = std::fs::read(&run.path).unwrap();
            // Rewrite the file in the format before: the block index
            // without its codec bytes, and that footer.
            let tail = FOOTER_BYTES;
            let footer = &bytes[bytes.len() - tail..];
            let u64_at = |at: usize| u64::from_le_bytes(footer[at..at + 8].try_into().unwrap());
            let (index_offset, index_len) = (u64_at(0) as usize, u64_at(8) as usize);
            let filter = &bytes[index_offset + index_len..bytes.len() - tail];
            let mut old_index = Vec::new();
            for block in &run.blocks {
                assert!(block.codec != BlockCodec::Lz4);
                old_index.extend_from_slice(&block.offset.to_le_bytes());
                old_index.extend_from_slice(&block.len.to_le_bytes());
                old_index.extend_from_slice(&block.raw_len.to_le_bytes());
                old_index.extend_from_slice(&block.crc.to_le_bytes());
                old_index.extend_from_slice(&(block.first_key.len() as u32).to_le_bytes());
                old_index.extend_from_slice(&block.first_key);
            }
            let mut old = bytes[..index_offset].to_vec();
            old.extend_from_slice(&old_index);
            old.extend_from_slice(filter);
            old.extend_from_slice(&(index_offset as u64).to_le_bytes());
            old.extend_from_slice(&(old_index.len() as u64).to_le_bytes());
            old.extend_from_slice(&footer[16..24]);
            old.extend_from_slice(&crc32fast::hash(&old_index).to_le_bytes());
            old.extend_from_slice(&footer[28..40]);
            old.extend_from_slice(RUN_MAGIC_IDS_FILTER);
            drop(index);
            std::fs::write(&run.path, old).unwrap();
            // And the manifest of then, which says version 3.
            let meta = db.open_tree(super::super::META_TREE).unwrap();
            let mut manifest = meta.get(MANIFEST_KEY).unwrap().unwrap().to_vec();
            manifest[0] = MANIFEST_WITH_IDS;
            meta.insert(MANIFEST_KEY, manifest).unwrap();
            db.flush().unwrap();
            drop(db);
            entries
        };
        let (_db, index) = open(dir.path());
        assert!(index.is_complete());
        let run = index.inner.snapshot().runs[0].clone();
        assert!(run.filter_has_ids);
        assert!(run
            .blocks
            .iter()
            .any(|block| block.codec == BlockCodec::Zstd));
        assert_eq!(all_entries(&index), entries);
        assert_eq!(
            index.get(Index::Ids, &key(42)).unwrap(),
            Some(
                entries
                    .iter()
                    .find(|(k, _)| *k == Index::Ids.key(&key(42)))
                    .unwrap()
                    .1
                    .clone()
            )
        );
    }

    #[test]
    fn a_damaged_block_is_reported_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, index) = open(dir.path());
        index
            .rebuild(
                (0..5000u16).map(|k| Ok((Index::Urls.key(&key(k)), Vec::new()))),
                |_, _, _| true,
            )
            .unwrap();
        let run = index.inner.snapshot().runs[0].clone();
        let offset = run.blocks[1].offset + 3;
        let file = OpenOptions::new().write(true).open(&run.path).unwrap();
        file.write_all_at(&[0xAA], offset).unwrap();
        let error = index
            .range(
                Index::Urls,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::OldestFirst,
            )
            .find_map(std::result::Result::err)
            .expect("the damage is found");
        let text = error.to_string();
        assert!(
            text.contains("block 1") && text.contains("checksum"),
            "{text}"
        );
    }
}
