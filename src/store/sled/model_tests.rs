//! A model-based test of the log and its indexes: random batches of writes
//! (new ids, updates that move dates, unchanged resends, one id several
//! times in a batch) go through the real commit, and after every batch the
//! log and trees are compared with a plain model of what each article's
//! history must be: every version is in the log, in sequence order, under
//! its revision; every index entry points at the version it must (the
//! current one in `ids` and `dates`, the older ones in `revisions`); every
//! current version has its entries.

use std::collections::BTreeMap;

use proptest::{collection::vec, prelude::*};

use super::{
    codec::Codec,
    index::{DateEntry, IdEntry, RevisionEntry},
    log::RecordLog,
    record,
    writer::{self, WriterState},
    Prepared, Trees,
};
use crate::{
    article::{Article, Timestamp},
    proto,
    store::{keys, WriteOutcome},
};

/// A few times, with ties and both sides of 1970.
const TIMES: [i64; 5] = [-86_400, -1, 0, 1, 1_700_000_000];

fn article(id: u8, time: usize, text: u8) -> Article {
    Article::from_proto(proto::Article {
        id: format!("a{id}"),
        title: format!("title {text}"),
        body: format!("body {text} of a{id}"),
        published_at: Some(prost_types::Timestamp {
            seconds: TIMES[time],
            nanos: 0,
        }),
        ..Default::default()
    })
    .unwrap()
}

/// One version of an article in the model.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    sequence: u64,
    pointer: Option<super::log::Pointer>,
    published_at: Timestamp,
    sha: [u8; 32],
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_index_entry_points_at_the_current_version_and_every_version_is_logged(
        batches in vec(vec((0u8..8, 0usize..TIMES.len(), 0u8..3), 1..12), 1..10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::open(sled::open(dir.path().join("db")).unwrap()).unwrap();
        let log = RecordLog::open(dir.path(), None).unwrap();
        let codec = Codec::default();
        let mut state = WriterState { next_sequence: 1, keep_revisions: 0 };
        // id -> every version, oldest first.
        let mut model: BTreeMap<String, Vec<Version>> = BTreeMap::new();

        for batch in batches {
            let articles: Vec<Article> =
                batch.iter().map(|&(id, time, text)| article(id, time, text)).collect();
            let prepared: Vec<Prepared> = articles.iter().map(|a| Prepared::new(&codec, a)).collect();
            let ops: Vec<writer::Op> = prepared.into_iter().map(writer::Op::Put).collect();
            let refs: Vec<&writer::Op> = ops.iter().collect();
            let first = state.next_sequence;
            let outcomes = writer::commit(&trees, &log, &codec, &mut state, &refs, Timestamp::now()).unwrap();
            let mut next = first;
            for (article, outcome) in articles.iter().zip(outcomes) {
                let id = article.id().to_string();
                let sha = article.content().sha256();
                let history = model.entry(id).or_default();
                let expected = match history.last() {
                    None => WriteOutcome::Created,
                    Some(last) if last.sha == sha => WriteOutcome::Unchanged,
                    Some(_) => WriteOutcome::Updated,
                };
                prop_assert_eq!(outcome.unwrap(), expected.clone());
                if expected != WriteOutcome::Unchanged {
                    history.push(Version { sequence: next, pointer: None, published_at: article.content().published_at, sha });
                    next += 1;
                }
            }
            prop_assert_eq!(state.next_sequence, next, "one sequence number per new version");

            // The log: exactly the model's versions, in sequence order.
            let versions: usize = model.values().map(Vec::len).sum();
            let mut logged = Vec::new();
            for frame in log.scan().unwrap() {
                let frame = frame.unwrap();
                let stored = record::decode_verified(&codec, &frame.record.unwrap()).unwrap();
                logged.push((stored, frame.pointer));
            }
            prop_assert_eq!(logged.len(), versions);
            for (id, history) in model.iter_mut() {
                for (i, version) in history.iter_mut().enumerate() {
                    let (stored, pointer) = &logged[(version.sequence - 1) as usize];
                    prop_assert_eq!(stored.id.as_str(), id.as_str());
                    prop_assert_eq!(stored.revision, i as u64 + 1);
                    prop_assert_eq!(stored.content_sha256, version.sha);
                    version.pointer = Some(*pointer);
                }
            }
            // Older revisions in `revisions`, the current one in `ids`.
            prop_assert_eq!(trees.revisions.len(), versions - model.len());
            prop_assert_eq!(trees.ids.len(), model.len());
            prop_assert_eq!(trees.dates.len(), model.len());
            for (id, history) in &model {
                let parsed = crate::article::ArticleId::parse("id", id).unwrap();
                for (i, version) in history.iter().enumerate().take(history.len() - 1) {
                    let entry = trees.revisions.get(keys::revision_key(&parsed, i as u64 + 1)).unwrap().unwrap();
                    let entry = RevisionEntry::decode(&entry).unwrap();
                    prop_assert_eq!(entry.sequence, version.sequence);
                    prop_assert_eq!(Some(entry.pointer), version.pointer);
                }
                // The current version: its ids entry and its one date entry.
                let current = history.last().unwrap();
                let entry = IdEntry::decode(&trees.ids.get(id).unwrap().unwrap()).unwrap();
                prop_assert_eq!(entry.sequence, current.sequence);
                prop_assert_eq!(Some(entry.pointer), current.pointer);
                prop_assert_eq!(entry.revision, history.len() as u64);
                prop_assert_eq!(entry.published_at, current.published_at);
                prop_assert_eq!(entry.content_sha256, current.sha);
                let date = trees.dates.get(keys::date_key(current.published_at, &parsed)).unwrap().unwrap();
                let date = DateEntry::decode(&codec, current.published_at, parsed.clone(), &date).unwrap();
                prop_assert_eq!(date.sequence, current.sequence);
                prop_assert_eq!(Some(date.pointer), current.pointer);
                prop_assert_eq!(date.article.revision, history.len() as u64);
                prop_assert_eq!(date.article.content_sha256, current.sha);
            }
        }
    }
}

