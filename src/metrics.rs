//! Metrics for Prometheus: the handles the server updates as it works, and
//! the `/metrics` endpoint a Prometheus server scrapes.
//!
//! Off unless `serve --metrics-listen ADDR` is given. Then
//! [`crate::server::run`] makes one [`Metrics`], shares it (an `Arc`) with
//! the RPC layer ([`RpcLayer`]), the service and the store, and serves
//! `GET /metrics` on its own listener over plain HTTP/1.1 ([`serve`]), so a
//! scrape never competes with gRPC's call limits and needs no token. Without
//! it nothing is recorded: every place that records holds an `Option` that
//! is `None`.
//!
//! Recording happens on hot paths (every RPC, every article, every group
//! commit), so it is atomics only: counters and gauges are
//! prometheus-client's (an atomic each), labelled handles are taken from
//! their families once, when [`Metrics`] is built, and histograms are this
//! module's [`Histogram`] (prometheus-client's takes a mutex for each
//! observation). Nothing allocates per request. What is costly to know or
//! only means something now (bytes on disk, free space, the writer's queue,
//! how far watchers lag, the process's memory and CPU) is read when a
//! scrape asks for it, off the async workers.
//!
//! Label values come from fixed lists: RPC service and method (any other
//! path is `other`), gRPC code, outcome, reason. Never an article id, a url
//! or a token.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        info::Info,
        MetricType,
    },
    registry::{Registry, Unit},
};
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tracing::{debug, warn};

/// One label: (name, value).
type Label = [(&'static str, &'static str); 1];

/// Every metric the server records as it works. Built once per server and
/// shared; see the module docs for what is read at scrape time instead.
#[derive(Debug)]
pub struct Metrics {
    /// Finished RPCs and their durations, and calls running now, per
    /// method (and code).
    rpc: RpcTable,
    /// Ingest outcomes; the handles below are its members.
    ingest_outcomes: Family<Label, Counter>,
    created: Counter,
    updated: Counter,
    unchanged: Counter,
    rejected: Counter,
    /// Bytes of article bodies stored as new versions.
    text_bytes: Counter,
    /// Group commits that were made durable.
    batches: Counter,
    /// Operations (articles, deletions) per committed batch.
    batch_articles: Histogram,
    /// The writer's commit, flush and filesystem sync of one batch.
    commit_seconds: Histogram,
    /// How long each submission waited for room in the writer's queue.
    queue_wait_seconds: Histogram,
    /// Live articles: counted when metrics are attached to the store, then
    /// moved by the writer (created minus deleted).
    articles: Gauge,
    /// ExportArticles streams running now.
    exports_open: Gauge,
    /// The cursor of every WatchChanges call running now.
    watchers: Mutex<Vec<Arc<AtomicU64>>>,
    /// Calls and streams refused because their limit was reached.
    refused_for_limit: Family<Label, Counter>,
    refused_calls: Counter,
    refused_streams: Counter,
    /// Calls refused for their token.
    refused_for_token: Family<Label, Counter>,
    unauthenticated: Counter,
    permission_denied: Counter,
    /// Connections the server closed before they were served.
    connections_closed: Family<Label, Counter>,
    handshake_timeouts: Counter,
    too_many_waiting: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, every counter at zero.
    pub fn new() -> Self {
        let member = |family: &Family<Label, Counter>, name, value| {
            family.get_or_create(&[(name, value)]).clone()
        };
        let ingest_outcomes = Family::default();
        let refused_for_limit = Family::default();
        let refused_for_token = Family::default();
        let connections_closed = Family::default();
        Self {
            rpc: RpcTable::new(),
            created: member(&ingest_outcomes, "outcome", "created"),
            updated: member(&ingest_outcomes, "outcome", "updated"),
            unchanged: member(&ingest_outcomes, "outcome", "unchanged"),
            rejected: member(&ingest_outcomes, "outcome", "rejected"),
            ingest_outcomes,
            text_bytes: Counter::default(),
            batches: Counter::default(),
            batch_articles: Histogram::new(BATCH_ARTICLES, 1.0),
            commit_seconds: Histogram::new(COMMIT_NANOS, 1e9),
            queue_wait_seconds: Histogram::new(QUEUE_WAIT_NANOS, 1e9),
            articles: Gauge::default(),
            exports_open: Gauge::default(),
            watchers: Mutex::default(),
            refused_calls: member(&refused_for_limit, "kind", "calls"),
            refused_streams: member(&refused_for_limit, "kind", "streams"),
            refused_for_limit,
            unauthenticated: member(&refused_for_token, "code", "UNAUTHENTICATED"),
            permission_denied: member(&refused_for_token, "code", "PERMISSION_DENIED"),
            refused_for_token,
            handshake_timeouts: member(&connections_closed, "reason", "handshake_timeout"),
            too_many_waiting: member(&connections_closed, "reason", "too_many_waiting"),
            connections_closed,
        }
    }

