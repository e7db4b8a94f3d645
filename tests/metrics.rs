//! The `/metrics` endpoint over real sockets: scraped over HTTP after known
//! work, read by `promtool`, and scraped by a real Prometheus server.

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use article_archive::{
    auth::Tokens, metrics::MetricsListener, proto, service::CallLimits, ServeOptions,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::{metadata::MetadataValue, Code, Request};

/// A GET over a fresh connection (`Connection: close`), as a scraper does
/// it: the status and the body.
async fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String) {
    try_http_get(addr, path, accept).await.unwrap()
}

/// [`http_get`], with the I/O error of a server that is not listening
/// (yet).
async fn try_http_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.into() }))
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// One scrape in the Prometheus text format, parsed.
struct Scrape {
    text: String,
    /// (metric name, labels) → value.
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Scrape {
    async fn of(addr: SocketAddr) -> Self {
        let (status, text) = http_get(addr, "/metrics", None).await;
        assert_eq!(status, 200, "{text}");
        Self::parse(text)
    }

    /// Parses sample lines `name{a="x",b="y"} value`. Label values here
    /// hold no quotes or commas (they come from fixed lists).
    fn parse(text: String) -> Self {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("a value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap();
                    let labels = labels
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            samples.insert((name.to_owned(), labels), value);
        }
        Self { text, samples }
    }

    /// The value of the one series of `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Like [`Scrape::get`], failing the test (with the scrape) when the
    /// series is missing.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", self.text))
    }

    /// Finished calls of an archive RPC with `code`.
    fn calls(&self, method: &str, code: &str) -> f64 {
        let labels = [
            ("service", "archive.v1.ArchiveService"),
            ("method", method),
            ("code", code),
        ];
        let requests = self
            .get("archive_rpc_requests_total", &labels)
            .unwrap_or(0.0);
        let durations = self
            .get("archive_rpc_duration_seconds_count", &labels)
            .unwrap_or(0.0);
        assert_eq!(requests, durations, "every call has a duration");
        requests
    }

    fn archive_in_flight(&self, method: &str) -> f64 {
        self.value(
            "archive_rpc_in_flight",
            &[("service", "archive.v1.ArchiveService"), ("method", method)],
        )
    }
}

/// A server with metrics on a listener of its own, and that listener's
/// address.
async fn server_with_metrics(options: ServeOptions) -> (TestServer, SocketAddr) {
    server_with_metrics_in(tempfile::tempdir().unwrap(), options).await
}

/// The same over `dir`, which may hold an archive already.
async fn server_with_metrics_in(
    dir: tempfile::TempDir,
    mut options: ServeOptions,
) -> (TestServer, SocketAddr) {
    let metrics = MetricsListener::bind("127.0.0.1:0").await.unwrap();
    let addr = metrics.local_addr();
    options.metrics = Some(metrics);
    let server = TestServer::start_in(dir, options).await;
    (server, addr)
}

/// Scrapes until `done` holds (a watcher's cursor moves just after the
/// client received the change), for at most five seconds.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = Scrape::of(addr).await;
        if done(&scrape) || Instant::now() > deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// Ingest (created, updated, unchanged, rejected), Get, a Get that fails,
