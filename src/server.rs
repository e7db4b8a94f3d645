//! `run`: serves the archive, health and reflection on a bound listener
//! until a shutdown future completes.

use std::{future::Future, io, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch, Semaphore},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    codec::CompressionEncoding,
    transport::{Server, ServerTlsConfig},
};
use tonic_health::ServingStatus;
use tracing::{debug, info, info_span, warn};

use crate::{
    auth::Tokens,
    error::Error,
    metrics::{self, Metrics, MetricsListener, RpcLayer, StartCheck, StoreSample, WritesRefused},
    proto::{self, archive_service_server::ArchiveServiceServer},
    service::{ArchiveService, CallLimits, ShutdownHooks},
    store::{Store, WriteHealth},
};

/// Largest request message accepted. Well above the largest valid article
/// (about 1.3 MiB), so an over-long field is answered with REJECTED naming
/// the field instead of breaking the stream.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long open streams may run on after shutdown starts before they
    /// are ended with UNAVAILABLE.
    pub shutdown_grace: Duration,
    /// How many calls may run at once.
    pub limits: CallLimits,
    /// Bearer tokens for writing and reading; none means open.
    pub tokens: Tokens,
    /// Serve over TLS with this certificate (and optional client CA).
    pub tls: Option<ServerTlsConfig>,
    /// A connection that sends nothing for this long after it was accepted
    /// is closed.
    pub handshake_timeout: Duration,
    /// Serve `GET /metrics` for Prometheus on this listener. None: no
    /// metrics are recorded at all.
    pub metrics: Option<MetricsListener>,
    /// What the check at start found ([`check_at_open`]), for the metrics.
    pub start_check: StartCheck,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(10),
            limits: CallLimits::default(),
            tokens: Tokens::default(),
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            metrics: None,
            start_check: StartCheck::NotRun,
        }
    }
}

/// HTTP/2 flow-control window of one stream: what a client may send on it
/// before the server has read it.
pub const STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// HTTP/2 flow-control window of one connection, over all its streams.
pub const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;

/// Most accepted connections that may wait for their first bytes at once;
/// more are closed at once, so silent connections cannot pile up.
pub const MAX_WAITING_CONNECTIONS: usize = 1024;

