//! Verifying a format 2 store against its record log, and rebuilding its
//! indexes from it.
//!
//! The log is the truth; the id index (`ids`), the date index,
//! `revisions` and `checkpoints` are derived from it. An article's life in the log is its versions in
//! sequence order, ended by a deletion record if it was deleted (and begun
//! again by the versions after it, if it was allowed back). The check reads
//! every record (its frame checksum; for a version, its content
//! decompressed and compared with its hash) and every index entry, with
//! point reads rather than holding the archive in memory:
//!
//! - each sound version is held by an index: it is its id's current version
//!   (then the `ids` entry agrees with it, and the date index holds an
//!   entry that agrees with it field by field: compared as a count and a
//!   sum of digests over all current versions, since a point read of the
//!   date index is a block read; the articles at fault are then named by
//!   lookups, up to a limit), or an older revision with a `revisions`
//!   entry pointing at it.
//!   A version no index holds is a problem: an index entry is missing, or
//!   the version was deleted or pruned and a crash came before its bytes
//!   were erased; repair settles which from the log and erases it if so;
//! - each deletion record has its tombstone (or a later life of the id);
//! - each `ids` entry points at a record of that id and sequence, or is a
//!   tombstone with its deletion record (the id and date indexes are in
//!   the runs, so a lookup there is a block read; one that fails is
//!   reported once, and repair rebuilds the runs from the log);
//! - each date entry is at the date of its id's current version and points
//!   at it; each `revisions` entry at that revision's record, older than
//!   the current one; each checkpoint at a record of that sequence;
//! - the query indexes and counters agree with the date entries
//!   (`queries::check`).
//!
//! Repair copies damaged records to `quarantined_records` byte for byte,
//! erases them in the log, and rebuilds the indexes from what is left (an
//! article whose newest version was damaged then serves the newest sound
//! one, and the report says so), erasing what deletions and
//! `--keep-revisions` removed.

use std::{
    collections::{BTreeMap, HashMap},
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError},
};

use super::{
    index::{
        self, BasicFields, DateEntry, IdEntry, IdState, RevisionEntry, Tombstone, VersionFacts,
    },
    log::{Frame, Pointer},
    queries::{self, IndexEntry, Tally, NAMED_PROBLEMS, NAMING_PROBES},
    record::{self, RecordHeader, RecordKind},
    runs::Index,
    Shared, QUARANTINED_RECORDS_TREE,
};
use crate::{
    article::{ArticleId, StoredArticle},
    error::{Error, Result},
    store::{keys, CheckReport, RepairReport},
};

/// The change feed starts its reads at a checkpoint: one every this many
/// records when they are rebuilt (the writer makes one per batch).
const CHECKPOINT_EVERY: usize = 1024;

/// Where a record is, for messages.
fn at(pointer: Pointer) -> String {
    format!("{}@{}", pointer.segment, pointer.offset)
}

/// A frame read by a check: its header and, for a version, its content
/// (hash verified); or why it is damaged.
enum Read {
    Version(RecordHeader, Box<StoredArticle>),
    Deletion(RecordHeader, record::DeletionNote),
    Damaged(String),
}

fn read(shared: &Shared, frame: Frame) -> Read {
    let bytes = match frame.record {
        Ok(bytes) => bytes,
        Err(reason) => return Read::Damaged(reason),
    };
    let header = match record::decode_header(&bytes) {
        Ok(header) => header,
        Err(reason) => return Read::Damaged(reason),
    };
    match header.kind {
        RecordKind::Deletion => match record::decode_deletion(&bytes) {
            Ok((header, note)) => Read::Deletion(header, note),
            Err(reason) => Read::Damaged(reason),
        },
        RecordKind::Version => match record::decode_verified(&shared.codec, &bytes) {
            Ok(stored) => Read::Version(header, Box::new(stored)),
            Err(reason) => Read::Damaged(reason),
        },
    }
}

/// Records checked together by one thread of the check: at most this many,
/// and at most [`CHECK_CHUNK_BYTES`] of them (a record may be 1 MiB).
const CHECK_CHUNK: usize = 256;
const CHECK_CHUNK_BYTES: usize = 4 << 20;

/// One thing the record pass found, in log order.
enum Finding {
    /// A readable record's sequence number (checked against the one before
    /// it when the chunks are merged).
    Sequence(u64),
    Problem(String),
    /// A deletion record: the id and the deletion's sequence.
    Deletion(ArticleId, u64),
    /// A current version: the digest of the date entry it calls for
    /// ([`date_digest`]).
    Current(u64),
    Damaged,
    /// A lookup in the id index failed (a run that cannot be read): said
    /// once, not once per record.
    IdIndexUnreadable(String),
}