    /// The writer committed a batch of `operations` (made durable in
    /// `took`, commit, flush and sync) with these outcomes.
    pub fn batch_committed(&self, operations: usize, took: Duration, outcomes: &BatchOutcomes) {
        self.batches.inc();
        self.batch_articles.observe(operations as u64);
        self.commit_seconds.observe_duration(took);
        self.created.inc_by(outcomes.created);
        self.updated.inc_by(outcomes.updated);
        self.unchanged.inc_by(outcomes.unchanged);
        self.rejected.inc_by(outcomes.rejected);
        self.text_bytes.inc_by(outcomes.text_bytes);
        let live = i64::try_from(outcomes.created).unwrap_or(i64::MAX)
            - i64::try_from(outcomes.deleted).unwrap_or(i64::MAX);
        self.articles.inc_by(live);
    }

    /// A submission waited this long for room in the writer's queue.
    pub fn queue_waited(&self, waited: Duration) {
        self.queue_wait_seconds.observe_duration(waited);
    }

    /// The store holds this many live articles (counted when metrics are
    /// attached to it; the writer moves it from there).
    pub fn set_articles(&self, articles: u64) {
        self.articles
            .set(i64::try_from(articles).unwrap_or(i64::MAX));
    }

    /// An ingest request was rejected before it reached the writer
    /// (invalid article).
    pub fn rejected_invalid(&self) {
        self.rejected.inc();
    }

    /// A call was refused because all permits of its `limit` were taken.
    pub fn refused_for_limit(&self, limit: Limit) {
        match limit {
            Limit::Calls => self.refused_calls.inc(),
            Limit::Streams => self.refused_streams.inc(),
        };
    }

    /// A call was refused for its token with `code` (UNAUTHENTICATED or
    /// PERMISSION_DENIED; nothing else is a token refusal).
    pub fn refused_for_token(&self, code: tonic::Code) {
        match code {
            tonic::Code::Unauthenticated => self.unauthenticated.inc(),
            tonic::Code::PermissionDenied => self.permission_denied.inc(),
            _ => return,
        };
    }

    /// A connection sent nothing within the handshake timeout and was
    /// closed.
    pub fn handshake_timed_out(&self) {
        self.handshake_timeouts.inc();
    }

    /// A connection was closed at once because too many were waiting for
    /// their first bytes.
    pub fn too_many_waiting(&self) {
        self.too_many_waiting.inc();
    }

    /// An export stream starts; it counts as open until the guard is
    /// dropped.
    pub fn export_opened(self: &Arc<Self>) -> ExportOpen {
        self.exports_open.inc();
        ExportOpen(Arc::clone(self))
    }

    /// A WatchChanges call starts after `after`; its cursor counts towards
    /// the lag of the slowest watcher until it is dropped.
    pub fn watcher(self: &Arc<Self>, after: u64) -> WatchCursor {
        let cursor = Arc::new(AtomicU64::new(after));
        self.watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::clone(&cursor));
        WatchCursor {
            cursor,
            metrics: Arc::clone(self),
        }
    }

    /// Every metric, for the endpoint: what is recorded here, and what
    /// `probe` and the process report at each scrape.
    pub fn registry(self: &Arc<Self>, probe: StoreProbe, start_check: StartCheck) -> Registry {
        let mut registry = Registry::default();
        registry.register(
            "archive_build",
            "The running binary: its version and the git commit it was built from",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("ARCHIVE_GIT_COMMIT")),
            ]),
        );
        registry.register(
            "archive_ingest_articles",
            "Articles ingested, by outcome (rejected: invalid, or refused by the store)",
            self.ingest_outcomes.clone(),
        );
        registry.register_with_unit(
            "archive_ingest_text",
            "Bytes of article bodies stored as new versions (created or updated)",
            Unit::Bytes,
            self.text_bytes.clone(),
        );
        registry.register(
            "archive_writer_batches",
            "Group commits made durable",
            self.batches.clone(),
        );
        registry.register(
            "archive_writer_batch_operations",
            "Operations (articles and deletions) per committed group commit",
            self.batch_articles.clone(),
        );
        registry.register_with_unit(
            "archive_writer_commit",
            "Time to commit, flush and sync one group commit",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register_with_unit(
            "archive_writer_queue_wait",
            "Time each submission waited for room in the writer's queue",
            Unit::Seconds,
            self.queue_wait_seconds.clone(),
        );
        registry.register(
            "archive_store_articles",
            "Live articles in the store (deleted ones not counted)",
            self.articles.clone(),
        );
        registry.register(
            "archive_exports_open",
            "ExportArticles streams running now",
            self.exports_open.clone(),
        );
        registry.register(
            "archive_admission_refused",
            "Calls refused with RESOURCE_EXHAUSTED because their limit was reached (kind: calls or streams)",
            self.refused_for_limit.clone(),
        );
        registry.register(
            "archive_auth_refused",
            "Calls refused for their token, by code",
            self.refused_for_token.clone(),
        );
        registry.register(
            "archive_connections_closed",
            "gRPC connections closed before they were served, by reason",
            self.connections_closed.clone(),
        );
        registry.register_collector(Box::new(ScrapeCollector {
            metrics: Arc::clone(self),
            probe,
            start_check,
        }));
        registry
    }
}

