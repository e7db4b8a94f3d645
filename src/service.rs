//! The gRPC handlers: parse the request into domain types, call the store,
//! map the answer back. Nothing else lives here.

use std::{pin::Pin, sync::Arc, time::Instant};

use prost::Message;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{info, Instrument, Span};

use crate::{
    article::{Article, ArticleId, Timestamp, ValidationError},
    auth::{Role, Tokens},
    error::Error,
    page_token::PageToken,
    proto::{
        self, archive_service_server::ArchiveService as ArchiveApi, ArticleView, IngestOutcome,
        SortOrder,
    },
    store::{DateRange, Order, PendingWrite, Position, Store, WriteOutcome},
};

/// Page size used when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Largest ListArticles response, the default receive limit of gRPC clients.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Room kept in a response for the page token and framing.
const RESPONSE_HEADROOM: usize = 16 * 1024;
/// Articles of one ingest stream that may await their acknowledgement at
/// once. Past this the server stops reading the stream, so a client that
/// never reads its responses is held back by HTTP/2 flow control instead of
/// filling the server's memory.
pub const INGEST_WINDOW: usize = 1024;

/// The `archive.v1.ArchiveService` implementation.
pub struct ArchiveService {
    store: Store,
    shutdown: ShutdownHooks,
    /// Who may read and write; checked before anything else in a call.
    tokens: Tokens,
    limits: CallLimits,
    /// Permits for open ingest and export streams.
    streams: Arc<Semaphore>,
    /// Permits for running GetArticle and ListArticles calls.
    calls: Arc<Semaphore>,
}

/// How many calls may run at once; a call over a limit is refused with
/// RESOURCE_EXHAUSTED at once rather than queued, so overload costs the
/// server nothing and the client learns to back off.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Open IngestArticles and ExportArticles streams.
    pub streams: usize,
    /// Running GetArticle and ListArticles calls.
    pub calls: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            streams: 64,
            calls: 1024,
        }
    }
}

/// What a running call holds: its place among the in-flight calls and its
/// permit. Dropped when the call is over.
struct CallGuard {
    _in_flight: mpsc::Sender<()>,
    _permit: OwnedSemaphorePermit,
}

/// How the server's shutdown reaches the handlers.
#[derive(Clone)]
pub struct ShutdownHooks {
    /// Turns true when the shutdown grace period is over: open ingest streams
    /// then stop reading and end with UNAVAILABLE.
    pub stop_streams: watch::Receiver<bool>,
    /// Every call holds a strong copy of this sender while it runs, so the
    /// server knows when the last one is done (the receiver then sees the
    /// channel close). Weak here so that the service itself does not keep it
    /// open; once the server drops its own copy and the calls finish, new
    /// calls are refused.
    pub in_flight: mpsc::WeakSender<()>,
}

impl ArchiveService {
    /// A service over `store`.
    pub fn new(store: Store, shutdown: ShutdownHooks, tokens: Tokens, limits: CallLimits) -> Self {
        Self {
            store,
            shutdown,
            tokens,
            limits,
            streams: Arc::new(Semaphore::new(limits.streams)),
            calls: Arc::new(Semaphore::new(limits.calls)),
        }
    }

    fn admit_stream(&self) -> Result<CallGuard, Status> {
        self.admit(&self.streams, self.limits.streams, "streams")
    }

    fn admit_call(&self) -> Result<CallGuard, Status> {
        self.admit(&self.calls, self.limits.calls, "calls")
    }

    /// Admits a call under `limit` permits: refuses it when the server is
    /// draining and every earlier call has finished, or when all are taken.
    fn admit(&self, limit: &Arc<Semaphore>, max: usize, what: &str) -> Result<CallGuard, Status> {
        let in_flight = self
            .shutdown
            .in_flight
            .upgrade()
            .ok_or_else(|| Status::unavailable("the server is shutting down"))?;
        let permit = Arc::clone(limit).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many concurrent {what} (limit {max}); retry later"
            ))
        })?;
        Ok(CallGuard {
            _in_flight: in_flight,
            _permit: permit,
        })
    }
}

