//! Format 1 data directories: `serve` refuses them naming the command that
//! converts them, and `article-archive upgrade` converts them in place,
//! keeping every article (content, hash, ingested_at), quarantining damaged
//! records, and surviving kill -9 at any point: afterwards the directory
//! holds either format 1, untouched, or a complete format 2.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use article_archive::{
    article::{Article, Timestamp},
    proto,
    store::{keys, sled::format1},
};
use common::*;

/// Builds a format 1 directory as the previous release left it: `articles`
/// (id → record), `by_date`, `meta` with format 1 and a page-token key.
/// Article `n{i}` has a body that varies with `i`; `damaged` names the
/// articles whose record gets a flipped byte. Returns the articles.
fn format_1_archive(dir: &Path, count: usize, damaged: &[usize]) -> Vec<proto::Article> {
    let db = sled::open(dir).unwrap();
    let articles = db.open_tree("articles").unwrap();
    let by_date = db.open_tree("by_date").unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.insert("format", "1").unwrap();
    meta.insert("page_token_key", &[7u8; 32][..]).unwrap();
    let body = fixture_body();
    let mut sent = Vec::new();
    for i in 0..count {
        let raw = proto::Article {
            body: format!(
                "{i}: {}",
                body.chars().take((i * 37) % 3000).collect::<String>()
            ),
            ..article(&format!("n{i}"), 1_600_000_000 - (i as i64) * 50_000)
        };
        let a = Article::from_proto(raw.clone()).unwrap();
        let ingested = Timestamp {
            seconds: 1_650_000_000 + i as i64,
            nanos: 17,
        };
        let mut value = format1::encode(a.content(), a.content().sha256(), ingested);
        if damaged.contains(&i) {
            let at = value.len() - 3;
            value[at] ^= 0x20;
        }
        articles.insert(a.id().as_str(), value).unwrap();
        by_date
            .insert(keys::date_key(a.content().published_at, a.id()), &[][..])
            .unwrap();
        sent.push(raw);
    }
    db.flush().unwrap();
    sent
}

/// Runs `upgrade`, waiting while a database closed a moment ago in this
/// process still holds the directory's lock (sled releases it from a
/// background thread).
fn upgrade(dir: &Path) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = Command::new(BINARY)
            .args(["upgrade", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        if !text.contains("locked by another process") || Instant::now() > deadline {
            return (output.status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything in a tree, for byte-for-byte comparisons.
fn contents(db: &sled::Db, tree: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.open_tree(tree)
        .unwrap()
        .iter()
        .map(|entry| {
            let (k, v) = entry.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// Every sound article is served by a format 2 server as it was: content,
/// hash and ingested_at; the archive checks clean.
async fn assert_served_as_before(dir: &Path, sent: &[proto::Article], damaged: &[usize]) {
    let server = ServerProcess::start(dir, &[]);
    let mut client = server.client().await;
    for (i, raw) in sent.iter().enumerate() {
        let answer = client
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: raw.id.clone(),
            })
            .await;
        if damaged.contains(&i) {
            assert_eq!(
                answer.unwrap_err().code(),
                tonic::Code::NotFound,
                "{}",
                raw.id
            );
            continue;
        }
        let got = answer.unwrap().into_inner().article.unwrap();
        assert_eq!(got.body, raw.body, "{}", raw.id);
        assert_eq!(got.content_sha256, sha_of(raw));
        assert_eq!(
            got.ingested_at.unwrap().seconds,
            1_650_000_000 + i as i64,
            "ingested_at is kept"
        );
    }
    let listed = list_all(&mut client, Default::default()).await;
    assert_eq!(listed.len(), sent.len() - damaged.len());
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).0.success());
    let report = open_store(dir).check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.articles as usize, sent.len() - damaged.len());
}

/// `serve` on a format 1 directory stops and names the command; `upgrade`
/// converts it, says what it did, quarantines a damaged record byte for
/// byte, and a second `upgrade` has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_format_1_and_upgrade_converts_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let damaged = [3];
    let sent = format_1_archive(&data, 40, &damaged);
    let damaged_bytes = contents(&open_sled(&data), "articles")[b"n3".as_slice()].clone();

    let refused = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("holds storage format 1"), "{said}");
    assert!(
        said.contains(&format!(
            "article-archive upgrade --data-dir {}",
            data.display()
        )),
        "{said}"
    );

    let (code, text) = upgrade(&data);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("from storage format 1 to 2: 39 article(s) converted"),
        "{text}"
    );
    assert!(
        text.contains("1 damaged record(s) copied to the quarantine tree"),
        "{text}"
    );
    {
        let db = open_sled(&data);
        let kept = contents(&db, "quarantine");
        assert_eq!(
            kept.get(b"n3".as_slice()),
            Some(&damaged_bytes),
            "kept byte for byte"
        );
        let names: Vec<_> = db.tree_names().iter().map(|n| n.to_vec()).collect();
        assert!(
            !names.contains(&b"articles".to_vec()),
            "format 1 trees are gone"
        );
    }
    assert_served_as_before(&data, &sent, &damaged).await;

    let (code, text) = upgrade(&data);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("already holds storage format 2"), "{text}");
}

