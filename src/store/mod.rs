//! The storage interface the service calls, and its engines.
//!
//! [`Store`] is what the gRPC layer sees: it takes validated [`Article`]s
//! and hands back [`StoredArticle`]s and pages of them, and it knows nothing
//! of gRPC; no engine's type crosses it. Behind it is one of two engines:
//! the sled engine ([`sled`], storage format 2: a compressed, append-only
//! record log with small indexes; [`Store::open`] with a [`StoreConfig`]),
//! or the PostgreSQL engine ([`postgres`]: tables any number of servers
//! share; [`Store::open_postgres`]). [`Store`] is an enum over the two
//! rather than a trait object: the set of engines is closed, each method is
//! one `match`, and the reads are plain `async fn`s without boxing. Each
//! engine decides what blocks: sled's point reads and small BASIC pages run
//! inline, its longer reads on the blocking pool; PostgreSQL's are async.
//!
//! Writes go through a single writer per store (group commit, then
//! acknowledge once durable: flush and filesystem sync on sled, the commit
//! on PostgreSQL); hashing (and on sled compression) happen in
//! [`Store::submit`], on the caller's side, before an article reaches it.
//! The sled store refuses writes while the disk is short of space and takes
//! them again when there is room; a write that the disk itself fails makes
//! it refuse writes until a restart. The PostgreSQL store refuses calls
//! while the database cannot be reached and goes on by itself once it can
//! ([`WriteHealth::Unreachable`]). Reads go on throughout (after a disk
//! failure, as far as the engine allows).

pub mod calendar;
pub mod keys;
pub mod postgres;
pub mod sled;
pub mod url_key;

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{oneshot, watch};

pub use self::sled::{upgrade::UpgradeReport, BatchLimits};
use crate::{
    article::{Article, ArticleId, StoredArticle, Timestamp},
    error::{Error, Result},
};

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
    /// Article bytes (compressed text) that may wait for the writer or be in
    /// its current batch; past this, submitters wait. Bounds the memory that
    /// many concurrent ingest streams can pin, whatever the article size.
    pub queue_bytes: usize,
    /// How often a store that refuses writes for lack of space looks at the
    /// free space again.
    pub recovery_interval: Duration,
    /// Writes are refused while the data directory's filesystem has less
    /// than this free, so sled never runs into a full disk (which it does not
    /// survive without a restart). 0 turns the check off.
    pub min_free_bytes: u64,
    /// Records stored before a compression dictionary is trained from them
    /// (0: never). Until then records are compressed without one.
    pub dictionary_after: u64,
    /// Revisions kept per article, the current one included (0: all). When
    /// an update makes more, the oldest are erased.
    pub keep_revisions: u64,
    /// Query-index entries (three or so per article) kept in memory before
    /// they are written out as a sorted run (sled engine; see
    /// `store::sled::runs`). The tests make it small, so that runs and
    /// their merges happen with a few articles.
    pub query_memtable_entries: usize,
}

impl StoreConfig {
    /// Default settings for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            // As `serve --cache-mb`'s default (BENCHMARKS.md "The sled cache").
            cache_capacity_bytes: 64 * 1024 * 1024,
            batch_limits: BatchLimits::default(),
            queue_capacity: 4096,
            queue_bytes: 64 * 1024 * 1024,
            recovery_interval: Duration::from_secs(2),
            min_free_bytes: 256 * 1024 * 1024,
            dictionary_after: 4096,
            keep_revisions: 0,
            query_memtable_entries: sled::runs::MEMTABLE_ENTRIES,
        }
    }
}

/// What the writer did with one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The id was new (or deleted and allowed back): revision 1 was stored.
    Created,
    /// The id was known with other content; a new revision was stored.
    Updated,
    /// The id was known with the same content; nothing was written.
    Unchanged,
    /// The article was not stored, for the reason given (`field: rule`): a
    /// deleted id that may not come back, a revision that cannot be
    /// restored.
    Rejected(String),
    /// The article was deleted; this is the DELETED change's sequence.
    Deleted {
        /// Its place in the change feed.
        sequence: u64,
    },
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
    /// The database (PostgreSQL engine) cannot be reached; calls fail
    /// UNAVAILABLE until it can, then the store goes on by itself. Holds
    /// the reason.
    Unreachable(String),
}

