//! The single writer: group commit, flush, then acknowledge.
//!
//! Every write goes through one thread that owns the write side of the store.
//! It takes whatever articles are queued (up to a batch limit), decides each
//! outcome from the `ids` entry (or an earlier operation of the same
//! batch), gives every new version (and every deletion) the next sequence
//! number, appends the new records to the record log and syncs them, then
//! applies every index entry of the batch (with the sequence high-water
//! mark, the log's new end and a checkpoint for the change feed) in one
//! sled transaction; then it flushes, erases what deletions and pruning
//! removed, syncs, and only then answers. One
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
    index::{self, IdEntry, IdState, RevisionEntry, Tombstone, VersionFacts},
    log::{Pointer, RecordLog},
    queries::{self, Labels, QueryChanges},
    record::{self, DeletionNote, RecordHeader, RecordKind},
    runs, Prepared, Shared, Trees, LOG_TAIL_KEY, SEQUENCE_HIGH_KEY,
};
use crate::{
    article::{ArticleId, Timestamp},
    error::{Error, Result},
    store::{keys, WriteHealth, WriteOutcome},
};

/// What the writer is asked to do.
#[derive(Debug)]
// Deletions are rare and the queue is bounded: boxing every article to
// shrink them would cost an allocation per write for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Op {
    /// Store an article (a new version, unless it is unchanged).
    Put(Prepared),
    /// Delete an article for good.
    Delete { id: ArticleId, note: DeletionNote },
}

impl Op {
    /// Bytes this operation adds to a batch (and holds in the queue).
    pub(crate) fn size(&self) -> usize {
        match self {
            Op::Put(prepared) => prepared.size(),
            Op::Delete { note, .. } => 64 + note.reason.len(),
        }
    }
}

/// One operation waiting for the writer, and where to send its outcome.
pub(super) struct WriteRequest {
    pub op: Op,
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
    /// Revisions kept per article (0: all): older ones are pruned.
    pub keep_revisions: u64,
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
        let mut bytes = first.op.size();
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
                    bytes += next.op.size();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let ops: Vec<&Op> = batch.iter().map(|w| &w.op).collect();
        let started = Instant::now();
        let result = commit(
            &shared.trees,
            &shared.log,
            &shared.codec,
            &mut state,
            &ops,
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
            // Durable now: the change feed may show it.
            shared.durable(state.next_sequence - 1, shared.log.tail());
        }
        if let (Some(metrics), Ok(outcomes)) = (shared.metrics.get(), &result) {
            metrics.batch_committed(
                batch.len(),
                started.elapsed(),
                &super::usage::tally(&batch, outcomes),
            );
        }
        let unchanged = match &result {
            Ok(outcomes) => outcomes
                .iter()
                .filter(|o| matches!(o, Ok(WriteOutcome::Unchanged)))
                .count(),
            Err(_) => 0,
        };
        let articles = batch.len();
        // A failed write or sync leaves sled's handle (or the kernel's
        // page cache) in a state nothing in this process can repair.
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
pub(super) fn available_bytes(path: &std::path::Path) -> std::io::Result<u64> {
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

/// What one batch will change, built up operation by operation. Later
/// operations of the batch see what earlier ones did.
struct BatchChanges<'a> {
    trees: &'a Trees,
    codec: &'a Codec,
    /// Per id: what the id index will hold (`None`: nothing).
    latest: HashMap<ArticleId, Option<IdState>>,
    /// Revision entries this batch wrote (`Some`) or removed (`None`).
    revisions: HashMap<Vec<u8>, Option<RevisionEntry>>,
    /// Records no index will point at once the batch commits: erased after.
    erase: Vec<Pointer>,
    /// The changes of the indexes in the runs: ids, dates, labels, urls.
    query: QueryChanges,
    /// Per id: the labels of the current version this batch stored.
    labels: HashMap<ArticleId, Labels>,
}

impl BatchChanges<'_> {
    /// What the id index holds for `id`, as of the operations so far.
    fn state(&mut self, id: &ArticleId) -> std::result::Result<Option<IdState>, Error> {
        if let Some(known) = self.latest.get(id) {
            return Ok(*known);
        }
        self.trees.id_state(id)
    }

    /// The labels of `id`'s current version (at `published_at`), as of the
    /// operations so far.
    fn current_labels(&self, id: &ArticleId, published_at: Timestamp) -> Result<Labels> {
        if let Some(labels) = self.labels.get(id) {
            return Ok(labels.clone());
        }
        queries::stored_labels(self.trees, self.codec, id, published_at)?.ok_or_else(|| {
            Error::Corrupt {
                key: format!("dates/{id}"),
                reason: "the current version has no date entry".into(),
            }
        })
    }

    fn set_state(&mut self, id: &ArticleId, state: IdState) {
        self.query.put_id(id, state.encode());
        self.latest.insert(id.clone(), Some(state));
    }

