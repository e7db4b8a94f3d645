//! An archive keeps history: every revision of an article, a change feed
//! that other services follow, and deletions that stick. Each test runs a
//! real server on 127.0.0.1:0 and talks to it through the generated client.

mod common;

use std::time::Duration;

use article_archive::proto::{self, ArticleView, ChangeKind, IngestOutcome};
use common::*;
use tokio_stream::StreamExt;
use tonic::Code;

fn revision_of(id: &str, n: u32) -> proto::Article {
    proto::Article {
        body: format!("Body of {id}, revision {n}"),
        // The date moves with every revision, so the date index moves too.
        ..article(id, 1_000 + i64::from(n) * 86_400)
    }
}

fn get(id: &str, revision: u64) -> proto::GetArticleRequest {
    proto::GetArticleRequest {
        id: id.into(),
        revision,
    }
}

fn revisions_request(
    id: &str,
    page_size: i32,
    view: ArticleView,
) -> proto::ListArticleRevisionsRequest {
    proto::ListArticleRevisionsRequest {
        id: id.into(),
        page_size,
        view: view as i32,
        ..Default::default()
    }
}

fn watch_from(after: u64) -> proto::WatchChangesRequest {
    proto::WatchChangesRequest {
        after_sequence: after,
        ..Default::default()
    }
}

fn kinds(changes: &[proto::WatchChangesResponse]) -> Vec<(ChangeKind, String)> {
    changes
        .iter()
        .map(|c| (ChangeKind::try_from(c.kind).unwrap(), c.id.clone()))
        .collect()
}

async fn delete(
    client: &mut Client,
    id: &str,
    reason: &str,
    allow_reingest: bool,
) -> Result<u64, tonic::Status> {
    client
        .delete_article(proto::DeleteArticleRequest {
            id: id.into(),
            reason: reason.into(),
            allow_reingest,
        })
        .await
        .map(|r| r.into_inner().sequence)
}

/// Every UPDATED keeps the version before it: revisions are listed newest
/// first with their own hash and time, each can be fetched by number,
/// UNCHANGED makes none, and an article sent back as it was read (revision
/// set) is UNCHANGED.
async fn revisions_are_kept_listed_newest_first_and_fetched_by_number(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let client = &mut server.client;
    for n in 1..=3 {
        ingest(client, vec![revision_of("r", n)]).await;
    }
    let acks = ingest(client, vec![revision_of("r", 3)]).await;
    assert_eq!(outcome(&acks[0]), IngestOutcome::Unchanged);
    let current = client
        .get_article(get("r", 0))
        .await
        .unwrap()
        .into_inner()
        .article
        .unwrap();
    assert_eq!(current.revision, 3);
    let acks = ingest(client, vec![current.clone()]).await;
    assert_eq!(
        outcome(&acks[0]),
        IngestOutcome::Unchanged,
        "revision is not content"
    );

    let listed = client
        .list_article_revisions(revisions_request("r", 0, ArticleView::Basic))
        .await
        .unwrap()
        .into_inner();
    let numbers: Vec<u64> = listed.revisions.iter().map(|a| a.revision).collect();
    assert_eq!(numbers, [3, 2, 1]);
    assert!(listed.next_page_token.is_empty());
    assert!(listed.revisions.iter().all(|a| a.body.is_empty()), "BASIC");
    for (a, n) in listed.revisions.iter().zip([3, 2, 1]) {
        assert_eq!(a.content_sha256, sha_of(&revision_of("r", n)));
        assert_eq!(a.published_at, revision_of("r", n).published_at);
    }
    let times: Vec<_> = listed
        .revisions
        .iter()
        .map(|a| a.ingested_at.unwrap())
        .collect();
    assert!(times
        .windows(2)
        .all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)));

    // One at a time, FULL, with tokens.
    let mut request = revisions_request("r", 1, ArticleView::Full);
    let mut walked = Vec::new();
    loop {
        let page = client
            .list_article_revisions(request.clone())
            .await
            .unwrap()
            .into_inner();
        walked.extend(page.revisions.into_iter().map(|a| (a.revision, a.body)));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let expected: Vec<_> = [3u32, 2, 1]
        .into_iter()
        .map(|n| (u64::from(n), revision_of("r", n).body))
        .collect();
    assert_eq!(walked, expected);

    // A token is bound to its id and view.
    let first = client
        .list_article_revisions(revisions_request("r", 1, ArticleView::Full))
        .await
        .unwrap()
        .into_inner();
    ingest(
        client,
        vec![revision_of("other", 1), revision_of("other", 2)],
    )
    .await;
    for (id, view) in [("other", ArticleView::Full), ("r", ArticleView::Basic)] {
        let misused = proto::ListArticleRevisionsRequest {
            page_token: first.next_page_token.clone(),
            ..revisions_request(id, 1, view)
        };
        let status = client.list_article_revisions(misused).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{id} {view:?}: {status:?}"
        );
    }

    let second = client
        .get_article(get("r", 2))
        .await
        .unwrap()
        .into_inner()
        .article
        .unwrap();
    assert_eq!(second.body, revision_of("r", 2).body);
    assert_eq!(second.revision, 2);
    let missing = client.get_article(get("r", 9)).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("no revision 9"), "{missing:?}");
    let unknown = client
        .list_article_revisions(revisions_request("nope", 0, ArticleView::Basic))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let report = server.store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// The feed lists every change in sequence order, each CREATED or UPDATED
