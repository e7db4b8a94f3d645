//! The sled engine: storage format 2, a compressed, append-only record log
//! with indexes derived from it.
//!
//! # Layout (in the data directory)
//! - `records/`: the record log ([`log`]): every stored version of every
//!   article, in sequence-number order, in append-only segment files. Each
//!   version gets the next sequence number; a record is an uncompressed
//!   header and the content compressed with zstd and a dictionary
//!   ([`record`], [`codec`]). Ingest appends, however large the archive
//!   is. Old versions stay: they are the article's history.
//! - the sled database (`db`, `conf`, `snap.*`), whose trees are small:
//!   - `revisions`: `id ‖ 0 ‖ revision` → where each older revision is;
//!   - `checkpoints`: each batch's first sequence number → where it is in
//!     the log, for the change feed to start reading after a sequence;
//!   - `dicts`: `kind ‖ id` → a zstd dictionary ([`codec`]);
//!   - `meta`: the format (`2`), the page-token key, the sequence
//!     high-water mark, the log's committed end, the marker set while
//!     a process has the store open, and the runs' manifest;
//!   - `counts`: articles per day, month, year, source and section
//!     ([`queries`]);
//!   - `query_log`: per batch, its changes to the id, date and query
//!     indexes that are not yet in a run ([`runs`]);
//!   - `quarantined_records`: records `check --repair` found damaged,
//!     copied out of the log byte for byte before they were erased there
//!     (`quarantine`, keyed by id, holds what format 1 set aside).
//!
//! - `query-runs/`: the id, date and query indexes as sorted run files of
//!   our own, written and merged by background threads ([`runs`],
//!   [`queries`]), because in sled their random entries cost a leaf write
//!   each, and sled's memory grew with them:
//!   - `ids`: id → where the current version is, its revision, date and
//!     hash ([`index::IdEntry`]), or the tombstone of a deleted article
//!     ([`index::Tombstone`]); the writer decides CREATED, UPDATED,
//!     UNCHANGED or REJECTED from it alone;
//!   - `dates`: `published_at ‖ id` ([`keys::date_key`]) → where the
//!     current version is and every field but the body, compressed
//!     ([`index::DateEntry`]): a BASIC page is one range scan, a FULL page
//!     reads its records in log order;
//!   - `sources`, `sections`, `urls`: label or url ‖ date key.
//!
//! A batch's records are written and synced to the log before the one
//! sled transaction that indexes them (and moves the log's committed end;
//! the runs' share of the batch goes into `query_log` in it), so the
//! indexes only ever point at durable records. The runs' share becomes
//! readable right after that transaction and before the batch is
//! acknowledged. Every index is derived from the log: [`check`] verifies
//! each against it and repair rebuilds them from it. [`upgrade`] converts
//! a format 1 directory in place; a format 2 store made while the id
//! index (or the date index too) was a sled tree, `ids` (`dates`), gets it
//! moved into the runs at open ([`build_indexes`]).

pub mod check;
pub mod codec;
pub mod format1;
pub mod index;
pub mod log;
pub(crate) mod queries;
pub mod record;
pub mod runs;
pub mod upgrade;
mod usage;
mod writer;

#[cfg(test)]
mod model_tests;

use std::{
    fs::File,
    mem::ManuallyDrop,
    ops::Bound,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub use writer::BatchLimits;
pub(crate) use writer::Op;

use self::{
    codec::{Codec, Kind},
    index::{BasicFields, DateEntry, IdEntry, IdState, RevisionEntry},
    log::{Pointer, RecordLog, Tail},
    record::{Payload, RecordKind},
};
use super::{
    calendar::Interval, keys, Change, ChangeKind, ChangesPage, ChangesRequest, CheckReport,
    CountBucket, DateRange, Filter, Order, PageRequest, Position, RepairReport, RevisionsPage,
    StartupCheck, StoreConfig, StoredPage, UrlPage, UrlPageRequest, WriteHealth, WriteOutcome,
    FILTER_SCAN_BUDGET,
};
use crate::{
    article::{Article, ArticleId, StoredArticle, Timestamp},
    error::{Error, Result},
};

/// The sled tree that held the id index before it moved to the runs.
pub(crate) const IDS_TREE: &str = "ids";
pub(crate) const DATES_TREE: &str = "dates";
pub(crate) const REVISIONS_TREE: &str = "revisions";
pub(crate) const DICTS_TREE: &str = "dicts";
pub(crate) const META_TREE: &str = "meta";
pub(crate) const QUARANTINED_RECORDS_TREE: &str = "quarantined_records";
pub(crate) const OPEN_MARKER_KEY: &str = "open";
pub(crate) const PAGE_TOKEN_KEY: &str = "page_token_key";
pub(crate) const FORMAT_KEY: &str = "format";
pub(crate) const SEQUENCE_HIGH_KEY: &str = "sequence_high";
pub(crate) const LOG_TAIL_KEY: &str = "log_tail";
pub(crate) const CHECKPOINTS_TREE: &str = "checkpoints";
/// The format this engine reads and writes.
pub(crate) const FORMAT_VERSION: &[u8] = b"2";

/// The sled handles shared by readers and the writer.
pub(crate) struct Trees {
    pub db: sled::Db,
    pub revisions: sled::Tree,
    pub dicts: sled::Tree,
    pub meta: sled::Tree,
    /// Sequence number of each batch's first record → where it is in the
    /// log: where the change feed starts reading to resume after a given
    /// sequence number (one entry per batch).
    pub checkpoints: sled::Tree,
    /// The id, date, label and url indexes ([`queries`], [`runs`]).
    pub query: runs::RunIndex,
    /// The query counters ([`queries`]).
    pub counts: sled::Tree,
}

impl Trees {
    /// The trees of the sled database `db` of the data directory `path`.
    pub(crate) fn open(db: sled::Db, path: &Path) -> Result<Self> {
        Ok(Self {
            query: runs::RunIndex::open(&db, path)?,
            revisions: db.open_tree(REVISIONS_TREE)?,
            dicts: db.open_tree(DICTS_TREE)?,
            meta: db.open_tree(META_TREE)?,
            checkpoints: db.open_tree(CHECKPOINTS_TREE)?,
            counts: db.open_tree(queries::COUNTS_TREE)?,
            db,
        })
    }

    /// The stored id entry of `id`, as it is.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Corrupt`] from a run's block.
    pub(crate) fn id_bytes(&self, id: &ArticleId) -> Result<Option<Vec<u8>>> {
        self.query.get(runs::Index::Ids, id.as_str().as_bytes())
    }

    /// What the id index holds for `id`.
    ///
    /// # Errors
    /// As [`Trees::id_bytes`], or [`Error::Corrupt`] for an entry that
    /// cannot be decoded.
    pub(crate) fn id_state(&self, id: &ArticleId) -> Result<Option<IdState>> {
        self.id_bytes(id)?
            .map(|bytes| {
                IdState::decode(&bytes).map_err(|reason| Error::Corrupt {
                    key: format!("{}/{id}", runs::Index::Ids.name()),
                    reason,
                })
            })
            .transpose()
    }
}

/// An article made ready for the writer, off the writer thread: its content
/// hash, its compressed payload and its encoded BASIC fields. The writer
/// only adds what depends on order: sequence number, revision, time.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(crate) id: ArticleId,
    pub(crate) published_at: Timestamp,
    pub(crate) content_sha256: [u8; 32],
    pub(crate) encoded: Encoded,
    pub(crate) body_bytes: u64,
    /// The time to record as `ingested_at`; `None`: when it is committed.
    /// Set when a stored version is copied (the format upgrade) or
    /// restored.
    pub(crate) ingested_at: Option<Timestamp>,
    /// Store it as exactly this revision (restoring a full-history export).
    pub(crate) restore_revision: Option<u64>,
    /// What the query indexes will hold of it.
    pub(crate) labels: queries::Labels,
}

