//! `article-archive check`: each kind of damage done on purpose is found,
//! and `--repair` fixes what can be derived again (every index, from the
//! record log) and sets damaged records aside, never the other way round.

mod common;

use std::{path::Path, process::Output, time::Duration};

use article_archive::{
    article::{Article, ArticleId, Timestamp},
    proto,
    store::{
        keys,
        sled::{
            index::{self, BasicFields, DateEntry, IdEntry, VersionFacts},
            log::Pointer,
            runs,
        },
    },
};
use common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The publication time of article `a{i}`.
fn seconds_of(i: i64) -> i64 {
    i * 86_400 - 1_000_000
}

/// Writes `count` small articles `a0`, `a1`, … into a fresh archive at
/// `dir`, updates `a1` once (so it has two revisions), and closes it.
fn archive_with(dir: &Path, count: i64) {
    let store = open_store(dir);
    runtime().block_on(async {
        for i in 0..count {
            let a = Article::from_proto(article(&format!("a{i}"), seconds_of(i))).unwrap();
            store.submit(a).await.unwrap().outcome().await.unwrap();
        }
        let second = proto::Article {
            body: "Body of a1, corrected".into(),
            ..article("a1", seconds_of(1))
        };
        let a = Article::from_proto(second).unwrap();
        store.submit(a).await.unwrap().outcome().await.unwrap();
    });
}

/// Runs `check` (with `--repair`), waiting while a store closed a moment ago
/// in this process still holds the directory's lock (sled releases it from
/// a background thread).
fn check(dir: &Path, repair: bool) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = check_once(dir, repair);
        if !text.contains("locked by another process") || std::time::Instant::now() > deadline {
            return (code, text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_once(dir: &Path, repair: bool) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(BINARY);
    command.args(["check", "--data-dir"]).arg(dir);
    if repair {
        command.arg("--repair");
    }
    let Output {
        status,
        stdout,
        stderr,
        ..
    } = command.output().unwrap();
    let text = String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr);
    (status.code(), text)
}

fn id(id: &str) -> ArticleId {
    ArticleId::parse("id", id).unwrap()
}

fn date_key(name: &str, seconds: i64) -> Vec<u8> {
    keys::date_key(Timestamp { seconds, nanos: 0 }, &id(name))
}

/// A date entry pointing where `name`'s id entry points (its BASIC
/// fields made up): what a stray or misplaced entry looks like.
fn date_entry_like(db: &sled::Db, dir: &Path, name: &str) -> Vec<u8> {
    let current = id_entry(db, dir, name);
    let content = Article::from_proto(article(name, 0))
        .unwrap()
        .content()
        .clone();
    index::encode_date_entry(
        &VersionFacts {
            sequence: current.sequence,
            pointer: current.pointer,
            revision: current.revision,
            ingested_at: Timestamp {
                seconds: 0,
                nanos: 0,
            },
            content_sha256: current.content_sha256,
            body_bytes: 1,
        },
        &BasicFields::of(&content),
    )
}

/// Puts `changes` in the query log as the newest batch: the next open
/// replays them into the runs' memtable, as if the writer had made them.
fn inject(db: &sled::Db, changes: runs::Changes) {
    db.open_tree(runs::QUERY_LOG_TREE)
        .unwrap()
        .insert(keys::u64_key(1_000_000), runs::encode_changes(&changes))
        .unwrap();
    db.flush().unwrap();
}

/// The id entry of an article in the closed archive at `dir` (whose sled
/// database is `db`).
fn id_entry(db: &sled::Db, dir: &Path, name: &str) -> IdEntry {
    let bytes = runs::get_closed(db, dir, runs::Index::Ids, name.as_bytes())
        .unwrap()
        .unwrap();
    IdEntry::decode(&bytes).unwrap()
}

/// A sound archive passes: one record per stored version, one date entry
/// per article, one revision entry per version that is not current. A
/// repair of it (which writes the runs anew) reports no entry changed.
#[test]
fn a_sound_archive_passes() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 5);
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("records 6, articles 5, date entries 5, revision entries 1, problems 0"),
        "{text}"
    );
    let store = open_store(dir.path());
    let repaired = store.repair().unwrap();
    assert_eq!(
        (repaired.added, repaired.removed, repaired.erased),
        (0, 0, 0),
        "{repaired:?}"
    );
    assert!(store.check().unwrap().problems.is_empty());
}

