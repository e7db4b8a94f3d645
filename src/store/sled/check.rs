//! Verifying a format 2 store against its record log, and rebuilding its
//! indexes from it.
//!
//! The log is the truth; `ids`, `dates` and `revisions` are derived from
//! it. The check reads every record (its frame checksum, then the record
//! decompressed and compared with its content hash) and every index entry,
//! with point reads rather than holding the archive in memory:
//!
//! - each record is sound and either its id's current version (then the
//!   `ids` entry and the date entry agree with it, field by field) or an
//!   older revision with a `revisions` entry pointing at it;
//! - each `ids` entry points at a record of that id and sequence;
//! - each date entry is at the date of its id's current version and points
//!   at it;
//! - each `revisions` entry points at that revision's record, older than
//!   the current one.
//!
//! Repair copies damaged records to `quarantined_records` byte for byte,
//! erases them in the log, and rebuilds the indexes from what is left: an
//! article whose newest version was damaged then serves the newest sound
//! one, and the report says so.

use std::collections::HashMap;

use super::{
    index::{self, BasicFields, DateEntry, IdEntry, RevisionEntry, VersionFacts},
    log::Pointer,
    record, Shared, QUARANTINED_RECORDS_TREE,
};
use crate::{
    article::{ArticleContent, ArticleId, StoredArticle},
    error::{Error, Result},
    store::{keys, CheckReport, RepairReport},
};

/// Where a record is, for messages.
fn at(pointer: Pointer) -> String {
    format!("{}@{}", pointer.segment, pointer.offset)
}

/// Verifies the whole store. Problems are collected, not returned as
/// errors; only a failure to read the store at all is an error.
pub(super) fn check(shared: &Shared) -> Result<CheckReport> {
    let trees = &shared.trees;
    let mut report = CheckReport::default();
    let mut last_sequence = 0;
    for frame in shared.log.scan()? {
        let frame = frame?;
        report.records += 1;
        let stored = frame.record.and_then(|bytes| {
            let stored = record::decode_verified(&shared.codec, &bytes)?;
            let header = record::decode_header(&bytes)?;
            Ok((header.sequence, stored))
        });
        let (sequence, stored) = match stored {
            Ok(sound) => sound,
            Err(reason) => {
                report
                    .problems
                    .push(format!("record at {}: {reason}", at(frame.pointer)));
                report.damaged_records += 1;
                continue;
            }
        };
        if sequence <= last_sequence {
            report.problems.push(format!(
                "record {sequence} comes after record {last_sequence} in the log"
            ));
        }
        last_sequence = last_sequence.max(sequence);
        check_record_indexes(shared, sequence, frame.pointer, &stored, &mut report)?;
    }
    for entry in &trees.ids {
        let (key, value) = entry?;
        report.articles += 1;
        let Some(id) = id_of_key(&key) else {
            report
                .problems
                .push(format!("ids key {key:?} is not an id"));
            continue;
        };
        let entry = match IdEntry::decode(&value) {
            Ok(entry) => entry,
            Err(reason) => {
                report.problems.push(format!("ids entry {id}: {reason}"));
                continue;
            }
        };
        if !points_at(shared, entry.pointer, &id, entry.sequence, None) {
            report.problems.push(format!(
                "ids entry {id}: record {} is not at {}",
                entry.sequence,
                at(entry.pointer)
            ));
        }
    }
    for entry in &trees.dates {
        let (key, value) = entry?;
        report.date_entries += 1;
        let Some((published_at, id)) = keys::parse_date_key(&key) else {
            report
                .problems
                .push(format!("date key {key:?} cannot be decoded"));
            continue;
        };
        let current = current_of(shared, &id)?;
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
    }
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
        if current_of(shared, &id)?.is_none_or(|current| current.revision <= revision) {
            report.problems.push(format!(
                "revision {revision} of {id}: not older than the current revision"
            ));
        }
    }
    Ok(report)
}

