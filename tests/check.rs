//! `article-archive check`: each kind of damage done on purpose is found,
//! and `--repair` fixes what can be derived again (the index) and only that.

mod common;

use std::{path::Path, process::Output};

use article_archive::{
    article::{Article, ArticleId, Timestamp},
    store::keys,
};
use common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `count` small articles into a fresh archive at `dir` and closes it.
fn archive_with(dir: &Path, count: i64) {
    let store = open_store(dir);
    runtime().block_on(async {
        for i in 0..count {
            let a = Article::from_proto(article(&format!("a{i}"), i * 86_400 - 1_000_000)).unwrap();
            store.submit(a).await.unwrap().outcome().await.unwrap();
        }
    });
}

fn check(dir: &Path, repair: bool) -> (Option<i32>, String) {
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

fn key(id: &str, seconds: i64) -> Vec<u8> {
    keys::date_key(
        Timestamp { seconds, nanos: 0 },
        &ArticleId::parse("id", id).unwrap(),
    )
}

/// A sound archive passes.
#[test]
fn a_sound_archive_passes() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 5);
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("records 5, index entries 5, problems 0"),
        "{text}"
    );
}

/// A missing entry, an orphan entry and an entry at the wrong date are each
/// reported, and --repair rebuilds the index so the archive passes again.
#[test]
fn index_damage_is_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 5);
    {
        let db = open_sled(dir.path());
        let by_date = db.open_tree("by_date").unwrap();
        by_date.remove(key("a1", 86_400 - 1_000_000)).unwrap();
        by_date.insert(key("ghost", 7), &[][..]).unwrap();
        by_date.insert(key("a3", 12_345), &[][..]).unwrap();
        db.flush().unwrap();
    }
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("record a1: no index entry at its date"),
        "{text}"
    );
    assert!(
        text.contains("index entry for ghost: no such record"),
        "{text}"
    );
    assert!(
        text.contains("index entry for a3: record has another date"),
        "{text}"
    );

    let (code, text) = check(dir.path(), true);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("repair: added 1 and removed 2 index entries"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("records 5, index entries 5, problems 0"),
        "{text}"
    );
    let (code, _) = check(dir.path(), false);
    assert_eq!(code, Some(0));
}

/// Stops a server on `dir` the hard way, so the archive is not closed
/// cleanly and the next server start checks it.
fn crash_a_server_on(dir: &Path) {
    let server = ServerProcess::start(dir, &[]);
    server.signal("KILL");
    server.wait(std::time::Duration::from_secs(30));
}

/// A flipped byte in a stored record is found. A server will not start on
/// the archive after an unclean stop (only an operator may set a record
/// aside), `--repair` moves the record to quarantine byte for byte, and then
/// the server starts and serves the rest.
#[test]
fn a_damaged_record_blocks_an_unclean_start_until_repair_sets_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 3);
    crash_a_server_on(dir.path());
    let damaged = {
        let db = open_sled(dir.path());
        let articles = db.open_tree("articles").unwrap();
        let mut value = articles.get("a2").unwrap().unwrap().to_vec();
        let at = value.windows(7).position(|w| w == b"Body of").unwrap();
        value[at] = b'X';
        articles.insert("a2", value.clone()).unwrap();
        db.flush().unwrap();
        value
    };

    let refused = std::process::Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("1 stored record(s) are damaged"), "{said}");
    assert!(said.contains("check --repair"), "{said}");

    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("record a2: content does not match content_sha256"),
        "{text}"
    );

    let (code, text) = check(dir.path(), true);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("moved 1 damaged record(s) to quarantine"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("records 2, index entries 2, problems 0"),
        "{text}"
    );
    {
        let db = open_sled(dir.path());
        let kept = db.open_tree("quarantine").unwrap().get("a2").unwrap();
        assert_eq!(kept.as_deref(), Some(&damaged[..]), "kept byte for byte");
    }

    let server = ServerProcess::start(dir.path(), &[]);
    runtime().block_on(async {
        let mut client = server.client().await;
        let missing = client
            .get_article(article_archive::proto::GetArticleRequest { id: "a2".into() })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert_eq!(list_all(&mut client, Default::default()).await.len(), 2);
    });
    server.signal("TERM");
    server.wait(std::time::Duration::from_secs(30));
}

/// After an unclean stop, a server repairs a damaged index by itself (the
/// index is derived from the records, so that is always safe) and says so.
#[test]
fn a_server_repairs_the_index_after_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 4);
    crash_a_server_on(dir.path());
    {
        let db = open_sled(dir.path());
        let by_date = db.open_tree("by_date").unwrap();
        by_date
            .remove(key("a1", 86_400 - 1_000_000))
            .unwrap()
            .unwrap();
        by_date.insert(key("ghost", 5), &[][..]).unwrap();
        db.flush().unwrap();
    }
    let server = ServerProcess::start(dir.path(), &[]);
    let log = server.startup_log.join("\n");
    assert!(log.contains("not closed cleanly"), "{log}");
    assert!(log.contains("rebuilt the date index"), "{log}");
    assert!(log.contains("added=1 removed=1"), "{log}");
    runtime().block_on(async {
        let mut client = server.client().await;
        assert_eq!(list_all(&mut client, Default::default()).await.len(), 4);
    });
    server.signal("TERM");
    server.wait(std::time::Duration::from_secs(30));

    // Closed cleanly this time: the next start does not check again.
    let server = ServerProcess::start(dir.path(), &[]);
    let log = server.startup_log.join("\n");
    assert!(!log.contains("not closed cleanly"), "{log}");
    server.signal("TERM");
    server.wait(std::time::Duration::from_secs(30));
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
    let (code, text) = check(dir.path(), false);
    assert_eq!(code, Some(1));
    assert!(text.contains("locked by another process"), "{text}");
    server.signal("TERM");
    server.wait(std::time::Duration::from_secs(30));
}