/// Every kind of index damage is reported: a missing date entry, an orphan
/// one, one at the wrong date, a missing id entry, a missing revision entry,
/// an id entry pointing at another article's record. --repair rebuilds the
/// indexes from the log and the archive passes, with its history intact.
#[test]
fn index_damage_is_found_and_repaired_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 5);
    {
        let db = open_sled(dir.path());
        let revisions = db.open_tree("revisions").unwrap();
        // A batch in the query log that takes a0's date entry away, moves
        // a3's to another date and adds one for an article that does not
        // exist; takes a4's id entry away and points a2's at a0's record.
        let a3 = date_entry_like(&db, dir.path(), "a3");
        let mut a2 = id_entry(&db, dir.path(), "a2");
        a2.pointer = id_entry(&db, dir.path(), "a0").pointer;
        let dates = |name: &str, seconds: i64| runs::Index::Dates.key(&date_key(name, seconds));
        let ids = |name: &str| runs::Index::Ids.key(name.as_bytes());
        inject(
            &db,
            runs::Changes::from([
                (dates("a0", seconds_of(0)), None),
                (dates("a3", seconds_of(3)), None),
                (dates("a3", 12_345), Some(a3.clone())),
                (dates("ghost", 7), Some(a3)),
                (ids("a4"), None),
                (ids("a2"), Some(a2.encode())),
            ]),
        );
        revisions
            .remove(keys::revision_key(&id("a1"), 1))
            .unwrap()
            .unwrap();
        db.flush().unwrap();
    }
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        "a0 has no date entry at its date",
        "date entry for ghost: no such article",
        "date entry for a3: the article has another date",
        "a3 has no date entry at its date",
        "revision 1 of a4 is held by no index",
        "date entry for a4: no such article",
        "revision 1 of a1 is held by no index",
        "ids entry a2: disagrees with its record",
        "ids entry a2: record",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }

    let (code, text) = check(dir.path(), true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("moved 0 damaged record(s)"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("records 6, articles 5, date entries 5, revision entries 1, problems 0"),
        "{text}"
    );
    let db = open_sled(dir.path());
    assert_eq!(
        id_entry(&db, dir.path(), "a1").revision,
        2,
        "the newest revision is current"
    );
}

/// The query indexes (sources, sections, urls) and counters are checked
/// against the date index and rebuilt from it; a store whose indexes were
/// never built (as one made before they existed) gets them at open.
#[test]
fn query_index_damage_is_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 5);
    {
        let db = open_sled(dir.path());
        let counts = db.open_tree("counts").unwrap();
        let missing = keys::label_key(
            "example.com",
            Timestamp {
                seconds: seconds_of(2),
                nanos: 0,
            },
            &id("a2"),
        );
        let mut orphan = missing.clone();
        orphan.extend_from_slice(b"-orphan");
        // A batch in the query log that takes a2's entry away and adds one
        // that no article holds.
        let changes = runs::Changes::from([
            (runs::Index::Sources.key(&missing), None),
            (runs::Index::Sources.key(&orphan), Some(Vec::new())),
        ]);
        db.open_tree(runs::QUERY_LOG_TREE)
            .unwrap()
            .insert(keys::u64_key(1_000_000), runs::encode_changes(&changes))
            .unwrap();
        let (key, _) = counts.first().unwrap().unwrap();
        counts.insert(key, &7u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        "sources index: no entry for a2",
        "sources index: 5 entries for 5 articles, not the ones they call for",
        "counts: 1 counters are wrong",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    let (code, text) = check(dir.path(), true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("problems 0"), "{text}");

    // A run file damaged: found, and rebuilt by the repair.
    let runs_dir = dir.path().join(runs::RUNS_DIR);
    let run = std::fs::read_dir(&runs_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "run"))
        .expect("the repair wrote a run");
    let mut bytes = std::fs::read(&run).unwrap();
    // A block of a query index (the first), and the block of id entries
    // (stored as they are, so its first key is there to find).
    bytes[2] ^= 0x55;
    let id_key = runs::Index::Ids.key(b"a1");
    let at = bytes
        .windows(id_key.len())
        .position(|window| window == id_key.as_slice())
        .expect("the id entries are stored as they are");
    bytes[at] ^= 0x55;
    std::fs::write(&run, bytes).unwrap();
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("query indexes:") && text.contains("checksum"),
        "{text}"
    );
    // The id index is in that run too: said once, not once per record.
    assert_eq!(text.matches("id index:").count(), 1, "{text}");
    let (code, text) = check(dir.path(), true);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(0), "{text}");

    // Indexes never built: the next open builds them.
    {
        let db = open_sled(dir.path());
        for tree in ["counts", runs::QUERY_LOG_TREE] {
            db.drop_tree(tree).unwrap();
        }
        db.open_tree("meta")
            .unwrap()
            .remove(runs::MANIFEST_KEY)
            .unwrap();
        db.flush().unwrap();
    }
    drop(open_store(dir.path()));
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(0), "{text}");
}

