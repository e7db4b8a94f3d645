//! Section 6: the query RPCs on the growth archive at its largest size,
//! each next to its baseline in the same run: filtered pages against the
//! same unfiltered page, url matches, counts, and BatchGetArticles against
//! as many GetArticle calls.

use std::time::{Duration, Instant};

use article_archive::proto::{
    self, archive_service_client::ArchiveServiceClient, ArticleView, CountInterval, UrlMatch,
};
use tonic::transport::Channel;

use crate::{
    corpus::{self, article},
    workload::{id_of, ms, query_day, Latencies},
};

type Client = ArchiveServiceClient<Channel>;

fn at(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// Runs `call` `n` times in a row; latencies and mean articles answered.
async fn timed<F, Fut>(n: usize, mut call: F) -> (Latencies, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut samples = Vec::with_capacity(n);
    let mut articles = 0;
    let started = Instant::now();
    for q in 0..n {
        let t = Instant::now();
        articles += call(q).await;
        samples.push(t.elapsed());
    }
    (
        Latencies::new(samples, started.elapsed()),
        articles as f64 / n as f64,
    )
}

fn row(name: &str, (lat, per): &(Latencies, f64), baseline: Option<Duration>) -> String {
    format!(
        "{name:<64} {:>9} {:>9} {:>9.1} {:>7}",
        ms(lat.p50),
        ms(lat.p99),
        per,
        baseline.map_or("-".into(), |b| format!(
            "{:.2}",
            lat.p50.as_secs_f64() / b.as_secs_f64()
        )),
    )
}

pub const HEADER: &str =
    "query                                                               p50 ms    p99 ms  articles   ratio";

async fn page(client: &mut Client, q: usize, filter: Option<proto::ArticleFilter>) -> usize {
    client
        .list_articles(proto::ListArticlesRequest {
            start_time: Some(at(query_day(q))),
            page_size: 20,
            filter,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .articles
        .len()
}

async fn total(client: &mut Client, filter: Option<proto::ArticleFilter>) -> u64 {
    client
        .count_articles(proto::CountArticlesRequest {
            interval: CountInterval::Year as i32,
            filter,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .total
}

fn by_source(source: &str) -> Option<proto::ArticleFilter> {
    Some(proto::ArticleFilter {
        sources: vec![source.into()],
        ..Default::default()
    })
}

async fn urls(client: &mut Client, url: &str, how: UrlMatch) -> usize {
    client
        .list_articles_by_url(proto::ListArticlesByUrlRequest {
            url: url.into(),
            r#match: how as i32,
            page_size: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .articles
        .len()
}

/// The section's rows, for an archive of articles `0..size`.
pub async fn run(channel: &Channel, size: usize, queries: usize) -> Vec<String> {
    let mut client = ArchiveServiceClient::new(channel.clone());
    let (sources, sections, tags) = corpus::labels();
    let all = total(&mut client, None).await;

    // The source whose share is nearest 0.1 %, among the rarest.
    let mut rare = (String::new(), u64::MAX);
    for source in sources.iter().rev().take(20) {
        let count = total(&mut client, by_source(source)).await;
        let off = count.abs_diff(all / 1000);
        if off < rare.1.abs_diff(all / 1000) || rare.0.is_empty() {
            rare = (source.clone(), count);
        }
    }
    let (rare_source, rare_count) = rare;
    let mut rows = vec![format!(
        "archive of {all} articles; rare source {rare_source}: {rare_count} articles ({:.3} %)",
        rare_count as f64 * 100.0 / all as f64
    )];

    let c = &mut client;
    let unfiltered = timed(queries, |q| {
        let mut c = c.clone();
        async move { page(&mut c, q, None).await }
    })
    .await;
    let base = unfiltered.0.p50;
    rows.push(row(
        "page of 20 from a random date, unfiltered (baseline)",
        &unfiltered,
        None,
    ));
    let filtered = |filter: Option<proto::ArticleFilter>| {
        let c = c.clone();
        async move {
            timed(queries, |q| {
                let (mut c, filter) = (c.clone(), filter.clone());
                async move { page(&mut c, q, filter).await }
            })
            .await
        }
    };
    rows.push(row(
        "  same, source holding ~0.1 % (sources index)",
        &filtered(by_source(&rare_source)).await,
        Some(base),
    ));
    rows.push(row(
        "  same, the commonest section (sections index)",
        &filtered(Some(proto::ArticleFilter {
            sections: vec![sections[0].clone()],
            ..Default::default()
        }))
        .await,
        Some(base),
    ));
    rows.push(row(
        "  same, rare source AND commonest section (planned on source)",
        &filtered(Some(proto::ArticleFilter {
            sources: vec![rare_source.clone()],
            sections: vec![sections[0].clone()],
            ..Default::default()
        }))
        .await,
        Some(base),
    ));
    let mid_tag = tags[tags.len() / 4].clone();
    rows.push(row(
        &format!(
            "  same, one tag only (unindexed: scans, {} budget)",
            article_archive::store::FILTER_SCAN_BUDGET
        ),
        &filtered(Some(proto::ArticleFilter {
            tags: vec![mid_tag.clone()],
            ..Default::default()
        }))
        .await,
        Some(base),
    ));

    // Urls: articles spread over the archive, and the rare source's host.
    // Generating an article takes longer than some queries, so every url
    // and id is made before the clocks run.
    let pick = |q: usize| (q * 7_919 + 13) % size;
    let sample_urls: Vec<String> = (0..queries).map(|q| article(pick(q)).url).collect();
    rows.push(row(
        "url EXACT, one article's url",
        &timed(queries, |q| {
            let (mut c, url) = (c.clone(), sample_urls[q].clone());
            async move { urls(&mut c, &url, UrlMatch::Exact).await }
        })
        .await,
        Some(base),
    ));
    for (name, how) in [
        ("url HOST of the rare source, page of 20", UrlMatch::Host),
        (
            "url DOMAIN of the rare source, page of 20",
            UrlMatch::Domain,
        ),
    ] {
        let host = rare_source.clone();
        rows.push(row(
            name,
            &timed(queries, |_| {
                let (mut c, host) = (c.clone(), host.clone());
                async move { urls(&mut c, &host, how).await }
            })
            .await,
            Some(base),
        ));
    }
    rows.push(row(
        "url PREFIX source/section/year/ of an article, page of 20",
        &timed(queries, |q| {
            // https://source/section/year/…: keep the first three parts.
            let prefix: String = sample_urls[q].split_inclusive('/').take(5).collect();
            let mut c = c.clone();
            async move { urls(&mut c, &prefix, UrlMatch::Prefix).await }
        })
        .await,
        Some(base),
    ));

    // Counts over the whole archive.
    for (name, interval) in [
        ("count by year, everything (counters)", CountInterval::Year),
        (
            "count by month, everything (counters)",
            CountInterval::Month,
        ),
        ("count by day, everything (counters)", CountInterval::Day),
    ] {
        rows.push(row(
            name,
            &timed(20, |_| {
                let mut c = c.clone();
                async move {
                    c.count_articles(proto::CountArticlesRequest {
                        interval: interval as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .buckets
                    .len()
                }
            })
            .await,
            Some(base),
        ));
    }
    let count_filtered = |filter: proto::ArticleFilter, n: usize| {
        let c = c.clone();
        async move {
            timed(n, |_| {
                let (mut c, filter) = (c.clone(), filter.clone());
                async move {
                    c.count_articles(proto::CountArticlesRequest {
                        interval: CountInterval::Month as i32,
                        filter: Some(filter),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .buckets
                    .len()
                }
            })
            .await
        }
    };
    rows.push(row(
        "count by month, rare source (its index)",
        &count_filtered(by_source(&rare_source).unwrap(), 20).await,
        Some(base),
    ));
    rows.push(row(
        "count by month, one tag (unindexed: every date entry)",
        &count_filtered(
            proto::ArticleFilter {
                tags: vec![mid_tag],
                ..Default::default()
            },
            3,
        )
        .await,
        Some(base),
    ));

    // BatchGet of 100 ids against 100 GetArticle calls.
    let batches = queries.min(50);
    let id_lists: Vec<Vec<String>> = (0..batches)
        .map(|q| (0..100).map(|k| id_of(pick(q * 100 + k))).collect())
        .collect();
    let ids_of = |q: usize| id_lists[q].clone();
    let gets = timed(batches, |q| {
        let (mut c, ids) = (c.clone(), ids_of(q));
        async move {
            for id in &ids {
                c.get_article(proto::GetArticleRequest {
                    id: id.clone(),
                    revision: 0,
                })
                .await
                .unwrap();
            }
            ids.len()
        }
    })
    .await;
    rows.push(row("100 GetArticle calls in a row (baseline)", &gets, None));
    for (name, view) in [
        (
            "  BatchGetArticles of the same 100 ids, FULL",
            ArticleView::Full,
        ),
        (
            "  BatchGetArticles of the same 100 ids, BASIC",
            ArticleView::Basic,
        ),
    ] {
        rows.push(row(
            name,
            &timed(batches, |q| {
                let (mut c, ids) = (c.clone(), ids_of(q));
                async move {
                    c.batch_get_articles(proto::BatchGetArticlesRequest {
                        ids,
                        view: view as i32,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .articles
                    .len()
                }
            })
            .await,
            Some(gets.0.p50),
        ));
    }
    rows
}
