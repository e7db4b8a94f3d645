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
//!    scans, and BatchGetArticles against GetArticle;
//! 5. PostgreSQL on the articles of sections 1-3: the same batches, lookups,
//!    keyset range queries and full walks without and with bodies.
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
//! `--no-postgres`, `--corpus-only` (print the calibration and the
//! compression table, and stop; exit 1 when the corpus is outside its
//! bands), `--write-corpus N` (the articles as JSON Lines on standard
//! output), `--cache-mb N` (the sled cache of every store the benchmark
//! opens, passed to the servers as `serve --cache-mb N`; default: the
//! server's), `--help`. Of `--large` and `--growth`, the last given wins.

mod calibration;
mod compression;
mod corpus;
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

struct Options {
    articles: usize,
    growth: Vec<usize>,
    seconds: f64,
    postgres: bool,
    corpus_only: bool,
    write_corpus: Option<usize>,
    /// `serve --cache-mb` for every server; `None`: the server's default.
    cache_mb: Option<u64>,
}

impl Options {
    /// Arguments every server gets.
    fn server_args(&self) -> Vec<String> {
        self.cache_mb
            .map(|mb| vec!["--cache-mb".to_string(), mb.to_string()])
            .unwrap_or_default()
    }
}

const USAGE: &str = "accepted options:
  --articles N      articles for sections 1-3 and 5 (default 20000)
  --growth N,N,...  sizes of the growth section (default 10000,100000)
  --large           growth to 10000,100000,1000000
  --seconds S       length of each latency run (default 3)
  --no-postgres     skip PostgreSQL
  --corpus-only     print the corpus calibration and the compression table, and stop
  --write-corpus N  write articles 0..N as JSON Lines (the ingest command's input) to
                    standard output and stop: for A/B runs of whole binaries
  --cache-mb N      sled cache of every store, in MiB (default: the server's)
  --help            this list";

/// The command line; an option we do not know is an error, so a typo never
/// silently runs the defaults.
fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        articles: 20_000,
        growth: vec![10_000, 100_000],
        seconds: 3.0,
        postgres: true,
        corpus_only: false,
        write_corpus: None,
        cache_mb: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} takes a value"));
        let number = |text: String| {
            text.parse::<usize>()
                .map_err(|_| format!("{arg}: {text:?} is not a whole number"))
        };
        match arg.as_str() {
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
            "--write-corpus" => options.write_corpus = Some(number(value()?)?),
            "--cache-mb" => {
                let mb = number(value()?)?;
                if mb == 0 {
                    return Err("--cache-mb must be at least 1".into());
                }
                options.cache_mb = Some(mb as u64);
            }
            "--help" => return Err(String::new()),
            // cargo bench passes --bench to every harness = false target.
            "--bench" => {}
            _ => return Err(format!("unknown option {arg:?}")),
        }
    }
    if options.articles == 0 || options.growth.is_empty() || options.growth.contains(&0) {
        return Err("--articles and --growth sizes must be at least 1".into());
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
/// calls and returns the time to the last acknowledgement and the raw bytes
/// sent (see `raw_bytes`). Articles are generated in chunks of 100,000
/// before the clock runs for them, as PostgreSQL's batches are generated
/// before its clock runs, so neither side pays for the text model; a
/// chunk's stream is drained before the next is generated.
async fn ingest(
    channel: &Channel,
    range: std::ops::Range<usize>,
    streams: usize,
) -> (Duration, usize) {
    const CHUNK: usize = 100_000;
    let mut elapsed = Duration::ZERO;
    let mut raw = 0;
    let mut from = range.start;
    while from < range.end {
        let to = (from + CHUNK).min(range.end);
        let mut per_stream: Vec<Vec<proto::IngestArticlesRequest>> = vec![Vec::new(); streams];
        for i in from..to {
            let article = article(i);
            raw += raw_bytes(&article);
            per_stream[i % streams].push(proto::IngestArticlesRequest {
                restore_revision: false,
                article: Some(article),
            });
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for requests in per_stream {
            let mut client = ArchiveServiceClient::new(channel.clone());
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
        elapsed += started.elapsed();
        from = to;
    }
    (elapsed, raw)
}

/// `concurrency` workers call `call` back to back for `seconds`.
async fn closed_loop<F, Fut>(concurrency: usize, seconds: f64, call: F) -> Latencies
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
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
                call(n).await;
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

async fn get_load(
    channel: &Channel,
    ids: &Arc<Vec<String>>,
    concurrency: usize,
    seconds: f64,
) -> Latencies {
    let (client, ids) = (ArchiveServiceClient::new(channel.clone()), Arc::clone(ids));
    closed_loop(concurrency, seconds, move |n| {
        let mut client = client.clone();
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
    closed_loop(concurrency, seconds, move |_| {
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
async fn one_day_lists(channel: &Channel, queries: usize) -> (Latencies, f64) {
    range_lists(channel, queries, Some(86_400), 1000).await
}

/// Pages of at most `page_size` articles (BASIC) starting at the days of
/// `query_day`, `span` seconds long (unbounded when `None`): latency and
/// mean articles per page.
async fn range_lists(
    channel: &Channel,
    queries: usize,
    span: Option<i64>,
    page_size: i32,
) -> (Latencies, f64) {
    let mut client = ArchiveServiceClient::new(channel.clone());
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
    "  articles  clean stop: open s  kill -9: open s  of which check s  check records  problems  get req/s  get p99 ms  vs growth row";

/// A row of 4b: the open after a clean stop, and `checked`, the server
/// started after a kill; `gets`: the growth row's Get and the one on
/// `checked`.
fn open_row(
    size: &str,
    clean_open: Duration,
    checked: &ServerProcess,
    gets: Option<(&Latencies, &Latencies)>,
) -> String {
    let check = checked.startup_check();
    format!(
        "{size:>10} {:>19.3} {:>16.3} {:>17} {:>14} {:>9} {:>10} {:>11} {:>13}",
        clean_open.as_secs_f64(),
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

fn twin_header() -> String {
    format!(
        "{:<54} {:>12} {:>12} {:>10}",
        "workload", "PostgreSQL", "archive", "archive/PG"
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
    let on_target = calibration::run();
    compression::run();
    if options.corpus_only {
        std::process::exit(if on_target { 0 } else { 1 });
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server_args = options.server_args();
    let n = options.articles;
    let input: Vec<proto::Article> = (0..n).map(article).collect();
    let bytes: usize = input.iter().map(text_bytes).sum();

    // 1. Ingest.
    let mut rows = Vec::new();
    let (raw_elapsed, raw_store) =
        store_ingest(&runtime, &dir.path().join("raw"), &input, options.cache_mb);
    let raw_rate = n as f64 / raw_elapsed.as_secs_f64();
    rows.push(rate_row(
        "ingest: the store in-process (baseline)",
        n,
        bytes,
        raw_elapsed,
        None,
    ));
    let server = ServerProcess::start(&dir.path().join("svc1"), &server_args);
    let channel = runtime.block_on(connect(server.addr));
    let (one_stream, _) = runtime.block_on(ingest(&channel, 0..n, 1));
    let one_stream_rate = n as f64 / one_stream.as_secs_f64();
    rows.push(rate_row(
        "ingest: gRPC, 1 stream (vs in-process)",
        n,
        bytes,
        one_stream,
        Some(raw_rate),
    ));
    {
        let four = ServerProcess::start(&dir.path().join("svc4"), &server_args);
        let four_channel = runtime.block_on(connect(four.addr));
        let (elapsed, _) = runtime.block_on(ingest(&four_channel, 0..n, 4));
        rows.push(rate_row(
            "ingest: gRPC, 4 streams (vs in-process)",
            n,
            bytes,
            elapsed,
            Some(raw_rate),
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
        let cli_server = ServerProcess::start(&dir.path().join("cli"), &server_args);
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

    // 2. Get against the health floor.
    let ids: Arc<Vec<String>> = Arc::new((0..n).map(id_of).collect());
    let mut rows = Vec::new();
    let mut our_gets = Vec::new();
    for concurrency in [1, 16, 64] {
        let health = runtime.block_on(health_load(&channel, concurrency, options.seconds));
        let get = runtime.block_on(get_load(&channel, &ids, concurrency, options.seconds));
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
    let (raw_count, raw_walk) = store_walk(&runtime, &raw_store);
    let raw_walk_rate = raw_count as f64 / raw_walk.as_secs_f64();
    let mut rows = vec![rate_row(
        "walk: the store's FULL pages in-process (baseline)",
        raw_count,
        bytes,
        raw_walk,
        None,
    )];
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
        rows.push(rate_row(name, count, bytes, elapsed, Some(raw_walk_rate)));
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
        Some(raw_walk_rate),
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
    let (day, per_day) = runtime.block_on(one_day_lists(&channel, 200));
    println!(
        "one-day ranges at {n} articles ({per_day:.1} articles a day asked): p50 {} ms, p99 {} ms",
        ms(day.p50),
        ms(day.p99)
    );
    let disk_per_article = disk_usage(&dir.path().join("svc1")) as f64 / n as f64;
    drop(raw_store);
    server.stop();

    // PostgreSQL serves sections 4 and 5 from one temporary cluster.
    let postgres = if options.postgres {
        postgres::Postgres::start(&runtime, &dir.path().join("pg"))
    } else {
        Err("--no-postgres was given".into())
    };
    let pg = postgres.as_ref().ok();
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
    let mut open_rows = vec![{
        let empty_dir = dir.path().join("empty");
        let first = ServerProcess::start(&empty_dir, &server_args);
        first.stop();
        let clean = ServerProcess::start(&empty_dir, &server_args);
        let clean_open = clean.startup;
        clean.kill();
        let checked = ServerProcess::start(&empty_dir, &server_args);
        let row = open_row("empty dir", clean_open, &checked, None);
        checked.stop();
        row
    }];
    let growth_dir = dir.path().join("growth");
    let mut server = ServerProcess::start(&growth_dir, &server_args);
    let mut channel = runtime.block_on(connect(server.addr));
    let growth_seconds = options.seconds.min(2.0);
    let pg_connections = pg.map(|pg| {
        runtime.block_on(pg.create_table());
        runtime.block_on(pg.connections(16))
    });
    let mut loaded = 0;
    let mut raw_total = 0usize;
    for &size in &options.growth {
        let (elapsed, raw) = runtime.block_on(ingest(&channel, loaded..size, 1));
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
        let get = runtime.block_on(get_load(&channel, &sample, 16, growth_seconds));
        let (day, per_day) = runtime.block_on(one_day_lists(&channel, 200));
        let (page, _) = runtime.block_on(range_lists(&channel, 200, None, 20));
        let ours = Growth {
            ingest_rate: step as f64 / elapsed.as_secs_f64(),
            get,
            per_day,
            day,
            page,
            memory: Some(server.memory()),
            disk: disk_usage(&growth_dir),
        };
        rows.push(ours.row(size, "archive", raw_total));
        if let (Some(pg), Some(connections)) = (pg, &pg_connections) {
            let elapsed = postgres_load(&runtime, pg, loaded..size);
            runtime.block_on(pg.analyze());
            let get = runtime.block_on(postgres::Postgres::gets(
                connections,
                &sample,
                growth_seconds,
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
        // Opening the archive of this size: stopped cleanly (SIGTERM), then
        // killed (the next start checks every record and index first). The
        // growth goes on in the server started last.
        server.stop();
        let clean = ServerProcess::start(&growth_dir, &server_args);
        let clean_open = clean.startup;
        clean.kill();
        server = ServerProcess::start(&growth_dir, &server_args);
        channel = runtime.block_on(connect(server.addr));
        // Get again on the restarted server, seconds after the growth
        // row's: what is left of the cost once nothing is being written.
        let get_again = runtime.block_on(get_load(&channel, &sample, 16, growth_seconds));
        open_rows.push(open_row(
            &size.to_string(),
            clean_open,
            &server,
            Some((&ours.get, &get_again)),
        ));
        loaded = size;
    }
    print_rows(
        "4. Growth and cost: the archive (a server process; disk = allocated bytes of its data dir) and\n   \
         PostgreSQL (disk = pg_total_relation_size: table, TOAST and indexes) on the same articles.\n   \
         raw = bytes of the article fields; get at concurrency 16; a/day = articles in the days asked.\n   \
         archive/PG above 1 is better for the archive in ingest and req/s, below 1 in latency and disk.\n   \
         The server restarts after each size (below), so peak MiB is the peak since the last size.",
        GROWTH_HEADER,
        &rows,
    );
    if let Err(reason) = &postgres {
        println!("PostgreSQL twins skipped: {reason}");
    }
    print_rows(
        "4b. Opening the archive after each size: seconds from spawning a new server process on the\n    \
         data dir until it logs \"listening on\" (OS page cache warm). After a clean stop (SIGTERM)\n    \
         it only opens; after kill -9 it first checks every record and index (the check's own time\n    \
         and what it counted are from its log line). The first row is an empty data dir: the floor.\n    \
         Then Get (concurrency 16, the same ids) on the server started after kill -9, which goes on\n    \
         with the growth, against the growth row's Get (measured right after that size's ingest).",
        OPEN_HEADER,
        &open_rows,
    );
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
        "disk per article (bytes)",
        runtime.block_on(pg.disk_bytes()) as f64 / n as f64,
        disk_per_article,
        "lower is better",
    ));
    print_rows(
        &format!("5. PostgreSQL on the {n} articles of sections 1-3"),
        &twin_header(),
        &rows,
    );
}