    /// The revision entry of `id` at `revision`, as of the operations so far.
    fn revision(&self, id: &ArticleId, revision: u64) -> Result<Option<RevisionEntry>> {
        let key = keys::revision_key(id, revision);
        if let Some(pending) = self.revisions.get(&key) {
            return Ok(*pending);
        }
        Ok(self
            .trees
            .revisions
            .get(&key)?
            .and_then(|bytes| RevisionEntry::decode(&bytes).ok()))
    }

    fn remove_revision(&mut self, id: &ArticleId, revision: u64) -> Result<()> {
        if let Some(entry) = self.revision(id, revision)? {
            self.erase.push(entry.pointer);
        }
        self.revisions
            .insert(keys::revision_key(id, revision), None);
        Ok(())
    }

    /// Removes every older revision of `id` up to and including `newest`,
    /// from the newest down, stopping at the first that is gone (older ones
    /// went before it: revisions are only ever removed from the oldest up).
    fn remove_revisions_up_to(&mut self, id: &ArticleId, newest: u64) -> Result<()> {
        let mut revision = newest;
        while revision >= 1 && self.revision(id, revision)?.is_some() {
            self.remove_revision(id, revision)?;
            revision -= 1;
        }
        Ok(())
    }
}

/// Applies one batch and flushes it: the new records go to the log (made
/// durable first), then every index entry, the log's new end and the
/// sequence high-water mark in one sled transaction; records that nothing
/// points at any more (deleted or pruned) are erased after. Returns the
/// outcome of each operation in order: one that cannot be carried out
/// (an undecodable `ids` entry, a deletion of an unknown id) gets its error
/// and is left alone, the others are applied.
///
/// # Errors
/// A storage error, which fails the whole batch.
pub(super) fn commit(
    trees: &Trees,
    log: &RecordLog,
    codec: &Codec,
    state: &mut WriterState,
    batch: &[&Op],
    now: Timestamp,
) -> Result<Vec<Result<WriteOutcome>>> {
    let mut changes = BatchChanges {
        trees,
        codec,
        latest: HashMap::new(),
        revisions: HashMap::new(),
        erase: Vec::new(),
        query: QueryChanges::default(),
        labels: HashMap::new(),
    };
    let first_sequence = state.next_sequence;
    let mut pending = log.begin_batch(first_sequence);
    let mut checkpoint = None;
    let mut outcomes = Vec::with_capacity(batch.len());

    for op in batch {
        let outcome = match op {
            Op::Put(article) => put(&mut changes, &mut pending, codec, state, article, now),
            Op::Delete { id, note } => delete(&mut changes, &mut pending, state, id, note, now),
        };
        if checkpoint.is_none() && state.next_sequence > first_sequence {
            checkpoint = pending.first();
        }
        outcomes.push(outcome);
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
        let mut revisions = sled::Batch::default();
        for (key, entry) in &changes.revisions {
            match entry {
                Some(entry) => revisions.insert(key.as_slice(), entry.encode()),
                None => revisions.remove(key.as_slice()),
            }
        }
        let mut checkpoints = sled::Batch::default();
        if let Some(pointer) = checkpoint {
            checkpoints.insert(
                &keys::u64_key(first_sequence),
                index::encode_pointer(pointer),
            );
        }
        let (query_changes, counts) =
            std::mem::take(&mut changes.query).into_parts(&trees.counts)?;
        let mut query_log = sled::Batch::default();
        if !query_changes.is_empty() {
            query_log.insert(
                &keys::u64_key(first_sequence),
                runs::encode_changes(&query_changes),
            );
        }
        let batches = [revisions, meta, checkpoints, query_log, counts];
        let views = [
            &trees.revisions,
            &trees.meta,
            &trees.checkpoints,
            trees.query.log_tree(),
            &trees.counts,
        ];
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
            .map_err(Error::from)?;
        trees.query.apply(query_changes, first_sequence);
    }
    // Flush even when nothing changed: an UNCHANGED answer promises that the
    // stored version is durable, and an earlier failed flush may have left it
    // only in memory.
    trees.db.flush()?;
    log.committed(&pending);
    // No index points at these any more; the caller's filesystem sync makes
    // the erasure durable with the rest.
    for pointer in changes.erase {
        log.erase(pointer, false)?;
    }
    Ok(outcomes)
}

