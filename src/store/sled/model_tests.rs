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
    index::{DateEntry, IdEntry, IdState, RevisionEntry},
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
        // Labels that change with the text, so updates move index entries.
        source: ["Example.com", "example.org", ""][usize::from(text % 3)].into(),
        section: ["World", "world", ""][usize::from(text / 3 % 3)].into(),
        url: if text % 4 == 0 {
            String::new()
        } else {
            format!("https://example.com/{id}/{}?utm_source=x", text % 2)
        },
        published_at: Some(prost_types::Timestamp {
            seconds: TIMES[time],
            nanos: 0,
        }),
        ..Default::default()
    })
    .unwrap()
}

/// An empty store in `dir` as the writer sees it (sled in `dir` itself,
/// as the server keeps it), its runs built, and the writer's state.
fn empty_store(dir: &std::path::Path) -> (Trees, RecordLog, Codec, WriterState) {
    let trees = Trees::open(sled::open(dir).unwrap(), dir).unwrap();
    trees
        .query
        .rebuild(std::iter::empty(), |_, _, _| true)
        .unwrap();
    let log = RecordLog::open(dir, None).unwrap();
    let state = WriterState {
        next_sequence: 1,
        keep_revisions: 0,
    };
    (trees, log, Codec::default(), state)
}

/// One version of an article in the model.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    sequence: u64,
    pointer: Option<super::log::Pointer>,
    published_at: Timestamp,
    sha: [u8; 32],
}

/// An id in the model: its current life's versions, oldest first, or how
/// it was deleted.
#[derive(Debug, Clone, PartialEq)]
enum Model {
    Live(Vec<Version>),
    Deleted { sequence: u64, allow_reingest: bool },
}