/// The stored form of a prepared article's content.
#[derive(Debug, Clone)]
pub(crate) enum Encoded {
    /// Compressed and ready.
    Ready {
        payload: Payload,
        basic: BasicFields,
    },
    /// Not compressed: when it was prepared, the archive held this very
    /// content, so the writer will most likely answer UNCHANGED. Should it
    /// have changed in between, the writer compresses it itself.
    Deferred(Box<Article>),
}

impl Encoded {
    /// The payload and BASIC fields, compressing them now if they were
    /// deferred.
    pub(crate) fn ready(&self, codec: &Codec) -> (Payload, BasicFields) {
        match self {
            Encoded::Ready { payload, basic } => (payload.clone(), basic.clone()),
            Encoded::Deferred(article) => (
                record::payload(codec, article.content()),
                BasicFields::of(article.content()),
            ),
        }
    }
}

impl Prepared {
    /// Hashes and compresses `article`.
    pub(crate) fn new(codec: &Codec, article: &Article) -> Self {
        let content = article.content();
        Self::with(
            article,
            content.sha256(),
            Encoded::Ready {
                payload: record::payload(codec, content),
                basic: BasicFields::of(content),
            },
        )
    }

    fn with(article: &Article, content_sha256: [u8; 32], encoded: Encoded) -> Self {
        let content = article.content();
        Self {
            id: article.id().clone(),
            published_at: content.published_at,
            content_sha256,
            encoded,
            body_bytes: content.body.len() as u64,
            ingested_at: None,
            restore_revision: None,
            labels: queries::Labels::of(content),
        }
    }

    /// Bytes this article adds to a batch (and holds in the queue).
    pub(crate) fn size(&self) -> usize {
        match &self.encoded {
            Encoded::Ready { payload, basic } => payload.bytes.len() + basic.encoded_len(),
            Encoded::Deferred(article) => {
                article.content().body.len() + article.content().title.len()
            }
        }
    }
}

/// What the readers, the writer and the dictionary trainer share.
pub(crate) struct Shared {
    /// Dropped by hand: see `Drop for Shared`.
    pub trees: ManuallyDrop<Trees>,
    /// The records the trees point at.
    pub log: RecordLog,
    pub health: watch::Sender<WriteHealth>,
    pub config: StoreConfig,
    /// The data directory, opened to sync its filesystem after each commit.
    pub dir: File,
    pub codec: Codec,
    /// Records in the log when the current dictionary was trained (0: none
    /// yet); the next training is due at [`DICTIONARY_GROWTH`] times that.
    trained_at: AtomicU64,
    /// Set while a dictionary is being trained, so only one runs.
    training: AtomicBool,
    /// Whether the writer's last batch was mostly UNCHANGED: then articles
    /// are looked up before they are compressed (see `SledStore::prepare`).
    expect_unchanged: AtomicBool,
    /// The newest durable change (after the filesystem sync) and the log's
    /// end at that point: how far the change feed may read, and what
    /// followers wait on.
    durable: watch::Sender<Durable>,
    /// Where the writer and submitters record, once a server with metrics
    /// attaches them ([`SledStore::attach_metrics`]); unset, nothing is
    /// recorded.
    pub metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

/// How far the archive is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Durable {
    /// The newest durable sequence number (0: none yet).
    pub sequence: u64,
    /// The log's end with it.
    pub tail: Option<Tail>,
}

/// A new dictionary is trained each time the archive has grown this many
/// times since the last one, so it follows what the archive holds.
const DICTIONARY_GROWTH: u64 = 64;
/// Most records a dictionary is trained on. Training takes about 0.25 ms
/// of CPU a sample, on the two cores the first load needs: from 4000
/// samples it took 1 s and ended after a 10,000-article load (whose
/// records then went without it); from 2000, 0.4 s, for a dictionary
/// that compresses 0.4 % worse (BENCHMARKS.md "The id index in the runs").
const DICTIONARY_SAMPLES: u64 = 2000;

