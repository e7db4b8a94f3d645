//! The gRPC service: each RPC checks its token, takes its admission permit,
//! parses the request into domain types ([`query`]), calls the store, and
//! maps the answer back. One file per RPC family:
//!
//! - `read`: GetArticle, ListArticles, ListArticleRevisions and the page
//!   reader;
//! - `ingest`: IngestArticles (validation, the writer queue, in-order
//!   acknowledgements);
//! - `export`: ExportArticles (flow-controlled chunks);
//! - `changes`: WatchChanges (the change feed, followed);
//! - DeleteArticle is a few lines here;
//! - [`query`]: ranges, orders, views, filters, page sizes and tokens,
//!   parsed once.
//!
//! This file holds what every RPC shares: admission limits and the shutdown
//! hooks.

mod changes;
mod export;
mod ingest;
mod outbox;
pub mod query;
mod read;

use std::{pin::Pin, sync::Arc, time::Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{info, Instrument, Span};

pub use ingest::INGEST_WINDOW;
pub use read::MAX_RESPONSE_BYTES;

use crate::{
    auth::{Role, Tokens},
    error::Error,
    metrics::{Limit, Metrics},
    proto::{self, archive_service_server::ArchiveService as ArchiveApi},
    store::{Store, WriteOutcome},
};

/// The `archive.v1.ArchiveService` implementation.
pub struct ArchiveService {
    store: Store,
    shutdown: ShutdownHooks,
    /// Who may read and write; checked before anything else in a call.
    tokens: Tokens,
    limits: CallLimits,
    /// Permits for open ingest and export streams.
    streams: Arc<Semaphore>,
    /// Permits for running unary read calls.
    calls: Arc<Semaphore>,
    /// Where refusals, ingest rejections, exports and watchers are
    /// recorded; `None` records nothing.
    metrics: Option<Arc<Metrics>>,
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
    /// Turns true when shutdown begins: followers of the change feed, which
    /// would never end by themselves, end at once with UNAVAILABLE.
    pub draining: watch::Receiver<bool>,
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
            metrics: None,
        }
    }

    /// The same service, recording into `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Checks the token for `role`, counting a refusal.
    fn check_token(
        &self,
        role: Role,
        request_metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), Status> {
        let checked = self.tokens.check(role, request_metadata);
        if let (Err(status), Some(metrics)) = (&checked, &self.metrics) {
            metrics.refused_for_token(status.code());
        }
        checked
    }

    /// Checks the token for `role`, then takes a call permit.
    fn admit_call(
        &self,
        role: Role,
        request_metadata: &tonic::metadata::MetadataMap,
    ) -> Result<CallGuard, Status> {
        self.check_token(role, request_metadata)?;
        self.admit(&self.calls, self.limits.calls, Limit::Calls)
    }

    /// Checks the token for `role`, then takes a stream permit.
    fn admit_stream(
        &self,
        role: Role,
        request_metadata: &tonic::metadata::MetadataMap,
    ) -> Result<CallGuard, Status> {
        self.check_token(role, request_metadata)?;
        self.admit(&self.streams, self.limits.streams, Limit::Streams)
    }

    /// Admits a call under `limit` permits: refuses it when the server is
    /// draining and every earlier call has finished, or when all are taken.
    fn admit(&self, limit: &Arc<Semaphore>, max: usize, what: Limit) -> Result<CallGuard, Status> {
        let in_flight = self
            .shutdown
            .in_flight
            .upgrade()
            .ok_or_else(|| Status::unavailable("the server is shutting down"))?;
        let permit = Arc::clone(limit).try_acquire_owned().map_err(|_| {
            if let Some(metrics) = &self.metrics {
                metrics.refused_for_limit(what);
            }
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

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ArchiveApi for ArchiveService {
    async fn get_article(
        &self,
        request: Request<proto::GetArticleRequest>,
    ) -> Result<Response<proto::GetArticleResponse>, Status> {
        let started = Instant::now();
        let _call = self.admit_call(Role::Read, request.metadata())?;
        let result = read::get(&self.store, request.get_ref()).await;
        log_finished(started, result.map(Response::new).map_err(Status::from))
    }

    async fn list_articles(
        &self,
        request: Request<proto::ListArticlesRequest>,
    ) -> Result<Response<proto::ListArticlesResponse>, Status> {
        let started = Instant::now();
        let _call = self.admit_call(Role::Read, request.metadata())?;
        let store = self.store.clone();
        let result = async move {
            let query = query::ListQuery::parse(request.get_ref(), store.page_token_key())?;
            read::list(&store, &query).await
        }
        .await;
        log_finished(started, result.map(Response::new).map_err(Status::from))
    }

    type ExportArticlesStream = ResponseStream<proto::ExportArticlesResponse>;

    async fn export_articles(
        &self,
        request: Request<proto::ExportArticlesRequest>,
    ) -> Result<Response<Self::ExportArticlesStream>, Status> {
        let started = Instant::now();
        let call = self.admit_stream(Role::Read, request.metadata())?;
        let query = match query::ExportQuery::parse(request.get_ref()) {
            Ok(query) => query,
            Err(e) => return log_finished(started, Err(e.into())),
        };
        let (out, stream) = export::export_outbox();
        let (store, stop) = (self.store.clone(), self.shutdown.stop_streams.clone());
        let open = self.metrics.as_ref().map(Metrics::export_opened);
        tokio::spawn(
            async move {
                let (code, exported) = export::run_export(query, store, &out, stop).await;
                info!(
                    ?code,
                    exported,
                    latency_ms = round_ms(started.elapsed()),
                    "rpc finished"
                );
                // The permit goes before the stream ends, so the client may
                // open a new stream at once.
                drop((call, open));
                drop(out);
            }
            .instrument(Span::current()),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_article_revisions(
        &self,
        request: Request<proto::ListArticleRevisionsRequest>,
    ) -> Result<Response<proto::ListArticleRevisionsResponse>, Status> {
        let started = Instant::now();
        let _call = self.admit_call(Role::Read, request.metadata())?;
        let store = self.store.clone();
        let result = async move {
            let query = query::RevisionsQuery::parse(request.get_ref(), store.page_token_key())?;
            read::revisions(&store, &query).await
        }
        .await;
        log_finished(started, result.map(Response::new).map_err(Status::from))
    }

    async fn batch_get_articles(
        &self,
        request: Request<proto::BatchGetArticlesRequest>,
    ) -> Result<Response<proto::BatchGetArticlesResponse>, Status> {
        let started = Instant::now();
        let _call = self.admit_call(Role::Read, request.metadata())?;
        let store = self.store.clone();
        let result = async move {
            let query = query::BatchGetQuery::parse(request.get_ref())?;
            read::batch_get(&store, &query).await
        }
        .await;
        log_finished(started, result.map(Response::new).map_err(Status::from))
    }

    async fn list_articles_by_url(
        &self,
        request: Request<proto::ListArticlesByUrlRequest>,
    ) -> Result<Response<proto::ListArticlesByUrlResponse>, Status> {
        let started = Instant::now();
        let _call = self.admit_call(Role::Read, request.metadata())?;
        let store = self.store.clone();
        let result = async move {
            let query = query::UrlListQuery::parse(request.get_ref(), store.page_token_key())?;
            read::by_url(&store, &query).await
        }
        .await;
        log_finished(started, result.map(Response::new).map_err(Status::from))
    }

    async fn count_articles(
        &self,
        request: Request<proto::CountArticlesRequest>,
    ) -> Result<Response<proto::CountArticlesResponse>, Status> {
        let started = Instant::now();
        let _call = self.admit_call(Role::Read, request.metadata())?;
        let store = self.store.clone();
        let result = async move {
            let query = query::CountQuery::parse(request.get_ref())?;
            read::count(&store, &query).await
        }
        .await;
        log_finished(started, result.map(Response::new).map_err(Status::from))
    }

    async fn delete_article(
        &self,
        request: Request<proto::DeleteArticleRequest>,
    ) -> Result<Response<proto::DeleteArticleResponse>, Status> {
        let started = Instant::now();
        let _call = self.admit_call(Role::Admin, request.metadata())?;
        let result = async {
            let query = query::DeleteQuery::parse(request.get_ref())?;
            let outcome = self
                .store
                .delete(query.id, query.reason, query.allow_reingest)
                .await?
                .outcome()
                .await?;
            match outcome {
                WriteOutcome::Deleted { sequence } => Ok(proto::DeleteArticleResponse { sequence }),
                other => Err(Error::TaskFailed(format!(
                    "the store answered a deletion with {other:?}"
                ))),
            }
        }
        .await;
        log_finished(started, result.map(Response::new).map_err(Status::from))
    }

    type WatchChangesStream = ResponseStream<proto::WatchChangesResponse>;

    async fn watch_changes(
        &self,
        request: Request<proto::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let started = Instant::now();
        let call = self.admit_stream(Role::Read, request.metadata())?;
        let query = match query::WatchQuery::parse(request.get_ref()) {
            Ok(query) => query,
            Err(e) => return log_finished(started, Err(e.into())),
        };
        let (out, stream) = changes::watch_outbox();
        let (store, draining) = (self.store.clone(), self.shutdown.draining.clone());
        let cursor = self.metrics.as_ref().map(|m| m.watcher(query.after));
        tokio::spawn(
            async move {
                let (code, sent) =
                    changes::run_watch(query, store, &out, draining, cursor.as_ref()).await;
                info!(
                    ?code,
                    sent,
                    latency_ms = round_ms(started.elapsed()),
                    "rpc finished"
                );
                drop((call, cursor));
                drop(out);
            }
            .instrument(Span::current()),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    type IngestArticlesStream = ResponseStream<proto::IngestArticlesResponse>;

    async fn ingest_articles(
        &self,
        request: Request<Streaming<proto::IngestArticlesRequest>>,
    ) -> Result<Response<Self::IngestArticlesStream>, Status> {
        let started = Instant::now();
        // Before a single article is read.
        let call = self.admit_stream(Role::Write, request.metadata())?;
        let (pending_tx, pending_rx) = mpsc::channel(INGEST_WINDOW);
        let (out_tx, out_rx) = mpsc::channel(INGEST_WINDOW);
        let span = Span::current();
        tokio::spawn(
            ingest::read_requests(
                request.into_inner(),
                self.store.clone(),
                pending_tx,
                self.shutdown.stop_streams.clone(),
                self.metrics.clone(),
            )
            .instrument(span.clone()),
        );
        tokio::spawn(
            async move {
                ingest::acknowledge_in_order(pending_rx, &out_tx, started).await;
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

/// Latency for log lines, in milliseconds rounded to a microsecond.
fn round_ms(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

fn log_finished<T>(started: Instant, result: Result<T, Status>) -> Result<T, Status> {
    let code = result.as_ref().err().map_or(Code::Ok, Status::code);
    info!(
        ?code,
        latency_ms = round_ms(started.elapsed()),
        "rpc finished"
    );
    result
}

/// Completes when the server asks open streams to stop; never, when the
/// server went away without asking.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
