//! How fast the archive loads, next to sled itself.
//!
//! `cargo bench --bench archive [-- --articles N]` starts the real server on a
//! temporary data directory, drives it through the generated client over
//! TCP, and prints a table. Every figure stands next to a baseline measured
//! in the same run on the same machine:
//!
//! - ingest through one stream and through 4 concurrent streams, against the
//!   same records written straight into sled with the store's own key layout
//!   and record format, in batches of the writer's size, each flushed (the
//!   ceiling the service can reach);
//! - `article-archive ingest` loading the same articles from a JSON Lines
//!   file, against the plain Rust client streaming pre-built messages.
//!
//! Articles are realistic: the 5.6 KB seed article as body, with varied
//! titles, urls, sources and dates spread over 1851-2030.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use article_archive::{
    article::{Article, Timestamp},
    proto::{self, archive_service_client::ArchiveServiceClient, IngestOutcome},
    store::{keys, record, BatchLimits},
    ServeOptions, Store, StoreConfig,
};
use sled::Transactional;
use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

struct Options {
    articles: usize,
}

fn parse_options() -> Options {
    let mut options = Options { articles: 20_000 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--articles" => {
                options.articles = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--articles takes a number")
            }
            "--large" => options.articles = 1_000_000,
            // cargo bench passes --bench; ignore what is not ours.
            _ => {}
        }
    }
    options
}

/// Deterministic, realistic articles: seed body, dates over 1851-2030.
fn articles(n: usize) -> Vec<proto::Article> {
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/seed-article.txt"
    ))
    .expect("the seed fixture");
    const FIRST: i64 = -3_755_289_600; // 1851-01-01
    const LAST: i64 = 1_924_992_000; // 2031-01-01
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let seconds = FIRST + (next() % (LAST - FIRST) as u64) as i64;
            let source = format!("paper{}.example.com", next() % 50);
            proto::Article {
                url: format!("https://{source}/news/{i}/story"),
                title: format!("Story {i}: {}", &body[..60]),
                body: format!("{i} {body}"),
                published_at: Some(prost_types::Timestamp {
                    seconds,
                    nanos: (i % 1000) as i32,
                }),
                authors: vec![format!("Reporter {}", next() % 500)],
                source,
                section: ["World", "Politics", "Business", "Science"][i % 4].into(),
                tags: vec!["news".into()],
                language: "en".into(),
                ..Default::default()
            }
        })
        .collect()
}

fn bytes_of(articles: &[proto::Article]) -> usize {
    articles.iter().map(|a| a.body.len() + a.title.len()).sum()
}

struct Row {
    name: String,
    articles: usize,
    bytes: usize,
    elapsed: Duration,
    baseline: Option<f64>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.articles as f64 / self.elapsed.as_secs_f64()
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<44} {:>9} {:>9} {:>11} {:>8} {:>9}",
        "workload", "articles", "seconds", "articles/s", "MB/s", "ratio"
    );
    for row in rows {
        let ratio = row
            .baseline
            .map_or(String::from("-"), |b| format!("{:.2}", row.rate() / b));
        println!(
            "{:<44} {:>9} {:>9.2} {:>11.0} {:>8.1} {:>9}",
            row.name,
            row.articles,
            row.elapsed.as_secs_f64(),
            row.rate(),
            row.bytes as f64 / 1e6 / row.elapsed.as_secs_f64(),
            ratio
        );
    }
}