impl Shared {
    /// Called by the writer after each commit, with the next sequence
    /// number: starts training a dictionary in the background when one is
    /// due.
    /// Tells the change feed that everything up to `sequence` is durable.
    fn durable(&self, sequence: u64, tail: Option<Tail>) {
        self.durable.send_if_modified(|durable| {
            let moved = durable.sequence != sequence || durable.tail != tail;
            *durable = Durable { sequence, tail };
            moved
        });
    }

    fn after_commit(self: &Arc<Self>, next_sequence: u64, unchanged: usize, articles: usize) {
        self.expect_unchanged
            .store(unchanged * 2 > articles, Ordering::Relaxed);
        let records = next_sequence.saturating_sub(1);
        let trained_at = self.trained_at.load(Ordering::Relaxed);
        let due = if trained_at == 0 {
            records >= self.config.dictionary_after
        } else {
            records >= trained_at.saturating_mul(DICTIONARY_GROWTH)
        };
        if !due || self.config.dictionary_after == 0 || self.training.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("archive-dictionary".into())
            .spawn(move || {
                match shared.train_dictionary(records) {
                    Ok(Some(id)) => info!(dictionary = id, records, "trained a compression dictionary; new records use it"),
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "training a compression dictionary failed; records stay compressed without it"),
                }
                // Retried at the next threshold, not after every batch.
                shared.trained_at.store(records.max(1), Ordering::Relaxed);
                shared.training.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.training.store(false, Ordering::Release);
        }
    }

    /// Samples up to [`DICTIONARY_SAMPLES`] current versions spread over
    /// the archive, trains a records' dictionary from them, makes it
    /// durable, and only then lets new payloads use it. Returns its id.
    /// (The BASIC fields in the date index are no longer compressed on
    /// their own, [`BasicFields`]; their dictionaries from before stay in
    /// `dicts` for the entries that name them.)
    fn train_dictionary(&self, records: u64) -> Result<Option<u32>> {
        if *self.health.borrow() != WriteHealth::Writable {
            return Ok(None);
        }
        let trees = &self.trees;
        let step = (queries::live_articles(&trees.counts)? / DICTIONARY_SAMPLES).max(1) as usize;
        let mut content = Vec::new();
        for entry in queries::all_ids(trees).step_by(step) {
            let (_, value) = entry?;
            let Ok(entry) = IdEntry::decode(&value) else {
                continue;
            };
            let Ok(bytes) = self.log.read(entry.pointer) else {
                continue;
            };
            if let Ok(stored) = record::decode_version(&self.codec, &bytes) {
                content.push(record::plain_content(&stored.content));
            }
        }
        let dictionary = codec::train(Kind::Content, &content).map_err(Error::Config)?;
        let id = self.codec.current_dictionary(Kind::Content) + 1;
        trees
            .dicts
            .insert(dictionary_key(Kind::Content, id), dictionary.as_slice())?;
        trees.db.flush()?;
        writer::sync_filesystem(&self.dir)?;
        self.codec.add_dictionary(Kind::Content, id, &dictionary);
        tracing::debug!(records, "dictionary trained");
        Ok(Some(id))
    }
}

