//! The sled store: point reads, date-range scans, and writes through the
//! single writer.
//!
//! Layout on disk (one sled database in the data directory):
//! - tree `articles`: id → record ([`record`]), the primary copy;
//! - tree `by_date`: `seconds ‖ nanos ‖ id` ([`keys`]) → empty, the date index,
//!   derived from `articles` and changed in the same transaction;
//! - tree `meta`: the page-token signing key, the data format version, and
//!   a marker that is set while a process has the store open (so the next
//!   open knows whether the last one stopped cleanly);
//! - tree `quarantine`: records that `check --repair` found damaged, moved out
//!   of `articles` byte for byte so they are kept but not served.
//!
//! The store refuses writes while the disk is short of space and takes them
//! again when there is room; a write that sled itself fails (a disk turned
//! read-only) makes it refuse writes until a restart. Reads go on (after a
//! sled failure, as far as sled allows; see `writer`).
//!
//! The store knows nothing of gRPC: it takes validated [`Article`]s and hands
//! back [`StoredArticle`]s.

pub mod keys;
pub mod record;
mod writer;

use std::{
    convert::Infallible,
    mem::ManuallyDrop,
    ops::Bound,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    sync::Arc,
    thread,
    time::Duration,
};

use sled::Transactional;
use tokio::sync::{mpsc, oneshot, watch};

pub use writer::{BatchLimits, WriteOutcome};

use crate::{
    article::{Article, ArticleId, StoredArticle, Timestamp},
    error::{Error, Result},
};

const ARTICLES_TREE: &str = "articles";
const BY_DATE_TREE: &str = "by_date";
const META_TREE: &str = "meta";
const QUARANTINE_TREE: &str = "quarantine";
const OPEN_MARKER_KEY: &str = "open";
const PAGE_TOKEN_KEY: &str = "page_token_key";
const FORMAT_KEY: &str = "format";
const FORMAT_VERSION: &[u8] = b"1";

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory; created when missing.
    pub path: PathBuf,
    /// sled's page cache size in bytes. sled's own default (1 GiB) is too much
    /// for a small service, and it is a target, not a hard cap.
    pub cache_capacity_bytes: u64,
    /// Bounds on one group commit.
    pub batch_limits: BatchLimits,
    /// Articles that may wait for the writer before submitters are made to
    /// wait too (back-pressure on ingest streams).
    pub queue_capacity: usize,
    /// Article bytes (title and body) that may wait for the writer or be in
    /// its current batch; past this, submitters wait. Bounds the memory that
    /// many concurrent ingest streams can pin, whatever the article size.
    pub queue_bytes: usize,
    /// zstd-compress stored pages (sled's `compression` feature, which this
    /// crate's `compression` feature turns on). Fixed when the directory is
    /// created.
    pub compression: bool,
    /// How often a store that refuses writes for lack of space looks at the
    /// free space again.
    pub recovery_interval: Duration,
    /// Writes are refused while the data directory's filesystem has less
    /// than this free, so sled never runs into a full disk (which it does not
    /// survive without a restart). 0 turns the check off.
    pub min_free_bytes: u64,
}

impl StoreConfig {
    /// Default settings for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            batch_limits: BatchLimits::default(),
            queue_capacity: 4096,
            queue_bytes: 64 * 1024 * 1024,
            compression: false,
            recovery_interval: Duration::from_secs(2),
            min_free_bytes: 256 * 1024 * 1024,
        }
    }

    fn open_sled(&self) -> Result<sled::Db> {
        sled::Config::new()
            .path(&self.path)
            .cache_capacity(self.cache_capacity_bytes)
            .use_compression(self.compression)
            .open()
            .map_err(|e| open_error(&self.path, e))
    }
}

/// The sled handles shared by readers and the writer.
#[derive(Clone)]
pub(crate) struct Trees {
    db: sled::Db,
    articles: sled::Tree,
    by_date: sled::Tree,
}

impl Trees {
    fn open(db: sled::Db) -> Result<Self> {
        Ok(Self {
            articles: db.open_tree(ARTICLES_TREE)?,
            by_date: db.open_tree(BY_DATE_TREE)?,
            db,
        })
    }
}