/// One operation of a batch.
#[derive(Debug, Clone)]
enum Step {
    Put { id: u8, time: usize, text: u8 },
    Delete { id: u8, allow_reingest: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..8, 0usize..TIMES.len(), 0u8..3).prop_map(|(id, time, text)| Step::Put { id, time, text }),
        1 => (0u8..8, any::<bool>()).prop_map(|(id, allow_reingest)| Step::Delete { id, allow_reingest }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_index_entry_points_at_the_current_version_and_every_version_is_logged(
        batches in vec(vec(step(), 1..12), 1..10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (trees, log, codec, mut state) = empty_store(dir.path());
        let mut model: BTreeMap<String, Model> = BTreeMap::new();
        let mut deletions = 0usize;

        for batch in batches {
            let ops: Vec<writer::Op> = batch
                .iter()
                .map(|step| match *step {
                    Step::Put { id, time, text } => {
                        writer::Op::Put(Prepared::new(&codec, &article(id, time, text)))
                    }
                    Step::Delete { id, allow_reingest } => writer::Op::Delete {
                        id: crate::article::ArticleId::parse("id", &format!("a{id}")).unwrap(),
                        note: record::DeletionNote { reason: "r".into(), allow_reingest },
                    },
                })
                .collect();
            let refs: Vec<&writer::Op> = ops.iter().collect();
            let mut next = state.next_sequence;
            let outcomes = writer::commit(&trees, &log, &codec, &mut state, &refs, Timestamp::now()).unwrap();
            for (step, outcome) in batch.iter().zip(outcomes) {
                match *step {
                    Step::Put { id, time, text } => {
                        let article = article(id, time, text);
                        let key = format!("a{id}");
                        let sha = article.content().sha256();
                        let entry = model.entry(key).or_insert(Model::Live(Vec::new()));
                        let expected = match &*entry {
                            Model::Deleted { allow_reingest: false, .. } => None,
                            Model::Deleted { .. } => Some(WriteOutcome::Created),
                            Model::Live(history) => Some(match history.last() {
                                None => WriteOutcome::Created,
                                Some(last) if last.sha == sha => WriteOutcome::Unchanged,
                                Some(_) => WriteOutcome::Updated,
                            }),
                        };
                        let outcome = outcome.unwrap();
                        match expected {
                            None => prop_assert!(matches!(outcome, WriteOutcome::Rejected(_)), "{outcome:?}"),
                            Some(expected) => prop_assert_eq!(&outcome, &expected),
                        }
                        if matches!(outcome, WriteOutcome::Created | WriteOutcome::Updated) {
                            if outcome == WriteOutcome::Created {
                                *entry = Model::Live(Vec::new());
                            }
                            let Model::Live(history) = entry else { unreachable!() };
                            history.push(Version { sequence: next, pointer: None, published_at: article.content().published_at, sha });
                            next += 1;
                        }
                    }
                    Step::Delete { id, allow_reingest } => {
                        let key = format!("a{id}");
                        match model.get(&key) {
                            Some(Model::Live(history)) if !history.is_empty() => {
                                prop_assert_eq!(outcome.unwrap(), WriteOutcome::Deleted { sequence: next });
                                model.insert(key, Model::Deleted { sequence: next, allow_reingest });
                                next += 1;
                                deletions += 1;
                            }
                            _ => prop_assert!(outcome.is_err()),
                        }
                    }
                }
            }
            prop_assert_eq!(state.next_sequence, next, "one sequence number per version and deletion");

            // The log: the versions of every live article and every
            // deletion, in sequence order; deleted lives are erased.
            let mut logged = BTreeMap::new();
            let mut deletions_logged = 0;
            for frame in log.scan().unwrap() {
                let frame = frame.unwrap();
                let bytes = frame.record.unwrap();
                match record::decode_header(&bytes).unwrap().kind {
                    record::RecordKind::Deletion => deletions_logged += 1,
                    record::RecordKind::Version => {
                        let stored = record::decode_verified(&codec, &bytes).unwrap();
                        let header = record::decode_header(&bytes).unwrap();
                        logged.insert(header.sequence, (stored, frame.pointer));
                    }
                }
            }
            prop_assert_eq!(deletions_logged, deletions);
            let mut versions = 0;
            for (id, entry) in model.iter_mut() {
                let Model::Live(history) = entry else { continue };
                for (i, version) in history.iter_mut().enumerate() {
                    let (stored, pointer) = &logged[&version.sequence];
                    prop_assert_eq!(stored.id.as_str(), id.as_str());
                    prop_assert_eq!(stored.revision, i as u64 + 1);
                    prop_assert_eq!(stored.content_sha256, version.sha);
                    version.pointer = Some(*pointer);
                    versions += 1;
                }
            }
            prop_assert_eq!(logged.len(), versions, "nothing else is left in the log");

            // Older revisions in `revisions`, the current one in `ids`,
            // tombstones for the deleted.
            let live = model.values().filter(|m| matches!(m, Model::Live(h) if !h.is_empty())).count();
            prop_assert_eq!(trees.revisions.len(), versions - live);
            prop_assert_eq!(super::queries::all_ids(&trees).count(), model.len());
            prop_assert_eq!(super::queries::all_dates(&trees).count(), live);
            for (id, entry) in &model {
                let parsed = crate::article::ArticleId::parse("id", id).unwrap();
                let state = trees.id_state(&parsed).unwrap().unwrap();
                let history = match (entry, state) {
                    (Model::Deleted { sequence, allow_reingest }, IdState::Deleted(tombstone)) => {
                        prop_assert_eq!((tombstone.sequence, tombstone.allow_reingest), (*sequence, *allow_reingest));
                        continue;
                    }
                    (Model::Live(history), IdState::Live(entry)) => {
                        let current = history.last().unwrap();
                        prop_assert_eq!(entry.sequence, current.sequence);
                        prop_assert_eq!(Some(entry.pointer), current.pointer);
                        prop_assert_eq!(entry.revision, history.len() as u64);
                        prop_assert_eq!(entry.published_at, current.published_at);
                        prop_assert_eq!(entry.content_sha256, current.sha);
                        history
                    }
                    (model, state) => {
                        prop_assert!(false, "{id}: model {model:?}, ids {state:?}");
                        unreachable!()
                    }
                };
                for (i, version) in history.iter().enumerate().take(history.len() - 1) {
                    let entry = trees.revisions.get(keys::revision_key(&parsed, i as u64 + 1)).unwrap().unwrap();
                    let entry = RevisionEntry::decode(&entry).unwrap();
                    prop_assert_eq!(entry.sequence, version.sequence);
                    prop_assert_eq!(Some(entry.pointer), version.pointer);
                }
                // The current version's one date entry.
                let current = history.last().unwrap();
                let date = trees.query.get(super::runs::Index::Dates, &keys::date_key(current.published_at, &parsed)).unwrap().unwrap();
                let date = DateEntry::decode(&codec, current.published_at, parsed.clone(), &date).unwrap();
                prop_assert_eq!(date.sequence, current.sequence);
                prop_assert_eq!(Some(date.pointer), current.pointer);
                prop_assert_eq!(date.article.revision, history.len() as u64);
                prop_assert_eq!(date.article.content_sha256, current.sha);
            }
            // The query indexes and counters agree with the date entries,
            // which were just checked against the model.
            let mut problems = Vec::new();
            super::queries::check(&trees, &codec, &mut problems).unwrap();
            prop_assert!(problems.is_empty(), "{problems:?}");
            prop_assert_eq!(trees.query.len(super::runs::Index::Sources).unwrap(), live as u64);
            // What the metrics' article gauge starts from.
            prop_assert_eq!(super::queries::live_articles(&trees.counts).unwrap(), live as u64);
            // The day counters a small page is recognised by: a day's
            // range holds exactly the model's live articles of that day
            // (TIMES puts several on one day and days on both sides of
            // 1970); the next day is added up too, a wider range is not.
            for t in TIMES {
                let day = t.div_euclid(86_400) * 86_400;
                let range = |days: i64| crate::store::DateRange {
                    start: Some(Timestamp { seconds: day, nanos: 0 }),
                    end: Some(Timestamp { seconds: day + days * 86_400, nanos: 0 }),
                };
                let in_days = |days: i64| model.values().filter(|m| matches!(m, Model::Live(h)
                    if h.last().is_some_and(|v| (day..day + days * 86_400).contains(&v.published_at.seconds)))).count() as u64;
                for days in [1, 2] {
                    let count = in_days(days);
                    prop_assert!(super::queries::holds_at_most(&trees, range(days), count).unwrap());
                    if count > 0 {
                        prop_assert!(!super::queries::holds_at_most(&trees, range(days), count - 1).unwrap());
                    }
                }
                prop_assert!(!super::queries::holds_at_most(&trees, range(4), u64::MAX).unwrap());
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
    let (trees, log, codec, mut state) = empty_store(dir.path());
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
    let a1 = crate::article::ArticleId::parse("id", "a1").unwrap();
    let entry = IdEntry::decode(&trees.id_bytes(&a1).unwrap().unwrap()).unwrap();
    let stored = record::decode_verified(&codec, &log.read(entry.pointer).unwrap()).unwrap();
    assert_eq!(&stored.content, article(1, 1, 1).content());
    let again = Prepared {
        encoded: super::Encoded::Deferred(Box::new(article(1, 1, 1))),
        ..Prepared::new(&codec, &article(1, 1, 1))
    };
    assert_eq!(commit(&mut state, &again), WriteOutcome::Unchanged);
}

/// The layouts before the id and date indexes moved to the runs.
#[derive(Debug, Clone, Copy)]
enum Before {
    /// Both in sled trees, the runs (manifest version 1) with neither.
    DatesAndIdsInSled,
    /// The id index in a sled tree, the date index in the runs (manifest
    /// version 2).
    IdsInSled,
}

/// A store made while the id index (and perhaps the date index) was a
/// sled tree gets it moved into the runs at open: the same entries, the
/// sled trees dropped. Each tree held one stray entry too, which shows
/// where the entries came from (a rebuild from the log would not have
/// it), and which the check then names. Opened again, nothing is rebuilt.
#[test]
fn indexes_kept_in_sled_move_to_the_runs_at_open() {
    for before in [Before::DatesAndIdsInSled, Before::IdsInSled] {
        indexes_kept_in_sled_move_to_the_runs(before);
    }
}

fn indexes_kept_in_sled_move_to_the_runs(before: Before) {
    type Entries = Vec<(Vec<u8>, Vec<u8>)>;
    let dir = tempfile::tempdir().unwrap();
    let (dates, ids) = {
        let (trees, log, codec, mut state) = empty_store(dir.path());
        for (id, time, text) in [(1, 0, 0), (2, 1, 1), (3, 2, 2), (4, 4, 3), (1, 3, 4)] {
            let op = writer::Op::Put(Prepared::new(&codec, &article(id, time, text)));
            writer::commit(&trees, &log, &codec, &mut state, &[&op], Timestamp::now())
                .unwrap()
                .remove(0)
                .unwrap();
        }
        let all = |entries: super::runs::KeyValues| -> Entries {
            entries.collect::<crate::error::Result<_>>().unwrap()
        };
        let (mut dates, mut ids) = (
            all(super::queries::all_dates(&trees)),
            all(super::queries::all_ids(&trees)),
        );
        let stray_date = keys::date_key(
            Timestamp {
                seconds: 7,
                nanos: 0,
            },
            &crate::article::ArticleId::parse("id", "a9").unwrap(),
        );
        dates.push((stray_date, dates[0].1.clone()));
        dates.sort();
        let stray_id = IdState::Deleted(super::index::Tombstone {
            sequence: 99,
            deleted_at: Timestamp::now(),
            allow_reingest: false,
        });
        ids.push((b"a8".to_vec(), stray_id.encode()));
        ids.sort();
        let into_sled = |name: &str, entries: &Entries| {
            let tree = trees.db.open_tree(name).unwrap();
            for (key, value) in entries {
                tree.insert(key, value.as_slice()).unwrap();
            }
        };
        into_sled(super::IDS_TREE, &ids);
        match before {
            Before::DatesAndIdsInSled => {
                // The runs of labels alone, named by a manifest of version 1.
                into_sled(super::DATES_TREE, &dates);
                trees
                    .meta
                    .insert(super::runs::MANIFEST_KEY, &[1u8][..])
                    .unwrap();
            }
            Before::IdsInSled => {
                // Runs of the date and query indexes, named by a manifest
                // of version 2.
                let entries = dates.iter().flat_map(|(key, value)| {
                    super::queries::run_entries(&codec, key.clone(), value.clone())
                        .into_iter()
                        .map(Ok)
                });
                trees.query.rebuild(entries, |_, _, _| false).unwrap();
                let mut manifest = trees
                    .meta
                    .get(super::runs::MANIFEST_KEY)
                    .unwrap()
                    .unwrap()
                    .to_vec();
                manifest[0] = 2;
                trees
                    .meta
                    .insert(super::runs::MANIFEST_KEY, manifest)
                    .unwrap();
            }
        }
        trees.query.log_tree().clear().unwrap();
        trees.db.flush().unwrap();
        (dates, ids)
    };
    assert_eq!((dates.len(), ids.len()), (5, 5), "{before:?}");
    let config = crate::store::StoreConfig::new(dir.path());
    for _ in 0..2 {
        // sled lets go of its directory lock a moment after the last
        // handle is dropped, on its own thread.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match super::SledStore::open(&config) {
                Err(crate::error::Error::DataDirLocked { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => break opened.unwrap(),
            }
        };
        let trees = &store.shared.trees;
        let all = |entries: super::runs::KeyValues| -> Entries {
            entries.collect::<crate::error::Result<_>>().unwrap()
        };
        assert_eq!(all(super::queries::all_dates(trees)), dates, "{before:?}");
        assert_eq!(all(super::queries::all_ids(trees)), ids, "{before:?}");
        assert!(trees.query.is_complete());
        for tree in [super::DATES_TREE, super::IDS_TREE] {
            assert!(
                !trees
                    .db
                    .tree_names()
                    .iter()
                    .any(|name| name.as_ref() == tree.as_bytes()),
                "{before:?}: {tree} is still a sled tree"
            );
        }
        let report = store.check().unwrap();
        for problem in [
            "date entry for a9: no such article",
            "ids entry a8: a tombstone for deletion 99, which the log does not hold",
        ] {
            assert!(
                report.problems.contains(&problem.to_string()),
                "{before:?}: {:?}",
                report.problems
            );
        }
        assert_eq!(report.date_entries, 5);
    }
}

/// An id entry that cannot be decoded fails only its own article: the
/// other articles of the batch are stored, and the damaged entry is named.
#[test]
fn a_damaged_id_entry_fails_only_its_own_article() {
    let dir = tempfile::tempdir().unwrap();
    let (trees, log, codec, mut state) = empty_store(dir.path());
    let put = |id: u8, text: u8| writer::Op::Put(Prepared::new(&codec, &article(id, 1, text)));
    let first = put(1, 1);
    writer::commit(
        &trees,
        &log,
        &codec,
        &mut state,
        &[&first],
        Timestamp::now(),
    )
    .unwrap()
    .remove(0)
    .unwrap();
    // a1's id entry replaced by bytes that do not decode, as a later
    // batch of the query log would put it.
    let damaged =
        super::runs::Changes::from([(super::runs::Index::Ids.key(b"a1"), Some(vec![0xFF; 7]))]);
    trees.query.apply(damaged, 1_000_000);

    let (update, other) = (put(1, 2), put(2, 1));
    let outcomes = writer::commit(
        &trees,
        &log,
        &codec,
        &mut state,
        &[&update, &other],
        Timestamp::now(),
    )
    .unwrap();
    match &outcomes[0] {
        Err(crate::error::Error::Corrupt { key, .. }) => assert_eq!(key, "ids/a1"),
        outcome => panic!("a1: {outcome:?}"),
    }
    assert_eq!(outcomes[1].as_ref().unwrap(), &WriteOutcome::Created);
    let a2 = crate::article::ArticleId::parse("id", "a2").unwrap();
    assert!(matches!(
        trees.id_state(&a2).unwrap(),
        Some(IdState::Live(_))
    ));
}
