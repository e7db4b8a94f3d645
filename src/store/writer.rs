//! The single writer: group commit, flush, then acknowledge.
//!
//! Every write goes through one thread that owns the write side of the store.
//! It takes whatever articles are queued (up to a batch limit), decides each
//! outcome against the stored record (or an earlier article of the same
//! batch), applies the record and index changes of the whole batch in one
//! sled transaction over both trees, flushes, and only then answers. One
//! writer means no write conflicts, a total order of updates to an id, and
//! one fsync for many articles. It is a plain thread because every step
//! blocks on sled.
//!
//! "Flushed" means more than sled's `flush`: sled 0.34 makes its log durable
//! with `sync_file_range`, which does not persist the file's size or block
//! allocation, and writes large pages to `blobs/` files without any sync. A
//! power cut (or ext4 aborting its journal) seconds after an acknowledgement
//! could lose it, which `tests/storage_faults.rs` showed. So after sled's
//! flush the writer syncs the whole filesystem of the data directory
//! (`syncfs`) before it answers.
//!
//! A full disk is refused before sled sees it: sled 0.34 treats a failed
//! write as fatal for the whole database handle (every later write fails,
//! reads that page data in may fail, and even dropping the handle can hang
//! in its final flush). So before each commit the writer checks the free
//! space of the data directory's filesystem; below `min_free_bytes` it
//! refuses writes with [`Error::DiskLow`], health turns NOT_SERVING, and
//! it looks again every `recovery_interval` until there is room, then takes
//! writes again, in the same process. Reads are untouched throughout.
//!
//! If sled fails a write anyway (a disk that turns read-only, or space
//! taken by someone else faster than the check sees), the store refuses
//! every later write with [`Error::WritesStopped`] until the server is
//! restarted on a repaired disk. Everything acknowledged before was synced.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use sled::{
    transaction::{ConflictableTransactionError, TransactionError},
    Transactional,
};
use tokio::sync::{
    mpsc::{self, error::TryRecvError},
    oneshot,
};
use tracing::{debug, error, info, warn};

use super::{keys, record, Shared, Trees, WriteHealth};
use crate::{
    article::{Article, ArticleId, Timestamp},
    error::{Error, Result},
};

/// What the writer did with one article.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The id was new.
    Created,
    /// The id was known with other content; the record was replaced.
    Updated,
    /// The id was known with the same content; nothing was written.
    Unchanged,
}

/// One article waiting for the writer, and where to send its outcome.
pub(super) struct WriteRequest {
    pub article: Article,
    pub reply: oneshot::Sender<Result<WriteOutcome>>,
    /// Its share of the queue's byte budget, given back once it is answered.
    pub _queued: tokio::sync::OwnedSemaphorePermit,
}

/// Bounds on one group commit.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most articles in one commit.
    pub max_articles: usize,
    /// Most article bytes (title and body) in one commit; a batch stops
    /// growing once it passes this.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_articles: 1024,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Runs until every sender is dropped, then returns after the last batch.