/// Whether the store can take writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteHealth {
    /// Writes are being accepted.
    Writable,
    /// The disk is short of space; writes are refused until there is room,
    /// then taken again. Holds the reason.
    DiskLow(String),
    /// A write or sync failed; writes are refused until a restart. Holds
    /// the reason.
    Failed(String),
}

/// What the readers and the writer share.
pub(crate) struct Shared {
    /// Dropped by hand: see `Drop for Shared`.
    trees: ManuallyDrop<Trees>,
    health: watch::Sender<WriteHealth>,
    config: StoreConfig,
    /// The data directory, opened to sync its filesystem after each commit.
    dir: std::fs::File,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if matches!(*self.health.borrow(), WriteHealth::Failed(_)) {
            // sled waits forever in the final flush of a handle whose write
            // failed; what was acknowledged is on disk already, so the
            // handles are left for the process exit to close.
            return;
        }
        // SAFETY: dropped once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.trees) }
    }
}

/// A handle to the archive's storage. Cheap to clone; every clone shares one
/// database and one writer. The writer thread stops once the last clone is
/// dropped, after finishing what was queued.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Bounded, so a burst of ingest waits here instead of growing the heap.
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<writer::WriteRequest>>,
    /// KiB of article text queued or being committed; see
    /// [`StoreConfig::queue_bytes`].
    queued_kib: Arc<tokio::sync::Semaphore>,
    queued_kib_limit: u32,
    /// Joined on drop, so that once the last handle is gone the writer has
    /// finished and sled has released the directory lock.
    writer: Option<thread::JoinHandle<()>>,
    /// HMAC key for page tokens; kept in the database so tokens outlive a
    /// restart.
    page_token_key: [u8; 32],
    /// Whether the process that had the store open before stopped cleanly.
    closed_cleanly: bool,
    /// Cleared to keep the open marker at close, so the next server start
    /// checks the store again.
    clear_open_marker: AtomicBool,
}

/// Which end of the date order a scan starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// Ascending (published_at, id).
    OldestFirst,
    /// Descending (published_at, id).
    NewestFirst,
}

/// A half-open range of publication times; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateRange {
    /// Inclusive lower bound.
    pub start: Option<Timestamp>,
    /// Exclusive upper bound.
    pub end: Option<Timestamp>,
}

impl DateRange {
    /// Whether `at` lies inside the range.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start.is_none_or(|start| start <= at) && self.end.is_none_or(|end| at < end)
    }
}

/// A place in the date order: a scan can resume strictly after it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Publication time of the article at this place.
    pub published_at: Timestamp,
    /// Its id, which breaks ties between equal times.
    pub id: ArticleId,
}

/// A waiting acknowledgement for one submitted article.
pub struct PendingWrite(oneshot::Receiver<Result<WriteOutcome>>);

impl PendingWrite {
    /// Waits until the article is flushed (or the write failed).
    ///
    /// # Errors
    /// The storage error that failed the group commit, or [`Error::Closed`]
    /// when the writer stopped first.
    pub async fn outcome(self) -> Result<WriteOutcome> {
        self.0.await.unwrap_or(Err(Error::Closed))
    }
}

/// What [`Store::repair_index`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Index entries added for records that had none at their date.
    pub added: u64,
    /// Index entries removed: orphans, wrong dates, undecodable keys.
    pub removed: u64,
    /// Damaged records moved from `articles` to the `quarantine` tree.
    pub quarantined: u64,
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records in the primary tree.
    pub records: u64,
    /// Records that are damaged: an invalid key, undecodable, or content
    /// that does not match its hash. Only a good copy can restore them.
    pub damaged_records: u64,
    /// Entries in the date index.
    pub index_entries: u64,
    /// One line per inconsistency; empty when the store is sound.
    pub problems: Vec<String>,
}