/// What the writer's outcomes of one batch were, counted by the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcomes {
    /// New articles (revision 1).
    pub created: u64,
    /// New revisions of known articles.
    pub updated: u64,
    /// Articles sent again with the same content.
    pub unchanged: u64,
    /// Articles the store refused (a deleted id, a revision out of order).
    pub rejected: u64,
    /// Articles deleted.
    pub deleted: u64,
    /// Bytes of the bodies of the created and updated articles.
    pub text_bytes: u64,
}

/// Which admission limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-calls`.
    Calls,
    /// `--max-streams`.
    Streams,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Calls => "calls",
            Limit::Streams => "streams",
        })
    }
}

/// Counts an export as open while it lives.
#[derive(Debug)]
pub struct ExportOpen(Arc<Metrics>);

impl Drop for ExportOpen {
    fn drop(&mut self) {
        self.0.exports_open.dec();
    }
}

/// The place of one running WatchChanges call in the change feed.
#[derive(Debug)]
pub struct WatchCursor {
    cursor: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl WatchCursor {
    /// The watcher has passed every change up to `sequence`.
    pub fn advance(&self, sequence: u64) {
        self.cursor.store(sequence, Ordering::Relaxed);
    }
}

impl Drop for WatchCursor {
    fn drop(&mut self) {
        self.metrics
            .watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|cursor| !Arc::ptr_eq(cursor, &self.cursor));
    }
}

/// What the check at start found, reported as
/// `archive_store_start_check{state}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartCheck {
    /// The caller did not run the check (an embedded server).
    #[default]
    NotRun,
    /// The archive had been closed cleanly: nothing to check.
    CleanStop,
    /// Not closed cleanly; the check found nothing wrong.
    Sound,
    /// Not closed cleanly; the indexes were rebuilt from the record log.
    Repaired,
}

impl StartCheck {
    const ALL: [(StartCheck, &'static str); 4] = [
        (StartCheck::NotRun, "not_run"),
        (StartCheck::CleanStop, "clean_stop"),
        (StartCheck::Sound, "sound"),
        (StartCheck::Repaired, "repaired"),
    ];
}

/// Why the store refuses writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritesRefused {
    /// Its filesystem is short of space; writes resume by themselves.
    DiskLow,
    /// A write or sync failed; writes resume only after a restart.
    Failed,
    /// The database (PostgreSQL engine) cannot be reached; writes resume
    /// once it can.
    DatabaseUnreachable,
}

/// What the store holds and waits for at the moment of a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSample {
    /// Bytes allocated on disk to the record log.
    pub record_log_bytes: u64,
    /// Bytes allocated to everything else in the data directory (sled's
    /// indexes, snapshots and blobs).
    pub index_bytes: u64,
    /// Bytes free for the server on the data directory's filesystem, when
    /// known.
    pub free_bytes: Option<u64>,
    /// `--min-free-mb` in bytes: below it writes are refused.
    pub min_free_bytes: u64,
    /// Operations queued for the writer, not yet in a batch.
    pub queued_operations: u64,
    /// Bytes of articles queued for the writer or in its current batch.
    pub queued_bytes: u64,
    /// Why writes are refused now, if they are.
    pub writes_refused: Option<WritesRefused>,
    /// The newest durable sequence number of the change feed.
    pub durable_sequence: u64,
}

/// Reads a [`StoreSample`]; called at each scrape, off the async workers.
pub type StoreProbe = Box<dyn Fn() -> StoreSample + Send + Sync>;

// ---------------------------------------------------------------------------
// Histograms