/// Which end of the date order a read starts from.
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

/// A place in the date order: a read can resume strictly after it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Publication time of the article at this place.
    pub published_at: Timestamp,
    /// Its id, which breaks ties between equal times.
    pub id: ArticleId,
}

/// One page of a date range, as the store reads it.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// Publication times to read.
    pub range: DateRange,
    /// Direction.
    pub order: Order,
    /// Start strictly after this place; `None`: at the start of the range.
    pub after: Option<Position>,
    /// Most articles.
    pub limit: usize,
    /// Whether articles carry their body (FULL) or not (BASIC).
    pub with_body: bool,
    /// Stop before the articles' estimated encoded size passes this (one
    /// article is always taken, so a reader makes progress).
    pub byte_budget: usize,
    /// Only articles that match.
    pub filter: Filter,
}

/// Most date-index entries one filtered page examines: a page whose filter
/// few articles match ends there (with what it found, perhaps nothing, and
/// the place to go on from), so no call runs long.
pub const FILTER_SCAN_BUDGET: usize = 20_000;

/// Articles chosen by their labels: values within a field match any of
/// them, fields must all match, an empty filter matches everything. Sources
/// are kept lower-cased (host names are compared case-insensitively); the
/// rest exactly. Built and checked at the service edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Lower-cased sources.
    pub sources: Vec<String>,
    /// Sections.
    pub sections: Vec<String>,
    /// Language tags.
    pub languages: Vec<String>,
    /// Tags (an article with any of them matches).
    pub tags: Vec<String>,
    /// Authors (an article with any of them matches).
    pub authors: Vec<String>,
}

impl Filter {
    /// Whether it matches everything.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.sections.is_empty()
            && self.languages.is_empty()
            && self.tags.is_empty()
            && self.authors.is_empty()
    }

    /// Whether `content` matches.
    pub fn matches(&self, content: &crate::article::ArticleContent) -> bool {
        let one =
            |wanted: &[String], value: &str| wanted.is_empty() || wanted.iter().any(|w| w == value);
        let any = |wanted: &[String], values: &[String]| {
            wanted.is_empty() || values.iter().any(|v| wanted.contains(v))
        };
        (self.sources.is_empty()
            || self
                .sources
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&content.source)))
            && one(&self.sections, &content.section)
            && one(&self.languages, &content.language)
            && any(&self.tags, &content.tags)
            && any(&self.authors, &content.authors)
    }

    /// A canonical encoding (each field sorted, without duplicates): two
    /// filters that select the same articles give the same bytes, so page
    /// tokens are bound to what a filter means, not how it was written.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, values) in [
            (1u8, &self.sources),
            (2, &self.sections),
            (3, &self.languages),
            (4, &self.tags),
            (5, &self.authors),
        ] {
            let mut sorted: Vec<&String> = values.iter().collect();
            sorted.sort();
            sorted.dedup();
            for value in sorted {
                out.push(tag);
                out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                out.extend_from_slice(value.as_bytes());
            }
        }
        out
    }
}

/// What [`Store::page`] read.
#[derive(Debug, Clone)]
pub struct StoredPage {
    /// The articles, in the requested order.
    pub articles: Vec<StoredArticle>,
    /// Whether another article may follow in the range.
    pub more: bool,
    /// The last place examined (returned or filtered out): the next page
    /// starts strictly after it.
    pub resume_after: Option<Position>,
}

/// One page of a url query ([`Store::by_url`]).
#[derive(Debug, Clone)]
pub struct UrlPageRequest {
    /// What to match.
    pub query: url_key::UrlQuery,
    /// Start strictly after this `urls` key (from the previous page).
    pub after: Option<Vec<u8>>,
    /// Most articles.
    pub limit: usize,
    /// Whether articles carry their body.
    pub with_body: bool,
    /// Stop before the articles' estimated size passes this (one article
    /// is always taken).
    pub byte_budget: usize,
}