/// Checks a chunk of consecutive frames on its own: reading, decompressing
/// and hashing a record and looking up its index entries depend on no
/// other record. The findings come in the order one thread would have
/// reported them.
fn check_chunk(shared: &Shared, frames: Vec<Frame>) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    // check_deletion and check_version report into a CheckReport.
    let mut report = CheckReport::default();
    let problems = |report: &mut CheckReport, findings: &mut Vec<Finding>| {
        findings.extend(report.problems.drain(..).map(Finding::Problem));
    };
    for frame in frames {
        let pointer = frame.pointer;
        match read(shared, frame) {
            Read::Damaged(reason) => {
                findings.push(Finding::Problem(format!(
                    "record at {}: {reason}",
                    at(pointer)
                )));
                findings.push(Finding::Damaged);
            }
            Read::Deletion(header, _) => {
                let checked = check_deletion(shared, &header, &mut report);
                unreadable_index(checked, &mut findings)?;
                problems(&mut report, &mut findings);
                findings.push(Finding::Sequence(header.sequence));
                findings.push(Finding::Deletion(header.id, header.sequence));
            }
            Read::Version(header, stored) => {
                findings.push(Finding::Sequence(header.sequence));
                let current = check_version(shared, header.sequence, pointer, &stored, &mut report);
                let current = unreadable_index(current, &mut findings)?;
                problems(&mut report, &mut findings);
                findings.extend(current.flatten().map(Finding::Current));
            }
        }
    }
    Ok(findings)
}

