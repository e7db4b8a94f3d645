//! Verifying a format 2 store against its log, and rebuilding its indexes
//! from it.
//!
//! The log (`records`) is the truth; `ids`, `dates` and `revisions` are
//! derived from it. The check reads every record (decompressing it and
//! comparing its content with its hash) and every index entry, with point
//! reads instead of holding the archive in memory:
//!
//! - each record decodes, matches its hash, and has its `revisions` entry;
//!   its id has an `ids` entry, and it is either that entry's version
//!   (then the `ids` entry and the date entry agree with it, field by
//!   field) or an older revision;
//! - each `ids` entry points at a record of that id, and no later revision
//!   of the id exists;
//! - each date entry is at the date of its id's current version and points
//!   at it;
//! - each `revisions` entry points at the record of that id and revision.
//!
//! Repair moves damaged records to `quarantined_records` byte for byte and
//! rebuilds the indexes from what is left: an article whose newest version
//! was damaged then serves the newest sound one, and the report says so.

use std::collections::HashMap;

use super::{
    index::{self, BasicFields, DateEntry, IdEntry, VersionFacts},
    record::{self, RecordKind},
    Shared, QUARANTINED_RECORDS_TREE,
};
use crate::{
    article::{ArticleId, StoredArticle},
    error::{Error, Result},
    store::{keys, CheckReport, RepairReport},
};

