//! The sled store: point reads, date-range scans, and writes through the
//! single writer.
//!
//! Layout on disk (one sled database in the data directory):
//! - tree `articles`: id → record ([`record`]), the primary copy;
//! - tree `by_date`: `seconds ‖ nanos ‖ id` ([`keys`]) → empty, the date index,
//!   derived from `articles` and changed in the same transaction;
//! - tree `meta`: the page-token signing key and the data format version.
//!
//! The store knows nothing of gRPC: it takes validated [`Article`]s and hands
//! back [`StoredArticle`]s.

pub mod keys;
pub mod record;
mod writer;

use std::{
    ops::Bound,
    path::{Path, PathBuf},
    sync::Arc,
    thread,
};

use tokio::sync::{mpsc, oneshot};

pub use writer::{BatchLimits, WriteOutcome};

use crate::{
    article::{Article, ArticleId, StoredArticle, Timestamp},
    error::{Error, Result},
};

const ARTICLES_TREE: &str = "articles";
const BY_DATE_TREE: &str = "by_date";
const META_TREE: &str = "meta";
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
    /// zstd-compress stored pages (sled's `compression` feature, which this
    /// crate's `compression` feature turns on). Fixed when the directory is
    /// created.
    pub compression: bool,
}

impl StoreConfig {
    /// Default settings for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            batch_limits: BatchLimits::default(),
            queue_capacity: 4096,
            compression: false,
        }
    }
}

/// The sled handles shared by readers and the writer.
#[derive(Clone)]
pub(crate) struct Trees {
    db: sled::Db,
    articles: sled::Tree,
    by_date: sled::Tree,
}

/// A handle to the archive's storage. Cheap to clone; every clone shares one
/// database and one writer. The writer thread stops once the last clone is
/// dropped, after finishing what was queued.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    trees: Trees,
    /// Bounded, so a burst of ingest waits here instead of growing the heap.
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<writer::WriteRequest>>,
    /// Joined on drop, so that once the last handle is gone the writer has
    /// finished and sled has released the directory lock.
    writer: Option<thread::JoinHandle<()>>,
    /// HMAC key for page tokens; kept in the database so tokens outlive a
    /// restart.
    page_token_key: [u8; 32],
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
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records in the primary tree.
    pub records: u64,
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
            return Err(Error::io(
                "enabling compression",
                std::io::Error::other("this binary was built without the `compression` feature"),
            ));
        }
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .use_compression(config.compression)
            .open()
            .map_err(|e| open_error(&config.path, e))?;
        let trees = Trees {
            articles: db.open_tree(ARTICLES_TREE)?,
            by_date: db.open_tree(BY_DATE_TREE)?,
            db,
        };
        let page_token_key = init_meta(&trees.db)?;

        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let writer_trees = trees.clone();
        let limits = config.batch_limits;
        let writer = thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || writer::run(writer_trees, receiver, limits))
            .map_err(|e| Error::io("starting the writer thread", e))?;

        Ok(Self {
            inner: Arc::new(Inner {
                trees,
                queue: Some(queue),
                writer: Some(writer),
                page_token_key,
            }),
        })
    }

    /// The stored article with this id, if any.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`].
    pub fn get(&self, id: &ArticleId) -> Result<Option<StoredArticle>> {
        match self.inner.trees.articles.get(id.as_str())? {
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
        queue
            .send(writer::WriteRequest { article, reply })
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
                let iter = self.inner.trees.by_date.range::<Vec<u8>, _>((lower, upper));
                match order {
                    Order::OldestFirst => Box::new(iter),
                    Order::NewestFirst => Box::new(iter.rev()),
                }
            };
        DateScan {
            entries,
            articles: self.inner.trees.articles.clone(),
        }
    }

    /// The key that signs page tokens for this archive.
    pub fn page_token_key(&self) -> &[u8; 32] {
        &self.inner.page_token_key
    }

    /// Flushes everything written so far to disk.
    ///
    /// # Errors
    /// [`Error::Storage`] when the flush fails.
    pub fn flush(&self) -> Result<()> {
        self.inner.trees.db.flush()?;
        Ok(())
    }

    /// Verifies that every record decodes and matches its hash, that each has
    /// exactly one index entry at its date, and that every index entry points
    /// at a record with that date. Blocking, and reads everything.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot be read at all.
    pub fn check(&self) -> Result<CheckReport> {
        let trees = &self.inner.trees;
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
                continue;
            };
            match record::decode(&id, &value) {
                Err(reason) => report.problems.push(format!("record {id}: {reason}")),
                Ok(stored) => {
                    if stored.content.sha256() != stored.content_sha256 {
                        report.problems.push(format!(
                            "record {id}: content does not match content_sha256"
                        ));
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
        let trees = &self.inner.trees;
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
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            Error::DataDirLocked {
                path: path.to_path_buf(),
            }
        }
        _ => e.into(),
    }
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
    db.flush()?;
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
                .contains("built without the `compression` feature"),
            "{error}"
        );
    }
}