/// A lookup in the runs that failed (an unreadable block: [`Error::Io`] or
/// [`Error::Corrupt`]) becomes a finding, so the check goes on and the
/// repair rebuilds the runs; other errors stop the check.
fn unreadable_index<T>(checked: Result<T>, findings: &mut Vec<Finding>) -> Result<Option<T>> {
    match checked {
        Ok(value) => Ok(Some(value)),
        Err(e @ (Error::Io { .. } | Error::Corrupt { .. })) => {
            findings.push(Finding::IdIndexUnreadable(e.to_string()));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Verifies the whole store. Problems are collected, not returned as
/// errors; only a failure to read the store at all is an error.
///
/// The records are checked in chunks on every core (after an unclean stop
/// the server runs this before it listens, with nothing else to do): the
/// log is read in order on this thread, and the findings are merged back in
/// log order, so the report reads the same as from one thread. At most
/// about two chunks per thread are in memory at once.
pub(super) fn check(shared: &Shared) -> Result<CheckReport> {
    let trees = &shared.trees;
    let mut report = CheckReport::default();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut findings: BTreeMap<usize, Vec<Finding>> = BTreeMap::new();
    let (work, jobs) = std::sync::mpsc::sync_channel::<(usize, Vec<Frame>)>(workers);
    // Owned by the workers: when the last one ends, for whatever reason, the
    // channel closes and a send here fails instead of waiting for ever.
    let jobs = Arc::new(Mutex::new(jobs));
    let (found, results) = std::sync::mpsc::channel::<(usize, Result<Vec<Finding>>)>();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let (jobs, found) = (Arc::clone(&jobs), found.clone());
            scope.spawn(move || loop {
                let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                let Ok((n, frames)) = job else { return };
                let checked =
                    std::panic::catch_unwind(AssertUnwindSafe(|| check_chunk(shared, frames)))
                        .unwrap_or_else(|_| {
                            Err(Error::TaskFailed("a thread of the check panicked".into()))
                        });
                if found.send((n, checked)).is_err() {
                    return;
                }
            });
        }
        drop((found, jobs));
        let mut take = |results: &std::sync::mpsc::Receiver<_>, wait: bool| -> Result<bool> {
            let next = if wait {
                results.recv().ok()
            } else {
                results.try_recv().ok()
            };
            match next {
                Some((n, checked)) => {
                    findings.insert(n, checked?);
                    Ok(true)
                }
                None => Ok(false),
            }
        };
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        let mut chunks = 0;
        for frame in shared.log.scan()? {
            let frame = frame?;
            report.records += 1;
            chunk_bytes += frame.record.as_ref().map_or(0, Vec::len);
            chunk.push(frame);
            if chunk.len() == CHECK_CHUNK || chunk_bytes >= CHECK_CHUNK_BYTES {
                if work.send((chunks, std::mem::take(&mut chunk))).is_err() {
                    break;
                }
                chunks += 1;
                chunk_bytes = 0;
                // A failure a worker met stops the check now, not at the end.
                while take(&results, false)? {}
            }
        }
        if !chunk.is_empty() && work.send((chunks, chunk)).is_ok() {
            chunks += 1;
        }
        drop(work);
        while take(&results, true)? {}
        if findings.len() != chunks {
            return Err(Error::TaskFailed(
                "a thread of the check stopped before its records were checked".into(),
            ));
        }
        Ok(())
    })?;

    let mut last_sequence = 0;
    // Per id, the sequence of its last deletion record.
    let mut deletions: HashMap<ArticleId, u64> = HashMap::new();
    // The date entries the current versions call for.
    let mut wanted_dates = Tally::default();
    let mut id_index_unreadable = false;
    for finding in findings.into_values().flatten() {
        match finding {
            Finding::Sequence(sequence) => {
                if sequence <= last_sequence {
                    report.problems.push(format!(
                        "record {sequence} comes after record {last_sequence} in the log"
                    ));
                }
                last_sequence = last_sequence.max(sequence);
            }
            Finding::Problem(problem) => report.problems.push(problem),
            Finding::Deletion(id, sequence) => {
                deletions.insert(id, sequence);
            }
            Finding::Current(digest) => wanted_dates.add_hash(digest),
            Finding::Damaged => report.damaged_records += 1,
            Finding::IdIndexUnreadable(e) => {
                if !id_index_unreadable {
                    report.problems.push(format!("id index: {e}"));
                    id_index_unreadable = true;
                }
            }
        }
    }
    // The index passes read only, each its own index: one thread each.
    let (ids, dates, revisions, checkpoints, queries) = std::thread::scope(|scope| {
        let ids = scope.spawn(|| check_ids(shared, &deletions));
        let dates = scope.spawn(|| check_dates(shared));
        let revisions = scope.spawn(|| check_revisions(shared));
        let checkpoints = scope.spawn(|| check_checkpoints(shared));
        let queries = scope.spawn(|| {
            let mut problems = Vec::new();
            super::queries::check(trees, &shared.codec, &mut problems).map(|()| problems)
        });
        fn join<T>(name: &str, joined: std::thread::Result<Result<T>>) -> Result<T> {
            joined.map_err(|_| Error::TaskFailed(format!("the check of {name} panicked")))?
        }
        (
            join("ids", ids.join()),
            join("dates", dates.join()),
            join("revisions", revisions.join()),
            join("checkpoints", checkpoints.join()),
            queries
                .join()
                .map_err(|_| Error::TaskFailed("the check of the query indexes panicked".into()))
                .and_then(|checked| checked),
        )
    });
    let (dates, held_dates) = dates?;
    if held_dates != wanted_dates {
        report.problems.push(format!(
            "date index: {} entries for {} current versions{}",
            held_dates.entries,
            wanted_dates.entries,
            if held_dates.entries == wanted_dates.entries {
                ", not the ones they call for"
            } else {
                ""
            }
        ));
        name_date_problems(shared, &mut report.problems)?;
    }
    for part in [ids?, dates, revisions?, checkpoints?] {
        report.articles += part.articles;
        report.deleted += part.deleted;
        report.date_entries += part.date_entries;
        report.revision_entries += part.revision_entries;
        report.problems.extend(part.problems);
    }
    report.problems.extend(queries?);
    // An unreadable run fails a lookup in each pass that reads it: said
    // once.
    let mut seen = std::collections::HashSet::new();
    report
        .problems
        .retain(|problem| seen.insert(problem.clone()));
    Ok(report)
}

/// Each `ids` entry points at its record, or is a tombstone with its
/// deletion record (`deletions`: per id, its last deletion in the log).
fn check_ids(shared: &Shared, deletions: &HashMap<ArticleId, u64>) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    for entry in queries::all_ids(&shared.trees) {
        let (key, value) = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // A run that cannot be read: the query-index check names
                // it too; the repair rebuilds the runs from the log.
                report.problems.push(format!("id index: {e}"));
                return Ok(report);
            }
        };
        report.articles += 1;
        let Some(id) = id_of_key(&key) else {
            report
                .problems
                .push(format!("ids key {key:?} is not an id"));
            continue;
        };
        match IdState::decode(&value) {
            Err(reason) => report.problems.push(format!("ids entry {id}: {reason}")),
            Ok(IdState::Live(entry)) => {
                if !points_at(shared, entry.pointer, &id, entry.sequence, None) {
                    report.problems.push(format!(
                        "ids entry {id}: record {} is not at {}",
                        entry.sequence,
                        at(entry.pointer)
                    ));
                }
            }
            Ok(IdState::Deleted(tombstone)) => {
                report.articles -= 1;
                report.deleted += 1;
                if deletions.get(&id) != Some(&tombstone.sequence) {
                    report.problems.push(format!(
                        "ids entry {id}: a tombstone for deletion {}, which the log does not hold",
                        tombstone.sequence
                    ));
                }
            }
        }
    }
    Ok(report)
}