/// A small xorshift generator, seeded from the clock and printed, so a run
/// can be replayed with `ARCHIVE_UPGRADE_SEED`.
fn seed() -> u64 {
    let seed = std::env::var("ARCHIVE_UPGRADE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
                | 1
        });
    println!("ARCHIVE_UPGRADE_SEED={seed}");
    seed
}

/// kill -9 at random points of an upgrade: every time, the directory holds
/// either format 1 with its `articles` tree byte for byte as before, or a
/// format 2 that is complete (the conversion committed). Running `upgrade`
/// again always finishes the job, and every article is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_killed_at_any_point_leaves_format_1_intact_or_format_2_complete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let damaged = [11];
    let sent = format_1_archive(&data, 3000, &damaged);
    let original = contents(&open_sled(&data), "articles");

    // How long a whole conversion takes here, to spread the kills over it.
    let probe = dir.path().join("probe");
    format_1_archive(&probe, 3000, &damaged);
    let started = Instant::now();
    assert_eq!(upgrade(&probe).0, Some(0));
    let full = started.elapsed();

    let mut rng = seed();
    let mut committed_kills = 0;
    for round in 0..8 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_micros(rng % (full.as_micros() as u64 + 1));
        let mut child = Command::new(BINARY)
            .args(["upgrade", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The point to kill at, not a wait for readiness.
        std::thread::sleep(delay);
        let _ = child.kill();
        let finished = child.wait().unwrap().success();

        let db = open_sled(&data);
        let format = db
            .open_tree("meta")
            .unwrap()
            .get("format")
            .unwrap()
            .unwrap();
        match format.as_ref() {
            b"1" => {
                assert_eq!(
                    contents(&db, "articles"),
                    original,
                    "round {round}: format 1 was changed before the commit point"
                );
                println!("round {round}: killed after {delay:?}: format 1 intact");
            }
            b"2" => {
                committed_kills += 1;
                drop(db);
                assert_served_as_before(&data, &sent, &damaged).await;
                println!("round {round}: format 2 complete (finished: {finished})");
                break;
            }
            other => panic!("round {round}: format {other:?}"),
        }
    }
    let (code, text) = upgrade(&data);
    assert_eq!(code, Some(0), "{text}");
    assert_served_as_before(&data, &sent, &damaged).await;
    println!("kills after the commit point: {committed_kills}");
}

/// A conversion killed after its commit point but before it dropped the
/// format 1 trees leaves them beside a complete format 2: the next open
/// drops them and the archive checks clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_trees_left_after_the_commit_point_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sent = format_1_archive(&data, 20, &[]);
    let leftovers = contents(&open_sled(&data), "articles");
    assert_eq!(upgrade(&data).0, Some(0));
    {
        let db = open_sled(&data);
        let articles = db.open_tree("articles").unwrap();
        for (k, v) in &leftovers {
            articles.insert(k, v.as_slice()).unwrap();
        }
        db.open_tree("by_date").unwrap().insert("x", "").unwrap();
        db.flush().unwrap();
    }
    assert_served_as_before(&data, &sent, &[]).await;
    let db = open_sled(&data);
    let names: Vec<_> = db.tree_names().iter().map(|n| n.to_vec()).collect();
    assert!(!names.contains(&b"articles".to_vec()) && !names.contains(&b"by_date".to_vec()));
}