/// An article prepared while the archive held the same content is not
/// compressed (the writer will most likely answer UNCHANGED); when it
/// changed in between after all, the writer compresses it itself and
/// stores it like any other version.
#[test]
fn a_deferred_article_is_stored_right_when_it_changed_in_between() {
    let dir = tempfile::tempdir().unwrap();
    let trees = Trees::open(sled::open(dir.path().join("db")).unwrap()).unwrap();
    let log = RecordLog::open(dir.path(), None).unwrap();
    let codec = Codec::default();
    let mut state = WriterState {
        next_sequence: 1,
        keep_revisions: 0,
    };
    let first = article(1, 0, 0);
    let commit = |state: &mut WriterState, prepared: &Prepared| {
        let op = writer::Op::Put(prepared.clone());
        writer::commit(&trees, &log, &codec, state, &[&op], Timestamp::now())
            .unwrap()
            .remove(0)
            .unwrap()
    };
    assert_eq!(
        commit(&mut state, &Prepared::new(&codec, &first)),
        WriteOutcome::Created
    );
    let deferred = Prepared {
        encoded: super::Encoded::Deferred(Box::new(article(1, 1, 1))),
        ..Prepared::new(&codec, &article(1, 1, 1))
    };
    assert_eq!(commit(&mut state, &deferred), WriteOutcome::Updated);
    let entry = IdEntry::decode(&trees.ids.get("a1").unwrap().unwrap()).unwrap();
    let stored = record::decode_verified(&codec, &log.read(entry.pointer).unwrap()).unwrap();
    assert_eq!(&stored.content, article(1, 1, 1).content());
    let again = Prepared {
        encoded: super::Encoded::Deferred(Box::new(article(1, 1, 1))),
        ..Prepared::new(&codec, &article(1, 1, 1))
    };
    assert_eq!(commit(&mut state, &again), WriteOutcome::Unchanged);
}