/// Each date entry is at its article's date and points at its current
/// version.
/// Also returns the tally of what the entries say ([`date_digest`]), for
/// the record pass to compare with what the current versions call for.
fn check_dates(shared: &Shared) -> Result<(CheckReport, Tally)> {
    let trees = &shared.trees;
    let mut report = CheckReport::default();
    let mut held = Tally::default();
    for entry in queries::all_dates(trees) {
        let (key, value) = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // A run that cannot be read: the query-index check names
                // it too; the repair rebuilds the runs from the log.
                report.problems.push(format!("date index: {e}"));
                break;
            }
        };
        report.date_entries += 1;
        let Some((published_at, id)) = keys::parse_date_key(&key) else {
            report
                .problems
                .push(format!("date key {key:?} cannot be decoded"));
            continue;
        };
        let current = match live_entry(shared, &id) {
            Ok(current) => current,
            Err(e) => {
                // The id index cannot be read: the record pass says so.
                report.problems.push(format!("id index: {e}"));
                break;
            }
        };
        match (current, DateEntry::locate(&value)) {
            (_, Err(reason)) => report
                .problems
                .push(format!("date entry for {id}: {reason}")),
            (None, _) => report
                .problems
                .push(format!("date entry for {id}: no such article")),
            (Some(current), Ok((sequence, _))) => {
                if current.published_at != published_at {
                    report
                        .problems
                        .push(format!("date entry for {id}: the article has another date"));
                } else if current.sequence != sequence {
                    report.problems.push(format!(
                        "date entry for {id}: points at record {sequence}, not the current {}",
                        current.sequence
                    ));
                }
            }
        }
        match DateEntry::decode(&shared.codec, published_at, id.clone(), &value) {
            Ok(entry) => held.add_hash(stored_digest(&key, &entry)),
            Err(reason) => report
                .problems
                .push(format!("date entry for {id}: {reason}")),
        }
    }
    Ok((report, held))
}

/// What a date entry says, as one number: the same for the entry a
/// current version calls for and for a stored entry that agrees with it
/// field by field (whatever dictionary compressed it). The check adds
/// these up on both sides ([`Tally`]) instead of looking up each
/// version's entry: the date index is in runs, where a point read costs a
/// block read (and a million of them, the time of the check again).
fn date_digest(
    date_key: &[u8],
    sequence: u64,
    pointer: Pointer,
    body_bytes: u64,
    article: &StoredArticle,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    date_key.hash(&mut hasher);
    (sequence, pointer, body_bytes, article.revision).hash(&mut hasher);
    (article.ingested_at, article.content_sha256).hash(&mut hasher);
    index::plain_basic(&article.content).hash(&mut hasher);
    hasher.finish()
}

/// [`date_digest`] of a stored date entry at `date_key`.
fn stored_digest(date_key: &[u8], entry: &DateEntry) -> u64 {
    date_digest(
        date_key,
        entry.sequence,
        entry.pointer,
        entry.body_bytes,
        &entry.article,
    )
}

/// Names the current versions whose date entry is missing or wrong, when
/// the tallies differ: a point read per article, so at most
/// [`NAMING_PROBES`] articles are looked at and [`NAMED_PROBLEMS`]
/// named.
fn name_date_problems(shared: &Shared, problems: &mut Vec<String>) -> Result<()> {
    let mut named = 0;
    for entry in queries::all_ids(&shared.trees).take(NAMING_PROBES) {
        if named == NAMED_PROBLEMS {
            break;
        }
        let Ok((key, value)) = entry else {
            return Ok(()); // the ids pass reports it
        };
        let (Some(id), Ok(IdState::Live(current))) = (id_of_key(&key), IdState::decode(&value))
        else {
            continue; // the ids pass reports it
        };
        let date_key = keys::date_key(current.published_at, &id);
        let found = match shared.trees.query.get(Index::Dates, &date_key) {
            Ok(found) => found,
            // A run that cannot be read is reported already.
            Err(_) => return Ok(()),
        };
        let problem = match found {
            None => format!(
                "record {}: {id} has no date entry at its date",
                current.sequence
            ),
            Some(bytes) => {
                let agrees =
                    DateEntry::decode(&shared.codec, current.published_at, id.clone(), &bytes)
                        .is_ok_and(|entry| {
                            entry.sequence == current.sequence
                                && entry.pointer == current.pointer
                                && entry.article.revision == current.revision
                                && entry.article.content_sha256 == current.content_sha256
                        });
                if agrees {
                    continue;
                }
                format!(
                    "date entry for {id}: disagrees with its record {}",
                    current.sequence
                )
            }
        };
        problems.push(problem);
        named += 1;
    }
    Ok(())
}