/// Time given to open streams to end after they were told to.
const STREAM_END_TIMEOUT: Duration = Duration::from_secs(5);
/// Time given to connections to close once no call is running.
const CONNECTION_CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Serves until `shutdown` completes, then: health turns NOT_SERVING, new
/// connections are refused, open calls get `options.shutdown_grace` to
/// finish, streams still open after that end with UNAVAILABLE, and the store
/// is flushed.
///
/// With `options.metrics`, every RPC and the store's work are recorded and
/// `/metrics` is served on that listener until `run` returns.
///
/// # Errors
/// [`Error::Transport`] when the transport fails, [`Error::Storage`] when the
/// final flush fails (or, with metrics, counting the articles at start).
pub async fn run(
    listener: TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> Result<(), Error> {
    let metrics_listener = match &options.metrics {
        Some(listener) => Some(listener.take().ok_or_else(|| {
            Error::Config("the metrics listener was already served by another run".into())
        })?),
        None => None,
    };
    let metrics = match &metrics_listener {
        Some(_) => {
            let metrics = Arc::new(Metrics::new());
            // Before the first write: the live-article count starts here.
            let started = std::time::Instant::now();
            let (attaching, attached) = (store.clone(), Arc::clone(&metrics));
            tokio::task::spawn_blocking(move || attaching.attach_metrics(attached))
                .await
                .map_err(|e| Error::TaskFailed(format!("attaching metrics: {e}")))??;
            info!(
                elapsed = ?started.elapsed(),
                "metrics on: counted the live articles"
            );
            Some(metrics)
        }
        None => None,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ArchiveServiceServer<ArchiveService>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Transport(format!("building reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Transport(format!("building reflection: {e}")))?;

    let (accepting, stop_accepting) = watch::channel(true);
    let (stop_streams, streams_stopped) = watch::channel(false);
    let (start_draining, draining) = watch::channel(false);
    let (in_flight, mut calls_done) = mpsc::channel::<()>(1);
    let hooks = ShutdownHooks {
        stop_streams: streams_stopped,
        draining,
        in_flight: in_flight.downgrade(),
    };
    let archive = ArchiveServiceServer::new(
        ArchiveService::new(store.clone(), hooks, options.tokens.clone(), options.limits)
            .with_metrics(metrics.clone()),
    )
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(MAX_REQUEST_BYTES);

    // The archive is NOT_SERVING while the store cannot write: reads still
    // work, but a loader should go elsewhere or wait. The flag, taken under
    // its lock, keeps the follower from turning the archive SERVING again
    // once shutdown has begun.
    let shutting_down = Arc::new(tokio::sync::Mutex::new(false));
    tokio::spawn({
        let health = health.clone();
        let shutting_down = Arc::clone(&shutting_down);
        let mut write_health = store.write_health();
        async move {
            loop {
                let writable = *write_health.borrow_and_update() == WriteHealth::Writable;
                {
                    let shutting_down = shutting_down.lock().await;
                    if *shutting_down {
                        return;
                    }
                    if writable {
                        health
                            .set_serving::<ArchiveServiceServer<ArchiveService>>()
                            .await;
                    } else {
                        health
                            .set_not_serving::<ArchiveServiceServer<ArchiveService>>()
                            .await;
                    }
                }
                if write_health.changed().await.is_err() {
                    return;
                }
            }
        }
    });

    let (shutdown_started_tx, shutdown_started) = tokio::sync::oneshot::channel();
    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            // Closes the listener: new connections are refused.
            let _ = accepting.send(false);
            // Followers of the change feed never finish by themselves: they
            // end now, so clients reconnect elsewhere or later.
            let _ = start_draining.send(true);
            let mut shutting_down = shutting_down.lock().await;
            *shutting_down = true;
            info!("shutting down: refusing new connections");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_not_serving::<ArchiveServiceServer<ArchiveService>>()
                .await;
            let _ = shutdown_started_tx.send(());
        }
    };

    let incoming = accept_connections(
        listener,
        options.handshake_timeout,
        stop_accepting,
        metrics.clone(),
    );
    let mut builder = Server::builder();
    if let Some(tls) = options.tls.clone() {
        builder = builder.tls_config(tls).map_err(tls_error)?;
    }
    // Last before serving, so no early return leaves it running (it holds a
    // store handle).
    let (stop_metrics, metrics_stopped) = watch::channel(false);
    let endpoint = match (metrics_listener, &metrics) {
        (Some(listener), Some(metrics)) => {
            let addr = listener
                .local_addr()
                .map_err(|e| Error::io("reading the metrics address", e))?;
            let probe_store = store.clone();
            let registry = metrics.registry(
                Box::new(move || store_sample(&probe_store)),
                options.start_check,
            );
            info!("metrics listening on {addr}");
            Some(tokio::spawn(metrics::serve(
                listener,
                registry,
                metrics_stopped,
            )))
        }
        _ => None,
    };
    let serve = builder
        .trace_fn(|request| info_span!("rpc", method = %request.uri().path()))
        // Every call's status and duration: the archive's, health's and
        // reflection's, refusals and unknown methods included.
        .layer(RpcLayer::new(metrics.clone()))
        // What a client may send before the server reads it is memory the
        // server holds: 256 KiB per stream (hyper's default is 1 MiB) keeps
        // hundreds of busy ingest streams bounded and still fills a
        // connection with a 5 ms round trip at 50 MB/s.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        // Detect dead peers on idle connections instead of holding them forever.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(archive)
        .serve_with_incoming_shutdown(incoming, signal);
    let mut serve = tokio::spawn(serve);

    let served = tokio::select! {
        served = &mut serve => Some(served),
        _ = shutdown_started => None,
    };
    let served = match served {
        Some(served) => served,
        None => {
            // Wait for the calls in flight, not for the connections: an idle
            // client connection would otherwise hold the process until the
            // grace period ends (hyper waits for the peer to close it).
            drop(in_flight);
            let drained = tokio::time::timeout(options.shutdown_grace, calls_done.recv()).await;
            if drained.is_err() {
                warn!(grace = ?options.shutdown_grace, "grace period over: ending open streams with UNAVAILABLE");
                let _ = stop_streams.send(true);
                if tokio::time::timeout(STREAM_END_TIMEOUT, calls_done.recv())
                    .await
                    .is_err()
                {
                    warn!("calls still running after the streams were told to end");
                }
            }
            // Every call has finished; give connections a moment to deliver
            // the last frames and close, then stop waiting for them.
            match tokio::time::timeout(CONNECTION_CLOSE_TIMEOUT, &mut serve).await {
                Ok(served) => served,
                Err(_) => {
                    info!("closing idle connections");
                    serve.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    let served = match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Transport(e.to_string())),
        Err(e) => Err(Error::TaskFailed(e.to_string())),
    };
    // Metrics are served until the calls are done; their connections end
    // here, and with them the store handle the scrapes read.
    let _ = stop_metrics.send(true);
    if let Some(endpoint) = endpoint {
        match endpoint.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "the metrics endpoint failed"),
            Err(e) => warn!(error = %e, "the metrics endpoint task failed"),
        }
    }
    let failed = match &*store.write_health().borrow() {
        WriteHealth::Failed(cause) => Some(cause.clone()),
        _ => None,
    };
    store.close().await?;
    match failed {
        Some(cause) => {
            warn!(%cause, "stopped; the store had failed, so nothing was left to flush (every acknowledged article was synced before its acknowledgement)")
        }
        None => info!("stopped; store flushed"),
    }
    served
}

/// Checks TLS material the way the server will use it (certificates and key
/// parse, the key matches the certificate), so a start with bad material
/// fails before anything is bound or logged.
///
/// # Errors
/// [`Error::Tls`] naming what is wrong.
pub fn check_tls(tls: &ServerTlsConfig) -> Result<(), Error> {
    Server::builder()
        .tls_config(tls.clone())
        .map(drop)
        .map_err(tls_error)
}

fn tls_error(e: tonic::transport::Error) -> Error {
    Error::Tls(std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string))
}

/// Checks a store that was not closed cleanly before it is served: the
/// index is repaired when it disagrees with the records (it is derived from
/// them, so that is always safe), and the server refuses to start when
/// records are damaged (setting them aside is the operator's call:
/// `article-archive check --repair`). A cleanly closed store is served at
/// once.
///
/// Returns what it found, for the metrics.
///
/// # Errors
/// [`Error::Damaged`] when records are damaged, [`Error::Storage`] when sled
/// fails.
pub async fn check_at_open(store: &Store) -> Result<StartCheck, Error> {
    if store.closed_cleanly() {
        return Ok(StartCheck::CleanStop);
    }
    warn!("the archive was not closed cleanly; checking it before serving");
    let started = std::time::Instant::now();
    let checking = store.clone();
    let result = tokio::task::spawn_blocking(move || checking.check_after_unclean_stop())
        .await
        .map_err(|e| Error::TaskFailed(format!("startup check: {e}")))??;
    let report = &result.report;
    info!(
        records = report.records,
        articles = report.articles,
        problems = report.problems.len(),
        elapsed = ?started.elapsed(),
        "startup check done"
    );
    let Some(repaired) = result.repaired else {
        return Ok(StartCheck::Sound);
    };
    for problem in &report.problems {
        warn!("startup check: {problem}");
    }
    warn!(
        added = repaired.added,
        removed = repaired.removed,
        "startup check: rebuilt the indexes from the record log"
    );
    Ok(StartCheck::Repaired)
}

/// What a scrape reports of the store. Blocking (a few `stat` calls); the
/// endpoint calls it off the async workers.
fn store_sample(store: &Store) -> StoreSample {
    let usage = store.usage();
    let writes_refused = match &*store.write_health().borrow() {
        WriteHealth::Writable => None,
        WriteHealth::DiskLow(_) => Some(WritesRefused::DiskLow),
        WriteHealth::Failed(_) => Some(WritesRefused::Failed),
        WriteHealth::Unreachable(_) => Some(WritesRefused::DatabaseUnreachable),
    };
    let durable_sequence = store.durable_sequence().current();
    StoreSample {
        record_log_bytes: usage.record_log_bytes,
        index_bytes: usage.other_bytes,
        free_bytes: usage.free_bytes,
        min_free_bytes: usage.min_free_bytes,
        queued_operations: usage.queued_operations,
        queued_bytes: usage.queued_bytes,
        writes_refused,
        durable_sequence,
    }
}

/// Accepts connections until `accepting` turns false (then drops the
/// listener), and hands a connection to the server only once its first
/// bytes (the HTTP/2 preface or a TLS hello) arrive. hyper would otherwise
/// keep a connection that never sends anything open for good; here it is
/// closed after `handshake_timeout`, and at most [`MAX_WAITING_CONNECTIONS`]
/// wait at once.
fn accept_connections(
    listener: TcpListener,
    handshake_timeout: Duration,
    mut accepting: watch::Receiver<bool>,
    metrics: Option<Arc<Metrics>>,
) -> ReceiverStream<io::Result<TcpStream>> {
    let (ready, incoming) = mpsc::channel(64);
    let waiting = Arc::new(Semaphore::new(MAX_WAITING_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = accepting.wait_for(|accepting| !accepting) => return,
                () = ready.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment
                    // rather than spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&waiting).try_acquire_owned() else {
                warn!(%peer, "too many connections waiting for their first bytes; closing this one");
                if let Some(metrics) = &metrics {
                    metrics.too_many_waiting();
                }
                continue;
            };
            configure_socket(&stream);
            let ready = ready.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(handshake_timeout, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {
                        drop(permit);
                        let _ = ready.send(Ok(stream)).await;
                    }
                    Ok(_) => debug!(%peer, "connection closed before it sent anything"),
                    Err(_) => {
                        debug!(%peer, timeout = ?handshake_timeout, "closing a connection that sent nothing");
                        if let Some(metrics) = &metrics {
                            metrics.handshake_timed_out();
                        }
                    }
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// No Nagle delay on small acknowledgements; TCP keepalive finds peers that
/// vanished. (The builder's TCP settings apply only to listeners it binds.)
fn configure_socket(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        debug!(error = %e, "cannot set TCP keepalive");
    }
}