impl Store {
    /// Opens (or creates) the store and starts its writer thread.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] when another process has the directory open,
    /// [`Error::Storage`] for anything else sled refuses.
    pub fn open(config: &StoreConfig) -> Result<Self> {
        if config.compression && !cfg!(feature = "compression") {
            return Err(Error::Config(
                "--compression needs a binary built with `--features compression`".into(),
            ));
        }
        let trees = Trees::open(config.open_sled()?)?;
        let page_token_key = init_meta(&trees.db)?;
        let closed_cleanly = set_open_marker(&trees.db)?;
        let dir = std::fs::File::open(&config.path).map_err(|e| Error::DataDir {
            path: config.path.clone(),
            doing: "opening it to sync its filesystem",
            source: Arc::new(e),
        })?;

        let (health, _) = watch::channel(WriteHealth::Writable);
        let shared = Arc::new(Shared {
            trees: ManuallyDrop::new(trees),
            health,
            config: config.clone(),
            dir,
        });
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let queued_kib_limit = u32::try_from(config.queue_bytes / 1024)
            .unwrap_or(u32::MAX)
            .max(1);
        let writer_shared = Arc::clone(&shared);
        let limits = config.batch_limits;
        let writer = thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || writer::run(&writer_shared, receiver, limits))
            .map_err(|e| Error::io("starting the writer thread", e))?;

        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                queue: Some(queue),
                queued_kib: Arc::new(tokio::sync::Semaphore::new(queued_kib_limit as usize)),
                queued_kib_limit,
                writer: Some(writer),
                page_token_key,
                closed_cleanly,
                clear_open_marker: AtomicBool::new(true),
            }),
        })
    }

    /// Whether the last process that had this store open closed it cleanly.
    /// `false` after a crash or a kill: then [`Store::check`] (or
    /// [`Store::check_after_unclean_stop`]) is worth running.
    pub fn closed_cleanly(&self) -> bool {
        self.inner.closed_cleanly
    }

    /// Keeps the "open" marker when this store is closed, so the next server
    /// start checks the store again (used when a check found problems that
    /// were left alone).
    pub fn check_again_at_next_open(&self) {
        self.inner.clear_open_marker.store(false, Ordering::Relaxed);
    }

    /// Whether the store takes writes now, and every change after this.
    /// Health follows it.
    pub fn write_health(&self) -> watch::Receiver<WriteHealth> {
        self.inner.shared.health.subscribe()
    }

    /// The stored article with this id, if any.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`].
    pub fn get(&self, id: &ArticleId) -> Result<Option<StoredArticle>> {
        match self.inner.shared.trees.articles.get(id.as_str())? {
            Some(bytes) => decode_record(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Queues an article for the writer. Waits while the queue is full, so
    /// callers feel back-pressure; the returned [`PendingWrite`] resolves once
    /// the article is durable.
    ///
    /// # Errors
    /// [`Error::Closed`] when the writer has stopped.
    pub async fn submit(&self, article: Article) -> Result<PendingWrite> {
        let (reply, outcome) = oneshot::channel();
        let queue = self.inner.queue.as_ref().ok_or(Error::Closed)?;
        // An article larger than the whole budget takes all of it.
        let kib = u32::try_from(writer::approximate_size(&article) / 1024 + 1)
            .unwrap_or(u32::MAX)
            .min(self.inner.queued_kib_limit);
        let queued = Arc::clone(&self.inner.queued_kib)
            .acquire_many_owned(kib)
            .await
            .map_err(|_| Error::Closed)?;
        queue
            .send(writer::WriteRequest {
                article,
                reply,
                _queued: queued,
            })
            .await
            .map_err(|_| Error::Closed)?;
        Ok(PendingWrite(outcome))
    }

    /// Articles in `range`, in `order`, starting strictly after `after` when
    /// given. Blocking: call it off the async runtime.
    ///
    /// An index entry whose record has moved (an update raced with the scan)
    /// is skipped: the article is found at its new place instead.
    pub fn scan(&self, range: DateRange, order: Order, after: Option<&Position>) -> DateScan {
        let trees = &self.inner.shared.trees;
        let key_of = |p: &Position| keys::date_key(p.published_at, &p.id);
        let lower = match (order, after) {
            (Order::OldestFirst, Some(p)) => Bound::Excluded(key_of(p)),
            _ => range.start.map_or(Bound::Unbounded, |t| {
                Bound::Included(keys::timestamp_prefix(t).to_vec())
            }),
        };
        let upper = match (order, after) {
            (Order::NewestFirst, Some(p)) => Bound::Excluded(key_of(p)),
            _ => range.end.map_or(Bound::Unbounded, |t| {
                Bound::Excluded(keys::timestamp_prefix(t).to_vec())
            }),
        };
        let empty = match (&lower, &upper) {
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
            _ => false,
        };
        let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + Send> =
            if empty {
                Box::new(std::iter::empty())
            } else {
                let iter = trees.by_date.range::<Vec<u8>, _>((lower, upper));
                match order {
                    Order::OldestFirst => Box::new(iter),
                    Order::NewestFirst => Box::new(iter.rev()),
                }
            };
        DateScan {
            entries,
            articles: trees.articles.clone(),
        }
    }

    /// The key that signs page tokens for this archive.
    pub fn page_token_key(&self) -> &[u8; 32] {
        &self.inner.page_token_key
    }

    /// Flushes everything written so far to disk. Blocking.
    ///
    /// # Errors
    /// [`Error::Storage`] when the flush fails.
    pub fn flush(&self) -> Result<()> {
        self.inner.shared.trees.db.flush()?;
        Ok(())
    }

    /// Flushes and gives up this handle, off the async workers: when it is
    /// the last handle, dropping it waits for the writer to finish its queue
    /// and for sled's final flush, which block. A store whose writes had
    /// failed is not flushed (there is nothing acknowledged left unsynced,
    /// and sled cannot flush a failed handle).
    ///
    /// # Errors
    /// [`Error::Storage`] when the flush fails.
    pub async fn close(self) -> Result<()> {
        tokio::task::spawn_blocking(move || {
            if !matches!(*self.inner.shared.health.borrow(), WriteHealth::Failed(_)) {
                self.flush()?;
            }
            drop(self);
            Ok(())
        })
        .await
        .map_err(|e| Error::TaskFailed(e.to_string()))?
    }

    /// Opens a store off the async workers (opening reads and may recover
    /// sled's log, which blocks).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub async fn open_async(config: StoreConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open(&config))
            .await
            .map_err(|e| Error::TaskFailed(e.to_string()))?
    }

    /// Verifies that every record decodes and matches its hash, that each has
    /// exactly one index entry at its date, and that every index entry points
    /// at a record with that date. Blocking, and reads everything.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot be read at all.
    pub fn check(&self) -> Result<CheckReport> {
        let trees = &self.inner.shared.trees;
        let mut report = CheckReport::default();
        for entry in &trees.articles {
            let (key, value) = entry?;
            report.records += 1;
            let shown = String::from_utf8_lossy(&key).into_owned();
            let Ok(id) = std::str::from_utf8(&key)
                .map_err(drop)
                .and_then(|s| ArticleId::parse("id", s).map_err(drop))
            else {
                report
                    .problems
                    .push(format!("record key {shown:?} is not a valid id"));
                report.damaged_records += 1;
                continue;
            };
            match record::decode(&id, &value) {
                Err(reason) => {
                    report.problems.push(format!("record {id}: {reason}"));
                    report.damaged_records += 1;
                }
                Ok(stored) => {
                    if stored.content.sha256() != stored.content_sha256 {
                        report.problems.push(format!(
                            "record {id}: content does not match content_sha256"
                        ));
                        report.damaged_records += 1;
                    }
                    let key = keys::date_key(stored.content.published_at, &id);
                    if !trees.by_date.contains_key(key)? {
                        report
                            .problems
                            .push(format!("record {id}: no index entry at its date"));
                    }
                }
            }
        }
        for entry in &trees.by_date {
            let (key, _) = entry?;
            report.index_entries += 1;
            let Some((published_at, id)) = keys::parse_date_key(&key) else {
                report
                    .problems
                    .push(format!("index key {key:?} cannot be decoded"));
                continue;
            };
            match trees.articles.get(id.as_str())? {
                None => report
                    .problems
                    .push(format!("index entry for {id}: no such record")),
                Some(bytes) => match record::decode_header(&bytes) {
                    Ok(header) if header.published_at != published_at => report
                        .problems
                        .push(format!("index entry for {id}: record has another date")),
                    // Undecodable records were reported above.
                    _ => {}
                },
            }
        }
        Ok(report)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish its last batch and exit.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the writer thread panicked");
            }
        }
        let clear = self.clear_open_marker.load(Ordering::Relaxed);
        // No write on a disk short of space or after a failure: the marker
        // stays, and the next start checks the store.
        if clear && *self.shared.health.borrow() == WriteHealth::Writable {
            if let Err(e) = clear_open_marker(&self.shared.trees.db) {
                tracing::warn!(error = %e, "could not record the clean close; the next start checks the store");
                if let Error::Storage(cause) = e {
                    // The handle has failed now: `Drop for Shared` must not
                    // close it.
                    self.shared
                        .health
                        .send_replace(WriteHealth::Failed(cause.to_string()));
                }
            }
        }
    }
}

