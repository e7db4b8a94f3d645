//! End-to-end tests of the archive API over real TCP.

mod common;

use std::collections::{BTreeMap, HashSet};

use article_archive::{
    article::Article,
    proto::{self, ArticleView, IngestOutcome, SortOrder},
    service::MAX_RESPONSE_BYTES,
};
use common::*;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::{codec::CompressionEncoding, Code};

fn list(order: SortOrder, page_size: i32) -> proto::ListArticlesRequest {
    proto::ListArticlesRequest {
        page_size,
        order: order as i32,
        ..Default::default()
    }
}

fn ids(articles: &[proto::Article]) -> Vec<String> {
    articles.iter().map(|a| a.id.clone()).collect()
}

/// The fixture article comes back byte for byte, with the hash of what
/// was sent and an id derived from its normalised url.
async fn fixture_article_round_trips_byte_for_byte(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let sent = proto::Article {
        url: "https://Example.com/europe/valmere-ferry-vote?utm_source=feed#top".into(),
        title: "Harbour town votes to keep its ferry after a year of protests".into(),
        body: fixture_body(),
        published_at: Some(ts(1_662_019_200, 123_456_789)),
        authors: vec!["S├╕ren Ekdahl".into()],
        source: "example.com".into(),
        section: "World".into(),
        tags: vec!["Valmere".into(), "Ferries".into()],
        language: "en".into(),
        ..Default::default()
    };
    let expected_sha = hex::encode(
        Article::from_proto(sent.clone())
            .unwrap()
            .content()
            .sha256(),
    );

    let acks = ingest(&mut server.client, vec![sent.clone()]).await;
    assert_eq!(acks.len(), 1);
    assert_eq!(outcome(&acks[0]), IngestOutcome::Created);
    let id = acks[0].id.clone();
    assert!(id.starts_with("u-"), "derived from the url: {id}");

    let got = server
        .client
        .get_article(proto::GetArticleRequest {
            revision: 0,
            id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .article
        .unwrap();
    assert_eq!(got.body.as_bytes(), fixture_body().as_bytes());
    for hard_part in [
        "Home › World",
        "“keep Margit”",
        "residents’",
        "S├╕ren",
        "𝕏",
        "🗞️",
    ] {
        assert!(got.body.contains(hard_part), "{hard_part}");
    }
    assert_eq!(got.authors, sent.authors);
    assert_eq!(got.url, sent.url, "the url is stored as sent");
    assert_eq!(got.published_at, sent.published_at);
    assert_eq!(got.content_sha256, expected_sha);
    assert!(got.ingested_at.is_some());
    assert_eq!(got.revision, 1);
    let sent_without_server_fields = proto::Article {
        id: id.clone(),
        ingested_at: None,
        content_sha256: String::new(),
        revision: 0,
        ..got.clone()
    };
    assert_eq!(
        sent_without_server_fields,
        proto::Article { id, ..sent.clone() }
    );

    // The same page with other tracking parameters is the same article.
    let again = proto::Article {
        url: "https://example.com/europe/valmere-ferry-vote?fbclid=abc".into(),
        ..sent
    };
    let acks = ingest(&mut server.client, vec![again]).await;
    assert_eq!(
        outcome(&acks[0]),
        IngestOutcome::Updated,
        "same id, url text differs"
    );
    assert_eq!(acks[0].id, got.id);
}

/// One response per request, in order, with its index; a rejection names the
/// field and the stream goes on.
async fn ingest_answers_each_request_in_order_and_rejections_do_not_end_the_stream(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let mut blank_title = article("b", 10);
    blank_title.title = "   ".into();
    let mut no_date = article("c", 10);
    no_date.published_at = None;
    let mut bad_url = article("d", 10);
    bad_url.url = "mailto:editor@example.com".into();
    let mut bad_id = article("e", 10);
    bad_id.id = "not/allowed".into();
    let mut changed = article("a", 10);
    changed.body = "A corrected body".into();
    let batch = vec![
        article("a", 10),
        blank_title,
        no_date,
        bad_url,
        bad_id,
        article("a", 10),
        changed,
        article("f", 20),
    ];
    let acks = ingest(&mut server.client, batch).await;
    let summary: Vec<(u64, IngestOutcome)> = acks.iter().map(|a| (a.index, outcome(a))).collect();
    assert_eq!(
        summary,
        vec![
            (0, IngestOutcome::Created),
            (1, IngestOutcome::Rejected),
            (2, IngestOutcome::Rejected),
            (3, IngestOutcome::Rejected),
            (4, IngestOutcome::Rejected),
            (5, IngestOutcome::Unchanged),
            (6, IngestOutcome::Updated),
            (7, IngestOutcome::Created),
        ]
    );
    assert!(acks[1].error.starts_with("title:"), "{}", acks[1].error);
    assert!(
        acks[2].error.starts_with("published_at:"),
        "{}",
        acks[2].error
    );
    assert!(acks[3].error.starts_with("url:"), "{}", acks[3].error);
    assert!(acks[4].error.starts_with("id:"), "{}", acks[4].error);
    assert!(acks[0].error.is_empty());
    let a = server
        .client
        .get_article(proto::GetArticleRequest {
            revision: 0,
            id: "a".into(),
        })
        .await
        .unwrap();
    assert_eq!(a.into_inner().article.unwrap().body, "A corrected body");
}

/// A body over the 1 MiB limit, inside a message under the 4 MiB request
/// limit, is a REJECTED article, not a broken stream.
#[tokio::test]
async fn over_long_body_is_rejected_and_the_stream_continues() {
    let mut server = TestServer::start().await;
    let mut huge = article("huge", 1);
    huge.body = "x".repeat(2 * 1024 * 1024);
    let acks = ingest(&mut server.client, vec![huge, article("after", 2)]).await;
    assert_eq!(outcome(&acks[0]), IngestOutcome::Rejected);
    assert!(
        acks[0]
            .error
            .starts_with("body: must be at most 1048576 bytes"),
        "{}",
        acks[0].error
    );
    assert_eq!(outcome(&acks[1]), IngestOutcome::Created);
}

/// A request message over the 4 MiB limit ends the stream with a clear
/// status, after the acknowledgements already due.
#[tokio::test]
async fn a_message_over_the_request_limit_ends_the_stream_after_earlier_acks() {
    let mut server = TestServer::start().await;
    let mut oversized = article("too-big", 2);
    oversized.body = "x".repeat(5 * 1024 * 1024);
    let requests = tokio_stream::iter([article("first", 1), oversized].map(request));
    let mut responses = server
        .client
        .ingest_articles(requests)
        .await
        .unwrap()
        .into_inner();
    let first = responses.next().await.unwrap().unwrap();
    assert_eq!((first.index, outcome(&first)), (0, IngestOutcome::Created));
    let status = responses.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    assert!(server
        .client
        .get_article(proto::GetArticleRequest {
            revision: 0,
            id: "first".into()
        })
        .await
        .is_ok());
}

/// An update that changes published_at moves the index entry: the article
/// leaves its old date and appears at the new one, once.
async fn update_moves_the_date_index_entry(engine: Engine) {
    let mut server = start_or_skip!(engine);
    ingest(
        &mut server.client,
        vec![article("moving", 1_000), article("still", 5_000)],
    )
    .await;
    let mut moved = article("moving", 9_000);
    moved.title = "Moved".into();
    let acks = ingest(&mut server.client, vec![moved]).await;
    assert_eq!(outcome(&acks[0]), IngestOutcome::Updated);

    let all = list_all(&mut server.client, list(SortOrder::OldestFirst, 10)).await;
    assert_eq!(ids(&all), ["still", "moving"]);
    let old_range = proto::ListArticlesRequest {
        start_time: Some(ts(0, 0)),
        end_time: Some(ts(2_000, 0)),
        ..Default::default()
    };
    assert!(list_all(&mut server.client, old_range).await.is_empty());
    let report = server.store.verify().await.unwrap();
    // Three versions in the log (the update is a new record), two articles,
    // one date entry each.
    assert_eq!(
        (report.records, report.articles, report.date_entries),
        (3, 2, 2)
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Archives reach back before 1970: order holds across the epoch, to the
/// nanosecond, both ways.
async fn list_orders_across_1970_in_both_directions(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let dated = |id: &str, seconds, nanos| proto::Article {
        published_at: Some(ts(seconds, nanos)),
        ..article(id, 0)
    };
    let articles = vec![
        dated("y2030", 1_893_456_000, 0),
        dated("epoch", 0, 0),
        dated("y1851", -3_755_289_600, 0),
        dated("just-before-epoch", -1, 999_999_999),
        dated("y1969", -86_400, 0),
        dated("epoch-plus-1ns", 0, 1),
        dated("year-1", -62_135_596_800, 0),
    ];
    ingest(&mut server.client, articles).await;
    let oldest = list_all(&mut server.client, list(SortOrder::OldestFirst, 2)).await;
    let expected = [
        "year-1",
        "y1851",
        "y1969",
        "just-before-epoch",
        "epoch",
        "epoch-plus-1ns",
        "y2030",
    ];
    assert_eq!(ids(&oldest), expected);
    let newest = list_all(&mut server.client, list(SortOrder::NewestFirst, 3)).await;
    let reversed: Vec<_> = expected.iter().rev().copied().collect();
    assert_eq!(ids(&newest), reversed);

    let before_1970 = proto::ListArticlesRequest {
        start_time: Some(ts(-3_755_289_600, 0)),
        end_time: Some(ts(0, 0)),
        ..Default::default()
    };
    assert_eq!(
        ids(&list_all(&mut server.client, before_1970).await),
        ["y1851", "y1969", "just-before-epoch"],
        "start inclusive, end exclusive"
    );
}

/// Newest-first walks over many articles on both sides of 1970 (where a
/// plain big-endian key layout trips sled 0.34's reverse iteration) return
/// exactly the oldest-first walk reversed.
async fn newest_first_walks_across_1970_match_oldest_first_reversed(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let articles: Vec<_> = (0..600)
        .map(|i| article(&format!("n{i:03}"), (i / 3) * 1_000 - 150_000))
        .collect();
    ingest(&mut server.client, articles).await;
    let oldest = ids(&list_all(&mut server.client, list(SortOrder::OldestFirst, 100)).await);
    let mut newest = ids(&list_all(&mut server.client, list(SortOrder::NewestFirst, 100)).await);
    newest.reverse();
    assert_eq!(oldest.len(), 600);
    assert_eq!(newest, oldest);
    let before_1970 = proto::ListArticlesRequest {
        end_time: Some(ts(0, 0)),
        ..list(SortOrder::NewestFirst, 1000)
    };
    assert_eq!(list_all(&mut server.client, before_1970).await.len(), 450);
}

/// One-day ranges asked with pages of 1000, the way a reader asks for a
/// day: a day of 40 articles (which the sled engine reads on the async
/// worker, by its day counter) and one of 150 (on the blocking pool) give
/// exactly their articles in both orders, on both sides of 1970, and
/// again after updates move articles from one day to the other.
async fn one_day_ranges_in_large_pages_give_exactly_the_day(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let day_before_1970: Vec<_> = (0..40)
        .map(|i| article(&format!("a{i:03}"), -86_400 + i * 2_000))
        .collect();
    let day_of_1970: Vec<_> = (0..150)
        .map(|i| article(&format!("b{i:03}"), i * 500))
        .collect();
    // Neighbours just outside both days.
    let outside = vec![article("before", -86_401), article("after", 86_400)];
    ingest(
        &mut server.client,
        [day_before_1970, day_of_1970, outside].concat(),
    )
    .await;
    let day = |start: i64, order: SortOrder| proto::ListArticlesRequest {
        start_time: Some(ts(start, 0)),
        end_time: Some(ts(start + 86_400, 0)),
        ..list(order, 1000)
    };
    let expect = |prefix: &str, count: usize| -> Vec<String> {
        (0..count).map(|i| format!("{prefix}{i:03}")).collect()
    };
    for (start, prefix, count) in [(-86_400, "a", 40), (0, "b", 150)] {
        let oldest = server
            .client
            .list_articles(day(start, SortOrder::OldestFirst))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ids(&oldest.articles), expect(prefix, count));
        assert!(oldest.next_page_token.is_empty());
        let newest = server
            .client
            .list_articles(day(start, SortOrder::NewestFirst))
            .await
            .unwrap()
            .into_inner();
        let mut reversed = expect(prefix, count);
        reversed.reverse();
        assert_eq!(ids(&newest.articles), reversed);
    }

    // Ten articles of the earlier day move to the later one.
    let moved: Vec<_> = (30..40)
        .map(|i| article(&format!("a{i:03}"), 86_399 - i))
        .collect();
    ingest(&mut server.client, moved).await;
    let earlier = list_all(&mut server.client, day(-86_400, SortOrder::OldestFirst)).await;
    assert_eq!(ids(&earlier), expect("a", 30));
    let later = list_all(&mut server.client, day(0, SortOrder::OldestFirst)).await;
    let mut expected = expect("b", 150);
    expected.extend((30..40).rev().map(|i| format!("a{i:03}")));
    assert_eq!(ids(&later), expected);
}

/// Many articles with the same timestamp, read in small pages while more
/// arrive between pages: no article is skipped or repeated.
async fn pages_never_skip_or_repeat_tied_timestamps_under_concurrent_ingest(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let tied: Vec<_> = (0..60)
        .map(|i| article(&format!("t{i:03}"), 1_000))
        .collect();
    ingest(&mut server.client, tied).await;

    for order in [SortOrder::OldestFirst, SortOrder::NewestFirst] {
        let mut request = list(order, 7);
        let mut seen = Vec::new();
        let mut round = 0;
        loop {
            let page = server
                .client
                .list_articles(request.clone())
                .await
                .unwrap()
                .into_inner();
            assert!(page.articles.len() <= 7);
            seen.extend(ids(&page.articles));
            // Articles arriving at other times between pages must not disturb
            // the walk of the tied ones.
            round += 1;
            let extra = article(&format!("late-{order:?}-{round}"), 1_000 + round);
            ingest(&mut server.client, vec![extra]).await;
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        let tied_seen: Vec<_> = seen
            .iter()
            .filter(|id| id.starts_with('t'))
            .cloned()
            .collect();
        let mut expected: Vec<_> = (0..60).map(|i| format!("t{i:03}")).collect();
        if order == SortOrder::NewestFirst {
            expected.reverse();
        }
        assert_eq!(tied_seen, expected, "{order:?}");
        let unique: HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no repeats");
    }
}

/// A page token only resumes the listing it came from.
async fn page_tokens_that_are_garbage_tampered_or_for_another_query_are_invalid(engine: Engine) {
    let mut server = start_or_skip!(engine);
    ingest(
        &mut server.client,
        (0..5).map(|i| article(&format!("a{i}"), i)).collect(),
    )
    .await;
    let first = server
        .client
        .list_articles(list(SortOrder::OldestFirst, 2))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());

    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let misuses = [
        proto::ListArticlesRequest {
            page_token: "garbage".into(),
            ..list(SortOrder::OldestFirst, 2)
        },
        proto::ListArticlesRequest {
            page_token: String::from_utf8(tampered).unwrap(),
            ..list(SortOrder::OldestFirst, 2)
        },
        proto::ListArticlesRequest {
            page_token: token.clone(),
            ..list(SortOrder::NewestFirst, 2)
        },
        proto::ListArticlesRequest {
            page_token: token.clone(),
            start_time: Some(ts(1, 0)),
            ..list(SortOrder::OldestFirst, 2)
        },
        proto::ListArticlesRequest {
            page_token: token.clone(),
            end_time: Some(ts(100, 0)),
            ..list(SortOrder::OldestFirst, 2)
        },
    ];
    for request in misuses {
        let status = server
            .client
            .list_articles(request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().contains("page_token"),
            "{}",
            status.message()
        );
    }
    // The same token with another page size and view is fine.
    let next = proto::ListArticlesRequest {
        page_token: token,
        view: ArticleView::Full as i32,
        ..list(SortOrder::OldestFirst, 10)
    };
    let rest = server
        .client
        .list_articles(next)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&rest.articles), ["a2", "a3", "a4"]);
    assert!(rest.next_page_token.is_empty());
}

/// Bad list arguments are INVALID_ARGUMENT; page sizes default and clamp.
#[tokio::test]
async fn list_validates_page_size_and_range() {
    let mut server = TestServer::start().await;
    let negative = server
        .client
        .list_articles(list(SortOrder::OldestFirst, -1))
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(negative.message().contains("page_size"));
    let inverted = proto::ListArticlesRequest {
        start_time: Some(ts(10, 0)),
        end_time: Some(ts(9, 0)),
        ..Default::default()
    };
    let inverted = server.client.list_articles(inverted).await.unwrap_err();
    assert_eq!(inverted.code(), Code::InvalidArgument);
    assert!(inverted.message().contains("start_time"));
    let out_of_range = proto::ListArticlesRequest {
        end_time: Some(ts(0, -1)),
        ..Default::default()
    };
    assert_eq!(
        server
            .client
            .list_articles(out_of_range)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let unknown_order = proto::ListArticlesRequest {
        order: 99,
        ..Default::default()
    };
    assert_eq!(
        server
            .client
            .list_articles(unknown_order)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let articles: Vec<_> = (0..1_001)
        .map(|i| article(&format!("p{i:04}"), i))
        .collect();
    let acks = ingest(&mut server.client, articles).await;
    assert_eq!(acks.len(), 1_001);
    let default_page = server
        .client
        .list_articles(list(SortOrder::OldestFirst, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default_page.articles.len(), 50);
    let clamped = server
        .client
        .list_articles(list(SortOrder::OldestFirst, 5_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clamped.articles.len(), 1_000);
    assert!(!clamped.next_page_token.is_empty());
    let empty_range = proto::ListArticlesRequest {
        start_time: Some(ts(5, 0)),
        end_time: Some(ts(5, 0)),
        ..Default::default()
    };
    assert!(server
        .client
        .list_articles(empty_range)
        .await
        .unwrap()
        .into_inner()
        .articles
        .is_empty());
}

/// BASIC (the default) leaves out the body; FULL carries it.
async fn basic_view_omits_the_body_and_full_view_includes_it(engine: Engine) {
    let mut server = start_or_skip!(engine);
    ingest(&mut server.client, vec![article("a", 1)]).await;
    let basic = server
        .client
        .list_articles(list(SortOrder::Unspecified, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(basic.articles[0].body, "");
    assert_eq!(basic.articles[0].title, "Title of a");
    assert!(!basic.articles[0].content_sha256.is_empty());
    let full = proto::ListArticlesRequest {
        view: ArticleView::Full as i32,
        ..Default::default()
    };
    let full = server
        .client
        .list_articles(full)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.articles[0].body, "Body of a");
}

/// FULL pages of large articles end early so a response never passes the
/// 4 MiB default receive limit of gRPC clients, and the walk still sees all.
async fn full_pages_of_large_articles_stay_under_4_mib(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let big: Vec<_> = (0..9)
        .map(|i| proto::Article {
            body: format!("{i}").repeat(1024 * 1024 - 16),
            ..article(&format!("big{i}"), i)
        })
        .collect();
    let acks = ingest(&mut server.client, big).await;
    assert!(acks.iter().all(|a| outcome(a) == IngestOutcome::Created));

    let mut request = proto::ListArticlesRequest {
        view: ArticleView::Full as i32,
        page_size: 100,
        ..Default::default()
    };
    let mut pages = 0;
    let mut seen = Vec::new();
    loop {
        // The client keeps tonic's default 4 MiB receive limit, so an
        // oversized page would fail here.
        let page = server
            .client
            .list_articles(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.encoded_len() <= MAX_RESPONSE_BYTES);
        assert!(!page.articles.is_empty());
        pages += 1;
        seen.extend(ids(&page.articles));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(seen, (0..9).map(|i| format!("big{i}")).collect::<Vec<_>>());
}

/// GetArticle: NOT_FOUND for an unknown id, INVALID_ARGUMENT for an empty or
/// malformed one.
async fn get_distinguishes_unknown_from_malformed_ids(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let code = |r: Result<_, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(
            server
                .client
                .get_article(proto::GetArticleRequest {
                    revision: 0,
                    id: "nope".into()
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            server
                .client
                .get_article(proto::GetArticleRequest {
                    revision: 0,
                    id: String::new()
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            server
                .client
                .get_article(proto::GetArticleRequest {
                    revision: 0,
                    id: "a b".into()
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            server
                .client
                .get_article(proto::GetArticleRequest {
                    revision: 0,
                    id: "x".repeat(129)
                })
                .await
        ),
        Code::InvalidArgument
    );
}

/// Eight streams rewrite the same ids with different dates at once; after
/// them every record has exactly one index entry, at its date.
async fn concurrent_writers_on_the_same_ids_leave_exactly_one_index_entry_each(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let mut streams = Vec::new();
    for writer in 0..8i64 {
        let mut client = server.client.clone();
        streams.push(tokio::spawn(async move {
            let articles = (0..200i64)
                .map(|i| proto::Article {
                    title: format!("writer {writer} round {i}"),
                    ..article(&format!("shared{}", i % 25), (i * 7 + writer * 13) % 50)
                })
                .collect();
            ingest(&mut client, articles).await
        }));
    }
    for stream in streams {
        let acks = stream.await.unwrap();
        assert_eq!(acks.len(), 200);
        assert!(acks.iter().all(|a| outcome(a) != IngestOutcome::Rejected));
    }
    let report = server.store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.articles, report.date_entries), (25, 25));
    assert_eq!(report.revision_entries, report.records - report.articles);
    let listed = list_all(&mut server.client, list(SortOrder::OldestFirst, 1000)).await;
    assert_eq!(listed.len(), 25);
    for a in listed {
        let got = server
            .client
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: a.id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            got.into_inner().article.unwrap().published_at,
            a.published_at
        );
    }
}

/// gzip is accepted and offered on every RPC.
#[tokio::test]
async fn gzip_compressed_calls_work() {
    let server = TestServer::start().await;
    let mut client = server
        .client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let acks = ingest(
        &mut client,
        vec![proto::Article {
            body: fixture_body(),
            ..article("gz", 1)
        }],
    )
    .await;
    assert_eq!(outcome(&acks[0]), IngestOutcome::Created);
    let got = client
        .get_article(proto::GetArticleRequest {
            revision: 0,
            id: "gz".into(),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().article.unwrap().body, fixture_body());
}

/// Acknowledged articles survive a restart on the same data directory, and
/// page tokens issued before it still work after it.
async fn acknowledged_articles_and_page_tokens_survive_a_restart(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let articles: Vec<_> = (0..30).map(|i| article(&format!("r{i:02}"), i)).collect();
    let mut expected = BTreeMap::new();
    for a in &articles {
        expected.insert(
            a.id.clone(),
            hex::encode(Article::from_proto(a.clone()).unwrap().content().sha256()),
        );
    }
    ingest(&mut server.client, articles).await;
    let first = server
        .client
        .list_articles(list(SortOrder::OldestFirst, 10))
        .await
        .unwrap()
        .into_inner();
    let mut server = server.restart(Default::default()).await;
    for (id, sha) in &expected {
        let got = server
            .client
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(&got.into_inner().article.unwrap().content_sha256, sha);
    }
    let rest = proto::ListArticlesRequest {
        page_token: first.next_page_token,
        ..list(SortOrder::OldestFirst, 100)
    };
    let rest = server
        .client
        .list_articles(rest)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.articles.len(), 20);
    assert_eq!(rest.articles[0].id, "r10");
}

/// Health reports SERVING for "" and the archive, and NOT_SERVING once
/// shutdown begins.
#[tokio::test]
async fn health_serves_then_turns_not_serving_on_shutdown() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let mut server = TestServer::start().await;
    let mut health = HealthClient::new(channel(server.addr).await);
    for service in ["", "archive.v1.ArchiveService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "archive.v1.ArchiveService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    server.begin_shutdown();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
}

/// Reflection answers both protocol versions, with the archive's services.
#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(channel(server.addr).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"archive.v1.ArchiveService".to_string()),
        "{names:?}"
    );

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(server.addr).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "google.protobuf.Timestamp".into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap().message_response;
    assert!(
        matches!(
            response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "the well-known types are served: {response:?}"
    );
}

async fn export(
    client: &mut Client,
    request: proto::ExportArticlesRequest,
) -> Result<Vec<proto::Article>, tonic::Status> {
    let mut stream = client.export_articles(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(response) = stream.next().await {
        out.push(response?.article.unwrap());
    }
    Ok(out)
}

/// ExportArticles streams FULL articles of a range in order, and resumes
/// strictly after the last article received.
async fn export_streams_full_articles_in_order_and_resumes_after_a_position(engine: Engine) {
    let mut server = start_or_skip!(engine);
    // More than one export chunk, with ties and pre-1970 dates.
    let articles: Vec<_> = (0..150)
        .map(|i| article(&format!("e{i:03}"), (i / 3) * 1_000 - 40_000))
        .collect();
    ingest(&mut server.client, articles).await;

    let all = export(&mut server.client, Default::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 150);
    assert_eq!(
        ids(&all),
        (0..150).map(|i| format!("e{i:03}")).collect::<Vec<_>>()
    );
    assert!(all
        .iter()
        .all(|a| a.body.starts_with("Body of") && !a.content_sha256.is_empty()));

    let newest = export(
        &mut server.client,
        proto::ExportArticlesRequest {
            order: SortOrder::NewestFirst as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&newest),
        ids(&all).into_iter().rev().collect::<Vec<_>>()
    );

    let ranged = proto::ExportArticlesRequest {
        start_time: Some(ts(-40_000, 0)),
        end_time: Some(ts(0, 0)),
        ..Default::default()
    };
    let in_range = export(&mut server.client, ranged.clone()).await.unwrap();
    assert_eq!(in_range.len(), 120);
    let cut = &in_range[70];
    let resumed = export(
        &mut server.client,
        proto::ExportArticlesRequest {
            resume_after: Some(proto::ExportPosition {
                published_at: cut.published_at,
                id: cut.id.clone(),
            }),
            ..ranged.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&resumed), ids(&in_range[71..]));

    let outside = proto::ExportArticlesRequest {
        resume_after: Some(proto::ExportPosition {
            published_at: Some(ts(5, 0)),
            id: "e149".into(),
        }),
        ..ranged.clone()
    };
    assert_eq!(
        export(&mut server.client, outside)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let malformed = proto::ExportArticlesRequest {
        resume_after: Some(proto::ExportPosition {
            published_at: Some(ts(-1, 0)),
            id: "bad id".into(),
        }),
        ..ranged
    };
    assert_eq!(
        export(&mut server.client, malformed)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let inverted = proto::ExportArticlesRequest {
        start_time: Some(ts(1, 0)),
        end_time: Some(ts(0, 0)),
        ..Default::default()
    };
    assert_eq!(
        export(&mut server.client, inverted)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

/// A reader that stops reading holds the export back: the server reads
/// ahead only a bounded window rather than the whole archive.
#[tokio::test]
async fn a_paused_export_reader_holds_the_server_back() {
    let mut server = TestServer::start().await;
    let big: Vec<_> = (0..40)
        .map(|i| proto::Article {
            body: "x".repeat(512 * 1024),
            ..article(&format!("b{i:02}"), i)
        })
        .collect();
    ingest(&mut server.client, big).await;
    let mut stream = server
        .client
        .export_articles(proto::ExportArticlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.article.unwrap().id, "b00");
    // While this reader pauses, an article written now at the end of the
    // range is still picked up later: the export cannot have read that far.
    // What it holds ahead of the reader is bounded by bytes, not by time:
    // the client's HTTP/2 window (2 MiB), hyper's send buffer (about
    // 400 KiB), the outbox (4 MiB) and one chunk in hand (4 MiB), about 21
    // of these 512 KiB articles, well short of the 40th.
    ingest(
        &mut server.client,
        vec![proto::Article {
            body: "late".into(),
            ..article("b99", 1_000)
        }],
    )
    .await;
    let mut rest = Vec::new();
    while let Some(response) = stream.next().await {
        rest.push(response.unwrap().article.unwrap().id);
    }
    assert_eq!(rest.len(), 40);
    assert_eq!(rest.last().unwrap(), "b99");
}

on_both_engines!(
    fixture_article_round_trips_byte_for_byte,
    ingest_answers_each_request_in_order_and_rejections_do_not_end_the_stream,
    update_moves_the_date_index_entry,
    list_orders_across_1970_in_both_directions,
    newest_first_walks_across_1970_match_oldest_first_reversed,
    one_day_ranges_in_large_pages_give_exactly_the_day,
    pages_never_skip_or_repeat_tied_timestamps_under_concurrent_ingest,
    page_tokens_that_are_garbage_tampered_or_for_another_query_are_invalid,
    basic_view_omits_the_body_and_full_view_includes_it,
    full_pages_of_large_articles_stay_under_4_mib,
    get_distinguishes_unknown_from_malformed_ids,
    concurrent_writers_on_the_same_ids_leave_exactly_one_index_entry_each,
    acknowledged_articles_and_page_tokens_survive_a_restart,
    export_streams_full_articles_in_order_and_resumes_after_a_position,
);