/// List and Delete move the RPC, ingest, writer and store metrics by
/// exactly what was done.
#[tokio::test]
async fn counters_move_by_exactly_what_was_done() {
    let (mut server, metrics) = server_with_metrics(ServeOptions::default()).await;
    let before = Scrape::of(metrics).await;
    assert_eq!(before.value("archive_store_articles", &[]), 0.0);
    assert_eq!(
        before.value("archive_store_start_check", &[("state", "not_run")]),
        1.0
    );

    let mut changed = article("m2", 1_700_000_000);
    changed.body = "Body of m2, corrected".into();
    let invalid = proto::Article {
        id: "m-invalid".into(),
        ..Default::default()
    };
    let sent = vec![
        article("m1", 1_700_000_000),
        article("m2", 1_700_000_000),
        article("m3", 1_700_000_000),
        article("m1", 1_700_000_000), // the same again: unchanged
        changed.clone(),              // new content: updated
        invalid,                      // no title, no body: rejected
    ];
    let text_bytes: usize =
        sent[..3].iter().map(|a| a.body.len()).sum::<usize>() + changed.body.len();
    let acks = ingest(&mut server.client, sent).await;
    let outcomes: Vec<_> = acks.iter().map(outcome).collect();
    use proto::IngestOutcome::*;
    assert_eq!(
        outcomes,
        [Created, Created, Created, Unchanged, Updated, Rejected]
    );

    for id in ["m1", "m2"] {
        let request = proto::GetArticleRequest {
            id: id.into(),
            revision: 0,
        };
        server.client.get_article(request).await.unwrap();
    }
    let missing = proto::GetArticleRequest {
        id: "nowhere".into(),
        revision: 0,
    };
    let failed = server.client.get_article(missing).await.unwrap_err();
    assert_eq!(failed.code(), Code::NotFound);
    let page = server
        .client
        .list_articles(proto::ListArticlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.articles.len(), 3);
    let delete = proto::DeleteArticleRequest {
        id: "m3".into(),
        reason: "test".into(),
        allow_reingest: false,
    };
    server.client.delete_article(delete).await.unwrap();

    let after = Scrape::of(metrics).await;
    let outcome = |o| after.value("archive_ingest_articles_total", &[("outcome", o)]);
    assert_eq!(outcome("created"), 3.0);
    assert_eq!(outcome("updated"), 1.0);
    assert_eq!(outcome("unchanged"), 1.0);
    assert_eq!(outcome("rejected"), 1.0);
    assert_eq!(
        after.value("archive_ingest_text_bytes_total", &[]),
        text_bytes as f64
    );
    assert_eq!(after.calls("IngestArticles", "OK"), 1.0);
    assert_eq!(after.calls("GetArticle", "OK"), 2.0);
    assert_eq!(after.calls("GetArticle", "NOT_FOUND"), 1.0);
    assert_eq!(after.calls("ListArticles", "OK"), 1.0);
    assert_eq!(after.calls("DeleteArticle", "OK"), 1.0);
    assert_eq!(after.calls("ListArticles", "NOT_FOUND"), 0.0);
    for method in ["GetArticle", "IngestArticles", "ListArticles"] {
        assert_eq!(after.archive_in_flight(method), 0.0, "{method}");
    }
    // Five articles and one deletion reached the writer, in one batch or
    // more; three were created and one deleted.
    let batches = after.value("archive_writer_batches_total", &[]);
    assert!(
        batches >= 2.0,
        "the deletion came after the stream: {batches}"
    );
    assert_eq!(
        after.value("archive_writer_batch_operations_count", &[]),
        batches
    );
    assert_eq!(after.value("archive_writer_batch_operations_sum", &[]), 6.0);
    assert_eq!(
        after.value("archive_writer_commit_seconds_count", &[]),
        batches
    );
    assert_eq!(
        after.value("archive_writer_queue_wait_seconds_count", &[]),
        6.0
    );
    assert_eq!(after.value("archive_store_articles", &[]), 2.0);
    // Four versions and a deletion, each a change of the feed.
    assert_eq!(after.value("archive_changes_durable_sequence", &[]), 5.0);
    assert!(after.value("archive_store_disk_bytes", &[("part", "record_log")]) > 0.0);
    assert!(after.value("archive_store_filesystem_free_bytes", &[]) > 0.0);
    assert_eq!(
        after.value("archive_store_writes_refused", &[("reason", "disk_low")]),
        0.0
    );
    assert_eq!(after.value("archive_writer_queue_operations", &[]), 0.0);
    assert!(after.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(after.value("process_open_fds", &[]) > 0.0);
    let version = after
        .samples
        .keys()
        .find(|(name, _)| name == "archive_build_info")
        .map(|(_, labels)| labels.clone())
        .expect("build info");
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(!version["commit"].is_empty());

    // Not part of the gRPC server: no limit, no token, and a 404 elsewhere.
    assert_eq!(http_get(metrics, "/", None).await.0, 404);
    let (status, openmetrics) =
        http_get(metrics, "/metrics", Some("application/openmetrics-text")).await;
    assert_eq!(status, 200);
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    let mut dir = server.stop().await;

    // A new server on the same archive starts the gauge from the stored
    // counters: the two live articles, not the deleted one. Then once more
    // with a year counter damaged (not 8 bytes): the server still starts,
    // and counts the ids index instead.
    for damage in [false, true] {
        if damage {
            let db = open_sled(&dir.path().join("data"));
            let counts = db.open_tree("counts").unwrap();
            let (year, _) = counts.scan_prefix(b"y").next().unwrap().unwrap();
            counts.insert(year, &b"bad"[..]).unwrap();
            db.flush().unwrap();
        }
        let (server, addr) = server_with_metrics_in(dir, ServeOptions::default()).await;
        assert_eq!(
            Scrape::of(addr).await.value("archive_store_articles", &[]),
            2.0,
            "damaged counter: {damage}"
        );
        dir = server.stop().await;
    }
}

/// On PostgreSQL the writer's batches are counted as on sled, and the
/// live-article gauge follows the count the writers keep in the database,
/// so a second server on the same database starts from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
)]
async fn on_postgres_the_writer_and_the_live_articles_are_counted() {
    let with_metrics = || async {
        let listener = MetricsListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr();
        let options = ServeOptions {
            metrics: Some(listener),
            ..ServeOptions::default()
        };
        (options, addr)
    };
    let (options, metrics) = with_metrics().await;
    let Some(mut server) = TestServer::start_on(Engine::Postgres, options).await else {
        return;
    };
    let mut changed = article("p2", 1_700_000_000);
    changed.body = "Body of p2, corrected".into();
    let acks = ingest(
        &mut server.client,
        vec![
            article("p1", 1_700_000_000),
            article("p2", 1_700_000_000),
            article("p3", 1_700_000_000),
            changed,
        ],
    )
    .await;
    assert_eq!(acks.len(), 4);
    server
        .client
        .delete_article(proto::DeleteArticleRequest {
            id: "p3".into(),
            reason: "test".into(),
            allow_reingest: false,
        })
        .await
        .unwrap();
    let after = Scrape::of(metrics).await;
    let outcome = |o| after.value("archive_ingest_articles_total", &[("outcome", o)]);
    assert_eq!((outcome("created"), outcome("updated")), (3.0, 1.0));
    assert_eq!(after.value("archive_writer_batch_operations_sum", &[]), 5.0);
    assert_eq!(after.value("archive_store_articles", &[]), 2.0);
    assert_eq!(after.value("archive_changes_durable_sequence", &[]), 5.0);
    assert_eq!(
        after.value(
            "archive_store_writes_refused",
            &[("reason", "database_unreachable")]
        ),
        0.0
    );

    // Another server on the same database reads the count at start.
    let Backend::Postgres(url) = server.backend.clone() else {
        unreachable!("started on PostgreSQL")
    };
    let (options, second_metrics) = with_metrics().await;
    let second = TestServer::start_backend(
        tempfile::tempdir().unwrap(),
        Backend::Postgres(url),
        options,
        |_| {},
    )
    .await;
    let scrape = Scrape::of(second_metrics).await;
    assert_eq!(scrape.value("archive_store_articles", &[]), 2.0);
    assert_eq!(scrape.value("archive_changes_durable_sequence", &[]), 5.0);
    second.stop().await;
    server.stop().await;
}