/// What [`Store::by_url`] read.
#[derive(Debug, Clone)]
pub struct UrlPage {
    /// The articles, in (host-reversed url, scheme, published_at, id) order.
    pub articles: Vec<StoredArticle>,
    /// Whether more may follow.
    pub more: bool,
    /// The last `urls` key examined: the next page starts after it.
    pub resume_after: Option<Vec<u8>>,
}

/// The number of articles in one calendar bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBucket {
    /// When the bucket starts (UTC).
    pub start: Timestamp,
    /// Articles published in it (within the range asked).
    pub count: u64,
}

/// Most buckets one count may span.
pub const MAX_COUNT_INTERVALS: i64 = 100_000;

/// A page of an article's history, newest first.
#[derive(Debug, Clone)]
pub struct RevisionsPage {
    /// The revisions (the body left empty unless asked for).
    pub revisions: Vec<StoredArticle>,
    /// Whether older ones follow.
    pub more: bool,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Revision 1 of an article was stored.
    Created,
    /// A later revision was stored.
    Updated,
    /// The article was deleted.
    Deleted,
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its place in the archive's history.
    pub sequence: u64,
    /// What it did.
    pub kind: ChangeKind,
    /// The article.
    pub id: ArticleId,
    /// For CREATED and UPDATED: the revision stored (body as asked).
    pub article: Option<StoredArticle>,
    /// When it was stored.
    pub changed_at: Timestamp,
    /// For DELETED: the reason given.
    pub reason: String,
}

impl Change {
    /// About the bytes it takes in a response, for the feed's byte budget.
    pub fn estimated_size(&self) -> usize {
        64 + self.reason.len()
            + self.article.as_ref().map_or(0, |a| {
                a.content.body.len() + a.content.title.len() + a.content.description.len() + 512
            })
    }
}

/// What the change feed reads in one go.
#[derive(Debug, Clone)]
pub struct ChangesRequest {
    /// Start strictly after this sequence number.
    pub after: u64,
    /// Most changes.
    pub limit: usize,
    /// Stop before the changes' estimated size passes this (one is always
    /// taken).
    pub byte_budget: usize,
    /// Whether articles carry their body.
    pub with_body: bool,
    /// Only CREATED and UPDATED changes of matching articles (DELETED ones
    /// always).
    pub filter: Filter,
}

/// What [`Store::changes`] read.
#[derive(Debug, Clone)]
pub struct ChangesPage {
    /// The changes, in sequence order.
    pub changes: Vec<Change>,
    /// Where the next read starts: every change up to here was returned or
    /// passed over (filtered out, or gone).
    pub resume_after: u64,
    /// Whether the read reached the newest durable change.
    pub reached_end: bool,
    /// The newest durable sequence number when the read began.
    pub durable: u64,
}

/// What the store holds and waits for at one moment, for monitoring
/// ([`Store::usage`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Bytes allocated on disk to the record log.
    pub record_log_bytes: u64,
    /// Bytes allocated to the rest of the data directory (the engine's
    /// indexes, snapshots and blobs).
    pub other_bytes: u64,
    /// Bytes free for the server on the data directory's filesystem, when
    /// they can be read.
    pub free_bytes: Option<u64>,
    /// The free space writes keep ([`StoreConfig::min_free_bytes`]).
    pub min_free_bytes: u64,
    /// Operations queued for the writer and not yet in a batch.
    pub queued_operations: u64,
    /// Bytes (compressed article text, rounded up to KiB each) queued for
    /// the writer or in its current batch.
    pub queued_bytes: u64,
}

/// A waiting acknowledgement for one submitted article.
pub struct PendingWrite(oneshot::Receiver<Result<WriteOutcome>>);

impl PendingWrite {
    /// Waits until the article is durable (or the write failed).
    ///
    /// # Errors
    /// The storage error that failed its group commit, or [`Error::Closed`]
    /// when the writer stopped first.
    pub async fn outcome(self) -> Result<WriteOutcome> {
        self.0.await.unwrap_or(Err(Error::Closed))
    }
}

/// What [`Store::repair`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Index entries added or rewritten.
    pub added: u64,
    /// Index entries removed: orphans, wrong dates, undecodable keys.
    pub removed: u64,
    /// Damaged records moved out of the log to `quarantined_records`.
    pub quarantined: u64,
    /// Articles that now serve an older revision because their newest one
    /// was damaged, one line each.
    pub reverted: Vec<String>,
    /// Records erased because no index may hold them: versions of deleted
    /// articles or pruned revisions whose erasure a crash interrupted.
    pub erased: u64,
}