/// with the revision that change stored; it resumes strictly after any
/// sequence; a filter keeps only matching articles' changes, and deletions
/// reach every watcher.
async fn the_feed_lists_every_change_in_order_resumes_and_filters(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let client = &mut server.client;
    let other_source = proto::Article {
        source: "other.example".into(),
        ..revision_of("b", 1)
    };
    ingest(client, vec![revision_of("a", 1), other_source]).await;
    ingest(client, vec![revision_of("a", 2)]).await;
    ingest(client, vec![revision_of("c", 1)]).await;
    let deleted = delete(client, "c", "retracted", false).await.unwrap();

    let all = all_changes(client, watch_from(0)).await;
    assert_eq!(
        kinds(&all),
        [
            (ChangeKind::Created, "a".to_string()),
            (ChangeKind::Created, "b".to_string()),
            (ChangeKind::Updated, "a".to_string()),
            // c's CREATED is gone with its content; its deletion stays.
            (ChangeKind::Deleted, "c".to_string()),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(all[3].sequence, deleted);
    assert_eq!(all[3].reason, "retracted");
    assert!(all[3].article.is_none());
    let first = all[0].article.as_ref().unwrap();
    assert_eq!(
        (first.revision, first.body.as_str()),
        (1, ""),
        "revision 1, BASIC"
    );
    assert_eq!(all[2].article.as_ref().unwrap().revision, 2);
    assert!(all.iter().all(|c| c.changed_at.is_some()));

    for (i, change) in all.iter().enumerate() {
        let rest = all_changes(client, watch_from(change.sequence)).await;
        assert_eq!(rest, all[i + 1..], "resumed after {}", change.sequence);
    }
    let full = all_changes(
        client,
        proto::WatchChangesRequest {
            view: ArticleView::Full as i32,
            ..watch_from(0)
        },
    )
    .await;
    assert_eq!(
        full[2].article.as_ref().unwrap().body,
        revision_of("a", 2).body
    );

    let filtered = all_changes(
        client,
        proto::WatchChangesRequest {
            filter: Some(proto::ArticleFilter {
                sources: vec!["EXAMPLE.com".into()],
                ..Default::default()
            }),
            ..watch_from(0)
        },
    )
    .await;
    assert_eq!(
        kinds(&filtered),
        [
            (ChangeKind::Created, "a".to_string()),
            (ChangeKind::Updated, "a".to_string()),
            (ChangeKind::Deleted, "c".to_string()),
        ]
    );
    let too_many = proto::WatchChangesRequest {
        filter: Some(proto::ArticleFilter {
            tags: vec!["t".into(); 33],
            ..Default::default()
        }),
        ..watch_from(0)
    };
    let status = client.watch_changes(too_many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("filter.tags"), "{status:?}");
}

/// A follower caught up with the history gets a change made after it
/// subscribed, once it is acknowledged; when the server shuts down, the
/// follow stream ends with UNAVAILABLE saying where to resume.
async fn a_follower_gets_later_changes_and_ends_with_unavailable_at_shutdown(engine: Engine) {
    let mut server = start_or_skip!(engine);
    ingest(&mut server.client, vec![revision_of("early", 1)]).await;
    let mut follower = server
        .client
        .watch_changes(proto::WatchChangesRequest {
            follow: true,
            ..watch_from(0)
        })
        .await
        .unwrap()
        .into_inner();
    let first = follower.next().await.unwrap().unwrap();
    assert_eq!(first.id, "early");

    let mut writer = server.client.clone();
    let acks = ingest(&mut writer, vec![revision_of("late", 1)]).await;
    assert_eq!(outcome(&acks[0]), IngestOutcome::Created);
    let next = tokio::time::timeout(Duration::from_secs(10), follower.next())
        .await
        .expect("the follower is told of the new change")
        .unwrap()
        .unwrap();
    assert_eq!(
        (ChangeKind::try_from(next.kind).unwrap(), next.id.as_str()),
        (ChangeKind::Created, "late")
    );
    assert!(next.sequence > first.sequence);

    server.begin_shutdown();
    let end = tokio::time::timeout(Duration::from_secs(10), follower.next())
        .await
        .expect("the follow stream ends at shutdown");
    let status = end.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains(&format!("after_sequence = {}", next.sequence)),
        "{status:?}"
    );
    server.stop().await;
}

/// A deletion takes the article and the content of every revision out of
/// everything that serves content (Get, revisions, List, Export, the feed's
/// earlier entries), leaves one DELETED change, and leaves nothing in the
/// log that no index holds (the check would report it). A second deletion,
/// or one of an unknown id, is NOT_FOUND.
async fn a_deletion_removes_the_content_of_every_revision_everywhere(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let client = &mut server.client;
    for n in 1..=3 {
        ingest(client, vec![revision_of("gone", n)]).await;
    }
    ingest(client, vec![revision_of("kept", 1)]).await;
    let sequence = delete(client, "gone", "a court order", false)
        .await
        .unwrap();

    let status = client.get_article(get("gone", 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("was deleted on"), "{status:?}");
    assert!(
        status.message().contains(&format!("change {sequence}")),
        "{status:?}"
    );
    assert_eq!(
        client.get_article(get("gone", 1)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .list_article_revisions(revisions_request("gone", 0, ArticleView::Full))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let listed = list_all(client, Default::default()).await;
    assert_eq!(
        listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );
    let mut export = client
        .export_articles(proto::ExportArticlesRequest {
            all_revisions: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(item) = export.next().await {
        exported.push(item.unwrap().article.unwrap().id);
    }
    assert_eq!(exported, ["kept"]);
    let changes = all_changes(client, watch_from(0)).await;
    assert_eq!(
        kinds(&changes),
        [
            (ChangeKind::Created, "kept".to_string()),
            (ChangeKind::Deleted, "gone".to_string())
        ]
    );
    assert_eq!(changes[1].reason, "a court order");

    for id in ["gone", "never"] {
        let status = delete(client, id, "again", false).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id}: {status:?}");
    }
    let report = server.store.verify().await.unwrap();
    assert!(
        report.problems.is_empty(),
        "nothing left un-erased: {:?}",
        report.problems
    );
    assert_eq!((report.articles, report.deleted), (1, 1));
}

/// A takedown sticks: re-ingesting an export made before it is REJECTED for
/// that article, naming the deletion and its date, while the others come
/// back UNCHANGED. With allow_reingest the id is CREATED anew, at revision 1.
async fn a_takedown_sticks_through_the_reingest_of_an_old_export(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let client = &mut server.client;
    ingest(
        client,
        vec![
            revision_of("a", 1),
            revision_of("b", 1),
            revision_of("c", 1),
        ],
    )
    .await;
    ingest(client, vec![revision_of("b", 2)]).await;
    let mut export = client
        .export_articles(proto::ExportArticlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut old_export = Vec::new();
    while let Some(item) = export.next().await {
        old_export.push(item.unwrap().article.unwrap());
    }
    let sequence = delete(client, "b", "privacy request", false).await.unwrap();
    delete(client, "c", "published by mistake", true)
        .await
        .unwrap();

    let acks = ingest(client, old_export).await;
    let answer = |id: &str| {
        let ack = acks.iter().find(|ack| ack.id == id).unwrap();
        (outcome(ack), ack.error.clone())
    };
    assert_eq!(answer("a").0, IngestOutcome::Unchanged);
    let (b, why) = answer("b");
    assert_eq!(b, IngestOutcome::Rejected);
    assert!(
        why.contains("b was deleted on") && why.contains(&format!("change {sequence}")),
        "{why}"
    );
    assert_eq!(answer("c").0, IngestOutcome::Created, "allowed back");
    let back = client
        .get_article(get("c", 0))
        .await
        .unwrap()
        .into_inner()
        .article
        .unwrap();
    assert_eq!(back.revision, 1);
    let rejected_again = client.get_article(get("b", 0)).await.unwrap_err();
    assert!(
        rejected_again.message().contains("deleted"),
        "{rejected_again:?}"
    );
    let report = server.store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Sequence numbers keep rising across a clean restart: the high-water mark
/// is stored, so a change after the restart never reuses one.
async fn sequence_numbers_are_not_reused_after_a_restart(engine: Engine) {
    let mut server = start_or_skip!(engine);
    ingest(
        &mut server.client,
        vec![revision_of("x", 1), revision_of("y", 1)],
    )
    .await;
    delete(&mut server.client, "y", "gone", false)
        .await
        .unwrap();
    let before = all_changes(&mut server.client, watch_from(0)).await;
    let highest = before.last().unwrap().sequence;
    let mut server = server.restart(Default::default()).await;
    ingest(&mut server.client, vec![revision_of("z", 1)]).await;
    let after = all_changes(&mut server.client, watch_from(highest)).await;
    assert_eq!(kinds(&after), [(ChangeKind::Created, "z".to_string())]);
    assert!(after[0].sequence > highest);
}

/// The same across SIGTERM of the real binary: after the restart the feed
/// from 0 has every change once, in strictly increasing sequence, and the
/// new ones come after the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_are_not_reused_after_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let mut client = server.client().await;
    ingest(&mut client, vec![revision_of("a", 1), revision_of("a", 2)]).await;
    delete(&mut client, "a", "retracted", true).await.unwrap();
    let highest = all_changes(&mut client, watch_from(0))
        .await
        .last()
        .unwrap()
        .sequence;
    server.signal("TERM");
    assert!(server.wait(std::time::Duration::from_secs(30)).0.success());

    let server = ServerProcess::start(dir.path(), &[]);
    let mut client = server.client().await;
    ingest(&mut client, vec![revision_of("a", 3), revision_of("b", 1)]).await;
    let feed = all_changes(&mut client, watch_from(0)).await;
    let sequences: Vec<u64> = feed.iter().map(|c| c.sequence).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {sequences:?}"
    );
    assert_eq!(
        kinds(&feed),
        [
            (ChangeKind::Deleted, "a".to_string()),
            (ChangeKind::Created, "a".to_string()),
            (ChangeKind::Created, "b".to_string()),
        ],
        "the deleted article's history left the feed; it came back as new"
    );
    assert_eq!(feed[0].sequence, highest);
    assert!(feed[1].sequence > highest);
    assert_eq!(feed[1].article.as_ref().unwrap().revision, 1);
    server.signal("TERM");
    assert!(server.wait(std::time::Duration::from_secs(30)).0.success());
}

/// With --keep-revisions 2 an article keeps its two newest revisions; older
/// ones are erased (NOT_FOUND, saying they may be pruned), the current one
/// is untouched, and the feed shows the kept revisions with nothing about
/// the pruning.
async fn keep_revisions_prunes_the_oldest_and_leaves_the_current_one(engine: Engine) {
    let Some(mut server) = TestServer::start_on_configured(engine, Default::default(), |config| {
        config.keep_revisions = 2
    })
    .await
    else {
        return;
    };
    let client = &mut server.client;
    for n in 1..=4 {
        ingest(client, vec![revision_of("p", n)]).await;
    }
    let listed = client
        .list_article_revisions(revisions_request("p", 0, ArticleView::Full))
        .await
        .unwrap()
        .into_inner();
    let kept: Vec<_> = listed
        .revisions
        .iter()
        .map(|a| (a.revision, a.body.clone()))
        .collect();
    assert_eq!(
        kept,
        [(4, revision_of("p", 4).body), (3, revision_of("p", 3).body)]
    );
    let pruned = client.get_article(get("p", 1)).await.unwrap_err();
    assert_eq!(pruned.code(), Code::NotFound);
    assert!(pruned.message().contains("pruned"), "{pruned:?}");
    let current = client
        .get_article(get("p", 0))
        .await
        .unwrap()
        .into_inner()
        .article
        .unwrap();
    assert_eq!(current.body, revision_of("p", 4).body);
    let changes = all_changes(client, watch_from(0)).await;
    let revisions: Vec<u64> = changes
        .iter()
        .map(|c| c.article.as_ref().unwrap().revision)
        .collect();
    assert_eq!(revisions, [3, 4]);
    let report = server.store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.records, report.revision_entries), (2, 1));
}

/// A full-history export restores into an empty archive with the same
/// revision numbers, hashes and ingested_at; restoring it again is
/// UNCHANGED; a revision out of order is REJECTED.
async fn a_full_history_export_restores_revision_numbers_and_hashes(engine: Engine) {
    let mut source = start_or_skip!(engine);
    for n in 1..=3 {
        ingest(&mut source.client, vec![revision_of("h", n)]).await;
    }
    ingest(&mut source.client, vec![revision_of("single", 1)]).await;
    let mut export = source
        .client
        .export_articles(proto::ExportArticlesRequest {
            all_revisions: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut history = Vec::new();
    while let Some(item) = export.next().await {
        history.push(item.unwrap().article.unwrap());
    }
    let order: Vec<_> = history.iter().map(|a| (a.id.clone(), a.revision)).collect();
    assert_eq!(
        order,
        [
            ("single".to_string(), 1),
            ("h".to_string(), 1),
            ("h".to_string(), 2),
            ("h".to_string(), 3)
        ],
        "each article's revisions oldest first, articles in date order"
    );

    let mut target = start_or_skip!(engine);
    let restore = |articles: Vec<proto::Article>| {
        articles
            .into_iter()
            .map(|article| proto::IngestArticlesRequest {
                article: Some(article),
                restore_revision: true,
            })
            .collect::<Vec<_>>()
    };
    let acks = ingest_requests(&mut target.client, restore(history.clone())).await;
    assert!(
        acks.iter().all(|a| outcome(a) != IngestOutcome::Rejected),
        "{acks:?}"
    );
    for id in ["h", "single"] {
        let listed = |client: &mut Client| {
            let mut client = client.clone();
            async move {
                client
                    .list_article_revisions(revisions_request(id, 0, ArticleView::Full))
                    .await
                    .unwrap()
                    .into_inner()
                    .revisions
            }
        };
        assert_eq!(
            listed(&mut target.client).await,
            listed(&mut source.client).await
        );
    }
    let again = ingest_requests(&mut target.client, restore(history.clone())).await;
    assert!(
        again.iter().all(|a| outcome(a) == IngestOutcome::Unchanged),
        "{again:?}"
    );
    let skipping = proto::Article {
        id: "fresh".into(),
        revision: 2,
        ..history[1].clone()
    };
    let acks = ingest_requests(&mut target.client, restore(vec![skipping])).await;
    assert_eq!(outcome(&acks[0]), IngestOutcome::Rejected);
    assert!(acks[0].error.starts_with("revision: "), "{acks:?}");
}

on_both_engines!(
    revisions_are_kept_listed_newest_first_and_fetched_by_number,
    the_feed_lists_every_change_in_order_resumes_and_filters,
    a_follower_gets_later_changes_and_ends_with_unavailable_at_shutdown,
    a_deletion_removes_the_content_of_every_revision_everywhere,
    a_takedown_sticks_through_the_reingest_of_an_old_export,
    sequence_numbers_are_not_reused_after_a_restart,
    keep_revisions_prunes_the_oldest_and_leaves_the_current_one,
    a_full_history_export_restores_revision_numbers_and_hashes,
);