/// A store whose query indexes are sled trees (as this engine kept them
/// before they moved to runs) gets runs built from its date index at open,
/// and the old trees dropped.
#[test]
fn query_indexes_kept_in_sled_trees_move_to_runs_at_open() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 5);
    {
        let db = open_sled(dir.path());
        let sources = db.open_tree("sources").unwrap();
        sources.insert(b"example.com\0key", &[][..]).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.remove(runs::MANIFEST_KEY).unwrap();
        meta.insert("query_indexes", &b"1"[..]).unwrap();
        db.flush().unwrap();
    }
    let runs_dir = dir.path().join(runs::RUNS_DIR);
    std::fs::remove_dir_all(&runs_dir).unwrap();
    drop(open_store(dir.path()));
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(0), "{text}");
    let db = open_sled(dir.path());
    assert!(
        !db.tree_names()
            .iter()
            .any(|name| name.as_ref() == b"sources"),
        "the sled tree is gone"
    );
    assert!(db
        .open_tree("meta")
        .unwrap()
        .get("query_indexes")
        .unwrap()
        .is_none());
    assert!(std::fs::read_dir(&runs_dir).unwrap().count() > 0);
}

/// Stops a server on `dir` the hard way, so the archive is not closed
/// cleanly and the next server start checks it.
fn crash_a_server_on(dir: &Path) {
    let server = ServerProcess::start(dir, &[]);
    server.signal("KILL");
    server.wait(Duration::from_secs(30));
}

/// Flips a byte in the record at `pointer`, in its segment file, and
/// returns the damaged record's bytes.
fn damage_record(dir: &Path, pointer: Pointer) -> Vec<u8> {
    let path = dir
        .join("records")
        .join(format!("{:020}.log", pointer.segment));
    let mut segment = std::fs::read(&path).unwrap();
    let start = (pointer.offset + 8) as usize;
    let end = start + pointer.len as usize;
    segment[end - 2] ^= 0x55;
    std::fs::write(&path, &segment).unwrap();
    segment[start..end].to_vec()
}

/// The check verifies records in chunks of up to 256 on several threads:
/// damage in different chunks is each reported once, in log order, and the
/// counts are those of the whole log.
#[test]
fn damage_across_many_chunks_is_reported_once_each_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 700);
    let pointers: Vec<_> = {
        let db = open_sled(dir.path());
        ["a650", "a3", "a300"]
            .iter()
            .map(|id| id_entry(&db, dir.path(), id).pointer)
            .collect()
    };
    for pointer in &pointers {
        damage_record(dir.path(), *pointer);
    }
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1), "{text}");
    // 700 articles and a second version of a1.
    assert!(text.contains("records 701"), "{text}");
    let mut in_log_order = pointers.clone();
    in_log_order.sort_by_key(|p| (p.segment, p.offset));
    let places: Vec<usize> = in_log_order
        .iter()
        .map(|p| {
            let at = format!("record at {}@{}: ", p.segment, p.offset);
            assert_eq!(text.matches(&at).count(), 1, "{at}: {text}");
            text.find(&at).unwrap()
        })
        .collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "{text}");
}