impl Store {
    /// Rebuilds the date index from the records, never the other way round:
    /// removes every entry that is not exactly one record's (id, date) and
    /// adds the missing ones, in one atomic batch, then flushes. Records that
    /// cannot be decoded get no entry and stay for [`Store::check`] to
    /// report. Blocking; meant for an archive no server is using.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot be read or written.
    pub fn repair_index(&self) -> Result<RepairReport> {
        let trees = &self.inner.shared.trees;
        let mut expected = std::collections::BTreeSet::new();
        for entry in &trees.articles {
            let (key, value) = entry?;
            let id = std::str::from_utf8(&key)
                .ok()
                .and_then(|s| ArticleId::parse("id", s).ok());
            if let (Some(id), Ok(header)) = (id, record::decode_header(&value)) {
                expected.insert(keys::date_key(header.published_at, &id));
            }
        }
        let mut batch = sled::Batch::default();
        let mut report = RepairReport::default();
        for entry in &trees.by_date {
            let (key, _) = entry?;
            if !expected.remove(key.as_ref()) {
                batch.remove(key);
                report.removed += 1;
            }
        }
        // What is left in `expected` had no entry.
        for key in expected {
            batch.insert(key, &[][..]);
            report.added += 1;
        }
        trees.by_date.apply_batch(batch)?;
        trees.db.flush()?;
        Ok(report)
    }