/// Counts what a committed batch did, for the metrics, from each
/// operation's body size and outcome.
pub(crate) fn tally_outcomes<'a>(
    operations: impl IntoIterator<Item = (u64, &'a Result<WriteOutcome>)>,
) -> crate::metrics::BatchOutcomes {
    let mut tally = crate::metrics::BatchOutcomes::default();
    for (body_bytes, outcome) in operations {
        match outcome {
            Ok(WriteOutcome::Created) => {
                tally.created += 1;
                tally.text_bytes += body_bytes;
            }
            Ok(WriteOutcome::Updated) => {
                tally.updated += 1;
                tally.text_bytes += body_bytes;
            }
            Ok(WriteOutcome::Unchanged) => tally.unchanged += 1,
            Ok(WriteOutcome::Rejected(_)) => tally.rejected += 1,
            Ok(WriteOutcome::Deleted { .. }) => tally.deleted += 1,
            // Not carried out (a deletion of an unknown id): nothing changed.
            Err(_) => {}
        }
    }
    tally
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records (stored versions) in the log.
    pub records: u64,
    /// Records that are damaged: an invalid key, undecodable, or content
    /// that does not match its hash. Only a good copy can restore them.
    pub damaged_records: u64,
    /// Articles (live entries of the id index).
    pub articles: u64,
    /// Deleted articles (tombstones in the id index).
    pub deleted: u64,
    /// Entries of the date index: one per article when sound.
    pub date_entries: u64,
    /// Entries of the revision index: one per record when sound.
    pub revision_entries: u64,
    /// One line per inconsistency; empty when the store is sound.
    pub problems: Vec<String>,
}

/// What [`Store::check_after_unclean_stop`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupCheck {
    /// The check before any repair.
    pub report: CheckReport,
    /// The index rebuild, when the check found index problems.
    pub repaired: Option<RepairReport>,
}

/// Articles whose text is at least this large are hashed and compressed on
/// the blocking pool rather than on an async worker, which they would hold
/// for a millisecond or more. Smaller ones cost tens of microseconds, less
/// than the hop.
const PREPARE_INLINE_BYTES: usize = 256 * 1024;

/// Unfiltered BASIC pages of up to this many articles are read on the async
/// worker: an index scan of this many entries (each decompressed, a
/// microsecond or two) costs less than handing the call to the blocking pool
/// and back (a one-day range of 85 articles at 1M: p50 0.64-0.74 ms inline
/// against 0.74-0.83 ms through the pool; BENCHMARKS.md "The allocator").
/// A filtered page goes to the pool whatever its size: it may scan
/// thousands of entries for a few matches.
const INLINE_BASIC_PAGE: usize = 100;

/// The newest durable change of the feed, followed as it moves.
pub enum DurableSequence {
    /// The sled engine's durable mark.
    Sled(watch::Receiver<sled::Durable>),
    /// The newest sequence committed in the database, as this replica
    /// last heard.
    Postgres(watch::Receiver<u64>),
}

impl DurableSequence {
    /// The newest durable sequence number now, marking it seen.
    pub fn current(&mut self) -> u64 {
        match self {
            Self::Sled(durable) => durable.borrow_and_update().sequence,
            Self::Postgres(durable) => *durable.borrow_and_update(),
        }
    }

    /// Waits until it moves past what [`DurableSequence::current`] saw.
    ///
    /// # Errors
    /// [`Error::Closed`] when the store has stopped.
    pub async fn changed(&mut self) -> Result<()> {
        match self {
            Self::Sled(durable) => durable.changed().await.map_err(|_| Error::Closed),
            Self::Postgres(durable) => durable.changed().await.map_err(|_| Error::Closed),
        }
    }
}

/// A handle to the archive's storage. Cheap to clone; every clone shares one
/// engine and one writer. The writer stops once the last clone is dropped,
/// after finishing what was queued.
#[derive(Clone)]
pub struct Store {
    engine: Arc<Engine>,
}

