//! How fast the archive is, next to its own store in-process, tonic's floor, and
//! PostgreSQL.
//!
//! `cargo bench --bench archive [-- OPTIONS]` runs the real server binary on
//! temporary data directories, drives it through the generated client over
//! TCP, and prints tables in which every figure stands next to a baseline
//! measured in the same run on the same machine. First it prints what the
//! articles are and how they compress (`calibration.rs`) and the
//! measurement behind the store's compression choice (`compression.rs`), then:
//!
//! 1. ingest through one stream, 4 streams and the CLI, against the same
//!    articles through the store itself in this process (everything the
//!    server does but gRPC: validation, hashing, compression, group commit,
//!    log and index writes, flush and sync);
//! 2. GetArticle at concurrency 1, 16 and 64, against
//!    `grpc.health.v1.Health/Check` on the same server (one tonic RPC's floor);
//! 3. a full ListArticles walk (BASIC, 1000 a page; FULL, 100 a page) against
//!    the store's own FULL pages in this process, ExportArticles, the change
//!    feed from 0 (WatchChanges, FULL and BASIC) against ExportArticles, and
//!    one-day range latency;
//! 4. growth: ingest rate, Get rate and p99, one-day and 20-article List
//!    latency, peak resident memory of the server process and bytes on disk
//!    per article at each size (10k and 100k; 1M with --large), each row
//!    followed by PostgreSQL's figures on the same articles and the ratios;
//!    then (4b), at each size, the time a new server process takes to open
//!    the archive after a clean stop (SIGTERM) and after `kill -9` (when it
//!    checks the whole archive first), against the same on an empty data
//!    directory; the growth goes on in the server started last; and (4c),
//!    at the largest size, the query RPCs (`queries.rs`): pages filtered by
//!    an indexed source of about 0.1 % and by other fields against the same
//!    unfiltered page, url matches, counts from the counters and from
//!    scans, and BatchGetArticles against GetArticle; and (4d), at each
//!    size, full walks (BASIC and FULL), Export and the change feed from 0
//!    on the growth server, next to PostgreSQL's keyset walks on its twin;
//! 5. PostgreSQL on the articles of sections 1-3: the same batches, lookups,
//!    keyset range queries and full walks without and with bodies;
//! 6. with `--engine postgres` only: replicas (below).
//!
//! Articles are generated on the fly from their number (`corpus.rs`): no
//! file outside the repository is read, and a million articles are never
//! held in memory. Range queries ask for days drawn like publication dates.
//!
//! Layout: `main.rs` the options and sections, `corpus.rs` the text model,
//! `calibration.rs` its compression figures, `compression.rs` the
//! measurement behind the store's compression choice, `workload.rs` ids, sizes,
//! latencies and the server process, `postgres.rs` the PostgreSQL twin.
//!
//! Options (anything else is refused, with the list): `--articles N`
//! (sections 1-3 and 5, default 20000), `--large` (growth up to 1,000,000),
//! `--growth N,N,...`, `--seconds S` (each latency run, default 3),
//! `--no-postgres`, `--engine sled|postgres` (below), `--corpus-only`
//! (print the calibration and the compression table, and stop; exit 1 when
//! the corpus is outside its bands), `--interface-cost` (the same reads
//! straight on the sled engine and through `Store`, `interface.rs`, and
//! stop), `--write-corpus N` (the articles as JSON Lines on standard
//! output), `--cache-mb N` (the sled cache of every store the benchmark
//! opens, passed to the servers as `serve --cache-mb N`; default: the
//! server's; sled only), `--help`. Of `--large` and `--growth`, the last
//! given wins. `--postgres-up-to N` and `--walks-up-to N` leave out
//! PostgreSQL's twin and the 4d walks above growth size N (for a 10M run:
//! the twin's disk, the walks' time).
//!
//! `--engine postgres` runs every archive server of the benchmark on
//! PostgreSQL (`serve --store postgres://...`) instead of a data directory:
//! the benchmark's own cluster (the one of the twin, `postgres.rs`) starts
//! first, and each server gets a new database of it, one for each data
//! directory the sled run would use (named after it: `svc1`, `svc4`, `cli`,
//! `growth`). Every figure is measured as on sled and still printed next to
//! plain PostgreSQL's, except what only means something on sled, which is
//! skipped with a note: the in-process store baselines (they open a `Store`
//! on a data directory; their ratio columns stay empty), 4b (opening after a
//! clean stop, the check after `kill -9`) and `--cache-mb`. The archive's
//! disk is `pg_database_size` of its database (catalogs included, WAL not)
//! over the articles; its memory is the server process's only (PostgreSQL's
//! is not included). Then section 6: 1, 2 and 3 servers ("replicas") on one
//! fresh database each time, the `--articles` articles ingested split evenly
//! across them (4 streams a server, all at once), GetArticle at concurrency
//! 64 spread evenly across them, one-day List p50, each against the one
//! replica's figure, the transactions that wrote during the ingest (the
//! writers' batches), and how the machine's CPU was split during the
//! ingest between the server processes, PostgreSQL's (every process of the
//! `postgres` user; of it, the backends connected to the database, and the
//! busiest single process against one core) and the benchmark's client.
//! Section 5 on postgres also measures plain PostgreSQL's Get with the
//! statement prepared on every call, as the engine's reads do. Warnings the
//! servers log and the cluster log's lines at WARNING and above are
//! printed, on either engine.

mod calibration;
mod compression;
mod corpus;
mod interface;
mod postgres;
mod queries;
mod workload;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use article_archive::{
    article::Article,
    proto::{self, archive_service_client::ArchiveServiceClient, ArticleView, IngestOutcome},
    store::{BatchLimits, DateRange, Order, PageRequest, Position},
    Store, StoreConfig,
};
use corpus::article;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use workload::*;

/// Where the archive servers keep the archive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// A data directory each (`serve --data-dir`).
    Sled,
    /// A database each of the benchmark's PostgreSQL cluster (`serve
    /// --store`).
    Postgres,
}

struct Options {
    engine: Engine,
    articles: usize,
    growth: Vec<usize>,
    seconds: f64,
    postgres: bool,
    corpus_only: bool,
    interface_cost: bool,
    write_corpus: Option<usize>,
    /// `serve --cache-mb` for every server; `None`: the server's default.
    cache_mb: Option<u64>,
    /// Growth sizes above this get no PostgreSQL twin (its disk).
    postgres_up_to: usize,
    /// Growth sizes above this get no 4d walks (their time).
    walks_up_to: usize,
}

impl Options {
    /// Arguments every server gets (the sled cache only on sled).
    fn server_args(&self) -> Vec<String> {
        match self.engine {
            Engine::Sled => self
                .cache_mb
                .map(|mb| vec!["--cache-mb".to_string(), mb.to_string()])
                .unwrap_or_default(),
            Engine::Postgres => Vec::new(),
        }
    }
}