    /// Moves every damaged record (invalid key, undecodable, or content that
    /// does not match its hash) from `articles` to the `quarantine` tree,
    /// byte for byte and in one transaction per record, then rebuilds the
    /// index with [`Store::repair_index`]. Nothing is deleted: the bytes stay
    /// in the data directory for inspection. Blocking; meant for an archive
    /// no server is using.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot be read or written.
    pub fn repair(&self) -> Result<RepairReport> {
        let trees = &self.inner.shared.trees;
        let quarantine = trees.db.open_tree(QUARANTINE_TREE)?;
        let mut damaged = Vec::new();
        for entry in &trees.articles {
            let (key, value) = entry?;
            let sound = std::str::from_utf8(&key)
                .ok()
                .and_then(|s| ArticleId::parse("id", s).ok())
                .and_then(|id| record::decode(&id, &value).ok())
                .is_some_and(|stored| stored.content.sha256() == stored.content_sha256);
            if !sound {
                damaged.push((key, value));
            }
        }
        for (key, value) in &damaged {
            (&trees.articles, &quarantine)
                .transaction(|(articles, quarantine)| {
                    articles.remove(key)?;
                    quarantine.insert(key, value)?;
                    Ok::<(), sled::transaction::ConflictableTransactionError<Infallible>>(())
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => Error::from(e),
                    sled::transaction::TransactionError::Abort(never) => match never {},
                })?;
        }
        let mut report = self.repair_index()?;
        report.quarantined = damaged.len() as u64;
        Ok(report)
    }

    /// The check a server runs when it opens a store that was not closed
    /// cleanly: a full [`Store::check`]; index problems are repaired (the
    /// index is derived, so rebuilding it is always safe); damaged records
    /// are not, because only an operator can decide to set them aside.
    ///
    /// # Errors
    /// [`Error::Damaged`] when records are damaged, [`Error::Storage`] when
    /// sled fails.
    pub fn check_after_unclean_stop(&self) -> Result<StartupCheck> {
        let report = self.check()?;
        if report.damaged_records > 0 {
            self.check_again_at_next_open();
            return Err(Error::Damaged {
                records: report.damaged_records,
                first: report.problems.first().cloned().unwrap_or_default(),
            });
        }
        let repaired = if report.problems.is_empty() {
            None
        } else {
            Some(self.repair_index()?)
        };
        Ok(StartupCheck { report, repaired })
    }
}