pub(super) fn run(shared: &Shared, mut queue: mpsc::Receiver<WriteRequest>, limits: BatchLimits) {
    let mut batch = Vec::with_capacity(limits.max_articles);
    while let Some(first) = queue.blocking_recv() {
        let mut bytes = approximate_size(&first.article);
        // Near a full disk, batches shrink so that one never takes the last
        // of the room the store keeps free.
        let budget = match room_for_writes(&shared.config, bytes) {
            Ok(budget) => budget.min(limits.max_bytes),
            Err(full) => {
                let _ = first.reply.send(Err(full.clone()));
                if wait_for_space(shared, &mut queue, &full) {
                    continue;
                }
                return;
            }
        };
        batch.push(first);
        while batch.len() < limits.max_articles && bytes < budget {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += approximate_size(&next.article);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let articles: Vec<&Article> = batch.iter().map(|w| &w.article).collect();
        let result = commit(&shared.trees, &articles).and_then(|outcomes| {
            sync_filesystem(&shared.dir)?;
            Ok(outcomes)
        });
        if let Err(e) = &result {
            error!(error = %e, articles = batch.len(), "group commit failed; nothing in it was acknowledged");
        } else {
            debug!(articles = batch.len(), bytes, "group commit flushed");
        }
        // A failed write or sync leaves sled's handle (or the kernel's
        // page cache) in a state nothing in this process can repair.
        let failure = match &result {
            Err(e @ (Error::Storage(_) | Error::SyncFailed(_))) => Some(Arc::new(e.clone())),
            _ => None,
        };
        for (i, request) in batch.drain(..).enumerate() {
            let answer = match &result {
                Ok(outcomes) => Ok(outcomes[i]),
                Err(e) => Err(e.clone()),
            };
            // A closed receiver means the client went away; the write stands.
            let _ = request.reply.send(answer);
        }
        if let Some(cause) = failure {
            refuse_until_restart(shared, &mut queue, &cause);
            return;
        }
    }
}

/// How long a writer waiting for space sleeps between looks at its queue.
const REFUSE_POLL: Duration = Duration::from_millis(20);

/// sled writes a batch to its log and may write it again to `blobs/` files
/// and while compacting; a batch is given a third of the room left.
const WRITE_AMPLIFICATION: u64 = 3;

/// How many article bytes the next batch may hold without taking the free
/// space below `min_free_bytes`; [`Error::DiskLow`] when not even the first
/// article (`first_bytes`) fits.
fn room_for_writes(config: &super::StoreConfig, first_bytes: usize) -> Result<usize> {
    if config.min_free_bytes == 0 {
        return Ok(usize::MAX);
    }
    let free = match available_bytes(&config.path) {
        Ok(free) => free,
        // Cannot tell: let sled find out.
        Err(e) => {
            debug!(error = %e, "cannot read the free space of the data directory");
            return Ok(usize::MAX);
        }
    };
    let room = free.saturating_sub(config.min_free_bytes) / WRITE_AMPLIFICATION;
    if room < first_bytes as u64 || free < config.min_free_bytes {
        return Err(Error::DiskLow {
            free_bytes: free,
            min_free_bytes: config.min_free_bytes,
        });
    }
    Ok(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Bytes an unprivileged writer may still use on the filesystem of `path`.
fn available_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct; the path is a valid C
    // string for the duration of the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // the field types differ by platform
    Ok(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// Refuses writes while the disk is short of space, and returns once there
/// is room again (`true`) or the queue closed (`false`). Writes resume only
/// at an eighth above the mark, so a disk hovering at it does not flap.
fn wait_for_space(shared: &Shared, queue: &mut mpsc::Receiver<WriteRequest>, full: &Error) -> bool {
    let config = &shared.config;
    shared
        .health
        .send_replace(WriteHealth::DiskLow(full.to_string()));
    warn!("{full}; refusing writes until there is room");
    let resume_at = config.min_free_bytes + config.min_free_bytes / 8;
    let mut refusal = full.clone();
    let mut next_look = Instant::now() + config.recovery_interval;
    loop {
        match queue.try_recv() {
            Ok(request) => {
                let _ = request.reply.send(Err(refusal.clone()));
                continue;
            }
            Err(TryRecvError::Disconnected) => return false,
            Err(TryRecvError::Empty) => {}
        }
        if Instant::now() >= next_look {
            next_look = Instant::now() + config.recovery_interval;
            match available_bytes(&config.path) {
                Ok(free) if free >= resume_at => {
                    shared.health.send_replace(WriteHealth::Writable);
                    info!(
                        free_bytes = free,
                        "there is room on the disk again; taking writes"
                    );
                    return true;
                }
                Ok(free) => {
                    refusal = Error::DiskLow {
                        free_bytes: free,
                        min_free_bytes: config.min_free_bytes,
                    };
                }
                Err(e) => debug!(error = %e, "cannot read the free space of the data directory"),
            }
        }
        thread::sleep(REFUSE_POLL);
    }
}

/// After a write or sync failed: answers every later write with
/// [`Error::WritesStopped`] until the store is dropped.
fn refuse_until_restart(
    shared: &Shared,
    queue: &mut mpsc::Receiver<WriteRequest>,
    cause: &Arc<Error>,
) {
    let refusal = Error::WritesStopped(Arc::clone(cause));
    shared
        .health
        .send_replace(WriteHealth::Failed(refusal.to_string()));
    error!("{refusal}");
    while let Some(request) = queue.blocking_recv() {
        let _ = request.reply.send(Err(refusal.clone()));
    }
}

/// Makes everything written on the data directory's filesystem durable:
/// sled's log (whose own sync leaves its size and allocation unsynced) and
/// its `blobs/` files (which sled never syncs).
fn sync_filesystem(dir: &std::fs::File) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(Error::SyncFailed(Arc::new(std::io::Error::last_os_error())));
        }
    }
    #[cfg(not(target_os = "linux"))]
    dir.sync_all().map_err(|e| Error::SyncFailed(Arc::new(e)))?;
    Ok(())
}

pub(super) fn approximate_size(article: &Article) -> usize {
    article.content().body.len() + article.content().title.len()
}

/// Applies one batch atomically and flushes it. Returns the outcome of each
/// article in order.
pub(super) fn commit(trees: &Trees, batch: &[&Article]) -> Result<Vec<WriteOutcome>> {
    let ingested_at = Timestamp::now();
    // The state of each id touched so far in this batch, so a second article
    // with the same id is compared with the first, not with the disk.
    let mut latest: HashMap<&ArticleId, record::RecordHeader> = HashMap::new();
    let mut records = sled::Batch::default();
    let mut index = sled::Batch::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut changed = false;

    for article in batch {
        let id = article.id();
        let content = article.content();
        let sha = content.sha256();
        let previous = match latest.get(id) {
            Some(header) => Some(*header),
            None => match trees.articles.get(id.as_str())? {
                Some(bytes) => {
                    Some(
                        record::decode_header(&bytes).map_err(|reason| Error::Corrupt {
                            key: format!("articles/{id}"),
                            reason,
                        })?,
                    )
                }
                None => None,
            },
        };
        let outcome = match previous {
            Some(old) if old.content_sha256 == sha => WriteOutcome::Unchanged,
            Some(old) => {
                index.remove(keys::date_key(old.published_at, id));
                WriteOutcome::Updated
            }
            None => WriteOutcome::Created,
        };
        if outcome != WriteOutcome::Unchanged {
            records.insert(id.as_str(), record::encode(content, sha, ingested_at));
            // Inserted after any removal above, so moving an article to the
            // same date keeps its entry (a batch keeps the last write per key).
            index.insert(keys::date_key(content.published_at, id), &[][..]);
            latest.insert(
                id,
                record::RecordHeader {
                    published_at: content.published_at,
                    content_sha256: sha,
                },
            );
            changed = true;
        }
        outcomes.push(outcome);
    }

    if changed {
        // The closure only applies prepared batches, so sled may retry it.
        (&trees.articles, &trees.by_date)
            .transaction(|(articles, by_date)| {
                articles.apply_batch(&records)?;
                by_date.apply_batch(&index)?;
                Ok::<(), ConflictableTransactionError<Infallible>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => Error::from(e),
                TransactionError::Abort(never) => match never {},
            })?;
    }
    // Flush even when nothing changed: an UNCHANGED answer promises that the
    // stored version is durable, and an earlier failed flush may have left it
    // only in memory.
    trees.db.flush()?;
    Ok(outcomes)
}