/// Upper bounds of RPC durations, in nanoseconds: 100 µs to 5 minutes (a
/// stream's duration is its whole life).
const RPC_NANOS: &[u64] = &[
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    300_000_000_000,
];
/// Upper bounds of a group commit's duration, in nanoseconds: a sync takes
/// from under a millisecond (tmpfs) to seconds (a busy disk).
const COMMIT_NANOS: &[u64] = &[
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];
/// Upper bounds of the wait for room in the writer's queue, in
/// nanoseconds: most submissions do not wait at all.
const QUEUE_WAIT_NANOS: &[u64] = &[
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// Upper bounds of the operations in one batch: powers of two up to the
/// default batch limit, 1024.
const BATCH_ARTICLES: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram of integer observations (nanoseconds, counts) that is only
/// atomics: an observation is two `fetch_add`s. prometheus-client's own
/// histogram takes a mutex for each one.
#[derive(Debug)]
struct Buckets {
    /// Upper bounds, ascending, in the observed unit.
    bounds: &'static [u64],
    /// Observed units per exported unit (1e9 for nanoseconds exported as
    /// seconds).
    per_unit: f64,
    /// Observations per bucket (not cumulative); the last one is above
    /// every bound (`+Inf`).
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in the observed unit.
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [u64], per_unit: f64) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Self {
            bounds,
            per_unit,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        // The first bucket whose bound is at least `value` (`le`).
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Observations so far.
    fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        // The count is the buckets' sum, read once, so `+Inf` always
        // equals `_count` even while observations land during a scrape.
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut count = 0;
        for (i, n) in self.counts.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            count += n;
            let bound = self
                .bounds
                .get(i)
                .map_or(f64::INFINITY, |&b| b as f64 / self.per_unit);
            buckets.push((bound, n));
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.per_unit;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// A shared handle on [`Buckets`], registered like prometheus-client's own
/// metrics.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Buckets>);

impl Histogram {
    fn new(bounds: &'static [u64], per_unit: f64) -> Self {
        Self(Arc::new(Buckets::new(bounds, per_unit)))
    }

    fn observe(&self, value: u64) {
        self.0.observe(value);
    }

    fn observe_duration(&self, took: Duration) {
        self.0
            .observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

// ---------------------------------------------------------------------------
// RPCs

/// The RPCs the server serves, as (service, method); the last entry stands
/// for any other path (tonic answers those with UNIMPLEMENTED), so a
/// client cannot make up label values.
const METHODS: [(&str, &str); 15] = [
    ("archive.v1.ArchiveService", "GetArticle"),
    ("archive.v1.ArchiveService", "ListArticles"),
    ("archive.v1.ArchiveService", "IngestArticles"),
    ("archive.v1.ArchiveService", "ExportArticles"),
    ("archive.v1.ArchiveService", "ListArticleRevisions"),
    ("archive.v1.ArchiveService", "DeleteArticle"),
    ("archive.v1.ArchiveService", "WatchChanges"),
    ("archive.v1.ArchiveService", "BatchGetArticles"),
    ("archive.v1.ArchiveService", "ListArticlesByUrl"),
    ("archive.v1.ArchiveService", "CountArticles"),
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
    ("other", "other"),
];

/// The index in [`METHODS`] of a request path.
fn method_index(path: &str) -> usize {
    match path {
        "/archive.v1.ArchiveService/GetArticle" => 0,
        "/archive.v1.ArchiveService/ListArticles" => 1,
        "/archive.v1.ArchiveService/IngestArticles" => 2,
        "/archive.v1.ArchiveService/ExportArticles" => 3,
        "/archive.v1.ArchiveService/ListArticleRevisions" => 4,
        "/archive.v1.ArchiveService/DeleteArticle" => 5,
        "/archive.v1.ArchiveService/WatchChanges" => 6,
        "/archive.v1.ArchiveService/BatchGetArticles" => 7,
        "/archive.v1.ArchiveService/ListArticlesByUrl" => 8,
        "/archive.v1.ArchiveService/CountArticles" => 9,
        "/grpc.health.v1.Health/Check" => 10,
        "/grpc.health.v1.Health/Watch" => 11,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" => 12,
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => 13,
        _ => METHODS.len() - 1,
    }
}

/// gRPC status codes by number, as the gRPC specification names them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

/// Per method and code: a duration histogram (whose count is the number
/// of calls); per method: calls running now. Every cell exists from the
/// start, so recording is an index and atomics; a scrape shows only the
/// cells that were used.
#[derive(Debug)]
struct RpcTable {
    /// `METHODS.len() * CODES.len()` histograms, method-major.
    finished: Box<[Buckets]>,
    in_flight: [AtomicI64; METHODS.len()],
}

impl RpcTable {
    fn new() -> Self {
        Self {
            finished: (0..METHODS.len() * CODES.len())
                .map(|_| Buckets::new(RPC_NANOS, 1e9))
                .collect(),
            in_flight: Default::default(),
        }
    }

    fn cell(&self, method: usize, code: usize) -> &Buckets {
        &self.finished[method * CODES.len() + code]
    }
}

/// The `grpc-status` of a header or trailer map, as an index in [`CODES`].
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()?
        .parse::<usize>()
        .ok()?;
    Some(if code < CODES.len() { code } else { UNKNOWN })
}

/// One RPC being served: counted as in flight from its request until its
/// status is known. Dropped without a status (the client went away, or
/// the connection did), it is recorded as CANCELLED.
struct Call {
    metrics: Arc<Metrics>,
    method: usize,
    started: Instant,
    code: usize,
}

impl Call {
    fn start(metrics: &Arc<Metrics>, path: &str) -> Self {
        let method = method_index(path);
        metrics.rpc.in_flight[method].fetch_add(1, Ordering::Relaxed);
        Self {
            metrics: Arc::clone(metrics),
            method,
            started: Instant::now(),
            code: CANCELLED,
        }
    }

    fn finish(mut self, code: usize) {
        self.code = code;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let rpc = &self.metrics.rpc;
        let took = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        rpc.cell(self.method, self.code).observe(took);
        rpc.in_flight[self.method].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The tower layer on the gRPC server that records every RPC (the
/// archive's, health and reflection) by method and status code, streams
/// included: a unary error's status is in the response headers, anything
/// else's in the trailers that end the response body. With no metrics it
/// passes everything through untouched.
#[derive(Debug, Clone, Default)]
pub struct RpcLayer {
    metrics: Option<Arc<Metrics>>,
}

impl RpcLayer {
    /// Records into `metrics`, or nothing when `None`.
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`RpcLayer`].
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RpcService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = self
            .metrics
            .as_ref()
            .map(|metrics| Call::start(metrics, request.uri().path()));
        RpcFuture {
            inner: self.inner.call(request),
            call,
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`RpcLayer`].
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<RpcBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                // A call that fails before it answers (a refused token, a
                // bad argument) has its status in the headers.
                if let Some(code) = grpc_status(response.headers()) {
                    if let Some(call) = call.take() {
                        call.finish(code);
                    }
                }
                Ok(response.map(|inner| RpcBody { inner, call }))
            }
            Err(e) => {
                if let Some(call) = call {
                    call.finish(UNKNOWN);
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call's status when the trailers
    /// go by. See [`RpcLayer`].
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: http_body::Body> http_body::Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.call.is_some() {
            let code = match &frame {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|t| grpc_status(t).unwrap_or(UNKNOWN)),
                // The body broke off or ended without a status.
                Some(Err(_)) | None => Some(UNKNOWN),
            };
            if let Some(code) = code {
                if let Some(call) = this.call.take() {
                    call.finish(code);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------------------
// What a scrape reads

/// Encodes, at each scrape, what is not pushed as it happens: the RPC
/// table, the store's sample, the watchers' lag, and the process.
struct ScrapeCollector {
    metrics: Arc<Metrics>,
    probe: StoreProbe,
    start_check: StartCheck,
}

impl fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeCollector")
            .field("start_check", &self.start_check)
            .finish_non_exhaustive()
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn bytes_gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    ConstGauge::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        Some(&Unit::Bytes),
        MetricType::Gauge,
    )?)
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_rpcs(&mut encoder)?;
        let sample = (self.probe)();
        self.encode_store(&mut encoder, &sample)?;
        self.encode_feed(&mut encoder, sample.durable_sequence)?;
        encode_process(&mut encoder)
    }
}

impl ScrapeCollector {
    fn encode_rpcs(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let rpc = &self.metrics.rpc;
        let used = || {
            (0..METHODS.len()).flat_map(move |method| {
                (0..CODES.len()).filter_map(move |code| {
                    let cell = rpc.cell(method, code);
                    let count = cell.count();
                    (count > 0).then_some((method, code, cell, count))
                })
            })
        };
        let labels = |method: usize, code: usize| {
            [
                ("service", METHODS[method].0),
                ("method", METHODS[method].1),
                ("code", CODES[code]),
            ]
        };
        {
            let mut requests = encoder.encode_descriptor(
                "archive_rpc_requests",
                "RPCs finished, by method and gRPC status code (CANCELLED: the client went away first).",
                None,
                MetricType::Counter,
            )?;
            for (method, code, _, count) in used() {
                let labels = labels(method, code);
                ConstCounter::new(count).encode(requests.encode_family(&labels)?)?;
            }
        }
        {
            let mut durations = encoder.encode_descriptor(
                "archive_rpc_duration",
                "Time from request to status, by method and code; for a stream, its whole life.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (method, code, cell, _) in used() {
                let labels = labels(method, code);
                cell.encode(durations.encode_family(&labels)?)?;
            }
        }
        let mut in_flight = encoder.encode_descriptor(
            "archive_rpc_in_flight",
            "RPCs running now, by method: for the streaming ones, open streams.",
            None,
            MetricType::Gauge,
        )?;
        for (method, (service, name)) in METHODS.iter().enumerate() {
            let labels = [("service", *service), ("method", *name)];
            let running = rpc.in_flight[method].load(Ordering::Relaxed);
            ConstGauge::new(running).encode(in_flight.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn encode_store(&self, encoder: &mut DescriptorEncoder, sample: &StoreSample) -> fmt::Result {
        {
            let mut disk = encoder.encode_descriptor(
                "archive_store_disk",
                "Bytes allocated on disk to the data directory: the record log, and sled's indexes, snapshots and blobs.",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            for (part, bytes) in [
                ("record_log", sample.record_log_bytes),
                ("index", sample.index_bytes),
            ] {
                let value = i64::try_from(bytes).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(disk.encode_family(&[("part", part)])?)?;
            }
        }
        if let Some(free) = sample.free_bytes {
            bytes_gauge(
                encoder,
                "archive_store_filesystem_free",
                "Bytes free for the server on the data directory's filesystem.",
                free,
            )?;
        }
        bytes_gauge(
            encoder,
            "archive_store_min_free",
            "Free space the store keeps (--min-free-mb): below it, writes are refused.",
            sample.min_free_bytes,
        )?;
        {
            let mut refused = encoder.encode_descriptor(
                "archive_store_writes_refused",
                "1 while the store refuses writes for this reason: disk_low (until there is room), failed (until a restart) or database_unreachable (PostgreSQL, until it is back).",
                None,
                MetricType::Gauge,
            )?;
            for (reason, which) in [
                ("disk_low", WritesRefused::DiskLow),
                ("failed", WritesRefused::Failed),
                ("database_unreachable", WritesRefused::DatabaseUnreachable),
            ] {
                let on = i64::from(sample.writes_refused == Some(which));
                ConstGauge::new(on).encode(refused.encode_family(&[("reason", reason)])?)?;
            }
        }
        {
            let mut check = encoder.encode_descriptor(
                "archive_store_start_check",
                "What the check at start found (1 for the state it found): clean_stop, sound, repaired, or not_run.",
                None,
                MetricType::Gauge,
            )?;
            for (state, label) in StartCheck::ALL {
                let on = i64::from(self.start_check == state);
                ConstGauge::new(on).encode(check.encode_family(&[("state", label)])?)?;
            }
        }
        gauge(
            encoder,
            "archive_writer_queue_operations",
            "Articles and deletions waiting for the writer, not yet in a batch.",
            i64::try_from(sample.queued_operations).unwrap_or(i64::MAX),
        )?;
        bytes_gauge(
            encoder,
            "archive_writer_queue",
            "Bytes of articles (compressed) waiting for the writer or in its current batch, about (rounded up to KiB per article).",
            sample.queued_bytes,
        )
    }

    fn encode_feed(&self, encoder: &mut DescriptorEncoder, durable: u64) -> fmt::Result {
        let (open, lag) = {
            let watchers = self
                .metrics
                .watchers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let lag = watchers
                .iter()
                .map(|cursor| durable.saturating_sub(cursor.load(Ordering::Relaxed)))
                .max()
                .unwrap_or(0);
            (watchers.len(), lag)
        };
        gauge(
            encoder,
            "archive_changes_durable_sequence",
            "Sequence number of the newest durable change in the change feed.",
            i64::try_from(durable).unwrap_or(i64::MAX),
        )?;
        gauge(
            encoder,
            "archive_watchers_open",
            "WatchChanges calls running now.",
            i64::try_from(open).unwrap_or(i64::MAX),
        )?;
        gauge(
            encoder,
            "archive_watchers_max_lag_changes",
            "How far the slowest watcher is behind the newest durable change, in sequence numbers (changes); 0 without watchers.",
            i64::try_from(lag).unwrap_or(i64::MAX),
        )
    }
}

/// The process metrics every Prometheus client library exports, read from
/// `/proc/self` (prometheus-client has no process collector).
#[cfg(target_os = "linux")]
fn encode_process(encoder: &mut DescriptorEncoder) -> fmt::Result {
    let Some(stat) = ProcessStat::read() else {
        return Ok(());
    };
    {
        let cpu = encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent, in seconds.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(stat.cpu_seconds).encode(cpu)?;
    }
    bytes_gauge(
        encoder,
        "process_resident_memory",
        "Resident memory size in bytes.",
        stat.resident_bytes,
    )?;
    bytes_gauge(
        encoder,
        "process_virtual_memory",
        "Virtual memory size in bytes.",
        stat.virtual_bytes,
    )?;
    {
        let start = encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch, in seconds.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(stat.start_time_seconds).encode(start)?;
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let open = fds.count();
        gauge(
            encoder,
            "process_open_fds",
            "Number of open file descriptors.",
            i64::try_from(open).unwrap_or(i64::MAX),
        )?;
    }
    // SAFETY: getrlimit writes into the struct it is given.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        gauge(
            encoder,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX),
        )?;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn encode_process(_encoder: &mut DescriptorEncoder) -> fmt::Result {
    Ok(())
}

/// What `/proc/self/stat` says about the process.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStat {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
}

#[cfg(target_os = "linux")]
impl ProcessStat {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Self::parse(&stat, boot_time, ticks as f64, page as u64)
    }

    /// Parses `/proc/self/stat` (proc(5)), given the boot time in seconds
    /// since the epoch, clock ticks per second and the page size.
    fn parse(stat: &str, boot_time: f64, ticks: f64, page: u64) -> Option<Self> {
        // The command name may hold spaces and parentheses: the fields
        // that follow start after its last ')'. They start at field 3.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        if ticks <= 0.0 {
            return None;
        }
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            start_time_seconds: boot_time + field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.saturating_mul(page),
        })
    }
}

// ---------------------------------------------------------------------------
// The endpoint

/// A bound listener for `/metrics`, handed to [`crate::server::run`] in
/// [`crate::ServeOptions`]. Bound before the server starts, so port 0 can
/// be read back ([`MetricsListener::local_addr`]); cloned with the
/// options, and taken by the one `run` that serves it.
#[derive(Clone)]
pub struct MetricsListener {
    listener: Arc<Mutex<Option<std::net::TcpListener>>>,
    addr: SocketAddr,
}

impl fmt::Debug for MetricsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MetricsListener").field(&self.addr).finish()
    }
}

impl MetricsListener {
    /// Binds `addr` (host:port; port 0 picks a free port).
    ///
    /// # Errors
    /// The address cannot be resolved or bound.
    pub async fn bind(addr: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener: Arc::new(Mutex::new(Some(listener.into_std()?))),
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listener, to the first caller only.
    pub(crate) fn take(&self) -> Option<std::net::TcpListener> {
        self.listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Scrapes served at once, at most; more connections are closed at once.
/// One Prometheus needs one (it keeps the connection alive).
const MAX_SCRAPE_CONNECTIONS: usize = 16;
/// A scrape connection that sends no complete request head for this long
/// is closed.
const SCRAPE_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `stop` turns true, then
/// closes every connection and returns (so nothing the registry holds, a
/// store handle among it, outlives the server). OpenMetrics text for
/// clients that ask for it (Prometheus does), the Prometheus text format
/// (0.0.4) for anyone else (curl, promtool).
///
/// # Errors
/// The listener cannot be registered with the runtime.
pub async fn serve(
    listener: std::net::TcpListener,
    registry: Registry,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let registry = Arc::new(registry);
    let slots = Arc::new(Semaphore::new(MAX_SCRAPE_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "too many metrics connections; closing this one");
            continue;
        };
        let registry = Arc::clone(&registry);
        connections.spawn(async move {
            let answer = service_fn(move |request| answer(request, Arc::clone(&registry)));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), answer)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "metrics connection ended");
            }
            drop(slot);
        });
    }
    connections.shutdown().await;
    Ok(())
}