/// The engines a store can run on.
enum Engine {
    /// The embedded sled database, format 2.
    Sled(sled::SledStore),
    /// A PostgreSQL database, shared by any number of replicas.
    Postgres(postgres::PostgresStore),
}

impl Store {
    /// Opens (or creates) the store and starts its writer. Blocking.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] when another process has the directory open,
    /// [`Error::UpgradeNeeded`] for a format 1 directory, [`Error::DataDir`]
    /// for a directory that cannot be used, [`Error::Storage`] for anything
    /// else the engine refuses.
    pub fn open(config: &StoreConfig) -> Result<Self> {
        Ok(Self {
            engine: Arc::new(Engine::Sled(sled::SledStore::open(config)?)),
        })
    }

    /// Opens a store off the async workers (opening reads and may recover
    /// the engine's log, which blocks).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub async fn open_async(config: StoreConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open(&config))
            .await
            .map_err(|e| Error::TaskFailed(e.to_string()))?
    }

    /// Connects to a PostgreSQL database (see [`postgres`]), bringing its
    /// schema up to date, and starts this replica's writer.
    ///
    /// # Errors
    /// As [`postgres::PostgresStore::open`].
    pub async fn open_postgres(config: &postgres::PostgresConfig) -> Result<Self> {
        Ok(Self {
            engine: Arc::new(Engine::Postgres(
                postgres::PostgresStore::open(config).await?,
            )),
        })
    }

    /// Which engine this is, for logs: `sled` or `postgres`.
    pub fn engine_name(&self) -> &'static str {
        match &*self.engine {
            Engine::Sled(_) => "sled",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// The sled engine, when it is one (the data-directory tools: check,
    /// repair, flush).
    fn sled(&self) -> Option<&sled::SledStore> {
        match &*self.engine {
            Engine::Sled(store) => Some(store),
            Engine::Postgres(_) => None,
        }
    }

    /// Runs sled work on the blocking pool: anything that may read more
    /// than a few entries or records, which would hold an async worker.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&sled::SledStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || match store.sled() {
            Some(sled) => work(sled),
            None => Err(Error::TaskFailed("sled work on another engine".into())),
        })
        .await
        .map_err(|e| Error::TaskFailed(e.to_string()))?
    }

    /// Whether the last process that had this store open closed it cleanly.
    /// `false` after a crash or a kill: then [`Store::check`] (or
    /// [`Store::check_after_unclean_stop`]) is worth running. Always `true`
    /// on PostgreSQL, which recovers by itself.
    pub fn closed_cleanly(&self) -> bool {
        self.sled().is_none_or(sled::SledStore::closed_cleanly)
    }

    /// Makes the next server start check the store again (used when a check
    /// found problems that were left alone). Nothing on PostgreSQL.
    pub fn check_again_at_next_open(&self) {
        if let Some(store) = self.sled() {
            store.check_again_at_next_open();
        }
    }

    /// Whether the store takes writes now, and every change after this.
    /// Health follows it.
    pub fn write_health(&self) -> watch::Receiver<WriteHealth> {
        match &*self.engine {
            Engine::Sled(store) => store.write_health(),
            Engine::Postgres(store) => store.write_health(),
        }
    }

    /// The key that signs page tokens for this archive.
    pub fn page_token_key(&self) -> &[u8; 32] {
        match &*self.engine {
            Engine::Sled(store) => store.page_token_key(),
            Engine::Postgres(store) => store.page_token_key(),
        }
    }

    /// The current version of `id`, if any.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`].
    pub async fn get(&self, id: &ArticleId) -> Result<Option<StoredArticle>> {
        match self.get_revision(id, 0).await {
            Ok(stored) => Ok(Some(stored)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of a date range.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`].
    pub async fn page(&self, request: PageRequest) -> Result<StoredPage> {
        match &*self.engine {
            // A small BASIC page is one short index scan, cheaper than the
            // hop to the blocking pool and back; a one-day range is often
            // one, whatever page size it asks for.
            Engine::Sled(store) if store.is_small_basic_page(&request, INLINE_BASIC_PAGE) => {
                store.page(&request)
            }
            Engine::Sled(_) => self.blocking(move |store| store.page(&request)).await,
            Engine::Postgres(store) => store.page(&request).await,
        }
    }

    /// Hashes and compresses an article, then queues it for the writer.
    /// Waits while the queue is full, so callers feel back-pressure; the
    /// returned [`PendingWrite`] resolves once the article is durable.
    ///
    /// # Errors
    /// [`Error::Closed`] when the writer has stopped.
    pub async fn submit(&self, article: Article) -> Result<PendingWrite> {
        self.submit_with(article, None).await
    }

    /// Like [`Store::submit`], but stores the article as exactly revision
    /// `revision`, written at `ingested_at`: restoring a full-history
    /// export. The outcome is `Rejected` unless that revision is the next
    /// one of its id.
    ///
    /// # Errors
    /// [`Error::Closed`] when the writer has stopped.
    pub async fn restore(
        &self,
        article: Article,
        revision: u64,
        ingested_at: Timestamp,
    ) -> Result<PendingWrite> {
        self.submit_with(article, Some((revision, ingested_at)))
            .await
    }

    async fn submit_with(
        &self,
        article: Article,
        restore: Option<(u64, Timestamp)>,
    ) -> Result<PendingWrite> {
        let large = article.content().body.len() >= PREPARE_INLINE_BYTES;
        match &*self.engine {
            Engine::Sled(store) => {
                let mut prepared = if large {
                    self.blocking(move |store| Ok(store.prepare(&article)))
                        .await?
                } else {
                    store.prepare(&article)
                };
                if let Some((revision, ingested_at)) = restore {
                    prepared.restore_revision = Some(revision);
                    prepared.ingested_at = Some(ingested_at);
                }
                store
                    .submit(sled::Op::Put(prepared))
                    .await
                    .map(PendingWrite)
            }
            Engine::Postgres(store) => {
                let op = if large {
                    tokio::task::spawn_blocking(move || postgres::put(article, restore))
                        .await
                        .map_err(|e| Error::TaskFailed(e.to_string()))?
                } else {
                    postgres::put(article, restore)
                };
                store.submit(op).await.map(PendingWrite)
            }
        }
    }

    /// Deletes an article for good (see [`WriteOutcome::Deleted`]): queued
    /// behind the writes before it, durable once the returned
    /// [`PendingWrite`] resolves.
    ///
    /// # Errors
    /// [`Error::Closed`] when the writer has stopped; the outcome is
    /// [`Error::NotFound`] or [`Error::Deleted`] for an id that cannot be
    /// deleted.
    pub async fn delete(
        &self,
        id: ArticleId,
        reason: String,
        allow_reingest: bool,
    ) -> Result<PendingWrite> {
        match &*self.engine {
            Engine::Sled(store) => {
                let note = sled::record::DeletionNote {
                    reason,
                    allow_reingest,
                };
                store
                    .submit(sled::Op::Delete { id, note })
                    .await
                    .map(PendingWrite)
            }
            Engine::Postgres(store) => store
                .submit(postgres::Op::Delete {
                    id,
                    reason,
                    allow_reingest,
                })
                .await
                .map(PendingWrite),
        }
    }

    /// The current version of each id, in order, `None` for one that is not
    /// stored (unknown or deleted); BASIC (no record read) unless
    /// `with_body`.
    ///
    /// # Errors
    /// [`Error::Storage`] or damage.
    pub async fn batch_get(
        &self,
        ids: Vec<ArticleId>,
        with_body: bool,
    ) -> Result<Vec<Option<StoredArticle>>> {
        match &*self.engine {
            // Up to 1000 point reads and records.
            Engine::Sled(_) => {
                self.blocking(move |store| store.batch_get(&ids, with_body))
                    .await
            }
            Engine::Postgres(store) => store.batch_get(&ids, with_body).await,
        }
    }

    /// A page of articles whose url matches.
    ///
    /// # Errors
    /// [`Error::Storage`] or damage.
    pub async fn by_url(&self, request: UrlPageRequest) -> Result<UrlPage> {
        match &*self.engine {
            Engine::Sled(_) => self.blocking(move |store| store.by_url(&request)).await,
            Engine::Postgres(store) => store.by_url(&request).await,
        }
    }

    /// Articles per `interval` published in `range` that match `filter`:
    /// the non-empty buckets, ascending. Unfiltered counts come from
    /// counters kept with the writes; filtered ones scan an index (or the
    /// date range).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range (or, for an open bound,
    /// the archive's first or last article) spans more than
    /// [`MAX_COUNT_INTERVALS`] buckets; [`Error::Storage`] or damage.
    pub async fn count(
        &self,
        range: DateRange,
        interval: calendar::Interval,
        filter: Filter,
    ) -> Result<Vec<CountBucket>> {
        match &*self.engine {
            // A filtered count may scan an index.
            Engine::Sled(_) => {
                self.blocking(move |store| store.count(range, interval, &filter))
                    .await
            }
            Engine::Postgres(store) => store.count(range, interval, &filter).await,
        }
    }

    /// Revision `revision` of `id` (0: the current one).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Deleted`], [`Error::NoSuchRevision`],
    /// or damage.
    pub async fn get_revision(&self, id: &ArticleId, revision: u64) -> Result<StoredArticle> {
        match &*self.engine {
            // A point read is served from sled's cache or one short read,
            // so it runs inline rather than paying for a blocking-pool hop.
            Engine::Sled(store) => store.get_revision(id, revision),
            Engine::Postgres(store) => store.get_revision(id, revision).await,
        }
    }

    /// A page of `id`'s history, newest first, strictly older than `before`
    /// when given.
    ///
    /// # Errors
    /// As [`Store::get_revision`].
    pub async fn revisions(
        &self,
        id: &ArticleId,
        before: Option<u64>,
        limit: usize,
        with_body: bool,
    ) -> Result<RevisionsPage> {
        match &*self.engine {
            // Older revisions are read from the log.
            Engine::Sled(_) => {
                let id = id.clone();
                self.blocking(move |store| store.revisions(&id, before, limit, with_body))
                    .await
            }
            Engine::Postgres(store) => store.revisions(id, before, limit, with_body).await,
        }
    }

    /// Changes of the feed; see [`ChangesRequest`].
    ///
    /// # Errors
    /// [`Error::Storage`] or damage.
    pub async fn changes(&self, request: ChangesRequest) -> Result<ChangesPage> {
        match &*self.engine {
            Engine::Sled(_) => self.blocking(move |store| store.changes(&request)).await,
            Engine::Postgres(store) => store.changes(&request).await,
        }
    }

    /// The newest durable sequence number, now and at every change: what a
    /// follower of the feed waits on.
    pub fn durable_sequence(&self) -> DurableSequence {
        match &*self.engine {
            Engine::Sled(store) => DurableSequence::Sled(store.durable_changes()),
            Engine::Postgres(store) => DurableSequence::Postgres(store.durable_changes()),
        }
    }

    /// Flushes everything written so far to disk. Blocking. Nothing to do
    /// on PostgreSQL, where every acknowledged write is committed.
    ///
    /// # Errors
    /// [`Error::Storage`] when the flush fails.
    pub fn flush(&self) -> Result<()> {
        self.sled().map_or(Ok(()), sled::SledStore::flush)
    }

    /// Size on disk, free space and the writer's queue, now. Blocking, but
    /// cheap: a few `stat` calls. On PostgreSQL only the queue (the
    /// database reports its own size).
    pub fn usage(&self) -> StoreUsage {
        match &*self.engine {
            Engine::Sled(store) => store.usage(),
            Engine::Postgres(store) => store.usage(),
        }
    }

    /// Makes the store record its writer's work into `metrics` (see
    /// [`sled::SledStore::attach_metrics`]). Blocking: it counts the live
    /// articles once (on PostgreSQL it reads the count the writers keep,
    /// and follows it from then on).
    ///
    /// # Errors
    /// [`Error::Storage`] when the index cannot be read.
    pub fn attach_metrics(&self, metrics: Arc<crate::metrics::Metrics>) -> Result<()> {
        match &*self.engine {
            Engine::Sled(store) => store.attach_metrics(metrics),
            Engine::Postgres(store) => store.attach_metrics(metrics),
        }
    }

    /// Flushes and gives up this handle, off the async workers: when it is
    /// the last handle, dropping it waits for the writer to finish its queue
    /// and for the engine's final flush, which block. A store whose writes
    /// had failed is not flushed (nothing acknowledged is left unsynced, and
    /// a failed sled handle cannot flush).
    ///
    /// # Errors
    /// [`Error::Storage`] when the flush fails.
    pub async fn close(self) -> Result<()> {
        tokio::task::spawn_blocking(move || {
            if !matches!(*self.write_health().borrow(), WriteHealth::Failed(_)) {
                self.flush()?;
            }
            drop(self);
            Ok(())
        })
        .await
        .map_err(|e| Error::TaskFailed(e.to_string()))?
    }

    /// Verifies every record and every index against the log. Blocking,
    /// and reads everything.
    ///
    /// # Errors
    /// [`Error::Storage`] when the engine cannot be read at all.
    pub fn check(&self) -> Result<CheckReport> {
        self.sled().ok_or_else(not_a_data_dir)?.check()
    }

    /// Checks the store's consistency, on either engine: [`Store::check`]
    /// on sled (off the async workers), the tables against each other on
    /// PostgreSQL. Reads everything.
    ///
    /// # Errors
    /// [`Error::Storage`] or a database error when the store cannot be read.
    pub async fn verify(&self) -> Result<CheckReport> {
        match &*self.engine {
            Engine::Sled(_) => self.blocking(sled::SledStore::check).await,
            Engine::Postgres(store) => store.check().await,
        }
    }

    /// Moves damaged records aside and rebuilds every index from the log.
    /// Blocking; meant for an archive no server is using.
    ///
    /// # Errors
    /// [`Error::Storage`] when the engine cannot be read or written.
    pub fn repair(&self) -> Result<RepairReport> {
        self.sled().ok_or_else(not_a_data_dir)?.repair()
    }

    /// The check a server runs on a store that was not closed cleanly; see
    /// [`sled::SledStore::check_after_unclean_stop`].
    ///
    /// # Errors
    /// [`Error::Damaged`] when records are damaged, [`Error::Storage`] when
    /// the engine fails.
    pub fn check_after_unclean_stop(&self) -> Result<StartupCheck> {
        self.sled()
            .ok_or_else(not_a_data_dir)?
            .check_after_unclean_stop()
    }
}

/// What check and repair say on PostgreSQL.
fn not_a_data_dir() -> Error {
    Error::Config(
        "check and repair work on a sled data directory; PostgreSQL keeps its own \
         consistency (use its tools: amcheck, pg_dump)"
            .into(),
    )
}

/// The instant just before `t` (bounds are exclusive above).
pub fn just_before(t: Timestamp) -> Timestamp {
    if t.nanos > 0 {
        Timestamp {
            seconds: t.seconds,
            nanos: t.nanos - 1,
        }
    } else {
        Timestamp {
            seconds: t.seconds - 1,
            nanos: 999_999_999,
        }
    }
}

/// Checks that counting from `first` to `last` (inclusive) by `interval`
/// stays within [`MAX_COUNT_INTERVALS`] buckets.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `interval` when it does not.
pub fn check_count_span(
    first: Timestamp,
    last: Timestamp,
    interval: calendar::Interval,
) -> Result<()> {
    let spanned = interval.bucket(last) - interval.bucket(first) + 1;
    if spanned > MAX_COUNT_INTERVALS {
        return Err(Error::InvalidArgument(
            crate::article::ValidationError::new(
                "interval",
                format!(
                    "the range spans {spanned} buckets from {} to {}, more than \
                 {MAX_COUNT_INTERVALS}; narrow start_time/end_time or count by a longer interval",
                    first.to_rfc3339(),
                    last.to_rfc3339()
                ),
            ),
        ));
    }
    Ok(())
}

/// Converts the data directory of `config` to the current storage format,
/// in place and crash-safely (a no-op when it is current). Blocking; no
/// server may be running on it.
///
/// # Errors
/// [`Error::DataDirLocked`], [`Error::DataDir`] or [`Error::Storage`].
pub fn upgrade(config: &StoreConfig) -> Result<UpgradeReport> {
    sled::upgrade::upgrade(config)
}