/// The ceiling: validation, hashing, record encoding and key layout as the
/// store does them, written in the writer's batch size with one transaction
/// and one flush per batch, no gRPC, no queue.
fn raw_sled_ingest(dir: &Path, input: &[proto::Article]) -> Duration {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(StoreConfig::new(dir).cache_capacity_bytes)
        .open()
        .unwrap();
    let articles_tree = db.open_tree("articles").unwrap();
    let by_date = db.open_tree("by_date").unwrap();
    let started = Instant::now();
    for chunk in input.chunks(BatchLimits::default().max_articles) {
        let now = Timestamp::now();
        let mut records = sled::Batch::default();
        let mut index = sled::Batch::default();
        for raw in chunk {
            let article = Article::from_proto(raw.clone()).unwrap();
            let content = article.content();
            records.insert(
                article.id().as_str(),
                record::encode(content, content.sha256(), now),
            );
            index.insert(keys::date_key(content.published_at, article.id()), &[][..]);
        }
        (&articles_tree, &by_date)
            .transaction(|(a, d)| {
                a.apply_batch(&records)?;
                d.apply_batch(&index)?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .unwrap();
        db.flush().unwrap();
    }
    started.elapsed()
}

struct Server {
    addr: std::net::SocketAddr,
    client: ArchiveServiceClient<Channel>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<article_archive::Result<()>>,
}

async fn start_server(dir: &Path) -> Server {
    let store = Store::open(&StoreConfig::new(dir)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(article_archive::run(
        listener,
        store,
        async move {
            let _ = signal.await;
        },
        ServeOptions::default(),
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        addr,
        client: ArchiveServiceClient::new(channel),
        stop,
        task,
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Streams `input` through `streams` concurrent IngestArticles calls and
/// returns the time until the last acknowledgement.
async fn service_ingest(dir: &Path, input: &[proto::Article], streams: usize) -> Duration {
    let server = start_server(dir).await;
    let per_stream = input.len().div_ceil(streams);
    let requests: Vec<Vec<proto::IngestArticlesRequest>> = input
        .chunks(per_stream)
        .map(|chunk| {
            chunk
                .iter()
                .map(|a| proto::IngestArticlesRequest {
                    article: Some(a.clone()),
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for batch in requests {
        let mut client = server.client.clone();
        tasks.push(tokio::spawn(async move {
            let expected = batch.len();
            let mut responses = client
                .ingest_articles(tokio_stream::iter(batch))
                .await
                .unwrap()
                .into_inner();
            let mut acknowledged = 0;
            while let Some(response) = responses.next().await {
                let response = response.unwrap();
                assert_eq!(
                    response.outcome,
                    IngestOutcome::Created as i32,
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
    let elapsed = started.elapsed();
    server.stop().await;
    elapsed
}

fn main() {
    let options = parse_options();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "article-archive benchmark: {} articles, {} CPUs",
        options.articles,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let input = articles(options.articles);
    let bytes = bytes_of(&input);
    let mut rows = Vec::new();

    let dir = tempfile::tempdir().unwrap();
    let baseline = raw_sled_ingest(&dir.path().join("raw"), &input);
    let baseline_rate = options.articles as f64 / baseline.as_secs_f64();
    rows.push(Row {
        name: "ingest: raw sled, batch + flush (baseline)".into(),
        articles: options.articles,
        bytes,
        elapsed: baseline,
        baseline: None,
    });
    for streams in [1, 4] {
        let elapsed = runtime.block_on(service_ingest(
            &dir.path().join(format!("svc{streams}")),
            &input,
            streams,
        ));
        rows.push(Row {
            name: format!("ingest: gRPC, {streams} stream(s)"),
            articles: options.articles,
            bytes,
            elapsed,
            baseline: Some(baseline_rate),
        });
    }
    let plain_client_rate = rows[1].rate();

    let file = dir.path().join("articles.jsonl");
    let lines: String = input
        .iter()
        .map(|a| article_archive::jsonl::to_line(a) + "\n")
        .collect();
    std::fs::write(&file, lines).unwrap();
    let elapsed = runtime.block_on(cli_ingest(&dir.path().join("cli"), &file));
    rows.push(Row {
        name: "ingest: CLI from JSON Lines (vs 1 stream)".into(),
        articles: options.articles,
        bytes,
        elapsed,
        baseline: Some(plain_client_rate),
    });
    print_table(&rows);
}

/// Runs `article-archive ingest FILE` against a fresh server and returns its
/// wall time (process start to exit).
async fn cli_ingest(dir: &Path, file: &Path) -> Duration {
    let server = start_server(dir).await;
    let addr = server.addr;
    let file = file.to_path_buf();
    let elapsed = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_article-archive"))
            .args(["ingest", "--server", &format!("http://{addr}")])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        started.elapsed()
    })
    .await
    .unwrap();
    server.stop().await;
    elapsed
}