type IngestStream =
    Pin<Box<dyn Stream<Item = Result<proto::IngestArticlesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ArchiveApi for ArchiveService {
    async fn get_article(
        &self,
        request: Request<proto::GetArticleRequest>,
    ) -> Result<Response<proto::GetArticleResponse>, Status> {
        let started = Instant::now();
        self.tokens.check(Role::Read, request.metadata())?;
        let _call = self.admit_call()?;
        let result = (|| {
            let id = ArticleId::parse("id", &request.get_ref().id)?;
            // A point read is served from sled's cache or one short read, so it
            // runs inline rather than paying for a blocking-pool hop.
            let stored = self
                .store
                .get(&id)?
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            Ok::<_, Error>(proto::GetArticleResponse {
                article: Some(stored.into_proto(true)),
            })
        })();
        log_finished(started, result.map(Response::new).map_err(Status::from))
    }

    async fn list_articles(
        &self,
        request: Request<proto::ListArticlesRequest>,
    ) -> Result<Response<proto::ListArticlesResponse>, Status> {
        let started = Instant::now();
        self.tokens.check(Role::Read, request.metadata())?;
        let _call = self.admit_call()?;
        let result = async {
            let query = ListQuery::parse(request.into_inner(), self.store.page_token_key())?;
            let store = self.store.clone();
            // A page reads up to 1000 records: off the async workers.
            tokio::task::spawn_blocking(move || query.run(&store))
                .await
                .map_err(|e| Status::internal(format!("list task failed: {e}")))?
                .map_err(Status::from)
        }
        .await;
        log_finished(started, result.map(Response::new))
    }

    type ExportArticlesStream =
        Pin<Box<dyn Stream<Item = Result<proto::ExportArticlesResponse, Status>> + Send>>;

    async fn export_articles(
        &self,
        request: Request<proto::ExportArticlesRequest>,
    ) -> Result<Response<Self::ExportArticlesStream>, Status> {
        let started = Instant::now();
        self.tokens.check(Role::Read, request.metadata())?;
        let call = self.admit_stream()?;
        let query = match ExportQuery::parse(request.into_inner()) {
            Ok(query) => query,
            Err(e) => return log_finished(started, Err(e.into())),
        };
        // A small channel: the export reads ahead one chunk at most.
        let (out, stream) = mpsc::channel(EXPORT_CHUNK_ARTICLES);
        let (store, stop) = (self.store.clone(), self.shutdown.stop_streams.clone());
        tokio::spawn(
            async move {
                let (code, exported) = run_export(query, store, &out, stop).await;
                info!(
                    ?code,
                    exported,
                    latency_ms = started.elapsed().as_secs_f64() * 1e3,
                    "rpc finished"
                );
                // As for ingest: the permit goes before the stream ends.
                drop(call);
                drop(out);
            }
            .instrument(Span::current()),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    type IngestArticlesStream = IngestStream;

    async fn ingest_articles(
        &self,
        request: Request<Streaming<proto::IngestArticlesRequest>>,
    ) -> Result<Response<Self::IngestArticlesStream>, Status> {
        let started = Instant::now();
        // Before a single article is read.
        self.tokens.check(Role::Write, request.metadata())?;
        let call = self.admit_stream()?;
        let inbound = request.into_inner();
        let (pending_tx, pending_rx) = mpsc::channel(INGEST_WINDOW);
        let (out_tx, out_rx) = mpsc::channel(INGEST_WINDOW);
        let span = Span::current();
        tokio::spawn(
            read_ingest_stream(
                inbound,
                self.store.clone(),
                pending_tx,
                self.shutdown.stop_streams.clone(),
            )
            .instrument(span.clone()),
        );
        tokio::spawn(
            async move {
                acknowledge_in_order(pending_rx, &out_tx, started).await;
                // Release the call's permit before the client can see the
                // stream end, so it may open a new one at once.
                drop(call);
                drop(out_tx);
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

/// One request's answer, possibly still waiting for the writer.
enum Pending {
    Ready(proto::IngestArticlesResponse),
    Waiting {
        index: u64,
        id: ArticleId,
        write: PendingWrite,
    },
    /// The stream ends here with this status.
    End(Status),
}

/// Reads requests, validates each, and queues valid articles for the writer.
/// Answers go to `pending` in request order.
async fn read_ingest_stream(
    mut inbound: Streaming<proto::IngestArticlesRequest>,
    store: Store,
    pending: mpsc::Sender<Pending>,
    mut stop: watch::Receiver<bool>,
) {
    let mut index = 0u64;
    loop {
        let message = tokio::select! {
            biased;
            () = stopped(&mut stop) => {
                let _ = pending.send(Pending::End(Status::unavailable(
                    "the server is shutting down; articles without a response were not stored",
                ))).await;
                return;
            }
            message = inbound.message() => message,
        };
        let next = match message {
            Ok(Some(request)) => match request.article.map(Article::from_proto) {
                None => Pending::Ready(rejected(
                    index,
                    "",
                    &ValidationError {
                        field: "article",
                        rule: "is required".into(),
                    },
                )),
                Some(Err(invalid)) => Pending::Ready(rejected(index, "", &invalid)),
                Some(Ok(article)) => {
                    let id = article.id().clone();
                    match store.submit(article).await {
                        Ok(write) => Pending::Waiting { index, id, write },
                        Err(e) => Pending::End(e.into()),
                    }
                }
            },
            Ok(None) => return,
            Err(status) => Pending::End(status),
        };
        let ends = matches!(next, Pending::End(_));
        if pending.send(next).await.is_err() || ends {
            return;
        }
        index += 1;
    }
}

/// Sends each answer once it is final, in request order, and ends the stream
/// after the first error.
async fn acknowledge_in_order(
    mut pending: mpsc::Receiver<Pending>,
    out: &mpsc::Sender<Result<proto::IngestArticlesResponse, Status>>,
    started: Instant,
) {
    let mut code = Code::Ok;
    let mut acknowledged = 0u64;
    while let Some(next) = pending.recv().await {
        let answer = match next {
            Pending::Ready(response) => Ok(response),
            Pending::Waiting { index, id, write } => {
                write.outcome().await.map_err(Status::from).map(|outcome| {
                    proto::IngestArticlesResponse {
                        index,
                        id: id.to_string(),
                        outcome: match outcome {
                            WriteOutcome::Created => IngestOutcome::Created,
                            WriteOutcome::Updated => IngestOutcome::Updated,
                            WriteOutcome::Unchanged => IngestOutcome::Unchanged,
                        } as i32,
                        error: String::new(),
                    }
                })
            }
            Pending::End(status) => Err(status),
        };
        let failed = answer.as_ref().err().map(Status::code);
        if out.send(answer).await.is_err() {
            code = Code::Cancelled;
            break;
        }
        if let Some(failed) = failed {
            code = failed;
            break;
        }
        acknowledged += 1;
    }
    info!(
        ?code,
        acknowledged,
        latency_ms = started.elapsed().as_secs_f64() * 1e3,
        "rpc finished"
    );
}

fn rejected(index: u64, id: &str, why: &ValidationError) -> proto::IngestArticlesResponse {
    proto::IngestArticlesResponse {
        index,
        id: id.to_owned(),
        outcome: IngestOutcome::Rejected as i32,
        error: why.to_string(),
    }
}

fn log_finished<T>(started: Instant, result: Result<T, Status>) -> Result<T, Status> {
    let code = result.as_ref().err().map_or(Code::Ok, Status::code);
    info!(
        ?code,
        latency_ms = started.elapsed().as_secs_f64() * 1e3,
        "rpc finished"
    );
    result
}

/// A validated ListArticles request.
struct ListQuery {
    range: DateRange,
    order: Order,
    after: Option<Position>,
    page_size: usize,
    with_body: bool,
    token_key: [u8; 32],
}

impl ListQuery {
    fn parse(request: proto::ListArticlesRequest, token_key: &[u8; 32]) -> Result<Self, Error> {
        let invalid = |field, rule: &str| {
            Error::from(ValidationError {
                field,
                rule: rule.into(),
            })
        };
        let page_size = match usize::try_from(request.page_size) {
            Err(_) => return Err(invalid("page_size", "must not be negative")),
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
        };
        let bound = |field, ts: &Option<prost_types::Timestamp>| {
            ts.as_ref()
                .map(|ts| Timestamp::from_proto(field, ts))
                .transpose()
        };
        let range = DateRange {
            start: bound("start_time", &request.start_time)?,
            end: bound("end_time", &request.end_time)?,
        };
        if let (Some(start), Some(end)) = (range.start, range.end) {
            if start > end {
                return Err(invalid("start_time", "must not be after end_time"));
            }
        }
        let order = match SortOrder::try_from(request.order) {
            Ok(SortOrder::Unspecified | SortOrder::OldestFirst) => Order::OldestFirst,
            Ok(SortOrder::NewestFirst) => Order::NewestFirst,
            Err(_) => return Err(invalid("order", "is not a known SortOrder")),
        };
        let with_body = match ArticleView::try_from(request.view) {
            Ok(ArticleView::Unspecified | ArticleView::Basic) => false,
            Ok(ArticleView::Full) => true,
            Err(_) => return Err(invalid("view", "is not a known ArticleView")),
        };
        let after = if request.page_token.is_empty() {
            None
        } else {
            let token = PageToken::decode(&request.page_token, token_key)?;
            if token.order != order || token.range != range {
                return Err(Error::InvalidPageToken(
                    "it was issued for a different range or order",
                ));
            }
            Some(token.after)
        };
        Ok(Self {
            range,
            order,
            after,
            page_size,
            with_body,
            token_key: *token_key,
        })
    }

    /// Builds one page: up to `page_size` articles and, so the response stays
    /// under [`MAX_RESPONSE_BYTES`], fewer when they are large. A token is
    /// returned only when another article follows.
    fn run(self, store: &Store) -> Result<proto::ListArticlesResponse, Error> {
        let page = read_page(
            store,
            self.range,
            self.order,
            self.after.as_ref(),
            self.page_size,
            MAX_RESPONSE_BYTES - RESPONSE_HEADROOM,
            self.with_body,
        )?;
        let next_page_token = match (page.more, page.last) {
            (true, Some(after)) => PageToken {
                order: self.order,
                range: self.range,
                after,
            }
            .encode(&self.token_key),
            _ => String::new(),
        };
        Ok(proto::ListArticlesResponse {
            articles: page.articles,
            next_page_token,
        })
    }
}

/// Articles read in one go, and where the next read starts.
struct Page {
    articles: Vec<proto::Article>,
    /// Position of the last article in `articles`.
    last: Option<Position>,
    /// Whether another article follows in the range.
    more: bool,
}

/// Reads up to `max_articles` articles strictly after `after`, stopping
/// before the encoded articles would pass `budget` bytes (but always taking
/// at least one, so a reader makes progress). Blocking.
fn read_page(
    store: &Store,
    range: DateRange,
    order: Order,
    after: Option<&Position>,
    max_articles: usize,
    budget: usize,
    with_body: bool,
) -> Result<Page, Error> {
    let mut scan = store.scan(range, order, after);
    let mut articles = Vec::new();
    let mut bytes = 0;
    let mut last = None;
    let more = loop {
        let Some(next) = scan.next() else { break false };
        if articles.len() == max_articles {
            next?;
            break true;
        }
        let stored = next?;
        let position = Position {
            published_at: stored.content.published_at,
            id: stored.id.clone(),
        };
        let article = stored.into_proto(with_body);
        let len = article.encoded_len();
        let framed = 1 + prost::length_delimiter_len(len) + len;
        if bytes + framed > budget && !articles.is_empty() {
            break true;
        }
        bytes += framed;
        articles.push(article);
        last = Some(position);
    };
    Ok(Page {
        articles,
        last,
        more,
    })
}

/// A validated ExportArticles request.
struct ExportQuery {
    range: DateRange,
    order: Order,
    resume_after: Option<Position>,
}

impl ExportQuery {
    fn parse(request: proto::ExportArticlesRequest) -> Result<Self, Error> {
        let range = parse_range(request.start_time.as_ref(), request.end_time.as_ref())?;
        let order = parse_order(request.order)?;
        let resume_after = request
            .resume_after
            .map(|p| {
                let published_at = p
                    .published_at
                    .as_ref()
                    .ok_or_else(|| invalid("resume_after.published_at", "is required"))
                    .and_then(|ts| Ok(Timestamp::from_proto("resume_after.published_at", ts)?))?;
                let id = ArticleId::parse("resume_after.id", &p.id)?;
                let inside = range.start.is_none_or(|s| s <= published_at)
                    && range.end.is_none_or(|e| published_at < e);
                if !inside {
                    return Err(invalid("resume_after", "is outside the requested range"));
                }
                Ok(Position { published_at, id })
            })
            .transpose()?;
        Ok(Self {
            range,
            order,
            resume_after,
        })
    }
}

/// Articles an export reads ahead of its reader, at most; with
/// [`EXPORT_CHUNK_BYTES`] this bounds an export's memory.
const EXPORT_CHUNK_ARTICLES: usize = 64;
/// Bytes an export reads ahead of its reader, about.
const EXPORT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Feeds an export stream chunk by chunk. Each chunk is read off the async
/// workers and sent one article at a time; the next chunk is read only when
/// the channel (and so the client) has taken the previous one.
async fn run_export(
    query: ExportQuery,
    store: Store,
    out: &mpsc::Sender<Result<proto::ExportArticlesResponse, Status>>,
    mut stop: watch::Receiver<bool>,
) -> (Code, u64) {
    let mut after = query.resume_after;
    let mut sent = 0u64;
    loop {
        let (store, range, order, from) = (store.clone(), query.range, query.order, after.clone());
        let chunk = tokio::task::spawn_blocking(move || {
            read_page(
                &store,
                range,
                order,
                from.as_ref(),
                EXPORT_CHUNK_ARTICLES,
                EXPORT_CHUNK_BYTES,
                true,
            )
        })
        .await
        .map_err(|e| Status::internal(format!("export task failed: {e}")))
        .and_then(|page| page.map_err(Status::from));
        let page = match chunk {
            Ok(page) => page,
            Err(status) => {
                let code = status.code();
                let _ = out.send(Err(status)).await;
                return (code, sent);
            }
        };
        for article in page.articles {
            let send = out.send(Ok(proto::ExportArticlesResponse {
                article: Some(article),
            }));
            tokio::select! {
                biased;
                () = stopped(&mut stop) => {
                    let _ = out.send(Err(Status::unavailable(
                        "the server is shutting down; resume the export after the last article received",
                    ))).await;
                    return (Code::Unavailable, sent);
                }
                result = send => if result.is_err() { return (Code::Cancelled, sent) },
            }
            sent += 1;
        }
        if !page.more {
            return (Code::Ok, sent);
        }
        after = page.last;
    }
}

/// Completes when the server asks open streams to stop; never, when the
/// server went away without asking.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn invalid(field: &'static str, rule: &str) -> Error {
    Error::from(ValidationError {
        field,
        rule: rule.into(),
    })
}

fn parse_range(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> Result<DateRange, Error> {
    let range = DateRange {
        start: start
            .map(|ts| Timestamp::from_proto("start_time", ts))
            .transpose()?,
        end: end
            .map(|ts| Timestamp::from_proto("end_time", ts))
            .transpose()?,
    };
    if let (Some(start), Some(end)) = (range.start, range.end) {
        if start > end {
            return Err(invalid("start_time", "must not be after end_time"));
        }
    }
    Ok(range)
}

fn parse_order(raw: i32) -> Result<Order, Error> {
    match SortOrder::try_from(raw) {
        Ok(SortOrder::Unspecified | SortOrder::OldestFirst) => Ok(Order::OldestFirst),
        Ok(SortOrder::NewestFirst) => Ok(Order::NewestFirst),
        Err(_) => Err(invalid("order", "is not a known SortOrder")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::{collection::vec, option, prelude::*};

    use super::*;
    use crate::store::StoreConfig;

    /// Publication times with pre-1970 dates, the epoch and its neighbours,
    /// so ties and sign handling are exercised.
    const TIMES: [i64; 6] = [-3_755_289_600, -86_400, -1, 0, 1, 1_700_000_000];

    fn article(id: u8, time: usize, nanos: u32, variant: bool) -> proto::Article {
        proto::Article {
            id: format!("id{id}"),
            title: if variant { "one".into() } else { "two".into() },
            body: "body".into(),
            published_at: Some(prost_types::Timestamp {
                seconds: TIMES[time],
                nanos: nanos as i32,
            }),
            ..Default::default()
        }
    }

    /// One step of a model-based run.
    #[derive(Debug, Clone)]
    enum Op {
        /// Ingest id with (time, nanos, title variant); `blank` makes it invalid.
        Ingest {
            id: u8,
            time: usize,
            nanos: u32,
            variant: bool,
            blank: bool,
        },
        Get {
            id: u8,
        },
        List {
            start: Option<usize>,
            end: Option<usize>,
            newest_first: bool,
            page_size: i32,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..10, 0usize..TIMES.len(), 0u32..3, any::<bool>(), prop::bool::weighted(0.1))
                .prop_map(|(id, time, nanos, variant, blank)| Op::Ingest { id, time, nanos, variant, blank }),
            2 => (0u8..12).prop_map(|id| Op::Get { id }),
            1 => (option::of(0usize..TIMES.len()), option::of(0usize..TIMES.len()), any::<bool>(), 1i32..6)
                .prop_map(|(start, end, newest_first, page_size)| Op::List { start, end, newest_first, page_size }),
        ]
    }

    /// The model: id -> (published_at, title) of the latest accepted version.
    type Model = BTreeMap<String, ((i64, u32), String)>;

    fn service_over(store: &Store) -> (ArchiveService, mpsc::Sender<()>, watch::Sender<bool>) {
        let (in_flight, _) = mpsc::channel(1);
        let (stop, stop_rx) = watch::channel(false);
        let hooks = ShutdownHooks {
            stop_streams: stop_rx,
            in_flight: in_flight.downgrade(),
        };
        (
            ArchiveService::new(
                store.clone(),
                hooks,
                Tokens::default(),
                CallLimits::default(),
            ),
            in_flight,
            stop,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Random sequences of ingest (new, update, unchanged, rejected), Get
        /// and paged List in both orders, against the real store and
        /// handlers and against a sorted map: every answer agrees.
        #[test]
        fn every_answer_matches_an_in_memory_model(ops in vec(op(), 1..80)) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (service, _in_flight, _stop) = service_over(&store);
            let mut model = Model::new();
            runtime.block_on(async {
                for op in ops {
                    match op {
                        Op::Ingest { id, time, nanos, variant, blank } => {
                            let mut raw = article(id, time, nanos, variant);
                            if blank {
                                raw.title = " ".into();
                            }
                            let key = format!("id{id}");
                            let at = (TIMES[time], nanos);
                            let expected = match (blank, model.get(&key)) {
                                (true, _) => None,
                                (false, None) => Some(WriteOutcome::Created),
                                (false, Some((old_at, old_title))) if *old_at == at && *old_title == raw.title => Some(WriteOutcome::Unchanged),
                                (false, Some(_)) => Some(WriteOutcome::Updated),
                            };
                            match Article::from_proto(raw.clone()) {
                                Err(_) => prop_assert_eq!(expected, None),
                                Ok(a) => {
                                    let outcome = store.submit(a).await.unwrap().outcome().await.unwrap();
                                    prop_assert_eq!(Some(outcome), expected);
                                    model.insert(key, (at, raw.title));
                                }
                            }
                        }
                        Op::Get { id } => {
                            let answer = service.get_article(Request::new(proto::GetArticleRequest { id: format!("id{id}") })).await;
                            match (answer, model.get(&format!("id{id}"))) {
                                (Err(status), None) => prop_assert_eq!(status.code(), Code::NotFound),
                                (Ok(response), Some((at, title))) => {
                                    let got = response.into_inner().article.unwrap();
                                    let ts = got.published_at.unwrap();
                                    prop_assert_eq!((ts.seconds, ts.nanos as u32), *at);
                                    prop_assert_eq!(&got.title, title);
                                }
                                (answer, expected) => prop_assert!(false, "get id{}: {:?} but model has {:?}", id, answer.map(|_| ()), expected),
                            }
                        }
                        Op::List { start, end, newest_first, page_size } => {
                            let (start, end) = match (start, end) {
                                (Some(s), Some(e)) if s > e => (Some(e), Some(s)),
                                other => other,
                            };
                            let ts = |i: usize| prost_types::Timestamp { seconds: TIMES[i], nanos: 0 };
                            let mut request = proto::ListArticlesRequest {
                                start_time: start.map(ts),
                                end_time: end.map(ts),
                                page_size,
                                order: if newest_first { SortOrder::NewestFirst } else { SortOrder::OldestFirst } as i32,
                                ..Default::default()
                            };
                            let mut walked = Vec::new();
                            for _ in 0..=model.len() {
                                let page = service.list_articles(Request::new(request.clone())).await.unwrap().into_inner();
                                walked.extend(page.articles.into_iter().map(|a| a.id));
                                if page.next_page_token.is_empty() {
                                    break;
                                }
                                request.page_token = page.next_page_token;
                            }
                            let lower = start.map_or((i64::MIN, 0), |i| (TIMES[i], 0));
                            let mut expected: Vec<_> = model
                                .iter()
                                .filter(|(_, (at, _))| *at >= lower && end.is_none_or(|e| *at < (TIMES[e], 0)))
                                .map(|(id, (at, _))| (*at, id.clone()))
                                .collect();
                            expected.sort();
                            if newest_first {
                                expected.reverse();
                            }
                            let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
                            prop_assert_eq!(walked, expected);
                        }
                    }
                }
                Ok(())
            })?;
            let report = store.check().unwrap();
            prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
            prop_assert_eq!(report.records as usize, model.len());
        }
    }
}
