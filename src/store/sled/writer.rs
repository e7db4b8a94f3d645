//! The single writer: group commit, flush, then acknowledge.
//!
//! Every write goes through one thread that owns the write side of the store.
//! It takes whatever articles are queued (up to a batch limit), decides each
//! outcome from the `ids` entry (or an earlier article of the same batch),
//! gives every new version the next sequence number, appends the new
//! records to the record log and syncs them, then applies every index entry
//! of the batch (with the sequence high-water mark and the log's new end)
//! in one sled transaction; then it flushes, syncs, and only then answers. One
//! writer means no write conflicts, a total order of updates to an id, and
//! one fsync for many articles. It is a plain thread because every step
//! blocks on sled. Hashing and compression are done before an article gets
//! here ([`super::Prepared`]), so the writer only orders, applies and
//! flushes.
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
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use sled::Transactional;
use tokio::sync::{
    mpsc::{self, error::TryRecvError},
    oneshot,
};
use tracing::{debug, error, info, warn};

use super::{
    codec::Codec,
    index::{self, IdEntry, RevisionEntry, VersionFacts},
    log::RecordLog,
    record::{self, RecordHeader, RecordKind},
    Prepared, Shared, Trees, LOG_TAIL_KEY, SEQUENCE_HIGH_KEY,
};
use crate::{
    article::{ArticleId, Timestamp},
    error::{Error, Result},
    store::{keys, WriteHealth, WriteOutcome},
};

/// One article waiting for the writer, and where to send its outcome.
pub(super) struct WriteRequest {
    pub article: Prepared,
    pub reply: oneshot::Sender<Result<WriteOutcome>>,
    /// Its share of the queue's byte budget, given back once it is answered.
    pub _queued: tokio::sync::OwnedSemaphorePermit,
}

/// Bounds on one group commit.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most articles in one commit.
    pub max_articles: usize,
    /// Most article bytes (compressed text) in one commit; a batch stops
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

/// The writer's own state, carried from batch to batch.
pub(super) struct WriterState {
    /// The sequence number the next new version gets. Never reused: it
    /// starts above every sequence number ever committed (the high-water
    /// mark in `meta` is committed with each batch), and a failed batch's
    /// numbers are skipped.
    pub next_sequence: u64,
}