/// Each `revisions` entry points at its record, older than the current
/// revision.
fn check_revisions(shared: &Shared) -> Result<CheckReport> {
    let trees = &shared.trees;
    let mut report = CheckReport::default();
    for entry in &trees.revisions {
        let (key, value) = entry?;
        report.revision_entries += 1;
        let Some((id, revision)) = keys::parse_revision_key(&key) else {
            report
                .problems
                .push(format!("revisions key {key:?} cannot be decoded"));
            continue;
        };
        let entry = match RevisionEntry::decode(&value) {
            Ok(entry) => entry,
            Err(reason) => {
                report
                    .problems
                    .push(format!("revision {revision} of {id}: {reason}"));
                continue;
            }
        };
        if !points_at(shared, entry.pointer, &id, entry.sequence, Some(revision)) {
            report.problems.push(format!(
                "revision {revision} of {id}: record {} is not at {}",
                entry.sequence,
                at(entry.pointer)
            ));
        }
        let current = match live_entry(shared, &id) {
            Ok(current) => current,
            Err(e) => {
                report.problems.push(format!("id index: {e}"));
                break;
            }
        };
        if current.is_none_or(|current| current.revision <= revision) {
            report.problems.push(format!(
                "revision {revision} of {id}: not older than the current revision"
            ));
        }
    }
    Ok(report)
}

/// Each checkpoint is the place of its record.
fn check_checkpoints(shared: &Shared) -> Result<CheckReport> {
    let trees = &shared.trees;
    let mut report = CheckReport::default();
    for entry in &trees.checkpoints {
        let (key, value) = entry?;
        let sequence = keys::parse_u64_key(&key);
        // A checkpoint is where a read of the log may start: the frame of
        // its record, which may have been erased since (a deletion).
        let right = index::decode_pointer(&value).ok().is_some_and(|pointer| {
            match shared.log.frame_at(pointer) {
                Ok(Some(bytes)) => record::decode_header(&bytes)
                    .is_ok_and(|header| Some(header.sequence) == sequence),
                Ok(None) => sequence.is_some(),
                Err(_) => false,
            }
        });
        if !right {
            report.problems.push(format!(
                "checkpoint {sequence:?}: not the place of its record"
            ));
        }
    }
    Ok(report)
}

/// The live `ids` entry of `id`, if it has one that decodes.
fn live_entry(shared: &Shared, id: &ArticleId) -> Result<Option<IdEntry>> {
    Ok(shared
        .trees
        .id_bytes(id)?
        .and_then(|bytes| IdState::decode(&bytes).ok())
        .and_then(IdState::live))
}

/// Whether `pointer` holds record `sequence` of `id` (and of `revision`).
fn points_at(
    shared: &Shared,
    pointer: Pointer,
    id: &ArticleId,
    sequence: u64,
    revision: Option<u64>,
) -> bool {
    shared
        .log
        .read(pointer)
        .ok()
        .and_then(|bytes| record::decode_header(&bytes).ok())
        .is_some_and(|header| {
            &header.id == id
                && header.sequence == sequence
                && revision.is_none_or(|r| r == header.revision)
        })
}

/// A deletion record must have its tombstone, unless the id came back
/// later (then its `ids` entry is a live one of a later sequence).
fn check_deletion(shared: &Shared, header: &RecordHeader, report: &mut CheckReport) -> Result<()> {
    let state = shared
        .trees
        .id_bytes(&header.id)?
        .and_then(|bytes| IdState::decode(&bytes).ok());
    let settled = match state {
        Some(IdState::Deleted(tombstone)) => tombstone.sequence >= header.sequence,
        Some(IdState::Live(entry)) => entry.sequence > header.sequence,
        None => false,
    };
    if !settled {
        report.problems.push(format!(
            "record {}: the deletion of {} has no tombstone",
            header.sequence, header.id
        ));
    }
    Ok(())
}

