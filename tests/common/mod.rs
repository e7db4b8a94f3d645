//! The test harness: a real server on 127.0.0.1:0 over a temporary data
//! directory, reached through the generated client over TCP.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod postgres;
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc as std_mpsc,
    time::Duration,
};

use article_archive::{
    proto::{self, archive_service_client::ArchiveServiceClient},
    store::postgres::PostgresConfig,
    ServeOptions, Store, StoreConfig,
};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

pub type Client = ArchiveServiceClient<Channel>;

/// The storage engines a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A sled data directory in a temporary directory.
    Sled,
    /// A new database on the test process's PostgreSQL cluster
    /// ([`postgres::cluster`]).
    Postgres,
}

/// Runs each named `async fn name(engine: Engine)` as two tests,
/// `sled_engine::name` and `postgres_engine::name`: the API suite is written
/// once and runs on both engines.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sled_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Engine::Sled).await
                }
            )*
        }
        mod postgres_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(
                    missing_postgres,
                    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
                )]
                async fn $name() {
                    super::$name($crate::common::Engine::Postgres).await
                }
            )*
        }
    };
}

/// Starts a server on `engine`, or returns from the test when the engine
/// cannot run here (which fails under CI and says so loudly elsewhere).
#[macro_export]
macro_rules! start_or_skip {
    ($engine:expr) => {
        start_or_skip!($engine, Default::default())
    };
    ($engine:expr, $options:expr) => {
        match $crate::common::TestServer::start_on($engine, $options).await {
            Some(server) => server,
            None => return,
        }
    };
}