/// The `dicts` key of a dictionary.
pub(crate) fn dictionary_key(kind: Kind, id: u32) -> [u8; 5] {
    let mut key = [0u8; 5];
    key[0] = kind as u8;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
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

/// The sled engine behind a [`super::Store`].
pub struct SledStore {
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

/// Opens sled on the data directory.
///
/// Format 1 could be built with sled's own page compression
/// (`--features compression`, `serve --compression`). Format 2 compresses
/// its records itself with a current zstd, which cannot be linked next to
/// the older zstd that sled's compression uses, so such a directory cannot
/// be opened here; it is refused with the way out.
pub(crate) fn open_sled(config: &StoreConfig) -> Result<sled::Db> {
    let compressed = std::fs::read_to_string(config.path.join("conf"))
        .is_ok_and(|conf| conf.contains("use_compression: true"));
    if compressed {
        return Err(Error::Config(format!(
            "data directory {} is a format 1 archive made with --compression, which this \
             binary cannot open; with the binary that made it, `article-archive export -o FILE`, \
             then `article-archive ingest FILE` into a server of this one (ids, content and \
             hashes are kept)",
            config.path.display()
        )));
    }
    sled::Config::new()
        .path(&config.path)
        .cache_capacity(config.cache_capacity_bytes)
        .open()
        .map_err(|e| open_error(&config.path, e))
}

impl SledStore {
    /// Opens (or creates) a format 2 store and starts its writer thread.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] when another process has the directory open,
    /// [`Error::UpgradeNeeded`] for a format 1 directory, [`Error::DataDir`]
    /// for a directory that cannot be used, [`Error::Storage`] for anything
    /// else sled refuses.
    pub fn open(config: &StoreConfig) -> Result<Self> {
        let db = open_sled(config)?;
        upgrade::refuse_older_formats(&db, &config.path)?;
        let trees = Trees::open(db, &config.path)?;
        trees
            .query
            .set_memtable_entries(config.query_memtable_entries);
        let page_token_key = init_meta(&trees)?;
        upgrade::drop_leftovers(&trees.db)?;
        let codec = Codec::default();
        let mut trained_at = 0;
        for entry in &trees.dicts {
            let (key, value) = entry?;
            let parsed = (key.len() == 5)
                .then(|| Kind::from_u8(key[0]))
                .flatten()
                .zip(
                    key.get(1..)
                        .and_then(|id| id.try_into().ok())
                        .map(u32::from_be_bytes),
                );
            let (kind, id) = parsed.ok_or_else(|| Error::Corrupt {
                key: format!("{DICTS_TREE}/{key:?}"),
                reason: "not a dictionary key".into(),
            })?;
            codec.add_dictionary(kind, id, &value);
            trained_at = trained_at.max(1);
        }
        let next_sequence = next_sequence(&trees)?;
        let log_tail = log_tail(&trees)?;
        let log = RecordLog::open(&config.path, log_tail)?;
        if trained_at > 0 {
            // Counted from the present size: the next training is due when
            // the archive has grown [`DICTIONARY_GROWTH`] times from here.
            trained_at = next_sequence.saturating_sub(1).max(1);
        }
        let closed_cleanly = set_open_marker(&trees)?;
        let dir = File::open(&config.path).map_err(|e| Error::DataDir {
            path: config.path.clone(),
            doing: "opening it to sync its filesystem",
            source: Arc::new(e),
        })?;

        let (health, _) = watch::channel(WriteHealth::Writable);
        let shared = Arc::new(Shared {
            trees: ManuallyDrop::new(trees),
            log,
            health,
            config: config.clone(),
            dir,
            codec,
            trained_at: AtomicU64::new(trained_at),
            training: AtomicBool::new(false),
            expect_unchanged: AtomicBool::new(false),
            durable: watch::channel(Durable {
                sequence: next_sequence - 1,
                tail: log_tail,
            })
            .0,
            metrics: std::sync::OnceLock::new(),
        });
        if !shared.trees.query.is_complete() {
            build_indexes(&shared)?;
        }
        if shared.trees.query.is_complete() {
            // The sled trees that held the id and date indexes before they
            // moved to the runs, which hold them now (their manifest says
            // so).
            let names = shared.trees.db.tree_names();
            let mut dropped = false;
            for tree in [IDS_TREE, DATES_TREE] {
                if names.iter().any(|name| name.as_ref() == tree.as_bytes()) {
                    dropped |= shared.trees.db.drop_tree(tree)?;
                }
            }
            if dropped {
                shared.trees.db.flush()?;
            }
        }
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let queued_kib_limit = u32::try_from(config.queue_bytes / 1024)
            .unwrap_or(u32::MAX)
            .max(1);
        let writer_shared = Arc::clone(&shared);
        let limits = config.batch_limits;
        let state = writer::WriterState {
            next_sequence,
            keep_revisions: config.keep_revisions,
        };
        let writer = thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || writer::run(&writer_shared, state, receiver, limits))
            .map_err(|e| Error::io("starting the writer thread", e))?;

        Ok(Self {
            shared,
            queue: Some(queue),
            queued_kib: Arc::new(tokio::sync::Semaphore::new(queued_kib_limit as usize)),
            queued_kib_limit,
            writer: Some(writer),
            page_token_key,
            closed_cleanly,
            clear_open_marker: AtomicBool::new(true),
        })
    }

    /// Whether the last process that had this store open closed it cleanly.
    pub fn closed_cleanly(&self) -> bool {
        self.closed_cleanly
    }

    /// Keeps the "open" marker when this store is closed, so the next server
    /// start checks the store again.
    pub fn check_again_at_next_open(&self) {
        self.clear_open_marker.store(false, Ordering::Relaxed);
    }

    /// Whether the store takes writes now, and every change after this.
    pub fn write_health(&self) -> watch::Receiver<WriteHealth> {
        self.shared.health.subscribe()
    }

    /// The key that signs page tokens for this archive.
    pub fn page_token_key(&self) -> &[u8; 32] {
        &self.page_token_key
    }

    /// The current version of `id`, if any. Blocking (one or two point
    /// reads).
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`].
    pub fn get(&self, id: &ArticleId) -> Result<Option<StoredArticle>> {
        match self.get_revision(id, 0) {
            Ok(stored) => Ok(Some(stored)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The live id entry of `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Deleted`], or damage.
    fn live_entry(&self, id: &ArticleId) -> Result<IdEntry> {
        match self.shared.trees.id_state(id)? {
            None => Err(Error::NotFound(id.to_string())),
            Some(IdState::Live(entry)) => Ok(entry),
            Some(IdState::Deleted(tombstone)) => Err(Error::Deleted {
                id: id.to_string(),
                at: tombstone.deleted_at,
                sequence: tombstone.sequence,
            }),
        }
    }

    /// Revision `revision` of `id` (0: the current one). Blocking, but a
    /// few point reads.
    ///
    /// # Errors
    /// [`Error::NotFound`] (unknown id), [`Error::Deleted`],
    /// [`Error::NoSuchRevision`], or damage.
    pub fn get_revision(&self, id: &ArticleId, revision: u64) -> Result<StoredArticle> {
        let current = self.live_entry(id)?;
        if revision == 0 || revision == current.revision {
            return self.read_version(current.sequence, current.pointer);
        }
        let older = (revision < current.revision)
            .then(|| {
                self.shared
                    .trees
                    .revisions
                    .get(keys::revision_key(id, revision))
            })
            .transpose()?
            .flatten();
        match older {
            Some(bytes) => {
                let entry = RevisionEntry::decode(&bytes).map_err(|reason| Error::Corrupt {
                    key: format!("{REVISIONS_TREE}/{id}/{revision}"),
                    reason,
                })?;
                self.read_version(entry.sequence, entry.pointer)
            }
            None => Err(Error::NoSuchRevision {
                id: id.to_string(),
                revision,
                current: current.revision,
                pruned: self.shared.config.keep_revisions > 0 && revision < current.revision,
            }),
        }
    }

    /// See [`crate::Store::batch_get`].
    pub fn batch_get(
        &self,
        ids: &[ArticleId],
        with_body: bool,
    ) -> Result<Vec<Option<StoredArticle>>> {
        ids.iter()
            .map(|id| {
                let current = match self.live_entry(id) {
                    Ok(current) => current,
                    Err(Error::NotFound(_) | Error::Deleted { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
                if with_body {
                    return self
                        .read_version(current.sequence, current.pointer)
                        .map(Some);
                }
                let key = keys::date_key(current.published_at, id);
                Ok(
                    queries::entry_at(&self.shared.trees, &self.shared.codec, &key)?
                        .map(|entry| entry.article),
                )
            })
            .collect()
    }

    /// See [`crate::Store::by_url`].
    pub fn by_url(&self, request: &UrlPageRequest) -> Result<UrlPage> {
        let trees = &self.shared.trees;
        let (hits, last, mut more) = queries::url_scan(
            trees,
            &request.query,
            request.after.as_deref(),
            request.limit,
            FILTER_SCAN_BUDGET,
        )?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut resume_after = last;
        for hit in hits {
            let Some(entry) = queries::entry_at(trees, &self.shared.codec, &hit.date_key)? else {
                continue;
            };
            let size = estimated_size(&entry, request.with_body);
            if bytes + size > request.byte_budget && !entries.is_empty() {
                more = true;
                break;
            }
            bytes += size;
            entries.push(entry);
            resume_after = Some(hit.key);
        }
        Ok(UrlPage {
            articles: self.with_bodies(entries, request.with_body)?,
            more,
            resume_after,
        })
    }

    /// The articles of `entries`, with their bodies read from the log (in
    /// log order, so reads go along the segment files) when asked.
    fn with_bodies(&self, entries: Vec<DateEntry>, with_body: bool) -> Result<Vec<StoredArticle>> {
        if !with_body {
            return Ok(entries.into_iter().map(|entry| entry.article).collect());
        }
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| (entries[i].pointer.segment, entries[i].pointer.offset));
        let mut full: Vec<Option<StoredArticle>> = vec![None; entries.len()];
        for i in order {
            full[i] = Some(self.read_version(entries[i].sequence, entries[i].pointer)?);
        }
        Ok(full.into_iter().flatten().collect())
    }

    /// See [`crate::Store::count`].
    pub fn count(
        &self,
        range: DateRange,
        interval: Interval,
        filter: &Filter,
    ) -> Result<Vec<CountBucket>> {
        let trees = &self.shared.trees;
        // An open bound counts from the archive's first (or to its last)
        // article.
        let edge = |last: bool| -> Result<Option<Timestamp>> {
            let order = if last {
                Order::NewestFirst
            } else {
                Order::OldestFirst
            };
            let entry = date_range(trees, DateRange::default(), order, None)
                .next()
                .transpose()?;
            Ok(entry
                .and_then(|(key, _)| keys::parse_date_key(&key))
                .map(|(t, _)| t))
        };
        let (Some(first), Some(last)) = (
            range.start.map_or_else(|| edge(false), |t| Ok(Some(t)))?,
            match range.end {
                Some(end) => Some(crate::store::just_before(end)),
                None => edge(true)?,
            },
        ) else {
            return Ok(Vec::new());
        };
        crate::store::check_count_span(first, last, interval)?;
        let counts = if filter.is_empty() {
            queries::count_unfiltered(trees, range, interval)?
        } else {
            self.count_filtered(range, interval, filter)?
        };
        Ok(counts
            .into_iter()
            .map(|(bucket, count)| CountBucket {
                start: interval.start(bucket),
                count,
            })
            .collect())
    }

    /// A filtered count: every candidate of the plan is looked at (its date
    /// key alone when the filter has only the planned field).
    fn count_filtered(
        &self,
        range: DateRange,
        interval: Interval,
        filter: &Filter,
    ) -> Result<std::collections::BTreeMap<i64, u64>> {
        let trees = &self.shared.trees;
        let plan = queries::plan(trees, filter)?;
        let rest = match plan {
            queries::Plan::Sources => Filter {
                sources: Vec::new(),
                ..filter.clone()
            },
            queries::Plan::Sections => Filter {
                sections: Vec::new(),
                ..filter.clone()
            },
            queries::Plan::Dates => filter.clone(),
        };
        // Date keys, with their entries when the date index gave them.
        type KeysAndEntries = Box<dyn Iterator<Item = Result<(Vec<u8>, Option<Vec<u8>>)>>>;
        let keys: KeysAndEntries = if plan == queries::Plan::Dates {
            Box::new(
                date_range(trees, range, Order::OldestFirst, None)
                    .map(|entry| entry.map(|(key, value)| (key, Some(value)))),
            )
        } else {
            Box::new(
                queries::candidates(trees, plan, filter, range, Order::OldestFirst, None)?
                    .map(|key| key.map(|key| (key, None))),
            )
        };
        let mut out = std::collections::BTreeMap::new();
        for key in keys {
            let (key, value) = key?;
            if !rest.is_empty() {
                let entry = match value {
                    Some(value) => Some(queries::decode_entry(&self.shared.codec, &key, &value)?),
                    None => queries::entry_at(trees, &self.shared.codec, &key)?,
                };
                match entry {
                    Some(entry) if rest.matches(&entry.article.content) => {}
                    _ => continue,
                }
            }
            let (published_at, _) = queries::date_of(&key)?;
            *out.entry(interval.bucket(published_at)).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Up to `limit` revisions of `id`, newest first, strictly older than
    /// `before` when given; the body only `with_body`. Blocking.
    ///
    /// # Errors
    /// As [`SledStore::get_revision`].
    pub fn revisions(
        &self,
        id: &ArticleId,
        before: Option<u64>,
        limit: usize,
        with_body: bool,
    ) -> Result<RevisionsPage> {
        let current = self.live_entry(id)?;
        let below = before.unwrap_or(u64::MAX);
        let mut places = Vec::new();
        if current.revision < below {
            places.push((current.sequence, current.pointer));
        }
        let prefix = keys::revision_prefix(id);
        let upper = keys::revision_key(id, below.min(current.revision));
        let older = self
            .shared
            .trees
            .revisions
            .range(prefix.clone()..upper)
            .rev();
        let mut more = false;
        for entry in older {
            let (_, value) = entry?;
            if places.len() == limit {
                more = true;
                break;
            }
            let entry = RevisionEntry::decode(&value).map_err(|reason| Error::Corrupt {
                key: format!("{REVISIONS_TREE}/{id}"),
                reason,
            })?;
            places.push((entry.sequence, entry.pointer));
        }
        if places.len() > limit {
            places.truncate(limit);
            more = true;
        }
        let mut revisions = Vec::with_capacity(places.len());
        for (sequence, pointer) in places {
            let mut stored = self.read_version(sequence, pointer)?;
            if !with_body {
                stored.content.body.clear();
            }
            revisions.push(stored);
        }
        Ok(RevisionsPage { revisions, more })
    }

    /// The changes after `request.after`, in sequence order, up to the
    /// newest durable one: every stored revision still held (deleted
    /// articles' and pruned revisions are gone) and every deletion. Read
    /// from the log, starting at the checkpoint of the batch that holds
    /// the next sequence number. Blocking.
    ///
    /// # Errors
    /// [`Error::Storage`] or damage.
    pub fn changes(&self, request: &ChangesRequest) -> Result<ChangesPage> {
        let durable = *self.shared.durable.borrow();
        let mut page = ChangesPage {
            changes: Vec::new(),
            resume_after: request.after,
            reached_end: true,
            durable: durable.sequence,
        };
        let Some(bound) = durable.tail else {
            return Ok(page);
        };
        if durable.sequence <= request.after {
            return Ok(page);
        }
        let start = self
            .shared
            .trees
            .checkpoints
            .range(..=keys::u64_key(request.after.saturating_add(1)).to_vec())
            .next_back()
            .transpose()?
            .map(|(_, value)| index::decode_pointer(&value))
            .transpose()
            .map_err(|reason| Error::Corrupt {
                key: format!("{CHECKPOINTS_TREE}/{}", request.after),
                reason,
            })?;
        let mut bytes = 0usize;
        for frame in self.shared.log.scan_from(start, bound)? {
            let frame = frame?;
            let record = frame.record.map_err(|reason| Error::Corrupt {
                key: format!("records/{}@{}", frame.pointer.segment, frame.pointer.offset),
                reason,
            })?;
            let header = record::decode_header(&record).map_err(|reason| Error::Corrupt {
                key: format!("records/{}@{}", frame.pointer.segment, frame.pointer.offset),
                reason,
            })?;
            if header.sequence <= request.after {
                continue;
            }
            if header.sequence > durable.sequence {
                break;
            }
            let change =
                match header.kind {
                    RecordKind::Deletion => {
                        let (_, note) =
                            record::decode_deletion(&record).map_err(|reason| Error::Corrupt {
                                key: format!("record {}", header.sequence),
                                reason,
                            })?;
                        Some(Change {
                            sequence: header.sequence,
                            kind: ChangeKind::Deleted,
                            id: header.id,
                            article: None,
                            changed_at: header.ingested_at,
                            reason: note.reason,
                        })
                    }
                    RecordKind::Version if self.still_held(&header, frame.pointer)? => {
                        let mut stored = record::decode_version(&self.shared.codec, &record)
                            .map_err(|reason| Error::Corrupt {
                                key: format!("record {}", header.sequence),
                                reason,
                            })?;
                        request.filter.matches(&stored.content).then(|| {
                            if !request.with_body {
                                stored.content.body.clear();
                            }
                            Change {
                                sequence: header.sequence,
                                kind: if header.revision == 1 {
                                    ChangeKind::Created
                                } else {
                                    ChangeKind::Updated
                                },
                                id: header.id,
                                changed_at: header.ingested_at,
                                article: Some(stored),
                                reason: String::new(),
                            }
                        })
                    }
                    RecordKind::Version => None,
                };
            if let Some(change) = change {
                let size = change.estimated_size();
                if page.changes.len() == request.limit
                    || (bytes + size > request.byte_budget && !page.changes.is_empty())
                {
                    page.reached_end = false;
                    return Ok(page);
                }
                bytes += size;
                page.changes.push(change);
            }
            page.resume_after = header.sequence;
        }
        page.resume_after = page.resume_after.max(durable.sequence);
        Ok(page)
    }

    /// Whether the version at `pointer` is still one of its article's
    /// revisions (not deleted, not pruned): only those are in the feed.
    fn still_held(&self, header: &record::RecordHeader, pointer: Pointer) -> Result<bool> {
        let trees = &self.shared.trees;
        let Some(bytes) = trees.id_bytes(&header.id)? else {
            return Ok(false);
        };
        let Ok(IdState::Live(current)) = IdState::decode(&bytes) else {
            return Ok(false);
        };
        if current.sequence == header.sequence {
            return Ok(current.pointer == pointer);
        }
        Ok(trees
            .revisions
            .get(keys::revision_key(&header.id, header.revision))?
            .and_then(|bytes| RevisionEntry::decode(&bytes).ok())
            .is_some_and(|entry| entry.sequence == header.sequence))
    }

    /// Every change of [`Durable`]: what followers of the feed wait on.
    pub fn durable_changes(&self) -> watch::Receiver<Durable> {
        self.shared.durable.subscribe()
    }

    /// The version stored at `pointer`, which must be `sequence`.
    fn read_version(&self, sequence: u64, pointer: Pointer) -> Result<StoredArticle> {
        let bytes = self.shared.log.read(pointer)?;
        let corrupt = |reason: String| Error::Corrupt {
            key: format!("record {sequence}"),
            reason,
        };
        let stored = record::decode_version(&self.shared.codec, &bytes).map_err(corrupt)?;
        match record::decode_header(&bytes) {
            Ok(header) if header.sequence == sequence => Ok(stored),
            _ => Err(corrupt("the index points at another record".into())),
        }
    }

    /// Hashes and compresses an article for the writer. CPU work: the
    /// caller decides where it runs.
    pub fn prepare(&self, article: &Article) -> Prepared {
        let content_sha256 = article.content().sha256();
        // Re-sent content (a load run again) is most often stored already:
        // then compressing it would be wasted, as the writer answers
        // UNCHANGED. A read of the id entry tells, without the writer,
        // but costs a fresh load about a sixth of its speed (measured), so
        // it is done only while the writer's last batch was mostly
        // UNCHANGED.
        let stored = if self.shared.expect_unchanged.load(Ordering::Relaxed) {
            self.shared
                .trees
                .id_bytes(article.id())
                .ok()
                .flatten()
                .and_then(|bytes| IdEntry::decode(&bytes).ok())
        } else {
            None
        };
        if stored.is_some_and(|entry| entry.content_sha256 == content_sha256) {
            return Prepared::with(
                article,
                content_sha256,
                Encoded::Deferred(Box::new(article.clone())),
            );
        }
        let content = article.content();
        Prepared::with(
            article,
            content_sha256,
            Encoded::Ready {
                payload: record::payload(&self.shared.codec, content),
                basic: BasicFields::of(content),
            },
        )
    }

    /// Queues an operation for the writer. Waits while the queue is full,
    /// so callers feel back-pressure; the returned receiver gets the outcome
    /// once it is durable.
    ///
    /// # Errors
    /// [`Error::Closed`] when the writer has stopped.
    pub(crate) async fn submit(
        &self,
        op: writer::Op,
    ) -> Result<oneshot::Receiver<Result<WriteOutcome>>> {
        let (reply, outcome) = oneshot::channel();
        let queue = self.queue.as_ref().ok_or(Error::Closed)?;
        let metrics = self.shared.metrics.get();
        let waiting = metrics.map(|_| std::time::Instant::now());
        // An article larger than the whole budget takes all of it.
        let kib = u32::try_from(op.size() / 1024 + 1)
            .unwrap_or(u32::MAX)
            .min(self.queued_kib_limit);
        let queued = Arc::clone(&self.queued_kib)
            .acquire_many_owned(kib)
            .await
            .map_err(|_| Error::Closed)?;
        queue
            .send(writer::WriteRequest {
                op,
                reply,
                _queued: queued,
            })
            .await
            .map_err(|_| Error::Closed)?;
        if let (Some(metrics), Some(waiting)) = (metrics, waiting) {
            metrics.queue_waited(waiting.elapsed());
        }
        Ok(outcome)
    }

    /// One page of a date range: entries come from the date index in order;
    /// for a FULL page their records are then read in sequence order (so
    /// reads go along the log) and put back in date order. The page stops
    /// before its estimated size passes `byte_budget` (always taking one
    /// article). Blocking.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`].
    pub fn page(&self, request: &PageRequest) -> Result<StoredPage> {
        let trees = &self.shared.trees;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        let mut resume_after = None;
        let plan = queries::plan(trees, &request.filter)?;
        type Candidates<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a>;
        let candidates: Candidates<'_> = if plan == queries::Plan::Dates {
            date_range(trees, request.range, request.order, request.after.as_ref())
        } else {
            // An index entry and its date entry change in one
            // transaction, but this read is not one: an article changed
            // between the two reads is passed over.
            Box::new(
                queries::candidates(
                    trees,
                    plan,
                    &request.filter,
                    request.range,
                    request.order,
                    request.after.as_ref(),
                )?
                .filter_map(|date_key| match date_key {
                    Err(e) => Some(Err(e)),
                    Ok(key) => match trees.query.get(runs::Index::Dates, &key) {
                        Err(e) => Some(Err(e)),
                        Ok(None) => None,
                        Ok(Some(value)) => Some(Ok((key, value))),
                    },
                }),
            )
        };
        for (examined, next) in candidates.enumerate() {
            let (key, value) = next?;
            if entries.len() == request.limit
                || (!request.filter.is_empty() && examined == FILTER_SCAN_BUDGET)
            {
                more = true;
                break;
            }
            let corrupt = |reason: String| Error::Corrupt {
                key: format!("{DATES_TREE}/{key:?}"),
                reason,
            };
            let (published_at, id) =
                keys::parse_date_key(&key).ok_or_else(|| corrupt("not a date-index key".into()))?;
            let entry =
                DateEntry::decode(&self.shared.codec, published_at, id, &value).map_err(corrupt)?;
            let position = Position {
                published_at,
                id: entry.article.id.clone(),
            };
            if !request.filter.matches(&entry.article.content) {
                resume_after = Some(position);
                continue;
            }
            let size = estimated_size(&entry, request.with_body);
            if bytes + size > request.byte_budget && !entries.is_empty() {
                more = true;
                break;
            }
            bytes += size;
            entries.push(entry);
            resume_after = Some(position);
        }
        let articles = self.with_bodies(entries, request.with_body)?;
        Ok(StoredPage {
            articles,
            more,
            resume_after,
        })
    }

    /// Whether `request` is an unfiltered BASIC page that reads at most
    /// `entries` date entries: it asks for no more, or its range covers a
    /// few days whose day counters add up to no more. Cheap (a counter read
    /// or two). A filtered page is never small: it may examine up to
    /// [`FILTER_SCAN_BUDGET`] entries to find its articles.
    pub fn is_small_basic_page(&self, request: &PageRequest, entries: usize) -> bool {
        if request.with_body || !request.filter.is_empty() {
            return false;
        }
        request.limit <= entries
            // A counter that cannot be read only means the page is read on
            // the blocking pool, where the read reports it.
            || queries::holds_at_most(&self.shared.trees, request.range, entries as u64)
                .unwrap_or(false)
    }

    /// Flushes everything written so far to disk. Blocking.
    ///
    /// # Errors
    /// [`Error::Storage`] when the flush fails.
    pub fn flush(&self) -> Result<()> {
        self.shared.trees.db.flush()?;
        Ok(())
    }

    /// Verifies every record and every index against the log. Blocking,
    /// and reads everything.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot be read at all.
    pub fn check(&self) -> Result<CheckReport> {
        check::check(&self.shared)
    }

    /// Moves damaged records to `quarantined_records` and rebuilds every
    /// index from the log. Blocking; meant for an archive no server is
    /// using.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot be read or written.
    pub fn repair(&self) -> Result<RepairReport> {
        check::repair(&self.shared)
    }

    /// The check a server runs when it opens a store that was not closed
    /// cleanly: index problems are repaired (indexes are derived, so
    /// rebuilding them is always safe); damaged records are not, because
    /// only an operator can decide to set them aside.
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
            Some(check::rebuild_indexes(&self.shared)?)
        };
        Ok(StartupCheck { report, repaired })
    }
}

