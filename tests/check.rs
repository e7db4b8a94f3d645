//! `article-archive check`: each kind of damage done on purpose is found,
//! and `--repair` fixes what can be derived again (the index) and only that.

mod common;

use std::{path::Path, process::Output};

use article_archive::{
    article::{Article, ArticleId, Timestamp},
    store::keys,
};
use common::*;

/// Writes `count` small articles into a fresh archive at `dir` and closes it.
fn archive_with(dir: &Path, count: i64) {
    let store = open_store(dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
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

/// A flipped byte in a stored record is found; repair does not pretend to
/// fix it (the index is never a source for records) and the exit status
/// stays non-zero.
#[test]
fn a_damaged_record_is_found_and_not_papered_over() {
    let dir = tempfile::tempdir().unwrap();
    archive_with(dir.path(), 3);
    {
        let db = open_sled(dir.path());
        let articles = db.open_tree("articles").unwrap();
        let mut value = articles.get("a2").unwrap().unwrap().to_vec();
        let at = value.windows(7).position(|w| w == b"Body of").unwrap();
        value[at] = b'X';
        articles.insert("a2", value).unwrap();
        db.flush().unwrap();
    }
    let (code, text) = check(dir.path(), true);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("record a2: content does not match content_sha256"),
        "{text}"
    );
    assert!(text.contains("the problems left are in records"), "{text}");
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