/// One article: a new version, or UNCHANGED, or REJECTED (a takedown that
/// sticks, a revision that cannot be restored).
fn put(
    changes: &mut BatchChanges<'_>,
    pending: &mut super::log::PendingBatch,
    codec: &Codec,
    state: &mut WriterState,
    article: &Prepared,
    now: Timestamp,
) -> Result<WriteOutcome> {
    let id = &article.id;
    let previous = match changes.state(id)? {
        Some(IdState::Deleted(tombstone)) if !tombstone.allow_reingest => {
            return Ok(WriteOutcome::Rejected(format!(
                "id: article {id} was deleted on {} (change {}); it cannot be ingested again",
                tombstone.deleted_at.to_rfc3339(),
                tombstone.sequence
            )));
        }
        // Deleted, but allowed back: it starts a new life at revision 1.
        Some(IdState::Deleted(_)) | None => None,
        Some(IdState::Live(entry)) => Some(entry),
    };
    let revision = match article.restore_revision {
        None => {
            if previous.is_some_and(|old| old.content_sha256 == article.content_sha256) {
                return Ok(WriteOutcome::Unchanged);
            }
            previous.map_or(1, |old| old.revision + 1)
        }
        Some(restored) => {
            let current = previous.map_or(0, |old| old.revision);
            // Restoring again what is stored (a restore run twice) changes
            // nothing.
            let stored_sha = match previous {
                Some(old) if old.revision == restored => Some(old.content_sha256),
                Some(old) if restored < old.revision => changes
                    .revision(id, restored)?
                    .map(|entry| entry.content_sha256),
                _ => None,
            };
            if stored_sha == Some(article.content_sha256) {
                return Ok(WriteOutcome::Unchanged);
            }
            if restored != current + 1 {
                return Ok(WriteOutcome::Rejected(format!(
                    "revision: revision {restored} of {id} cannot be restored: the archive \
                     holds revision {current} of it, and revisions are restored in order, \
                     each one after the one before"
                )));
            }
            restored
        }
    };
    let (payload, basic) = article.encoded.ready(codec);
    let sequence = state.next_sequence;
    state.next_sequence += 1;
    let header = RecordHeader {
        sequence,
        id: id.clone(),
        kind: RecordKind::Version,
        revision,
        ingested_at: article.ingested_at.unwrap_or(now),
        content_sha256: article.content_sha256,
        published_at: article.published_at,
        compression: payload.compression,
    };
    let pointer = pending.push(&record::encode_version(&header, &payload));
    if let Some(old) = previous {
        // The version it replaces becomes history, unless it is pruned at
        // once (--keep-revisions 1).
        let kept_from = match state.keep_revisions {
            0 => 1,
            keep => (revision + 1).saturating_sub(keep).max(1),
        };
        if old.revision >= kept_from {
            changes.revisions.insert(
                keys::revision_key(id, old.revision),
                Some(RevisionEntry {
                    sequence: old.sequence,
                    pointer: old.pointer,
                    content_sha256: old.content_sha256,
                }),
            );
        } else {
            changes.erase.push(old.pointer);
        }
        if kept_from > 1 {
            changes
                .remove_revisions_up_to(id, (kept_from - 1).min(old.revision.saturating_sub(1)))?;
        }
        if old.published_at != article.published_at {
            changes
                .query
                .remove_date(&keys::date_key(old.published_at, id));
        }
        let old_labels = changes.current_labels(id, old.published_at)?;
        changes.query.remove(&old_labels, old.published_at, id);
    }
    changes.query.add(&article.labels, article.published_at, id);
    changes.labels.insert(id.clone(), article.labels.clone());
    let facts = VersionFacts {
        sequence,
        pointer,
        revision,
        ingested_at: header.ingested_at,
        content_sha256: article.content_sha256,
        body_bytes: article.body_bytes,
    };
    changes.query.put_date(
        &keys::date_key(article.published_at, id),
        index::encode_date_entry(&facts, &basic),
    );
    changes.set_state(
        id,
        IdState::Live(IdEntry {
            sequence,
            pointer,
            revision,
            published_at: article.published_at,
            content_sha256: article.content_sha256,
        }),
    );
    Ok(if previous.is_some() {
        WriteOutcome::Updated
    } else {
        WriteOutcome::Created
    })
}

/// A takedown: one DELETED record in the log; every index entry of the
/// article removed; the content of every revision erased once the batch
/// commits; a tombstone in `ids`.
fn delete(
    changes: &mut BatchChanges<'_>,
    pending: &mut super::log::PendingBatch,
    state: &mut WriterState,
    id: &ArticleId,
    note: &DeletionNote,
    now: Timestamp,
) -> Result<WriteOutcome> {
    let current = match changes.state(id)? {
        None => return Err(Error::NotFound(id.to_string())),
        Some(IdState::Deleted(tombstone)) => {
            return Err(Error::Deleted {
                id: id.to_string(),
                at: tombstone.deleted_at,
                sequence: tombstone.sequence,
            })
        }
        Some(IdState::Live(entry)) => entry,
    };
    let sequence = state.next_sequence;
    state.next_sequence += 1;
    let header = RecordHeader {
        sequence,
        id: id.clone(),
        kind: RecordKind::Deletion,
        revision: current.revision,
        ingested_at: now,
        content_sha256: [0; 32],
        published_at: current.published_at,
        compression: super::codec::Compression::None,
    };
    let labels = changes.current_labels(id, current.published_at)?;
    changes.query.remove(&labels, current.published_at, id);
    changes.labels.remove(id);
    pending.push(&record::encode_deletion(&header, note));
    changes.erase.push(current.pointer);
    changes.remove_revisions_up_to(id, current.revision.saturating_sub(1))?;
    changes
        .query
        .remove_date(&keys::date_key(current.published_at, id));
    changes.set_state(
        id,
        IdState::Deleted(Tombstone {
            sequence,
            deleted_at: now,
            allow_reingest: note.allow_reingest,
        }),
    );
    Ok(WriteOutcome::Deleted { sequence })
}