/// Where a test server keeps the archive.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A data directory, `data` inside the test's temporary directory.
    Sled,
    /// A PostgreSQL database, by url.
    Postgres(String),
}

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: Client,
    /// A handle on the same store, for consistency checks.
    pub store: Store,
    pub dir: TempDir,
    pub backend: Backend,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<article_archive::Result<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_in(TempDir::new().unwrap(), ServeOptions::default()).await
    }

    /// Starts a server on a fresh archive of `engine`; `None` (after
    /// saying why) when that engine cannot run here.
    pub async fn start_on(engine: Engine, options: ServeOptions) -> Option<Self> {
        Self::start_on_configured(engine, options, |_| {}).await
    }

    /// Like [`TestServer::start_on`], with the store settings changed by
    /// `configure` (those both engines have: revisions kept, batches,
    /// queues).
    pub async fn start_on_configured(
        engine: Engine,
        options: ServeOptions,
        configure: impl Fn(&mut StoreConfig),
    ) -> Option<Self> {
        let backend = match engine {
            Engine::Sled => Backend::Sled,
            Engine::Postgres => {
                let name = std::thread::current()
                    .name()
                    .unwrap_or("a PostgreSQL test")
                    .to_owned();
                Backend::Postgres(postgres::database_or_skip(&name).await?)
            }
        };
        Some(Self::start_backend(TempDir::new().unwrap(), backend, options, configure).await)
    }

    /// Stops the server and starts a new one on the same archive (the same
    /// data directory, or the same database).
    pub async fn restart(self, options: ServeOptions) -> Self {
        let backend = self.backend.clone();
        let dir = self.stop().await;
        Self::start_backend(dir, backend, options, |_| {}).await
    }

    /// Starts a server over `dir`, which may hold an archive already.
    pub async fn start_in(dir: TempDir, options: ServeOptions) -> Self {
        Self::start_configured(dir, options, |_| {}).await
    }

    /// Starts a server over `dir` with store settings changed by `configure`.
    pub async fn start_configured(
        dir: TempDir,
        options: ServeOptions,
        configure: impl Fn(&mut StoreConfig),
    ) -> Self {
        Self::start_backend(dir, Backend::Sled, options, configure).await
    }

    /// Starts a server on `backend` (a sled archive in `dir`, with settings
    /// changed by `configure`, or a PostgreSQL database).
    pub async fn start_backend(
        dir: TempDir,
        backend: Backend,
        options: ServeOptions,
        configure: impl Fn(&mut StoreConfig),
    ) -> Self {
        let path = dir.path().join("data");
        let store = match &backend {
            Backend::Sled => retry_while_locked(
                || {
                    let mut config = StoreConfig::new(&path);
                    // Runs of the query indexes written and merged every
                    // few dozen articles, in every sled test.
                    config.query_memtable_entries = 100;
                    configure(&mut config);
                    Store::open(&config)
                },
                |e| matches!(e, article_archive::Error::DataDirLocked { .. }),
            ),
            Backend::Postgres(url) => {
                let mut sled_settings = StoreConfig::new(&path);
                configure(&mut sled_settings);
                let mut config = PostgresConfig::new(url);
                config.keep_revisions = sled_settings.keep_revisions;
                config.batch_limits = sled_settings.batch_limits;
                config.queue_capacity = sled_settings.queue_capacity;
                config.queue_bytes = sled_settings.queue_bytes;
                Store::open_postgres(&config).await.unwrap()
            }
        };
        let expected_engine = match backend {
            Backend::Sled => "sled",
            Backend::Postgres(_) => "postgres",
        };
        assert_eq!(store.engine_name(), expected_engine);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(article_archive::run(
            listener,
            store.clone(),
            async move {
                let _ = signal.await;
            },
            options,
        ));
        // The listener is bound, so connecting needs no waiting.
        let client = ArchiveServiceClient::new(channel(addr).await);
        Self {
            addr,
            client,
            store,
            dir,
            backend,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// Signals shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts the server down, waits for `run` to return, and hands back the
    /// data directory (the store is closed once every handle is dropped).
    pub async fn stop(mut self) -> TempDir {
        self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
        self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Opens the store at `path`, waiting while a store closed a moment ago in
/// this process still holds the lock: sled releases it from a background
/// I/O thread after the last handle is dropped.
pub fn open_store(path: &Path) -> Store {
    retry_while_locked(
        || Store::open(&StoreConfig::new(path)),
        |e| matches!(e, article_archive::Error::DataDirLocked { .. }),
    )
}

/// Opens the raw sled database at `path`, waiting likewise.
pub fn open_sled(path: &Path) -> sled::Db {
    retry_while_locked(
        || sled::open(path),
        |e| e.to_string().contains("could not acquire lock"),
    )
}

fn retry_while_locked<T, E: std::fmt::Debug>(
    open: impl Fn() -> Result<T, E>,
    locked: impl Fn(&E) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Err(e) if locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.unwrap(),
        }
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The fixture article (`tests/fixtures/article.txt`), written for the
/// tests with the hard parts of scraped news: a breadcrumb line, the headline
/// repeated, curly quotes and apostrophes, names mis-decoded the way UTF-8
/// read as CP437 looks ("S├╕ren"), and characters outside the Basic
/// Multilingual Plane (𝕏, 🗞️). Compiled in, so the tests need no file at
/// run time.
pub fn fixture_body() -> String {
    include_str!("../fixtures/article.txt").to_owned()
}

/// `len` bytes of random lower-case words, different for each `seed`:
/// text that zstd cannot shrink much (about 1.6 ×), for tests that measure
/// memory, where a repeated letter would compress to almost nothing and
/// hide what the server holds.
pub fn incompressible_body(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut body = String::with_capacity(len + 16);
    while body.len() < len {
        for _ in 0..2 + next() % 8 {
            body.push(char::from(b'a' + (next() % 26) as u8));
        }
        body.push(' ');
    }
    body.truncate(len);
    body
}

/// The content hash the server computes for `article`, in hex.
pub fn sha_of(article: &proto::Article) -> String {
    hex::encode(
        article_archive::article::Article::from_proto(article.clone())
            .unwrap()
            .content()
            .sha256(),
    )
}

/// Says that a test cannot run on this machine. Under CI (`CI` set) that is
/// a failure. Elsewhere the test returns, and the notice goes straight to the
/// terminal: `cargo test` hides what passing tests print through `println!`,
/// and a skip must never look like a pass. (Tests whose program is missing
/// are usually `#[ignore]`d by build.rs already; this catches what only
/// shows at run time, such as a mount refused to root in a container.)
pub fn cannot_run(test: &str, reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run here, and CI must run it: {reason}"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}

pub fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos }
}

/// A small valid article with an explicit id.
pub fn article(id: &str, seconds: i64) -> proto::Article {
    proto::Article {
        id: id.into(),
        title: format!("Title of {id}"),
        body: format!("Body of {id}"),
        published_at: Some(ts(seconds, 0)),
        source: "example.com".into(),
        ..Default::default()
    }
}

pub fn request(article: proto::Article) -> proto::IngestArticlesRequest {
    proto::IngestArticlesRequest {
        restore_revision: false,
        article: Some(article),
    }
}

/// Streams the requests through one IngestArticles call and collects every
/// response.
pub async fn ingest_requests(
    client: &mut Client,
    requests: Vec<proto::IngestArticlesRequest>,
) -> Vec<proto::IngestArticlesResponse> {
    let mut responses = client
        .ingest_articles(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(response) = responses.next().await {
        out.push(response.unwrap());
    }
    out
}

/// Streams the articles through one IngestArticles call and collects every
/// response.
pub async fn ingest(
    client: &mut Client,
    articles: Vec<proto::Article>,
) -> Vec<proto::IngestArticlesResponse> {
    let requests = tokio_stream::iter(articles.into_iter().map(request));
    let mut responses = client.ingest_articles(requests).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(response) = responses.next().await {
        out.push(response.unwrap());
    }
    out
}

pub fn outcome(response: &proto::IngestArticlesResponse) -> proto::IngestOutcome {
    proto::IngestOutcome::try_from(response.outcome).unwrap()
}

/// Every change of the feed after `after` up to the newest (no follow).
pub async fn all_changes(
    client: &mut Client,
    request: proto::WatchChangesRequest,
) -> Vec<proto::WatchChangesResponse> {
    let mut stream = client.watch_changes(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(change) = stream.next().await {
        out.push(change.unwrap());
    }
    out
}

/// Walks every page of a listing and returns the articles in order.
pub async fn list_all(
    client: &mut Client,
    mut request: proto::ListArticlesRequest,
) -> Vec<proto::Article> {
    let mut out = Vec::new();
    loop {
        let page = client
            .list_articles(request.clone())
            .await
            .unwrap()
            .into_inner();
        out.extend(page.articles);
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
}

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_article-archive");

/// A server process, with its stderr collected line by line.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// What the server logged up to and including "listening on".
    pub startup_log: Vec<String>,
    log: std_mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts `article-archive serve` on a free port and waits for the log
    /// line that names the bound address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        // A store closed a moment ago in this process may still hold the
        // directory's lock (sled releases it from a background thread):
        // start again while that is what stopped the server.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Self::try_start(data_dir, extra) {
                Ok(server) => return server,
                Err(log)
                    if log
                        .iter()
                        .any(|l| l.contains("is locked by another process"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(log) => panic!("the server logs its address; it logged {log:#?}"),
            }
        }
    }

    /// Starts `article-archive serve --store URL` (a replica on a
    /// PostgreSQL database) on a free port, and waits for its address.
    pub fn start_on_database(url: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--store", url];
        args.extend_from_slice(extra);
        Self::wait_for_address(spawn_with(&args))
            .unwrap_or_else(|log| panic!("the server logs its address; it logged {log:#?}"))
    }

    /// Starts the server and waits for its address; the log so far when it
    /// exits first.
    fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Self, Vec<String>> {
        Self::wait_for_address(spawn(data_dir, extra))
    }

    fn wait_for_address(mut child: Child) -> Result<Self, Vec<String>> {
        let (tx, log) = std_mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup_log = Vec::new();
        let addr = loop {
            let Ok(line) = log.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(startup_log);
            };
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                startup_log.push(line);
                break addr;
            }
            startup_log.push(line);
        };
        Ok(Self {
            child,
            addr,
            startup_log,
            log,
        })
    }

    pub async fn client(&self) -> Client {
        ArchiveServiceClient::new(channel(self.addr).await)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log.try_iter().collect());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A test that fails midway must not leave its server running.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn spawn(data_dir: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["--data-dir", data_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    spawn_with(&args)
}

/// Spawns `article-archive serve --listen 127.0.0.1:0` with `args`.
pub fn spawn_with(args: &[&str]) -> Child {
    Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
