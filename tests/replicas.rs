//! Several `article-archive serve` processes on one PostgreSQL database:
//! the real binary, over TCP, on the test process's cluster.
//!
//! Three replicas start at once on an empty database (their migrations
//! race). Two of them ingest different articles at the same time while a
//! follower of the change feed listens on the third; one ingesting replica
//! is killed with SIGKILL mid-stream. Then every acknowledged article is
//! read back through the others, and the follower's view of the feed is
//! compared with the feed read afterwards: every change once, in sequence
//! order, none skipped, whichever replica wrote it.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use article_archive::proto::{self, ArticleView, IngestOutcome};
use common::*;
use tokio_stream::StreamExt;

/// Articles each ingesting replica is sent, in streams of [`STREAM`].
const PER_WRITER: usize = 1200;
const STREAM: usize = 100;

/// Ingests `PER_WRITER` articles named `{prefix}-{n}` through `client`, one
/// stream of `STREAM` at a time, until done or the server goes away.
/// Returns the acknowledged ids with their hashes, and whether it stopped
/// early.
async fn ingest_until_gone(
    mut client: Client,
    prefix: &'static str,
    after_first_stream: Option<tokio::sync::oneshot::Sender<()>>,
) -> (BTreeMap<String, String>, bool) {
    let mut acknowledged = BTreeMap::new();
    let mut after_first_stream = after_first_stream;
    for start in (0..PER_WRITER).step_by(STREAM) {
        let articles: Vec<proto::Article> = (start..start + STREAM)
            .map(|n| article(&format!("{prefix}-{n:05}"), 1_700_000_000 + n as i64))
            .collect();
        let hashes: BTreeMap<String, String> =
            articles.iter().map(|a| (a.id.clone(), sha_of(a))).collect();
        let requests = tokio_stream::iter(articles.into_iter().map(request));
        let mut responses = match client.ingest_articles(requests).await {
            Ok(responses) => responses.into_inner(),
            Err(_) => return (acknowledged, true),
        };
        while let Some(response) = responses.next().await {
            match response {
                Ok(ack) => {
                    assert_eq!(outcome(&ack), IngestOutcome::Created, "{ack:?}");
                    acknowledged.insert(ack.id.clone(), hashes[&ack.id].clone());
                }
                Err(_) => return (acknowledged, true),
            }
        }
        if let Some(signal) = after_first_stream.take() {
            let _ = signal.send(());
        }
    }
    (acknowledged, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
)]
async fn three_replicas_share_one_database_and_lose_nothing_acknowledged() {
    let Some(url) = postgres::database_or_skip("three_replicas_share_one_database").await else {
        return;
    };
    // All three at once: the schema is created by whichever gets there
    // first, and the others wait for it or find it done.
    let starting: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || ServerProcess::start_on_database(&url, &[]))
        })
        .collect();
    let mut replicas: Vec<ServerProcess> =
        starting.into_iter().map(|t| t.join().unwrap()).collect();
    let (c, b, a) = (
        replicas.pop().unwrap(),
        replicas.pop().unwrap(),
        replicas.pop().unwrap(),
    );

    // A follower on C from the start of the feed.
    let mut follower = c
        .client()
        .await
        .watch_changes(proto::WatchChangesRequest {
            after_sequence: 0,
            follow: true,
            view: ArticleView::Basic as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // A and B ingest at once; A is killed after its first stream is
    // acknowledged, in the middle of whatever comes next.
    let (first_done, first_stream) = tokio::sync::oneshot::channel();
    let writer_a = tokio::spawn(ingest_until_gone(a.client().await, "a", Some(first_done)));
    let writer_b = tokio::spawn(ingest_until_gone(b.client().await, "b", None));
    first_stream.await.unwrap();
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let (from_a, a_cut) = writer_a.await.unwrap();
    let (from_b, b_cut) = writer_b.await.unwrap();
    assert!(a_cut, "A was killed before it could finish");
    assert!(!b_cut, "B ingests on while A dies");
    assert!(from_a.len() >= STREAM, "A's first stream was acknowledged");
    assert_eq!(from_b.len(), PER_WRITER);

    // Every acknowledged article, read through the replicas that did not
    // write it.
    let mut acknowledged = from_a.clone();
    acknowledged.extend(from_b.clone());
    for (reader, ids) in [(&c, &acknowledged), (&b, &from_a)] {
        let mut client = reader.client().await;
        let wanted: Vec<String> = ids.keys().cloned().collect();
        for chunk in wanted.chunks(500) {
            let got = client
                .batch_get_articles(proto::BatchGetArticlesRequest {
                    ids: chunk.to_vec(),
                    view: ArticleView::Full as i32,
                })
                .await
                .unwrap()
                .into_inner()
                .articles;
            for article in got {
                assert_eq!(article.content_sha256, ids[&article.id], "{}", article.id);
            }
        }
    }
    // Listing and exporting see the same set (plus whatever A committed
    // but could not acknowledge before it died).
    let mut c_client = c.client().await;
    let listed: BTreeSet<String> = list_all(
        &mut c_client,
        proto::ListArticlesRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .map(|a| a.id)
    .collect();
    let mut b_client = b.client().await;
    // A page token from one server is good at another (the key that signs
    // them is in the database).
    let first = b_client
        .list_articles(proto::ListArticlesRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = c_client
        .list_articles(proto::ListArticlesRequest {
            page_size: 10,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let paged: Vec<String> = first
        .articles
        .iter()
        .chain(&second.articles)
        .map(|a| a.id.clone())
        .collect();
    let expected: Vec<String> = c_client
        .list_articles(proto::ListArticlesRequest {
            page_size: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .articles
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(expected.len(), 20);
    assert_eq!(paged, expected, "B's token continues at C where B stopped");
    let mut export = b_client
        .export_articles(proto::ExportArticlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut exported = BTreeSet::new();
    while let Some(article) = export.next().await {
        exported.insert(article.unwrap().article.unwrap().id);
    }
    assert_eq!(listed, exported);
    for id in acknowledged.keys() {
        assert!(
            listed.contains(id),
            "{id} was acknowledged but is not listed"
        );
    }

    // The whole feed, read now through B: gapless from 1, one CREATED per
    // stored article.
    let feed = all_changes(
        &mut b_client,
        proto::WatchChangesRequest {
            after_sequence: 0,
            view: ArticleView::Basic as i32,
            ..Default::default()
        },
    )
    .await;
    let sequences: Vec<u64> = feed.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences, (1..=feed.len() as u64).collect::<Vec<_>>());
    let fed: BTreeSet<String> = feed.iter().map(|c| c.id.clone()).collect();
    assert_eq!(fed, listed);

    // The follower on C saw exactly that, in that order, while the writes
    // were going on.
    let last = *sequences.last().unwrap();
    let mut seen = Vec::new();
    while seen.last().is_none_or(|&s| s < last) {
        let change = tokio::time::timeout(Duration::from_secs(30), follower.next())
            .await
            .expect("the follower on C hears every change")
            .unwrap()
            .unwrap();
        seen.push(change.sequence);
    }
    assert_eq!(
        seen, sequences,
        "the follower saw every change once, in order"
    );
    drop((b, c));
}

/// A database migrated by a newer release (a schema version this binary
/// does not know) is refused at start, with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
)]
async fn a_database_with_a_newer_schema_is_refused_at_start() {
    let Some(url) = postgres::database_or_skip("a_database_with_a_newer_schema_is_refused").await
    else {
        return;
    };
    let store = article_archive::Store::open_postgres(
        &article_archive::store::postgres::PostgresConfig::new(&url),
    )
    .await
    .unwrap();
    drop(store);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO archive_schema (version, name, applied_s) VALUES (99, '0099_future.sql', 0)",
            &[],
        )
        .await
        .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        spawn_with(&["--store", &url]).wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("schema version 99, newer than the 1 this binary knows"),
        "{said}"
    );
}