/// What [`Store::check_after_unclean_stop`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupCheck {
    /// The check before any repair.
    pub report: CheckReport,
    /// The index repair, when the check found index problems.
    pub repaired: Option<RepairReport>,
}

/// The iterator returned by [`Store::scan`].
pub struct DateScan {
    entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + Send>,
    articles: sled::Tree,
}

impl Iterator for DateScan {
    type Item = Result<StoredArticle>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let key = match self.entries.next()? {
                Ok((key, _)) => key,
                Err(e) => return Some(Err(e.into())),
            };
            let Some((published_at, id)) = keys::parse_date_key(&key) else {
                return Some(Err(Error::Corrupt {
                    key: format!("{BY_DATE_TREE}/{key:?}"),
                    reason: "not a date-index key".into(),
                }));
            };
            let bytes = match self.articles.get(id.as_str()) {
                Ok(Some(bytes)) => bytes,
                // Removed or moved since the index was read: not here any more.
                Ok(None) => continue,
                Err(e) => return Some(Err(e.into())),
            };
            match decode_record(&id, &bytes) {
                Ok(stored) if stored.content.published_at == published_at => {
                    return Some(Ok(stored))
                }
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn decode_record(id: &ArticleId, bytes: &[u8]) -> Result<StoredArticle> {
    // The error's key is formatted only on failure: this runs for every
    // record read.
    record::decode(id, bytes).map_err(|reason| Error::Corrupt {
        key: format!("{ARTICLES_TREE}/{id}"),
        reason,
    })
}

fn open_error(path: &Path, e: sled::Error) -> Error {
    // sled reports a held lock as a generic I/O error; its message is the only
    // way to tell it apart.
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            Error::DataDirLocked {
                path: path.to_path_buf(),
            }
        }
        sled::Error::Io(io) => Error::DataDir {
            path: path.to_path_buf(),
            doing: "opening the database in it",
            source: Arc::new(io),
        },
        other => other.into(),
    }
}

/// Sets the "open" marker and reports whether it was clear before, that is,
/// whether the last process closed the store cleanly. Its flush also makes
/// what `init_meta` wrote durable.
fn set_open_marker(db: &sled::Db) -> Result<bool> {
    let meta = db.open_tree(META_TREE)?;
    let was_open = meta.insert(OPEN_MARKER_KEY, &b"1"[..])?.is_some();
    db.flush()?;
    Ok(!was_open)
}

fn clear_open_marker(db: &sled::Db) -> Result<()> {
    db.open_tree(META_TREE)?.remove(OPEN_MARKER_KEY)?;
    db.flush()?;
    Ok(())
}

/// Reads or creates the metadata: the format version and the page-token key.
fn init_meta(db: &sled::Db) -> Result<[u8; 32]> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(FORMAT_KEY)? {
        Some(v) if v.as_ref() != FORMAT_VERSION => {
            return Err(Error::Corrupt {
                key: format!("{META_TREE}/{FORMAT_KEY}"),
                reason: format!(
                    "data format {:?} is not the supported {:?}",
                    String::from_utf8_lossy(&v),
                    String::from_utf8_lossy(FORMAT_VERSION)
                ),
            })
        }
        Some(_) => {}
        None => {
            meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
        }
    }
    let key = match meta.get(PAGE_TOKEN_KEY)? {
        Some(existing) => existing.as_ref().try_into().map_err(|_| Error::Corrupt {
            key: format!("{META_TREE}/{PAGE_TOKEN_KEY}"),
            reason: "not 32 bytes".into(),
        })?,
        None => {
            let mut fresh = [0u8; 32];
            getrandom::fill(&mut fresh).map_err(|e| {
                Error::io(
                    "generating the page-token key",
                    std::io::Error::other(e.to_string()),
                )
            })?;
            meta.insert(PAGE_TOKEN_KEY, &fresh[..])?;
            fresh
        }
    };
    // Made durable by the flush in `set_open_marker`, which comes next.
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "compression"))]
    #[test]
    fn compression_without_the_feature_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.compression = true;
        let error = Store::open(&config).err().unwrap();
        assert!(
            error
                .to_string()
                .contains("needs a binary built with `--features compression`"),
            "{error}"
        );
    }
}