/// The checks of one sound version against the indexes; for the current
/// version of its id, the digest of the date entry it calls for.
fn check_version(
    shared: &Shared,
    sequence: u64,
    pointer: Pointer,
    stored: &StoredArticle,
    report: &mut CheckReport,
) -> Result<Option<u64>> {
    let trees = &shared.trees;
    let id = &stored.id;
    let current = live_entry(shared, id)?;
    let held_as_older = trees
        .revisions
        .get(keys::revision_key(id, stored.revision))?
        .and_then(|bytes| RevisionEntry::decode(&bytes).ok())
        == Some(RevisionEntry {
            sequence,
            pointer,
            content_sha256: stored.content_sha256,
        });
    let Some(current) = current.filter(|current| current.sequence == sequence) else {
        if !held_as_older {
            report.problems.push(format!(
                "record {sequence}: revision {} of {id} is held by no index (an index entry \
                 is missing, or it was deleted or pruned and not yet erased)",
                stored.revision
            ));
        }
        return Ok(None);
    };
    if current.pointer != pointer
        || current.revision != stored.revision
        || current.published_at != stored.content.published_at
        || current.content_sha256 != stored.content_sha256
    {
        report.problems.push(format!(
            "ids entry {id}: disagrees with its record {sequence}"
        ));
    }
    Ok(Some(date_digest(
        &keys::date_key(stored.content.published_at, id),
        sequence,
        pointer,
        stored.content.body.len() as u64,
        stored,
    )))
}

fn id_of_key(key: &[u8]) -> Option<ArticleId> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|s| ArticleId::parse("id", s).ok())
}

/// Copies damaged records to `quarantined_records` and erases them in the
/// log, then rebuilds the indexes.
pub(super) fn repair(shared: &Shared) -> Result<RepairReport> {
    let trees = &shared.trees;
    let quarantine = trees.db.open_tree(QUARANTINED_RECORDS_TREE)?;
    let mut damaged = Vec::new();
    for frame in shared.log.scan()? {
        let frame = frame?;
        let pointer = frame.pointer;
        if let Read::Damaged(_) = read(shared, frame) {
            damaged.push(pointer);
        }
    }
    for pointer in &damaged {
        // The frame's bytes as they are, checksum failures included.
        let bytes = shared.log.read_raw(*pointer)?;
        let mut key = keys::u64_key(pointer.segment).to_vec();
        key.extend_from_slice(&keys::u64_key(pointer.offset));
        // Copied and made durable first, erased second: a crash in between
        // leaves the record in both places, never in neither.
        quarantine.insert(key, bytes)?;
        trees.db.flush()?;
        super::writer::sync_filesystem(&shared.dir)?;
        shared.log.erase(*pointer, true)?;
    }
    let mut report = rebuild_indexes(shared)?;
    report.quarantined = damaged.len() as u64;
    Ok(report)
}

/// An id's life as the log tells it, after the first pass.
#[derive(Default)]
struct Life {
    /// The sequence of its last deletion (0: never deleted).
    deleted_at_sequence: u64,
    /// That deletion, when it is the id's last word.
    tombstone: Option<Tombstone>,
    /// Its newest sound version after the last deletion:
    /// (revision, sequence, pointer).
    newest: Option<(u64, u64, Pointer)>,
}

/// Each id's life as the log tells it (pass 1 of a rebuild): its versions
/// and deletions in sequence order, damaged records left out.
fn lives_from_log(shared: &Shared) -> Result<HashMap<ArticleId, Life>> {
    let mut lives: HashMap<ArticleId, Life> = HashMap::new();
    for frame in shared.log.scan()? {
        let frame = frame?;
        let pointer = frame.pointer;
        match read(shared, frame) {
            Read::Damaged(_) => {}
            Read::Deletion(header, note) => {
                let life = lives.entry(header.id).or_default();
                life.deleted_at_sequence = header.sequence;
                life.newest = None;
                life.tombstone = Some(Tombstone {
                    sequence: header.sequence,
                    deleted_at: header.ingested_at,
                    allow_reingest: note.allow_reingest,
                });
            }
            Read::Version(header, _) => {
                let life = lives.entry(header.id).or_default();
                life.tombstone = None;
                if life
                    .newest
                    .is_none_or(|(revision, _, _)| header.revision >= revision)
                {
                    life.newest = Some((header.revision, header.sequence, pointer));
                }
            }
        }
    }
    Ok(lives)
}