const USAGE: &str = "accepted options:
  --engine E        where the archive servers keep the archive: sled (a data directory
                    each, the default) or postgres (a new database each of the
                    benchmark's PostgreSQL cluster, serve --store; adds section 6,
                    1-3 replicas on one database)
  --articles N      articles for sections 1-3 and 5 (default 20000)
  --growth N,N,...  sizes of the growth section (default 10000,100000)
  --large           growth to 10000,100000,1000000
  --seconds S       length of each latency run (default 3)
  --no-postgres     skip PostgreSQL
  --corpus-only     print the corpus calibration and the compression table, and stop
  --interface-cost  time the same reads straight on the sled engine and through Store, and stop
  --write-corpus N  write articles 0..N as JSON Lines (the ingest command's input) to
                    standard output and stop: for A/B runs of whole binaries
  --cache-mb N      sled cache of every store, in MiB (default: the server's)
  --postgres-up-to N  PostgreSQL's twin only at growth sizes up to N (a 10M twin
                    takes some 41 GB of disk)
  --walks-up-to N   the full walks and feeds (4d) only at growth sizes up to N (at
                    10M they take about half an hour)
  --help            this list";

/// The command line; an option we do not know is an error, so a typo never
/// silently runs the defaults.
fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        engine: Engine::Sled,
        articles: 20_000,
        growth: vec![10_000, 100_000],
        seconds: 3.0,
        postgres: true,
        corpus_only: false,
        interface_cost: false,
        write_corpus: None,
        cache_mb: None,
        postgres_up_to: usize::MAX,
        walks_up_to: usize::MAX,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} takes a value"));
        let number = |text: String| {
            text.parse::<usize>()
                .map_err(|_| format!("{arg}: {text:?} is not a whole number"))
        };
        match arg.as_str() {
            "--engine" => {
                options.engine = match value()?.as_str() {
                    "sled" => Engine::Sled,
                    "postgres" => Engine::Postgres,
                    other => {
                        return Err(format!("--engine: {other:?} is neither sled nor postgres"))
                    }
                }
            }
            "--articles" => options.articles = number(value()?)?,
            "--large" => options.growth = vec![10_000, 100_000, 1_000_000],
            "--growth" => {
                options.growth = value()?
                    .split(',')
                    .map(|n| number(n.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => {
                let text = value()?;
                options.seconds = text
                    .parse()
                    .map_err(|_| format!("--seconds: {text:?} is not a number"))?
            }
            "--no-postgres" => options.postgres = false,
            "--corpus-only" => options.corpus_only = true,
            "--interface-cost" => options.interface_cost = true,
            "--write-corpus" => options.write_corpus = Some(number(value()?)?),
            "--cache-mb" => {
                let mb = number(value()?)?;
                if mb == 0 {
                    return Err("--cache-mb must be at least 1".into());
                }
                options.cache_mb = Some(mb as u64);
            }
            "--postgres-up-to" => options.postgres_up_to = number(value()?)?,
            "--walks-up-to" => options.walks_up_to = number(value()?)?,
            "--help" => return Err(String::new()),
            // cargo bench passes --bench to every harness = false target.
            "--bench" => {}
            _ => return Err(format!("unknown option {arg:?}")),
        }
    }
    if options.articles == 0 || options.growth.is_empty() || options.growth.contains(&0) {
        return Err("--articles and --growth sizes must be at least 1".into());
    }
    if options.engine == Engine::Postgres && !options.postgres {
        return Err(
            "--engine postgres keeps the archive in the benchmark's PostgreSQL cluster: \
             it cannot go with --no-postgres"
                .into(),
        );
    }
    if !options.growth.is_sorted() {
        return Err("--growth sizes must be in increasing order".into());
    }
    Ok(options)
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

/// The ceiling for ingest: the same articles through the store itself, in
/// this process (validation, hashing, compression, the writer's group
/// commit, log and index writes, flush and sync), with no gRPC, no client
/// and no second process. Returns the time and the store, closed and
/// opened again for the walk baseline.
fn store_ingest(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    input: &[proto::Article],
    cache_mb: Option<u64>,
) -> (Duration, Store) {
    let mut config = StoreConfig::new(dir);
    config.min_free_bytes = 0;
    if let Some(mb) = cache_mb {
        config.cache_capacity_bytes = mb * 1024 * 1024;
    }
    let store = Store::open(&config).unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let mut pending = std::collections::VecDeque::new();
        for raw in input {
            let article = Article::from_proto(raw.clone()).unwrap();
            pending.push_back(store.submit(article).await.unwrap());
            // As many in flight as one ingest stream allows.
            if pending.len() >= 1024 {
                pending.pop_front().unwrap().outcome().await.unwrap();
            }
        }
        for write in pending {
            write.outcome().await.unwrap();
        }
    });
    (started.elapsed(), store)
}

/// The ceiling for a full walk: the store's own FULL pages of 100, in this
/// process, with no encoding or transport.
fn store_walk(runtime: &tokio::runtime::Runtime, store: &Store) -> (usize, Duration) {
    let started = Instant::now();
    let mut count = 0;
    let mut after = None;
    loop {
        let page = runtime
            .block_on(store.page(PageRequest {
                range: DateRange::default(),
                order: Order::OldestFirst,
                after: after.clone(),
                limit: 100,
                with_body: true,
                byte_budget: usize::MAX,
                filter: Default::default(),
            }))
            .unwrap();
        count += page.articles.len();
        after = page.articles.last().map(|a| Position {
            published_at: a.content.published_at,
            id: a.id.clone(),
        });
        std::hint::black_box(&page.articles);
        if !page.more {
            return (count, started.elapsed());
        }
    }
}

/// Streams articles `range` through `streams` concurrent IngestArticles
/// calls on each of `channels` (article `i` to stream `i % (streams ×
/// servers)`, stream `k` to server `k % servers`: an even split) and
/// returns the time to the last acknowledgement and the raw bytes sent
/// (see `raw_bytes`). Articles are generated in chunks of 100,000 before
/// the clock runs for them, as PostgreSQL's batches are generated before
/// its clock runs, so neither side pays for the text model; a chunk's
/// streams are drained before the next is generated.
async fn ingest(
    channels: &[Channel],
    range: std::ops::Range<usize>,
    streams: usize,
) -> (Duration, usize) {
    const CHUNK: usize = 100_000;
    let mut elapsed = Duration::ZERO;
    let mut raw = 0;
    let mut from = range.start;
    while from < range.end {
        let to = (from + CHUNK).min(range.end);
        let (per_stream, chunk_raw) = ingest_requests(from..to, streams * channels.len());
        raw += chunk_raw;
        elapsed += send_streams(channels, per_stream).await;
        from = to;
    }
    (elapsed, raw)
}

/// The requests of articles `range` for `streams` streams (article `i` to
/// stream `i % streams`), and their raw bytes.
fn ingest_requests(
    range: std::ops::Range<usize>,
    streams: usize,
) -> (Vec<Vec<proto::IngestArticlesRequest>>, usize) {
    let mut raw = 0;
    let mut per_stream: Vec<Vec<proto::IngestArticlesRequest>> = vec![Vec::new(); streams];
    for i in range {
        let article = article(i);
        raw += raw_bytes(&article);
        per_stream[i % streams].push(proto::IngestArticlesRequest {
            restore_revision: false,
            article: Some(article),
        });
    }
    (per_stream, raw)
}