async fn answer(
    request: http::Request<Incoming>,
    registry: Arc<Registry>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let plain = |status: http::StatusCode, text: &'static str| {
        let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            http::StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    if !matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
        return Ok(plain(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "only GET /metrics\n",
        ));
    }
    let openmetrics = request
        .headers()
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|accept| {
            accept
                .to_str()
                .is_ok_and(|a| a.contains("application/openmetrics-text"))
        });
    // The collectors read files (/proc, the data directory): off the async
    // workers.
    let encoded = tokio::task::spawn_blocking(move || encode(&registry, openmetrics)).await;
    let Ok(Ok(text)) = encoded else {
        return Ok(plain(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        ));
    };
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    let mut response = http::Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// Every metric of `registry` in OpenMetrics text or the Prometheus text
/// format.
///
/// # Errors
/// When a collector fails to write.
pub fn encode(registry: &Registry, openmetrics: bool) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    /// Every RPC of the contract has its own label, so a new RPC cannot
    /// land in `other` unnoticed.
    #[test]
    fn every_rpc_of_the_contract_has_a_method_label() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut seen = 0;
        for file in &set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let path = format!("/{full}/{}", method.name());
                    let index = method_index(&path);
                    assert_eq!(METHODS[index], (full.as_str(), method.name()), "{path}");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 10, "the descriptor set holds the archive service");
    }

    use super::*;

    fn text(metrics: &Arc<Metrics>, openmetrics: bool) -> String {
        let probe: StoreProbe = Box::new(|| StoreSample {
            durable_sequence: 10,
            writes_refused: Some(WritesRefused::DiskLow),
            ..StoreSample::default()
        });
        encode(&metrics.registry(probe, StartCheck::Sound), openmetrics).unwrap()
    }

    /// The value of the sample line that starts with `series ` exactly.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    /// An observation lands in the first bucket whose bound is at least
    /// it, `+Inf` equals the count, and seconds are exported from
    /// nanoseconds.
    #[test]
    fn histogram_buckets_are_cumulative_le_and_in_seconds() {
        let metrics = Arc::new(Metrics::new());
        metrics.commit_seconds.observe(250_000); // exactly the first bound
        metrics.commit_seconds.observe(250_001);
        metrics.commit_seconds.observe(u64::MAX / 4); // above every bound
        let text = text(&metrics, false);
        let bucket = |le: &str| {
            value(
                &text,
                &format!("archive_writer_commit_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.00025"), Some(1.0), "{text}");
        assert_eq!(bucket("0.0005"), Some(2.0));
        assert_eq!(bucket("10"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(
            value(&text, "archive_writer_commit_seconds_count"),
            Some(3.0)
        );
    }

    /// Only the methods the server serves become label values; any other
    /// path is `other`.
    #[test]
    fn unknown_paths_are_one_label_value() {
        for (i, (service, method)) in METHODS.iter().enumerate().take(METHODS.len() - 1) {
            assert_eq!(method_index(&format!("/{service}/{method}")), i);
        }
        assert_eq!(
            method_index("/archive.v1.ArchiveService/Nope"),
            METHODS.len() - 1
        );
        assert_eq!(method_index("/u-123/secret-token"), METHODS.len() - 1);
    }

    /// Label values that the endpoint exports for calls, refusals and the
    /// store's state follow from what was recorded.
    #[test]
    fn recorded_values_are_exported_with_their_labels() {
        let metrics = Arc::new(Metrics::new());
        Call::start(&metrics, "/archive.v1.ArchiveService/GetArticle").finish(5);
        drop(Call::start(
            &metrics,
            "/archive.v1.ArchiveService/GetArticle",
        ));
        let open = Call::start(&metrics, "/archive.v1.ArchiveService/WatchChanges");
        metrics.refused_for_limit(Limit::Streams);
        metrics.refused_for_token(tonic::Code::PermissionDenied);
        let watcher = metrics.watcher(3);
        let text = text(&metrics, false);
        let get = "service=\"archive.v1.ArchiveService\",method=\"GetArticle\"";
        assert_eq!(
            value(
                &text,
                &format!("archive_rpc_requests_total{{{get},code=\"NOT_FOUND\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("archive_rpc_requests_total{{{get},code=\"CANCELLED\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "archive_rpc_in_flight{service=\"archive.v1.ArchiveService\",method=\"WatchChanges\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "archive_admission_refused_total{kind=\"streams\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "archive_auth_refused_total{code=\"PERMISSION_DENIED\"}"
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "archive_watchers_open"), Some(1.0));
        assert_eq!(value(&text, "archive_watchers_max_lag_changes"), Some(7.0));
        assert_eq!(
            value(&text, "archive_store_writes_refused{reason=\"disk_low\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "archive_store_start_check{state=\"sound\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "archive_store_start_check{state=\"repaired\"}"),
            Some(0.0)
        );
        drop((open, watcher));
        let text = self::text(&metrics, true);
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
        assert_eq!(value(&text, "archive_watchers_open"), Some(0.0));
    }

    /// A measurement, not a check (run it in release with `--ignored
    /// --nocapture`): what recording costs per RPC, per submitted article
    /// and per batch, on one thread and on two threads recording the same
    /// method at once (its atomics then bounce between cores).
    #[test]
    #[ignore = "a measurement: cargo test --release --lib recording_cost -- --ignored --nocapture"]
    fn recording_cost() {
        const N: u32 = 2_000_000;
        let metrics = Arc::new(Metrics::new());
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let rpc = |metrics: &Arc<Metrics>| {
            for _ in 0..N {
                let call = Call::start(metrics, "/archive.v1.ArchiveService/GetArticle");
                call.finish(std::hint::black_box(grpc_status(&trailers)).unwrap_or(UNKNOWN));
            }
        };
        let started = Instant::now();
        rpc(&metrics);
        let one = started.elapsed() / N;
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| rpc(&metrics));
            rpc(&metrics);
        });
        let two = started.elapsed() / N;
        let started = Instant::now();
        for _ in 0..N {
            let waiting = Instant::now();
            metrics.queue_waited(std::hint::black_box(waiting).elapsed());
        }
        let submit = started.elapsed() / N;
        let outcomes = BatchOutcomes {
            created: 100,
            ..BatchOutcomes::default()
        };
        let started = Instant::now();
        for _ in 0..N {
            metrics.batch_committed(100, Duration::from_millis(3), &outcomes);
        }
        let batch = started.elapsed() / N;
        println!(
            "recording an RPC: {one:?} (two threads on one method: {two:?} each); \
             a submission: {submit:?}; a batch: {batch:?}"
        );
    }

    /// `/proc/self/stat` is read past a command name with spaces and
    /// parentheses.
    #[test]
    #[cfg(target_os = "linux")]
    fn proc_stat_fields_are_found_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 \
                    123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let parsed = ProcessStat::parse(stat, 1_700_000_000.0, 100.0, 4096).unwrap();
        assert_eq!(parsed.cpu_seconds, 3.0);
        assert_eq!(parsed.start_time_seconds, 1_700_000_010.0);
        assert_eq!(parsed.virtual_bytes, 123_456_789);
        assert_eq!(parsed.resident_bytes, 300 * 4096);
        assert!(ProcessStat::read().is_some());
    }
}