/// What a page entry adds to a response, about: its fields, the body when
/// it is sent, and protobuf framing.
fn estimated_size(entry: &DateEntry, with_body: bool) -> usize {
    let content = &entry.article.content;
    let lists: usize = content
        .authors
        .iter()
        .chain(&content.tags)
        .map(|s| s.len() + 3)
        .sum();
    let text = content.url.len()
        + content.title.len()
        + content.source.len()
        + content.section.len()
        + content.language.len()
        + content.description.len()
        + entry.article.id.as_str().len();
    let body = if with_body {
        entry.body_bytes as usize
    } else {
        0
    };
    // Field tags and lengths (at most 5 bytes each for the large ones),
    // the two timestamps and the hex hash.
    text + lists + body + 160
}

/// Entries of the date index in `range` and `order`, strictly after
/// `after` when given.
fn date_range(
    trees: &Trees,
    range: DateRange,
    order: Order,
    after: Option<&Position>,
) -> runs::KeyValues {
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
    if empty {
        return Box::new(std::iter::empty());
    }
    trees
        .query
        .range_entries(runs::Index::Dates, lower, upper, order)
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish its last batch and exit.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the writer thread panicked");
            }
        }
        // Its thread holds sled's handles too; what it had not written out
        // is in `query_log`.
        self.shared.trees.query.stop();
        let clear = self.clear_open_marker.load(Ordering::Relaxed);
        // No write on a disk short of space or after a failure: the marker
        // stays, and the next start checks the store.
        if clear && *self.shared.health.borrow() == WriteHealth::Writable {
            if let Err(e) = clear_open_marker(&self.shared.trees) {
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

/// Writes the runs anew when they do not hold every index (see
/// [`runs::RunIndex::is_complete`]), from what there is:
/// - a store made before the id index moved to the runs: its sled tree
///   `ids`, with the date index of the runs (made after it moved there),
///   of the sled tree `dates` (made before), or of the records the ids
///   point at (neither can be read);
/// - otherwise (a run cannot be read, a rebuild was interrupted, the
///   manifest is gone, or the store is new): the record log alone.
///
/// The sled trees are dropped by the caller once the new manifest, the
/// commit point, is written: a crash before leaves them the source.
fn build_indexes(shared: &Shared) -> Result<()> {
    let started = std::time::Instant::now();
    let trees = &shared.trees;
    let mut report = RepairReport::default();
    let sled_ids = trees.db.open_tree(IDS_TREE)?;
    let sled_dates = trees.db.open_tree(DATES_TREE)?;
    let sled_entries = |tree: &sled::Tree, index: runs::Index| {
        tree.iter().map(move |entry| {
            entry
                .map(|(key, value)| (index, key.to_vec(), value.to_vec()))
                .map_err(Error::from)
        })
    };
    let from = if sled_ids.is_empty() {
        let entries = check::indexes_from_log(shared)?;
        queries::rebuild_from(trees, &shared.codec, entries, &mut report)?;
        "the record log"
    } else if trees.query.holds_dates() {
        let entries = queries::tagged(runs::Index::Dates, queries::all_dates(trees))
            .chain(sled_entries(&sled_ids, runs::Index::Ids));
        queries::rebuild_from(trees, &shared.codec, entries, &mut report)?;
        "the sled tree `ids` and the runs"
    } else if !sled_dates.is_empty() {
        let entries = sled_entries(&sled_dates, runs::Index::Dates)
            .chain(sled_entries(&sled_ids, runs::Index::Ids));
        queries::rebuild_from(trees, &shared.codec, entries, &mut report)?;
        "the sled trees `ids` and `dates`"
    } else {
        let ids = sled_entries(&sled_ids, runs::Index::Ids)
            .map(|entry| entry.map(|(_, key, value)| (key, value)));
        let entries = check::dates_of(shared, ids).chain(sled_entries(&sled_ids, runs::Index::Ids));
        queries::rebuild_from(trees, &shared.codec, entries, &mut report)?;
        "the sled tree `ids` and the records"
    };
    if report.added + report.removed > 0 {
        info!(
            added = report.added,
            removed = report.removed,
            seconds = started.elapsed().as_secs_f64(),
            from,
            "built the id, date and query indexes (ids, dates, sources, sections, urls, counts)"
        );
    }
    Ok(())
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

/// The sequence number the next version gets: above the high-water mark,
/// which every batch commits with its records.
fn next_sequence(trees: &Trees) -> Result<u64> {
    let high = match trees.meta.get(SEQUENCE_HIGH_KEY)? {
        Some(bytes) => bytes
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Corrupt {
                key: format!("{META_TREE}/{SEQUENCE_HIGH_KEY}"),
                reason: "not 8 bytes".into(),
            })?,
        None => 0,
    };
    Ok(high + 1)
}

/// The log's committed end, if anything was ever committed.
fn log_tail(trees: &Trees) -> Result<Option<Tail>> {
    trees
        .meta
        .get(LOG_TAIL_KEY)?
        .map(|bytes| {
            Tail::decode(&bytes).ok_or_else(|| Error::Corrupt {
                key: format!("{META_TREE}/{LOG_TAIL_KEY}"),
                reason: "not a log position".into(),
            })
        })
        .transpose()
}

/// Sets the "open" marker and reports whether it was clear before, that is,
/// whether the last process closed the store cleanly. Its flush also makes
/// what `init_meta` wrote durable.
fn set_open_marker(trees: &Trees) -> Result<bool> {
    let was_open = trees.meta.insert(OPEN_MARKER_KEY, &b"1"[..])?.is_some();
    trees.db.flush()?;
    Ok(!was_open)
}

fn clear_open_marker(trees: &Trees) -> Result<()> {
    trees.meta.remove(OPEN_MARKER_KEY)?;
    trees.db.flush()?;
    Ok(())
}

/// Reads or creates the metadata: the format and the page-token key.
fn init_meta(trees: &Trees) -> Result<[u8; 32]> {
    let meta = &trees.meta;
    if meta.get(FORMAT_KEY)?.is_none() {
        meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
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
