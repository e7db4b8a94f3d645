//! The query RPCs over real TCP: filters, BatchGetArticles,
//! ListArticlesByUrl and CountArticles, each rule on its own, then a
//! model-based property test of all of them against an in-memory model.

mod common;

use std::collections::BTreeMap;

use article_archive::proto::{self, ArticleView, CountInterval, SortOrder, UrlMatch};
use common::*;
use proptest::prelude::*;
use tonic::Code;

const DAY: i64 = 86_400;

fn labelled(id: &str, seconds: i64, source: &str, section: &str, url: &str) -> proto::Article {
    proto::Article {
        source: source.into(),
        section: section.into(),
        url: url.into(),
        ..article(id, seconds)
    }
}

fn filter(sources: &[&str], sections: &[&str]) -> proto::ArticleFilter {
    proto::ArticleFilter {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        sections: sections.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ids(articles: &[proto::Article]) -> Vec<String> {
    articles.iter().map(|a| a.id.clone()).collect()
}

async fn list_filtered(
    client: &mut Client,
    filter: proto::ArticleFilter,
    page_size: i32,
    order: SortOrder,
) -> Vec<String> {
    ids(&list_all(
        client,
        proto::ListArticlesRequest {
            filter: Some(filter),
            page_size,
            order: order as i32,
            ..Default::default()
        },
    )
    .await)
}

async fn by_url(client: &mut Client, url: &str, how: UrlMatch, page_size: i32) -> Vec<String> {
    let mut request = proto::ListArticlesByUrlRequest {
        url: url.into(),
        r#match: how as i32,
        page_size,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = client
            .list_articles_by_url(request.clone())
            .await
            .unwrap()
            .into_inner();
        out.extend(ids(&page.articles));
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
}

async fn count(
    client: &mut Client,
    start: Option<i64>,
    end: Option<i64>,
    interval: CountInterval,
    filter: Option<proto::ArticleFilter>,
) -> (Vec<(i64, u64)>, u64) {
    let response = client
        .count_articles(proto::CountArticlesRequest {
            start_time: start.map(|s| ts(s, 0)),
            end_time: end.map(|s| ts(s, 0)),
            interval: interval as i32,
            filter,
        })
        .await
        .unwrap()
        .into_inner();
    (
        response
            .buckets
            .iter()
            .map(|b| (b.start_time.unwrap().seconds, b.count))
            .collect(),
        response.total,
    )
}

/// Filters match sources case-insensitively and the rest exactly, values
/// within a field are alternatives and fields must all match, paging works
/// across a filtered walk in both orders, and a token is bound to its
/// filter; too many or too long values are refused.
async fn filters_select_by_source_and_section_and_bind_their_tokens(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let client = &mut server.client;
    let mut articles = Vec::new();
    for i in 0..60 {
        let source = ["Example.COM", "example.org", "other.net"][i % 3];
        let section = ["World", "Sport"][i % 2];
        articles.push(labelled(
            &format!("f{i:02}"),
            i as i64 * DAY - 30 * DAY,
            source,
            section,
            "",
        ));
    }
    ingest(client, articles).await;

    let com = list_filtered(
        client,
        filter(&["example.com"], &[]),
        7,
        SortOrder::OldestFirst,
    )
    .await;
    assert_eq!(com.len(), 20);
    assert!(com
        .iter()
        .all(|id| id[1..].parse::<usize>().unwrap() % 3 == 0));
    let newest = list_filtered(
        client,
        filter(&["EXAMPLE.com"], &[]),
        3,
        SortOrder::NewestFirst,
    )
    .await;
    assert_eq!(newest, com.iter().rev().cloned().collect::<Vec<_>>());

    let both = list_filtered(
        client,
        filter(&["example.com", "other.net"], &["World"]),
        5,
        SortOrder::OldestFirst,
    )
    .await;
    let expected: Vec<String> = (0..60)
        .filter(|i| i % 3 != 1 && i % 2 == 0)
        .map(|i| format!("f{i:02}"))
        .collect();
    assert_eq!(both, expected);
    assert!(
        list_filtered(client, filter(&[], &["world"]), 50, SortOrder::OldestFirst)
            .await
            .is_empty(),
        "sections match exactly"
    );

    let first = client
        .list_articles(proto::ListArticlesRequest {
            filter: Some(filter(&["example.com"], &[])),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let misused = client
        .list_articles(proto::ListArticlesRequest {
            filter: Some(filter(&["example.org"], &[])),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        misused.code(),
        Code::InvalidArgument,
        "{}",
        misused.message()
    );

    let too_many = proto::ArticleFilter {
        tags: (0..33).map(|i| format!("t{i}")).collect(),
        ..Default::default()
    };
    let refused = client
        .list_articles(proto::ListArticlesRequest {
            filter: Some(too_many),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("filter.tags"),
        "{}",
        refused.message()
    );
    let too_long = filter(&[&"x".repeat(600)], &[]);
    let refused = client
        .count_articles(proto::CountArticlesRequest {
            interval: CountInterval::Year as i32,
            filter: Some(too_long),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    // Export takes the same filter.
    let mut stream = client
        .export_articles(proto::ExportArticlesRequest {
            filter: Some(filter(&["example.org"], &["Sport"])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(response) = tokio_stream::StreamExt::next(&mut stream).await {
        exported.push(response.unwrap().article.unwrap().id);
    }
    let expected: Vec<String> = (0..60)
        .filter(|i| i % 3 == 1 && i % 2 == 1)
        .map(|i| format!("f{i:02}"))
        .collect();
    assert_eq!(exported, expected);
}

/// BatchGetArticles answers in request order with duplicates, FULL unless
/// asked for BASIC, all or nothing (NOT_FOUND names the first 10 missing and
/// how many), at most 1000 ids, and at most 4 MiB.
async fn batch_get_is_ordered_all_or_nothing_and_bounded(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let client = &mut server.client;
    ingest(
        client,
        (0..5).map(|i| article(&format!("b{i}"), i)).collect(),
    )
    .await;
    let get = |ids: &[&str], view: ArticleView| proto::BatchGetArticlesRequest {
        ids: ids.iter().map(|s| s.to_string()).collect(),
        view: view as i32,
    };

    let got = client
        .batch_get_articles(get(&["b3", "b0", "b3"], ArticleView::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&got.articles), ["b3", "b0", "b3"]);
    assert_eq!(got.articles[0].body, "Body of b3", "FULL by default");
    let basic = client
        .batch_get_articles(get(&["b1"], ArticleView::Basic))
        .await
        .unwrap()
        .into_inner();
    assert!(basic.articles[0].body.is_empty());
    assert_eq!(basic.articles[0].title, "Title of b1");

    let mut asked: Vec<String> = (0..15).map(|i| format!("missing{i:02}")).collect();
    asked.insert(0, "b1".into());
    let missing = client
        .batch_get_articles(proto::BatchGetArticlesRequest {
            ids: asked,
            view: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let message = missing.message();
    assert!(message.starts_with("15 of the requested ids"), "{message}");
    assert!(
        message.contains("missing00") && message.contains("missing09"),
        "{message}"
    );
    assert!(
        !message.contains("missing10") && message.contains("and 5 more"),
        "{message}"
    );

    let too_many = client
        .batch_get_articles(proto::BatchGetArticlesRequest {
            ids: (0..1001).map(|i| format!("x{i}")).collect(),
            view: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    let malformed = client
        .batch_get_articles(get(&["b1", "not an id"], ArticleView::Basic))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("id 1"),
        "{}",
        malformed.message()
    );

    // Deleted counts as missing.
    client
        .delete_article(proto::DeleteArticleRequest {
            id: "b4".into(),
            reason: "gone".into(),
            allow_reingest: false,
        })
        .await
        .unwrap();
    let deleted = client
        .batch_get_articles(get(&["b4"], ArticleView::Basic))
        .await
        .unwrap_err();
    assert_eq!(deleted.code(), Code::NotFound);

    // Five articles of 1 MB are more than a response may hold.
    let big: Vec<proto::Article> = (0..5)
        .map(|i| proto::Article {
            body: format!("{i}{}", "y".repeat(1_000_000)),
            ..article(&format!("big{i}"), i)
        })
        .collect();
    ingest(client, big).await;
    let big_ids = ["big0", "big1", "big2", "big3", "big4"];
    let refused = client
        .batch_get_articles(get(&big_ids, ArticleView::Full))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("BASIC"), "{}", refused.message());
    let fits = client
        .batch_get_articles(get(&big_ids, ArticleView::Basic))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fits.articles.len(), 5);
}

/// ListArticlesByUrl matches the normalised url exactly, by prefix, by
/// host and by domain, pages with tokens bound to the query, and refuses
/// an empty or unparsable url and an unset match.
async fn urls_match_exactly_by_prefix_host_and_domain(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let client = &mut server.client;
    let urls = [
        ("u1", "https://example.com/world/a?utm_source=rss"),
        ("u2", "http://example.com/world/a"),
        ("u3", "https://EXAMPLE.com:443/worldwide#top"),
        ("u4", "https://www.example.com/world/a"),
        ("u5", "https://news.example.com/b"),
        ("u6", "https://notexample.com/world/a"),
        ("u7", "https://example.com/world/a"),
    ];
    ingest(
        client,
        urls.iter()
            .enumerate()
            .map(|(i, (id, url))| labelled(id, -(i as i64) * DAY, "s", "", url))
            .collect(),
    )
    .await;

    // Two articles share one url (explicit ids); ties go by date, then id.
    assert_eq!(
        by_url(
            client,
            "https://example.com/world/a#frag",
            UrlMatch::Exact,
            10
        )
        .await,
        ["u7", "u1"]
    );
    assert_eq!(
        by_url(client, "https://example.com/world", UrlMatch::Prefix, 1).await,
        ["u7", "u1", "u3"]
    );
    assert_eq!(
        by_url(client, "example.com", UrlMatch::Host, 2).await,
        ["u2", "u7", "u1", "u3"],
        "key order: path, then scheme (http before https), then date"
    );
    assert_eq!(
        by_url(client, "https://example.com/anything", UrlMatch::Domain, 3).await,
        ["u2", "u7", "u1", "u3", "u5", "u4"]
    );

    let first = client
        .list_articles_by_url(proto::ListArticlesByUrlRequest {
            url: "example.com".into(),
            r#match: UrlMatch::Host as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let misused = client
        .list_articles_by_url(proto::ListArticlesByUrlRequest {
            url: "example.com".into(),
            r#match: UrlMatch::Domain as i32,
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(misused.code(), Code::InvalidArgument);

    for (url, how) in [
        ("", UrlMatch::Exact),
        ("not a url", UrlMatch::Prefix),
        ("example.com/path", UrlMatch::Exact),
        ("https://example.com/", UrlMatch::Unspecified),
    ] {
        let refused = client
            .list_articles_by_url(proto::ListArticlesByUrlRequest {
                url: url.into(),
                r#match: how as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{url:?} {how:?}");
    }

    // An update that changes the url moves the article; a deletion
    // removes it.
    ingest(
        client,
        vec![labelled("u7", 0, "s", "", "https://example.org/moved")],
    )
    .await;
    assert_eq!(
        by_url(client, "example.org", UrlMatch::Domain, 10).await,
        ["u7"]
    );
    client
        .delete_article(proto::DeleteArticleRequest {
            id: "u1".into(),
            reason: "r".into(),
            allow_reingest: false,
        })
        .await
        .unwrap();
    assert_eq!(
        by_url(client, "https://example.com/world/a", UrlMatch::Exact, 10).await,
        Vec::<String>::new()
    );
}

/// CountArticles counts by day, month and year from the counters, cuts
/// partial buckets at the bounds exactly, applies a filter, follows
/// updates and deletions, survives a restart, and refuses an unset
/// interval or more than 100,000 buckets.
async fn counts_by_day_month_and_year(engine: Engine) {
    let mut server = start_or_skip!(engine);
    let y2021 = 1_609_459_200; // 2021-01-01
    let mut articles = vec![
        labelled("c1", y2021 + 3600, "a.com", "", ""),
        labelled("c2", y2021 + 7200, "b.com", "", ""),
        labelled("c3", y2021 + DAY, "a.com", "", ""),
        labelled("c4", y2021 + 40 * DAY, "a.com", "", ""),
        labelled("c5", -DAY / 2, "a.com", "", ""), // 1969-12-31
    ];
    articles.push(labelled("c6", y2021 + 400 * DAY, "b.com", "", "")); // 2022-02
    ingest(&mut server.client, articles).await;
    let client = &mut server.client;

    let (days, total) = count(client, None, None, CountInterval::Day, None).await;
    assert_eq!(total, 6);
    assert_eq!(
        days,
        [
            (-DAY, 1),
            (y2021, 2),
            (y2021 + DAY, 1),
            (y2021 + 40 * DAY, 1),
            (y2021 + 400 * DAY, 1)
        ]
    );
    let (months, _) = count(client, None, None, CountInterval::Month, None).await;
    assert_eq!(
        months,
        [
            (-31 * DAY, 1),
            (y2021, 3),
            (y2021 + 31 * DAY, 1),
            (y2021 + 396 * DAY, 1)
        ]
    );
    let (years, _) = count(client, None, None, CountInterval::Year, None).await;
    assert_eq!(years, [(-365 * DAY, 1), (y2021, 4), (y2021 + 365 * DAY, 1)]);

    // Bounds inside buckets: only what lies in [start, end).
    let (cut, total) = count(
        client,
        Some(y2021 + 5000),
        Some(y2021 + 40 * DAY + 1),
        CountInterval::Year,
        None,
    )
    .await;
    assert_eq!((cut, total), (vec![(y2021, 3)], 3));
    let (filtered, total) = count(
        client,
        None,
        None,
        CountInterval::Year,
        Some(filter(&["A.COM"], &[])),
    )
    .await;
    assert_eq!((filtered, total), (vec![(-365 * DAY, 1), (y2021, 3)], 4));

    // An update moving a date moves the count; a deletion removes it.
    ingest(
        client,
        vec![labelled("c4", y2021 + 400 * DAY, "a.com", "", "")],
    )
    .await;
    client
        .delete_article(proto::DeleteArticleRequest {
            id: "c5".into(),
            reason: "r".into(),
            allow_reingest: false,
        })
        .await
        .unwrap();
    let (years, total) = count(client, None, None, CountInterval::Year, None).await;
    assert_eq!(
        (years, total),
        (vec![(y2021, 3), (y2021 + 365 * DAY, 2)], 5)
    );

    for (request, field) in [
        (proto::CountArticlesRequest::default(), "interval"),
        (
            proto::CountArticlesRequest {
                start_time: Some(ts(-62_135_596_800, 0)),
                end_time: Some(ts(253_402_300_799, 0)),
                interval: CountInterval::Day as i32,
                filter: None,
            },
            "interval",
        ),
    ] {
        let refused = client.count_articles(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains(field), "{}", refused.message());
    }

    let mut server = server.restart(Default::default()).await;
    let (after, total) = count(&mut server.client, None, None, CountInterval::Year, None).await;
    assert_eq!(
        (after, total),
        (vec![(y2021, 3), (y2021 + 365 * DAY, 2)], 5)
    );
}

// ---- The model-based test ----

const SOURCES: [&str; 4] = ["a.com", "A.com", "b.org", ""];
const SECTIONS: [&str; 3] = ["World", "Sport", ""];
const URLS: [&str; 8] = [
    "",
    "https://a.com/x/1",
    "http://a.com/x/1",
    "https://a.com/x/2?utm_source=z",
    "https://www.a.com/x/1",
    "https://news.a.com/y",
    "https://b.org/x/1",
    "https://aa.com/x",
];
/// Days around 1970 and a few decades apart, with ties.
const TIMES: [i64; 6] = [-40 * 365 * DAY, -DAY - 1, -1, 0, DAY + 5, 30 * 365 * DAY];

#[derive(Debug, Clone)]
enum Op {
    Put {
        id: u8,
        time: usize,
        source: usize,
        section: usize,
        url: usize,
    },
    Delete {
        id: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..16, 0..TIMES.len(), 0..SOURCES.len(), 0..SECTIONS.len(), 0..URLS.len())
            .prop_map(|(id, time, source, section, url)| Op::Put { id, time, source, section, url }),
        1 => (0u8..16).prop_map(|id| Op::Delete { id }),
    ]
}

#[derive(Debug, Clone)]
enum Query {
    List {
        sources: Vec<usize>,
        sections: Vec<usize>,
        newest: bool,
        page: i32,
    },
    Url {
        url: usize,
        how: usize,
        page: i32,
    },
    Count {
        interval: usize,
        start: Option<usize>,
        end: Option<usize>,
        sources: Vec<usize>,
    },
}

fn query() -> impl Strategy<Value = Query> {
    let subset = |n: usize| proptest::collection::vec(0..n, 0..3);
    prop_oneof![
        (
            subset(SOURCES.len()),
            subset(SECTIONS.len()),
            any::<bool>(),
            1..5i32
        )
            .prop_map(|(sources, sections, newest, page)| Query::List {
                sources,
                sections,
                newest,
                page
            }),
        (1..URLS.len(), 0..4usize, 1..4i32).prop_map(|(url, how, page)| Query::Url {
            url,
            how,
            page
        }),
        (
            0..3usize,
            proptest::option::of(0..TIMES.len()),
            proptest::option::of(0..TIMES.len()),
            subset(SOURCES.len())
        )
            .prop_map(|(interval, start, end, sources)| Query::Count {
                interval,
                start,
                end,
                sources
            }),
    ]
}

/// The model: id → (published_at, source, section, url) of the current
/// version.
type Model = BTreeMap<String, (i64, String, String, String)>;

/// What the real normalisation gives, said the simple way for this
/// corpus: (host-reversed host, path, scheme).
fn url_parts(url: &str) -> Option<(String, String, String)> {
    if url.is_empty() {
        return None;
    }
    let (scheme, rest) = url.split_once("://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let path = path.replace("?utm_source=z", "");
    let reversed = host
        .to_ascii_lowercase()
        .split('.')
        .rev()
        .collect::<Vec<_>>()
        .join(",");
    Some((reversed, path, scheme.to_string()))
}

fn model_url_matches(stored: &str, asked: &str, how: usize) -> bool {
    let (Some(s), Some(a)) = (url_parts(stored), url_parts(asked)) else {
        return false;
    };
    match how {
        0 => s == a,
        1 => s.0 == a.0 && s.1.starts_with(&a.1) && s.2 == a.2,
        2 => s.0 == a.0,
        _ => s.0 == a.0 || s.0.starts_with(&format!("{},", a.0)),
    }
}

fn model_sort_key(model: &Model, id: &str) -> (String, String, String, i64, String) {
    let (at, _, _, url) = &model[id];
    let (host, path, scheme) = url_parts(url).unwrap();
    (
        format!("{host}){path}"),
        scheme,
        String::new(),
        *at,
        id.to_string(),
    )
}

async fn run_case(ops: Vec<Op>, queries: Vec<Query>) {
    let mut server = TestServer::start().await;
    let client = &mut server.client;
    let mut model = Model::new();
    let mut deleted = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            Op::Put {
                id,
                time,
                source,
                section,
                url,
            } => {
                let id = format!("m{id:02}");
                let acks = ingest(
                    client,
                    vec![labelled(
                        &id,
                        TIMES[time],
                        SOURCES[source],
                        SECTIONS[section],
                        URLS[url],
                    )],
                )
                .await;
                if deleted.contains(&id) {
                    assert_eq!(outcome(&acks[0]), proto::IngestOutcome::Rejected);
                } else {
                    model.insert(
                        id,
                        (
                            TIMES[time],
                            SOURCES[source].into(),
                            SECTIONS[section].into(),
                            URLS[url].into(),
                        ),
                    );
                }
            }
            Op::Delete { id } => {
                let id = format!("m{id:02}");
                let result = client
                    .delete_article(proto::DeleteArticleRequest {
                        id: id.clone(),
                        reason: "r".into(),
                        allow_reingest: false,
                    })
                    .await;
                assert_eq!(result.is_ok(), model.remove(&id).is_some());
                if result.is_ok() {
                    deleted.insert(id);
                }
            }
        }
    }
    for query in queries {
        match query {
            Query::List {
                sources,
                sections,
                newest,
                page,
            } => {
                let f = proto::ArticleFilter {
                    sources: sources.iter().map(|&i| SOURCES[i].to_string()).collect(),
                    sections: sections.iter().map(|&i| SECTIONS[i].to_string()).collect(),
                    ..Default::default()
                };
                let order = if newest {
                    SortOrder::NewestFirst
                } else {
                    SortOrder::OldestFirst
                };
                let got = list_filtered(client, f.clone(), page, order).await;
                let mut want: Vec<(i64, String)> = model
                    .iter()
                    .filter(|(_, (_, source, section, _))| {
                        (f.sources.is_empty()
                            || f.sources.iter().any(|s| s.eq_ignore_ascii_case(source)))
                            && (f.sections.is_empty() || f.sections.contains(section))
                    })
                    .map(|(id, (at, ..))| (*at, id.clone()))
                    .collect();
                want.sort();
                if newest {
                    want.reverse();
                }
                let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
                assert_eq!(got, want, "list {f:?} newest={newest}");
            }
            Query::Url { url, how, page } => {
                let kinds = [
                    UrlMatch::Exact,
                    UrlMatch::Prefix,
                    UrlMatch::Host,
                    UrlMatch::Domain,
                ];
                let got = by_url(client, URLS[url], kinds[how], page).await;
                let mut want: Vec<&String> = model
                    .iter()
                    .filter(|(_, (_, _, _, stored))| model_url_matches(stored, URLS[url], how))
                    .map(|(id, _)| id)
                    .collect();
                want.sort_by_key(|id| model_sort_key(&model, id));
                let want: Vec<String> = want.into_iter().cloned().collect();
                assert_eq!(got, want, "url {} {how}", URLS[url]);
            }
            Query::Count {
                interval,
                start,
                end,
                sources,
            } => {
                let interval_of = [
                    CountInterval::Day,
                    CountInterval::Month,
                    CountInterval::Year,
                ][interval];
                let (start, end) = (start.map(|i| TIMES[i]), end.map(|i| TIMES[i]));
                if matches!((start, end), (Some(s), Some(e)) if s > e) {
                    continue;
                }
                let f = (!sources.is_empty()).then(|| proto::ArticleFilter {
                    sources: sources.iter().map(|&i| SOURCES[i].to_string()).collect(),
                    ..Default::default()
                });
                let (got, total) = count(client, start, end, interval_of, f.clone()).await;
                let mut want: BTreeMap<i64, u64> = BTreeMap::new();
                for (at, source, ..) in model.values() {
                    let inside = start.is_none_or(|s| *at >= s) && end.is_none_or(|e| *at < e);
                    let matches = f
                        .as_ref()
                        .is_none_or(|f| f.sources.iter().any(|s| s.eq_ignore_ascii_case(source)));
                    if inside && matches {
                        *want.entry(bucket_start(*at, interval)).or_default() += 1;
                    }
                }
                let want: Vec<(i64, u64)> = want.into_iter().collect();
                assert_eq!(got, want, "count {interval_of:?} {start:?}..{end:?} {f:?}");
                assert_eq!(total, want.iter().map(|(_, c)| c).sum::<u64>());
            }
        }
    }
    // The archive's own check agrees with itself at the end.
    let report = server.store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// The start of the UTC day, month or year holding `at`, computed with
/// chrono-free arithmetic independent of the server's (via days).
fn bucket_start(at: i64, interval: usize) -> i64 {
    let day = at.div_euclid(DAY);
    // Civil date from days (the same algorithm every calendar library uses,
    // written out here so the test does not share the server's code).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let first_of = |y: i64, m: i64| {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468) * DAY
    };
    match interval {
        0 => day * DAY,
        1 => first_of(y, m),
        _ => {
            let _ = d;
            first_of(y, 1)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random ingests (new ids, updates that change date, labels and url),
    /// deletions, then random filtered lists, url matches and counts, each
    /// compared with what the model says.
    #[test]
    fn every_query_matches_an_in_memory_model(
        ops in proptest::collection::vec(op(), 1..40),
        queries in proptest::collection::vec(query(), 1..25),
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run_case(ops, queries));
    }
}

on_both_engines!(
    filters_select_by_source_and_section_and_bind_their_tokens,
    batch_get_is_ordered_all_or_nothing_and_bounded,
    urls_match_exactly_by_prefix_host_and_domain,
    counts_by_day_month_and_year,
);