/// Sends each stream's requests through its own IngestArticles call,
/// stream `k` to `channels[k % channels.len()]`, all at once; the time
/// until every article is acknowledged (none rejected).
async fn send_streams(
    channels: &[Channel],
    per_stream: Vec<Vec<proto::IngestArticlesRequest>>,
) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (k, requests) in per_stream.into_iter().enumerate() {
        let mut client = ArchiveServiceClient::new(channels[k % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let expected = requests.len();
            let mut responses = client
                .ingest_articles(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let mut acknowledged = 0;
            while let Some(response) = responses.next().await {
                let response = response.unwrap();
                assert_ne!(
                    response.outcome,
                    IngestOutcome::Rejected as i32,
                    "{response:?}"
                );
                acknowledged += 1;
            }
            assert_eq!(acknowledged, expected);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// `concurrency` workers call `call` (with the worker's number and a
/// pseudo-random number) back to back for `seconds`.
async fn closed_loop<F, Fut>(concurrency: usize, seconds: f64, call: F) -> Latencies
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let call = Arc::clone(&call);
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = w as u64 * 7_919;
            while Instant::now() < deadline {
                n = n.wrapping_add(0x9E37_79B9);
                let t = Instant::now();
                call(w, n).await;
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.unwrap());
    }
    Latencies::new(samples, started.elapsed())
}

/// GetArticle of random ids of `ids` at `concurrency`, worker `w` on
/// server `w % channels.len()`.
async fn get_load(
    channels: &[Channel],
    ids: &Arc<Vec<String>>,
    concurrency: usize,
    seconds: f64,
) -> Latencies {
    let clients: Vec<_> = channels
        .iter()
        .map(|c| ArchiveServiceClient::new(c.clone()))
        .collect();
    let ids = Arc::clone(ids);
    closed_loop(concurrency, seconds, move |w, n| {
        let mut client = clients[w % clients.len()].clone();
        let id = ids[(n as usize) % ids.len()].clone();
        async move {
            client
                .get_article(proto::GetArticleRequest { id, revision: 0 })
                .await
                .unwrap();
        }
    })
    .await
}

async fn health_load(channel: &Channel, concurrency: usize, seconds: f64) -> Latencies {
    let client = HealthClient::new(channel.clone());
    closed_loop(concurrency, seconds, move |_, _| {
        let mut client = client.clone();
        async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
        }
    })
    .await
}

/// Walks the whole archive through ListArticles pages.
async fn list_walk(channel: &Channel, view: ArticleView, page_size: i32) -> (usize, Duration) {
    let mut client = ArchiveServiceClient::new(channel.clone());
    let mut request = proto::ListArticlesRequest {
        page_size,
        view: view as i32,
        ..Default::default()
    };
    let started = Instant::now();
    let mut count = 0;
    loop {
        let page = client
            .list_articles(request.clone())
            .await
            .unwrap()
            .into_inner();
        count += page.articles.len();
        if page.next_page_token.is_empty() {
            return (count, started.elapsed());
        }
        request.page_token = page.next_page_token;
    }
}

const WALK_HEADER: &str =
    " articles system       BASIC walk   FULL walk      Export   feed FULL  feed BASIC";

/// The growth server's full walks (BASIC, FULL), Export and the feed from 0
/// (FULL, BASIC), in articles/s; each must see every one of `size` articles.
async fn walks_and_feed(channel: &Channel, size: usize) -> [Option<f64>; 5] {
    let rate = |(count, elapsed): (usize, Duration)| {
        assert_eq!(count, size, "a full read sees every article");
        Some(count as f64 / elapsed.as_secs_f64())
    };
    [
        rate(list_walk(channel, ArticleView::Basic, 1000).await),
        rate(list_walk(channel, ArticleView::Full, 100).await),
        rate(export_stream(channel).await),
        rate(feed_stream(channel, ArticleView::Full).await),
        rate(feed_stream(channel, ArticleView::Basic).await),
    ]
}

fn walk_row(size: usize, system: &str, figures: &[Option<f64>]) -> String {
    let mut row = format!("{size:>9} {system:<12}");
    for figure in figures {
        row.push_str(&match figure {
            Some(value) if *value < 10.0 => format!(" {value:>11.2}"),
            Some(value) => format!(" {value:>11.0}"),
            None => format!(" {:>11}", "-"),
        });
    }
    row
}

/// Streams the whole archive through ExportArticles (current versions,
/// FULL): the reference for the change feed.
async fn export_stream(channel: &Channel) -> (usize, Duration) {
    let mut client = ArchiveServiceClient::new(channel.clone());
    let started = Instant::now();
    let mut stream = client
        .export_articles(proto::ExportArticlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(response) = stream.next().await {
        count += usize::from(response.unwrap().article.is_some());
    }
    (count, started.elapsed())
}

/// Reads the change feed from the start to its newest change (no follow) in
/// `view`.
async fn feed_stream(channel: &Channel, view: ArticleView) -> (usize, Duration) {
    let mut client = ArchiveServiceClient::new(channel.clone());
    let started = Instant::now();
    let mut stream = client
        .watch_changes(proto::WatchChangesRequest {
            after_sequence: 0,
            follow: false,
            view: view as i32,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(change) = stream.next().await {
        change.unwrap();
        count += 1;
    }
    (count, started.elapsed())
}

/// One-day range queries (BASIC, up to 1000 a page): latency and mean
/// articles per day asked.
async fn one_day_lists(channels: &[Channel], queries: usize) -> (Latencies, f64) {
    range_lists(channels, queries, Some(86_400), 1000).await
}

/// Pages of at most `page_size` articles (BASIC) starting at the days of
/// `query_day`, `span` seconds long (unbounded when `None`), one after
/// another, query `q` to server `q % channels.len()`: latency and mean
/// articles per page.
async fn range_lists(
    channels: &[Channel],
    queries: usize,
    span: Option<i64>,
    page_size: i32,
) -> (Latencies, f64) {
    let clients: Vec<_> = channels
        .iter()
        .map(|c| ArchiveServiceClient::new(c.clone()))
        .collect();
    let mut samples = Vec::with_capacity(queries);
    let mut articles = 0;
    let started = Instant::now();
    for q in 0..queries {
        let day = query_day(q);
        let at = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
        let request = proto::ListArticlesRequest {
            start_time: Some(at(day)),
            end_time: span.map(|span| at(day + span)),
            page_size,
            ..Default::default()
        };
        let mut client = clients[q % clients.len()].clone();
        let t = Instant::now();
        let page = client.list_articles(request).await.unwrap().into_inner();
        samples.push(t.elapsed());
        articles += page.articles.len();
    }
    (
        Latencies::new(samples, started.elapsed()),
        articles as f64 / queries as f64,
    )
}

/// Loads articles `range` into PostgreSQL in the writer's batch size. Each
/// batch and its ids are generated before its clock starts; returns the
/// time spent in COPY.
fn postgres_load(
    runtime: &tokio::runtime::Runtime,
    pg: &postgres::Postgres,
    range: std::ops::Range<usize>,
) -> Duration {
    let batch = BatchLimits::default().max_articles;
    let mut elapsed = Duration::ZERO;
    let mut start = range.start;
    while start < range.end {
        let end = (start + batch).min(range.end);
        let articles: Vec<proto::Article> = (start..end).map(article).collect();
        let ids: Vec<String> = articles.iter().map(id_for).collect();
        elapsed += runtime.block_on(pg.load_batch(&ids, &articles));
        start = end;
    }
    elapsed
}

/// What one system measured at one growth size.
struct Growth {
    /// Articles a second over the articles added for this size.
    ingest_rate: f64,
    /// Whole articles by id at concurrency 16.
    get: Latencies,
    /// Mean articles found by a one-day query.
    per_day: f64,
    /// One-day ranges, up to 1000 a page.
    day: Latencies,
    /// 20-article pages from a day on: the same work at every size.
    page: Latencies,
    /// Peak and current resident bytes, where the system is one process.
    memory: Option<(u64, u64)>,
    /// Bytes on disk for everything stored.
    disk: u64,
}

impl Growth {
    fn row(&self, size: usize, system: &str, raw_total: usize) -> String {
        let mib = |bytes: u64| format!("{:.0}", bytes as f64 / 1048576.0);
        let (peak, current) = self
            .memory
            .map_or(("-".into(), "-".into()), |(p, c)| (mib(p), mib(c)));
        format!(
            "{size:>9} {system:<11} {:>10.0} {:>9.0} {:>10} {:>7.1} {:>10} {:>10} {:>11} {:>8} {:>7} {:>10.0} {:>8.2}",
            self.ingest_rate,
            self.get.rate(),
            ms(self.get.p99),
            self.per_day,
            ms(self.day.p50),
            ms(self.day.p99),
            ms(self.page.p50),
            peak,
            current,
            self.disk as f64 / size as f64,
            self.disk as f64 / raw_total as f64,
        )
    }

    /// archive / PostgreSQL for each figure both have.
    fn ratio_row(size: usize, ours: &Self, theirs: &Self) -> String {
        let latency = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        format!(
            "{size:>9} {:<11} {:>10.2} {:>9.2} {:>10.2} {:>7} {:>10.2} {:>10.2} {:>11.2} {:>8} {:>7} {:>10.2} {:>8}",
            "archive/PG",
            ours.ingest_rate / theirs.ingest_rate,
            ours.get.rate() / theirs.get.rate(),
            latency(ours.get.p99, theirs.get.p99),
            "",
            latency(ours.day.p50, theirs.day.p50),
            latency(ours.day.p99, theirs.day.p99),
            latency(ours.page.p50, theirs.page.p50),
            "",
            "",
            ours.disk as f64 / theirs.disk as f64,
            "",
        )
    }
}

const OPEN_HEADER: &str =
    "  articles  clean stop: open s  RSS MiB  kill -9: open s  of which check s  check records  problems  get req/s  get p99 ms  vs growth row";

/// A row of 4b: the open after a clean stop (its time, and the server's
/// resident bytes once open: what the archive itself costs in memory,
/// without the load's working set), and `checked`, the server started
/// after a kill; `gets`: the growth row's Get and the one on `checked`.
fn open_row(
    size: &str,
    (clean_open, clean_rss): (Duration, u64),
    checked: &ServerProcess,
    gets: Option<(&Latencies, &Latencies)>,
) -> String {
    let check = checked.startup_check();
    format!(
        "{size:>10} {:>19.3} {:>8} {:>16.3} {:>17} {:>14} {:>9} {:>10} {:>11} {:>13}",
        clean_open.as_secs_f64(),
        clean_rss / (1024 * 1024),
        checked.startup.as_secs_f64(),
        check.map_or("-".into(), |(d, _, _)| format!("{:.3}", d.as_secs_f64())),
        check.map_or("-".into(), |(_, records, _)| records.to_string()),
        check.map_or("-".into(), |(_, _, problems)| problems.to_string()),
        gets.map_or("-".into(), |(_, again)| format!("{:.0}", again.rate())),
        gets.map_or("-".into(), |(_, again)| ms(again.p99)),
        gets.map_or("-".into(), |(row, again)| format!(
            "{:.2}",
            again.rate() / row.rate()
        )),
    )
}

const GROWTH_HEADER: &str = " articles system      ingest a/s get req/s get p99 ms   a/day day p50 ms day p99 ms 20-page p50 peak MiB RSS MiB disk B/art disk/raw";

/// A section-5 row: PostgreSQL's figure, the archive's, archive/PostgreSQL.
fn twin_row(name: &str, theirs: f64, ours: f64, better: &str) -> String {
    format!(
        "{name:<54} {theirs:>12.1} {ours:>12.1} {:>10.2}   {better}",
        ours / theirs
    )
}

fn twin_latency_row(name: &str, theirs: Duration, ours: Duration) -> String {
    format!(
        "{name:<54} {:>12} {:>12} {:>10.2}   lower is better",
        ms(theirs),
        ms(ours),
        ours.as_secs_f64() / theirs.as_secs_f64()
    )
}

fn twin_header(ours: &str) -> String {
    format!(
        "{:<54} {:>12} {:>12} {:>10}",
        "workload", "PostgreSQL", ours, "archive/PG"
    )
}

fn print_rows(title: &str, header: &str, rows: &[String]) {
    println!("\n{title}\n{header}");
    for row in rows {
        println!("{row}");
    }
}

fn rate_row(
    name: &str,
    n: usize,
    bytes: usize,
    elapsed: Duration,
    baseline: Option<f64>,
) -> String {
    let rate = n as f64 / elapsed.as_secs_f64();
    format!(
        "{name:<46} {n:>9} {:>8.2} {rate:>11.0} {:>8.1} {:>7}",
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        baseline.map_or("-".into(), |b| format!("{:.2}", rate / b)),
    )
}

const RATE_HEADER: &str =
    "workload                                        articles  seconds  articles/s     MB/s   ratio";

/// Where the benchmark's archive servers keep their data: a data directory
/// each (sled), or a database each of the benchmark's PostgreSQL cluster,
/// named after the data directory the sled run would use.
struct Stores<'a> {
    runtime: &'a tokio::runtime::Runtime,
    /// The cluster, with `--engine postgres`.
    pg: Option<&'a postgres::Postgres>,
    /// Arguments every server gets.
    extra: Vec<String>,
}

impl Stores<'_> {
    fn database(dir: &Path) -> String {
        dir.file_name().unwrap().to_str().unwrap().to_string()
    }

    /// Starts a server on `dir`'s data directory or database (created the
    /// first time).
    fn start(&self, dir: &Path) -> ServerProcess {
        match self.pg {
            None => ServerProcess::start(
                &["--data-dir".to_string(), dir.display().to_string()],
                &self.extra,
            ),
            Some(pg) => {
                let db = Self::database(dir);
                self.runtime.block_on(pg.create_database(&db));
                ServerProcess::start(&["--store".to_string(), pg.url(&db)], &self.extra)
            }
        }
    }

    /// Bytes of `dir`'s archive: the data directory's allocated blocks, or
    /// `pg_database_size` of its database.
    fn disk(&self, dir: &Path) -> u64 {
        match self.pg {
            None => disk_usage(dir),
            Some(pg) => self
                .runtime
                .block_on(pg.database_size(&Self::database(dir))),
        }
    }
}

/// CPU clock ticks used so far, for the split of section 6.
struct CpuSample {
    /// The archive server processes.
    servers: u64,
    /// Every process of the `postgres` user, and the children they waited
    /// for (backends that ended).
    postgres_user: u64,
    /// The same of the benchmark's cluster only: its postmaster and its
    /// children.
    cluster: u64,
    /// This process: the benchmark's client.
    client: u64,
    /// The whole machine: (busy, iowait, idle), all CPUs.
    machine: (u64, u64, u64),
    /// Each process of the cluster: its own ticks and its title (`postgres:
    /// USER DATABASE HOST(PORT) STATE` for a backend).
    processes: std::collections::HashMap<u32, (u64, String)>,
}

impl CpuSample {
    fn take(pg: &postgres::Postgres, servers: &[ServerProcess]) -> Self {
        use std::os::unix::fs::MetadataExt;
        let own = |pid: u32| process_ticks(pid).map_or(0, |(_, ticks, _)| ticks);
        let postmaster = pg.postmaster_pid().unwrap_or(0);
        let uid = std::fs::metadata(format!("/proc/{postmaster}")).map_or(u32::MAX, |m| m.uid());
        let (mut postgres_user, mut cluster) = (0, 0);
        let mut processes = std::collections::HashMap::new();
        for pid in processes_of(uid) {
            if let Some((parent, ticks, waited)) = process_ticks(pid) {
                postgres_user += ticks + waited;
                if pid == postmaster || parent == postmaster {
                    cluster += ticks + waited;
                    let title = std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|t| String::from_utf8_lossy(&t).replace('\0', " "))
                        .unwrap_or_default();
                    processes.insert(pid, (ticks, title.trim().to_string()));
                }
            }
        }
        Self {
            servers: servers.iter().map(|s| own(s.child.id())).sum(),
            postgres_user,
            cluster,
            client: own(std::process::id()),
            machine: machine_ticks(),
            processes,
        }
    }

    /// Since `before`: the ticks of the cluster's backends connected to
    /// `database`, and the busiest single process of the cluster (its
    /// ticks and what it is).
    fn processes_since(&self, before: &Self, database: &str) -> (u64, (u64, String)) {
        let mut backends = 0;
        let mut busiest = (0, String::new());
        for (pid, (ticks, title)) in &self.processes {
            let used = ticks - before.processes.get(pid).map_or(0, |(t, _)| *t).min(*ticks);
            let words: Vec<&str> = title.split_whitespace().collect();
            let of_database = words.get(2) == Some(&database);
            if of_database {
                backends += used;
            }
            if used > busiest.0 {
                let what = if of_database {
                    format!("a backend of {database}")
                } else {
                    words.get(1..).unwrap_or_default().join(" ")
                };
                busiest = (used, what);
            }
        }
        (backends, busiest)
    }
}

/// Section 6: `replicas` servers on one fresh database: ingest, Get and
/// one-day List; the figures and the CPU split of the ingest.
struct ReplicaRun {
    replicas: usize,
    ingest_rate: f64,
    /// Transactions that wrote during the ingest (the writers' batches,
    /// with any retried).
    write_transactions: i64,
    get: Latencies,
    day: Latencies,
    /// Clock ticks during the ingest: servers, postgres user, the cluster,
    /// client, machine busy, iowait, idle.
    cpu: [u64; 7],
    /// Clock ticks during the ingest of the cluster's backends connected to
    /// the database (the servers' connections: the writers'), and of the
    /// busiest single process of the cluster, with what it is.
    backends: u64,
    busiest: (u64, String),
    /// Wall clock ticks of the ingest.
    wall: u64,
}

fn replica_run(
    runtime: &tokio::runtime::Runtime,
    pg: &postgres::Postgres,
    stores: &Stores,
    dir: &Path,
    replicas: usize,
    articles: usize,
    seconds: f64,
) -> ReplicaRun {
    let servers: Vec<ServerProcess> = (0..replicas).map(|_| stores.start(dir)).collect();
    let channels: Vec<Channel> = servers
        .iter()
        .map(|s| runtime.block_on(connect(s.addr)))
        .collect();
    let (per_stream, _) = ingest_requests(0..articles, 4 * replicas);
    let xid = runtime.block_on(pg.next_xid());
    let before = CpuSample::take(pg, &servers);
    let elapsed = runtime.block_on(send_streams(&channels, per_stream));
    let after = CpuSample::take(pg, &servers);
    let write_transactions = runtime.block_on(pg.next_xid()) - xid;
    let (backends, busiest) = after.processes_since(&before, &Stores::database(dir));
    let ids: Arc<Vec<String>> = Arc::new((0..articles).map(id_of).collect());
    let get = runtime.block_on(get_load(&channels, &ids, 64, seconds));
    let (day, _) = runtime.block_on(one_day_lists(&channels, 200));
    for server in servers {
        server.stop();
    }
    ReplicaRun {
        replicas,
        ingest_rate: articles as f64 / elapsed.as_secs_f64(),
        write_transactions,
        get,
        day,
        cpu: [
            after.servers - before.servers,
            after.postgres_user - before.postgres_user,
            after.cluster - before.cluster,
            after.client - before.client,
            after.machine.0 - before.machine.0,
            after.machine.1 - before.machine.1,
            after.machine.2 - before.machine.2,
        ],
        backends,
        busiest,
        wall: (elapsed.as_secs_f64() * clock_ticks()).round() as u64,
    }
}

const REPLICA_HEADER: &str =
    "replicas  ingest a/s  vs 1  write tx  a/tx  get c=64 req/s  vs 1  get p99 ms  vs 1  day p50 ms  vs 1";

const CPU_HEADER: &str =
    "replicas   servers  PostgreSQL  of which backends  bench client  other busy  iowait   idle   server ms/a   PG ms/a  busiest process, % of one core";

impl ReplicaRun {
    fn row(&self, one: &Self, articles: usize) -> String {
        let latency = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        format!(
            "{:>8} {:>11.0} {:>5.2} {:>9} {:>5.0} {:>15.0} {:>5.2} {:>11} {:>5.2} {:>11} {:>5.2}",
            self.replicas,
            self.ingest_rate,
            self.ingest_rate / one.ingest_rate,
            self.write_transactions,
            articles as f64 / self.write_transactions.max(1) as f64,
            self.get.rate(),
            self.get.rate() / one.get.rate(),
            ms(self.get.p99),
            latency(self.get.p99, one.get.p99),
            ms(self.day.p50),
            latency(self.day.p50, one.day.p50),
        )
    }

    /// Shares of the machine (all CPUs = 100 %) during the ingest, and CPU
    /// milliseconds per article of the servers and of PostgreSQL.
    fn cpu_row(&self, articles: usize, ticks_per_second: f64) -> String {
        let [servers, postgres, _, client, busy, iowait, idle] = self.cpu;
        let capacity = (busy + iowait + idle).max(1) as f64;
        let share = |ticks: u64| format!("{:.0} %", 100.0 * ticks as f64 / capacity);
        let other = busy.saturating_sub(servers + postgres + client);
        let per_article = |ticks: u64| {
            format!(
                "{:.3}",
                ticks as f64 / ticks_per_second * 1e3 / articles as f64
            )
        };
        format!(
            "{:>8} {:>9} {:>11} {:>18} {:>13} {:>11} {:>7} {:>6} {:>13} {:>9}  {:.0} % ({})",
            self.replicas,
            share(servers),
            share(postgres),
            share(self.backends),
            share(client),
            share(other),
            share(iowait),
            share(idle),
            per_article(servers),
            per_article(postgres),
            100.0 * self.busiest.0 as f64 / self.wall.max(1) as f64,
            self.busiest.1,
        )
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    format!(
        "{} CPUs ({cpu}), {:.1} GiB RAM",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem as f64 / 1024.0 / 1024.0
    )
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(problem) => {
            if problem.is_empty() {
                println!("{USAGE}");
                return;
            }
            eprintln!("{problem}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Some(n) = options.write_corpus {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for i in 0..n {
            writeln!(out, "{}", article_archive::cli::jsonl::to_line(&article(i))).unwrap();
        }
        return;
    }
    println!("article-archive benchmark on {}", machine());
    if options.interface_cost {
        interface::run();
        return;
    }
    let on_target = calibration::run();
    compression::run();
    if options.corpus_only {
        std::process::exit(if on_target { 0 } else { 1 });
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let on_postgres = options.engine == Engine::Postgres;
    // On PostgreSQL the archive lives in the benchmark's cluster from the
    // start; on sled the cluster starts after section 3, for the twins.
    let early_cluster =
        on_postgres.then(
            || match postgres::Postgres::start(&runtime, &dir.path().join("pg")) {
                Ok(pg) => pg,
                Err(reason) => {
                    eprintln!("--engine postgres: the PostgreSQL cluster cannot start: {reason}");
                    std::process::exit(1);
                }
            },
        );
    let stores = Stores {
        runtime: &runtime,
        pg: early_cluster.as_ref(),
        extra: options.server_args(),
    };
    if let Some(pg) = &early_cluster {
        println!(
            "\nEngine: PostgreSQL {} (serve --store): every archive server on a new database of the \
             benchmark's cluster\n(loopback, fsync and synchronous_commit on, shared_buffers 256MB), \
             the one the plain-PostgreSQL twin uses.",
            runtime.block_on(pg.version())
        );
        if options.cache_mb.is_some() {
            println!(
                "--cache-mb ignored: it sizes sled's cache, which a server on PostgreSQL has not"
            );
        }
    }
    let ours_label = if on_postgres { "archive-pg" } else { "archive" };
    let n = options.articles;
    let input: Vec<proto::Article> = (0..n).map(article).collect();
    let bytes: usize = input.iter().map(text_bytes).sum();

    // 1. Ingest.
    let mut rows = Vec::new();
    let (raw_rate, raw_store) = if on_postgres {
        (None, None)
    } else {
        let (raw_elapsed, raw_store) =
            store_ingest(&runtime, &dir.path().join("raw"), &input, options.cache_mb);
        rows.push(rate_row(
            "ingest: the store in-process (baseline)",
            n,
            bytes,
            raw_elapsed,
            None,
        ));
        (Some(n as f64 / raw_elapsed.as_secs_f64()), Some(raw_store))
    };
    let server = stores.start(&dir.path().join("svc1"));
    let channel = runtime.block_on(connect(server.addr));
    let channels = std::slice::from_ref(&channel);
    let (one_stream, _) = runtime.block_on(ingest(channels, 0..n, 1));
    let one_stream_rate = n as f64 / one_stream.as_secs_f64();
    rows.push(rate_row(
        "ingest: gRPC, 1 stream (vs in-process)",
        n,
        bytes,
        one_stream,
        raw_rate,
    ));
    {
        let four = stores.start(&dir.path().join("svc4"));
        let four_channel = runtime.block_on(connect(four.addr));
        let (elapsed, _) = runtime.block_on(ingest(std::slice::from_ref(&four_channel), 0..n, 4));
        rows.push(rate_row(
            "ingest: gRPC, 4 streams (vs in-process)",
            n,
            bytes,
            elapsed,
            raw_rate,
        ));
        four.stop();
    }
    {
        let file = dir.path().join("articles.jsonl");
        let lines: String = input
            .iter()
            .map(|a| article_archive::cli::jsonl::to_line(a) + "\n")
            .collect();
        std::fs::write(&file, lines).unwrap();
        let cli_server = stores.start(&dir.path().join("cli"));
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_article-archive"))
            .args(["ingest", "--server", &format!("http://{}", cli_server.addr)])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        rows.push(rate_row(
            "ingest: CLI from JSON Lines (vs 1 stream)",
            n,
            bytes,
            started.elapsed(),
            Some(one_stream_rate),
        ));
        cli_server.stop();
    }
    print_rows("1. Ingest", RATE_HEADER, &rows);
    if on_postgres {
        println!(
            "in-process baseline skipped on postgres: it opens a Store on a sled data directory \
             (so the \"vs in-process\" ratios are empty)"
        );
    }

    // 2. Get against the health floor.
    let ids: Arc<Vec<String>> = Arc::new((0..n).map(id_of).collect());
    let mut rows = Vec::new();
    let mut our_gets = Vec::new();
    for concurrency in [1, 16, 64] {
        let health = runtime.block_on(health_load(&channel, concurrency, options.seconds));
        let get = runtime.block_on(get_load(channels, &ids, concurrency, options.seconds));
        rows.push(format!(
            "concurrency {concurrency:<3} {:>12.0} {:>9} {:>9} {:>9} {:>12.0} {:>9} {:>7.2}",
            get.rate(),
            ms(get.p50),
            ms(get.p99),
            ms(get.p999),
            health.rate(),
            ms(health.p99),
            get.rate() / health.rate()
        ));
        our_gets.push((concurrency, get.rate(), get.p99));
    }
    print_rows(
        "2. GetArticle (random existing ids) vs grpc.health.v1.Health/Check on the same server",
        "                 get req/s   p50 ms    p99 ms  p99.9 ms  health req/s  h.p99 ms   ratio",
        &rows,
    );

    // 3. List: full walks against raw iteration, one-day ranges.
    let mut rows = Vec::new();
    let raw_walk_rate = raw_store.as_ref().map(|raw_store| {
        let (raw_count, raw_walk) = store_walk(&runtime, raw_store);
        rows.push(rate_row(
            "walk: the store's FULL pages in-process (baseline)",
            raw_count,
            bytes,
            raw_walk,
            None,
        ));
        raw_count as f64 / raw_walk.as_secs_f64()
    });
    let mut walk_rates = Vec::new();
    for (name, view, page) in [
        (
            "walk: ListArticles BASIC, 1000/page",
            ArticleView::Basic,
            1000,
        ),
        ("walk: ListArticles FULL, 100/page", ArticleView::Full, 100),
    ] {
        let (count, elapsed) = runtime.block_on(list_walk(&channel, view, page));
        assert_eq!(count, n);
        rows.push(rate_row(name, count, bytes, elapsed, raw_walk_rate));
        walk_rates.push(count as f64 / elapsed.as_secs_f64());
    }
    // The change feed streams what ExportArticles streams (every article
    // once, FULL), in sequence order from the log instead of date order.
    let (export_count, export_elapsed) = runtime.block_on(export_stream(&channel));
    assert_eq!(export_count, n);
    let export_rate = n as f64 / export_elapsed.as_secs_f64();
    rows.push(rate_row(
        "stream: ExportArticles FULL (vs in-process)",
        n,
        bytes,
        export_elapsed,
        raw_walk_rate,
    ));
    for (name, view) in [
        (
            "stream: WatchChanges FULL from 0 (vs Export)",
            ArticleView::Full,
        ),
        (
            "stream: WatchChanges BASIC from 0 (vs Export)",
            ArticleView::Basic,
        ),
    ] {
        let (count, elapsed) = runtime.block_on(feed_stream(&channel, view));
        assert_eq!(count, n);
        rows.push(rate_row(name, count, bytes, elapsed, Some(export_rate)));
    }
    print_rows(
        "3. ListArticles full walk vs the store's own pages in-process; Export and the change feed",
        RATE_HEADER,
        &rows,
    );
    if on_postgres {
        println!(
            "in-process walk baseline skipped on postgres: it reads a Store on a sled data directory"
        );
    }
    let (day, per_day) = runtime.block_on(one_day_lists(channels, 200));
    println!(
        "one-day ranges at {n} articles ({per_day:.1} articles a day asked): p50 {} ms, p99 {} ms",
        ms(day.p50),
        ms(day.p99)
    );
    let disk_per_article = stores.disk(&dir.path().join("svc1")) as f64 / n as f64;
    drop(raw_store);
    server.stop();

    // PostgreSQL serves sections 4 and 5 from one temporary cluster (on
    // postgres, the one already running).
    let late_cluster;
    let postgres: Result<&postgres::Postgres, String> = match &early_cluster {
        Some(pg) => Ok(pg),
        None => {
            late_cluster = if options.postgres {
                postgres::Postgres::start(&runtime, &dir.path().join("pg"))
            } else {
                Err("--no-postgres was given".into())
            };
            late_cluster.as_ref().map_err(Clone::clone)
        }
    };
    let pg = postgres.as_ref().ok().copied();
    if let Some(pg) = pg {
        println!(
            "\nPostgreSQL {} on loopback: COPY (binary) in batches of {}, one transaction each, fsync on",
            runtime.block_on(pg.version()),
            BatchLimits::default().max_articles
        );
    }

    // 4. Growth and cost, the archive in a server process of its own and
    // PostgreSQL given the same articles at each size. One-day ranges hold
    // more articles as the archive grows (a/day); the 20-article page at a
    // random date is the same amount of work at every size.
    let mut rows = Vec::new();
    // The floor for opening: a server on an empty data directory, stopped
    // cleanly and then killed, as the growth archive is at each size.
    let mut open_rows = Vec::new();
    if !on_postgres {
        let empty_dir = dir.path().join("empty");
        let first = stores.start(&empty_dir);
        first.stop();
        let clean = stores.start(&empty_dir);
        let clean_open = (clean.startup, clean.memory().1);
        clean.kill();
        let checked = stores.start(&empty_dir);
        open_rows.push(open_row("empty dir", clean_open, &checked, None));
        checked.stop();
    }
    let growth_dir = dir.path().join("growth");
    let mut server = stores.start(&growth_dir);
    let mut channel = runtime.block_on(connect(server.addr));
    let growth_seconds = options.seconds.min(2.0);
    let pg_connections = pg.map(|pg| {
        runtime.block_on(pg.create_table());
        runtime.block_on(pg.connections(16))
    });
    let mut loaded = 0;
    let mut raw_total = 0usize;
    // 4d: full walks and the feed at each size, the archive's and (walks)
    // PostgreSQL's.
    let mut walk_rows = Vec::new();
    for &size in &options.growth {
        let channels = std::slice::from_ref(&channel);
        let (elapsed, raw) = runtime.block_on(ingest(channels, loaded..size, 1));
        raw_total += raw;
        let step = size - loaded;
        // Progress on stderr: a large growth runs for an hour or more.
        eprintln!(
            "growth: {size} articles loaded ({:.0} a/s), server pid {}; measuring reads",
            step as f64 / elapsed.as_secs_f64(),
            server.child.id()
        );
        let sample: Arc<Vec<String>> = Arc::new(
            (0..size)
                .step_by((size / 50_000).max(1))
                .map(id_of)
                .collect(),
        );
        let get = runtime.block_on(get_load(channels, &sample, 16, growth_seconds));
        let (day, per_day) = runtime.block_on(one_day_lists(channels, 200));
        let (page, _) = runtime.block_on(range_lists(channels, 200, None, 20));
        let ours = Growth {
            ingest_rate: step as f64 / elapsed.as_secs_f64(),
            get,
            per_day,
            day,
            page,
            memory: Some(server.memory()),
            disk: stores.disk(&growth_dir),
        };
        rows.push(ours.row(size, ours_label, raw_total));
        let walks = size <= options.walks_up_to;
        let ours_walks = if walks {
            runtime.block_on(walks_and_feed(&channel, size))
        } else {
            [None; 5]
        };
        if walks {
            walk_rows.push(walk_row(size, ours_label, &ours_walks));
        }
        let twin = pg.filter(|_| size <= options.postgres_up_to);
        if let (Some(pg), Some(connections)) = (twin, &pg_connections) {
            let elapsed = postgres_load(&runtime, pg, loaded..size);
            runtime.block_on(pg.analyze());
            let rate = |(count, elapsed): (usize, Duration)| {
                assert_eq!(count, size);
                count as f64 / elapsed.as_secs_f64()
            };
            if walks {
                let theirs_walks = [
                    Some(rate(runtime.block_on(pg.walk(false, 1000)))),
                    Some(rate(runtime.block_on(pg.walk(true, 100)))),
                    None,
                    None,
                    None,
                ];
                walk_rows.push(walk_row(size, "PostgreSQL", &theirs_walks));
                let ratios: Vec<Option<f64>> = ours_walks
                    .iter()
                    .zip(&theirs_walks)
                    .map(|(ours, theirs)| Some((*ours)? / (*theirs)?))
                    .collect();
                walk_rows.push(walk_row(size, &format!("{ours_label}/PG"), &ratios));
            }
            let get = runtime.block_on(postgres::Postgres::gets(
                connections,
                &sample,
                growth_seconds,
                false,
            ));
            let (day, per_day) = runtime.block_on(pg.ranges(200, Some(86_400), 1000));
            let (page, _) = runtime.block_on(pg.ranges(200, None, 20));
            let theirs = Growth {
                ingest_rate: step as f64 / elapsed.as_secs_f64(),
                get,
                per_day,
                day,
                page,
                memory: None,
                disk: runtime.block_on(pg.disk_bytes()),
            };
            rows.push(theirs.row(size, "PostgreSQL", raw_total));
            rows.push(Growth::ratio_row(size, &ours, &theirs));
        }
        if on_postgres {
            // A clean restart, untimed, so peak MiB means what it means on
            // sled: the peak since the last size.
            server.stop();
            server = stores.start(&growth_dir);
            channel = runtime.block_on(connect(server.addr));
            loaded = size;
            continue;
        }
        // Opening the archive of this size: stopped cleanly (SIGTERM), then
        // killed (the next start checks every record and index first). The
        // growth goes on in the server started last.
        server.stop();
        let clean = stores.start(&growth_dir);
        let clean_open = (clean.startup, clean.memory().1);
        clean.kill();
        server = stores.start(&growth_dir);
        channel = runtime.block_on(connect(server.addr));
        // Get again on the restarted server, seconds after the growth
        // row's: what is left of the cost once nothing is being written.
        let get_again = runtime.block_on(get_load(
            std::slice::from_ref(&channel),
            &sample,
            16,
            growth_seconds,
        ));
        open_rows.push(open_row(
            &size.to_string(),
            clean_open,
            &server,
            Some((&ours.get, &get_again)),
        ));
        loaded = size;
    }
    let growth_title = if on_postgres {
        "4. Growth and cost: the archive on PostgreSQL (archive-pg: a server process, serve --store, on a\n   \
         database of its own; disk = pg_database_size of that database, its catalogs included, over the\n   \
         articles; peak and RSS MiB = the server process only, the database's memory is not included) and\n   \
         plain PostgreSQL (disk = pg_total_relation_size: table, TOAST and indexes) on the same articles,\n   \
         in the same cluster.\n   \
         raw = bytes of the article fields; get at concurrency 16; a/day = articles in the days asked.\n   \
         archive/PG above 1 is better for the archive in ingest and req/s, below 1 in latency and disk.\n   \
         The server restarts (cleanly, untimed) after each size, so peak MiB is the peak since the last size."
    } else {
        "4. Growth and cost: the archive (a server process; disk = allocated bytes of its data dir) and\n   \
         PostgreSQL (disk = pg_total_relation_size: table, TOAST and indexes) on the same articles.\n   \
         raw = bytes of the article fields; get at concurrency 16; a/day = articles in the days asked.\n   \
         archive/PG above 1 is better for the archive in ingest and req/s, below 1 in latency and disk.\n   \
         The server restarts after each size (below), so peak MiB is the peak since the last size."
    };
    print_rows(growth_title, GROWTH_HEADER, &rows);
    if let Err(reason) = &postgres {
        println!("PostgreSQL twins skipped: {reason}");
    }
    print_rows(
        "4d. Full walks and the change feed at each size, articles/s: ListArticles BASIC (1000 a page)\n   \
         and FULL (100 a page), ExportArticles, WatchChanges from 0 FULL and BASIC, on the growth\n   \
         server; PostgreSQL's keyset walks without and with bodies (same page sizes) on its twin.\n   \
         The /PG row: above 1 is faster for the archive.",
        WALK_HEADER,
        &walk_rows,
    );
    if let Some(pg) = early_cluster.as_ref() {
        let empty = runtime.block_on(pg.database_size("template1"));
        println!(
            "(an empty database of this cluster, template1, is {:.1} MiB: part of every archive-pg disk figure)",
            empty as f64 / 1048576.0
        );
        println!(
            "\n4b. skipped on postgres: opening after a clean stop and the check after kill -9 are the \
             sled data directory's (a server on PostgreSQL keeps nothing of its own to open or check)"
        );
    } else {
        print_rows(
            "4b. Opening the archive after each size: seconds from spawning a new server process on the\n    \
             data dir until it logs \"listening on\" (OS page cache warm). After a clean stop (SIGTERM)\n    \
             it only opens (RSS MiB: its resident memory once listening, what the archive itself holds\n    \
             in memory without a load's working set); after kill -9 it first checks every record and index\n    \
             (the check's own time and what it counted are from its log line). The first row is an empty\n    \
             data dir: the floor.\n    \
             Then Get (concurrency 16, the same ids) on the server started after kill -9, which goes on\n    \
             with the growth, against the growth row's Get (measured right after that size's ingest).",
            OPEN_HEADER,
            &open_rows,
        );
    }
    if let Some(&largest) = options.growth.last() {
        print_rows(
            &format!(
                "4c. Queries on the growth archive at {largest} articles: filtered pages (ratio: p50 against\n    \
                 the unfiltered page of 20), url matches, counts, BatchGetArticles (ratio: against 100 GetArticle)"
            ),
            queries::HEADER,
            &runtime.block_on(queries::run(&channel, largest, 200)),
        );
    }
    server.stop();

    // 5. PostgreSQL on the articles of sections 1-3.
    let Some(pg) = pg else {
        if let Err(reason) = &postgres {
            println!("\n5. PostgreSQL: skipped: {reason}");
        }
        return;
    };
    runtime.block_on(pg.create_table());
    let batch = BatchLimits::default().max_articles;
    let mut loading = Duration::ZERO;
    for (articles, ids) in input.chunks(batch).zip(ids.chunks(batch)) {
        loading += runtime.block_on(pg.load_batch(ids, articles));
    }
    runtime.block_on(pg.analyze());
    let mut rows = vec![twin_row(
        &format!("ingest, batches of {batch} (articles/s)"),
        n as f64 / loading.as_secs_f64(),
        one_stream_rate,
        "higher is better",
    )];
    for (concurrency, our_rate, our_p99) in our_gets {
        let connections = runtime.block_on(pg.connections(concurrency));
        let theirs = runtime.block_on(postgres::Postgres::gets(
            &connections,
            &ids,
            options.seconds,
            false,
        ));
        rows.push(twin_row(
            &format!("get by id, concurrency {concurrency} (req/s)"),
            theirs.rate(),
            our_rate,
            "higher is better",
        ));
        rows.push(twin_latency_row(
            &format!("get by id, concurrency {concurrency} (p99 ms)"),
            theirs.p99,
            our_p99,
        ));
        if on_postgres {
            // The archive-pg engine prepares each read's statement anew
            // (src/store/postgres/mod.rs `query`): the same on plain
            // PostgreSQL, to tell that cost from the rest.
            let theirs = runtime.block_on(postgres::Postgres::gets(
                &connections,
                &ids,
                options.seconds,
                true,
            ));
            rows.push(twin_row(
                "  same, PostgreSQL preparing per call (req/s)",
                theirs.rate(),
                our_rate,
                "higher is better",
            ));
        }
    }
    let (their_day, _) = runtime.block_on(pg.ranges(200, Some(86_400), 1000));
    rows.push(twin_latency_row(
        "one-day range, keyset (p50 ms)",
        their_day.p50,
        day.p50,
    ));
    for (name, with_bodies, page, ours) in [
        (
            "walk without bodies, 1000/page: keyset vs BASIC",
            false,
            1000,
            walk_rates[0],
        ),
        (
            "walk with bodies, 100/page: keyset vs FULL",
            true,
            100,
            walk_rates[1],
        ),
    ] {
        let (count, elapsed) = runtime.block_on(pg.walk(with_bodies, page));
        assert_eq!(count, n);
        rows.push(twin_row(
            &format!("{name} (a/s)"),
            count as f64 / elapsed.as_secs_f64(),
            ours,
            "higher is better",
        ));
    }
    rows.push(twin_row(
        if on_postgres {
            "disk per article (bytes; archive: pg_database_size)"
        } else {
            "disk per article (bytes)"
        },
        runtime.block_on(pg.disk_bytes()) as f64 / n as f64,
        disk_per_article,
        "lower is better",
    ));
    print_rows(
        &format!("5. PostgreSQL on the {n} articles of sections 1-3"),
        &twin_header(ours_label),
        &rows,
    );

    // 6. Replicas: 1, 2 and 3 servers on one database.
    if on_postgres {
        let ticks_per_second = clock_ticks();
        let mut runs: Vec<ReplicaRun> = Vec::new();
        for replicas in 1..=3 {
            let run = replica_run(
                &runtime,
                pg,
                &stores,
                &dir.path().join(format!("replicas{replicas}")),
                replicas,
                n,
                options.seconds,
            );
            // The cluster's processes against every postgres-user process:
            // they differ only when another cluster ran meanwhile.
            let [_, user, cluster, ..] = run.cpu;
            if user.abs_diff(cluster) as f64 > 0.02 * user.max(1) as f64 {
                println!(
                    "note: during the {replicas}-replica ingest the postgres user's processes used {:.2} s \
                     of CPU, the benchmark's cluster {:.2} s: another PostgreSQL was busy",
                    user as f64 / ticks_per_second,
                    cluster as f64 / ticks_per_second
                );
            }
            runs.push(run);
        }
        let rows: Vec<String> = runs.iter().map(|r| r.row(&runs[0], n)).collect();
        print_rows(
            &format!(
                "6. Replicas: N servers (serve --store) on one fresh database each time. Ingest: the same {n}\n   \
                 articles split evenly across the N servers, 4 streams a server, all at once (total a/s);\n   \
                 write tx = transactions that wrote meanwhile (the writers' batches, retries included, and\n   \
                 any autovacuum), a/tx = articles per such transaction. GetArticle at concurrency 64 spread\n   \
                 evenly across the N servers (total req/s, p99); one-day List (BASIC, up to 1000) one at a\n   \
                 time, round robin. vs 1 = against 1 replica. This machine has {} cores, shared by the\n   \
                 servers, PostgreSQL and this benchmark's client: that limits what can scale.",
                std::thread::available_parallelism().map_or(0, |c| c.get())
            ),
            REPLICA_HEADER,
            &rows,
        );
        let rows: Vec<String> = runs
            .iter()
            .map(|r| r.cpu_row(n, ticks_per_second))
            .collect();
        print_rows(
            "   Where the CPU went during each ingest, as shares of the whole machine (all cores = 100 %):\n   \
             the archive server processes (utime + stime of /proc/<pid>/stat), PostgreSQL (every process\n   \
             of the postgres user, with the backends that ended; of which its backends connected to the\n   \
             database: the servers' connections, so the writers'), this benchmark's client, the rest of\n   \
             the machine, iowait and idle (/proc/stat); then CPU ms per article of the servers and of\n   \
             PostgreSQL, and the busiest single process of the cluster against one core's time.",
            CPU_HEADER,
            &rows,
        );
    }
    let problems = pg.log_problems();
    if problems.is_empty() {
        println!("\nPostgreSQL's log: nothing at WARNING or above");
    } else {
        println!(
            "\nPostgreSQL's log: {} lines at WARNING or above; the first ones:",
            problems.len()
        );
        for line in problems.iter().take(20) {
            println!("  {line}");
        }
    }
}