/// The id and date entries the lives call for: per id, its tombstone, or
/// its current version's id entry and date entry (that version's record
/// read again). `each` sees every id entry first. A current version whose
/// record cannot be read now is an error when `skip_unreadable` is false
/// (a repair then stops before it erases anything, the runs as they
/// were), else it is left out with a warning (an open must still
/// succeed: see [`dates_of`]).
fn entries_of_lives<'a>(
    shared: &'a Shared,
    lives: HashMap<ArticleId, Life>,
    skip_unreadable: bool,
    mut each: impl FnMut(&ArticleId, &Life, &IdState) + 'a,
) -> impl Iterator<Item = Result<IndexEntry>> + 'a {
    lives.into_iter().flat_map(move |(id, life)| {
        let mut out = Vec::with_capacity(2);
        let state = match (life.newest, life.tombstone) {
            (None, Some(tombstone)) => IdState::Deleted(tombstone),
            (None, None) => return out,
            (Some((_, sequence, pointer)), _) => match current_version(shared, sequence, pointer) {
                Ok(stored) => {
                    out.push(Ok(date_entry(&id, sequence, pointer, &stored)));
                    IdState::Live(IdEntry {
                        sequence,
                        pointer,
                        revision: stored.revision,
                        published_at: stored.content.published_at,
                        content_sha256: stored.content_sha256,
                    })
                }
                Err(e) if skip_unreadable => {
                    tracing::warn!(error = %e, id = %id, "the current version cannot be read; its index entries are left out (see `check`)");
                    return out;
                }
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            },
        };
        each(&id, &life, &state);
        out.push(Ok((Index::Ids, id.as_str().as_bytes().to_vec(), state.encode())));
        out
    })
}

/// The id, date, label and url entries, from the log alone: what the
/// runs are built from when they cannot be trusted and there is nothing
/// else (an open does this; see [`super::build_indexes`]).
pub(super) fn indexes_from_log(
    shared: &Shared,
) -> Result<impl Iterator<Item = Result<IndexEntry>> + '_> {
    Ok(entries_of_lives(
        shared,
        lives_from_log(shared)?,
        true,
        |_, _, _| {},
    ))
}

/// The record of the current version `sequence` at `pointer`, verified.
fn current_version(shared: &Shared, sequence: u64, pointer: Pointer) -> Result<StoredArticle> {
    let bytes = shared.log.read(pointer)?;
    record::decode_verified(&shared.codec, &bytes).map_err(|reason| Error::Corrupt {
        key: format!("record {sequence}"),
        reason,
    })
}

/// The date entry of `id`'s current version `stored`.
fn date_entry(
    id: &ArticleId,
    sequence: u64,
    pointer: Pointer,
    stored: &StoredArticle,
) -> IndexEntry {
    let entry = index::encode_date_entry(
        &VersionFacts {
            sequence,
            pointer,
            revision: stored.revision,
            ingested_at: stored.ingested_at,
            content_sha256: stored.content_sha256,
            body_bytes: stored.content.body.len() as u64,
        },
        &BasicFields::of(&stored.content),
    );
    (
        Index::Dates,
        keys::date_key(stored.content.published_at, id),
        entry,
    )
}