/// Damaged records are found. A server will not start on the archive after
/// an unclean stop (only an operator may set a record aside); `--repair`
/// moves them to `quarantined_records` byte for byte and rebuilds the
/// indexes: an article whose newest revision was damaged serves the one
/// before (and the repair says so), one whose only record was damaged is
/// gone. Then the server starts and serves the rest.
#[test]
fn damaged_records_block_an_unclean_start_until_repair_sets_them_aside() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 5);
    crash_a_server_on(dir.path());
    let (a1_newest, a2_only) = {
        let db = open_sled(dir.path());
        (
            id_entry(&db, dir.path(), "a1").pointer,
            id_entry(&db, dir.path(), "a2").pointer,
        )
    };
    let damaged = damage_record(dir.path(), a1_newest);
    damage_record(dir.path(), a2_only);

    let refused = std::process::Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("2 stored record(s) are damaged"), "{said}");
    assert!(said.contains("check --repair"), "{said}");

    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1), "{text}");
    for damaged in [a1_newest, a2_only] {
        let at = format!("record at {}@{}: ", damaged.segment, damaged.offset);
        assert!(text.contains(&at), "{at}: {text}");
    }

    let (code, text) = check(dir.path(), true);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("moved 2 damaged record(s) to quarantine"),
        "{text}"
    );
    assert!(
        text.contains("a1 now serves revision 1 (revision 2 was damaged and is quarantined)"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("records 4, articles 4, date entries 4, revision entries 0, problems 0"),
        "{text}"
    );
    {
        let db = open_sled(dir.path());
        let mut key = keys::u64_key(a1_newest.segment).to_vec();
        key.extend_from_slice(&keys::u64_key(a1_newest.offset));
        let kept = db
            .open_tree("quarantined_records")
            .unwrap()
            .get(key)
            .unwrap();
        assert_eq!(kept.as_deref(), Some(&damaged[..]), "kept byte for byte");
    }

    let server = ServerProcess::start(dir.path(), &[]);
    runtime().block_on(async {
        let mut client = server.client().await;
        let missing = client
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: "a2".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let a1 = client
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: "a1".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .article
            .unwrap();
        assert_eq!(a1.body, "Body of a1", "the first revision");
        assert_eq!(list_all(&mut client, Default::default()).await.len(), 4);
    });
    server.signal("TERM");
    server.wait(Duration::from_secs(30));
}

/// After an unclean stop, a server repairs damaged indexes by itself (they
/// are derived from the log, so that is always safe) and says so.
#[test]
fn a_server_repairs_the_indexes_after_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 4);
    crash_a_server_on(dir.path());
    {
        let db = open_sled(dir.path());
        let a1 = date_entry_like(&db, dir.path(), "a1");
        assert!(DateEntry::locate(&a1).is_ok());
        let dates = |name: &str, seconds: i64| runs::Index::Dates.key(&date_key(name, seconds));
        inject(
            &db,
            runs::Changes::from([
                (dates("a1", seconds_of(1)), None),
                (dates("ghost", 5), Some(a1)),
            ]),
        );
    }
    let server = ServerProcess::start(dir.path(), &[]);
    let log = server.startup_log.join("\n");
    assert!(log.contains("not closed cleanly"), "{log}");
    assert!(
        log.contains("rebuilt the indexes from the record log"),
        "{log}"
    );
    assert!(log.contains("added=1 removed=1"), "{log}");
    runtime().block_on(async {
        let mut client = server.client().await;
        assert_eq!(list_all(&mut client, Default::default()).await.len(), 4);
    });
    server.signal("TERM");
    server.wait(Duration::from_secs(30));

    // Closed cleanly this time: the next start does not check again.
    let server = ServerProcess::start(dir.path(), &[]);
    let log = server.startup_log.join("\n");
    assert!(!log.contains("not closed cleanly"), "{log}");
    server.signal("TERM");
    server.wait(Duration::from_secs(30));
}

/// check refuses a directory that holds no archive, and one a server holds.
#[test]
fn check_needs_an_archive_no_server_is_using() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = check(&dir.path().join("nothing"), false);
    assert_eq!(code, Some(1));
    assert!(text.contains("no archive in this directory"), "{text}");

    archive_with(dir.path(), 1);
    let server = ServerProcess::start(dir.path(), &[]);
    let (code, text) = check_once(dir.path(), false);
    assert_eq!(code, Some(1));
    assert!(text.contains("locked by another process"), "{text}");
    server.signal("TERM");
    server.wait(Duration::from_secs(30));
}

/// Runs that must be rebuilt from the log (here: their manifest is gone)
/// while a current version's record is damaged: the store still opens
/// (the article is left out of the date index, with a warning), `check`
/// names the record, and `check --repair` sets it aside and ends clean.
#[test]
fn a_damaged_record_does_not_keep_the_runs_from_being_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 4);
    let a2 = {
        let db = open_sled(dir.path());
        let a2 = id_entry(&db, dir.path(), "a2").pointer;
        db.open_tree("meta")
            .unwrap()
            .remove(runs::MANIFEST_KEY)
            .unwrap()
            .expect("the manifest was there");
        db.flush().unwrap();
        a2
    };
    damage_record(dir.path(), a2);
    drop(open_store(dir.path()));
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("date entries 3,"), "{text}");
    let at = format!("record at {}@{}: ", a2.segment, a2.offset);
    assert!(text.contains(&at), "{at}: {text}");
    let (code, text) = check(dir.path(), true);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("moved 1 damaged record(s) to quarantine"),
        "{text}"
    );
}