/// The decodable `ids` entry of `id`, if any.
fn current_of(shared: &Shared, id: &ArticleId) -> Result<Option<IdEntry>> {
    Ok(shared
        .trees
        .ids
        .get(id.as_str())?
        .and_then(|bytes| IdEntry::decode(&bytes).ok()))
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

/// The checks of one sound record against the indexes.
fn check_record_indexes(
    shared: &Shared,
    sequence: u64,
    pointer: Pointer,
    stored: &StoredArticle,
    report: &mut CheckReport,
) -> Result<()> {
    let trees = &shared.trees;
    let id = &stored.id;
    let Some(current) = current_of(shared, id)? else {
        report
            .problems
            .push(format!("record {sequence}: {id} has no ids entry"));
        return Ok(());
    };
    if current.sequence != sequence {
        if current.revision <= stored.revision {
            report.problems.push(format!(
                "record {sequence}: revision {} of {id} is newer than the current revision {}",
                stored.revision, current.revision
            ));
            return Ok(());
        }
        let entry = trees
            .revisions
            .get(keys::revision_key(id, stored.revision))?
            .and_then(|bytes| RevisionEntry::decode(&bytes).ok());
        if entry != Some(RevisionEntry { sequence, pointer }) {
            report.problems.push(format!(
                "record {sequence}: revision {} of {id} has no revisions entry pointing at it",
                stored.revision
            ));
        }
        return Ok(());
    }
    if current.pointer != pointer
        || current.revision != stored.revision
        || current.published_at != stored.content.published_at
        || current.content_sha256 != stored.content_sha256
    {
        report.problems.push(format!(
            "ids entry {id}: disagrees with its record {sequence}"
        ));
    }
    let date_key = keys::date_key(stored.content.published_at, id);
    match trees.dates.get(&date_key)? {
        None => report.problems.push(format!(
            "record {sequence}: {id} has no date entry at its date"
        )),
        Some(bytes) => {
            let decoded = DateEntry::decode(
                &shared.codec,
                stored.content.published_at,
                id.clone(),
                &bytes,
            )
            .ok();
            let agrees = decoded.is_some_and(|entry| {
                entry.sequence == sequence
                    && entry.pointer == pointer
                    && entry.body_bytes == stored.content.body.len() as u64
                    && entry.article == without_body(stored)
            });
            if !agrees {
                report.problems.push(format!(
                    "date entry for {id}: disagrees with its record {sequence}"
                ));
            }
        }
    }
    Ok(())
}

fn without_body(stored: &StoredArticle) -> StoredArticle {
    StoredArticle {
        content: ArticleContent {
            body: String::new(),
            ..stored.content.clone()
        },
        ..stored.clone()
    }
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
        let sound = frame
            .record
            .as_ref()
            .is_ok_and(|bytes| record::decode_verified(&shared.codec, bytes).is_ok());
        if !sound {
            damaged.push(frame.pointer);
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
        shared.log.erase(*pointer)?;
    }
    let mut report = rebuild_indexes(shared)?;
    report.quarantined = damaged.len() as u64;
    Ok(report)
}

/// What the log says an article's current version is.
struct Newest {
    revision: u64,
    sequence: u64,
    pointer: Pointer,
}

/// Rebuilds `ids`, `dates` and `revisions` from the sound records: the
/// newest sound revision of each id is its current version, every other is
/// history. Entries that are already right are left alone, so a repair of
/// a sound store writes nothing. Not one transaction (the index of a large
/// archive is too big for one): an interrupted repair leaves problems that
/// the next check finds and the next repair finishes.
pub(super) fn rebuild_indexes(shared: &Shared) -> Result<RepairReport> {
    let trees = &shared.trees;
    let mut report = RepairReport::default();
    let sound = |frame: super::log::Frame| {
        let bytes = frame.record.ok()?;
        let header = record::decode_header(&bytes).ok()?;
        record::decode_verified(&shared.codec, &bytes).ok()?;
        Some((header, frame.pointer))
    };
    // Pass 1: the newest sound version of each id.
    let mut newest: HashMap<ArticleId, Newest> = HashMap::new();
    for frame in shared.log.scan()? {
        let Some((header, pointer)) = sound(frame?) else {
            continue;
        };
        let slot = newest.entry(header.id).or_insert(Newest {
            revision: 0,
            sequence: 0,
            pointer,
        });
        if header.revision >= slot.revision {
            *slot = Newest {
                revision: header.revision,
                sequence: header.sequence,
                pointer,
            };
        }
    }
    // Pass 2: a revisions entry for every older version.
    for frame in shared.log.scan()? {
        let Some((header, pointer)) = sound(frame?) else {
            continue;
        };
        if newest[&header.id].sequence == header.sequence {
            continue;
        }
        let key = keys::revision_key(&header.id, header.revision);
        let wanted = RevisionEntry {
            sequence: header.sequence,
            pointer,
        }
        .encode();
        if trees.revisions.get(&key)?.as_deref() != Some(wanted.as_slice()) {
            trees.revisions.insert(key, wanted)?;
            report.added += 1;
        }
    }
    // Pass 3: the ids and date entries of each current version.
    for (id, newest) in &newest {
        let bytes = shared.log.read(newest.pointer)?;
        let stored =
            record::decode_verified(&shared.codec, &bytes).map_err(|reason| Error::Corrupt {
                key: format!("record {}", newest.sequence),
                reason,
            })?;
        let entry = IdEntry {
            sequence: newest.sequence,
            pointer: newest.pointer,
            revision: stored.revision,
            published_at: stored.content.published_at,
            content_sha256: stored.content_sha256,
        }
        .encode();
        if trees.ids.get(id.as_str())?.as_deref() != Some(entry.as_slice()) {
            if let Some(old) = trees
                .ids
                .insert(id.as_str(), entry)?
                .and_then(|old| IdEntry::decode(&old).ok())
            {
                if old.revision > stored.revision {
                    report.reverted.push(format!(
                        "{id} now serves revision {} (revision {} was damaged and is quarantined)",
                        stored.revision, old.revision
                    ));
                }
            }
            report.added += 1;
        }
        let date_key = keys::date_key(stored.content.published_at, id);
        let expected = index::encode_date_entry(
            &VersionFacts {
                sequence: newest.sequence,
                pointer: newest.pointer,
                revision: stored.revision,
                ingested_at: stored.ingested_at,
                content_sha256: stored.content_sha256,
                body_bytes: stored.content.body.len() as u64,
            },
            &BasicFields::of(&shared.codec, &stored.content),
        );
        let present = trees
            .dates
            .get(&date_key)?
            .and_then(|bytes| {
                DateEntry::decode(
                    &shared.codec,
                    stored.content.published_at,
                    id.clone(),
                    &bytes,
                )
                .ok()
            })
            .is_some_and(|entry| {
                entry.sequence == newest.sequence
                    && entry.pointer == newest.pointer
                    && entry.body_bytes == stored.content.body.len() as u64
                    && entry.article == without_body(&stored)
            });
        if !present {
            trees.dates.insert(date_key, expected)?;
            report.added += 1;
        }
    }
    // Pass 4: whatever no sound version accounts for.
    for entry in &trees.ids {
        let (key, _) = entry?;
        if id_of_key(&key).is_none_or(|id| !newest.contains_key(&id)) {
            trees.ids.remove(&key)?;
            report.removed += 1;
        }
    }
    for entry in &trees.dates {
        let (key, value) = entry?;
        let keep = keys::parse_date_key(&key).is_some_and(|(published_at, id)| {
            current_of(shared, &id)
                .ok()
                .flatten()
                .is_some_and(|current| {
                    current.published_at == published_at
                        && DateEntry::locate(&value).is_ok_and(|(seq, _)| seq == current.sequence)
                })
        });
        if !keep {
            trees.dates.remove(&key)?;
            report.removed += 1;
        }
    }
    for entry in &trees.revisions {
        let (key, value) = entry?;
        let keep = keys::parse_revision_key(&key).is_some_and(|(id, revision)| {
            let older = newest
                .get(&id)
                .is_some_and(|newest| newest.revision > revision);
            older
                && RevisionEntry::decode(&value).is_ok_and(|entry| {
                    points_at(shared, entry.pointer, &id, entry.sequence, Some(revision))
                })
        });
        if !keep {
            trees.revisions.remove(&key)?;
            report.removed += 1;
        }
    }
    trees.db.flush()?;
    super::writer::sync_filesystem(&shared.dir)?;
    Ok(report)
}