/// Rebuilds the id and date indexes (with the query indexes), `revisions`
/// and `checkpoints` from the log: the newest sound version of each id's
/// current life is its current version, the other versions of that life
/// its history (the newest `--keep-revisions`, if set); versions of an
/// earlier life or beyond what is kept are erased; an id whose last record
/// is a deletion gets its tombstone. `revisions` and `checkpoints` entries
/// that are already right are left alone; the runs are written anew, and
/// the report counts the entries that changed, so a repair of a sound
/// store reports nothing. Not one transaction (the index of a large
/// archive is too big for one): an interrupted rebuild leaves problems
/// that the next check finds and the next rebuild finishes.
pub(super) fn rebuild_indexes(shared: &Shared) -> Result<RepairReport> {
    let trees = &shared.trees;
    let keep = shared.config.keep_revisions;
    let mut report = RepairReport::default();
    // Pass 1: each id's life, in sequence order.
    let lives = lives_from_log(shared)?;
    // Pass 2: history entries for the other versions of each current life;
    // the rest is erased; a checkpoint every so many records.
    let mut erase = Vec::new();
    let mut wanted_checkpoints = std::collections::BTreeMap::new();
    for (i, frame) in shared.log.scan()?.enumerate() {
        let frame = frame?;
        let pointer = frame.pointer;
        let header = match read(shared, frame) {
            Read::Damaged(_) => continue,
            Read::Deletion(header, _) => header,
            Read::Version(header, _) => {
                let life = &lives[&header.id];
                let held = life.newest.is_some_and(|(newest, sequence, _)| {
                    sequence != header.sequence
                        && header.sequence > life.deleted_at_sequence
                        && (keep == 0 || header.revision + keep > newest)
                });
                let current = life
                    .newest
                    .is_some_and(|(_, sequence, _)| sequence == header.sequence);
                if held {
                    let key = keys::revision_key(&header.id, header.revision);
                    let wanted = RevisionEntry {
                        sequence: header.sequence,
                        pointer,
                        content_sha256: header.content_sha256,
                    }
                    .encode();
                    if trees.revisions.get(&key)?.as_deref() != Some(wanted.as_slice()) {
                        trees.revisions.insert(key, wanted)?;
                        report.added += 1;
                    }
                } else if !current {
                    erase.push(pointer);
                }
                header
            }
        };
        if i % CHECKPOINT_EVERY == 0 {
            wanted_checkpoints.insert(keys::u64_key(header.sequence).to_vec(), pointer);
        }
    }
    // Pass 3: whatever the log does not account for.
    for entry in &trees.revisions {
        let (key, value) = entry?;
        let keep_entry = keys::parse_revision_key(&key).is_some_and(|(id, revision)| {
            let life = lives.get(&id);
            let current_life = life.and_then(|life| {
                life.newest
                    .map(|(newest, _, _)| (newest, life.deleted_at_sequence))
            });
            current_life.is_some_and(|(newest, deleted_at)| {
                newest > revision
                    && (keep == 0 || revision + keep > newest)
                    && RevisionEntry::decode(&value).is_ok_and(|entry| {
                        entry.sequence > deleted_at
                            && points_at(shared, entry.pointer, &id, entry.sequence, Some(revision))
                    })
            })
        });
        if !keep_entry {
            trees.revisions.remove(&key)?;
            report.removed += 1;
        }
    }
    for entry in &trees.checkpoints {
        let (key, value) = entry?;
        let right = wanted_checkpoints
            .get(key.as_ref())
            .is_some_and(|pointer| index::decode_pointer(&value).ok() == Some(*pointer));
        if right {
            wanted_checkpoints.remove(key.as_ref());
        } else {
            trees.checkpoints.remove(&key)?;
        }
    }
    for (key, pointer) in wanted_checkpoints {
        trees
            .checkpoints
            .insert(key, index::encode_pointer(pointer))?;
    }
    trees.db.flush()?;
    // Pass 4: the id and date indexes (and the query indexes and counters
    // from them), written anew; an article now served at an older revision
    // than the index held (its newer ones were damaged) is reported.
    let mut reverted = Vec::new();
    let entries = entries_of_lives(shared, lives, false, |id, life, state| {
        let old = trees.id_state(id).ok().flatten();
        if let (Some(IdState::Live(old)), IdState::Live(new)) = (old, state) {
            if old.revision > new.revision && life.deleted_at_sequence < old.sequence {
                reverted.push(format!(
                    "{id} now serves revision {} (revision {} was damaged and is quarantined)",
                    new.revision, old.revision
                ));
            }
        }
    });
    queries::rebuild_from(trees, &shared.codec, entries, &mut report)?;
    reverted.sort();
    report.reverted.extend(reverted);
    for pointer in &erase {
        shared.log.erase(*pointer, false)?;
    }
    report.erased = erase.len() as u64;
    super::writer::sync_filesystem(&shared.dir)?;
    Ok(report)
}

/// The date entries (tagged with their index) of the current versions
/// that `ids` (id, encoded id entry) point at, read from the log: what the
/// date index is built from when there is nothing else. A record that
/// cannot be read is left out with a warning rather than failing the
/// rebuild (which an open may be doing: the store must still open, so
/// that `check` reports the article and `check --repair` sets the record
/// aside).
pub(super) fn dates_of<'a>(
    shared: &'a Shared,
    ids: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a,
) -> impl Iterator<Item = Result<IndexEntry>> + 'a {
    ids.filter_map(move |entry| {
        let read = || -> Result<Option<IndexEntry>> {
            let (key, value) = entry?;
            let Some(id) = id_of_key(&key) else {
                return Ok(None);
            };
            let Ok(IdState::Live(current)) = IdState::decode(&value) else {
                return Ok(None);
            };
            match current_version(shared, current.sequence, current.pointer) {
                Ok(stored) => Ok(Some(date_entry(
                    &id,
                    current.sequence,
                    current.pointer,
                    &stored,
                ))),
                Err(e) => {
                    tracing::warn!(error = %e, id = %id, "the current version cannot be read; its date entry is left out (see `check`)");
                    Ok(None)
                }
            }
        };
        read().transpose()
    })
}