/// Runs until every sender is dropped, then returns after the last batch.
pub(super) fn run(
    shared: &Arc<Shared>,
    mut state: WriterState,
    mut queue: mpsc::Receiver<WriteRequest>,
    limits: BatchLimits,
) {
    let mut batch = Vec::with_capacity(limits.max_articles);
    while let Some(first) = queue.blocking_recv() {
        let mut bytes = first.article.size();
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
                    bytes += next.article.size();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let articles: Vec<&Prepared> = batch.iter().map(|w| &w.article).collect();
        let result = commit(
            &shared.trees,
            &shared.log,
            &shared.codec,
            &mut state,
            &articles,
            Timestamp::now(),
        )
        .and_then(|outcomes| {
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
        let unchanged = match &result {
            Ok(outcomes) => outcomes
                .iter()
                .filter(|o| matches!(o, Ok(WriteOutcome::Unchanged)))
                .count(),
            Err(_) => 0,
        };
        let articles = batch.len();
        let failure = match &result {
            Err(e @ (Error::Storage(_) | Error::SyncFailed(_))) => Some(Arc::new(e.clone())),
            _ => None,
        };
        for (i, request) in batch.drain(..).enumerate() {
            let answer = match &result {
                Ok(outcomes) => outcomes[i].clone(),
                Err(e) => Err(e.clone()),
            };
            // A closed receiver means the client went away; the write stands.
            let _ = request.reply.send(answer);
        }
        if let Some(cause) = failure {
            refuse_until_restart(shared, &mut queue, &cause);
            return;
        }
        shared.after_commit(state.next_sequence, unchanged, articles);
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
fn room_for_writes(config: &crate::store::StoreConfig, first_bytes: usize) -> Result<usize> {
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
pub(super) fn sync_filesystem(dir: &std::fs::File) -> Result<()> {
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

/// The state of one id as the batch goes: what `ids` holds, or what an
/// earlier article of the same batch made it.
type Latest = HashMap<ArticleId, Option<IdEntry>>;

/// Applies one batch and flushes it: the new versions' records go to the
/// log (made durable first), then every index entry and the log's new end
/// in one sled transaction. Returns the outcome of each article in order:
/// an article whose `ids` entry cannot be decoded gets that error and is
/// left alone, the others are written.
///
/// # Errors
/// A storage error, which fails the whole batch.
pub(super) fn commit(
    trees: &Trees,
    log: &RecordLog,
    codec: &Codec,
    state: &mut WriterState,
    batch: &[&Prepared],
    ingested_at: Timestamp,
) -> Result<Vec<Result<WriteOutcome>>> {
    let mut latest = Latest::new();
    let mut pending = log.begin_batch(state.next_sequence);
    let mut ids = sled::Batch::default();
    let mut dates = sled::Batch::default();
    let mut revisions = sled::Batch::default();
    let mut outcomes = Vec::with_capacity(batch.len());

    for article in batch {
        let previous = match latest.get(&article.id) {
            Some(known) => *known,
            None => match trees.ids.get(article.id.as_str())? {
                None => None,
                Some(bytes) => match IdEntry::decode(&bytes) {
                    Ok(entry) => Some(entry),
                    Err(reason) => {
                        // Only this article fails: the others of the batch
                        // do not depend on its entry.
                        outcomes.push(Err(Error::Corrupt {
                            key: format!("ids/{}", article.id),
                            reason,
                        }));
                        continue;
                    }
                },
            },
        };
        if previous.is_some_and(|old| old.content_sha256 == article.content_sha256) {
            outcomes.push(Ok(WriteOutcome::Unchanged));
            continue;
        }
        let (payload, basic) = article.encoded.ready(codec);
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        let revision = previous.map_or(1, |old| old.revision + 1);
        let header = RecordHeader {
            sequence,
            id: article.id.clone(),
            kind: RecordKind::Version,
            revision,
            ingested_at: article.ingested_at.unwrap_or(ingested_at),
            content_sha256: article.content_sha256,
            published_at: article.published_at,
            compression: payload.compression,
        };
        let pointer = pending.push(&record::encode_version(&header, &payload));
        if let Some(old) = previous {
            // The version it replaces becomes history.
            let entry = RevisionEntry {
                sequence: old.sequence,
                pointer: old.pointer,
            };
            revisions.insert(
                keys::revision_key(&article.id, old.revision),
                entry.encode(),
            );
            if old.published_at != article.published_at {
                dates.remove(keys::date_key(old.published_at, &article.id));
            }
        }
        let facts = VersionFacts {
            sequence,
            pointer,
            revision,
            ingested_at: header.ingested_at,
            content_sha256: article.content_sha256,
            body_bytes: article.body_bytes,
        };
        dates.insert(
            keys::date_key(article.published_at, &article.id),
            index::encode_date_entry(&facts, &basic),
        );
        let entry = IdEntry {
            sequence,
            pointer,
            revision,
            published_at: article.published_at,
            content_sha256: article.content_sha256,
        };
        ids.insert(article.id.as_str(), entry.encode());
        latest.insert(article.id.clone(), Some(entry));
        outcomes.push(Ok(if previous.is_some() {
            WriteOutcome::Updated
        } else {
            WriteOutcome::Created
        }));
    }

    if !pending.is_empty() {
        // Durable before anything points at it.
        log.write(&pending)?;
        let mut meta = sled::Batch::default();
        meta.insert(
            SEQUENCE_HIGH_KEY,
            &(state.next_sequence - 1).to_be_bytes()[..],
        );
        meta.insert(LOG_TAIL_KEY, &pending.tail().encode()[..]);
        let batches = [ids, dates, revisions, meta];
        let views = [&trees.ids, &trees.dates, &trees.revisions, &trees.meta];
        // The closure only applies prepared batches, so sled may retry it.
        views[..]
            .transaction(|trees| {
                for (tree, batch) in trees.iter().zip(&batches) {
                    tree.apply_batch(batch)?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<std::convert::Infallible>>(
                    (),
                )
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => Error::from(e),
                sled::transaction::TransactionError::Abort(never) => match never {},
            })?;
    }
    // Flush even when nothing changed: an UNCHANGED answer promises that the
    // stored version is durable, and an earlier failed flush may have left it
    // only in memory.
    trees.db.flush()?;
    log.committed(&pending);
    Ok(outcomes)
}