/// Refusals for tokens and limits, open watchers and exports, the lag of a
/// watcher that does not read, and a connection closed by the handshake
/// timeout are each counted once.
#[tokio::test]
async fn refusals_watchers_exports_and_silent_connections_are_counted() {
    let options = ServeOptions {
        tokens: Tokens::new(&["w"], &["r"]),
        limits: CallLimits {
            streams: 1,
            calls: 1024,
        },
        handshake_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let (mut server, metrics) = server_with_metrics(options).await;
    let client = &mut server.client;

    let get = proto::GetArticleRequest {
        id: "a".into(),
        revision: 0,
    };
    let refused = client.get_article(get).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let delete = proto::DeleteArticleRequest {
        id: "a".into(),
        ..Default::default()
    };
    let refused = client
        .delete_article(with_token(delete, "r"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // 8 MB of changes: more than a watcher holds (a chunk and its outbox,
    // 1 MiB each) and the connection's windows.
    const ARTICLES: u64 = 2000;
    let articles = (0..ARTICLES).map(|i| {
        let mut article = article(&format!("w{i}"), 1_700_000_000 + i as i64);
        article.body = format!("{i} {}", "word ".repeat(800));
        article
    });
    let requests = tokio_stream::iter(articles.map(request));
    let mut acks = client
        .ingest_articles(with_token(requests, "w"))
        .await
        .unwrap()
        .into_inner();
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }

    // A watcher that reads nothing stops once its outbox and the
    // connection's windows are full, behind the newest change.
    let watch = proto::WatchChangesRequest {
        after_sequence: 0,
        follow: true,
        view: proto::ArticleView::Full as i32,
        filter: None,
    };
    let mut changes = client
        .watch_changes(with_token(watch.clone(), "r"))
        .await
        .unwrap()
        .into_inner();
    let over_limit = client
        .watch_changes(with_token(watch, "r"))
        .await
        .unwrap_err();
    assert_eq!(over_limit.code(), Code::ResourceExhausted);
    let stalled = scrape_until(metrics, |s| {
        let lag = s.get("archive_watchers_max_lag_changes", &[]);
        lag > Some(0.0) && lag < Some(ARTICLES as f64)
    })
    .await;
    assert_eq!(stalled.value("archive_watchers_open", &[]), 1.0);
    assert_eq!(stalled.archive_in_flight("WatchChanges"), 1.0);
    let lag = stalled.value("archive_watchers_max_lag_changes", &[]);
    assert!(
        lag > 0.0 && lag < ARTICLES as f64,
        "the watcher is behind: {lag}"
    );
    for _ in 0..ARTICLES {
        changes.next().await.unwrap().unwrap();
    }
    let caught_up = scrape_until(metrics, |s| {
        s.get("archive_watchers_max_lag_changes", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(
        caught_up.value("archive_watchers_max_lag_changes", &[]),
        0.0
    );
    drop(changes);
    let gone = scrape_until(metrics, |s| {
        s.get("archive_watchers_open", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(gone.value("archive_watchers_open", &[]), 0.0);

    // An export that is not read stays open.
    let export = client
        .export_articles(with_token(proto::ExportArticlesRequest::default(), "r"))
        .await
        .unwrap()
        .into_inner();
    let exporting = Scrape::of(metrics).await;
    assert_eq!(exporting.value("archive_exports_open", &[]), 1.0);
    drop(export);
    let exported = scrape_until(metrics, |s| s.get("archive_exports_open", &[]) == Some(0.0)).await;
    assert_eq!(exported.value("archive_exports_open", &[]), 0.0);

    // A connection that never speaks is closed by the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut nothing = [0u8; 1];
    assert_eq!(silent.read(&mut nothing).await.unwrap(), 0, "closed");

    let scrape = Scrape::of(metrics).await;
    assert_eq!(
        scrape.value("archive_auth_refused_total", &[("code", "UNAUTHENTICATED")]),
        1.0
    );
    assert_eq!(
        scrape.value(
            "archive_auth_refused_total",
            &[("code", "PERMISSION_DENIED")]
        ),
        1.0
    );
    assert_eq!(scrape.calls("GetArticle", "UNAUTHENTICATED"), 1.0);
    assert_eq!(scrape.calls("DeleteArticle", "PERMISSION_DENIED"), 1.0);
    assert_eq!(
        scrape.value("archive_admission_refused_total", &[("kind", "streams")]),
        1.0
    );
    assert_eq!(
        scrape.value("archive_admission_refused_total", &[("kind", "calls")]),
        0.0
    );
    assert_eq!(scrape.calls("WatchChanges", "RESOURCE_EXHAUSTED"), 1.0);
    assert_eq!(scrape.calls("WatchChanges", "CANCELLED"), 1.0);
    assert_eq!(scrape.calls("ExportArticles", "CANCELLED"), 1.0);
    assert_eq!(
        scrape.value(
            "archive_connections_closed_total",
            &[("reason", "handshake_timeout")]
        ),
        1.0
    );
    server.stop().await;
}

/// `serve --metrics-listen 127.0.0.1:0` logs the address it bound after
/// the gRPC one, serves the metrics there (the check at start included),
/// and stops with the server.
#[tokio::test]
async fn the_serve_flag_binds_logs_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(
        &dir.path().join("data"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let metrics: SocketAddr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server logs its metrics address; it logged {log:#?}"));
        if let Some(addr) = line.split("metrics listening on ").nth(1) {
            break addr.split_whitespace().next().unwrap().parse().unwrap();
        }
        log.push(line);
    };
    assert!(
        log.iter().any(|l| l.contains(" listening on ")),
        "the gRPC address is logged first: {log:#?}"
    );
    let scrape = Scrape::of(metrics).await;
    assert_eq!(
        scrape.value("archive_store_start_check", &[("state", "clean_stop")]),
        1.0
    );
    assert_eq!(
        scrape.value(
            "archive_rpc_in_flight",
            &[("service", "other"), ("method", "other")]
        ),
        0.0
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    assert!(
        tokio::net::TcpStream::connect(metrics).await.is_err(),
        "the metrics listener closes with the server"
    );
}

/// Sends some traffic so that most metrics have series: ingest, a Get, a
/// failed Get.
async fn some_traffic(server: &mut TestServer, articles: u64) {
    let sent = (0..articles)
        .map(|i| article(&format!("p{i}"), 1_700_000_000 + i as i64))
        .collect();
    ingest(&mut server.client, sent).await;
    let get = |id: &str| proto::GetArticleRequest {
        id: id.into(),
        revision: 0,
    };
    server.client.get_article(get("p0")).await.unwrap();
    server.client.get_article(get("missing")).await.unwrap_err();
}

/// `promtool check metrics` (the linter of the Prometheus project) accepts
/// a scrape: names, types, units, help and histograms follow the
/// conventions.
#[tokio::test]
#[cfg_attr(
    missing_prometheus,
    ignore = "promtool is not on PATH (apt-get install prometheus)"
)]
async fn promtool_accepts_a_scrape() {
    let (mut server, metrics) = server_with_metrics(ServeOptions::default()).await;
    some_traffic(&mut server, 3).await;
    let scrape = Scrape::of(metrics).await;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics: {said}");
    assert!(said.trim().is_empty(), "promtool found problems: {said}");
    server.stop().await;
}

/// A Prometheus server process, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `prometheus` on a free loopback port with its config and
    /// storage in `dir`, scraping `target` every 200 ms.
    fn start(dir: &Path, target: SocketAddr) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n\
                 scrape_configs:\n  - job_name: archive\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // Prometheus binds by itself; the port is free a moment before.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus runs");
        Self { child, addr }
    }

    /// The result of an instant query through the HTTP API, once it has
    /// one that `accept` takes (Prometheus needs a scrape or two first).
    async fn query_until(
        &self,
        query: &str,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let asked = try_http_get(self.addr, &path, None);
            if let Ok(Ok((200, body))) = tokio::time::timeout(Duration::from_secs(5), asked).await {
                let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
                if accept(&answer) {
                    return Some(answer);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first series of an instant query's answer.
fn first_value(answer: &serde_json::Value) -> Option<f64> {
    answer["data"]["result"].get(0)?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// A real Prometheus server on loopback scrapes the archive (OpenMetrics,
/// as Prometheus asks for it) and answers a query for
/// `archive_ingest_articles_total` with what was ingested.
#[tokio::test]
#[cfg_attr(
    missing_prometheus,
    ignore = "prometheus is not on PATH (apt-get install prometheus)"
)]
async fn a_real_prometheus_scrapes_the_archive() {
    const ARTICLES: u64 = 7;
    let (mut server, metrics) = server_with_metrics(ServeOptions::default()).await;
    some_traffic(&mut server, ARTICLES).await;
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), metrics);

    let query = "archive_ingest_articles_total{job=\"archive\",outcome=\"created\"}";
    let answer = prometheus
        .query_until(query, |a| first_value(a) == Some(ARTICLES as f64))
        .await;
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let answer =
        answer.unwrap_or_else(|| panic!("Prometheus never saw {ARTICLES}; its log:\n{log}"));
    println!("GET /api/v1/query?query={query}\n{answer}");
    let series = &answer["data"]["result"][0]["metric"];
    assert_eq!(series["__name__"], "archive_ingest_articles_total");
    assert_eq!(series["instance"], metrics.to_string());

    let up = prometheus
        .query_until("up{job=\"archive\"}", |a| first_value(a) == Some(1.0))
        .await;
    assert!(up.is_some(), "the target is up");
    let failed = "archive_rpc_requests_total{method=\"GetArticle\",code=\"NOT_FOUND\"}";
    let failed = prometheus
        .query_until(failed, |a| first_value(a) == Some(1.0))
        .await;
    println!("{}", failed.expect("the failed Get is there"));
    drop(prometheus);
    server.stop().await;
}

/// Articles/s of one ingest stream of `count` articles of about 5 KB.
async fn ingest_rate(client: &mut Client, prefix: &str, count: u64) -> f64 {
    let body = "word ".repeat(1000);
    let sent = (0..count)
        .map(|i| {
            let mut a = article(&format!("{prefix}-{i}"), 1_700_000_000 + i as i64);
            a.body = format!("{i} {body}");
            a
        })
        .collect();
    let started = Instant::now();
    let acks = ingest(client, sent).await;
    assert_eq!(acks.len() as u64, count);
    count as f64 / started.elapsed().as_secs_f64()
}

/// GetArticle calls/s at `concurrency` for `seconds`, over ids
/// `{prefix}-0` to `{prefix}-{count - 1}`.
async fn get_rate(
    client: &Client,
    prefix: &str,
    count: u64,
    concurrency: u64,
    seconds: f64,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let mut client = client.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut done = 0u64;
                let mut i = task;
                while Instant::now() < deadline {
                    let request = proto::GetArticleRequest {
                        id: format!("{prefix}-{}", i % count),
                        revision: 0,
                    };
                    client.get_article(request).await.unwrap();
                    done += 1;
                    i += concurrency;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.unwrap();
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// CPU time the process `pid` has used so far (all its threads, those
/// that ended too), from `/proc/PID/stat`, in seconds (10 ms steps).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; the list starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// A measurement, not a check (BENCHMARKS.md "Metrics overhead"): two
/// server processes side by side, one with `--metrics-listen`, given the
/// same ingest and Get load in turns (which goes first alternates), so
/// that what else the machine does falls on both alike. Wall-clock rates
/// on a shared machine move by tens of percent from one second to the
/// next; the CPU time each server process spends per article and per Get
/// is what recording would add to. Prints each round and the totals. Run
/// it in release:
/// `cargo test --release --test metrics metrics_overhead -- --ignored --nocapture`
/// (`ARCHIVE_OVERHEAD_ROUNDS`, default 10; `ARCHIVE_OVERHEAD_DIR` for the
/// data directories' parent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
async fn metrics_overhead_side_by_side() {
    let rounds: u64 = std::env::var("ARCHIVE_OVERHEAD_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    const ARTICLES: u64 = 4000;
    const GET_SECONDS: f64 = 2.0;
    // A tmpfs (/dev/shm) takes the disk, which others on the machine share,
    // out of the ingest figures.
    let dir = match std::env::var_os("ARCHIVE_OVERHEAD_DIR") {
        Some(parent) => tempfile::tempdir_in(parent).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let servers = [
        ServerProcess::start(&dir.path().join("off"), &[]),
        ServerProcess::start(&dir.path().join("on"), &["--metrics-listen", "127.0.0.1:0"]),
    ];
    let mut clients = [servers[0].client().await, servers[1].client().await];
    let pids = [servers[0].child.id(), servers[1].child.id()];
    // Per server: articles, ingest seconds and CPU; gets, get seconds and CPU.
    let mut totals = [[0.0f64; 6]; 2];
    let (mut ingest_ratios, mut get_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let prefix = format!("r{round}");
        let mut rates = [[0.0; 2]; 2];
        for turn in 0..2 {
            let s = usize::try_from((round + turn) % 2).unwrap();
            let cpu = cpu_seconds(pids[s]);
            let started = Instant::now();
            rates[s][0] = ingest_rate(&mut clients[s], &prefix, ARTICLES).await;
            totals[s][0] += ARTICLES as f64;
            totals[s][1] += started.elapsed().as_secs_f64();
            totals[s][2] += cpu_seconds(pids[s]) - cpu;
        }
        for turn in 0..2 {
            let s = usize::try_from((round + turn) % 2).unwrap();
            let cpu = cpu_seconds(pids[s]);
            let rate = get_rate(&clients[s], &prefix, ARTICLES, 16, GET_SECONDS).await;
            rates[s][1] = rate;
            totals[s][3] += rate * GET_SECONDS;
            totals[s][4] += GET_SECONDS;
            totals[s][5] += cpu_seconds(pids[s]) - cpu;
        }
        println!(
            "round {round}: ingest off {:.0} on {:.0} a/s; get c=16 off {:.0} on {:.0} req/s",
            rates[0][0], rates[1][0], rates[0][1], rates[1][1]
        );
        ingest_ratios.push(rates[1][0] / rates[0][0]);
        get_ratios.push(rates[1][1] / rates[0][1]);
    }
    for (s, name) in ["off", "on "].iter().enumerate() {
        let t = totals[s];
        println!(
            "metrics {name}: ingest {:.0} a/s, server CPU {:.1} us/article; \
             get c=16 {:.0} req/s, server CPU {:.1} us/get",
            t[0] / t[1],
            t[2] / t[0] * 1e6,
            t[3] / t[4],
            t[5] / t[3] * 1e6
        );
    }
    let (off, on) = (totals[0], totals[1]);
    println!(
        "on/off over {rounds} rounds: ingest rate {:.3} (median of rounds {:.3}), CPU per article {:.3}; \
         get rate {:.3} (median of rounds {:.3}), CPU per get {:.3}",
        (on[0] / on[1]) / (off[0] / off[1]),
        median(ingest_ratios),
        (on[2] / on[0]) / (off[2] / off[0]),
        (on[3] / on[4]) / (off[3] / off[4]),
        median(get_ratios),
        (on[5] / on[3]) / (off[5] / off[3]),
    );
    for server in servers {
        server.signal("TERM");
        assert!(server.wait(Duration::from_secs(30)).0.success());
    }
}