/// Verifies the whole store. Problems are collected, not returned as
/// errors; only a failure to read sled at all is an error.
pub(super) fn check(shared: &Shared) -> Result<CheckReport> {
    let trees = &shared.trees;
    let mut report = CheckReport::default();
    for entry in &trees.records {
        let (key, value) = entry?;
        report.records += 1;
        let Some(sequence) = keys::parse_u64_key(&key) else {
            report
                .problems
                .push(format!("record key {key:?} is not a sequence number"));
            report.damaged_records += 1;
            continue;
        };
        let stored = match record::decode_version(&shared.codec, &value) {
            Ok(stored) => stored,
            Err(reason) => {
                report.problems.push(format!("record {sequence}: {reason}"));
                report.damaged_records += 1;
                continue;
            }
        };
        check_record_indexes(shared, sequence, &stored, &mut report)?;
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
        match trees.records.get(keys::u64_key(entry.sequence))? {
            None => report.problems.push(format!(
                "ids entry {id}: record {} is missing",
                entry.sequence
            )),
            Some(bytes) => {
                if let Ok(header) = record::decode_header(&bytes) {
                    if header.id != id {
                        report.problems.push(format!(
                            "ids entry {id}: record {} is of {}",
                            entry.sequence, header.id
                        ));
                    }
                }
            }
        }
        if let Some((newest, _)) = newest_revision(shared, &id)? {
            if newest > entry.revision {
                report.problems.push(format!(
                    "ids entry {id}: at revision {}, but revision {newest} exists",
                    entry.revision
                ));
            }
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
        let sequence = DateEntry::sequence_of(&value);
        let current = trees
            .ids
            .get(id.as_str())?
            .and_then(|bytes| IdEntry::decode(&bytes).ok());
        match (current, sequence) {
            (_, Err(reason)) => report
                .problems
                .push(format!("date entry for {id}: {reason}")),
            (None, _) => report
                .problems
                .push(format!("date entry for {id}: no such article")),
            (Some(current), Ok(sequence)) => {
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
        let points_at = index::decode_sequence(&value).ok().map(|sequence| {
            trees
                .records
                .get(keys::u64_key(sequence))
                .map(|bytes| bytes.and_then(|b| record::decode_header(&b).ok()))
        });
        match points_at.transpose()? {
            Some(Some(header)) if header.id == id && header.revision == revision => {}
            Some(Some(_)) => report.problems.push(format!(
                "revision {revision} of {id}: points at another article's record"
            )),
            // A damaged record is reported above; a missing one here.
            Some(None) | None => report.problems.push(format!(
                "revision {revision} of {id}: its record is missing or unreadable"
            )),
        }
    }
    Ok(report)
}

/// The checks of one sound record against the indexes.
fn check_record_indexes(
    shared: &Shared,
    sequence: u64,
    stored: &StoredArticle,
    report: &mut CheckReport,
) -> Result<()> {
    let trees = &shared.trees;
    let id = &stored.id;
    let revision_entry = trees
        .revisions
        .get(keys::revision_key(id, stored.revision))?;
    if revision_entry.as_deref().map(index::decode_sequence) != Some(Ok(sequence)) {
        report.problems.push(format!(
            "record {sequence}: revision {} of {id} has no revisions entry pointing at it",
            stored.revision
        ));
    }
    let current = match trees.ids.get(id.as_str())? {
        None => {
            report
                .problems
                .push(format!("record {sequence}: {id} has no ids entry"));
            return Ok(());
        }
        // Undecodable entries are reported by the ids pass.
        Some(bytes) => match IdEntry::decode(&bytes) {
            Ok(entry) => entry,
            Err(_) => return Ok(()),
        },
    };
    if current.sequence != sequence {
        if current.revision <= stored.revision {
            report.problems.push(format!(
                "record {sequence}: revision {} of {id} is newer than the current revision {}",
                stored.revision, current.revision
            ));
        }
        return Ok(());
    }
    if current.revision != stored.revision
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
            let expected = expected_date_entry(sequence, stored);
            if bytes.as_ref() != expected.as_slice() {
                let decoded =
                    DateEntry::decode(stored.content.published_at, id.clone(), &bytes).ok();
                let agrees = decoded.is_some_and(|entry| {
                    entry.sequence == sequence
                        && entry.article
                            == StoredArticle {
                                content: crate::article::ArticleContent {
                                    body: String::new(),
                                    ..stored.content.clone()
                                },
                                ..stored.clone()
                            }
                });
                if !agrees {
                    report.problems.push(format!(
                        "date entry for {id}: disagrees with its record {sequence}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn expected_date_entry(sequence: u64, stored: &StoredArticle) -> Vec<u8> {
    index::encode_date_entry(
        &VersionFacts {
            sequence,
            revision: stored.revision,
            ingested_at: stored.ingested_at,
            content_sha256: stored.content_sha256,
            body_bytes: stored.content.body.len() as u64,
        },
        &BasicFields::of(&stored.content),
    )
}

fn id_of_key(key: &[u8]) -> Option<ArticleId> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|s| ArticleId::parse("id", s).ok())
}

/// The highest revision of `id` in the `revisions` index, and its sequence.
fn newest_revision(shared: &Shared, id: &ArticleId) -> Result<Option<(u64, u64)>> {
    let newest = shared
        .trees
        .revisions
        .scan_prefix(keys::revision_prefix(id))
        .next_back()
        .transpose()?;
    Ok(newest.and_then(|(key, value)| {
        let (_, revision) = keys::parse_revision_key(&key)?;
        Some((revision, index::decode_sequence(&value).ok()?))
    }))
}

/// Moves damaged records aside, then rebuilds the indexes.
pub(super) fn repair(shared: &Shared) -> Result<RepairReport> {
    let trees = &shared.trees;
    let quarantine = trees.db.open_tree(QUARANTINED_RECORDS_TREE)?;
    let mut damaged = Vec::new();
    for entry in &trees.records {
        let (key, value) = entry?;
        let sound = keys::parse_u64_key(&key).is_some()
            && record::decode_version(&shared.codec, &value).is_ok();
        if !sound {
            damaged.push((key, value));
        }
    }
    for (key, value) in &damaged {
        // Copied first, removed second: a crash in between leaves the
        // record in both trees, never in neither.
        quarantine.insert(key, value.clone())?;
        trees.db.flush()?;
        trees.records.remove(key)?;
    }
    let mut report = rebuild_indexes(shared)?;
    report.quarantined = damaged.len() as u64;
    Ok(report)
}

/// Rebuilds `ids`, `dates` and `revisions` from the sound records: the
/// newest sound revision of each id is its current version. Entries that
/// are already right are left alone, so a repair of a sound store writes
/// nothing. Not one transaction (an index of a large archive is too big
/// for one): an interrupted repair leaves problems that the next check
/// finds and the next repair finishes.
pub(super) fn rebuild_indexes(shared: &Shared) -> Result<RepairReport> {
    let trees = &shared.trees;
    let mut report = RepairReport::default();
    // Pass 1: every sound version's revisions entry; the newest per id.
    let mut newest: HashMap<ArticleId, (u64, u64)> = HashMap::new();
    for entry in &trees.records {
        let (key, value) = entry?;
        let Some(sequence) = keys::parse_u64_key(&key) else {
            continue;
        };
        let Ok(header) = record::decode_header(&value) else {
            continue;
        };
        if header.kind != RecordKind::Version
            || record::decode_version(&shared.codec, &value).is_err()
        {
            continue;
        }
        let revision_key = keys::revision_key(&header.id, header.revision);
        let wanted = index::encode_sequence(sequence);
        if trees.revisions.get(&revision_key)?.as_deref() != Some(&wanted[..]) {
            trees.revisions.insert(revision_key, &wanted[..])?;
            report.added += 1;
        }
        let slot = newest.entry(header.id).or_insert((0, 0));
        if header.revision >= slot.0 {
            *slot = (header.revision, sequence);
        }
    }
    // Pass 2: the ids and date entries of each current version.
    for (id, (_, sequence)) in &newest {
        let bytes = trees
            .records
            .get(keys::u64_key(*sequence))?
            .ok_or_else(|| Error::Corrupt {
                key: format!("records/{sequence}"),
                reason: "removed while the index was rebuilt".into(),
            })?;
        let stored =
            record::decode_version(&shared.codec, &bytes).map_err(|reason| Error::Corrupt {
                key: format!("records/{sequence}"),
                reason,
            })?;
        let entry = IdEntry {
            sequence: *sequence,
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
        let date_entry = expected_date_entry(*sequence, &stored);
        if trees.dates.get(&date_key)?.as_deref() != Some(date_entry.as_slice()) {
            trees.dates.insert(date_key, date_entry)?;
            report.added += 1;
        }
    }
    // Pass 3: whatever no sound version accounts for.
    for entry in &trees.ids {
        let (key, _) = entry?;
        if id_of_key(&key).is_none_or(|id| !newest.contains_key(&id)) {
            trees.ids.remove(&key)?;
            report.removed += 1;
        }
    }
    for entry in &trees.dates {
        let (key, _) = entry?;
        let keep = keys::parse_date_key(&key).is_some_and(|(published_at, id)| {
            newest.get(&id).is_some_and(|(_, sequence)| {
                trees
                    .ids
                    .get(id.as_str())
                    .ok()
                    .flatten()
                    .and_then(|bytes| IdEntry::decode(&bytes).ok())
                    .is_some_and(|entry| {
                        entry.sequence == *sequence && entry.published_at == published_at
                    })
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
            index::decode_sequence(&value).is_ok_and(|sequence| {
                trees
                    .records
                    .get(keys::u64_key(sequence))
                    .ok()
                    .flatten()
                    .and_then(|bytes| record::decode_version(&shared.codec, &bytes).ok())
                    .is_some_and(|stored| stored.id == id && stored.revision == revision)
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
